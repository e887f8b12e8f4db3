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
}
