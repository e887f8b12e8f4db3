namespace Skymesh.Sim.Tests;

/// <summary><c>skymesh sim</c>'s cold start at CI size, and the topologies it builds.</summary>
public sealed class ColdStartTests
{
    [Theory]
    [InlineData("grid")]
    [InlineData("tree")]
    public async Task Fifty_nodes_reach_95_percent_of_pairs_within_5_seconds_of_cold_start_the_same_way_every_run(string topology)
    {
        var options = new SimOptions { Nodes = 50, Topology = topology, Seed = 1, SampledPairs = 100, Setups = 5, IdleWindow = TimeSpan.FromSeconds(30) };
        var first = await ColdStart.RunAsync(options);
        Assert.Equal(1.0, first.Reachability);
        Assert.NotNull(first.SecondsTo95);
        Assert.True(first.SecondsTo95 <= 5, $"95 % of pairs reachable only after {first.SecondsTo95} s");
        // Two rounds of two messages each way through a bus of 10 ms: the setup takes 40 ms of virtual time.
        Assert.Equal(40, first.SetupP50Ms);
        Assert.True(first.StretchMean >= 1);
        Assert.True(first.ControlBytesPerNodePerSec > 0);

        var second = await ColdStart.RunAsync(options);
        Assert.Equal((first.SecondsTo95, first.SecondsTo99, first.SetupP99Ms, first.StretchMean, first.ControlBytesPerNodePerSec),
            (second.SecondsTo95, second.SecondsTo99, second.SetupP99Ms, second.StretchMean, second.ControlBytesPerNodePerSec));
        Assert.Equal(first.Samples, second.Samples);

        // The plot is an SVG with both charts, their axes named.
        var svg = SvgPlot.Render(first);
        Assert.StartsWith("<svg", svg, StringComparison.Ordinal);
        Assert.Contains("reachable pairs (%)", svg, StringComparison.Ordinal);
        Assert.Contains("control traffic (bytes/s per node)", svg, StringComparison.Ordinal);
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Count(svg, "<polyline"));
        System.Xml.Linq.XDocument.Parse(svg);
    }

    [Fact]
    public async Task After_a_cold_start_every_path_whose_link_is_cut_is_repaired_within_a_bus_round_trip_or_two()
    {
        var report = await ColdStart.RunAsync(new SimOptions
        {
            Nodes = 64, Topology = "grid", Seed = 3, SampledPairs = 50, Setups = 10, Scenario = "link-failures", IdleWindow = TimeSpan.FromSeconds(5),
        });
        Assert.Equal(1.0, report.Repaired);
        // The relay reports over the bus (10 ms), the source sets the new path up in two rounds (40 ms).
        Assert.True(report.RepairP50Ms <= 200, $"repairs took {report.RepairP50Ms} ms (p50)");
        Assert.Equal("link-failures", report.Scenario);
    }

    [Fact]
    public async Task Forty_paths_asked_for_at_one_instant_are_all_set_up_as_fast_as_one()
    {
        var report = await ColdStart.RunAsync(new SimOptions
        {
            Nodes = 80, Topology = "powerlaw", Seed = 4, SampledPairs = 40, Setups = 40, Scenario = "concurrent-setups", IdleWindow = TimeSpan.FromSeconds(2),
        });
        Assert.Equal(1.0, report.SetUp);
        // Hops answer each request on its own: forty at once cost each no more than the two rounds of one.
        Assert.Equal(40, report.SetupP99Ms);
    }

    [Fact]
    public async Task A_partition_cuts_the_pairs_across_it_and_the_mesh_heals_once_it_is_mended()
    {
        var options = new SimOptions
        {
            Nodes = 36, Topology = "grid", Seed = 5, SampledPairs = 100, Setups = 0, Scenario = "partition",
            PartitionTime = TimeSpan.FromSeconds(10), IdleWindow = TimeSpan.FromSeconds(1),
        };
        var report = await ColdStart.RunAsync(options);
        // About half the sampled pairs straddle the cut: they become unreachable, the rest stay reachable.
        Assert.InRange(report.PartitionReachability!.Value, 0.2, 0.8);
        // Once the links are mended, the mesh is whole again within a few announcements.
        Assert.NotNull(report.HealSeconds);
        Assert.True(report.HealSeconds < 5, $"healed after {report.HealSeconds} s");
        Assert.Equal(1.0, report.Reachability);
        // The same seed, the same run.
        var again = await ColdStart.RunAsync(options);
        Assert.Equal((report.PartitionReachability, report.HealSeconds), (again.PartitionReachability, again.HealSeconds));
    }

    [Fact]
    public async Task Under_churn_the_pairs_that_are_up_stay_reachable_and_their_paths_are_set_up()
    {
        var report = await ColdStart.RunAsync(new SimOptions
        {
            Nodes = 60, Topology = "powerlaw", Seed = 6, SampledPairs = 100, Setups = 0, Scenario = "churn",
            ChurnRate = 1, ChurnTime = TimeSpan.FromSeconds(15), IdleWindow = TimeSpan.FromSeconds(1),
        });
        Assert.True(report.ChurnReachabilityMean > 0.9, $"mean reachability {report.ChurnReachabilityMean} under churn");
        Assert.True(report.ChurnSetupSuccess > 0.8, $"{report.ChurnSetupSuccess} of setups succeeded under churn");
        // Everyone is back at the end.
        Assert.Equal(1.0, report.Reachability);
    }

    [Fact]
    public async Task In_steady_state_the_mesh_stays_whole_past_the_lifetime_of_its_first_announcements()
    {
        // 150 s of virtual time: longer than an announcement lives (4 × 30 s), so only refreshes keep the graph whole.
        var report = await ColdStart.RunAsync(new SimOptions
        {
            Nodes = 40, Topology = "tree", Seed = 8, SampledPairs = 100, Setups = 0, Scenario = "steady-state",
            SteadyTime = TimeSpan.FromSeconds(150), IdleWindow = TimeSpan.FromSeconds(1),
        });
        Assert.Equal(1.0, report.SteadyReachabilityMin);
        Assert.Equal(1.0, report.SteadySetupSuccess);
        // The refreshes are what it costs: every node hears every other's (no finders at this size), a few hundred bytes a second.
        Assert.InRange(report.ControlBytesPerNodePerSec, 50, 2000);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public async Task Flows_of_traffic_are_delivered_and_every_relay_they_cross_is_paid(int finders)
    {
        // With dedicated finders no node hears announcements: what each neighbour charges comes in its price note.
        var options = new SimOptions
        {
            Nodes = 30, Topology = "grid", Seed = 9, SampledPairs = 50, Setups = 8, Scenario = "traffic", Finders = finders,
            TrafficTime = TimeSpan.FromSeconds(5), TrafficRate = 20, IdleWindow = TimeSpan.FromSeconds(1),
        };
        var report = await ColdStart.RunAsync(options);
        Assert.Equal(8, report.Flows);
        Assert.Equal(1.0, report.DeliveryRatio);
        Assert.Equal(1.0, report.RelaysPaid);
        // 8 flows × 100 datagrams of 1,200 bytes, each forwarded there and back by one or more relays at 1,000 per MiB.
        Assert.InRange(report.SettledMicroUnits!.Value, 8 * 100 * 2 * 1200 * 1000L / (1 << 20) / 2, 8 * 100 * 2 * 1300 * 1000L * 10 / (1 << 20));
        var again = await ColdStart.RunAsync(options);
        Assert.Equal((report.DeliveryRatio, report.SettledMicroUnits), (again.DeliveryRatio, again.SettledMicroUnits));
    }

    [Theory]
    [InlineData("line")]
    [InlineData("ring")]
    [InlineData("grid")]
    [InlineData("tree")]
    [InlineData("geometric")]
    [InlineData("powerlaw")]
    public void Every_topology_is_connected_and_the_same_for_the_same_seed(string name)
    {
        var links = Topologies.Create(name, 300, seed: 7);
        Assert.Single(Topologies.Components(300, links));
        Assert.Equal(links, Topologies.Create(name, 300, seed: 7));
        Assert.DoesNotContain(links, l => l.A == l.B);
    }

    [Fact]
    public void A_power_law_mesh_has_hubs_and_a_grid_has_none()
    {
        static int MaxDegree(IReadOnlyList<(int A, int B)> links) => links.SelectMany(l => new[] { l.A, l.B }).GroupBy(n => n).Max(g => g.Count());
        Assert.True(MaxDegree(Topologies.Create("powerlaw", 2000, 1)) >= 40);
        Assert.Equal(4, MaxDegree(Topologies.Create("grid", 2000, 1)));
    }

    [Fact]
    public void An_edge_list_is_read_with_comments_and_a_bad_line_is_named()
    {
        var links = Topologies.FromEdgeList(["# a triangle", "0 1", "1 2  # second", "", "2 0"], out var nodes);
        Assert.Equal(3, nodes);
        Assert.Equal(3, links.Count);
        var error = Assert.Throws<FormatException>(() => Topologies.FromEdgeList(["0 1", "1 x"], out _));
        Assert.StartsWith("line 2:", error.Message, StringComparison.Ordinal);
    }
}
