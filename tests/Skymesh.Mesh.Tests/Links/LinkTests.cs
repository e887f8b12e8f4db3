using System.Net;
using System.Threading.Channels;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Tests.Links;

public sealed class LinkTests : IAsyncDisposable
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero));
    private readonly List<MeshSwitch> _switches = [];
    private readonly List<NodeKey> _keys = [];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask DisposeAsync()
    {
        foreach (var s in _switches)
            await s.DisposeAsync();
        foreach (var k in _keys)
            k.Dispose();
    }

    private (MeshSwitch Switch, MemoryInterface Nic) Node(MemoryNetwork net, MeshSwitchOptions? options = null)
    {
        var key = NodeKey.Generate();
        _keys.Add(key);
        var sw = new MeshSwitch(key, options, net.Time);
        var nic = net.CreateInterface();
        sw.AddInterface(nic);
        _switches.Add(sw);
        return (sw, nic);
    }

    /// <summary>Collects what a switch delivers to a local endpoint.</summary>
    private sealed class Inbox : IPathSink
    {
        private readonly Channel<(uint Label, byte Type, byte[] Payload)> _channel = Channel.CreateUnbounded<(uint, byte, byte[])>();

        public ChannelReader<(uint Label, byte Type, byte[] Payload)> Reader => _channel.Reader;

        /// <summary>The next delivered message; fails the test instead of hanging when none comes.</summary>
        public async Task<(uint Label, byte Type, byte[] Payload)> NextAsync() =>
            await _channel.Reader.ReadAsync(Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(30), Ct);

        public void OnMessage(Link from, uint label, byte type, ReadOnlySpan<byte> payload) =>
            _channel.Writer.TryWrite((label, type, payload.ToArray()));
    }

    [Fact]
    public async Task Two_nodes_prove_their_identities_and_bring_up_an_encrypted_link()
    {
        var net = new MemoryNetwork(_time);
        var (a, aNic) = Node(net);
        var (b, bNic) = Node(net);
        var bUp = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        b.LinkUp += l => bUp.TrySetResult(l);
        var link = await a.ConnectAsync(aNic, bNic.EndPoint, b.Address, Ct);
        var back = await bUp.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        Assert.Equal(LinkState.Up, link.State);
        Assert.Equal(b.Address, link.Peer);
        Assert.Equal(a.Address, back.Peer);
        Assert.True(link.Encrypted);
        Assert.True(back.Encrypted);
        Assert.Equal(0, a.HandshakeFailures + b.HandshakeFailures);
    }

    [Fact]
    public async Task Reaching_a_node_other_than_the_one_expected_fails_with_both_names()
    {
        var net = new MemoryNetwork(_time);
        var (a, aNic) = Node(net);
        var (b, bNic) = Node(net);
        using var someoneElse = NodeKey.Generate();
        var e = await Assert.ThrowsAsync<LinkFailedException>(() => a.ConnectAsync(aNic, bNic.EndPoint, someoneElse.Address, Ct));
        Assert.Contains(b.Address.ToString(), e.Message, StringComparison.Ordinal);
        Assert.Contains(someoneElse.Address.ToString(), e.Message, StringComparison.Ordinal);
        Assert.Empty(a.Links);
    }

    [Fact]
    public async Task A_message_crosses_a_three_node_chain_by_label_switching_and_queued_messages_share_frames()
    {
        var net = new MemoryNetwork(_time);
        var (a, aNic) = Node(net);
        var (b, bNic) = Node(net);
        var (c, cNic) = Node(net);
        var bIn = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        var cIn = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        b.LinkUp += l => { if (l.Peer == a.Address) bIn.TrySetResult(l); };
        c.LinkUp += l => cIn.TrySetResult(l);
        var ab = await a.ConnectAsync(aNic, bNic.EndPoint, b.Address, Ct);
        var bc = await b.ConnectAsync(bNic, cNic.EndPoint, c.Address, Ct);
        var ba = await bIn.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var cb = await cIn.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct);

        // C delivers label 9 on its link from B; B switches label 5 from A onto label 9 towards C.
        var inbox = new Inbox();
        var sink = c.RegisterSink(inbox);
        c.Labels.Install(cb.Id, 9, LabelAction.Deliver(sink));
        b.Labels.Install(ba.Id, 5, LabelAction.Forward(bc.Id, 9));

        const int count = 2000;
        for (var i = 0; i < count; i++)
            Assert.True(ab.TryEnqueue(5, 16, BitConverter.GetBytes(i)));
        for (var i = 0; i < count; i++)
        {
            var (label, type, payload) = await inbox.NextAsync();
            Assert.Equal(9u, label);
            Assert.Equal(16, type);
            Assert.Equal(i, BitConverter.ToInt32(payload));
        }
        Assert.Equal(count, b.Forwarded);
        Assert.Equal(count, c.Delivered);
        // 2,000 messages queued at once left A in far fewer frames than messages.
        Assert.True(ab.Info().FramesSent < count / 10, $"{ab.Info().FramesSent} frames for {count} messages");
    }

    [Fact]
    public async Task A_link_that_goes_silent_is_declared_down_and_its_label_entries_go_with_it()
    {
        var net = new MemoryNetwork(_time);
        var options = new MeshSwitchOptions { KeepaliveInterval = TimeSpan.FromSeconds(1), DeadAfter = TimeSpan.FromSeconds(5) };
        var (a, aNic) = Node(net, options);
        var (b, bNic) = Node(net, options);
        var link = await a.ConnectAsync(aNic, bNic.EndPoint, b.Address, Ct);
        a.Labels.Install(link.Id, 3, LabelAction.Deliver(1));
        var down = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        a.LinkDown += (_, reason) => down.TrySetResult(reason);
        // While both sides keep alive, the link stays up well past DeadAfter and measures its round trip.
        for (var second = 0; second < 10; second++)
        {
            var heard = link.Info().FramesReceived;
            for (var step = 0; step < 4; step++)
                _time.Advance(TimeSpan.FromMilliseconds(250));
            // Each virtual second B sends a keepalive and answers A's: wait (bounded) until A has read one.
            Assert.True(SpinWait.SpinUntil(() => link.Info().FramesReceived > heard, TimeSpan.FromSeconds(10)));
        }
        Assert.Equal(LinkState.Up, link.State);
        Assert.NotNull(link.Rtt);
        net.SetCut(aNic.EndPoint, bNic.EndPoint, cut: true);
        for (var i = 0; i < 40 && !down.Task.IsCompleted; i++)
            _time.Advance(TimeSpan.FromMilliseconds(250));
        var reason = await down.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        Assert.Contains("silent", reason, StringComparison.Ordinal);
        Assert.Equal(LinkState.Down, link.State);
        Assert.Empty(a.Labels.List());
    }

    [Fact]
    public void A_forged_hello_is_refused_and_counted()
    {
        var net = new MemoryNetwork(_time);
        var (b, bNic) = Node(net);
        var mallory = net.CreateInterface();
        mallory.Start((_, _, _) => { });
        using var key = NodeKey.Generate();
        using var ephemeral = EphemeralKey.Generate();
        var hello = LinkHandshake.WriteHello(key, ephemeral, true, 1400, _time.GetUtcNow().ToUnixTimeMilliseconds());
        hello[^1] ^= 1; // break the signature
        var frame = new FrameBuilder(1400);
        frame.TryAdd(0, LinkMessageType.Hello, hello, false);
        mallory.TrySend(bNic.EndPoint, frame.Seal(0, null));
        // Checked by the handshake worker before anything is kept: counted, and no link (nor link id) is spent on it.
        Assert.True(SpinWait.SpinUntil(() => b.HandshakeFailures == 1, TimeSpan.FromSeconds(10)), "the forged Hello was not counted");
        Assert.Equal(1, b.HelloDrops.Refused);
        Assert.Empty(b.Links);
    }

    [Fact]
    public async Task Random_frames_from_strangers_and_neighbours_never_break_a_working_link()
    {
        var net = new MemoryNetwork(_time);
        var (a, aNic) = Node(net);
        var (b, bNic) = Node(net);
        var bIn = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        b.LinkUp += l => bIn.TrySetResult(l);
        var ab = await a.ConnectAsync(aNic, bNic.EndPoint, b.Address, Ct);
        var ba = await bIn.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var inbox = new Inbox();
        b.Labels.Install(ba.Id, 1, LabelAction.Deliver(b.RegisterSink(inbox)));
        var stranger = net.CreateInterface();
        stranger.Start((_, _, _) => { });
        var random = new Random(7);
        var junk = new byte[3000];
        for (var i = 0; i < 2000; i++)
        {
            var length = random.Next(junk.Length);
            random.NextBytes(junk.AsSpan(0, length));
            if (i % 3 == 0 && length > 12)
                new FrameHeader((FrameFlags)(i % 2), (ulong)i).Write(junk);
            stranger.TrySend(bNic.EndPoint, junk.AsSpan(0, length));
            // The same junk as if from A's own address is just as harmless.
            aNic.TrySend(bNic.EndPoint, junk.AsSpan(0, length));
        }
        // Let B's interface work through the junk first: its queue is bounded, and a full one would drop our frame too.
        var drained = SpinWait.SpinUntil(() => bNic.Counters.FramesReceived + bNic.Counters.ReceiveDrops >= 4000, TimeSpan.FromSeconds(30));
        Assert.True(drained, $"received {bNic.Counters.FramesReceived}, dropped {bNic.Counters.ReceiveDrops}, faults {bNic.Counters.HandlerFaults} {bNic.Counters.LastHandlerFault}; stranger sent {stranger.Counters.FramesSent}, a sent {aNic.Counters.FramesSent}");
        Assert.True(ab.TryEnqueue(1, 16, "still here"u8));
        var (_, _, payload) = await inbox.NextAsync();
        Assert.Equal("still here"u8.ToArray(), payload);
        Assert.True(b.BadFrames > 0);
        Assert.Equal(LinkState.Up, ba.State);
    }

    [Fact]
    public async Task Two_nodes_link_over_real_udp_on_loopback()
    {
        await using var pair = await UdpPair.LinkAsync(Ct);
        var (b, ab, ba) = (pair.B, pair.AtoB, pair.BtoA);
        var inbox = new Inbox();
        b.Labels.Install(ba.Id, 4, LabelAction.Deliver(b.RegisterSink(inbox)));
        var big = new byte[60_000];
        Random.Shared.NextBytes(big);
        Assert.True(ab.TryEnqueue(4, 16, big));
        var (_, _, payload) = await inbox.NextAsync();
        Assert.Equal(big, payload);
    }

    [Fact]
    public async Task A_neighbour_that_crashed_and_restarted_on_the_same_address_links_again_at_once()
    {
        using var ka = NodeKey.Generate();
        using var kb = NodeKey.Generate();
        await using var b = new MeshSwitch(kb);
        var bNic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        b.AddInterface(bNic);
        var upAtB = System.Threading.Channels.Channel.CreateUnbounded<Link>();
        b.LinkUp += l => upAtB.Writer.TryWrite(l);
        var a1 = new MeshSwitch(ka);
        var a1Nic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        a1.AddInterface(a1Nic);
        var aEndPoint = (IPEndPoint)a1Nic.LocalEndPoint;
        await a1.ConnectAsync(a1Nic, bNic.LocalEndPoint, kb.Address, Ct).WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var first = await upAtB.Reader.ReadAsync(Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct);

        // A crashes: its socket goes away without a word, so B still holds the link up. A starts again on the same
        // address with the same key and dials B.
        await a1Nic.DisposeAsync();
        await using var a2 = new MeshSwitch(ka);
        var a2Nic = new UdpInterface(aEndPoint);
        a2.AddInterface(a2Nic);
        var started = TimeProvider.System.GetTimestamp();
        var link = await a2.ConnectAsync(a2Nic, bNic.LocalEndPoint, kb.Address, Ct).WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var second = await upAtB.Reader.ReadAsync(Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct);

        // B replaced the old link at once — without waiting for it to fall silent, which A's own Hellos would never let
        // it do — and the new link carries data.
        Assert.True(TimeProvider.System.GetElapsedTime(started) < TimeSpan.FromSeconds(3), $"relinked after {TimeProvider.System.GetElapsedTime(started)}");
        Assert.Equal(LinkState.Down, first.State);
        Assert.Equal(ka.Address, second.Peer);
        Assert.Single(b.Links, l => l.State == LinkState.Up);
        var inbox = new Inbox();
        b.Labels.Install(second.Id, 4, LabelAction.Deliver(b.RegisterSink(inbox)));
        Assert.True(link.TryEnqueue(4, 16, "after the restart"u8));
        Assert.Equal("after the restart"u8.ToArray(), (await inbox.NextAsync()).Payload);
        await a1.DisposeAsync();
    }
}
