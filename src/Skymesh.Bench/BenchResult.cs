using System.Globalization;
using System.Text.Json;

namespace Skymesh.Bench;

/// <summary>The outcome of one workload against one target; printed for people and as one JSON line for scripts.</summary>
internal sealed class BenchResult
{
    public required string Workload { get; init; }

    public required string Target { get; init; }

    /// <summary>process, inproc or external.</summary>
    public required string Mode { get; init; }

    public int Connections { get; init; }

    /// <summary>Messages sent (requests carrying a payload).</summary>
    public long Messages { get; init; }

    /// <summary>Messages that must arrive for the run to be complete.</summary>
    public long Expected { get; init; }

    public long Delivered { get; init; }

    /// <summary>Wall time from the first send to the last delivery.</summary>
    public double Seconds { get; init; }

    public double MsgsPerSec => Seconds > 0 ? Delivered / Seconds : 0;

    /// <summary>Wall time from the first send to the end of the last write (the rest is the target catching up).</summary>
    public double? SendSeconds { get; init; }

    /// <summary>msgs/s of every measured run when the workload was repeated; this result is their median.</summary>
    public IReadOnlyList<double>? Runs { get; init; }

    /// <summary>Successful responses received (SSMP answers every request; NATS with verbose off does not).</summary>
    public long? Responses { get; init; }

    public long Errors { get; init; }

    /// <summary>Connections the target closed during the workload.</summary>
    public int Disconnected { get; init; }

    /// <summary>
    /// CPU seconds over the measured phase: the target's process (null in-process or when unknown), this process
    /// (the broker's too when in-process), and the machine.
    /// </summary>
    public CpuUse? Cpu { get; init; }

    public double? TargetCpuSeconds => Cpu?.Target;

    public double? GeneratorCpuSeconds => Cpu?.Generator;

    public long? Samples { get; init; }

    public long? Late { get; init; }

    public double? P50Us { get; init; }

    public double? P99Us { get; init; }

    public double? P999Us { get; init; }

    public double? MaxUs { get; init; }

    public double? MeanUs { get; init; }

    public long? RssBeforeKib { get; init; }

    public long? RssAfterKib { get; init; }

    public double? BytesPerConnection { get; init; }

    /// <summary>idle: VmRSS of the target after each keepalive round (KiB).</summary>
    public IReadOnlyList<long> RssKeepaliveRoundsKib { get; init; } = [];

    /// <summary>The median run of <paramref name="runs"/>, carrying every run's rate.</summary>
    public static BenchResult Median(IReadOnlyList<BenchResult> runs)
    {
        var sorted = runs.OrderBy(r => r.MsgsPerSec).ToList();
        var median = sorted[(sorted.Count - 1) / 2];
        return new BenchResult
        {
            Workload = median.Workload,
            Target = median.Target,
            Mode = median.Mode,
            Connections = median.Connections,
            Messages = median.Messages,
            Expected = median.Expected,
            Delivered = median.Delivered,
            Seconds = median.Seconds,
            SendSeconds = median.SendSeconds,
            Runs = runs.Select(r => r.MsgsPerSec).ToList(),
            Responses = median.Responses,
            // A failure in any run is a failure of the workload.
            Errors = runs.Sum(r => r.Errors),
            Disconnected = runs.Sum(r => r.Disconnected),
            Cpu = median.Cpu,
        };
    }

    public bool Complete => Delivered >= Expected && Disconnected == 0 && Errors == 0;

    public string Describe()
    {
        var c = CultureInfo.InvariantCulture;
        var line = Workload switch
        {
            "idle" => string.Format(c, "{0} idle connections: RSS {1} -> {2} KiB, {3} bytes per connection",
                Connections, RssBeforeKib?.ToString(c) ?? "?", RssAfterKib?.ToString(c) ?? "?",
                BytesPerConnection?.ToString("N0", c) ?? "unknown (no process id)")
                + (RssKeepaliveRoundsKib.Count > 0 ? $", after {RssKeepaliveRoundsKib.Count} keepalive rounds {string.Join(" -> ", RssKeepaliveRoundsKib)} KiB" : ""),
            "latency" => string.Format(c, "{0} samples over {1} pairs: p50 {2:0.0} us, p99 {3:0.0} us, p99.9 {4:0.0} us, max {5:0.0} us, mean {6:0.0} us",
                Samples, Connections / 2, P50Us, P99Us, P999Us, MaxUs, MeanUs),
            _ => string.Format(c, "{0:N0}/{1:N0} delivered in {2:0.000} s = {3:N0} msgs/s", Delivered, Expected, Seconds, MsgsPerSec),
        };
        if (SendSeconds is { } sending)
            line += string.Format(c, " (sending took {0:0.000} s)", sending);
        if (Workload != "idle" && Delivered < Expected)
            line += string.Format(c, "; {0:N0} NOT delivered", Expected - Delivered);
        if (Responses is { } r)
            line += string.Format(c, "; {0:N0} responses", r);
        if (Errors > 0)
            line += string.Format(c, "; {0:N0} error responses", Errors);
        if (Disconnected > 0)
            line += string.Format(c, "; {0} connections closed by the target", Disconnected);
        if (TargetCpuSeconds is { } t && Seconds > 0)
            line += string.Format(c, "; CPU: target {0:0.00} s ({1:0}% of a core)", t, 100 * t / Seconds);
        if (GeneratorCpuSeconds is { } g && Seconds > 0)
            line += string.Format(c, "{0} generator {1:0.00} s ({2:0}%)", TargetCpuSeconds is null ? "; CPU:" : ",", g, 100 * g / Seconds);
        if (Cpu is { MachineBusy: { } busy } cpu && Seconds > 0)
        {
            line += string.Format(c, "; machine busy {0:0.00} of {1:0.00} CPU-s", busy, Environment.ProcessorCount * Seconds);
            if (cpu.Others is { } others)
                line += string.Format(c, ", {0:0.00} outside target and generator", others);
            if (cpu.Busiest.Count > 0)
                line += " (" + string.Join(", ", cpu.Busiest.Select(b => string.Format(c, "{0} {1:0.00} s", b.Process, b.Seconds))) + ")";
        }
        return line;
    }

    public void WriteJson(Utf8JsonWriter json)
    {
        json.WriteStartObject();
        json.WriteString("workload", Workload);
        json.WriteString("target", Target);
        json.WriteString("broker", Mode);
        json.WriteNumber("connections", Connections);
        json.WriteNumber("messages", Messages);
        json.WriteNumber("expected", Expected);
        json.WriteNumber("delivered", Delivered);
        json.WriteNumber("seconds", Math.Round(Seconds, 6));
        json.WriteNumber("msgs_per_sec", Math.Round(MsgsPerSec));
        Optional(json, "send_seconds", SendSeconds, 6);
        if (Runs is { Count: > 1 } runs)
        {
            json.WriteStartArray("runs_msgs_per_sec");
            foreach (var run in runs)
                json.WriteNumberValue(Math.Round(run));
            json.WriteEndArray();
        }
        Optional(json, "responses", Responses);
        json.WriteNumber("errors", Errors);
        json.WriteNumber("disconnected", Disconnected);
        Optional(json, "target_cpu_s", TargetCpuSeconds, 3);
        Optional(json, "generator_cpu_s", GeneratorCpuSeconds, 3);
        Optional(json, "machine_busy_s", Cpu?.MachineBusy, 2);
        Optional(json, "other_cpu_s", Cpu?.Others, 2);
        if (Cpu is { Busiest.Count: > 0 } busiest)
        {
            json.WriteStartObject("other_processes_cpu_s");
            foreach (var (process, seconds) in busiest.Busiest)
                json.WriteNumber(process, Math.Round(seconds, 2));
            json.WriteEndObject();
        }
        Optional(json, "samples", Samples);
        Optional(json, "late", Late);
        Optional(json, "p50_us", P50Us, 1);
        Optional(json, "p99_us", P99Us, 1);
        Optional(json, "p999_us", P999Us, 1);
        Optional(json, "max_us", MaxUs, 1);
        Optional(json, "mean_us", MeanUs, 1);
        Optional(json, "rss_before_kib", RssBeforeKib);
        Optional(json, "rss_after_kib", RssAfterKib);
        Optional(json, "bytes_per_connection", BytesPerConnection, 0);
        if (RssKeepaliveRoundsKib.Count > 0)
        {
            json.WriteStartArray("rss_keepalive_rounds_kib");
            foreach (var rss in RssKeepaliveRoundsKib)
                json.WriteNumberValue(rss);
            json.WriteEndArray();
        }
        json.WriteBoolean("complete", Complete);
        json.WriteEndObject();
    }

    private static void Optional(Utf8JsonWriter json, string name, long? value)
    {
        if (value is { } v)
            json.WriteNumber(name, v);
    }

    private static void Optional(Utf8JsonWriter json, string name, double? value, int digits)
    {
        if (value is { } v)
            json.WriteNumber(name, Math.Round(v, digits));
    }
}
