using Skymesh.Control.Bus;
using Skymesh.Tests.Shared;

namespace Skymesh.Node.Tests;

/// <summary>Nodes whose control bus is a real three-server NATS cluster, each node on another server.</summary>
public sealed class NatsControlPlaneTests : MeshWithBroker
{
    [Fact]
    public async Task Nodes_on_three_nats_servers_learn_the_mesh_open_paths_and_go_on_when_a_server_dies()
    {
        await using var cluster = await NatsCluster.StartAsync();
        var nodes = new TestNode[3];
        for (var i = 0; i < 3; i++)
        {
            nodes[i] = await TestNode.StartAsync(bus: cluster.Url(i));
            Nodes.Add(nodes[i]);
        }
        for (var i = 0; i < 2; i++)
            await nodes[i].LinkToAsync(nodes[i + 1]).WaitAsync(Bound, Ct);
        await UntilGraph(nodes[0], g => g.Neighbours(nodes[1].Node.Address).Count == 2 && g.NodeCount == 3, "learning the chain across the cluster");
        await UntilGraph(nodes[2], g => g.Neighbours(nodes[1].Node.Address).Count == 2 && g.NodeCount == 3, "learning the chain across the cluster");

        var path = await nodes[0].Agent!.OpenPathAsync(nodes[2].Node.Address, null, Ct);
        Assert.Equal(nodes[1].Address, path.Via);
        Assert.True((await nodes[0].Client.PingAsync(nodes[2].Address, cancellationToken: Ct)).RttMicroseconds > 0);

        // The server node 0 is on dies: its bus moves to another server, and a path towards it is set up through the cluster.
        await cluster.KillAsync(0);
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(200));
        var deadline = DateTime.UtcNow + Bound;
        Control.ControlAgent? agent;
        while ((agent = nodes[2].Agent) is null || nodes[0].Host.Control!.State != "connected")
        {
            Assert.True(DateTime.UtcNow < deadline, $"node 0's control plane is {nodes[0].Host.Control!.State}");
            await poll.WaitForNextTickAsync(Ct);
        }
        PathInfo? back = null;
        while (back is null)
        {
            try
            {
                back = await agent.OpenPathAsync(nodes[0].Node.Address, null, Ct);
            }
            catch (NodeRequestException) when (DateTime.UtcNow < deadline)
            {
                await poll.WaitForNextTickAsync(Ct);
            }
        }
        Assert.Equal(nodes[1].Address, back.Via);
        // The path opened before the server died still carries pings.
        Assert.True((await nodes[0].Client.PingAsync(nodes[2].Address, cancellationToken: Ct)).RttMicroseconds > 0);
        Assert.True((await nodes[2].Client.PingAsync(nodes[0].Address, cancellationToken: Ct)).RttMicroseconds > 0);
    }

    [Fact]
    public async Task Nodes_with_no_way_to_the_cluster_join_it_through_their_neighbours_and_their_messages_stay_signed_end_to_end()
    {
        await using var cluster = await NatsCluster.StartAsync();
        // a reaches the cluster (two of its servers, the first of them dead); b and c only through their links.
        await cluster.KillAsync(0);
        var a = await TestNode.StartAsync(bus: $"{cluster.Url(0)},{cluster.Url(1)}");
        Nodes.Add(a);
        var b = await TestNode.StartAsync(bus: Control.MeshBusConnector.Setting);
        Nodes.Add(b);
        var c = await TestNode.StartAsync(bus: Control.MeshBusConnector.Setting);
        Nodes.Add(c);
        await a.LinkToAsync(b).WaitAsync(Bound, Ct);
        await b.LinkToAsync(c).WaitAsync(Bound, Ct);
        await c.Host.WaitForControlAsync(Ct).WaitAsync(Bound, Ct);

        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        NodeStatus status;
        while ((status = c.Host.Read.Status()) is not { Control: "connected", Bus.Via: not null })
            await poll.WaitForNextTickAsync(Ct);
        Assert.Equal("via-neighbours", status.Bus!.Mode);
        Assert.Equal("nats", status.Bus.Kind);
        Assert.Equal(b.Address, status.Bus.Via);
        Assert.Equal(2, status.Bus.Hops);
        Assert.Null(status.Bus.BrokerPin);
        Assert.Equal("nats", a.Host.Read.Status().Bus!.Kind);

        // c's announcements, signed by c and carried through b and a to the cluster, reach a node on another server of
        // it, which checks them like any: it learns the whole line.
        var watcher = await TestNode.StartAsync(bus: cluster.Url(2));
        Nodes.Add(watcher);
        await UntilGraph(watcher, g => g.NodeCount >= 3 && g.Neighbours(b.Node.Address).Count == 2 && g.Neighbours(c.Node.Address).Count == 1, "a node elsewhere on the cluster learning the line");
        Assert.Equal(0, watcher.Agent!.Bus.UnprovenSenders);
        // And the control plane works through the relays: a opens a path to c that carries pings (once c's announcement,
        // which reached the watcher, has reached a as well).
        await UntilGraph(a, g => g.Neighbours(c.Node.Address).Count == 1 && g.Neighbours(b.Node.Address).Count == 2, "a learning the line");
        var path = await a.Agent!.OpenPathAsync(c.Node.Address, null, Ct);
        Assert.Equal(b.Address, path.Via);
        Assert.True(await a.Node.PingAsync(c.Node.Address, 512, TimeSpan.FromSeconds(5), Ct) > TimeSpan.Zero);
        Assert.Equal(2, a.Host.Read.Status().Relay!.TunnelsOpen);
        Assert.Equal(1, b.Host.Read.Status().Relay!.TunnelsOpen);
    }

    [Fact]
    public async Task A_nats_server_with_no_way_to_the_cluster_joins_it_as_a_leaf_node_carried_through_the_mesh()
    {
        // The hub: a cluster of one, with a leafnode port; the neighbourhood's own server, whose only leafnode remote is
        // the port its node carries through the mesh.
        var hubLeafnodes = NatsCluster.FreePort();
        await using var hub = await NatsCluster.StartAsync(1, config: _ => $$"""leafnodes { listen: "127.0.0.1:{{hubLeafnodes}}" }""");
        var carried = NatsCluster.FreePort();
        await using var neighbourhood = await NatsCluster.StartAsync(1, config: _ => $$"""leafnodes { remotes: [ { url: "nats-leaf://127.0.0.1:{{carried}}" } ] }""");

        // n1 beside the hub; n2 beside the neighbourhood's server, on the bus through n1 and carrying its server's leaf
        // connection; q on the neighbourhood's server, linked to n2 only.
        var n1 = await TestNode.StartAsync($$""", "busRelay": { "leafnodes": "127.0.0.1:{{hubLeafnodes}}" }""", bus: hub.Url(0));
        Nodes.Add(n1);
        var n2 = await TestNode.StartAsync($$""", "leafnodeListen": "127.0.0.1:{{carried}}" """, bus: Control.MeshBusConnector.Setting);
        Nodes.Add(n2);
        var q = await TestNode.StartAsync(bus: neighbourhood.Url(0));
        Nodes.Add(q);
        // n2 joins through n1 before it links to q (q, on a server directly, would do as well for n2's own session).
        await n1.LinkToAsync(n2).WaitAsync(Bound, Ct);
        await n2.Host.WaitForControlAsync(Ct).WaitAsync(Bound, Ct);
        await n2.LinkToAsync(q).WaitAsync(Bound, Ct);

        // What q publishes on its own server reaches n1 on the hub, and the other way round: one bus.
        await UntilGraph(n1, g => g.Neighbours(q.Node.Address).Count == 1 && g.Neighbours(n2.Node.Address).Count == 2, "n1, on the hub, learning q's link from the neighbourhood's server");
        await UntilGraph(q, g => g.Neighbours(n1.Node.Address).Count == 1 && g.Neighbours(n2.Node.Address).Count == 2, "q, on the neighbourhood's server, learning n1's link from the hub");
        Assert.Equal(1, n2.Node.BusRelay.Leafnodes.Open);
        // n1 carries two tunnels for n2: n2's own session and the leaf connection.
        Assert.Equal(2, n1.Host.Read.Status().Relay!.TunnelsOpen);
        Assert.Equal(0, n1.Agent!.Bus.UnprovenSenders);

        // The control plane spans both servers: q opens a path to n1 (its setup crosses the leaf connection) that carries pings.
        var path = await q.Agent!.OpenPathAsync(n1.Node.Address, null, Ct);
        Assert.Equal(n2.Address, path.Via);
        Assert.True(await q.Node.PingAsync(n1.Node.Address, 512, TimeSpan.FromSeconds(5), Ct) > TimeSpan.Zero);
    }
}
