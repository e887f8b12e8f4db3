using System.Text.Json;
using System.Threading.Channels;
using Skymesh.Identity;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Control.Topology;

/// <summary>Where a control agent gets its paths: its own graph, or a dedicated route finder over SSMP.</summary>
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

/// <summary>The SSMP topics and RPC of route finding (docs/control-plane.md).</summary>
public static class RouteTopics
{
    /// <summary>Link announcements (MCAST); route finders and nodes that keep the whole graph subscribe with presence.</summary>
    public const string Links = "mesh.links";

    /// <summary>Membership only: nodes that use a dedicated finder join it, so finders see them leave.</summary>
    public const string Members = "mesh.members";

    /// <summary>Dedicated route finders join it; nodes using finders watch it to announce again when one starts.</summary>
    public const string Finders = "mesh.finders";

    public const string QueryMethod = "route-query";
}

/// <summary>A path query as it travels to a finder (JSON: not signed, not on a hot path).</summary>
public sealed record RouteQueryMessage(string Destination, string Policy, int MinHops, int MaxHops, ulong? MaxPrice, IReadOnlyList<string> Avoid,
    IReadOnlyList<string[]> AvoidLinks, IReadOnlyList<string>? Via);

public sealed record RouteAnswerMessage(IReadOnlyList<string> Nodes, ulong RttMicroseconds, ulong Price, uint BottleneckKbps, IReadOnlyList<uint> LinkRtts);

/// <summary>Paths from a dedicated route finder, asked over SSMP RPC; the node keeps no graph of its own.</summary>
public sealed class RemoteRouteFinder(SsmpPeer peer, NodeAddress finder) : IRouteFinder
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
            answer = await peer.CallAsync(Finder.ToString(), RouteTopics.QueryMethod, JsonSerializer.SerializeToUtf8Bytes(request, Json), cancellationToken: cancellationToken);
        }
        catch (SsmpRpcException e) when (e.Status == 404)
        {
            throw new NoRouteException(e.Message);
        }
        catch (Exception e) when (e is SsmpRpcException or SsmpException)
        {
            throw new NoRouteException($"the route finder {Finder} did not answer: {e.Message}");
        }
        var found = JsonSerializer.Deserialize<RouteAnswerMessage>(answer.Span, Json) ?? throw new NoRouteException("the route finder sent an empty answer");
        return new FoundPath([.. found.Nodes.Select(NodeAddress.Parse)], found.RttMicroseconds, found.Price, found.BottleneckKbps) { LinkRtts = found.LinkRtts };
    }
}

/// <summary>
/// A route finder: it keeps the graph from everyone's announcements and answers path queries over SSMP RPC for
/// the node that asks (the caller's SSMP id, proven by its key login, is the source). Every node can run one
/// for itself; a large mesh runs a few dedicated ones (<c>skymesh finder</c>) so ordinary nodes keep no graph.
/// </summary>
public sealed class RouteFinderService : IAsyncDisposable
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly SsmpPeer _peer;
    private readonly CancellationTokenSource _stop = new();
    private readonly ITimer _sweeper;
    private readonly AnnouncementReceiver _receiver;
    private Task _events = Task.CompletedTask;
    private long _queries;

    private RouteFinderService(SsmpPeer peer, TopologyGraph graph, TimeProvider time)
    {
        _peer = peer;
        Graph = graph;
        _receiver = new AnnouncementReceiver(graph, time);
        _sweeper = time.CreateTimer(static s => ((RouteFinderService)s!).Graph.Sweep(), this, TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(10));
    }

    public TopologyGraph Graph { get; }

    public long Queries => Interlocked.Read(ref _queries);

    /// <summary>Starts serving on a connected peer (logged in under the finder's own key).</summary>
    public static async Task<RouteFinderService> StartAsync(SsmpPeer peer, TimeProvider? time = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(peer);
        time ??= TimeProvider.System;
        var service = new RouteFinderService(peer, new TopologyGraph(time), time);
        peer.Handle(RouteTopics.QueryMethod, service.AnswerAsync);
        service._events = Task.Run(service.ReadEventsAsync);
        await peer.Client.SubscribeAsync(RouteTopics.Links, presence: true, cancellationToken);
        await peer.Client.SubscribeAsync(RouteTopics.Members, presence: true, cancellationToken);
        await peer.Client.SubscribeAsync(RouteTopics.Finders, cancellationToken: cancellationToken);
        return service;
    }

    private ValueTask<ReadOnlyMemory<byte>> AnswerAsync(SsmpRpcRequest request, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _queries);
        if (!NodeAddress.TryParse(request.From, out var source))
            throw new SsmpRpcException(403, "route queries are for nodes logged in under their address");
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
            throw new SsmpRpcException(SsmpRpcException.BadRequest, $"malformed route query: {e.Message}");
        }
        try
        {
            var found = Graph.FindPath(source, NodeAddress.Parse(query.Destination), parsed);
            var answer = new RouteAnswerMessage([.. found.Nodes.Select(n => n.ToString())], found.RttMicroseconds, found.Price, found.BottleneckKbps, found.LinkRtts);
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(JsonSerializer.SerializeToUtf8Bytes(answer, Json));
        }
        catch (Exception e) when (e is NoRouteException or ArgumentException or FormatException)
        {
            throw new SsmpRpcException(404, e.Message);
        }
    }

    private async Task ReadEventsAsync()
    {
        try
        {
            await foreach (var e in _peer.OtherEvents.ReadAllAsync(_stop.Token))
            {
                if (e.Verb == SsmpVerb.Mcast && e.Target == RouteTopics.Links)
                    _receiver.Receive(e.From, e.Payload.Span);
                else if (e.Verb == SsmpVerb.Unsubscribe && e.Target is RouteTopics.Links or RouteTopics.Members && NodeAddress.TryParse(e.From, out var gone))
                    Graph.Forget(gone);
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
        await _sweeper.DisposeAsync();
        await _stop.CancelAsync();
        await _peer.DisposeAsync();
        await _events;
        _stop.Dispose();
    }
}
