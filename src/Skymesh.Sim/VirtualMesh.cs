using Skymesh.Control.Bus;
using Skymesh.Identity;
using Skymesh.Mesh.Interfaces;
using Skymesh.Control.Topology;
using Skymesh.Mesh.Links;
using Skymesh.Node;
using Skymesh.Node.Events;
using Skymesh.Node.Hosting;

namespace Skymesh.Sim;

/// <summary>One event of a simulated run: when (virtual time since the start), at which node (its index), what.</summary>
public sealed record TraceEntry(TimeSpan At, int Node, NodeEventKind Kind, string Detail)
{
    public override string ToString() => $"{At.TotalMilliseconds,10:0.000} ms  n{Node,-4} {Kind,-20} {Detail}";
}

/// <summary>
/// A mesh of real nodes — each put together by the node host, with its switch, links, path endpoints, control agent,
/// route finder, path setup and settlement — in one process on virtual time: in-memory interfaces on one network,
/// the in-memory control bus, keys drawn from the seed, ledgers in memory, no local API. Everything runs on one
/// thread (<see cref="SimulationScheduler"/>) and the clock moves only when nothing is left to do now
/// (<see cref="VirtualTime"/>), so the same seed gives the same run — the same <see cref="Trace"/> — every time,
/// and no test waits on the real clock.
/// </summary>
public sealed class VirtualMesh : IAsyncDisposable
{
    /// <summary>The instant every simulation starts at, so that timestamps repeat too.</summary>
    public static readonly DateTimeOffset Epoch = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private const string Network = "sim";
    private readonly Random _random;
    private readonly List<NodeHost> _hosts = [];
    private readonly List<TraceEntry> _trace = [];
    private readonly Dictionary<string, int> _index = [];
    private int _disposed;

    /// <param name="recordTrace">Keep every node's events in <see cref="Trace"/> (a large mesh may not want to).</param>
    /// <param name="busLatency">How long a control message takes from one node to another through the bus.</param>
    /// <param name="busQueueLimit">Events each bus connection may have waiting before more are dropped (<see cref="MemoryBusNetwork.EventQueueLimit"/>).</param>
    public VirtualMesh(int seed, bool recordTrace = true, TimeSpan busLatency = default, int busQueueLimit = MemoryBusNetwork.DefaultEventQueueLimit)
    {
        RecordTrace = recordTrace;
        // Thousands of nodes in one process check the same announcements: each triple is checked once, as each real
        // node (in its own process) would check it once.
        VerifiedSignatures.Enable();
        Seed = seed;
        _random = new Random(seed);
        Time = new VirtualTime(Epoch);
        Scheduler = new SimulationScheduler();
        Networks = new MemoryNetworks(Time, seed);
        Bus = new MemoryBusNetwork(Time, busLatency, busQueueLimit);
    }

    public int Seed { get; }

    public bool RecordTrace { get; }

    /// <summary>Dedicated route finders started with <see cref="AddFinders"/>.</summary>
    public IReadOnlyList<RouteFinderService> Finders => _finders;

    private readonly List<RouteFinderService> _finders = [];

    public VirtualTime Time { get; }

    public SimulationScheduler Scheduler { get; }

    public MemoryNetworks Networks { get; }

    /// <summary>The one in-process network every node's interface is on.</summary>
    public MemoryNetwork Links => Networks[Network];

    public MemoryBusNetwork Bus { get; }

    public IReadOnlyList<NodeHost> Nodes => _hosts;

    /// <summary>Every node's events, in the order they happened.</summary>
    public IReadOnlyList<TraceEntry> Trace => _trace;

    /// <summary>
    /// Starts <paramref name="count"/> nodes, each with <paramref name="extraJson"/> added to its node.json (e.g.
    /// <c>, "price": 1000</c>); they join the bus at once (links come with <see cref="Link"/>).
    /// </summary>
    public void AddNodes(int count, string extraJson = "", Func<int, string>? perNode = null)
    {
        for (var i = 0; i < count; i++)
        {
            var index = _hosts.Count;
            var own = perNode?.Invoke(index) ?? "";
            var options = NodeOptions.Parse($$"""
                {
                  "interfaces": [ { "name": "m0", "type": "memory", "network": "{{Network}}", "mtu": 1400 } ],
                  "keepaliveSeconds": 1,
                  "deadAfterSeconds": 5
                  {{extraJson}}{{own}}
                }
                """, Path.Combine(Path.GetTempPath(), "skymesh-sim-never-written"));
            var keys = MemoryKeyStore.From(_random);
            var nodeRandom = new Random(_random.Next());
            var host = Run(() => new NodeHostBuilder(options)
                .UseTime(Time)
                .UseRandom(nodeRandom)
                .UseKeyStore(keys)
                .UseInterfaces(new InterfaceFactory(Networks))
                .UseControlBus(new MemoryBusConnector(Bus))
                .UseMemoryLedger()
                .WithoutApi()
                .StartAsync(CancellationToken.None), TimeSpan.FromSeconds(10));
            _index[host.Node.Address.ToString()] = index;
            if (RecordTrace)
                host.Node.Events.Appended += e => _trace.Add(new TraceEntry(Time.Elapsed, index, e.Kind, e.Detail));
            _hosts.Add(host);
        }
    }

    /// <summary>The index of the node with this address, for reading traces.</summary>
    public int IndexOf(string address) => _index.TryGetValue(address, out var index) ? index : -1;

    public MemoryEndPoint EndPointOf(int node) => (MemoryEndPoint)_hosts[node].Node.Interfaces["m0"].LocalEndPoint;

    /// <summary>Links node <paramref name="a"/> to node <paramref name="b"/> (the handshake runs on virtual time).</summary>
    public Link Link(int a, int b, Impairment? impairment = null) => LinkAll([(a, b)], impairment)[0];

    /// <summary>
    /// Starts <paramref name="count"/> dedicated route finders on the bus (keys from the seed); nodes added after
    /// them can name one in <c>"finder"</c> and keep no graph of their own.
    /// </summary>
    public IReadOnlyList<Skymesh.Identity.NodeAddress> AddFinders(int count)
    {
        var added = new List<Skymesh.Identity.NodeAddress>();
        for (var i = 0; i < count; i++)
        {
            var key = MemoryKeyStore.From(_random).LoadOrCreate(out _);
            var finder = Run(() => RouteFinderService.StartAsync(Bus.Connect(key), Time), TimeSpan.FromSeconds(10));
            _finders.Add(finder);
            added.Add(key.Address);
        }
        return added;
    }

    /// <summary>Links many pairs at once: every handshake starts at the same instant, as when a whole mesh powers up.</summary>
    /// <returns>The links, at the first node of each pair, in the order given.</returns>
    public IReadOnlyList<Link> LinkAll(IEnumerable<(int A, int B)> links, Impairment? impairment = null)
    {
        var pending = new List<Task<Link>>();
        foreach (var (a, b) in links)
        {
            if (impairment is not null)
            {
                Links.SetImpairment(EndPointOf(a), EndPointOf(b), impairment);
                Links.SetImpairment(EndPointOf(b), EndPointOf(a), impairment);
            }
            var from = _hosts[a].Node;
            var to = _hosts[b].Node;
            var at = EndPointOf(b);
            pending.Add(Scheduler.Start(() => from.ConnectAsync("m0", at, to.Address, CancellationToken.None)));
        }
        if (!RunUntil(() => pending.All(t => t.IsCompleted), TimeSpan.FromSeconds(120)))
            throw new TimeoutException("Not every link came up within 120 s of virtual time.");
        return [.. pending.Select(t => t.GetAwaiter().GetResult())];
    }

    /// <summary>Cuts the link between two nodes for good: frames stop both ways and both ends take the link down.</summary>
    public void Cut(int a, int b)
    {
        Links.SetCut(EndPointOf(a), EndPointOf(b), cut: true);
        Run(() =>
        {
            if (_hosts[a].Node.FindLink(_hosts[b].Node.Address) is { } link)
                _hosts[a].Node.Switch.Disconnect(link, "cut by the simulation");
            return Task.FromResult(true);
        }, TimeSpan.FromSeconds(1));
    }

    /// <summary>Mends cut links: frames flow again and each pair links anew (the handshakes run at the same instant).</summary>
    public void Heal(IReadOnlyCollection<(int A, int B)> pairs)
    {
        foreach (var (a, b) in pairs)
            Links.SetCut(EndPointOf(a), EndPointOf(b), cut: false);
        if (pairs.Count > 0)
            LinkAll(pairs);
    }

    /// <summary>Runs <paramref name="work"/> on the mesh's thread and moves the clock until it completes (within <paramref name="limit"/> of virtual time).</summary>
    public T Run<T>(Func<Task<T>> work, TimeSpan limit)
    {
        var task = Scheduler.Start(work);
        if (!RunUntil(() => task.IsCompleted, limit))
            throw new TimeoutException($"The work did not complete within {limit.TotalSeconds} s of virtual time.");
        return task.GetAwaiter().GetResult();
    }

    /// <summary>Lets the mesh run for <paramref name="duration"/> of virtual time.</summary>
    public void RunFor(TimeSpan duration) => RunUntil(static () => false, duration);

    /// <summary>
    /// Runs the mesh until <paramref name="condition"/> holds (checked whenever nothing is left to do at the current
    /// instant) or <paramref name="limit"/> of virtual time has passed; true when the condition held.
    /// </summary>
    public bool RunUntil(Func<bool> condition, TimeSpan limit)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var end = Time.Elapsed + limit;
        while (true)
        {
            Scheduler.RunUntilIdle();
            if (condition())
                return true;
            var next = Time.NextDue;
            // No timer will ever fire: only work that left this thread (and will come back) can change anything.
            if (next is null && Scheduler.WaitForWork(TimeSpan.FromSeconds(5)))
                continue;
            var to = next is { } due && due <= end ? due : end;
            Scheduler.Start(() => Time.AdvanceTo(to));
            Scheduler.RunUntilIdle();
            if (to >= end)
            {
                Scheduler.RunUntilIdle();
                return condition();
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        foreach (var host in _hosts)
        {
            var stopping = Scheduler.Start(() => host.DisposeAsync().AsTask());
            RunUntil(() => stopping.IsCompleted, TimeSpan.FromSeconds(60));
            await stopping;
        }
        foreach (var finder in _finders)
        {
            var stopping = Scheduler.Start(() => finder.DisposeAsync().AsTask());
            RunUntil(() => stopping.IsCompleted, TimeSpan.FromSeconds(60));
            await stopping;
        }
    }
}
