using System.Diagnostics;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Mesh.Interfaces;
using Skymesh.Node.Events;

namespace Skymesh.Sim.Tests;

/// <summary>
/// Twenty real nodes composed by the node host, on the in-memory network and bus, on virtual time: cold start, a
/// path opened by the control plane, a link on it cut, the repair, and settlement — in a fraction of a second of
/// real time, and the same event trace for the same seed.
/// </summary>
public sealed class VirtualMeshTests
{
    private const int Count = 20;

    /// <summary>A ring of 20, with a chord from every fifth node to the node five on: every link has a way around it.</summary>
    private static IEnumerable<(int, int)> Topology() =>
        Enumerable.Range(0, Count).Select(i => (i, (i + 1) % Count))
            .Concat(Enumerable.Range(0, Count).Where(i => i % 5 == 0).Select(i => (i, (i + 5) % Count)));

    private sealed record Outcome(IReadOnlyList<string> Trace, TimeSpan Real, TimeSpan Virtual, string Via, string RepairedVia, long RelayBalance, int Nodes);

    private static async Task<Outcome> RunScenarioAsync(int seed)
    {
        var clock = Stopwatch.StartNew();
        await using var mesh = new VirtualMesh(seed);
        mesh.AddNodes(Count, """, "price": 1000""");
        var links = Topology().ToList();
        // Every link is 5 ms long each way, as a short radio hop.
        foreach (var (a, b) in links)
            mesh.Link(a, b, new Impairment { Latency = TimeSpan.FromMilliseconds(5) });

        // Cold start: node 0 learns every node's links from the announcements on the bus.
        var source = mesh.Nodes[0];
        var agent = source.Agent ?? throw new InvalidOperationException("node 0 has no control agent");
        Assert.True(mesh.RunUntil(() => Enumerable.Range(0, Count).Sum(i => agent.Graph.Neighbours(mesh.Nodes[i].Node.Address).Count) == 2 * links.Count,
            TimeSpan.FromSeconds(30)), "node 0 did not learn the whole mesh within 30 s of virtual time");

        // A path across the ring, set up by the control plane, carries pings.
        var destination = mesh.Nodes[10].Node.Address;
        var path = mesh.Run(() => agent.OpenPathAsync(destination, new PathQuery { MinHops = 3 }, CancellationToken.None), TimeSpan.FromSeconds(10));
        var rtt = mesh.Run(() => source.Node.PingAsync(destination, 512, TimeSpan.FromSeconds(2), CancellationToken.None), TimeSpan.FromSeconds(5));
        var hops = agent.Opened.Single().Request.Nodes.Select(n => mesh.IndexOf(n.ToString())).ToList();
        // On virtual time a round trip is exactly the links' latency there and back: nothing else takes time.
        Assert.Equal(TimeSpan.FromMilliseconds(2 * 5 * (hops.Count - 1)), rtt);

        // Cut the path's second link (between its first and second relays): the relay reports it, the source repairs.
        mesh.Cut(hops[1], hops[2]);
        Assert.True(mesh.RunUntil(() => source.Node.Paths.Single().State == "up" && mesh.Trace.Any(t => t.Node == 0 && t.Kind == NodeEventKind.PathRepaired), TimeSpan.FromSeconds(10)), "the path was not repaired within 10 s of virtual time");
        var repaired = agent.Opened.Single().Request.Nodes.Select(n => mesh.IndexOf(n.ToString())).ToList();
        Assert.False(repaired.Zip(repaired.Skip(1)).Any(l => l == (hops[1], hops[2]) || l == (hops[2], hops[1])), "the repaired path still uses the cut link");

        // Traffic after the repair, then settlement: the first relay is paid, on its own ledger.
        for (var i = 0; i < 200; i++)
            mesh.Run(() => source.Node.PingAsync(destination, 1200, TimeSpan.FromSeconds(2), CancellationToken.None), TimeSpan.FromSeconds(5));
        var relay = mesh.Nodes[repaired[1]];
        Assert.True(mesh.RunUntil(() => relay.Ledger.BalanceOf(relay.Node.Address) > 0, TimeSpan.FromSeconds(10)), "the first relay was not paid within 10 s of virtual time");
        var balance = relay.Ledger.BalanceOf(relay.Node.Address);
        clock.Stop();
        return new Outcome([.. mesh.Trace.Select(t => t.ToString())], clock.Elapsed, mesh.Time.Elapsed, path.Via, source.Node.Paths.Single().Via, balance, mesh.Nodes.Count);
    }

    [Fact]
    public async Task Twenty_nodes_start_open_a_path_repair_it_and_settle_on_virtual_time_the_same_way_for_the_same_seed()
    {
        var first = await RunScenarioAsync(seed: 84);
        var second = await RunScenarioAsync(seed: 84);
        TestContext.Current.TestOutputHelper?.WriteLine($"20 nodes: {first.Virtual.TotalSeconds:0.0} s of virtual time in {first.Real.TotalMilliseconds:0} ms, then {second.Real.TotalMilliseconds:0} ms; {first.Trace.Count} events");
        Assert.Equal(Count, first.Nodes);
        Assert.True(first.RelayBalance > 0);

        // Deterministic: the same seed, the same events at the same virtual instants at the same nodes.
        Assert.Equal(first.Trace.Count, second.Trace.Count);
        for (var i = 0; i < first.Trace.Count; i++)
            Assert.True(first.Trace[i] == second.Trace[i], $"the traces differ at event {i}:\n  {first.Trace[i]}\n  {second.Trace[i]}");
        Assert.Equal(first.Virtual, second.Virtual);
        Assert.Equal(first.RelayBalance, second.RelayBalance);

        // Nothing waited on the real clock: the second run (warm) takes well under a second here.
        Assert.True(second.Real < TimeSpan.FromSeconds(5), $"the warm run took {second.Real.TotalMilliseconds:0} ms of real time");
    }

    [Fact]
    public async Task Another_seed_gives_other_keys_and_so_another_trace()
    {
        await using var one = new VirtualMesh(1);
        await using var two = new VirtualMesh(2);
        one.AddNodes(2);
        two.AddNodes(2);
        one.Link(0, 1);
        two.Link(0, 1);
        Assert.NotEqual(one.Nodes[0].Node.Address, two.Nodes[0].Node.Address);
        Assert.NotEqual(one.Trace.Select(t => t.Detail), two.Trace.Select(t => t.Detail));
    }

    [Fact]
    public void The_virtual_clock_fires_timers_in_due_order_and_those_due_together_in_the_order_they_were_set()
    {
        var time = new VirtualTime(VirtualMesh.Epoch);
        var fired = new List<string>();
        using var late = time.CreateTimer(_ => fired.Add("late"), null, TimeSpan.FromSeconds(2), Timeout.InfiniteTimeSpan);
        using var first = time.CreateTimer(_ => fired.Add("first"), null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        using var second = time.CreateTimer(_ => fired.Add("second"), null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        using var periodic = time.CreateTimer(_ => fired.Add($"tick {time.Elapsed.TotalSeconds}"), null, TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(0.5));
        using var moved = time.CreateTimer(_ => fired.Add("moved"), null, TimeSpan.FromSeconds(0.1), Timeout.InfiniteTimeSpan);
        moved.Change(TimeSpan.FromSeconds(1.5), Timeout.InfiniteTimeSpan);
        time.AdvanceTo(TimeSpan.FromSeconds(2));
        Assert.Equal(["tick 0.5", "first", "second", "tick 1", "moved", "tick 1.5", "late", "tick 2"], fired);
        Assert.Equal(VirtualMesh.Epoch + TimeSpan.FromSeconds(2), time.GetUtcNow());
        periodic.Dispose();
        Assert.Null(time.NextDue);
    }

    [Fact]
    public void The_simulations_memory_of_good_signatures_never_takes_a_forged_one()
    {
        VerifiedSignatures.Enable();
        using var key = Skymesh.Identity.NodeKey.Generate();
        using var other = Skymesh.Identity.NodeKey.Generate();
        var message = "an announcement"u8.ToArray();
        var signature = key.Sign("link-announcement", message);
        Assert.True(key.Address.Verify("link-announcement", message, signature));
        var hits = VerifiedSignatures.Hits;
        Assert.True(key.Address.Verify("link-announcement", message, signature));
        Assert.Equal(hits + 1, VerifiedSignatures.Hits);
        // The same signature under another key, purpose or message, or a changed bit, is checked and refused.
        Assert.False(other.Address.Verify("link-announcement", message, signature));
        Assert.False(key.Address.Verify("setup-request", message, signature));
        Assert.False(key.Address.Verify("link-announcement", "another"u8, signature));
        signature[10] ^= 1;
        Assert.False(key.Address.Verify("link-announcement", message, signature));
    }

    [Fact]
    public async Task A_path_longer_than_ten_hops_is_repaired_the_long_way_round()
    {
        // A ring of 24: node 0 to node 12 is 12 hops either way. Cut one link on the path: the only repair is the
        // other 12 hops, more than a default query's ten.
        await using var mesh = new VirtualMesh(5, recordTrace: true, TimeSpan.FromMilliseconds(10));
        mesh.AddNodes(24);
        mesh.LinkAll(Topologies.Create("ring", 24, 5), new Impairment { Latency = TimeSpan.FromMilliseconds(5) });
        mesh.RunFor(TimeSpan.FromSeconds(1));
        var agent = mesh.Nodes[0].Agent!;
        var opened = mesh.Run(() => agent.OpenPathAsync(mesh.Nodes[12].Node.Address, new PathQuery { MaxHops = PathQuery.HopLimit }, CancellationToken.None), TimeSpan.FromSeconds(10));
        var hops = agent.Opened.Single().Request.Nodes.Select(n => mesh.IndexOf(n.ToString())).ToList();
        Assert.Equal(13, hops.Count);
        mesh.Cut(hops[1], hops[2]);
        Assert.True(mesh.RunUntil(() => mesh.Nodes[0].Node.Paths.Single().State == "up" && mesh.Trace.Any(t => t.Node == 0 && t.Kind == NodeEventKind.PathRepaired), TimeSpan.FromSeconds(10)),
            "the 12-hop path was not repaired the other way round");
        var repaired = agent.Opened.Single().Request.Nodes.Select(n => mesh.IndexOf(n.ToString())).ToList();
        Assert.Equal(13, repaired.Count);
        Assert.DoesNotContain(hops[1], repaired);
        Assert.Equal(opened.Id, mesh.Nodes[0].Node.Paths.Single().Id);
    }

    [Fact]
    public async Task Nodes_that_use_a_finder_do_not_hear_one_another_join_so_starting_a_mesh_costs_linear_control_traffic()
    {
        // 400 nodes on one finder: each node's joining is told to the finder (it watches the members) and to nobody
        // else. When nodes watched the finders' topic they heard every other node join it: 80,000 events for 400.
        const int nodes = 400;
        await using var mesh = new VirtualMesh(7, recordTrace: false, TimeSpan.FromMilliseconds(10));
        var finder = mesh.AddFinders(1)[0];
        mesh.AddNodes(nodes, perNode: _ => $$""", "finder": "{{finder}}" """);
        mesh.LinkAll(Topologies.Create("tree", nodes, 7), new Impairment { Latency = TimeSpan.FromMilliseconds(5) });
        Assert.True(mesh.RunUntil(() => mesh.Finders[0].Graph.NodeCount == nodes, TimeSpan.FromSeconds(5)), "the finder did not learn every node");
        Assert.InRange(mesh.Bus.MembershipEventsDelivered, nodes, 4 * nodes);
    }
}
