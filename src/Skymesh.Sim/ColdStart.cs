using Skymesh.Control.Bus;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Mesh.Interfaces;

namespace Skymesh.Sim;

/// <summary>What to simulate (<c>skymesh sim</c>).</summary>
public sealed record SimOptions
{
    public int Nodes { get; init; } = 100;

    public string Topology { get; init; } = "ring";

    /// <summary>Links read from an edge list instead of generated (<see cref="Topologies.FromEdgeList"/>).</summary>
    public IReadOnlyList<(int A, int B)>? Edges { get; init; }

    public int Seed { get; init; } = 1;

    /// <summary>Dedicated route finders; 0: every node keeps its own graph (memory grows as N²).</summary>
    public int Finders { get; init; }

    /// <summary>One-way latency of every link.</summary>
    public TimeSpan LinkLatency { get; init; } = TimeSpan.FromMilliseconds(5);

    /// <summary>How long a control message takes from one node to another through the bus (half a broker round trip each way).</summary>
    public TimeSpan BusLatency { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Node pairs sampled for reachability and stretch (those beyond the hop limit are left out).</summary>
    public int SampledPairs { get; init; } = 200;

    /// <summary>Paths really set up (through the control plane) once the mesh has converged, for their latency.</summary>
    public int Setups { get; init; } = 20;

    /// <summary>Virtual time the cold start may take before the run stops waiting for 99 %.</summary>
    public TimeSpan Limit { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>Virtual time idle after convergence over which control traffic is measured.</summary>
    public TimeSpan IdleWindow { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Every how much virtual time reachability is sampled.</summary>
    public TimeSpan SampleEvery { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// <c>cold-start</c>; <c>link-failures</c> (one link of each path set up is cut, and the repairs are timed); or
    /// <c>concurrent-setups</c> (every path is asked for at the same instant).
    /// </summary>
    public string Scenario { get; init; } = "cold-start";

    /// <summary>Partition: how long the two halves stay apart before the links between them are mended.</summary>
    public TimeSpan PartitionTime { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Churn: nodes that leave (all their links cut) per second of virtual time; each comes back after <see cref="ChurnDowntime"/>.</summary>
    public double ChurnRate { get; init; } = 1;

    public TimeSpan ChurnDowntime { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Churn: how long nodes come and go.</summary>
    public TimeSpan ChurnTime { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Steady state: how long the converged mesh runs on (announcements refreshed, records expiring) while it is watched.</summary>
    public TimeSpan SteadyTime { get; init; } = TimeSpan.FromSeconds(300);

    /// <summary>Traffic: how long the flows run.</summary>
    public TimeSpan TrafficTime { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Traffic: datagrams each flow sends per second (pings of <see cref="TrafficSize"/> bytes, answered by the far end).</summary>
    public int TrafficRate { get; init; } = 50;

    public int TrafficSize { get; init; } = 1200;

    /// <summary>Traffic: what every node charges to forward a MiB (micro-units), so that settlement has something to pay.</summary>
    public uint Price { get; init; } = 1000;

    /// <summary>Share of frames every link loses, 0 to 1.</summary>
    public double Loss { get; init; }
}

/// <summary>One sample of a run: at a virtual instant, the share of sampled pairs that can open a path, and control bytes so far.</summary>
public sealed record SimSample(double Seconds, double Reachability, long ControlBytes);

/// <summary>What a run found (the JSON line of <c>skymesh sim</c>).</summary>
public sealed record SimReport(
    int Nodes, string Topology, string Scenario, int Seed, int Links, int Finders, double Reachability, double? SecondsTo95, double? SecondsTo99,
    double? SetupP50Ms, double? SetupP99Ms, double? StretchMean, double ControlBytesPerNodePerSec, long MemoryBytesPerNode, double RealSeconds,
    IReadOnlyList<SimSample> Samples)
{
    /// <summary>Share of sampled pairs more than <see cref="PathQuery.HopLimit"/> hops apart on the topology (left out of reachability).</summary>
    public double PairsBeyondHopLimit { get; init; }

    /// <summary>Control-bus events dropped because a reader (a finder, a node) fell behind its queue's bound.</summary>
    public long BusEventsDropped { get; init; }

    /// <summary>Link failures: virtual time from the cut to the source's repair, and the share of cut paths repaired.</summary>
    public double? RepairP50Ms { get; init; }

    public double? RepairP99Ms { get; init; }

    public double? Repaired { get; init; }

    /// <summary>Concurrent setups: the share of the paths asked for at one instant that were set up.</summary>
    public double? SetUp { get; init; }

    /// <summary>Partition: the lowest reachability while the halves were apart, and the virtual seconds from the mend back to 99 % of what it was before.</summary>
    public double? PartitionReachability { get; init; }

    public double? HealSeconds { get; init; }

    /// <summary>Churn: reachability among pairs whose both ends were up, sampled each second (mean and lowest), and the share of real path setups between such pairs that succeeded.</summary>
    public double? ChurnReachabilityMean { get; init; }

    public double? ChurnReachabilityMin { get; init; }

    public double? ChurnSetupSuccess { get; init; }

    /// <summary>Steady state: the lowest reachability sampled each second, and the share of real path setups (one every 5 s) that succeeded.</summary>
    public double? SteadyReachabilityMin { get; init; }

    public double? SteadySetupSuccess { get; init; }

    /// <summary>Traffic: the share of datagrams answered, the flows that ran, and what the relays were paid on their ledgers (micro-units).</summary>
    public double? DeliveryRatio { get; init; }

    public int? Flows { get; init; }

    public long? SettledMicroUnits { get; init; }

    /// <summary>Traffic: relays that forwarded for the flows and were paid for it, of those that forwarded.</summary>
    public double? RelaysPaid { get; init; }
}

/// <summary>
/// The cold-start scenario: N nodes power up at once with every link of the topology, and the control plane finds the
/// mesh. It samples, every <see cref="SimOptions.SampleEvery"/> of virtual time, the share of sampled node pairs whose
/// route finder (the node's own, or its dedicated finder) can give a path between them; then sets up real paths for
/// their latency and stretch, and measures the control traffic of the idle mesh.
/// </summary>
public static class ColdStart
{
    /// <param name="realClock">The wall clock the run's real time is read from (the system's by default).</param>
    public static async Task<SimReport> RunAsync(SimOptions options, Action<string>? progress = null, TimeProvider? realClock = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var real = realClock ?? TimeProvider.System;
        var started = real.GetTimestamp();
        var links = options.Edges ?? Topologies.Create(options.Topology, options.Nodes, options.Seed);
        var nodes = options.Edges is null ? options.Nodes : links.Max(l => Math.Max(l.A, l.B)) + 1;
        // Every node announces at the same instant of a cold start: a finder's queue must hold one announcement from each
        // (a broker queues 32 MiB towards a reader; 100,000 announcements of a few links are about that).
        await using var mesh = new VirtualMesh(options.Seed, recordTrace: false, options.BusLatency,
            busQueueLimit: Math.Max(MemoryBusNetwork.DefaultEventQueueLimit, 2 * nodes));
        var finders = mesh.AddFinders(options.Finders);
        var traffic = options.Scenario == "traffic";
        mesh.AddNodes(nodes, traffic ? $", \"price\": {options.Price}" : "",
            perNode: finders.Count == 0 ? null : i => $$""", "finder": "{{finders[i % finders.Count]}}" """);
        progress?.Invoke($"{nodes:N0} nodes started ({real.GetElapsedTime(started).TotalSeconds:0.0} s real, {GC.GetTotalPauseDuration().TotalSeconds:0.0} s of it collecting garbage, {GC.CollectionCount(2)} full collections); linking {links.Count:N0} pairs");
        mesh.LinkAll(links, new Impairment { Latency = options.LinkLatency, Loss = options.Loss });
        var poweredUp = mesh.Time.Elapsed;

        var random = new Random(options.Seed ^ 0x5eed);
        var neighbours = Topologies.Adjacency(nodes, links);
        var sampled = Enumerable.Range(0, options.SampledPairs).Select(_ =>
        {
            var a = random.Next(nodes);
            var b = random.Next(nodes - 1);
            return (a, b >= a ? b + 1 : b);
        }).ToList();
        // A path is at most PathQuery.HopLimit hops (a setup request fits one control message): pairs farther apart on
        // the topology can never have one, and are reported apart rather than counted as failures.
        var distance = sampled.Select(p => Topologies.HopsFrom(neighbours, p.Item1)[p.Item2]).ToList();
        var pairs = sampled.Where((p, i) => distance[i] is > 0 and <= PathQuery.HopLimit).ToList();
        var beyond = sampled.Count - pairs.Count;
        var query = new PathQuery { MaxHops = PathQuery.HopLimit };
        var addresses = mesh.Nodes.Select(h => h.Node.Address).ToArray();
        TopologyGraph GraphOf(int node) => finders.Count == 0 ? mesh.Nodes[node].Agent!.Graph : mesh.Finders[node % finders.Count].Graph;
        bool Reachable((int From, int To) p)
        {
            try
            {
                GraphOf(p.From).FindPath(addresses[p.From], addresses[p.To], query);
                return true;
            }
            catch (NoRouteException)
            {
                return false;
            }
        }
        double Reachability() => pairs.Count(Reachable) / (double)Math.Max(1, pairs.Count);

        // A real path set up through the control plane between the pair, then closed: null when the source has no agent.
        bool? TrySetup((int From, int To) p)
        {
            if (mesh.Nodes[p.From].Agent is not { } agent)
                return null;
            try
            {
                var path = mesh.Run(() => agent.OpenPathAsync(addresses[p.To], query, CancellationToken.None), TimeSpan.FromSeconds(10));
                mesh.Run(() => agent.ClosePathAsync(path.Id, CancellationToken.None), TimeSpan.FromSeconds(10));
                return true;
            }
            catch (Exception e) when (e is Node.NodeRequestException or TimeoutException or NoRouteException)
            {
                return false;
            }
        }

        var samples = new List<SimSample>();
        double? to95 = null, to99 = null;
        var end = poweredUp + options.Limit;
        while (true)
        {
            var reach = mesh.Nodes.All(h => h.Agent is not null) ? Reachability() : 0;
            var seconds = (mesh.Time.Elapsed - poweredUp).TotalSeconds;
            samples.Add(new SimSample(seconds, reach, mesh.Bus.BytesDelivered));
            if (reach >= 0.95)
                to95 ??= seconds;
            if (reach >= 0.99)
                to99 ??= seconds;
            progress?.Invoke($"virtual {seconds,7:0.00} s  reachable {reach,6:P1}  control {mesh.Bus.BytesDelivered / 1e6,8:0.0} MB  real {real.GetElapsedTime(started).TotalSeconds,6:0.0} s");
            if (to99 is not null || mesh.Time.Elapsed >= end)
                break;
            mesh.RunFor(options.SampleEvery);
        }

        // Real paths through the control plane between sampled pairs: setup latency, and stretch against the shortest.
        var setupMs = new List<double>();
        var stretch = new List<double>();
        var failures = options.Scenario == "link-failures";
        var kept = new List<(int Source, int PathId, IReadOnlyList<NodeAddress> Nodes)>();
        var concurrentSetups = 0;
        if (options.Scenario == "concurrent-setups")
        {
            // Every sampled pair sets a path up at the same instant: the hops in common take many requests at once.
            var asked = pairs.Take(options.Setups).Where(p => mesh.Nodes[p.Item1].Agent is not null)
                .Select(p => (From: p.Item1, To: p.Item2, Task: mesh.Scheduler.Start(() => mesh.Nodes[p.Item1].Agent!.OpenPathAsync(addresses[p.Item2], query, CancellationToken.None))))
                .ToList();
            mesh.RunUntil(() => asked.All(s => s.Task.IsCompleted), TimeSpan.FromSeconds(30));
            foreach (var (from, to, task) in asked)
            {
                if (!task.IsCompletedSuccessfully)
                    continue;
                concurrentSetups++;
                var agent = mesh.Nodes[from].Agent!;
                var path = agent.Opened.First(p => p.Request.Destination == addresses[to]);
                setupMs.Add(path.SetupTime.TotalMilliseconds);
                stretch.Add((path.Request.Nodes.Count - 1) / (double)Math.Max(1, Topologies.HopsFrom(neighbours, from)[to]));
            }
            progress?.Invoke($"{concurrentSetups} of {asked.Count} paths set up at the same instant");
        }
        foreach (var (from, to) in options.Scenario == "concurrent-setups" ? [] : pairs.Take(options.Setups))
        {
            var agent = mesh.Nodes[from].Agent;
            if (agent is null)
                continue;
            try
            {
                var opened = mesh.Run(() => agent.OpenPathAsync(addresses[to], query, CancellationToken.None), TimeSpan.FromSeconds(10));
                var path = agent.Opened.Last(p => p.Request.Destination == addresses[to]);
                setupMs.Add(path.SetupTime.TotalMilliseconds);
                var shortest = Topologies.HopsFrom(neighbours, from)[to];
                stretch.Add((path.Request.Nodes.Count - 1) / (double)Math.Max(1, shortest));
                if (failures && path.Request.Nodes.Count >= 3)
                    kept.Add((from, opened.Id, path.Request.Nodes));
                else
                    mesh.Run(() => agent.ClosePathAsync(opened.Id, CancellationToken.None), TimeSpan.FromSeconds(10));
            }
            catch (Exception e) when (e is Node.NodeRequestException or TimeoutException)
            {
                progress?.Invoke($"path {from} -> {to} not set up: {e.Message}");
            }
        }
        if (setupMs.Count > 0)
            progress?.Invoke($"{setupMs.Count} paths set up through the control plane (real {real.GetElapsedTime(started).TotalSeconds:0.0} s)");

        // Link failures: the link after the first relay of each kept path is cut, all at once; each source repairs.
        var repairMs = new List<double>();
        if (kept.Count > 0)
        {
            var cutAt = mesh.Time.Elapsed;
            var repaired = new Dictionary<(int, int), TimeSpan>();
            foreach (var (source, pathId, _) in kept)
            {
                var id = pathId;
                var at = source;
                mesh.Nodes[source].Node.Events.Appended += e =>
                {
                    if (e.Kind == Node.Events.NodeEventKind.PathRepaired && e.Path == id)
                        repaired.TryAdd((at, id), mesh.Time.Elapsed - cutAt);
                };
            }
            foreach (var (_, _, path) in kept.DistinctBy(k => (k.Nodes[1], k.Nodes[2])))
                mesh.Cut(mesh.IndexOf(path[1].ToString()), mesh.IndexOf(path[2].ToString()));
            mesh.RunUntil(() => repaired.Count == kept.Count, TimeSpan.FromSeconds(30));
            repairMs.AddRange(repaired.Values.Select(t => t.TotalMilliseconds));
            repairMs.Sort();
            progress?.Invoke($"{repaired.Count} of {kept.Count} paths repaired after their link was cut");
        }

        // Partition: the links between the two halves (by node number) are cut at once, then mended.
        double? partitionReach = null, healSeconds = null;
        if (options.Scenario == "partition")
        {
            var whole = Reachability();
            var half = nodes / 2;
            var crossing = links.Where(l => l.A < half != l.B < half).ToList();
            foreach (var (a, b) in crossing)
                mesh.Cut(a, b);
            partitionReach = whole;
            for (var apart = TimeSpan.Zero; apart < options.PartitionTime; apart += options.SampleEvery)
            {
                mesh.RunFor(options.SampleEvery);
                partitionReach = Math.Min(partitionReach.Value, Reachability());
            }
            progress?.Invoke($"partition: {crossing.Count} links cut; reachability fell from {whole:P1} to {partitionReach:P1}");
            // From the moment the links are mended: their handshakes, the announcements, the graphs.
            var mended = mesh.Time.Elapsed;
            mesh.Heal(crossing);
            mesh.RunUntil(() => Reachability() >= 0.99 * whole, options.Limit);
            if (Reachability() >= 0.99 * whole)
                healSeconds = (mesh.Time.Elapsed - mended).TotalSeconds;
            progress?.Invoke($"partition mended: {(healSeconds is { } h ? $"back to 99 % of before in {h:0.00} s" : "not back within the limit")}");
        }

        // Churn: every second some nodes leave (every link cut) and those gone long enough come back.
        double? churnMean = null, churnMin = null, churnSetups = null;
        if (options.Scenario == "churn")
        {
            var down = new Dictionary<int, (TimeSpan Back, List<(int, int)> Links)>();
            var cutLinks = new HashSet<(int, int)>();
            var reach = new List<double>();
            int tried = 0, opened = 0;
            var carry = 0.0;
            for (var t = TimeSpan.Zero; t < options.ChurnTime; t += TimeSpan.FromSeconds(1))
            {
                foreach (var (node, (back, theirs)) in down.Where(d => d.Value.Back <= t).ToList())
                {
                    down.Remove(node);
                    var mend = theirs.Where(l => !down.ContainsKey(l.Item1) && !down.ContainsKey(l.Item2)).ToList();
                    foreach (var l in mend)
                        cutLinks.Remove(l);
                    mesh.Heal(mend);
                }
                carry += options.ChurnRate;
                for (; carry >= 1; carry--)
                {
                    var node = random.Next(nodes);
                    if (down.ContainsKey(node))
                        continue;
                    var theirs = links.Where(l => (l.A == node || l.B == node) && !cutLinks.Contains(l)).ToList();
                    foreach (var (a, b) in theirs)
                    {
                        mesh.Cut(a, b);
                        cutLinks.Add((a, b));
                    }
                    down[node] = (t + options.ChurnDowntime, links.Where(l => l.A == node || l.B == node).ToList());
                }
                mesh.RunFor(TimeSpan.FromSeconds(1));
                var live = pairs.Where(p => !down.ContainsKey(p.Item1) && !down.ContainsKey(p.Item2)).ToList();
                if (live.Count > 0)
                {
                    reach.Add(live.Count(Reachable) / (double)live.Count);
                    // One real path setup a second between a pair that is up, then closed.
                    if (TrySetup(live[random.Next(live.Count)]) is { } ok)
                    {
                        tried++;
                        opened += ok ? 1 : 0;
                    }
                }
                progress?.Invoke($"churn {t.TotalSeconds + 1,4:0} s: {down.Count} nodes away, reachable {(reach.Count > 0 ? reach[^1] : 0),6:P1}, setups {opened}/{tried}");
            }
            // Everyone comes back before the idle window.
            var rest = down.Values.SelectMany(d => d.Links).Distinct().Where(cutLinks.Contains).ToList();
            mesh.Heal(rest);
            churnMean = reach.Count == 0 ? null : reach.Average();
            churnMin = reach.Count == 0 ? null : reach.Min();
            churnSetups = tried == 0 ? null : opened / (double)tried;
        }

        // Steady state: the converged mesh runs on — announcements refreshed every 30 s, records expiring after four
        // refreshes — watched every second, with a real path setup every 5 s. Control traffic is measured over it.
        double? steadyMin = null, steadySetups = null, steadyRate = null;
        if (options.Scenario == "steady-state")
        {
            var lowest = 1.0;
            int tried = 0, opened = 0;
            var steadyBytes = mesh.Bus.BytesDelivered;
            for (var t = 0; t < (int)options.SteadyTime.TotalSeconds; t++)
            {
                mesh.RunFor(TimeSpan.FromSeconds(1));
                lowest = Math.Min(lowest, Reachability());
                if (t % 5 == 4 && pairs.Count > 0 && TrySetup(pairs[random.Next(pairs.Count)]) is { } ok)
                {
                    tried++;
                    opened += ok ? 1 : 0;
                }
                if (t % 10 == 9)
                {
                    samples.Add(new SimSample((mesh.Time.Elapsed - poweredUp).TotalSeconds, Reachability(), mesh.Bus.BytesDelivered));
                    progress?.Invoke($"steady {t + 1,4} s: lowest reachability {lowest,6:P1}, setups {opened}/{tried}");
                }
            }
            steadyMin = lowest;
            steadySetups = tried == 0 ? null : opened / (double)tried;
            steadyRate = (mesh.Bus.BytesDelivered - steadyBytes) / options.SteadyTime.TotalSeconds / nodes;
        }

        // Traffic: paths between sampled pairs carry datagrams (pings, answered by the far end) at a steady rate;
        // the relays count, receipt and settle what they forward, as on a real mesh.
        double? delivery = null, relaysPaid = null;
        long? settled = null;
        var flows = new List<(int From, NodeAddress To)>();
        if (traffic)
        {
            foreach (var (from, to) in pairs.Take(options.Setups))
            {
                if (mesh.Nodes[from].Agent is not { } agent)
                    continue;
                try
                {
                    mesh.Run(() => agent.OpenPathAsync(addresses[to], query, CancellationToken.None), TimeSpan.FromSeconds(10));
                    flows.Add((from, addresses[to]));
                }
                catch (Exception e) when (e is Node.NodeRequestException or TimeoutException or NoRouteException)
                {
                    progress?.Invoke($"flow {from} -> {to} has no path: {e.Message}");
                }
            }
            var pings = new List<Task>();
            var every = TimeSpan.FromTicks(TimeSpan.TicksPerSecond / Math.Max(1, options.TrafficRate));
            for (var t = TimeSpan.Zero; t < options.TrafficTime; t += every)
            {
                foreach (var (from, to) in flows)
                {
                    var node = mesh.Nodes[from].Node;
                    pings.Add(mesh.Scheduler.Start(() => node.PingAsync(to, options.TrafficSize, TimeSpan.FromSeconds(2), CancellationToken.None)));
                }
                mesh.RunFor(every);
            }
            mesh.RunUntil(() => pings.All(p => p.IsCompleted), TimeSpan.FromSeconds(5));
            // Two settlement rounds (every 2 s) after the last receipts (every second).
            mesh.RunFor(TimeSpan.FromSeconds(5));
            delivery = pings.Count == 0 ? null : pings.Count(p => p.IsCompletedSuccessfully) / (double)pings.Count;
            var relays = flows.SelectMany(f => mesh.Nodes[f.From].Agent!.Opened.Where(p => p.Request.Destination == f.To)
                .SelectMany(p => p.Request.Nodes.Skip(1).SkipLast(1))).Distinct().Select(a => mesh.Nodes[mesh.IndexOf(a.ToString())]).ToList();
            settled = mesh.Nodes.Sum(h => Math.Max(0, h.Ledger.BalanceOf(h.Node.Address)));
            relaysPaid = relays.Count == 0 ? null : relays.Count(r => r.Ledger.BalanceOf(r.Node.Address) > 0) / (double)relays.Count;
            progress?.Invoke($"traffic: {flows.Count} flows, {pings.Count:N0} datagrams, {delivery:P2} answered; relays paid {relaysPaid:P0}, {settled:N0} micro-units settled");
        }

        // The idle mesh's control traffic.
        var before = mesh.Bus.BytesDelivered;
        var step = TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerSecond, options.IdleWindow.Ticks / 12));
        for (var idle = TimeSpan.Zero; idle < options.IdleWindow; idle += step)
        {
            mesh.RunFor(TimeSpan.FromTicks(Math.Min(step.Ticks, (options.IdleWindow - idle).Ticks)));
            var sample = new SimSample((mesh.Time.Elapsed - poweredUp).TotalSeconds, Reachability(), mesh.Bus.BytesDelivered);
            samples.Add(sample);
            progress?.Invoke($"idle    {Math.Min(options.IdleWindow.TotalSeconds, (idle + step).TotalSeconds),7:0.0} s of {options.IdleWindow.TotalSeconds:0} s  reachable {sample.Reachability,6:P1}  control {(mesh.Bus.BytesDelivered - before) / 1e6,8:0.0} MB  real {real.GetElapsedTime(started).TotalSeconds,6:0.0} s");
        }
        // In steady state, over the whole watch (announcement refreshes and setups included), not a short idle tail.
        var controlRate = steadyRate ?? (mesh.Bus.BytesDelivered - before) / options.IdleWindow.TotalSeconds / nodes;
        var memory = GC.GetTotalMemory(forceFullCollection: true) / nodes;
        var finalReach = Reachability();
        setupMs.Sort();
        return new SimReport(nodes, options.Edges is null ? options.Topology : "edges", options.Scenario, options.Seed, links.Count, finders.Count, finalReach, to95, to99,
            Percentile(setupMs, 0.5), Percentile(setupMs, 0.99), stretch.Count == 0 ? null : stretch.Average(), controlRate, memory, real.GetElapsedTime(started).TotalSeconds, samples)
        {
            PairsBeyondHopLimit = beyond / (double)sampled.Count,
            BusEventsDropped = mesh.Bus.DroppedEvents,
            RepairP50Ms = Percentile(repairMs, 0.5),
            RepairP99Ms = Percentile(repairMs, 0.99),
            Repaired = kept.Count == 0 ? null : repairMs.Count / (double)kept.Count,
            SetUp = options.Scenario == "concurrent-setups" ? concurrentSetups / (double)Math.Max(1, Math.Min(options.Setups, pairs.Count)) : null,
            PartitionReachability = partitionReach,
            HealSeconds = healSeconds,
            ChurnReachabilityMean = churnMean,
            ChurnReachabilityMin = churnMin,
            ChurnSetupSuccess = churnSetups,
            SteadyReachabilityMin = steadyMin,
            SteadySetupSuccess = steadySetups,
            DeliveryRatio = delivery,
            Flows = traffic ? flows.Count : null,
            SettledMicroUnits = settled,
            RelaysPaid = relaysPaid,
        };
    }

    private static double? Percentile(List<double> sorted, double p) =>
        sorted.Count == 0 ? null : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Count) - 1, 0, sorted.Count - 1)];
}
