using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using System.Threading.Channels;
using Skymesh.Control.Bus;
using Skymesh.Control.Discovery;
using Skymesh.Control.Settlement;
using Skymesh.Control.Setup;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Mesh.Links;

namespace Skymesh.Node.Control;

/// <summary>
/// A node's control agent (docs/control-plane.md): on the control bus under the node's address, it announces the
/// node's links and the services it offers, keeps a route finder's graph and the services directory from everyone's
/// records, serves its side of path setup, finds services, and opens, repairs and closes paths for the node. It knows
/// the bus only through <see cref="IControlBus"/>.
/// </summary>
public sealed partial class ControlAgent : IAsyncDisposable
{
    /// <summary>The topic of link announcements.</summary>
    public const string Topic = RouteTopics.Links;

    private readonly MeshNode _node;
    private readonly IControlBus _bus;
    private readonly PathSetupHop _hop;
    private readonly PathSetupSource _source;
    private readonly IRouteFinder _finder;
    private readonly IServiceFinder _serviceFinder;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly AsyncSignal _announceSignal = new();
    private readonly Dictionary<Guid, EstablishedPath> _opened = [];
    private readonly Lock _lock = new();
    private Task _events = Task.CompletedTask;
    private Task _announcer = Task.CompletedTask;
    private ulong _sequence;
    private long _announced;
    private ulong _serviceSequence;
    private long _servicesPublished;
    // Set when the service record is due (at start, on the refresh, when a member joins, a finder says hello, the bus is
    // back or the owner changes the offers); a link that changes refreshes the link announcement alone.
    private int _servicesDue = 1;
    // Whether the last record published offered anything, and until when an empty one is still published after the
    // offers were withdrawn (a record's lifetime: long enough for any receiver that missed the first to hear one).
    private bool _offering;
    private DateTimeOffset _withdrawUntil;

    private ControlAgent(MeshNode node, IControlBus bus, ILogger logger)
    {
        _node = node;
        _bus = bus;
        _logger = logger;
        Graph = new TopologyGraph(node.Time);
        // A route may be back: paths left broken are tried again.
        Graph.RecordAccepted += _ => RequestRepairRetry();
        var table = new NodeHopTable(node);
        _hop = new PathSetupHop(node.Address, table, node.Time);
        _source = new PathSetupSource(node.Key, table, new BusControlCaller(bus), node.Time) { Random = node.Random };
        _finder = node.Options.Finder is { } finder ? new RemoteRouteFinder(bus, finder) : new LocalRouteFinder(Graph);
        Services = new ServiceDirectory(node.Time);
        _serviceFinder = node.Options.Finder is { } servicesFinder ? new RemoteServiceFinder(bus, servicesFinder, node.Time) : new LocalServiceFinder(Services, Graph);
    }

    /// <summary>True when paths come from a dedicated route finder and this node keeps no graph of the mesh.</summary>
    public bool UsesFinder => _finder is RemoteRouteFinder;

    public TopologyGraph Graph { get; }

    /// <summary>
    /// The latest valid service record of every node this agent hears (its own included); with a dedicated finder it
    /// hears none, and holds its own record only.
    /// </summary>
    public ServiceDirectory Services { get; }

    /// <summary>Service records this agent signed and published.</summary>
    public long ServicesPublished => Interlocked.Read(ref _servicesPublished);

    /// <summary>Receipts, credit and the ledger with this node's neighbours.</summary>
    public SettlementService Settlement { get; private set; } = null!;

    public long Announced => Interlocked.Read(ref _announced);

    /// <summary>Paths this node set up through the control plane, by setup id.</summary>
    public IReadOnlyCollection<EstablishedPath> Opened
    {
        get
        {
            lock (_lock)
                return [.. _opened.Values];
        }
    }

    /// <summary>Starts the agent on <paramref name="bus"/> (logged in as the node); the agent owns the bus from then on.</summary>
    public static async Task<ControlAgent> StartAsync(MeshNode node, IControlBus bus, ILedger ledger, ILoggerFactory? loggerFactory = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(bus);
        if (bus.Self != node.Address)
            throw new ArgumentException($"The bus connection speaks for {bus.Self}, not for this node {node.Address}.", nameof(bus));
        var agent = new ControlAgent(node, bus, (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Skymesh.Node.Control"));
        agent.Settlement = new SettlementService(node, bus, agent.Graph, ledger, (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Skymesh.Node.Settlement"));
        SetupService.Register(bus, agent._hop);
        bus.Handle(SetupMethods.Broken, agent.OnBrokenAsync);
        node.RepairHandler = agent.OnOwnLinkDown;
        // After a broker restart (or any reconnect) the bus knows nothing: announce again at once.
        bus.StateChanged += agent.OnBusState;
        node.Switch.LinkUp += agent.OnLinkChange;
        node.Switch.LinkDown += agent.OnLinkDown;
        // A new price is announced at once.
        node.Operator.SettingsChanged += agent.RequestAnnouncement;
        agent._events = Background.Run(agent.ReadEventsAsync);
        agent._announcer = Background.Run(agent.AnnounceLoopAsync);
        try
        {
            if (agent.UsesFinder)
            {
                // Announce without hearing anyone (memory does not grow with the mesh); be seen to leave; hear a finder's
                // hello when one starts, to announce to it at once — without presence, so no node hears the others join.
                await bus.SubscribeAsync(RouteTopics.Members, watchMembers: false, cancellationToken);
                await bus.SubscribeAsync(RouteTopics.Finders, watchMembers: false, cancellationToken);
            }
            else
            {
                await bus.SubscribeAsync(Topic, watchMembers: true, cancellationToken);
                // No presence here: a node's records are forgotten when it leaves the links topic.
                await bus.SubscribeAsync(RouteTopics.Services, watchMembers: false, cancellationToken);
            }
        }
        catch
        {
            // The bus went away between the login and the subscriptions: leave nothing running behind.
            await agent.DisposeAsync();
            throw;
        }
        agent.RequestAnnouncement();
        Log.Started(agent._logger, bus.Describe);
        return agent;
    }

    private void OnLinkChange(Link link) => _announceSignal.Release();

    private void OnBusState(BusState state)
    {
        if (state == BusState.Reconnecting && !_stop.IsCancellationRequested)
            _node.Events.Append(Events.NodeEventKind.ControlLost, $"lost the control bus at {_bus.Describe}; reconnecting");
        if (state == BusState.Connected)
        {
            _node.Events.Append(Events.NodeEventKind.ControlConnected, $"back on the control bus at {_bus.Describe}");
            RequestAnnouncement();
            Rejoined?.Invoke();
        }
        else if (state == BusState.Closed && !_stop.IsCancellationRequested)
            GaveUp?.Invoke();
    }

    /// <summary>Raised when the agent's bus connection is back after it was lost.</summary>
    public event Action? Rejoined;

    /// <summary>Raised when the agent's bus connection closes for good (the broker refused its re-login, or dropped it).</summary>
    public event Action? GaveUp;

    /// <summary>Where the agent's bus connection stands.</summary>
    public BusState BusState => _bus.State;

    /// <summary>The bus this agent is on.</summary>
    public IControlBus Bus => _bus;

    private void OnLinkDown(Link link, string reason)
    {
        _announceSignal.Release();
        if (link.Peer is not { } neighbour)
            return;
        // Tell the source of every path that crossed this link, so it can repair the path at once.
        foreach (var (pathId, source) in _hop.PathsThrough(link.Id))
        {
            // This node's own end of the path (it is the destination) is kept: the source repairs the path and moves
            // both ends onto the new one, streams and all. Releasing it here would drop the stream state and leave
            // the source's end talking to nobody.
            if (_node.PathEnds.Any(p => p.Spec.SetupId == pathId))
                _hop.Forget(pathId);
            else
                _hop.Release(_node.Address, pathId);
            if (source == _node.Address)
                continue;
            var body = new byte[16 + 2 * NodeAddress.Length];
            pathId.TryWriteBytes(body, bigEndian: true, out _);
            _node.Address.WriteTo(body.AsSpan(16));
            neighbour.WriteTo(body.AsSpan(48));
            _ = Background.Run(async () =>
            {
                try
                {
                    await _bus.RequestAsync(source, SetupMethods.Broken, body, null, _stop.Token);
                }
                catch (Exception e) when (e is ControlBusException or OperationCanceledException or ObjectDisposedException)
                {
                    Log.BrokenNotSent(_logger, source.ToString(), e.Message);
                }
            });
        }
    }

    /// <summary>The node's own first link under a path went down: repair it if this agent set it up.</summary>
    private bool OnOwnLinkDown(int pathId, string why)
    {
        var end = _node.PathEnds.FirstOrDefault(p => p.Id == pathId);
        if (end?.Spec.SetupId is not { } setupId)
            return false;
        // The destination's end waits for the source to repair the path (or for its own failure timeout).
        if (!end.Spec.Initiator)
            return true;
        EstablishedPath? path;
        lock (_lock)
        {
            if (!_opened.TryGetValue(setupId, out path))
                return false;
        }
        _ = Background.Run(() => RepairAsync(setupId, (_node.Address, path.Request.Nodes[1]), why));
        return true;
    }

    private ValueTask<ReadOnlyMemory<byte>> OnBrokenAsync(BusRequest request, CancellationToken cancellationToken)
    {
        var from = request.From;
        if (request.Body.Length != 16 + 2 * NodeAddress.Length)
            throw new ControlBusException(ControlBusException.BadRequest, "path-broken is a path id and two node addresses");
        var setupId = new Guid(request.Body.Span[..16], bigEndian: true);
        var a = NodeAddress.FromBytes(request.Body.Span.Slice(16, 32));
        var b = NodeAddress.FromBytes(request.Body.Span.Slice(48, 32));
        EstablishedPath? path;
        lock (_lock)
            _opened.TryGetValue(setupId, out path);
        // Only a node on the path may say it broke, and only about its own link.
        if (path is null || !path.Request.Nodes.Contains(from) || (from != a && from != b))
            throw new ControlBusException(ControlBusException.NotFound, "no such path from this source, or the caller is not on it");
        _ = Background.Run(() => RepairAsync(setupId, (a, b), $"{from} reported its link to {(from == a ? b : a)} down"));
        return ValueTask.FromResult(ReadOnlyMemory<byte>.Empty);
    }

    /// <summary>Sets up a new path around a failed link and moves both ends onto it; streams lose nothing.</summary>
    /// <param name="failed">The dead link to route around; null when retrying a broken path (the graph already shows what is down).</param>
    private async Task RepairAsync(Guid setupId, (NodeAddress, NodeAddress)? failed, string why)
    {
        EstablishedPath? old;
        lock (_lock)
        {
            if (!_opened.Remove(setupId, out old))
                return; // Already repaired (two hops reported the same break), or closed.
        }
        var destination = old.Request.Destination;
        var end = _node.PathEnds.FirstOrDefault(p => p.Spec.SetupId == setupId);
        try
        {
            // Any working path will do, up to the longest a path may be: a path opened long (a query allowing more than
            // the default ten hops) must not become unrepairable because the repair asked for less.
            var query = new PathQuery { MaxHops = PathQuery.HopLimit };
            if (failed is { } dead)
                query = query with { AvoidLinks = new HashSet<(NodeAddress, NodeAddress)> { dead } };
            var found = await _finder.FindAsync(_node.Address, destination, query, _stop.Token);
            var repaired = await _source.SetupAsync(found.Nodes, old.Request.MaxPricePerHop, _stop.Token, replaces: old.Request);
            lock (_lock)
                _opened[repaired.Request.PathId] = repaired;
            Log.PathRepaired(_logger, destination.ToString(), why, found.Hops, repaired.SetupTime.TotalMilliseconds);
            await _source.ReleaseHopsAsync(old.Request, _stop.Token);
        }
        catch (Exception e) when (e is NoRouteException or PathSetupException or NodeRequestException or OperationCanceledException)
        {
            Log.RepairFailed(_logger, destination.ToString(), why, e.Message);
            // Without the bus (its connection went with the same relay, say) the repair could not even be asked for: the
            // path end is left as it is, so its streams wait (up to their own failure timeout) for the retry that comes
            // when the bus is back, rather than failing at once. Otherwise no way around is known: its streams are told.
            if (e is NoRouteException || _bus.State == BusState.Connected)
                end?.Endpoint.Break($"{why}; no repair: {e.Message}");
            // Kept: when the mesh changes (a route may be back) the path is repaired again by itself.
            if (!_stop.IsCancellationRequested && end is not null)
            {
                lock (_lock)
                    _unrepaired[setupId] = old;
            }
        }
    }

    // Paths this node set up that broke and could not be repaired yet, by their last setup id.
    private readonly Dictionary<Guid, EstablishedPath> _unrepaired = [];
    private int _retryScheduled;

    /// <summary>The mesh changed: try again, soon and once for many changes, to repair the paths left broken.</summary>
    private void RequestRepairRetry()
    {
        lock (_lock)
        {
            if (_unrepaired.Count == 0)
                return;
        }
        if (Interlocked.Exchange(ref _retryScheduled, 1) != 0)
            return;
        _ = Background.Run(async () =>
        {
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(200), _node.Time, _stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            Volatile.Write(ref _retryScheduled, 0);
            List<(Guid, EstablishedPath)> broken;
            lock (_lock)
            {
                broken = [.. _unrepaired.Select(p => (p.Key, p.Value))];
                _unrepaired.Clear();
            }
            foreach (var (setupId, old) in broken)
            {
                // Closed meanwhile: nothing to repair.
                if (!_node.PathEnds.Any(p => p.Spec.SetupId == setupId))
                    continue;
                lock (_lock)
                    _opened[setupId] = old;
                await RepairAsync(setupId, failed: null, "the mesh changed");
            }
        });
    }

    /// <summary>
    /// Path ends this node holds as a path's destination that broke and were not repaired (their source gave up, or
    /// is gone): removed, so they do not pile up. A repair that comes later installs a fresh end.
    /// </summary>
    private async Task RemoveStaleEndsAsync()
    {
        foreach (var end in _node.PathEnds.Where(p => p.Spec.SetupId is not null && !p.Spec.Initiator && p.Endpoint.BrokenBy is not null).ToList())
        {
            if (end.Spec.SetupId is { } setupId)
                _hop.Forget(setupId);
            await _node.RemovePathAsync(end.Id);
        }
    }

    /// <summary>Asks for a fresh announcement of the links and the services soon (changes close together share one).</summary>
    public void RequestAnnouncement()
    {
        Volatile.Write(ref _servicesDue, 1);
        _announceSignal.Release();
    }

    private async Task AnnounceLoopAsync()
    {
        var refresh = _node.Options.AnnounceInterval;
        // Each refresh comes after 75 to 100 % of the interval, drawn anew: nodes that started together (a power cut
        // ending, a simulation) drift apart instead of announcing in one burst every interval for ever.
        var jitter = _node.Random is { } seeded ? new Random(seeded.Next()) : new Random();
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                using (var timer = new CancellationTokenSource(refresh * (0.75 + 0.25 * jitter.NextDouble()), _node.Time))
                using (var either = CancellationTokenSource.CreateLinkedTokenSource(timer.Token, _stop.Token))
                {
                    try
                    {
                        await _announceSignal.WaitAsync(either.Token);
                    }
                    catch (OperationCanceledException) when (!_stop.IsCancellationRequested)
                    {
                        // The refresh interval passed without a change: announce anyway, the services too.
                        Volatile.Write(ref _servicesDue, 1);
                    }
                }
                // Let changes that come together (several links up at start) go out in one record.
                await Task.Delay(TimeSpan.FromMilliseconds(50), _node.Time, _stop.Token);
                while (_announceSignal.CurrentCount > 0)
                    await _announceSignal.WaitAsync(_stop.Token);
                await AnnounceAsync(_stop.Token);
                if (Interlocked.Exchange(ref _servicesDue, 0) == 1)
                {
                    try
                    {
                        await AnnounceServicesAsync(_stop.Token);
                    }
                    catch
                    {
                        Volatile.Write(ref _servicesDue, 1);
                        throw;
                    }
                }
                Graph.Sweep();
                Services.Sweep();
                await RemoveStaleEndsAsync();
                RequestRepairRetry();
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is ControlBusException or ObjectDisposedException)
            {
                // The bus is away: it reconnects by itself, and the next round announces again.
                Log.AnnounceFailed(_logger, e.Message);
            }
        }
    }

    /// <summary>Signs and publishes the node's links.</summary>
    public async Task AnnounceAsync(CancellationToken cancellationToken)
    {
        var price = _node.Price;
        var links = _node.Switch.Links
            .Where(l => l.State == LinkState.Up && l.Peer is not null)
            .GroupBy(l => l.Peer!.Value).Select(g => g.OrderBy(l => l.Id).First())
            .Take(LinkAnnouncement.MaxLinks)
            .Select(l => new AnnouncedLink(l.Peer!.Value, (uint)Math.Min(uint.MaxValue, (l.Rtt ?? TimeSpan.FromMilliseconds(1)).TotalMicroseconds),
                (uint)(l.Loss * 1_000_000), _node.Options.CapacityKbps, price, AnnouncedLinkState.Up))
            .ToList();
        var now = _node.Time.GetUtcNow();
        ulong sequence;
        lock (_lock)
            sequence = _sequence = Math.Max(_sequence + 1, (ulong)now.ToUnixTimeMilliseconds());
        var record = LinkAnnouncement.Create(_node.Key, sequence, now, _node.Options.AnnounceInterval * 4, links);
        Graph.Offer(record);
        await _bus.PublishAsync(Topic, record.Bytes, cancellationToken);
        Interlocked.Increment(ref _announced);
        // A node that asks a dedicated finder hears no announcements, yet it must know what each neighbour charges to pay
        // it: in that mode every node also tells its neighbours its price, in a note of eight bytes (the bus proves who
        // sent it) — not its whole record, which for a well-linked node is kilobytes to each of many neighbours.
        if (UsesFinder)
        {
            var note = PriceNote.Write(price);
            foreach (var peer in _node.Switch.Links.Where(l => l.State == LinkState.Up && l.Peer is not null).Select(l => l.Peer!.Value).Distinct())
                _ = SendPriceAsync(peer, note);
        }
    }

    /// <summary>
    /// What the node offers now: the owner's services, less an exit or socks offer while the node has no exit rules
    /// (they may have been taken away since the offer was made).
    /// </summary>
    private List<ServiceEntry> Offered()
    {
        var exits = _node.Operator.Exits.Rules.Count > 0;
        return [.. _node.Operator.Services.Where(s => exits || s.Kind is not (ServiceKind.Exit or ServiceKind.Socks))];
    }

    /// <summary>
    /// Signs and publishes the node's service record (docs/control-plane.md, "Service discovery") when it offers
    /// something, or withdrew its offers less than a record's lifetime ago (then the record is empty); returns it, or null
    /// when the node had nothing to say.
    /// </summary>
    public async Task<ServiceRecord?> AnnounceServicesAsync(CancellationToken cancellationToken)
    {
        var offered = Offered();
        var now = _node.Time.GetUtcNow();
        var lifetime = _node.Options.AnnounceInterval * 4;
        ulong sequence;
        bool changed;
        lock (_lock)
        {
            if (offered.Count == 0 && !_offering && now >= _withdrawUntil)
                return null;
            changed = _offering != offered.Count > 0 || !offered.SequenceEqual(Services.RecordOf(_node.Address)?.Entries ?? []);
            if (_offering && offered.Count == 0)
                _withdrawUntil = now + lifetime;
            _offering = offered.Count > 0;
            sequence = _serviceSequence = Math.Max(_serviceSequence + 1, (ulong)now.ToUnixTimeMilliseconds());
        }
        var record = ServiceRecord.Create(_node.Key, sequence, now, lifetime, offered);
        Services.Offer(record);
        if (changed)
            Log.Offering(_logger, offered.Count == 0 ? "nothing (the earlier offers are withdrawn)" : string.Join(", ", offered));
        await _bus.PublishAsync(RouteTopics.Services, record.Bytes, cancellationToken);
        Interlocked.Increment(ref _servicesPublished);
        return record;
    }

    /// <summary>
    /// The services of other nodes that match <paramref name="query"/> and that this node reaches, each with the cost of
    /// the cheapest path to it (hops, the sum of the links' announced round trips, the relays' prices), cheapest in all
    /// first — the service's price and the relays' — and ties to the lower latency. From this node's own records, or from
    /// its dedicated route finder (the RPC <c>service-query</c>) when it uses one. Offers on nodes it has no path to are
    /// left out.
    /// </summary>
    /// <exception cref="NodeRequestException">The query is invalid, or the route finder did not answer.</exception>
    public async Task<IReadOnlyList<ServiceOffer>> FindServicesAsync(ServiceQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Limit is < 1 or > ServiceQuery.MaxLimit)
            throw new NodeRequestException(NodeError.Invalid, $"a service query asks for 1 to {ServiceQuery.MaxLimit} offers, not {query.Limit}");
        try
        {
            return await _serviceFinder.FindAsync(_node.Address, query, cancellationToken);
        }
        catch (ServiceQueryException e)
        {
            throw new NodeRequestException(NodeError.Unavailable, e.Message);
        }
    }

    private async Task SendPriceAsync(NodeAddress neighbour, ReadOnlyMemory<byte> note)
    {
        try
        {
            await _bus.SendAsync(neighbour, note, _stop.Token);
        }
        catch (Exception e) when (e is ControlBusException or ObjectDisposedException or OperationCanceledException)
        {
            // The neighbour is away: the next refresh tells it again.
        }
    }

    private async Task ReadEventsAsync()
    {
        try
        {
            // Not ReadAllAsync: its awaits leave the caller's scheduler (a simulation's, on virtual time).
            var events = _bus.Events;
            while (await events.WaitToReadAsync(_stop.Token))
            {
                if (!events.TryRead(out var e))
                    continue;
                switch (e)
                {
                    case BusDirectMessage direct when PriceNote.TryRead(direct.Payload.Span, out var price):
                        Settlement.OnNeighbourPrice(direct.From, price);
                        break;
                    case BusDirectMessage direct when direct.Payload.Span.StartsWith("SKR1"u8):
                        Settlement.OnReceipt(direct.From, direct.Payload.Span);
                        break;
                    case BusPublication { Topic: RouteTopics.Finders } hello when hello.Payload.Span.SequenceEqual(RouteTopics.FinderHello):
                        RequestAnnouncement();
                        break;
                    case BusPublication { Topic: Topic } announcement:
                        var result = Graph.Offer(announcement.Payload.Span);
                        if (result != AnnouncementError.None)
                        {
                            Log.AnnouncementRefused(_logger, announcement.From.ToString(), result.ToString());
                            _node.Events.Append(Events.NodeEventKind.AnnouncementRefused, $"announcement from {announcement.From} refused: {result}", announcement.From.ToString());
                        }
                        else
                        {
                            _node.Events.Append(Events.NodeEventKind.AnnouncementAccepted, $"announcement from {announcement.From} accepted", announcement.From.ToString());
                        }
                        break;
                    case BusPublication { Topic: RouteTopics.Services } services:
                        var refused = Services.Offer(services.Payload.Span);
                        if (refused != ServiceRecordError.None)
                            Log.ServiceRecordRefused(_logger, services.From.ToString(), refused.ToString());
                        break;
                    case BusMemberJoined { Topic: Topic }:
                        // A newcomer knows nobody yet: everyone announces again (soon, and once for several joins).
                        RequestAnnouncement();
                        break;
                    case BusMemberLeft { Topic: Topic } left:
                        Graph.Forget(left.From);
                        Services.Forget(left.From);
                        break;
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ChannelClosedException)
        {
        }
    }

    /// <summary>Finds a path to <paramref name="destination"/> and sets it up; the node then has a path end to it.</summary>
    public async Task<PathInfo> OpenPathAsync(NodeAddress destination, PathQuery? query, CancellationToken cancellationToken)
    {
        query ??= new PathQuery();
        var found = await FindAsync(destination, query, cancellationToken);
        // Dearer than the owner's cap: the price policy, or the owner, says whether to pay or look for a cheaper path.
        if (query.MaxPrice is null && !await _node.Operator.ConfirmPriceAsync(destination, found, cancellationToken))
            found = await FindAsync(destination, query with { MaxPrice = _node.Operator.Policies.MaxPathPrice }, cancellationToken);
        EstablishedPath path;
        try
        {
            path = await _source.SetupAsync(found.Nodes, (uint)Math.Min(uint.MaxValue, query.MaxPrice ?? uint.MaxValue), cancellationToken);
        }
        catch (PathSetupException e)
        {
            throw new NodeRequestException(NodeError.Refused, e.Message);
        }
        lock (_lock)
            _opened[path.Request.PathId] = path;
        Log.PathOpened(_logger, destination.ToString(), found.Hops, path.SetupTime.TotalMilliseconds);
        return _node.Paths.First(p => _node.PathEnds.First(e => e.Id == p.Id).Spec.SetupId == path.Request.PathId);
    }

    /// <summary>
    /// Traceroute over the mesh: finds the path to <paramref name="destination"/>, then for each hop in turn sets up
    /// a path to that node along the same relays, pings over it and closes it.
    /// </summary>
    public async Task<IReadOnlyList<TraceHop>> TraceAsync(NodeAddress destination, int probes, CancellationToken cancellationToken)
    {
        var found = await FindAsync(destination, new PathQuery(), cancellationToken);
        var hops = new List<TraceHop>();
        for (var i = 1; i < found.Nodes.Count; i++)
        {
            var target = found.Nodes[i];
            var announced = i - 1 < found.LinkRtts.Count ? found.LinkRtts[i - 1] : 0;
            var times = new List<double>();
            string? error = null;
            try
            {
                var path = await OpenPathAsync(target, new PathQuery { Via = found.Nodes.Skip(1).Take(i - 1).ToList() }, cancellationToken);
                try
                {
                    for (var p = 0; p < probes; p++)
                    {
                        try
                        {
                            times.Add((await _node.PingPathAsync(path.Id, 64, TimeSpan.FromSeconds(2), cancellationToken)).TotalMicroseconds);
                        }
                        catch (NodeRequestException e) when (e.Error == NodeError.Timeout)
                        {
                            error = "no answer";
                        }
                    }
                }
                finally
                {
                    await ClosePathAsync(path.Id, cancellationToken);
                }
            }
            catch (NodeRequestException e)
            {
                error = e.Message;
            }
            hops.Add(new TraceHop(i, target.ToString(), announced, times, error));
        }
        return hops;
    }

    private async Task<FoundPath> FindAsync(NodeAddress destination, PathQuery query, CancellationToken cancellationToken)
    {
        try
        {
            return await _finder.FindAsync(_node.Address, destination, query, cancellationToken);
        }
        catch (NoRouteException e)
        {
            throw new NodeRequestException(NodeError.NotFound, e.Message);
        }
    }

    /// <summary>Tears down a path this node opened: every hop releases it.</summary>
    public async Task<bool> ClosePathAsync(int pathId, CancellationToken cancellationToken)
    {
        var end = _node.PathEnds.FirstOrDefault(p => p.Id == pathId);
        if (end?.Spec.SetupId is not { } setupId)
            return false;
        EstablishedPath? path;
        lock (_lock)
        {
            if (!_opened.Remove(setupId, out path))
                return false;
        }
        await _source.CloseAsync(path, cancellationToken);
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        _node.RepairHandler = null;
        _bus.StateChanged -= OnBusState;
        _node.Switch.LinkUp -= OnLinkChange;
        _node.Switch.LinkDown -= OnLinkDown;
        _node.Operator.SettingsChanged -= RequestAnnouncement;
        await Background.CancelAsync(_stop);
        await Settlement.DisposeAsync();
        await _announcer;
        await _bus.DisposeAsync();
        await _events;
        _stop.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 700, Level = LogLevel.Information, Message = "Control agent on the control bus at {Bus}")]
        public static partial void Started(ILogger logger, string bus);

        [LoggerMessage(EventId = 701, Level = LogLevel.Warning, Message = "Announcement not sent: {Reason}")]
        public static partial void AnnounceFailed(ILogger logger, string reason);

        [LoggerMessage(EventId = 702, Level = LogLevel.Debug, Message = "Announcement from {From} refused: {Reason}")]
        public static partial void AnnouncementRefused(ILogger logger, string from, string reason);

        [LoggerMessage(EventId = 704, Level = LogLevel.Information, Message = "Path to {Destination} repaired ({Why}): {Hops} hops, set up in {Milliseconds:0.00} ms")]
        public static partial void PathRepaired(ILogger logger, string destination, string why, int hops, double milliseconds);

        [LoggerMessage(EventId = 705, Level = LogLevel.Warning, Message = "Path to {Destination} lost ({Why}) and not repaired: {Reason}")]
        public static partial void RepairFailed(ILogger logger, string destination, string why, string reason);

        [LoggerMessage(EventId = 706, Level = LogLevel.Debug, Message = "Could not tell {Source} that its path broke: {Reason}")]
        public static partial void BrokenNotSent(ILogger logger, string source, string reason);

        [LoggerMessage(EventId = 703, Level = LogLevel.Information, Message = "Path to {Destination} opened: {Hops} hops, set up in {Milliseconds:0.00} ms")]
        public static partial void PathOpened(ILogger logger, string destination, int hops, double milliseconds);

        [LoggerMessage(EventId = 707, Level = LogLevel.Debug, Message = "Service record from {From} refused: {Reason}")]
        public static partial void ServiceRecordRefused(ILogger logger, string from, string reason);

        [LoggerMessage(EventId = 708, Level = LogLevel.Information, Message = "Offering the mesh: {Services}")]
        public static partial void Offering(ILogger logger, string services);
    }
}

/// <summary>One hop of a traceroute: the node, the link RTT its predecessor announced, and the measured round trips from the source.</summary>
public sealed record TraceHop(int Hop, string Node, uint AnnouncedLinkRttMicroseconds, IReadOnlyList<double> RoundTripsMicroseconds, string? Error);

/// <summary>
/// "SKP1" and a price per MiB (big endian): what a neighbour charges, told over the bus by a node whose neighbours keep
/// no graph (docs/control-plane.md, "Settlement").
/// </summary>
internal static class PriceNote
{
    public const int Length = 8;

    public static byte[] Write(uint price)
    {
        var note = new byte[Length];
        "SKP1"u8.CopyTo(note);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(note.AsSpan(4), price);
        return note;
    }

    public static bool TryRead(ReadOnlySpan<byte> bytes, out uint price)
    {
        price = 0;
        if (bytes.Length != Length || !bytes.StartsWith("SKP1"u8))
            return false;
        price = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(bytes[4..]);
        return true;
    }
}
