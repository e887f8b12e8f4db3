using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Topology;
using Skymesh.Identity;

namespace Skymesh.Control.Tests;

/// <summary>
/// A small mesh with a known best answer for each policy:
/// S-A-D (rtt 10+10, A charges 5, 100 kbps), S-B-C-D (rtt 1+1+1, B and C charge 1, 1,000 kbps),
/// S-E-D (rtt 50+50, E is free, 10,000 kbps).
/// </summary>
public sealed class PathFindingTests : IDisposable
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 25, 12, 0, 0, TimeSpan.Zero));
    private readonly Dictionary<string, NodeKey> _keys;
    private readonly TopologyGraph _graph;
    private readonly Dictionary<string, List<AnnouncedLink>> _links = [];

    public PathFindingTests()
    {
        _keys = "SABCDE".ToDictionary(c => c.ToString(), _ => NodeKey.Generate());
        _graph = new TopologyGraph(_time);
        Link("S", "A", 10, 100, priceA: 0, priceB: 5);
        Link("A", "D", 10, 100, priceA: 5, priceB: 0);
        Link("S", "B", 1, 1000, 0, 1);
        Link("B", "C", 1, 1000, 1, 1);
        Link("C", "D", 1, 1000, 1, 0);
        Link("S", "E", 50, 10_000, 0, 0);
        Link("E", "D", 50, 10_000, 0, 0);
        foreach (var (name, links) in _links)
            Assert.Equal(AnnouncementError.None, _graph.Offer(LinkAnnouncement.Create(_keys[name], 1, _time.GetUtcNow(), TimeSpan.FromMinutes(5), links)));
    }

    public void Dispose()
    {
        foreach (var key in _keys.Values)
            key.Dispose();
    }

    // Price is what the node at that end charges to forward onto the link.
    private void Link(string a, string b, uint rttMs, uint kbps, uint priceA, uint priceB)
    {
        Add(a, new AnnouncedLink(_keys[b].Address, rttMs * 1000, 0, kbps, priceA, AnnouncedLinkState.Up));
        Add(b, new AnnouncedLink(_keys[a].Address, rttMs * 1000, 0, kbps, priceB, AnnouncedLinkState.Up));
    }

    private void Add(string node, AnnouncedLink link)
    {
        if (!_links.TryGetValue(node, out var list))
            _links[node] = list = [];
        list.Add(link);
    }

    private NodeAddress A(string name) => _keys[name].Address;

    private string Names(FoundPath path) => string.Concat(path.Nodes.Select(n => _keys.Single(k => k.Value.Address == n).Key));

    private FoundPath Find(PathQuery query) => _graph.FindPath(A("S"), A("D"), query);

    [Fact]
    public void Lowest_latency_takes_the_three_fast_hops()
    {
        var path = Find(new PathQuery());
        Assert.Equal("SBCD", Names(path));
        Assert.Equal(3000ul, path.RttMicroseconds);
        Assert.Equal(2ul, path.Price);
        Assert.Equal(1000u, path.BottleneckKbps);
    }

    [Fact]
    public void Lowest_price_takes_the_free_relay()
    {
        var path = Find(new PathQuery { Policy = PathPolicy.LowestPrice });
        Assert.Equal("SED", Names(path));
        Assert.Equal(0ul, path.Price);
    }

    [Fact]
    public void Most_bandwidth_takes_the_widest_bottleneck()
    {
        Assert.Equal("SED", Names(Find(new PathQuery { Policy = PathPolicy.MostBandwidth })));
    }

    [Fact]
    public void Hop_limits_avoided_nodes_and_price_caps_change_the_answer()
    {
        Assert.Equal("SAD", Names(Find(new PathQuery { MaxHops = 2 })));
        Assert.Equal("SBCD", Names(Find(new PathQuery { MinHops = 3 })));
        Assert.Equal("SAD", Names(Find(new PathQuery { Avoid = new HashSet<NodeAddress> { A("B") } })));
        Assert.Equal("SED", Names(Find(new PathQuery { MaxPrice = 1 })));
        var none = Assert.Throws<NoRouteException>(() => Find(new PathQuery { MinHops = 4 }));
        Assert.Contains("4 to 10 hops", none.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Exact_hops_are_checked_link_by_link()
    {
        var path = Find(new PathQuery { Via = [A("A")] });
        Assert.Equal("SAD", Names(path));
        Assert.Equal(5ul, path.Price);
        var error = Assert.Throws<NoRouteException>(() => Find(new PathQuery { Via = [A("C")] }));
        Assert.Contains("no working link", error.Message, StringComparison.Ordinal);
        Assert.Throws<NoRouteException>(() => Find(new PathQuery { Via = [A("A")], MaxPrice = 4 }));
    }

    [Fact]
    public void A_link_only_one_end_announces_is_not_used()
    {
        // X claims a zero-latency link to S and D; neither confirms it.
        using var x = NodeKey.Generate();
        Assert.Equal(AnnouncementError.None, _graph.Offer(LinkAnnouncement.Create(x, 1, _time.GetUtcNow(), TimeSpan.FromMinutes(5),
            [new AnnouncedLink(A("S"), 0, 0, 1_000_000, 0, AnnouncedLinkState.Up), new AnnouncedLink(A("D"), 0, 0, 1_000_000, 0, AnnouncedLinkState.Up)])));
        Assert.Equal("SBCD", Names(Find(new PathQuery())));
        Assert.Empty(_graph.Neighbours(x.Address));
    }

    [Fact]
    public void A_link_announced_down_or_a_node_gone_takes_paths_elsewhere()
    {
        // B announces its link to C down: the fast path is gone.
        Assert.Equal(AnnouncementError.None, _graph.Offer(LinkAnnouncement.Create(_keys["B"], 2, _time.GetUtcNow(), TimeSpan.FromMinutes(5),
            [new AnnouncedLink(A("S"), 1000, 0, 1000, 1, AnnouncedLinkState.Up), new AnnouncedLink(A("C"), 1000, 0, 1000, 1, AnnouncedLinkState.Down)])));
        Assert.Equal("SAD", Names(Find(new PathQuery())));
        Assert.True(_graph.Forget(A("A")));
        Assert.Equal("SED", Names(Find(new PathQuery())));
    }

    [Fact]
    public void Expired_records_leave_no_route()
    {
        _time.Advance(TimeSpan.FromMinutes(5));
        var error = Assert.Throws<NoRouteException>(() => Find(new PathQuery()));
        Assert.Contains("No path", error.Message, StringComparison.Ordinal);
        Assert.Equal(6, _graph.Sweep());
        Assert.Throws<NoRouteException>(() => Find(new PathQuery()));
    }
}
