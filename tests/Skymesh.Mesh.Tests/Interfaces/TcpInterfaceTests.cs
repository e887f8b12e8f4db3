using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Tests.Interfaces;

public sealed class TcpInterfaceTests : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly List<IAsyncDisposable> _owned = [];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask DisposeAsync()
    {
        foreach (var owned in _owned)
            await owned.DisposeAsync();
    }

    private static IPEndPoint Loopback(int port = 0) => new(IPAddress.Loopback, port);

    private TcpInterface Tcp(TcpInterfaceOptions? options = null, TimeProvider? time = null, int port = 0)
    {
        var nic = new TcpInterface(Loopback(port), options, time);
        _owned.Add(nic);
        return nic;
    }

    /// <summary>Starts <paramref name="nic"/> and returns what it receives, as (sender, bytes).</summary>
    private static ChannelReader<(EndPoint From, byte[] Frame)> Listen(IMeshInterface nic)
    {
        var inbox = Channel.CreateUnbounded<(EndPoint, byte[])>();
        nic.Start((_, from, frame) => inbox.Writer.TryWrite((from, frame.ToArray())));
        return inbox.Reader;
    }

    /// <summary>What <paramref name="nic"/> reports as closed connections, as (neighbour, reason).</summary>
    private static ChannelReader<(EndPoint Remote, string Reason)> Closures(TcpInterface nic)
    {
        var closed = Channel.CreateUnbounded<(EndPoint, string)>();
        nic.ConnectionClosed += (remote, reason) => closed.Writer.TryWrite((remote, reason));
        return closed.Reader;
    }

    private static async Task<T> Next<T>(ChannelReader<T> reader) => await reader.ReadAsync(Ct).AsTask().WaitAsync(Bound, Ct);

    private static byte[] Frame(int n, int size = 100)
    {
        var f = new byte[size];
        BinaryPrimitives.WriteInt32LittleEndian(f, n);
        for (var i = 4; i < size; i++)
            f[i] = (byte)(n + i);
        return f;
    }

    private static byte[] Preamble(int port) => [.. "SKYT"u8, 1, 0, (byte)(port >> 8), (byte)port];

    /// <summary>Reads from a raw client until the other end closes (end of stream or reset); returns the bytes read.</summary>
    private static async Task<int> ReadToCloseAsync(NetworkStream stream)
    {
        var buffer = new byte[4096];
        var total = 0;
        try
        {
            while (await stream.ReadAsync(buffer, Ct).AsTask().WaitAsync(Bound, Ct) is var n && n > 0)
                total += n;
        }
        catch (IOException)
        {
            // Reset: closed just as well.
        }
        return total;
    }

    [Fact]
    public async Task Hundreds_of_idle_connections_cannot_keep_a_real_neighbour_out()
    {
        var b = Tcp();
        var atB = Listen(b);
        // A crowd of connections that never send a preamble, far beyond what may wait for one.
        var idle = new List<Socket>();
        try
        {
            for (var i = 0; i < 300; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                idle.Add(socket);
                await socket.ConnectAsync(b.LocalEndPoint, Ct);
            }
            // A real neighbour still gets through at once, and the oldest idle connections made room for it.
            var a = Tcp();
            // Sent until it arrives: a frame offered while the dial is still held back is dropped, as on any link.
            using var resend = new PeriodicTimer(TimeSpan.FromMilliseconds(200));
            var arrived = Next(atB);
            while (!arrived.IsCompleted)
            {
                a.TrySend(b.LocalEndPoint, Frame(7));
                await Task.WhenAny(arrived, resend.WaitForNextTickAsync(Ct).AsTask());
            }
            var (from, frame) = await arrived;
            Assert.Equal(a.LocalEndPoint, from);
            Assert.Equal(Frame(7), frame);
            Assert.True(b.PendingEvicted >= 300 - new TcpInterfaceOptions().MaxPendingConnections, $"{b.PendingEvicted} idle connections evicted");
        }
        finally
        {
            foreach (var socket in idle)
                socket.Dispose();
        }
    }

    [Fact]
    public void The_preamble_is_magic_version_reserved_and_listening_port()
    {
        Assert.Equal(Convert.FromHexString("534B595401001B58"), TcpInterface.WritePreamble(7000));
        Assert.True(TcpInterface.TryReadPreamble(Convert.FromHexString("534B595401001B58"), out var port));
        Assert.Equal(7000, port);
        Assert.False(TcpInterface.TryReadPreamble(Convert.FromHexString("534B595402001B58"), out _)); // version 2
        Assert.False(TcpInterface.TryReadPreamble(Convert.FromHexString("534B595401011B58"), out _)); // reserved set
        Assert.False(TcpInterface.TryReadPreamble("GET / HT"u8, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TcpInterfaceOptions { Mtu = 100 }.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new TcpInterfaceOptions { SendQueueBytes = 1000 }.Validate());
    }

    [Fact]
    public async Task Frames_go_both_ways_over_one_connection_and_each_side_knows_the_other_by_its_listening_endpoint()
    {
        var a = Tcp();
        var b = Tcp();
        var atA = Listen(a);
        var atB = Listen(b);
        Assert.Equal(MeshWire.MaxFrameLength, a.Mtu);
        Assert.True(a.TrySend(b.LocalEndPoint, Frame(1)));
        var (from, frame) = await Next(atB);
        Assert.Equal(a.LocalEndPoint, from);
        Assert.Equal(Frame(1), frame);
        // The reply goes to the endpoint the frame came from: over the same connection, not a new dial.
        Assert.True(b.TrySend(from, Frame(2)));
        var (back, reply) = await Next(atA);
        Assert.Equal(b.LocalEndPoint, back);
        Assert.Equal(Frame(2), reply);
        Assert.Equal(1, a.ConnectionCount);
        Assert.Equal(1, b.ConnectionCount);
        Assert.Equal(1, b.Counters.FramesReceived);
        Assert.Equal(100, b.Counters.BytesReceived);
    }

    [Fact]
    public async Task Many_frames_arrive_intact_and_in_order_and_share_socket_writes()
    {
        var a = Tcp();
        var b = Tcp();
        Listen(a);
        var atB = Listen(b);
        const int count = 20_000;
        for (var i = 0; i < count; i++)
            Assert.True(a.TrySend(b.LocalEndPoint, Frame(i, 4 + i % 600)));
        for (var i = 0; i < count; i++)
        {
            var (_, frame) = await Next(atB);
            Assert.Equal(Frame(i, 4 + i % 600), frame);
        }
        Assert.Equal(0, a.Counters.SendDrops);
        Assert.Equal(count, b.Counters.FramesReceived);
        // Frames queued while the writer was busy went out together: far fewer writes than frames.
        Assert.True(a.SocketWrites < count / 4, $"{a.SocketWrites} socket writes for {count} frames");
    }

    [Fact]
    public async Task A_frame_of_the_largest_size_crosses_both_ways_and_a_larger_one_is_dropped()
    {
        var a = Tcp();
        var b = Tcp();
        var atA = Listen(a);
        var atB = Listen(b);
        var big = new byte[MeshWire.MaxFrameLength];
        Random.Shared.NextBytes(big);
        Assert.True(a.TrySend(b.LocalEndPoint, big));
        Assert.True(a.TrySend(b.LocalEndPoint, [1]));
        Assert.Equal(big, (await Next(atB)).Frame);
        Assert.Equal([1], (await Next(atB)).Frame);
        Assert.True(b.TrySend(a.LocalEndPoint, big));
        Assert.Equal(big, (await Next(atA)).Frame);
        Assert.False(a.TrySend(b.LocalEndPoint, new byte[MeshWire.MaxFrameLength + 1]));
        Assert.False(a.TrySend(b.LocalEndPoint, []));
        Assert.False(a.TrySend(new DnsEndPoint("localhost", 1), Frame(1)));
        Assert.Equal(3, a.Counters.SendDrops);
    }

    [Fact]
    public async Task The_bytes_on_the_wire_are_the_documented_preamble_and_length_prefixed_frames()
    {
        var a = Tcp();
        var atA = Listen(a);
        var raw = new TcpListener(IPAddress.Loopback, 0);
        raw.Start();
        try
        {
            var rawEndPoint = (IPEndPoint)raw.LocalEndpoint;
            Assert.True(a.TrySend(rawEndPoint, [1, 2, 3]));
            Assert.True(a.TrySend(rawEndPoint, [4]));
            using var peer = await raw.AcceptTcpClientAsync(Ct).AsTask().WaitAsync(Bound, Ct);
            var stream = peer.GetStream();
            var got = new byte[8 + 2 + 3 + 2 + 1];
            await stream.ReadExactlyAsync(got, Ct).AsTask().WaitAsync(Bound, Ct);
            Assert.Equal([.. Preamble(((IPEndPoint)a.LocalEndPoint).Port), 0, 3, 1, 2, 3, 0, 1, 4], got);
            // The other way: a preamble, then records, arriving in pieces; frames come from the endpoint a dialled.
            await stream.WriteAsync(Preamble(0).AsMemory(0, 5), Ct);
            await stream.WriteAsync(new byte[] { 0, 0, 0, 0, 2, 9 }, Ct);
            await stream.WriteAsync(new byte[] { 8, 0, 1, 7 }, Ct);
            var (from, frame) = await Next(atA);
            Assert.Equal(rawEndPoint, from);
            Assert.Equal([9, 8], frame);
            Assert.Equal([7], (await Next(atA)).Frame);
        }
        finally
        {
            raw.Stop();
        }
    }

    [Fact]
    public async Task An_accepted_connection_is_known_by_its_announced_listening_port_and_replies_go_back_over_it()
    {
        var a = Tcp();
        var atA = Listen(a);
        var opened = new TaskCompletionSource<(EndPoint, bool)>(TaskCreationOptions.RunContinuationsAsynchronously);
        a.ConnectionOpened += (remote, dialled) => opened.TrySetResult((remote, dialled));
        using var client = new TcpClient();
        await client.ConnectAsync((IPEndPoint)a.LocalEndPoint, Ct);
        var stream = client.GetStream();
        // The client says it listens on port 4242 (nobody does): a must answer over this connection, not dial 4242.
        await stream.WriteAsync((byte[])[.. Preamble(4242), 0, 2, 5, 6], Ct);
        var (from, frame) = await Next(atA);
        EndPoint announced = new IPEndPoint(IPAddress.Loopback, 4242);
        Assert.Equal(announced, from);
        Assert.Equal([5, 6], frame);
        Assert.Equal((announced, false), await opened.Task.WaitAsync(Bound, Ct));
        Assert.True(a.TrySend(from, [7, 7, 7]));
        var got = new byte[8 + 2 + 3];
        await stream.ReadExactlyAsync(got, Ct).AsTask().WaitAsync(Bound, Ct);
        Assert.Equal([.. Preamble(((IPEndPoint)a.LocalEndPoint).Port), 0, 3, 7, 7, 7], got);
        Assert.Equal(1, a.ConnectionCount);
        Assert.Equal(0, a.DialFailures);
    }

    [Fact]
    public async Task Two_switches_link_over_tcp_and_exchange_labelled_messages()
    {
        using var ka = NodeKey.Generate();
        using var kb = NodeKey.Generate();
        await using var a = new MeshSwitch(ka);
        await using var b = new MeshSwitch(kb);
        var aNic = new TcpInterface(Loopback());
        var bNic = new TcpInterface(Loopback());
        a.AddInterface(aNic);
        b.AddInterface(bNic);
        var bIn = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        b.LinkUp += l => bIn.TrySetResult(l);
        var ab = await a.ConnectAsync(aNic, bNic.LocalEndPoint, kb.Address, Ct).WaitAsync(Bound, Ct);
        var ba = await bIn.Task.WaitAsync(Bound, Ct);
        Assert.True(ab.Encrypted);
        Assert.Equal(aNic.LocalEndPoint, ba.Remote);
        var atB = new Inbox();
        var atA = new Inbox();
        b.Labels.Install(ba.Id, 4, LabelAction.Deliver(b.RegisterSink(atB)));
        a.Labels.Install(ab.Id, 5, LabelAction.Deliver(a.RegisterSink(atA)));

        const int count = 5000;
        for (var i = 0; i < count; i++)
        {
            Assert.True(ab.TryEnqueue(4, 16, BitConverter.GetBytes(i)));
            Assert.True(ba.TryEnqueue(5, 17, BitConverter.GetBytes(-i)));
        }
        var big = new byte[60_000];
        Random.Shared.NextBytes(big);
        Assert.True(ab.TryEnqueue(4, 16, big));
        for (var i = 0; i < count; i++)
        {
            var (label, type, payload) = await atB.NextAsync();
            Assert.Equal((4u, (byte)16, i), (label, type, BitConverter.ToInt32(payload)));
            (label, type, payload) = await atA.NextAsync();
            Assert.Equal((5u, (byte)17, -i), (label, type, BitConverter.ToInt32(payload)));
        }
        Assert.Equal(big, (await atB.NextAsync()).Payload);
        Assert.Equal(1, aNic.ConnectionCount);
        Assert.Equal(1, bNic.ConnectionCount);
        Assert.Equal(0, a.BadFrames + b.BadFrames);
    }

    /// <summary>Collects what a switch delivers to a local endpoint.</summary>
    private sealed class Inbox : IPathSink
    {
        private readonly Channel<(uint Label, byte Type, byte[] Payload)> _channel = Channel.CreateUnbounded<(uint, byte, byte[])>();

        public async Task<(uint Label, byte Type, byte[] Payload)> NextAsync() => await Next(_channel.Reader);

        public void OnMessage(Link from, uint label, byte type, ReadOnlySpan<byte> payload) =>
            _channel.Writer.TryWrite((label, type, payload.ToArray()));
    }

    [Fact]
    public async Task Garbage_or_a_bad_length_closes_only_that_connection_and_is_counted()
    {
        var a = Tcp();
        var b = Tcp();
        Listen(a);
        var atB = Listen(b);
        var closed = Closures(b);
        Assert.True(a.TrySend(b.LocalEndPoint, Frame(1)));
        Assert.Equal(Frame(1), (await Next(atB)).Frame);

        byte[][] bad =
        [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(), // not a preamble
            [.. Preamble(0), 0, 0], // a frame of length 0
            [.. Preamble(0), 0, 1, 42, 0xFF, 0xFF], // one good frame, then a length above the MTU
        ];
        foreach (var junk in bad)
        {
            using var client = new TcpClient();
            await client.ConnectAsync((IPEndPoint)b.LocalEndPoint, Ct);
            var stream = client.GetStream();
            await stream.WriteAsync(junk, Ct);
            // b answers with its own preamble (at most), then hangs up.
            Assert.InRange(await ReadToCloseAsync(stream), 0, TcpInterface.PreambleLength);
            var (_, reason) = await Next(closed);
            Assert.Contains(junk[0] == (byte)'G' ? "bad preamble" : "bad frame length", reason, StringComparison.Ordinal);
        }
        Assert.Equal(3, b.ProtocolErrors);
        Assert.Equal([42], (await Next(atB)).Frame); // the good frame before the bad length was delivered
        // The neighbour's own connection never noticed.
        Assert.True(a.TrySend(b.LocalEndPoint, Frame(2)));
        var (from, frame) = await Next(atB);
        Assert.Equal(a.LocalEndPoint, from);
        Assert.Equal(Frame(2), frame);
        Assert.Equal(1, b.ConnectionCount);
        Assert.Equal(0, a.ProtocolErrors);
    }

    [Fact]
    public async Task A_silent_client_is_closed_after_the_preamble_timeout_and_clients_over_the_limit_are_refused()
    {
        var time = new FakeTimeProvider();
        var b = Tcp(new TcpInterfaceOptions { MaxAcceptedConnections = 1, AcceptedPreambleTimeout = TimeSpan.FromSeconds(5) }, time);
        Listen(b);
        var closed = Closures(b);
        using var silent = new TcpClient();
        await silent.ConnectAsync((IPEndPoint)b.LocalEndPoint, Ct);
        // b's preamble shows it accepted the connection, and armed its timer.
        var greeting = new byte[TcpInterface.PreambleLength];
        await silent.GetStream().ReadExactlyAsync(greeting, Ct).AsTask().WaitAsync(Bound, Ct);
        Assert.Equal(Preamble(((IPEndPoint)b.LocalEndPoint).Port), greeting);

        using (var extra = new TcpClient())
        {
            await extra.ConnectAsync((IPEndPoint)b.LocalEndPoint, Ct);
            Assert.Equal(0, await ReadToCloseAsync(extra.GetStream()));
        }
        Assert.Equal(1, b.RefusedConnections);

        time.Advance(TimeSpan.FromSeconds(4.9));
        Assert.Equal(1, b.ConnectionCount);
        time.Advance(TimeSpan.FromSeconds(0.1));
        Assert.Equal(0, await ReadToCloseAsync(silent.GetStream()));
        var (_, reason) = await Next(closed);
        Assert.Contains("no preamble", reason, StringComparison.Ordinal);
        Assert.Equal(1, b.ProtocolErrors);
        Assert.Equal(0, b.ConnectionCount);

        // The slot is free again.
        using var next = new TcpClient();
        await next.ConnectAsync((IPEndPoint)b.LocalEndPoint, Ct);
        await next.GetStream().ReadExactlyAsync(greeting, Ct).AsTask().WaitAsync(Bound, Ct);
        Assert.Equal(1, b.RefusedConnections);
    }

    [Fact]
    public async Task A_neighbour_that_dies_and_comes_back_is_redialled_after_a_backoff()
    {
        var time = new FakeTimeProvider();
        var a = Tcp(new TcpInterfaceOptions { RedialDelay = TimeSpan.FromSeconds(1), MaxRedialDelay = TimeSpan.FromSeconds(8) }, time);
        Listen(a);
        var closed = Closures(a);
        var b = new TcpInterface(Loopback());
        var atB = Listen(b);
        var bEndPoint = b.LocalEndPoint;
        Assert.True(a.TrySend(bEndPoint, Frame(1)));
        Assert.Equal(Frame(1), (await Next(atB)).Frame);

        await b.DisposeAsync();
        var (remote, _) = await Next(closed);
        Assert.Equal(bEndPoint, remote);
        // Not dialled again within the redial delay of the last dial...
        Assert.False(a.TrySend(bEndPoint, Frame(2)));
        Assert.Equal(0, a.ConnectionCount);
        time.Advance(TimeSpan.FromSeconds(1));
        // ...then dialled (the frame waits in the queue) and refused: nobody listens there now.
        Assert.True(a.TrySend(bEndPoint, Frame(3)));
        var (_, reason) = await Next(closed);
        Assert.Contains("dial failed", reason, StringComparison.Ordinal);
        Assert.Equal(1, a.DialFailures);
        // After a failed dial the wait doubles: 2 s.
        time.Advance(TimeSpan.FromSeconds(1.9));
        Assert.False(a.TrySend(bEndPoint, Frame(4)));
        Assert.Equal(0, a.ConnectionCount);

        var b2 = Tcp(port: ((IPEndPoint)bEndPoint).Port);
        var atB2 = Listen(b2);
        time.Advance(TimeSpan.FromSeconds(0.1));
        Assert.True(a.TrySend(bEndPoint, Frame(5)));
        var (from, frame) = await Next(atB2);
        Assert.Equal(a.LocalEndPoint, from);
        Assert.Equal(Frame(5), frame);
        Assert.Equal(1, a.DialFailures);
        Assert.Equal(3, a.Counters.SendDrops); // frames 2 and 4 held off, frame 3 lost with the failed dial
    }

    [Fact]
    public async Task Both_sides_dialling_at_once_deliver_every_frame_with_the_right_sender()
    {
        var a = Tcp();
        var b = Tcp();
        // Before either starts reading, neither can learn of the other's dial: both dial.
        for (var i = 0; i < 10; i++)
        {
            Assert.True(a.TrySend(b.LocalEndPoint, Frame(i)));
            Assert.True(b.TrySend(a.LocalEndPoint, Frame(100 + i)));
        }
        var atA = Listen(a);
        var atB = Listen(b);
        var fromA = new List<int>();
        var fromB = new List<int>();
        for (var i = 0; i < 10; i++)
        {
            var (sender, frame) = await Next(atB);
            Assert.Equal(a.LocalEndPoint, sender);
            fromA.Add(BitConverter.ToInt32(frame));
            (sender, frame) = await Next(atA);
            Assert.Equal(b.LocalEndPoint, sender);
            fromB.Add(BitConverter.ToInt32(frame));
        }
        Assert.Equal(Enumerable.Range(0, 10), fromA);
        Assert.Equal(Enumerable.Range(100, 10), fromB);
        Assert.Equal(2, a.ConnectionCount);
        Assert.Equal(2, b.ConnectionCount);
        // Both connections are kept; whichever each side sends on, the frames keep their order.
        for (var i = 0; i < 1000; i++)
        {
            Assert.True(a.TrySend(b.LocalEndPoint, Frame(1000 + i)));
            Assert.True(b.TrySend(a.LocalEndPoint, Frame(5000 + i)));
        }
        for (var i = 0; i < 1000; i++)
        {
            Assert.Equal(Frame(1000 + i), (await Next(atB)).Frame);
            Assert.Equal(Frame(5000 + i), (await Next(atA)).Frame);
        }
        Assert.Equal(2, a.ConnectionCount);
    }

    [Fact]
    public async Task A_handler_that_throws_is_counted_and_the_connection_survives()
    {
        var a = Tcp();
        var b = Tcp();
        Listen(a);
        var atB = Channel.CreateUnbounded<byte[]>();
        b.Start((_, _, frame) =>
        {
            if (frame[0] == 0xEE)
                throw new InvalidOperationException("handler bug");
            atB.Writer.TryWrite(frame.ToArray());
        });
        Assert.True(a.TrySend(b.LocalEndPoint, [0xEE, 1]));
        Assert.True(a.TrySend(b.LocalEndPoint, [1, 2]));
        Assert.Equal([1, 2], await Next(atB.Reader));
        Assert.Equal(1, b.Counters.HandlerFaults);
        Assert.IsType<InvalidOperationException>(b.Counters.LastHandlerFault);
        Assert.Equal(1, b.ConnectionCount);
    }

    [Fact]
    public void A_neighbour_that_reads_nothing_fills_the_bounded_queue_and_later_frames_are_dropped()
    {
        var a = Tcp(new TcpInterfaceOptions { SendQueueBytes = 2 * (MeshWire.MaxFrameLength + 2) }, new FakeTimeProvider());
        Listen(a);
        var raw = new TcpListener(IPAddress.Loopback, 0);
        raw.Start();
        try
        {
            // Nobody reads: the kernel's buffers fill, then a's queue; then frames are dropped, and TrySend never waits.
            var big = new byte[MeshWire.MaxFrameLength];
            var sent = 0;
            while (a.TrySend(raw.LocalEndpoint, big))
                Assert.True(++sent < 20_000, "the queue never filled");
            Assert.Equal(1, a.Counters.SendDrops);
            Assert.Equal(1, a.ConnectionCount);
        }
        finally
        {
            raw.Stop();
        }
    }

    [Fact]
    public async Task Dispose_finishes_promptly_with_connections_in_every_state_and_sends_nothing_after()
    {
        var a = new TcpInterface(Loopback());
        Listen(a);
        var b = Tcp();
        var atB = Listen(b);
        var bClosed = Closures(b);
        Assert.True(a.TrySend(b.LocalEndPoint, Frame(1)));
        await Next(atB);
        // A client that connected and says nothing.
        using var silent = new TcpClient();
        await silent.ConnectAsync((IPEndPoint)a.LocalEndPoint, Ct);
        await silent.GetStream().ReadExactlyAsync(new byte[TcpInterface.PreambleLength], Ct).AsTask().WaitAsync(Bound, Ct);
        // A neighbour that never reads, with frames queued behind it.
        var raw = new TcpListener(IPAddress.Loopback, 0);
        raw.Start();
        try
        {
            var big = new byte[MeshWire.MaxFrameLength];
            for (var i = 0; i < 500 && a.TrySend(raw.LocalEndpoint, big); i++)
            {
            }
            // A dial to an address that answers nothing (or fails at once, where there is no route).
            a.TrySend(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 9), Frame(2));

            await a.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(5), Ct);
            Assert.Equal(0, a.ConnectionCount);
            var drops = a.Counters.SendDrops;
            Assert.False(a.TrySend(b.LocalEndPoint, Frame(3)));
            Assert.Equal(drops + 1, a.Counters.SendDrops);
            Assert.Equal(0, await ReadToCloseAsync(silent.GetStream()));
            var (remote, _) = await Next(bClosed);
            Assert.Equal(a.LocalEndPoint, remote);
            await a.DisposeAsync();
        }
        finally
        {
            raw.Stop();
        }
    }
}
