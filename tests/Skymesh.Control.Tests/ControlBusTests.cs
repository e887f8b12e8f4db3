using System.Net;
using System.Threading.Channels;
using Skymesh.Control.Bus;
using Skymesh.Control.Bus.Nats;
using Skymesh.Control.Bus.Ssmp;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;

namespace Skymesh.Control.Tests;

/// <summary>
/// The control bus's contract, checked on every implementation with the same scenarios: the SSMP bus on a real
/// broker on loopback, and the in-memory bus.
/// </summary>
public sealed class ControlBusTests(NatsClusterFixture nats) : IAsyncDisposable, IClassFixture<NatsClusterFixture>
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);
    private readonly MemoryBusNetwork _memory = new();
    private readonly List<IControlBus> _buses = [];
    private readonly List<NodeKey> _keys = [];

    private readonly SsmpBroker _broker = StartBroker();

    private static SsmpBroker StartBroker()
    {
        var options = new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) };
        options.Authenticators.Add(new KeyAuthenticator());
        options.Authenticators.Add(new OpenAuthenticator());
        var broker = new SsmpBroker(options);
        broker.Start();
        return broker;
    }

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<IControlBus> ConnectAsync(string bus, NodeKey? key = null)
    {
        key ??= NodeKey.Generate();
        _keys.Add(key);
        IControlBus connected = bus switch
        {
            "ssmp" => await SsmpControlBus.ConnectAsync("127.0.0.1", _broker.LocalEndPoint.Port, key, cancellationToken: Ct),
            // The contract on one server of the cluster; across servers, see NatsBusTests.
            "nats" => await NatsControlBus.ConnectAsync([nats.Cluster.Url(0)], key, cancellationToken: Ct),
            _ => _memory.Connect(key),
        };
        _buses.Add(connected);
        return connected;
    }

    /// <summary>The next event of type <typeparamref name="T"/> (matching <paramref name="match"/>) the bus delivers, within the bound.</summary>
    internal static async Task<T> NextAsync<T>(IControlBus bus, Func<T, bool>? match = null)
        where T : BusEvent
    {
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        bounded.CancelAfter(Bound);
        while (true)
        {
            var e = await bus.Events.ReadAsync(bounded.Token);
            if (e is T wanted && (match is null || match(wanted)))
                return wanted;
        }
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    [InlineData("nats")]
    public async Task A_publication_reaches_every_subscriber_but_its_sender_with_the_sender_proven(string kind)
    {
        var a = await ConnectAsync(kind);
        var b = await ConnectAsync(kind);
        var c = await ConnectAsync(kind);
        await b.SubscribeAsync("t", watchMembers: false, Ct);
        await c.SubscribeAsync("t", watchMembers: false, Ct);
        await a.SubscribeAsync("t", watchMembers: false, Ct);
        await a.PublishAsync("t", "hello"u8.ToArray(), Ct);
        foreach (var receiver in new[] { b, c })
        {
            var got = await NextAsync<BusPublication>(receiver);
            Assert.Equal(a.Self, got.From);
            Assert.Equal("t", got.Topic);
            Assert.Equal("hello"u8.ToArray(), got.Payload.ToArray());
        }
        // The sender does not hear itself: the next thing it hears is what b publishes.
        await b.PublishAsync("t", "second"u8.ToArray(), Ct);
        var own = await NextAsync<BusPublication>(a);
        Assert.Equal(b.Self, own.From);
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    [InlineData("nats")]
    public async Task A_publication_larger_than_one_ssmp_payload_arrives_whole(string kind)
    {
        // A signed announcement of 300 links is some 17 KB: on SSMP it travels as fragments.
        using var key = NodeKey.Generate();
        var links = Enumerable.Range(0, 300).Select(_ => new AnnouncedLink(NodeKey.Generate().Address, 500, 0, 1000, 1, AnnouncedLinkState.Up)).ToArray();
        var record = LinkAnnouncement.Create(key, 1, DateTimeOffset.UtcNow, TimeSpan.FromMinutes(5), links);
        Assert.True(record.Bytes.Length > 1024);
        var sender = await ConnectAsync(kind, key);
        var receiver = await ConnectAsync(kind);
        await receiver.SubscribeAsync(RouteTopics.Links, watchMembers: false, Ct);
        await sender.PublishAsync(RouteTopics.Links, record.Bytes, Ct);
        var got = await NextAsync<BusPublication>(receiver);
        Assert.Equal(record.Bytes, got.Payload.ToArray());
        var graph = new TopologyGraph();
        Assert.Equal(AnnouncementError.None, graph.Offer(got.Payload.Span));
        Assert.Equal(300, graph.RecordOf(key.Address)!.Links.Count);
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    [InlineData("nats")]
    public async Task A_watcher_hears_members_already_there_then_joins_and_leaves_never_about_itself(string kind)
    {
        var early = await ConnectAsync(kind);
        await early.SubscribeAsync("m", watchMembers: false, Ct);
        var watcher = await ConnectAsync(kind);
        await watcher.SubscribeAsync("m", watchMembers: true, Ct);
        Assert.Equal(early.Self, (await NextAsync<BusMemberJoined>(watcher)).From);

        var late = await ConnectAsync(kind);
        await late.SubscribeAsync("m", watchMembers: false, Ct);
        Assert.Equal(late.Self, (await NextAsync<BusMemberJoined>(watcher)).From);

        // Leaving by disconnecting counts as leaving.
        await late.DisposeAsync();
        var left = await NextAsync<BusMemberLeft>(watcher);
        Assert.Equal(late.Self, left.From);
        Assert.Equal("m", left.Topic);
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    [InlineData("nats")]
    public async Task Requests_are_answered_refused_or_fail_with_the_status_the_caller_can_act_on(string kind)
    {
        var server = await ConnectAsync(kind);
        var client = await ConnectAsync(kind);
        NodeAddress? caller = null;
        server.Handle("echo", (request, _) =>
        {
            caller = request.From;
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(request.Body.ToArray().Reverse().ToArray());
        });
        server.Handle("refuse", (_, _) => throw new ControlBusException(ControlBusException.Forbidden, "not for you"));
        var answer = await client.RequestAsync(server.Self, "echo", new byte[] { 1, 2, 3 }, null, Ct);
        Assert.Equal(new byte[] { 3, 2, 1 }, answer.ToArray());
        Assert.Equal(client.Self, caller);

        var refused = await Assert.ThrowsAsync<ControlBusException>(() => client.RequestAsync(server.Self, "refuse", default, null, Ct));
        Assert.Equal((ControlBusException.Forbidden, "not for you"), (refused.Status, refused.Message));
        var missing = await Assert.ThrowsAsync<ControlBusException>(() => client.RequestAsync(server.Self, "nothing-here", default, null, Ct));
        Assert.Equal(ControlBusException.NotFound, missing.Status);

        using var absent = NodeKey.Generate();
        var gone = await Assert.ThrowsAsync<ControlBusException>(() => client.SendAsync(absent.Address, new byte[] { 1 }, Ct));
        Assert.Equal(ControlBusException.NotFound, gone.Status);
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    [InlineData("nats")]
    public async Task A_direct_message_reaches_its_one_recipient_from_its_proven_sender(string kind)
    {
        var a = await ConnectAsync(kind);
        var b = await ConnectAsync(kind);
        await a.SendAsync(b.Self, "to b"u8.ToArray(), Ct);
        var got = await NextAsync<BusDirectMessage>(b);
        Assert.Equal((a.Self, "to b"), (got.From, System.Text.Encoding.UTF8.GetString(got.Payload.Span)));
    }

    [Fact]
    public async Task On_ssmp_a_sender_that_is_not_a_node_is_refused_and_counted()
    {
        var node = await ConnectAsync("ssmp");
        await node.SubscribeAsync("t", watchMembers: true, Ct);
        await using var stranger = await SsmpClient.ConnectAsync(new SsmpClientOptions { Port = _broker.LocalEndPoint.Port, Id = "mallory" }, Ct);
        await stranger.SubscribeAsync("t", cancellationToken: Ct);
        await stranger.McastAsync("t", "forged announcement", Ct);
        await stranger.UcastAsync(node.Self.ToString(), "forged receipt", Ct);
        // A real node's publication after them arrives; theirs never do.
        var honest = await ConnectAsync("ssmp");
        await honest.PublishAsync("t", "real"u8.ToArray(), Ct);
        var got = await NextAsync<BusPublication>(node);
        Assert.Equal(honest.Self, got.From);
        Assert.True(node.UnprovenSenders >= 3, $"{node.UnprovenSenders} unproven senders counted");
    }

    [Fact]
    public async Task The_memory_bus_closes_an_earlier_connection_under_the_same_key_and_can_go_down()
    {
        using var key = NodeKey.Generate();
        var first = _memory.Connect(key);
        var closed = new TaskCompletionSource<BusState>(TaskCreationOptions.RunContinuationsAsynchronously);
        first.StateChanged += s => closed.TrySetResult(s);
        var second = _memory.Connect(key);
        Assert.Equal(BusState.Closed, await closed.Task.WaitAsync(Bound, Ct));
        Assert.Equal(BusState.Connected, second.State);
        var refused = await Assert.ThrowsAsync<ControlBusException>(() => first.PublishAsync("t", default, Ct));
        Assert.Equal(ControlBusException.Unavailable, refused.Status);

        _memory.SetDown(true);
        Assert.Equal(BusState.Closed, second.State);
        Assert.Equal(ControlBusException.Unavailable, Assert.Throws<ControlBusException>(() => _memory.Connect(key)).Status);
        _memory.SetDown(false);
        await using var third = _memory.Connect(key);
        Assert.Equal(BusState.Connected, third.State);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var bus in _buses)
            await bus.DisposeAsync();
        await _broker.DisposeAsync();
        foreach (var key in _keys)
            key.Dispose();
    }
}
