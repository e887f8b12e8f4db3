using System.Globalization;

namespace Skymesh.Sim;

/// <summary>
/// The shapes of mesh the simulator builds (<c>skymesh sim --topology</c>), each a list of undirected links between
/// node indexes, the same for the same seed. Every generated shape is connected.
/// </summary>
public static class Topologies
{
    public static readonly IReadOnlyList<string> Names = ["line", "ring", "grid", "tree", "geometric", "powerlaw"];

    public static IReadOnlyList<(int A, int B)> Create(string name, int nodes, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(nodes, 2);
        var random = new Random(seed);
        return name switch
        {
            "line" => [.. Enumerable.Range(0, nodes - 1).Select(i => (i, i + 1))],
            "ring" => [.. Enumerable.Range(0, nodes).Select(i => (i, (i + 1) % nodes)).Where(l => l.Item1 != l.Item2).DistinctBy(Key)],
            "grid" => Grid(nodes),
            "tree" => [.. Enumerable.Range(1, nodes - 1).Select(i => (random.Next(i), i))],
            "geometric" => Geometric(nodes, random),
            "powerlaw" => PowerLaw(nodes, random),
            _ => throw new ArgumentException($"\"{name}\" is not a topology ({string.Join(", ", Names)}).", nameof(name)),
        };
    }

    /// <summary>Links from a file of lines <c>A B</c> (node indexes from 0; <c>#</c> starts a comment), e.g. a published community mesh.</summary>
    public static IReadOnlyList<(int A, int B)> FromEdgeList(IEnumerable<string> lines, out int nodes)
    {
        ArgumentNullException.ThrowIfNull(lines);
        var links = new List<(int, int)>();
        var lineNumber = 0;
        foreach (var raw in lines)
        {
            lineNumber++;
            var line = raw.Split('#', 2)[0].Trim();
            if (line.Length == 0)
                continue;
            var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length < 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var a)
                || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var b) || a == b)
                throw new FormatException($"line {lineNumber}: \"{raw}\" is not two different node numbers");
            links.Add((Math.Min(a, b), Math.Max(a, b)));
        }
        nodes = links.Count == 0 ? 0 : links.Max(l => l.Item2) + 1;
        return [.. links.Distinct()];
    }

    private static (int, int) Key((int A, int B) link) => (Math.Min(link.A, link.B), Math.Max(link.A, link.B));

    private static List<(int, int)> Grid(int nodes)
    {
        var width = (int)Math.Ceiling(Math.Sqrt(nodes));
        var links = new List<(int, int)>();
        for (var i = 0; i < nodes; i++)
        {
            if ((i + 1) % width != 0 && i + 1 < nodes)
                links.Add((i, i + 1));
            if (i + width < nodes)
                links.Add((i, i + width));
        }
        return links;
    }

    /// <summary>
    /// Community wireless: nodes at random in a square, linked to every node within radio range (chosen for about six
    /// neighbours each); separate islands are then joined by their closest pair, as a long link would.
    /// </summary>
    private static List<(int, int)> Geometric(int nodes, Random random)
    {
        var x = new double[nodes];
        var y = new double[nodes];
        for (var i = 0; i < nodes; i++)
        {
            x[i] = random.NextDouble();
            y[i] = random.NextDouble();
        }
        var range = Math.Sqrt(6.0 / (Math.PI * nodes));
        // Cells of the range's size: only neighbouring cells hold nodes in range.
        var cells = (int)Math.Max(1, Math.Floor(1 / range));
        var grid = new Dictionary<(int, int), List<int>>();
        for (var i = 0; i < nodes; i++)
        {
            var cell = ((int)(x[i] * cells), (int)(y[i] * cells));
            if (!grid.TryGetValue(cell, out var list))
                grid[cell] = list = [];
            list.Add(i);
        }
        var links = new List<(int, int)>();
        for (var i = 0; i < nodes; i++)
        {
            var (cx, cy) = ((int)(x[i] * cells), (int)(y[i] * cells));
            for (var dx = -1; dx <= 1; dx++)
            {
                for (var dy = -1; dy <= 1; dy++)
                {
                    if (!grid.TryGetValue((cx + dx, cy + dy), out var list))
                        continue;
                    foreach (var j in list)
                    {
                        if (j > i && (x[i] - x[j]) * (x[i] - x[j]) + (y[i] - y[j]) * (y[i] - y[j]) <= range * range)
                            links.Add((i, j));
                    }
                }
            }
        }
        // Join the islands: each to the first one by the closest pair of nodes (in node order, so runs repeat).
        var parts = Components(nodes, links);
        for (var p = 1; p < parts.Count; p++)
        {
            var best = (A: -1, B: -1, D: double.MaxValue);
            foreach (var a in parts[0])
            {
                foreach (var b in parts[p])
                {
                    var d = (x[a] - x[b]) * (x[a] - x[b]) + (y[a] - y[b]) * (y[a] - y[b]);
                    if (d < best.D)
                        best = (a, b, d);
                }
            }
            links.Add((Math.Min(best.A, best.B), Math.Max(best.A, best.B)));
            parts[0].AddRange(parts[p]);
        }
        return links;
    }

    /// <summary>Internet-like: preferential attachment, each new node linking to two existing ones chosen by their degree.</summary>
    private static List<(int, int)> PowerLaw(int nodes, Random random)
    {
        var links = new List<(int, int)> { (0, 1) };
        // Every link's two ends, so that a uniform pick from it is a pick by degree.
        var ends = new List<int> { 0, 1 };
        for (var i = 2; i < nodes; i++)
        {
            var first = ends[random.Next(ends.Count)];
            var second = first;
            for (var tries = 0; second == first && tries < 8 && i > 2; tries++)
                second = ends[random.Next(ends.Count)];
            foreach (var target in second == first ? [first] : new[] { first, second })
            {
                links.Add((target, i));
                ends.Add(target);
                ends.Add(i);
            }
        }
        return links;
    }

    /// <summary>The connected parts of a graph, each a list of node indexes, the part of node 0 first.</summary>
    public static List<List<int>> Components(int nodes, IEnumerable<(int A, int B)> links)
    {
        var neighbours = Adjacency(nodes, links);
        var seen = new bool[nodes];
        var parts = new List<List<int>>();
        for (var start = 0; start < nodes; start++)
        {
            if (seen[start])
                continue;
            var part = new List<int> { start };
            seen[start] = true;
            for (var k = 0; k < part.Count; k++)
            {
                foreach (var next in neighbours[part[k]])
                {
                    if (!seen[next])
                    {
                        seen[next] = true;
                        part.Add(next);
                    }
                }
            }
            parts.Add(part);
        }
        return parts;
    }

    public static List<int>[] Adjacency(int nodes, IEnumerable<(int A, int B)> links)
    {
        var neighbours = new List<int>[nodes];
        for (var i = 0; i < nodes; i++)
            neighbours[i] = [];
        foreach (var (a, b) in links)
        {
            neighbours[a].Add(b);
            neighbours[b].Add(a);
        }
        return neighbours;
    }

    /// <summary>Hops of the shortest path from <paramref name="from"/> to every node (-1: unreachable).</summary>
    public static int[] HopsFrom(List<int>[] neighbours, int from)
    {
        var hops = new int[neighbours.Length];
        Array.Fill(hops, -1);
        hops[from] = 0;
        var queue = new Queue<int>();
        queue.Enqueue(from);
        while (queue.TryDequeue(out var at))
        {
            foreach (var next in neighbours[at])
            {
                if (hops[next] < 0)
                {
                    hops[next] = hops[at] + 1;
                    queue.Enqueue(next);
                }
            }
        }
        return hops;
    }
}
