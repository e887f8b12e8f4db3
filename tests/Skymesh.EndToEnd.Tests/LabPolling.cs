using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace Skymesh.EndToEnd.Tests;

/// <summary>What the tests that run `skymesh` processes in network namespaces share: reading their JSON, polling them.</summary>
internal static class LabPolling
{
    /// <summary>Whether python3 is on the PATH (test.sh installs it): the labs' probes are small python programs.</summary>
    public static bool HasPython() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries).Any(dir => File.Exists(Path.Combine(dir, "python3")));

    /// <summary>A TCP connect from inside <paramref name="ns"/>: <c>OK</c>, or the errno's name (<c>ECONNREFUSED</c>, <c>ENETUNREACH</c>…).</summary>
    public static async Task<string> ConnectAsync(NetnsLab lab, string ns, string address, int port, CancellationToken cancellationToken)
    {
        const string Probe = "import errno, socket, sys\ns = socket.socket()\ns.settimeout(2)\nr = s.connect_ex((sys.argv[1], int(sys.argv[2])))\nprint('OK' if r == 0 else errno.errorcode.get(r, str(r)))";
        var (code, output) = await lab.RunAsync(ns, TimeSpan.FromSeconds(20), cancellationToken, "python3", "-c", Probe, address, port.ToString(CultureInfo.InvariantCulture));
        Xunit.Assert.True(code == 0, $"the connect probe failed: {output}");
        return output.Trim();
    }

    /// <summary>The JSON a command printed; default when it printed something else (an error, nothing).</summary>
    public static JsonElement Parse(string json)
    {
        try
        {
            return JsonDocument.Parse(json).RootElement.Clone();
        }
        catch (JsonException)
        {
            return default;
        }
    }

    /// <summary>`control` of a `skymesh status --json` answer.</summary>
    public static string? Control(JsonElement status) =>
        status.ValueKind == JsonValueKind.Object && status.TryGetProperty("control", out var c) ? c.GetString() : null;

    /// <summary>A text field of the status's <c>bus</c> (how the node reaches the control bus).</summary>
    public static string? Bus(JsonElement status, string field) =>
        status.ValueKind == JsonValueKind.Object && status.TryGetProperty("bus", out var bus) && bus.ValueKind == JsonValueKind.Object
        && bus.TryGetProperty(field, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    /// <summary>The relays between the node and the bus, from the status's <c>bus.hops</c>.</summary>
    public static int? Hops(JsonElement status) =>
        status.ValueKind == JsonValueKind.Object && status.TryGetProperty("bus", out var bus) && bus.ValueKind == JsonValueKind.Object
        && bus.TryGetProperty("hops", out var hops) && hops.ValueKind == JsonValueKind.Number ? hops.GetInt32() : null;

    /// <summary>
    /// Polls <paramref name="condition"/> until it holds; fails after <paramref name="bound"/> with <paramref name="what"/>,
    /// <paramref name="detail"/> and the lab's <paramref name="report"/> (what the nodes last said, the processes' last lines).
    /// </summary>
    public static async Task UntilAsync(string what, Func<Task<bool>> condition, TimeSpan bound, Func<string> report, Func<string>? detail, CancellationToken cancellationToken)
    {
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(200));
        var waited = Stopwatch.StartNew();
        while (!await condition())
        {
            if (waited.Elapsed > bound)
                throw new Xunit.Sdk.XunitException($"{what}: not within {bound.TotalSeconds} s{(detail is null ? "" : $" ({detail()})")}\n{report()}");
            await poll.WaitForNextTickAsync(cancellationToken);
        }
    }

    /// <summary>The line of <paramref name="metric"/> (without labels) in the /metrics of the node whose API is <paramref name="api"/> in <paramref name="ns"/>.</summary>
    public static async Task<string> MetricLineAsync(NetnsLab lab, string ns, string api, string metric, CancellationToken cancellationToken)
    {
        var (_, output) = await lab.RunAsync(ns, TimeSpan.FromSeconds(20), cancellationToken, "curl", "-sS", "--max-time", "5", $"http://{api}/metrics");
        return output.Split('\n').FirstOrDefault(l => l.StartsWith(metric + " ", StringComparison.Ordinal)) ?? $"no {metric} in /metrics";
    }
}
