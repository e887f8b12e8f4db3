using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Skymesh.Sim;

namespace Skymesh.Cli;

/// <summary><c>skymesh sim</c>: a mesh of real nodes on virtual time (docs/simulation.md).</summary>
internal static class SimCommand
{
    public static Command Create()
    {
        var defaults = new SimOptions();
        var nodes = new Option<int>("--nodes", "-n") { Description = "Nodes in the mesh.", DefaultValueFactory = _ => defaults.Nodes }.Within(2, 1_000_000);
        var topology = new Option<string>("--topology") { Description = $"The mesh's shape: {string.Join(", ", Topologies.Names)}.", DefaultValueFactory = _ => defaults.Topology };
        var edges = new Option<string?>("--edges") { Description = "Links from a file of lines \"A B\" (node numbers from 0) instead of --topology." };
        var seed = new Option<int>("--seed") { Description = "The run's seed: the same seed gives the same run.", DefaultValueFactory = _ => defaults.Seed };
        var finders = new Option<int?>("--finders") { Description = "Dedicated route finders (default: none up to 500 nodes, then one per 2,000 nodes, from 2 to 5: each keeps the whole graph)." }.Within(0, 1000);
        var pairs = new Option<int>("--pairs") { Description = "Node pairs sampled for reachability.", DefaultValueFactory = _ => defaults.SampledPairs }.Within(0, 10_000_000);
        var setups = new Option<int>("--setups") { Description = "Paths set up through the control plane after convergence, for latency and stretch.", DefaultValueFactory = _ => defaults.Setups }.Within(0, 1_000_000);
        var latency = new Option<double>("--latency-ms") { Description = "One-way latency of every link.", DefaultValueFactory = _ => defaults.LinkLatency.TotalMilliseconds }.Within(0, 60_000);
        var busLatency = new Option<double>("--bus-latency-ms") { Description = "How long a control message takes from node to node through the bus.", DefaultValueFactory = _ => defaults.BusLatency.TotalMilliseconds }.Within(0, 60_000);
        var limit = new Option<double>("--limit-seconds") { Description = "Virtual seconds the cold start may take.", DefaultValueFactory = _ => defaults.Limit.TotalSeconds }.Within(1, 10_000_000);
        var idle = new Option<double>("--idle-seconds") { Description = "Virtual seconds of idle mesh over which control traffic is measured.", DefaultValueFactory = _ => defaults.IdleWindow.TotalSeconds }.Within(0, 1_000_000);
        var plot = new Option<string?>("--plot") { Description = "Also draw reachability and control traffic over virtual time into this SVG file." };
        var scenario = new Option<string>("--scenario")
        {
            Description = "What happens after the cold start: nothing more (cold-start); link-failures (one link of each path set up is cut at once); concurrent-setups (every path asked for at one instant); partition (the links between the two halves cut, then mended); churn (nodes leave and come back at --churn-rate); steady-state (the converged mesh runs on for --steady-seconds, watched every second); traffic (flows of datagrams over paths between sampled pairs, every node charging for forwarding, settled on the relays' ledgers).",
            DefaultValueFactory = _ => "cold-start",
        }.AcceptOnly("cold-start", "link-failures", "concurrent-setups", "partition", "churn", "steady-state", "traffic");
        var churnRate = new Option<double>("--churn-rate") { Description = "churn: nodes leaving per second of virtual time (each back after 10 s).", DefaultValueFactory = _ => defaults.ChurnRate }.Within(0.01, 10_000);
        var churnSeconds = new Option<double>("--churn-seconds") { Description = "churn: virtual seconds nodes come and go.", DefaultValueFactory = _ => defaults.ChurnTime.TotalSeconds }.Within(1, 86_400);
        var partitionSeconds = new Option<double>("--partition-seconds") { Description = "partition: virtual seconds the halves stay apart.", DefaultValueFactory = _ => defaults.PartitionTime.TotalSeconds }.Within(1, 86_400);
        var steadySeconds = new Option<double>("--steady-seconds") { Description = "steady-state: virtual seconds the converged mesh runs on.", DefaultValueFactory = _ => defaults.SteadyTime.TotalSeconds }.Within(1, 86_400);
        var trafficSeconds = new Option<double>("--traffic-seconds") { Description = "traffic: virtual seconds the flows run.", DefaultValueFactory = _ => defaults.TrafficTime.TotalSeconds }.Within(1, 86_400);
        var trafficRate = new Option<int>("--traffic-rate") { Description = "traffic: datagrams per second per flow (1,200 bytes each; one flow per --setups pair).", DefaultValueFactory = _ => defaults.TrafficRate }.Within(1, 10_000);
        var sampleMs = new Option<double>("--sample-ms") { Description = "Virtual milliseconds between reachability samples while the mesh converges.", DefaultValueFactory = _ => defaults.SampleEvery.TotalMilliseconds }.Within(1, 60_000);
        var loss = new Option<double>("--loss") { Description = "Share of frames every link loses, 0 to 0.5.", DefaultValueFactory = _ => 0 }.Within(0, 0.5);
        var command = new Command("sim", "Run a mesh of real nodes in this process on virtual time and report how its control plane converges; ends with one JSON line.")
        {
            nodes, topology, edges, seed, finders, pairs, setups, latency, busLatency, limit, idle, scenario, churnRate, churnSeconds, partitionSeconds,
            steadySeconds, trafficSeconds, trafficRate, loss, sampleMs, plot,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var count = parse.GetValue(nodes);
            if (count < 2)
                throw new UsageException("--nodes must be at least 2.");
            IReadOnlyList<(int, int)>? links = null;
            if (parse.GetValue(edges) is { } file)
            {
                try
                {
                    links = Topologies.FromEdgeList(File.ReadLines(file), out count);
                }
                catch (FormatException e)
                {
                    throw new UsageException($"--edges {file}: {e.Message}");
                }
            }
            else if (!Topologies.Names.Contains(parse.GetValue(topology)))
            {
                throw new UsageException($"--topology: \"{parse.GetValue(topology)}\" is not one of {string.Join(", ", Topologies.Names)}.");
            }
            var options = new SimOptions
            {
                Nodes = count,
                Topology = parse.GetValue(topology)!,
                Edges = links,
                Seed = parse.GetValue(seed),
                Finders = parse.GetValue(finders) ?? (count <= 500 ? 0 : Math.Clamp(count / 2000, 2, 5)),
                SampledPairs = Math.Max(1, parse.GetValue(pairs)),
                Setups = Math.Max(0, parse.GetValue(setups)),
                LinkLatency = TimeSpan.FromMilliseconds(parse.GetValue(latency)),
                BusLatency = TimeSpan.FromMilliseconds(Math.Max(0, parse.GetValue(busLatency))),
                Limit = TimeSpan.FromSeconds(parse.GetValue(limit)),
                IdleWindow = TimeSpan.FromSeconds(Math.Max(1, parse.GetValue(idle))),
                Scenario = parse.GetValue(scenario)!,
                ChurnRate = parse.GetValue(churnRate),
                ChurnTime = TimeSpan.FromSeconds(parse.GetValue(churnSeconds)),
                PartitionTime = TimeSpan.FromSeconds(parse.GetValue(partitionSeconds)),
                SteadyTime = TimeSpan.FromSeconds(parse.GetValue(steadySeconds)),
                TrafficTime = TimeSpan.FromSeconds(parse.GetValue(trafficSeconds)),
                TrafficRate = parse.GetValue(trafficRate),
                Loss = parse.GetValue(loss),
                SampleEvery = TimeSpan.FromMilliseconds(parse.GetValue(sampleMs)),
            };
            var report = await ColdStart.RunAsync(options, line => Console.Error.WriteLine(line));
            if (parse.GetValue(plot) is { } svg)
                await File.WriteAllTextAsync(svg, SvgPlot.Render(report), cancellationToken);
            string Num(double? value, string format) => value is { } v ? v.ToString(format, CultureInfo.InvariantCulture) : "-";
            Console.WriteLine($"nodes {report.Nodes:N0} ({report.Topology}, {report.Links:N0} links, {report.Finders} dedicated finders), seed {report.Seed}");
            Console.WriteLine($"reachable pairs at the end   {report.Reachability:P1}{(report.PairsBeyondHopLimit > 0 ? $" ({report.PairsBeyondHopLimit:P1} of sampled pairs are farther apart than the 16-hop path limit, left out)" : "")}");
            Console.WriteLine($"95 % / 99 % reachable after  {Num(report.SecondsTo95, "0.00")} s / {Num(report.SecondsTo99, "0.00")} s of virtual time");
            Console.WriteLine($"path setup p50 / p99         {Num(report.SetupP50Ms, "0.0")} ms / {Num(report.SetupP99Ms, "0.0")} ms (virtual), stretch {Num(report.StretchMean, "0.00")}");
            if (report.Repaired is { } share)
                Console.WriteLine($"paths repaired after a cut   {share:P0}, p50 / p99 {Num(report.RepairP50Ms, "0.0")} ms / {Num(report.RepairP99Ms, "0.0")} ms (virtual)");
            if (report.PartitionReachability is { } apart)
                Console.WriteLine($"partition                    reachability fell to {apart:P1}; mended, back to 99 % of before in {Num(report.HealSeconds, "0.00")} s (virtual)");
            if (report.ChurnReachabilityMean is { } churn)
                Console.WriteLine($"churn                        reachable pairs (both ends up) mean {churn:P1}, lowest {report.ChurnReachabilityMin:P1}; real path setups {Num(report.ChurnSetupSuccess * 100, "0")} % succeeded");
            if (report.SteadyReachabilityMin is { } steady)
                Console.WriteLine($"steady state                 lowest reachability {steady:P1} (sampled every second); real path setups {Num(report.SteadySetupSuccess * 100, "0")} % succeeded");
            if (report.DeliveryRatio is { } delivered)
                Console.WriteLine($"traffic                      {report.Flows} flows: {delivered:P2} of datagrams answered; relays paid {Num(report.RelaysPaid * 100, "0")} %, {report.SettledMicroUnits:N0} micro-units settled");
            Console.WriteLine($"idle control traffic         {report.ControlBytesPerNodePerSec:N0} bytes/s per node");
            if (report.BusEventsDropped > 0)
                Console.WriteLine($"bus events dropped           {report.BusEventsDropped:N0} (a reader fell behind its queue)");
            Console.WriteLine($"memory                       {report.MemoryBytesPerNode / 1024.0:N0} KiB per node (managed heap, whole process)");
            Console.WriteLine($"real time                    {report.RealSeconds:0.0} s");
            Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["nodes"] = report.Nodes,
                ["topology"] = report.Topology,
                ["scenario"] = report.Scenario,
                ["seed"] = report.Seed,
                ["links"] = report.Links,
                ["finders"] = report.Finders,
                ["reachability"] = Math.Round(report.Reachability, 4),
                ["pairs_beyond_hop_limit"] = Math.Round(report.PairsBeyondHopLimit, 4),
                ["bus_events_dropped"] = report.BusEventsDropped,
                ["seconds_to_95"] = report.SecondsTo95 is { } t95 ? Math.Round(t95, 3) : null,
                ["seconds_to_99"] = report.SecondsTo99 is { } t99 ? Math.Round(t99, 3) : null,
                ["setup_p50_ms"] = report.SetupP50Ms is { } p50 ? Math.Round(p50, 3) : null,
                ["setup_p99_ms"] = report.SetupP99Ms is { } p99 ? Math.Round(p99, 3) : null,
                ["repair_p50_ms"] = report.RepairP50Ms is { } r50 ? Math.Round(r50, 3) : null,
                ["repair_p99_ms"] = report.RepairP99Ms is { } r99 ? Math.Round(r99, 3) : null,
                ["repaired"] = report.Repaired is { } repaired ? Math.Round(repaired, 4) : null,
                ["set_up"] = report.SetUp is { } setUp ? Math.Round(setUp, 4) : null,
                ["stretch_mean"] = report.StretchMean is { } s ? Math.Round(s, 3) : null,
                ["partition_reachability"] = report.PartitionReachability is { } pr ? Math.Round(pr, 4) : null,
                ["heal_seconds"] = report.HealSeconds is { } hs ? Math.Round(hs, 3) : null,
                ["churn_reachability_mean"] = report.ChurnReachabilityMean is { } cm ? Math.Round(cm, 4) : null,
                ["churn_reachability_min"] = report.ChurnReachabilityMin is { } cmin ? Math.Round(cmin, 4) : null,
                ["churn_setup_success"] = report.ChurnSetupSuccess is { } cs ? Math.Round(cs, 4) : null,
                ["steady_reachability_min"] = report.SteadyReachabilityMin is { } srm ? Math.Round(srm, 4) : null,
                ["steady_setup_success"] = report.SteadySetupSuccess is { } sss ? Math.Round(sss, 4) : null,
                ["delivery_ratio"] = report.DeliveryRatio is { } dr ? Math.Round(dr, 4) : null,
                ["flows"] = report.Flows,
                ["settled_micro_units"] = report.SettledMicroUnits,
                ["relays_paid"] = report.RelaysPaid is { } rp ? Math.Round(rp, 4) : null,
                ["control_bytes_per_node_per_sec"] = Math.Round(report.ControlBytesPerNodePerSec, 1),
                ["memory_bytes_per_node"] = report.MemoryBytesPerNode,
                ["real_seconds"] = Math.Round(report.RealSeconds, 2),
            }));
            return report.SecondsTo99 is null ? 1 : 0;
        });
        return command;
    }
}
