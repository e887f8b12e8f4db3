using NATS.Client.Core;
using Skymesh.Control.Bus;
using Skymesh.Control.Bus.Nats;
using Skymesh.Identity;
using Skymesh.Tests.Shared;

namespace Skymesh.Control.Tests;

/// <summary>One three-server NATS cluster for a test class.</summary>
public sealed class NatsClusterFixture : IAsyncLifetime
{
    public NatsCluster Cluster { get; private set; } = null!;

    public async ValueTask InitializeAsync() => Cluster = await NatsCluster.StartAsync();

    public async ValueTask DisposeAsync() => await Cluster.DisposeAsync();
}

/// <summary>The control bus across the servers of a real NATS cluster: senders proven by signature, members that come and go, a server that dies.</summary>
public sealed class NatsBusTests : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private static readonly NatsControlBusOptions Fast = new() { MemberHeartbeat = TimeSpan.FromMilliseconds(300) };
    private readonly List<IAsyncDisposable> _owned = [];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<NatsControlBus> ConnectAsync(IReadOnlyList<string> urls, NodeKey? key = null)
    {
        var bus = await NatsControlBus.ConnectAsync(urls, key ?? NodeKey.Generate(), Fast, Ct);
        _owned.Add(bus);
        return bus;
    }

    /// <summary>Calls until the cluster has carried the callee's subscription to the caller's server (a moment after it connected).</summary>
    private static async Task<ReadOnlyMemory<byte>> CallAsync(IControlBus caller, NodeAddress callee, string method, byte[] body)
    {
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        var deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            try
            {
                return await caller.RequestAsync(callee, method, body, new BusCallOptions { AttemptTimeout = TimeSpan.FromSeconds(2), Attempts = 3 }, Ct);
            }
            catch (ControlBusException e) when (e.Status is ControlBusException.NotFound or ControlBusException.Unavailable && DateTime.UtcNow < deadline)
            {
                await poll.WaitForNextTickAsync(Ct);
            }
        }
    }

    [Fact]
    public async Task Nodes_on_different_servers_publish_watch_and_call_each_other_and_survive_the_death_of_a_server()
    {
        await using var cluster = await NatsCluster.StartAsync();
        // a on server 0 (it learns the others from it, to move to); b on server 1; c on server 2.
        var a = await ConnectAsync([cluster.Url(0)]);
        var b = await ConnectAsync([cluster.Url(1)]);
        var c = await ConnectAsync([cluster.Url(2)]);
        b.Handle("add", (request, _) => ValueTask.FromResult<ReadOnlyMemory<byte>>(new[] { (byte)(request.Body.Span[0] + request.Body.Span[1]) }));

        await a.SubscribeAsync("links", watchMembers: true, Ct);
        await c.SubscribeAsync("links", watchMembers: false, Ct);
        Assert.Equal(c.Self, (await ControlBusTests.NextAsync<BusMemberJoined>(a, j => j.From == c.Self)).From);

        // c's publication reaches a, two servers away, with c proven as its sender.
        using (var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(100)))
        {
            var heard = ControlBusTests.NextAsync<BusPublication>(a);
            while (!heard.IsCompleted)
            {
                await c.PublishAsync("links", "announcement"u8.ToArray(), Ct);
                await Task.WhenAny(heard, poll.WaitForNextTickAsync(Ct).AsTask());
            }
            Assert.Equal((c.Self, "announcement"), ((await heard).From, System.Text.Encoding.UTF8.GetString((await heard).Payload.Span)));
        }
        Assert.Equal(new byte[] { 5 }, (await CallAsync(a, b.Self, "add", [2, 3])).ToArray());

        // The server a is on dies: a moves to another one and goes on; c, gone with no goodbye, is missed by its silence.
        var states = new List<BusState>();
        var back = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        a.StateChanged += s =>
        {
            lock (states)
                states.Add(s);
            if (s == BusState.Connected)
                back.TrySetResult();
        };
        await cluster.KillAsync(0);
        await back.Task.WaitAsync(Bound, Ct);
        Assert.Contains(BusState.Reconnecting, states);
        Assert.Equal(new byte[] { 9 }, (await CallAsync(a, b.Self, "add", [4, 5])).ToArray());
        await c.DisposeAsync();
        Assert.Equal(c.Self, (await ControlBusTests.NextAsync<BusMemberLeft>(a, l => l.From == c.Self)).From);
    }

    [Fact]
    public async Task Forged_and_replayed_envelopes_are_refused_and_counted()
    {
        await using var cluster = await NatsCluster.StartAsync(count: 1);
        var node = await ConnectAsync([cluster.Url(0)]);
        await node.SubscribeAsync("links", watchMembers: false, Ct);
        await using var raw = new NatsConnection(new NatsOpts { Url = cluster.Url(0) });
        await raw.ConnectAsync();
        var subject = "skymesh.t.links";
        var captured = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var capture = await raw.SubscribeCoreAsync<byte[]>(subject, cancellationToken: Ct);
        _ = Task.Run(async () => captured.TrySetResult((await capture.Msgs.ReadAsync(Ct)).Data!), Ct);
        await raw.PingAsync(Ct);

        // An honest node publishes; a stranger captures the envelope and sends it again, then sends forgeries.
        var honest = await ConnectAsync([cluster.Url(0)]);
        await honest.PublishAsync("links", "real"u8.ToArray(), Ct);
        Assert.Equal(honest.Self, (await ControlBusTests.NextAsync<BusPublication>(node)).From);
        var envelope = await captured.Task.WaitAsync(Bound, Ct);
        await raw.PublishAsync(subject, envelope, cancellationToken: Ct);                                 // a replay
        var tampered = envelope.ToArray();
        tampered[^70] ^= 1;                                                                            // a changed payload
        await raw.PublishAsync(subject, tampered, cancellationToken: Ct);
        await raw.PublishAsync("skymesh.t.other", envelope, cancellationToken: Ct);                    // moved to another topic
        await raw.PingAsync(Ct);                                                                       // (nobody listens there yet)
        await node.SubscribeAsync("other", watchMembers: false, Ct);
        await raw.PublishAsync("skymesh.t.other", envelope, cancellationToken: Ct);
        await raw.PublishAsync(subject, "not an envelope"u8.ToArray(), cancellationToken: Ct);
        using var stale = NodeKey.Generate();
        var old = BusEnvelope.Seal(stale, EnvelopeKind.Publication, subject, DateTimeOffset.UtcNow.AddMinutes(-5).ToUnixTimeMilliseconds(), 1, "old"u8);
        await raw.PublishAsync(subject, old, cancellationToken: Ct);                                    // too old

        // Only honest publications arrive: the next one after the forgeries is the honest node's second.
        await raw.PingAsync(Ct);
        await honest.PublishAsync("links", "again"u8.ToArray(), Ct);
        var next = await ControlBusTests.NextAsync<BusPublication>(node);
        Assert.Equal((honest.Self, "again"), (next.From, System.Text.Encoding.UTF8.GetString(next.Payload.Span)));
        // Each refusal is counted (the one on the other topic is read by that topic's own reader, perhaps a moment later).
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        var deadline = DateTime.UtcNow + Bound;
        while (node.UnprovenSenders < 5 && DateTime.UtcNow < deadline)
            await poll.WaitForNextTickAsync(Ct);
        Assert.True(node.UnprovenSenders == 5, $"{node.UnprovenSenders} refused");
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var owned in _owned)
            await owned.DisposeAsync();
    }
}
