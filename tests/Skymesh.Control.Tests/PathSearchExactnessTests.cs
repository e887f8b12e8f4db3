using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Topology;
using Skymesh.Identity;

namespace Skymesh.Control.Tests;

/// <summary>
/// The route search against every simple path, on 300 random meshes (seeded, so every run checks the same ones):
/// some small and sparse, some with a hub linked to every other node (a record of more than 16 links, which the
/// search reads through its index). Without a price cap, lowest latency and lowest price find the best path within
/// the hop limit exactly, and most bandwidth the widest bottleneck.
/// </summary>
public sealed class PathSearchExactnessTests
{
    private static readonly NodeKey[] Keys = [.. Enumerable.Range(0, 30).Select(_ => NodeKey.Generate())];

    private sealed record Edge(int A, int B, uint RttAB, uint RttBA, uint Kbps, uint PriceA, uint PriceB);

    [Fact]
    public void The_search_finds_what_trying_every_simple_path_finds()
    {
        var random = new Random(20261205);
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 5, 0, 0, 0, TimeSpan.Zero));
        var checkedQueries = 0;
        for (var trial = 0; trial < 300; trial++)
        {
            var n = random.Next(5, trial % 3 == 0 ? 30 : 12);
            var hub = trial % 3 == 0;
            var edges = new List<Edge>();
            for (var a = 0; a < n; a++)
            {
                for (var b = a + 1; b < n; b++)
                {
                    if ((hub && a == 0) || random.NextDouble() < 2.5 / n)
                        edges.Add(new Edge(a, b, (uint)random.Next(1, 60) * 1000, (uint)random.Next(1, 60) * 1000, (uint)random.Next(1, 5) * 100,
                            (uint)random.Next(0, 6), (uint)random.Next(0, 6)));
                }
            }
            var graph = new TopologyGraph(time);
            for (var node = 0; node < n; node++)
            {
                var links = edges.Where(e => e.A == node || e.B == node)
                    .Select(e => e.A == node
                        ? new AnnouncedLink(Keys[e.B].Address, e.RttAB, 0, e.Kbps, e.PriceA, AnnouncedLinkState.Up)
                        : new AnnouncedLink(Keys[e.A].Address, e.RttBA, 0, e.Kbps, e.PriceB, AnnouncedLinkState.Up))
                    .ToList();
                Assert.Equal(AnnouncementError.None, graph.Offer(LinkAnnouncement.Create(Keys[node], 1, time.GetUtcNow(), TimeSpan.FromMinutes(5), links)));
            }
            for (var q = 0; q < 4; q++)
            {
                var source = random.Next(n);
                var destination = (source + 1 + random.Next(n - 1)) % n;
                var query = new PathQuery { Policy = (PathPolicy)random.Next(3), MaxHops = random.Next(1, 7) };
                var best = BestByTryingEverything(edges, source, destination, query);
                if (best is null)
                {
                    Assert.Throws<NoRouteException>(() => graph.FindPath(Keys[source].Address, Keys[destination].Address, query));
                    continue;
                }
                var found = graph.FindPath(Keys[source].Address, Keys[destination].Address, query);
                Assert.InRange(found.Hops, 1, query.MaxHops);
                switch (query.Policy)
                {
                    case PathPolicy.LowestLatency:
                        Assert.Equal((best.Value.Rtt, best.Value.Price), (found.RttMicroseconds, found.Price));
                        break;
                    case PathPolicy.LowestPrice:
                        Assert.Equal((best.Value.Price, best.Value.Rtt), (found.Price, found.RttMicroseconds));
                        break;
                    default:
                        Assert.Equal(best.Value.Kbps, found.BottleneckKbps);
                        break;
                }
                checkedQueries++;
            }
        }
        Assert.True(checkedQueries > 600, $"only {checkedQueries} queries had a path");
    }

    // Every simple path from source to destination within the hop limit, costed as the finder costs one: the worse
    // direction's RTT of each link, the price of each relay onto the next link, the narrowest link.
    private static (ulong Rtt, ulong Price, uint Kbps)? BestByTryingEverything(List<Edge> edges, int source, int destination, PathQuery query)
    {
        (ulong Rtt, ulong Price, uint Kbps)? best = null;
        var visited = new HashSet<int> { source };
        void Walk(int at, int hops, ulong rtt, ulong price, uint kbps)
        {
            if (at == destination)
            {
                var candidate = (rtt, price, kbps);
                if (best is null || Better(candidate, best.Value, query.Policy))
                    best = candidate;
                return;
            }
            if (hops == query.MaxHops)
                return;
            foreach (var e in edges)
            {
                var (next, ownPrice, rttOut) = e.A == at ? (e.B, e.PriceA, Math.Max(e.RttAB, e.RttBA)) : e.B == at ? (e.A, e.PriceB, Math.Max(e.RttAB, e.RttBA)) : (-1, 0u, 0u);
                if (next < 0 || !visited.Add(next))
                    continue;
                Walk(next, hops + 1, rtt + rttOut, price + (hops > 0 ? ownPrice : 0), Math.Min(kbps, e.Kbps));
                visited.Remove(next);
            }
        }
        Walk(source, 0, 0, 0, uint.MaxValue);
        return best;
    }

    private static bool Better((ulong Rtt, ulong Price, uint Kbps) a, (ulong Rtt, ulong Price, uint Kbps) b, PathPolicy policy) => policy switch
    {
        PathPolicy.LowestLatency => (a.Rtt, a.Price).CompareTo((b.Rtt, b.Price)) < 0,
        PathPolicy.LowestPrice => (a.Price, a.Rtt).CompareTo((b.Price, b.Rtt)) < 0,
        _ => a.Kbps > b.Kbps,
    };
}
