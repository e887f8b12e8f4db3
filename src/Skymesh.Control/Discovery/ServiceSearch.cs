using System.Text.Json;
using Skymesh.Control.Bus;
using Skymesh.Control.Topology;
using Skymesh.Identity;

namespace Skymesh.Control.Discovery;

/// <summary>Which services a node looks for.</summary>
public sealed record ServiceQuery
{
    /// <summary>Only offers of this kind; null for every kind.</summary>
    public ServiceKind? Kind { get; init; }

    /// <summary>Only apps of this name (exact, case-sensitive); null for any.</summary>
    public string? Name { get; init; }

    /// <summary>The most an offer may cost per MiB in all — the service's price and the relays' on the way; null for no cap.</summary>
    public ulong? MaxPrice { get; init; }

    /// <summary>The cheapest this many offers at most (1 to <see cref="MaxLimit"/>).</summary>
    public int Limit { get; init; } = MaxLimit;

    public const int MaxLimit = 100;
}

/// <summary>
/// A service offered by another node, and what reaching it costs from the node that asked: the cheapest path there (the
/// relays' prices summed, ties to the lower latency), its hops, and the sum of its links' announced round trips.
/// </summary>
/// <param name="Path">The nodes of that path, the asking node first and <paramref name="Node"/> last.</param>
public sealed record ServiceOffer(NodeAddress Node, ServiceEntry Service, DateTimeOffset Expires, int Hops, ulong RttMicroseconds, ulong PathPrice, IReadOnlyList<NodeAddress> Path)
{
    public ServiceKind Kind => Service.Kind;

    public string Name => Service.Name;

    public ushort Port => Service.Port;

    /// <summary>The service's own price per MiB.</summary>
    public uint PricePerMiB => Service.PricePerMiB;

    public string Region => Service.Region;

    public uint MaxMbps => Service.MaxMbps;

    public ushort MaxSessions => Service.MaxSessions;

    /// <summary>The service's price and the relays' prices on the way, per MiB: what offers are sorted by.</summary>
    public ulong TotalPrice => Service.PricePerMiB + PathPrice;
}

/// <summary>Offers from the records and the graph one process keeps (a node that is its own route finder, or a dedicated finder).</summary>
public static class ServiceSearch
{
    /// <summary>
    /// The offers matching <paramref name="query"/> that <paramref name="source"/> reaches, with the cost of reaching each,
    /// cheapest in all first (ties: the lower latency, then fewer hops). The source's own offers and offers on nodes it has
    /// no path to are left out.
    /// </summary>
    public static IReadOnlyList<ServiceOffer> Find(ServiceDirectory directory, TopologyGraph graph, NodeAddress source, ServiceQuery query)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(query);
        if (query.Limit is < 1 or > ServiceQuery.MaxLimit)
            throw new ArgumentException($"A service query asks for 1 to {ServiceQuery.MaxLimit} offers.", nameof(query));
        var matching = directory.Matching(query.Kind, query.Name).Where(m => m.Record.Node != source).ToList();
        if (matching.Count == 0)
            return [];
        var paths = graph.CheapestPaths(source, matching.Select(m => m.Record.Node));
        var offers = new List<ServiceOffer>();
        foreach (var (record, entry) in matching)
        {
            if (!paths.TryGetValue(record.Node, out var path))
                continue;
            var offer = new ServiceOffer(record.Node, entry, record.Expires, path.Hops, path.RttMicroseconds, path.Price, path.Nodes);
            if (query.MaxPrice is { } cap && offer.TotalPrice > cap)
                continue;
            offers.Add(offer);
        }
        return Sorted(offers, query.Limit);
    }

    /// <summary>Cheapest in all first; ties by latency, hops, then node, kind and name so that the order is the same every time.</summary>
    internal static List<ServiceOffer> Sorted(IEnumerable<ServiceOffer> offers, int limit) =>
        [.. offers.OrderBy(o => o.TotalPrice).ThenBy(o => o.RttMicroseconds).ThenBy(o => o.Hops)
            .ThenBy(o => o.Node.ToString(), StringComparer.Ordinal).ThenBy(o => o.Kind).ThenBy(o => o.Name, StringComparer.Ordinal)
            .Take(limit)];
}

/// <summary>Where a control agent finds services: its own records and graph, or a dedicated route finder over the control bus.</summary>
public interface IServiceFinder
{
    Task<IReadOnlyList<ServiceOffer>> FindAsync(NodeAddress source, ServiceQuery query, CancellationToken cancellationToken);
}

/// <summary>Services from the records and the graph this process keeps.</summary>
public sealed class LocalServiceFinder(ServiceDirectory directory, TopologyGraph graph) : IServiceFinder
{
    public Task<IReadOnlyList<ServiceOffer>> FindAsync(NodeAddress source, ServiceQuery query, CancellationToken cancellationToken) =>
        Task.FromResult(ServiceSearch.Find(directory, graph, source, query));
}

/// <summary>A service query as it travels to a finder (JSON, like <see cref="RouteQueryMessage"/>); the source is the caller the bus proved.</summary>
public sealed record ServiceQueryMessage(string? Kind, string? Name, ulong? MaxPrice, int? Limit);

/// <summary>One offer in a finder's answer: the service it names is in the node's signed record among the answer's records.</summary>
public sealed record ServiceOfferMessage(string Node, string Kind, string Name, int Hops, ulong RttMicroseconds, ulong PathPrice, IReadOnlyList<string> Path);

/// <summary>A finder's answer: the signed records of the nodes offered (base64), and the offers, cheapest first.</summary>
public sealed record ServiceAnswerMessage(IReadOnlyList<string> Records, IReadOnlyList<ServiceOfferMessage> Offers);

/// <summary>The finder did not answer a service query, or its answer could not be used.</summary>
public sealed class ServiceQueryException : Exception
{
    public ServiceQueryException()
    {
    }

    public ServiceQueryException(string message)
        : base(message)
    {
    }

    public ServiceQueryException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// Services from a dedicated route finder, asked over the control bus. The finder sends the signed records themselves,
/// and this checks each (signature, expiry, and that it holds the offer), so a finder can withhold offers or misstate a
/// path's cost, but cannot invent an offer or change its price.
/// </summary>
public sealed class RemoteServiceFinder(IControlBus bus, NodeAddress finder, TimeProvider? time = null) : IServiceFinder
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    public NodeAddress Finder { get; } = finder;

    /// <summary>Offers in finders' answers left out because their record was missing, malformed, expired, forged or did not hold them.</summary>
    public long Discarded => Interlocked.Read(ref _discarded);

    private long _discarded;

    public async Task<IReadOnlyList<ServiceOffer>> FindAsync(NodeAddress source, ServiceQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        var request = new ServiceQueryMessage(query.Kind is { } asked ? new ServiceEntry(asked).KindName : null, query.Name, query.MaxPrice, query.Limit);
        ReadOnlyMemory<byte> answer;
        try
        {
            answer = await bus.RequestAsync(Finder, RouteTopics.ServiceQueryMethod, JsonSerializer.SerializeToUtf8Bytes(request, Json), null, cancellationToken);
        }
        catch (ControlBusException e)
        {
            throw new ServiceQueryException($"the route finder {Finder} did not answer the service query: {e.Message}", e);
        }
        ServiceAnswerMessage parsed;
        try
        {
            parsed = JsonSerializer.Deserialize<ServiceAnswerMessage>(answer.Span, Json) ?? throw new JsonException("empty");
        }
        catch (JsonException e)
        {
            throw new ServiceQueryException($"the route finder {Finder} sent an answer that is not a service answer: {e.Message}", e);
        }
        var now = _time.GetUtcNow();
        var records = new Dictionary<NodeAddress, ServiceRecord>();
        foreach (var text in parsed.Records ?? [])
        {
            if (text is null || !TryDecode(text, out var bytes) || ServiceRecord.TryParse(bytes, out var record) != ServiceRecordError.None
                || record!.Expires <= now || !record.Verify())
                continue;
            if (!records.TryGetValue(record.Node, out var held) || held.Sequence < record.Sequence)
                records[record.Node] = record;
        }
        var offers = new List<ServiceOffer>();
        foreach (var offer in parsed.Offers ?? [])
        {
            if (offer is null || !NodeAddress.TryParse(offer.Node, out var node) || !ServiceEntry.TryParseKind(offer.Kind, out var kind)
                || !records.TryGetValue(node, out var record) || record.Entries.FirstOrDefault(e => e.Kind == kind && e.Name == (offer.Name ?? "")) is not { } entry
                || (query.Kind is { } wanted && kind != wanted) || (query.Name is { } name && entry.Name != name)
                || !TryPath(offer.Path, source, node, out var path))
            {
                Interlocked.Increment(ref _discarded);
                continue;
            }
            var found = new ServiceOffer(node, entry, record.Expires, path.Count - 1, offer.RttMicroseconds, offer.PathPrice, path);
            if (query.MaxPrice is { } cap && found.TotalPrice > cap)
                continue;
            offers.Add(found);
        }
        return ServiceSearch.Sorted(offers, query.Limit);
    }

    private static bool TryDecode(string text, out byte[] bytes)
    {
        bytes = [];
        if (text.Length > (ServiceRecord.MaxEntries * 128 + 256) * 4 / 3)
            return false;
        try
        {
            bytes = Convert.FromBase64String(text);
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }

    /// <summary>A path from <paramref name="source"/> to <paramref name="node"/> that visits no node twice.</summary>
    private static bool TryPath(IReadOnlyList<string>? text, NodeAddress source, NodeAddress node, out List<NodeAddress> path)
    {
        path = [];
        if (text is null || text.Count < 2 || text.Count > PathQuery.HopLimit + 1)
            return false;
        foreach (var hop in text)
        {
            if (!NodeAddress.TryParse(hop, out var address))
                return false;
            path.Add(address);
        }
        return path[0] == source && path[^1] == node && path.Distinct().Count() == path.Count;
    }
}
