using System.Diagnostics;
using System.Net;
using Skymesh.Control.Bus;
using Skymesh.Control.Bus.Ssmp;
using Skymesh.Control.Setup;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Control.Tests;

/// <summary>A node's forwarder as path setup sees it: a real label table, and links named by neighbour.</summary>
internal sealed class TableOfNode(Dictionary<NodeAddress, int> links, uint price = 0) : IHopTable
{
    public LabelTable Labels { get; } = new();

    public HashSet<(int Link, uint Label)> Reserved { get; } = [];

    public List<(SetupRequest Request, int Link, uint In, uint Out)> Ends { get; } = [];

    public int? LinkTo(NodeAddress neighbour) => links.TryGetValue(neighbour, out var id) ? id : null;

    public uint Reserve(int link, TimeSpan lifetime)
    {
        var label = Labels.Reserve(link, lifetime);
        lock (Reserved)
            Reserved.Add((link, label));
        return label;
    }

    public void InstallForward(int inLink, uint inLabel, int outLink, uint outLabel, bool billable) => Labels.Install(inLink, inLabel, LabelAction.Forward(outLink, outLabel, billable));

    public void InstallEnd(SetupRequest request, int link, uint inLabel, uint outLabel)
    {
        lock (Ends)
            Ends.Add((request, link, inLabel, outLabel));
    }

    public void Remove(int link, uint label)
    {
        Labels.Remove(link, label);
        lock (Reserved)
            Reserved.Remove((link, label));
    }

    public uint PriceOnto(int outLink) => price;
}

/// <summary>Path setup between control agents, over each control bus: a real SSMP broker on loopback, and the in-memory bus.</summary>
public sealed class PathSetupTests : IAsyncDisposable
{
    private readonly SsmpBroker _broker;
    private readonly MemoryBusNetwork _memory = new();
    private readonly List<IControlBus> _peers = [];
    private readonly List<NodeKey> _keys = [];

    public PathSetupTests()
    {
        // Nodes log in under their addresses, which only the key scheme may hold.
        var options = new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) };
        options.Authenticators.Add(new KeyAuthenticator());
        _broker = new SsmpBroker(options);
        _broker.Start();
    }

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask DisposeAsync()
    {
        foreach (var peer in _peers)
            await peer.DisposeAsync();
        await _broker.DisposeAsync();
        foreach (var key in _keys)
            key.Dispose();
    }

    private sealed record Agent(NodeKey Key, TableOfNode Table, PathSetupHop Hop, IControlBus Peer, PathSetupSource Source);

    private async Task<IControlBus> ConnectAsync(string bus, NodeKey key)
    {
        IControlBus connected = bus == "ssmp"
            ? await SsmpControlBus.ConnectAsync("127.0.0.1", _broker.LocalEndPoint.Port, key, cancellationToken: Ct)
            : _memory.Connect(key);
        _peers.Add(connected);
        return connected;
    }

    /// <summary>A chain of agents; node i's link to node i+1 has id 1 and to node i-1 id 2 (ids are per node).</summary>
    private async Task<Agent[]> ChainAsync(string bus, int count, Func<int, uint>? price = null)
    {
        var keys = Enumerable.Range(0, count).Select(_ => NodeKey.Generate()).ToArray();
        _keys.AddRange(keys);
        var agents = new Agent[count];
        for (var i = 0; i < count; i++)
        {
            var links = new Dictionary<NodeAddress, int>();
            if (i + 1 < count)
                links[keys[i + 1].Address] = 1;
            if (i > 0)
                links[keys[i - 1].Address] = 2;
            var table = new TableOfNode(links, price?.Invoke(i) ?? 0);
            var hop = new PathSetupHop(keys[i].Address, table);
            var peer = await ConnectAsync(bus, keys[i]);
            SetupService.Register(peer, hop);
            agents[i] = new Agent(keys[i], table, hop, peer, new PathSetupSource(keys[i], table, new BusControlCaller(peer)));
        }
        return agents;
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    public async Task A_five_hop_path_is_set_up_in_two_parallel_rounds_with_labels_chained_hop_to_hop(string bus)
    {
        var agents = await ChainAsync(bus, 6);
        var nodes = agents.Select(a => a.Key.Address).ToList();
        var path = await agents[0].Source.SetupAsync(nodes, maxPricePerHop: 0, Ct);

        // Walk the forward direction through the real label tables: each relay switches onto the next one's label.
        var label = path.OutLabel;
        for (var i = 1; i < 5; i++)
        {
            Assert.True(agents[i].Table.Labels.TryLookup(2, label, 0, out var action), $"relay {i} has no entry for label {label}");
            Assert.Equal(LabelActionKind.Forward, action.Kind);
            Assert.Equal(1, action.OutLink);
            label = action.OutLabel;
        }
        var end = Assert.Single(agents[5].Table.Ends);
        Assert.Equal(label, end.In);
        Assert.Equal(path.Request.PathId, end.Request.PathId);

        // And back: the destination sends on end.Out, and the relays carry it to the source's in label.
        label = end.Out;
        for (var i = 4; i >= 1; i--)
        {
            Assert.True(agents[i].Table.Labels.TryLookup(1, label, 0, out var action));
            Assert.Equal(2, action.OutLink);
            label = action.OutLabel;
        }
        Assert.Equal(path.InLabel, label);
        var start = Assert.Single(agents[0].Table.Ends);
        Assert.Equal((path.InLabel, path.OutLabel), (start.In, start.Out));
        TestContext.Current.SendDiagnosticMessage($"5-hop setup over the {bus} bus took {path.SetupTime.TotalMilliseconds:0.00} ms");
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    public async Task A_hop_over_the_price_cap_refuses_and_every_reservation_is_released(string bus)
    {
        var agents = await ChainAsync(bus, 5, price: i => i == 2 ? 50u : 1u);
        var error = await Assert.ThrowsAsync<PathSetupException>(() => agents[0].Source.SetupAsync([.. agents.Select(a => a.Key.Address)], maxPricePerHop: 10, Ct));
        var (hop, reason) = Assert.Single(error.Failures);
        Assert.Equal(agents[2].Key.Address, hop);
        Assert.Contains("charges 50", reason, StringComparison.Ordinal);
        foreach (var agent in agents)
        {
            Assert.Equal(0, agent.Hop.Paths);
            Assert.Empty(agent.Table.Reserved);
            Assert.Empty(agent.Table.Labels.List());
        }
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    public async Task A_request_signed_by_another_key_or_sent_by_another_node_is_refused(string bus)
    {
        var agents = await ChainAsync(bus, 3);
        var nodes = agents.Select(a => a.Key.Address).ToList();
        using var mallory = NodeKey.Generate();

        // Mallory signs a request naming agent 0 as source: the signature check fails at the hop.
        var real = SetupRequest.Create(agents[0].Key, Guid.NewGuid(), DateTimeOffset.UtcNow, TimeSpan.FromSeconds(30), 0, new byte[32], nodes);
        var forged = (byte[])real.Bytes.Clone();
        mallory.Sign(SetupRequest.SignaturePurpose, forged.AsSpan(0, forged.Length - 64), forged.AsSpan(forged.Length - 64));
        var refused = Assert.Throws<SetupRefusedException>(() => agents[1].Hop.Reserve(agents[0].Key.Address, forged));
        Assert.Contains("BadSignature", refused.Message, StringComparison.Ordinal);

        // A genuine request relayed by someone other than its source is refused too.
        var relayed = Assert.Throws<SetupRefusedException>(() => agents[1].Hop.Reserve(mallory.Address, real.Bytes));
        Assert.Equal(SetupRefusedException.Forbidden, relayed.Status);

        // Over the bus, a node that asks with a request naming another source gets 403: the bus proves who asks.
        var stranger = await ConnectAsync(bus, mallory);
        var rpc = await Assert.ThrowsAsync<ControlBusException>(() => stranger.RequestAsync(nodes[1], SetupMethods.Reserve, real.Bytes, null, Ct));
        Assert.Equal(ControlBusException.Forbidden, rpc.Status);
        Assert.Equal(0, agents[1].Hop.Paths);
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    public async Task Retried_steps_are_idempotent_and_conflicting_ones_refused(string bus)
    {
        var agents = await ChainAsync(bus, 3);
        var nodes = agents.Select(a => a.Key.Address).ToList();
        var request = SetupRequest.Create(agents[0].Key, Guid.NewGuid(), DateTimeOffset.UtcNow, TimeSpan.FromSeconds(30), 0, new byte[32], nodes);
        var first = agents[1].Hop.Reserve(nodes[0], request.Bytes);
        Assert.Equal(first, agents[1].Hop.Reserve(nodes[0], request.Bytes));
        var commit = new CommitMessage(request.PathId, 7, 9);
        agents[1].Hop.Commit(nodes[0], commit);
        agents[1].Hop.Commit(nodes[0], commit);
        Assert.Equal(SetupRefusedException.Conflict, Assert.Throws<SetupRefusedException>(() => agents[1].Hop.Commit(nodes[0], commit with { ForwardOut = 8 })).Status);
        var other = SetupRequest.Create(agents[0].Key, request.PathId, DateTimeOffset.UtcNow, TimeSpan.FromSeconds(31), 0, new byte[32], nodes);
        Assert.Equal(SetupRefusedException.Conflict, Assert.Throws<SetupRefusedException>(() => agents[1].Hop.Reserve(nodes[0], other.Bytes)).Status);
        Assert.True(agents[1].Hop.Release(nodes[0], request.PathId));
        Assert.False(agents[1].Hop.Release(nodes[0], request.PathId));
        Assert.Empty(agents[1].Table.Labels.List());
    }

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    public async Task A_hop_that_does_not_answer_fails_the_setup_in_bounded_time_and_the_others_are_released(string bus)
    {
        var agents = await ChainAsync(bus, 4);
        await agents[2].Peer.DisposeAsync();
        var clock = Stopwatch.StartNew();
        var error = await Assert.ThrowsAsync<PathSetupException>(() => agents[0].Source.SetupAsync([.. agents.Select(a => a.Key.Address)], 0, Ct));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
        Assert.Equal(agents[2].Key.Address, Assert.Single(error.Failures).Hop);
        Assert.Equal(0, agents[1].Hop.Paths);
        Assert.Equal(0, agents[3].Hop.Paths);
        Assert.Empty(agents[0].Table.Reserved);
    }
}
