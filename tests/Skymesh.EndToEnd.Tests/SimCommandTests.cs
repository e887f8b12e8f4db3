using System.Text.Json;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// <c>skymesh sim</c> as a user runs it: a 50-node grid cold start prints its table, a progress line and a final JSON
/// line with the documented keys; the same seed gives the same figures; the plot is a readable SVG.
/// </summary>
public sealed class SimCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("skymesh-sim-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] Keys =
    [
        "nodes", "topology", "scenario", "seed", "reachability", "seconds_to_95", "seconds_to_99", "setup_p50_ms", "setup_p99_ms",
        "repair_p50_ms", "stretch_mean", "control_bytes_per_node_per_sec", "memory_bytes_per_node", "real_seconds",
    ];

    private static async Task<JsonElement> RunAsync(params string[] arguments)
    {
        var (code, output) = await Skymesh.RunAsync(["sim", .. arguments]);
        Assert.True(code == 0, $"exit code {code}:\n{output}");
        Assert.Contains("reachable", output, StringComparison.Ordinal);
        var json = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Last(l => l.StartsWith('{'));
        return JsonDocument.Parse(json).RootElement.Clone();
    }

    [Fact]
    public async Task A_fifty_node_grid_reaches_every_pair_within_five_seconds_and_the_same_seed_gives_the_same_figures()
    {
        var plot = Path.Combine(_dir, "grid.svg");
        var first = await RunAsync("--nodes", "50", "--topology", "grid", "--seed", "3", "--idle-seconds", "5", "--plot", plot);
        foreach (var key in Keys)
            Assert.True(first.TryGetProperty(key, out _), $"the JSON line has no \"{key}\"");
        Assert.Equal(50, first.GetProperty("nodes").GetInt32());
        Assert.Equal("grid", first.GetProperty("topology").GetString());
        Assert.Equal(1.0, first.GetProperty("reachability").GetDouble());
        Assert.InRange(first.GetProperty("seconds_to_95").GetDouble(), 0, 5);
        Assert.InRange(first.GetProperty("stretch_mean").GetDouble(), 1, 1.5);

        var second = await RunAsync("--nodes", "50", "--topology", "grid", "--seed", "3", "--idle-seconds", "5");
        foreach (var key in new[] { "reachability", "seconds_to_95", "seconds_to_99", "setup_p50_ms", "setup_p99_ms", "stretch_mean", "control_bytes_per_node_per_sec" })
            Assert.Equal(first.GetProperty(key).ToString(), second.GetProperty(key).ToString());

        var svg = await File.ReadAllTextAsync(plot, TestContext.Current.CancellationToken);
        Assert.StartsWith("<svg", svg.TrimStart(), StringComparison.Ordinal);
        Assert.Contains("virtual time since every link came up (s)", svg, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unknown_topology_is_refused_with_the_names_that_exist()
    {
        var (code, output) = await Skymesh.RunAsync("sim", "--topology", "hexagon");
        Assert.NotEqual(0, code);
        Assert.Contains("powerlaw", output, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", output, StringComparison.Ordinal);
    }
}
