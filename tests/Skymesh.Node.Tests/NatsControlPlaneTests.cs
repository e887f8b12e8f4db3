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
        // And the control plane works through the relays: a opens a path to c that carries pings.
        var path = await a.Agent!.OpenPathAsync(c.Node.Address, null, Ct);
        Assert.Equal(b.Address, path.Via);
        Assert.True(await a.Node.PingAsync(c.Node.Address, 512, TimeSpan.FromSeconds(5), Ct) > TimeSpan.Zero);
        Assert.Equal(2, a.Host.Read.Status().Relay!.TunnelsOpen);
        Assert.Equal(1, b.Host.Read.Status().Relay!.TunnelsOpen);
    }
}
