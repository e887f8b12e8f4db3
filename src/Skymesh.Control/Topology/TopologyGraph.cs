using Skymesh.Identity;

namespace Skymesh.Control.Topology;

public enum PathPolicy
{
    /// <summary>Smallest sum of link round-trip times.</summary>
    LowestLatency,

    /// <summary>Smallest sum of the relays' prices; ties go to the lower latency.</summary>
    LowestPrice,

    /// <summary>Largest bottleneck capacity; ties go to the lower latency.</summary>
    MostBandwidth,
}

/// <summary>What a path must satisfy. Hops count links: a path through two relays has three hops.</summary>
public sealed record PathQuery
{
    public PathPolicy Policy { get; init; } = PathPolicy.LowestLatency;

    public int MinHops { get; init; } = 1;

    public int MaxHops { get; init; } = 10;

    /// <summary>Nodes the path must not pass through.</summary>
    public IReadOnlySet<NodeAddress> Avoid { get; init; } = new HashSet<NodeAddress>();

    /// <summary>Links the path must not use (in either direction), e.g. one just reported down.</summary>
    public IReadOnlySet<(NodeAddress, NodeAddress)> AvoidLinks { get; init; } = new HashSet<(NodeAddress, NodeAddress)>();

    /// <summary>Most the relays together may charge per MiB; null for no cap.</summary>
    public ulong? MaxPrice { get; init; }

    /// <summary>The exact relays, in order; null lets the finder choose.</summary>
    public IReadOnlyList<NodeAddress>? Via { get; init; }

    /// <summary>Largest hop count any query may ask for.</summary>
    public const int HopLimit = 16;
}

/// <summary>A path the finder chose: every node from source to destination, and what the path costs.</summary>
public sealed record FoundPath(IReadOnlyList<NodeAddress> Nodes, ulong RttMicroseconds, ulong Price, uint BottleneckKbps)
{
    /// <summary>Each link's round-trip time as announced, source side first (what traceroute shows beside its measurements).</summary>
    public IReadOnlyList<uint> LinkRtts { get; init; } = [];

    public int Hops => Nodes.Count - 1;
}

/// <summary>The finder could not satisfy a query; <see cref="Exception.Message"/> says which constraint failed.</summary>
public sealed class NoRouteException : Exception
{
    public NoRouteException()
    {
    }

    public NoRouteException(string message)
        : base(message)
    {
    }

    public NoRouteException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// The mesh as the announcements describe it: the latest valid record of every node, and the paths through
/// it. A link is usable only when both its ends announce it up in unexpired records, so no node can invent a
/// link to another. Offering a record does the cheap checks (form, time, sequence) before the signature.
/// Safe for one writer and many readers at once.
/// </summary>
public sealed class TopologyGraph : SignedRecordBook<LinkAnnouncement, AnnouncementError>
{
    public TopologyGraph(TimeProvider? time = null, TimeSpan? clockTolerance = null)
        : base(time, clockTolerance)
    {
    }

    /// <summary>Nodes whose records are held (expired ones until the next sweep included).</summary>
    public int NodeCount => Count;

    /// <summary>Checks and keeps a record as it arrived off the wire.</summary>
    public AnnouncementError Offer(ReadOnlySpan<byte> bytes)
    {
        var error = LinkAnnouncement.TryParse(bytes, out var record);
        return error != AnnouncementError.None ? Refuse(error) : Offer(record!);
    }

    /// <summary>The usable links of <paramref name="node"/>: announced up by both ends, in unexpired records.</summary>
    public IReadOnlyList<(NodeAddress Peer, AnnouncedLink Out, AnnouncedLink Back)> Neighbours(NodeAddress node)
    {
        var now = Time.GetUtcNow();
        lock (Sync)
            return NeighboursLocked(node, now);
    }

    private List<(NodeAddress, AnnouncedLink, AnnouncedLink)> NeighboursLocked(NodeAddress node, DateTimeOffset now)
    {
        if (!Held.TryGetValue(node, out var record) || record.Expires <= now)
            return [];
        var result = new List<(NodeAddress, AnnouncedLink, AnnouncedLink)>(record.Links.Count);
        foreach (var link in record.Links)
        {
            if (link.State != AnnouncedLinkState.Up || !Held.TryGetValue(link.Peer, out var other) || other.Expires <= now)
                continue;
            if (other.TryGetUpLinkTo(node, out var back))
                result.Add((link.Peer, link, back));
        }
        return result;
    }

    /// <summary>The best path from <paramref name="source"/> to <paramref name="destination"/> under <paramref name="query"/>.</summary>
    /// <exception cref="NoRouteException">No path satisfies the query; the message says why.</exception>
    public FoundPath FindPath(NodeAddress source, NodeAddress destination, PathQuery? query = null)
    {
        query ??= new PathQuery();
        if (source == destination)
            throw new ArgumentException("The source and the destination are the same node.", nameof(destination));
        if (query.MinHops < 1 || query.MaxHops < query.MinHops || query.MaxHops > PathQuery.HopLimit)
            throw new ArgumentException($"Hops must satisfy 1 <= min <= max <= {PathQuery.HopLimit}.", nameof(query));
        if (query.Avoid.Contains(source) || query.Avoid.Contains(destination))
            throw new ArgumentException("The source or the destination is among the avoided nodes.", nameof(query));
        var now = Time.GetUtcNow();
        lock (Sync)
        {
            if (!Held.ContainsKey(source))
                throw new NoRouteException($"No announcement from the source {source}: it is not part of the known mesh.");
            if (!Held.ContainsKey(destination))
                throw new NoRouteException($"No announcement from {destination}: it is unknown, or gone.");
            return query.Via is { } via ? Check(source, destination, via, query, now) : Search(source, destination, query, now);
        }
    }

    private FoundPath Check(NodeAddress source, NodeAddress destination, IReadOnlyList<NodeAddress> via, PathQuery query, DateTimeOffset now)
    {
        var nodes = new List<NodeAddress> { source };
        nodes.AddRange(via);
        nodes.Add(destination);
        if (nodes.Distinct().Count() != nodes.Count)
            throw new NoRouteException("The given hops visit a node twice.");
        if (nodes.Count - 1 > PathQuery.HopLimit)
            throw new NoRouteException($"The given hops make a path longer than {PathQuery.HopLimit} hops.");
        ulong rtt = 0, price = 0;
        var bottleneck = uint.MaxValue;
        for (var i = 0; i + 1 < nodes.Count; i++)
        {
            var (_, link, back) = NeighboursLocked(nodes[i], now).FirstOrDefault(n => n.Item1 == nodes[i + 1]);
            if (link == default)
                throw new NoRouteException($"There is no working link between {nodes[i]} and {nodes[i + 1]}.");
            rtt += Math.Max(link.RttMicroseconds, back.RttMicroseconds);
            if (i > 0)
                price += link.PricePerMiB;
            bottleneck = Math.Min(bottleneck, Math.Min(link.CapacityKbps, back.CapacityKbps));
        }
        if (query.MaxPrice is { } cap && price > cap)
            throw new NoRouteException($"The given hops charge {price} per MiB, above the cap of {cap}.");
        return new FoundPath(nodes, rtt, price, bottleneck) { LinkRtts = LinkRttsLocked(nodes, now) };
    }

    /// <summary>
    /// The cheapest path (the relays' prices summed; ties go to the lower latency) from <paramref name="source"/> to each
    /// of <paramref name="destinations"/> within <paramref name="maxHops"/>, found in one search rather than one per
    /// destination: what a listing of many services needs. Destinations with no such path (and the source) are left out.
    /// Each path is the one <see cref="FindPath"/> would choose under <see cref="PathPolicy.LowestPrice"/> with the same
    /// hop limit, up to ties.
    /// </summary>
    public IReadOnlyDictionary<NodeAddress, FoundPath> CheapestPaths(NodeAddress source, IEnumerable<NodeAddress> destinations, int maxHops = 10)
    {
        ArgumentNullException.ThrowIfNull(destinations);
        if (maxHops is < 1 or > PathQuery.HopLimit)
            throw new ArgumentOutOfRangeException(nameof(maxHops), maxHops, $"Hops are 1 to {PathQuery.HopLimit}.");
        var found = new Dictionary<NodeAddress, FoundPath>();
        var wanted = new HashSet<NodeAddress>(destinations);
        wanted.Remove(source);
        if (wanted.Count == 0)
            return found;
        var now = Time.GetUtcNow();
        lock (Sync)
        {
            if (!Held.ContainsKey(source))
                return found;
            // The search of FindPath with the lowest-price policy and no price cap or lower hop limit, so the same pruning
            // holds: a label that reaches a node with no fewer hops than one settled there can lead to nothing better.
            var queue = new PriorityQueue<Label, (ulong, ulong, int)>();
            var fewestHops = new Dictionary<NodeAddress, int>();
            var neighbours = new Dictionary<NodeAddress, List<(NodeAddress, AnnouncedLink, AnnouncedLink)>>();
            queue.Enqueue(new Label(source, 0, 0, 0, uint.MaxValue, null), (0, 0, 0));
            while (wanted.Count > 0 && queue.TryDequeue(out var label, out _))
            {
                if (fewestHops.TryGetValue(label.Node, out var fewest) && label.Hops >= fewest)
                    continue;
                fewestHops[label.Node] = label.Hops;
                if (wanted.Remove(label.Node))
                {
                    var nodes = new List<NodeAddress>();
                    for (var l = label; l is not null; l = l.Parent)
                        nodes.Add(l.Node);
                    nodes.Reverse();
                    found[label.Node] = new FoundPath(nodes, label.Rtt, label.Price, label.Bottleneck) { LinkRtts = LinkRttsLocked(nodes, now) };
                }
                if (label.Hops == maxHops)
                    continue;
                if (!neighbours.TryGetValue(label.Node, out var links))
                    neighbours[label.Node] = links = NeighboursLocked(label.Node, now);
                foreach (var (peer, link, back) in links)
                {
                    if (fewestHops.TryGetValue(peer, out var reached) && reached <= label.Hops + 1)
                        continue;
                    var next = new Label(peer, label.Hops + 1, label.Rtt + Math.Max(link.RttMicroseconds, back.RttMicroseconds),
                        label.Price + (label.Hops > 0 ? link.PricePerMiB : 0u), Math.Min(label.Bottleneck, Math.Min(link.CapacityKbps, back.CapacityKbps)), label);
                    queue.Enqueue(next, (next.Price, next.Rtt, next.Hops));
                }
            }
        }
        return found;
    }

    private List<uint> LinkRttsLocked(List<NodeAddress> nodes, DateTimeOffset now) =>
        [.. nodes.Zip(nodes.Skip(1)).Select(pair =>
        {
            var (_, link, back) = NeighboursLocked(pair.First, now).FirstOrDefault(n => n.Item1 == pair.Second);
            return Math.Max(link.RttMicroseconds, back.RttMicroseconds);
        })];

    private sealed class Label(NodeAddress node, int hops, ulong rtt, ulong price, uint bottleneck, Label? parent)
    {
        public NodeAddress Node { get; } = node;
        public int Hops { get; } = hops;
        public ulong Rtt { get; } = rtt;
        public ulong Price { get; } = price;
        public uint Bottleneck { get; } = bottleneck;
        public Label? Parent { get; } = parent;

        public bool Visits(NodeAddress node)
        {
            for (var l = this; l is not null; l = l.Parent)
            {
                if (l.Node == node)
                    return true;
            }
            return false;
        }
    }

    /// <summary>
    /// A best-first search over (node, hops so far), so that hop limits are exact; a label never revisits a
    /// node, and labels over the price cap are pruned. With a cap this is a heuristic (the exact problem is
    /// NP-hard), without one it is exact for each policy.
    /// </summary>
    private FoundPath Search(NodeAddress source, NodeAddress destination, PathQuery query, DateTimeOffset now)
    {
        var queue = new PriorityQueue<Label, (ulong, ulong, int)>();
        var settled = new HashSet<(NodeAddress, int)>();
        // Each node's usable links, worked out once per search rather than once per hop count it is reached at.
        var neighbours = new Dictionary<NodeAddress, List<(NodeAddress, AnnouncedLink, AnnouncedLink)>>();
        // Where costs simply add up along a path (latency, or price then latency) and only an upper hop limit binds, a
        // label that reaches a node with no fewer hops than one already settled there (so at no lower cost) can lead to
        // nothing better: with it pruned, each node is expanded a few times rather than once per hop count.
        var prune = query.MinHops <= 1 && query.MaxPrice is null && query.Policy is PathPolicy.LowestLatency or PathPolicy.LowestPrice;
        var fewestHops = new Dictionary<NodeAddress, int>();
        queue.Enqueue(new Label(source, 0, 0, 0, uint.MaxValue, null), (0, 0, 0));
        var overCap = false;
        while (queue.TryDequeue(out var label, out _))
        {
            if (prune)
            {
                // Also covers a second label at the same node and hop count.
                if (fewestHops.TryGetValue(label.Node, out var fewest) && label.Hops >= fewest)
                    continue;
                fewestHops[label.Node] = label.Hops;
            }
            else if (!settled.Add((label.Node, label.Hops)))
            {
                continue;
            }
            if (label.Node == destination)
            {
                if (label.Hops < query.MinHops)
                    continue;
                var nodes = new List<NodeAddress>();
                for (var l = label; l is not null; l = l.Parent)
                    nodes.Add(l.Node);
                nodes.Reverse();
                return new FoundPath(nodes, label.Rtt, label.Price, label.Bottleneck) { LinkRtts = LinkRttsLocked(nodes, now) };
            }
            if (label.Hops == query.MaxHops)
                continue;
            if (!neighbours.TryGetValue(label.Node, out var links))
                neighbours[label.Node] = links = NeighboursLocked(label.Node, now);
            foreach (var (peer, link, back) in links)
            {
                // Pruned now rather than when dequeued (which also keeps the path simple: every node on it was
                // reached in fewer hops).
                if (prune && fewestHops.TryGetValue(peer, out var reached) && reached <= label.Hops + 1)
                    continue;
                if ((query.Avoid.Count > 0 && query.Avoid.Contains(peer)) || (!prune && label.Visits(peer)))
                    continue;
                if (query.AvoidLinks.Count > 0 && (query.AvoidLinks.Contains((label.Node, peer)) || query.AvoidLinks.Contains((peer, label.Node))))
                    continue;
                var price = label.Price + (label.Hops > 0 ? link.PricePerMiB : 0u);
                if (query.MaxPrice is { } cap && price > cap)
                {
                    overCap = true;
                    continue;
                }
                var next = new Label(peer, label.Hops + 1, label.Rtt + Math.Max(link.RttMicroseconds, back.RttMicroseconds), price,
                    Math.Min(label.Bottleneck, Math.Min(link.CapacityKbps, back.CapacityKbps)), label);
                queue.Enqueue(next, query.Policy switch
                {
                    PathPolicy.LowestPrice => (next.Price, next.Rtt, next.Hops),
                    PathPolicy.MostBandwidth => (uint.MaxValue - (ulong)next.Bottleneck, next.Rtt, next.Hops),
                    _ => (next.Rtt, next.Price, next.Hops),
                });
            }
        }
        throw new NoRouteException(overCap
            ? $"No path to {destination} within {query.MaxHops} hops stays under the price cap of {query.MaxPrice}."
            : $"No path to {destination} with {query.MinHops} to {query.MaxHops} hops{(query.Avoid.Count > 0 ? $" avoiding {query.Avoid.Count} node(s)" : "")}.");
    }
}
