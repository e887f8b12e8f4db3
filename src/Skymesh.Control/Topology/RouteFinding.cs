using System.Text.Json;
using System.Threading.Channels;
using Skymesh.Control.Bus;
using Skymesh.Control.Discovery;
using Skymesh.Identity;

namespace Skymesh.Control.Topology;

/// <summary>Where a control agent gets its paths: its own graph, or a dedicated route finder over the control bus.</summary>
public interface IRouteFinder
{
    Task<FoundPath> FindAsync(NodeAddress source, NodeAddress destination, PathQuery query, CancellationToken cancellationToken);
}

/// <summary>Paths from a graph this process keeps.</summary>
public sealed class LocalRouteFinder(TopologyGraph graph) : IRouteFinder
{
    public Task<FoundPath> FindAsync(NodeAddress source, NodeAddress destination, PathQuery query, CancellationToken cancellationToken) =>
        Task.FromResult(graph.FindPath(source, destination, query));
}

/// <summary>The control-bus topics and method of route finding (docs/control-plane.md).</summary>
public static class RouteTopics
{
    /// <summary>Link announcements (MCAST); route finders and nodes that keep the whole graph subscribe with presence.</summary>
    public const string Links = "mesh.links";

    /// <summary>Membership only: nodes that use a dedicated finder join it, so finders see them leave.</summary>
    public const string Members = "mesh.members";

    /// <summary>
    /// Dedicated route finders and the nodes that use them join it, without presence: a finder publishes
    /// <see cref="FinderHello"/> there when it starts (and after every reconnect), and each node announces again. No
    /// member hears the others join, so a mesh of N nodes costs N membership events here, not N².
    /// </summary>
    public const string Finders = "mesh.finders";

    /// <summary>What a finder publishes on <see cref="Finders"/> when it starts: four bytes, the bus proves who sent them.</summary>
    public static ReadOnlySpan<byte> FinderHello => "SKF1"u8;

    /// <summary>Signed service records (MCAST, docs/control-plane.md "Service discovery"); whoever keeps the graph subscribes, without presence.</summary>
    public const string Services = "mesh.services";

    public const string QueryMethod = "route-query";

    /// <summary>A node that uses a dedicated finder asks it for the services of the mesh with this method.</summary>
    public const string ServiceQueryMethod = "service-query";

    /// <summary>A finder's answer when no path meets the query (apart from the bus's own 404: the finder is not there).</summary>
    public const int NoRouteStatus = 422;
}

/// <summary>A path query as it travels to a finder (JSON: not signed, not on a hot path).</summary>
public sealed record RouteQueryMessage(string Destination, string Policy, int MinHops, int MaxHops, ulong? MaxPrice, IReadOnlyList<string> Avoid,
    IReadOnlyList<string[]> AvoidLinks, IReadOnlyList<string>? Via);

public sealed record RouteAnswerMessage(IReadOnlyList<string> Nodes, ulong RttMicroseconds, ulong Price, uint BottleneckKbps, IReadOnlyList<uint> LinkRtts);

/// <summary>Paths from a dedicated route finder, asked over the control bus; the node keeps no graph of its own.</summary>
public sealed class RemoteRouteFinder(IControlBus bus, NodeAddress finder) : IRouteFinder
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public NodeAddress Finder { get; } = finder;

    public async Task<FoundPath> FindAsync(NodeAddress source, NodeAddress destination, PathQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        var request = new RouteQueryMessage(destination.ToString(), query.Policy.ToString(), query.MinHops, query.MaxHops, query.MaxPrice,
            [.. query.Avoid.Select(a => a.ToString())], [.. query.AvoidLinks.Select(l => new[] { l.Item1.ToString(), l.Item2.ToString() })],
            query.Via?.Select(v => v.ToString()).ToList());
        ReadOnlyMemory<byte> answer;
        try
        {
            answer = await bus.RequestAsync(Finder, RouteTopics.QueryMethod, JsonSerializer.SerializeToUtf8Bytes(request, Json), null, cancellationToken);
        }
        catch (ControlBusException e) when (e.Status == RouteTopics.NoRouteStatus)
        {
            throw new NoRouteException(e.Message);
        }
        catch (ControlBusException e)
        {
            throw new NoRouteException($"the route finder {Finder} did not answer: {e.Message}");
        }
        var found = JsonSerializer.Deserialize<RouteAnswerMessage>(answer.Span, Json) ?? throw new NoRouteException("the route finder sent an empty answer");
        return new FoundPath([.. found.Nodes.Select(NodeAddress.Parse)], found.RttMicroseconds, found.Price, found.BottleneckKbps) { LinkRtts = found.LinkRtts };
    }
}

/// <summary>
/// A route finder: it keeps the graph from everyone's announcements and answers path queries over the control bus
/// for the node that asks (the caller, proven by the bus, is the source). Every node can run one for itself; a
/// large mesh runs a few dedicated ones (<c>skymesh finder</c>) so ordinary nodes keep no graph. It keeps the nodes'
/// service records too, and answers service queries with the offers and the cost of reaching each from the caller.
/// </summary>
public sealed class RouteFinderService : IAsyncDisposable
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly IControlBus _bus;
    private readonly CancellationTokenSource _stop = new();
    private readonly ITimer _sweeper;
    private Task _events = Task.CompletedTask;
    private long _queries;

    private RouteFinderService(IControlBus bus, TopologyGraph graph, TimeProvider time)
    {
        _bus = bus;
        Graph = graph;
        Services = new ServiceDirectory(time);
        _sweeper = time.CreateTimer(static s =>
        {
            var service = (RouteFinderService)s!;
            service.Graph.Sweep();
            service.Services.Sweep();
        }, this, TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(10));
    }

    public TopologyGraph Graph { get; }

    /// <summary>The latest valid service record of every node.</summary>
    public ServiceDirectory Services { get; }

    public long Queries => Interlocked.Read(ref _queries);

    public long ServiceQueries => Interlocked.Read(ref _serviceQueries);

    private long _serviceQueries;

    /// <summary>Most bytes of records and offers one answer to a service query holds (a bus message is at most 256 KiB).</summary>
    public const int MaxServiceAnswerBytes = 192 * 1024;

    /// <summary>Starts serving on a bus connection (the finder's own node identity); the service owns it from then on.</summary>
    public static async Task<RouteFinderService> StartAsync(IControlBus bus, TimeProvider? time = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(bus);
        time ??= TimeProvider.System;
        var service = new RouteFinderService(bus, new TopologyGraph(time), time);
        bus.Handle(RouteTopics.QueryMethod, service.AnswerAsync);
        bus.Handle(RouteTopics.ServiceQueryMethod, service.AnswerServicesAsync);
        service._events = Background.Run(service.ReadEventsAsync);
        await bus.SubscribeAsync(RouteTopics.Links, watchMembers: true, cancellationToken);
        // Without presence: a node's records are forgotten when it leaves the links or members topic.
        await bus.SubscribeAsync(RouteTopics.Services, watchMembers: false, cancellationToken);
        await bus.SubscribeAsync(RouteTopics.Members, watchMembers: true, cancellationToken);
        await bus.SubscribeAsync(RouteTopics.Finders, watchMembers: false, cancellationToken);
        // The bus subscribes again before it says it is back, so a hello after a reconnect reaches every node.
        bus.StateChanged += service.OnBusState;
        await bus.PublishAsync(RouteTopics.Finders, RouteTopics.FinderHello.ToArray(), cancellationToken);
        return service;
    }

    private void OnBusState(BusState state)
    {
        if (state == BusState.Connected && !_stop.IsCancellationRequested)
            _ = SayHelloAsync();
    }

    private async Task SayHelloAsync()
    {
        try
        {
            await _bus.PublishAsync(RouteTopics.Finders, RouteTopics.FinderHello.ToArray(), _stop.Token);
        }
        catch (Exception e) when (e is ControlBusException or ObjectDisposedException or OperationCanceledException)
        {
            // Lost again at once: the next reconnect says it again, and nodes refresh their records anyway.
        }
    }

    private ValueTask<ReadOnlyMemory<byte>> AnswerAsync(BusRequest request, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _queries);
        RouteQueryMessage query;
        PathQuery parsed;
        try
        {
            query = JsonSerializer.Deserialize<RouteQueryMessage>(request.Body.Span, Json) ?? throw new JsonException("empty");
            parsed = new PathQuery
            {
                Policy = Enum.Parse<PathPolicy>(query.Policy),
                MinHops = query.MinHops,
                MaxHops = query.MaxHops,
                MaxPrice = query.MaxPrice,
                Avoid = query.Avoid.Select(NodeAddress.Parse).ToHashSet(),
                AvoidLinks = query.AvoidLinks.Where(l => l.Length == 2).Select(l => (NodeAddress.Parse(l[0]), NodeAddress.Parse(l[1]))).ToHashSet(),
                Via = query.Via?.Select(NodeAddress.Parse).ToList(),
            };
        }
        catch (Exception e) when (e is JsonException or FormatException or ArgumentException)
        {
            throw new ControlBusException(ControlBusException.BadRequest, $"malformed route query: {e.Message}");
        }
        try
        {
            var found = Graph.FindPath(request.From, NodeAddress.Parse(query.Destination), parsed);
            var answer = new RouteAnswerMessage([.. found.Nodes.Select(n => n.ToString())], found.RttMicroseconds, found.Price, found.BottleneckKbps, found.LinkRtts);
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(JsonSerializer.SerializeToUtf8Bytes(answer, Json));
        }
        catch (Exception e) when (e is NoRouteException or ArgumentException or FormatException)
        {
            throw new ControlBusException(RouteTopics.NoRouteStatus, e.Message);
        }
    }

    /// <summary>
    /// <c>service-query</c>: the offers matching the query that the caller reaches, cheapest in all first, with the signed
    /// records they come from, so the caller can check them; as many as fit <see cref="MaxServiceAnswerBytes"/>.
    /// </summary>
    private ValueTask<ReadOnlyMemory<byte>> AnswerServicesAsync(BusRequest request, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _serviceQueries);
        ServiceQuery query;
        try
        {
            var message = JsonSerializer.Deserialize<ServiceQueryMessage>(request.Body.Span, Json) ?? throw new JsonException("empty");
            ServiceKind? kind = null;
            if (message.Kind is { } kindName)
                kind = ServiceEntry.TryParseKind(kindName, out var parsedKind) ? parsedKind : throw new FormatException($"\"{kindName}\" is not a service kind (exit, socks, vpn, app)");
            query = new ServiceQuery { Kind = kind, Name = message.Name, MaxPrice = message.MaxPrice, Limit = Math.Clamp(message.Limit ?? ServiceQuery.MaxLimit, 1, ServiceQuery.MaxLimit) };
        }
        catch (Exception e) when (e is JsonException or FormatException)
        {
            throw new ControlBusException(ControlBusException.BadRequest, $"malformed service query: {e.Message}");
        }
        var offers = ServiceSearch.Find(Services, Graph, request.From, query);
        var records = new Dictionary<NodeAddress, string>();
        var answered = new List<ServiceOfferMessage>();
        var size = 64;
        foreach (var offer in offers)
        {
            string? record = null;
            if (!records.ContainsKey(offer.Node))
                record = Convert.ToBase64String(Services.RecordOf(offer.Node)?.Bytes ?? []);
            var message = new ServiceOfferMessage(offer.Node.ToString(), offer.Service.KindName, offer.Name, offer.Hops, offer.RttMicroseconds, offer.PathPrice,
                [.. offer.Path.Select(n => n.ToString())]);
            // What this offer adds to the answer, near enough: its record (once per node), its path and its fields.
            var adds = (record?.Length ?? 0) + 8 + 70 * message.Path.Count + 256;
            if (size + adds > MaxServiceAnswerBytes)
                break;
            size += adds;
            if (record is not null)
                records[offer.Node] = record;
            answered.Add(message);
        }
        var answer = new ServiceAnswerMessage([.. records.Values], answered);
        return ValueTask.FromResult<ReadOnlyMemory<byte>>(JsonSerializer.SerializeToUtf8Bytes(answer, Json));
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
                if (e is BusPublication { Topic: RouteTopics.Links } announcement)
                    Graph.Offer(announcement.Payload.Span);
                else if (e is BusPublication { Topic: RouteTopics.Services } services)
                    Services.Offer(services.Payload.Span);
                else if (e is BusMemberLeft { Topic: RouteTopics.Links or RouteTopics.Members } left)
                {
                    Graph.Forget(left.From);
                    Services.Forget(left.From);
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ChannelClosedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        _bus.StateChanged -= OnBusState;
        await _sweeper.DisposeAsync();
        await Background.CancelAsync(_stop);
        await _bus.DisposeAsync();
        await _events;
        _stop.Dispose();
    }
}
