using System.Net;
using System.Threading.Channels;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Mesh.Interfaces;

namespace Skymesh.Mesh.Tests.Interfaces;

public sealed class InterfaceTests : IAsyncDisposable
{
    private readonly List<IMeshInterface> _owned = [];

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>The next frame <paramref name="inbox"/> receives, failing the test rather than waiting for ever.</summary>
    private static async Task<(EndPoint From, byte[] Frame)> Next(ChannelReader<(EndPoint From, byte[] Frame)> inbox) =>
        await inbox.ReadAsync(Ct).AsTask().WaitAsync(Patience, Ct);

    public async ValueTask DisposeAsync()
    {
        foreach (var nic in _owned)
            await nic.DisposeAsync();
    }

    /// <summary>Starts <paramref name="nic"/> and returns what it receives, as (sender, bytes).</summary>
    private ChannelReader<(EndPoint From, byte[] Frame)> Listen(IMeshInterface nic)
    {
        _owned.Add(nic);
        var inbox = Channel.CreateUnbounded<(EndPoint, byte[])>();
        nic.Start((_, from, frame) => inbox.Writer.TryWrite((from, frame.ToArray())));
        return inbox.Reader;
    }

    private static byte[] Frame(int n, int size = 100)
    {
        var f = new byte[size];
        BitConverter.TryWriteBytes(f, n);
        return f;
    }

    [Fact]
    public async Task An_in_memory_frame_arrives_unchanged_with_its_sender()
    {
        var net = new MemoryNetwork();
        var a = net.CreateInterface();
        var b = net.CreateInterface();
        Listen(a);
        var atB = Listen(b);
        Assert.True(a.TrySend(b.EndPoint, Frame(7)));
        var (from, frame) = await Next(atB);
        Assert.Equal(a.EndPoint, from);
        Assert.Equal(Frame(7), frame);
        Assert.Equal(1, a.Counters.FramesSent);
        Assert.Equal(1, b.Counters.FramesReceived);
    }

    [Fact]
    public async Task Latency_holds_a_frame_back_for_exactly_that_long_in_virtual_time()
    {
        var time = new FakeTimeProvider();
        var net = new MemoryNetwork(time);
        var a = net.CreateInterface();
        var b = net.CreateInterface();
        var atB = Listen(b);
        net.SetImpairment(a.EndPoint, b.EndPoint, new Impairment { Latency = TimeSpan.FromMilliseconds(50) });
        a.TrySend(b.EndPoint, Frame(1));
        time.Advance(TimeSpan.FromMilliseconds(49));
        Assert.False(atB.TryRead(out _));
        time.Advance(TimeSpan.FromMilliseconds(1));
        var (_, frame) = await Next(atB);
        Assert.Equal(Frame(1), frame);
    }

    [Fact]
    public async Task Bandwidth_makes_frames_queue_behind_each_other()
    {
        var time = new FakeTimeProvider();
        var net = new MemoryNetwork(time);
        var a = net.CreateInterface();
        var b = net.CreateInterface();
        var atB = Listen(b);
        // 10 frames of 1,000 bytes at 10,000 bytes/s: one leaves every 100 ms.
        net.SetImpairment(a.EndPoint, b.EndPoint, new Impairment { BandwidthBytesPerSecond = 10_000 });
        for (var i = 0; i < 10; i++)
            a.TrySend(b.EndPoint, Frame(i, 1000));
        for (var i = 0; i < 10; i++)
        {
            time.Advance(TimeSpan.FromMilliseconds(99));
            Assert.False(atB.TryRead(out _));
            time.Advance(TimeSpan.FromMilliseconds(1));
            var (_, frame) = await Next(atB);
            Assert.Equal(i, BitConverter.ToInt32(frame));
        }
    }

    [Fact]
    public async Task Loss_duplication_and_reordering_happen_at_about_the_rates_asked()
    {
        var time = new FakeTimeProvider();
        var net = new MemoryNetwork(time, seed: 1);
        const int sent = 5000;
        var a = net.CreateInterface();
        // This thread delivers every frame (by advancing virtual time) faster than b's receive loop may get a
        // pool thread to drain them, so b's queue must hold the whole burst: with the default 4,096 a full
        // queue drops frames (as a real one would), skewing the loss count and dropping the end marker, which
        // left the read below waiting for ever. Up to two copies of each frame, and the marker, can arrive.
        var b = net.CreateInterface(receiveQueue: 2 * sent + 1);
        var atB = Listen(b);
        net.SetImpairment(a.EndPoint, b.EndPoint, new Impairment
        {
            Latency = TimeSpan.FromMilliseconds(10),
            Loss = 0.1,
            Duplication = 0.1,
            Reordering = 0.1,
            ReorderDelay = TimeSpan.FromMilliseconds(5),
        });
        for (var i = 0; i < sent; i++)
        {
            a.TrySend(b.EndPoint, Frame(i));
            time.Advance(TimeSpan.FromMilliseconds(1));
        }
        time.Advance(TimeSpan.FromSeconds(1));
        // Everything due has reached b's queue; a frame sent now, unimpaired, marks the end of it.
        net.SetImpairment(a.EndPoint, b.EndPoint, Impairment.None);
        a.TrySend(b.EndPoint, Frame(-1));
        var received = new List<int>();
        while (BitConverter.ToInt32((await Next(atB)).Frame) is var n && n != -1)
            received.Add(n);
        var distinct = received.Distinct().Count();
        var duplicates = received.Count - distinct;
        var overtaken = received.Zip(received.Skip(1)).Count(p => p.Second < p.First);
        Assert.Equal(0, b.Counters.ReceiveDrops); // every loss counted below is the impairment's
        Assert.InRange(sent - distinct, 350, 650); // ~10 % lost
        Assert.InRange(duplicates, 300, 600); // ~10 % of the survivors twice
        Assert.InRange(overtaken, 200, 1000); // held-back frames arrive after later ones
    }

    [Fact]
    public async Task A_cut_path_loses_everything_until_restored()
    {
        var time = new FakeTimeProvider();
        var net = new MemoryNetwork(time);
        var a = net.CreateInterface();
        var b = net.CreateInterface();
        var atB = Listen(b);
        net.SetCut(a.EndPoint, b.EndPoint, cut: true);
        Assert.True(a.TrySend(b.EndPoint, Frame(1)));
        net.SetCut(a.EndPoint, b.EndPoint, cut: false);
        a.TrySend(b.EndPoint, Frame(2));
        // The first frame to arrive is the one sent after the cut was mended.
        Assert.Equal(2, BitConverter.ToInt32((await Next(atB)).Frame));
    }

    [Fact]
    public void Frames_larger_than_the_mtu_and_frames_to_nobody_are_dropped_and_counted()
    {
        var net = new MemoryNetwork();
        var a = net.CreateInterface(mtu: 1400);
        Listen(a);
        Assert.False(a.TrySend(new MemoryEndPoint(999), Frame(1)));
        Assert.False(a.TrySend(a.EndPoint, new byte[1401]));
        Assert.Equal(2, a.Counters.SendDrops);
        Assert.Throws<ArgumentOutOfRangeException>(() => net.CreateInterface(mtu: 100));
        Assert.Throws<ArgumentException>(() => net.SetDefaultImpairment(new Impairment { Loss = 2 }));
    }

    [Fact]
    public async Task Udp_interfaces_exchange_datagrams_on_loopback()
    {
        var a = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        var b = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        var atA = Listen(a);
        var atB = Listen(b);
        Assert.Equal(UdpInterface.LoopbackMtu, a.Mtu);
        var big = Frame(5, 60_000);
        Assert.True(a.TrySend(b.LocalEndPoint, big));
        var (from, frame) = await Next(atB);
        Assert.Equal(a.LocalEndPoint, from);
        Assert.Equal(big, frame);
        Assert.True(b.TrySend(from, Frame(6)));
        Assert.Equal(Frame(6), (await Next(atA)).Frame);
    }

    [Fact]
    public async Task A_udp_interface_closes_cleanly_whatever_its_receive_loop_is_doing()
    {
        // Closing races the receive loop: it may not have started, may be entering a receive, or be waiting in
        // one when the socket is shut. Whichever, DisposeAsync ends the loop without an error.
        for (var i = 0; i < 1000; i++)
        {
            var nic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
            nic.Start((_, _, _) => { });
            if (i % 3 == 1)
                await Task.Yield();
            await nic.DisposeAsync().AsTask().WaitAsync(Patience, Ct);
        }
    }

    [Fact]
    public async Task A_udp_interface_survives_oversize_frames_and_unreachable_peers()
    {
        var a = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0), mtu: 1400);
        var b = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0), mtu: 1400);
        Listen(a);
        var atB = Listen(b);
        Assert.False(a.TrySend(b.LocalEndPoint, new byte[1401]));
        // Nobody listens there: the send may fail or vanish, but nothing breaks.
        using (var probe = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp))
        {
            probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            var closed = probe.LocalEndPoint!;
            probe.Dispose();
            a.TrySend(closed, Frame(1));
        }
        // A raw datagram larger than b's MTU is dropped by b, and b keeps receiving.
        using (var raw = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp))
            raw.SendTo(new byte[5000], b.LocalEndPoint);
        Assert.True(a.TrySend(b.LocalEndPoint, Frame(2)));
        Assert.Equal(Frame(2), (await Next(atB)).Frame);
        Assert.Equal(1, b.Counters.ReceiveDrops);
    }
}
