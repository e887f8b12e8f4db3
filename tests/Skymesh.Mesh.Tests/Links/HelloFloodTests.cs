using System.Net;
using System.Net.Sockets;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Tests.Links;

/// <summary>
/// Floods of Hellos at a node on real loopback UDP, while a link of it carries traffic. They run alone: a flood takes a
/// core, and what they measure (a neighbour linking within its retries) is a matter of time.
/// </summary>
[Collection(nameof(FloodsRunAlone))]
public sealed class HelloFloodTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed class Counter : IPathSink
    {
        private long _count;

        public long Count => Interlocked.Read(ref _count);

        public void OnMessage(Link from, uint label, byte type, ReadOnlySpan<byte> payload) => Interlocked.Increment(ref _count);
    }

    private static byte[] HelloFrame(NodeKey key, bool forge)
    {
        using var ephemeral = EphemeralKey.Generate();
        var hello = LinkHandshake.WriteHello(key, ephemeral, true, 1400, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        if (forge)
            hello[^1] ^= 1;
        var frame = new FrameBuilder(1400);
        Assert.True(frame.TryAdd(0, LinkMessageType.Hello, hello, false));
        return frame.Seal(0, null).ToArray();
    }

    [Fact]
    public async Task A_flood_of_valid_and_forged_hellos_leaves_a_working_link_flowing_and_the_node_bounded()
    {
        await using var pair = await UdpPair.LinkAsync(Ct);
        var (b, bNic, ab, ba) = (pair.B, pair.BNic, pair.AtoB, pair.BtoA);
        var inbox = new Counter();
        b.Labels.Install(ba.Id, 4, LabelAction.Deliver(b.RegisterSink(inbox)));

        // Traffic over the link all along.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var traffic = Task.Run(async () =>
        {
            var payload = new byte[100];
            using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(1));
            while (await timer.WaitForNextTickAsync(stop.Token).AsTask().ContinueWith(t => !t.IsCanceled && t.Result, TaskScheduler.Default))
                ab.TryEnqueue(4, 16, payload);
        }, Ct);
        Assert.True(SpinWait.SpinUntil(() => inbox.Count > 50, TimeSpan.FromSeconds(10)), "traffic never flowed");

        // One valid Hello (anyone can make one) from 2,000 source ports, ten times each; and 100,000 forged ones.
        using var attacker = NodeKey.Generate();
        var valid = HelloFrame(attacker, forge: false);
        var forged = HelloFrame(NodeKey.Generate(), forge: true);
        var sockets = new List<Socket>();
        try
        {
            for (var i = 0; i < 2000; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
                sockets.Add(s);
            }
            var before = inbox.Count;
            for (var round = 0; round < 10; round++)
            {
                foreach (var s in sockets)
                    s.SendTo(valid, bNic.LocalEndPoint);
                for (var i = 0; i < 10_000; i++)
                    sockets[i % 16].SendTo(forged, bNic.LocalEndPoint);
            }
            // The link kept carrying traffic through the flood and after it, and never went down.
            Assert.True(SpinWait.SpinUntil(() => inbox.Count > before + 500, TimeSpan.FromSeconds(20)), $"only {inbox.Count - before} messages crossed the link during the flood");
            Assert.Equal(LinkState.Up, ab.State);
            Assert.Equal(LinkState.Up, ba.State);

            // What the flood cost is bounded: the half-open links answered from one address, the link ids in use,
            // and every dropped Hello is counted.
            var drops = b.HelloDrops;
            Assert.True(b.HalfOpen <= new HandshakeLimits().HalfOpenPerAddress, $"{b.HalfOpen} half-open links");
            Assert.True(b.Links.Count <= 1 + new HandshakeLimits().HalfOpenPerAddress, $"{b.Links.Count} links");
            Assert.True(b.Links.Max(l => l.Id) <= 1 + new HandshakeLimits().HalfOpenPerAddress, "link ids grew with the flood");
            // (Many of the 120,000 datagrams never reach the node: the kernel drops what overflows its socket buffer.)
            Assert.True(drops.RateLimited > 1_000, $"drops {drops}");
        }
        finally
        {
            await stop.CancelAsync();
            await traffic;
            foreach (var s in sockets)
                s.Dispose();
        }
    }

    [Fact]
    public async Task A_new_neighbour_links_through_a_flood_from_a_thousand_addresses_by_proving_its_own()
    {
        // A node that takes strangers' Hellos at 20 a second in all: a flood from one test thread keeps that drained
        // even on a busy two-core machine, as a flood from elsewhere would keep the default 500 a second drained.
        using var kb = NodeKey.Generate();
        var options = new MeshSwitchOptions { Handshakes = new HandshakeLimits { HellosPerSecond = 20 } };
        await using var b = new MeshSwitch(kb, options);
        var bNic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        b.AddInterface(bNic);

        // Hellos from 1,000 loopback addresses, none of which ever answers a cookie: what a flood with forged source
        // addresses looks like to the node. Their signatures are bad, so each one that reached the handshake worker
        // would cost a signature check and leave nothing behind. Each address stays within its own rate, so only the
        // node-wide rate stands between the flood and the worker — and a real neighbour's Hello is one of thousands
        // at that gate.
        var forged = HelloFrame(NodeKey.Generate(), forge: true);
        var sockets = new List<Socket>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        Task flood = Task.CompletedTask;
        try
        {
            for (var i = 0; i < 1000; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                s.Bind(new IPEndPoint(new IPAddress([127, 1, (byte)(i / 250), (byte)(i % 250 + 1)]), 0));
                sockets.Add(s);
            }
            // As fast as one thread can send.
            flood = Task.Factory.StartNew(() =>
            {
                for (var next = 0; !stop.IsCancellationRequested; next++)
                    sockets[next % sockets.Count].SendTo(forged, bNic.LocalEndPoint);
            }, Ct, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            Assert.True(SpinWait.SpinUntil(() => b.HelloDrops.RateLimited + b.CookiesSent > 10_000, TimeSpan.FromSeconds(20)), "the flood never reached the node");

            // A real neighbour dials in the middle of it. Asked for a cookie, it proves its address and is let in
            // ahead of the flood, well within its handshake timeout (10 s). (Without the cookie round it has to win a
            // place at the node-wide gate against the flood: with Cookies off, it mostly times out.)
            using var kc = NodeKey.Generate();
            await using var c = new MeshSwitch(kc);
            var cNic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
            c.AddInterface(cNic);
            var bUp = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
            b.LinkUp += l => bUp.TrySetResult(l);
            var started = TimeProvider.System.GetTimestamp();
            var link = await c.ConnectAsync(cNic, bNic.LocalEndPoint, b.Address, Ct).WaitAsync(TimeSpan.FromSeconds(20), Ct);
            Assert.Equal(LinkState.Up, link.State);
            Assert.Equal(b.Address, link.Peer);
            // Within its own Hello retries, clear of the 10 s timeout that the flood would otherwise run it into (on a
            // two-core machine whose other core sends the flood, a retry or two is normal: 2–6 s seen).
            Assert.True(TimeProvider.System.GetElapsedTime(started) < TimeSpan.FromSeconds(8), $"linked after {TimeProvider.System.GetElapsedTime(started)}");
            Assert.True(b.CookiesSent > 1000, $"{b.CookiesSent} cookies");
            // The node's end is up too, and nothing the flood sent took a link.
            Assert.Equal(kc.Address, (await bUp.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct)).Peer);
            Assert.Single(b.Links, l => l.State == LinkState.Up);
            Assert.Equal(0, b.HalfOpen);
        }
        finally
        {
            await stop.CancelAsync();
            await flood;
            foreach (var s in sockets)
                s.Dispose();
        }
    }
}

[CollectionDefinition(nameof(FloodsRunAlone), DisableParallelization = true)]
public sealed class FloodsRunAlone;
