using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Skymesh.Bench;

/// <summary>
/// <c>skymesh bench ssmp</c>: runs each chosen workload against the Skymesh broker and, with
/// <see cref="SsmpBenchOptions.Nats"/>, against nats-server in the same run, with the same generator.
/// Prints a line per result as it comes, the ratios, and at the end one JSON line per workload and target.
/// </summary>
public static class SsmpBench
{
    /// <summary>Runs the benchmark; returns 0 when every workload delivered everything, 1 otherwise.</summary>
    public static async Task<int> RunAsync(SsmpBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        options.Validate();
        if (options.Workloads.Contains(BenchWorkload.Idle))
            IdleWorkload.CheckDescriptorLimit(options);
        var c = CultureInfo.InvariantCulture;
        output.WriteLine(string.Format(c, "skymesh bench ssmp: {0} CPUs ({1}), .NET {2}, broker {3}{4}",
            Environment.ProcessorCount, ProcessProbe.CpuModel(), Environment.Version, Describe(options), options.Nats ? ", and nats-server" : ""));

        var results = new List<BenchResult>();
        foreach (var workload in options.Workloads)
        {
            foreach (var nats in options.Nats ? new[] { false, true } : [false])
            {
                cancellationToken.ThrowIfCancellationRequested();
                // Idle connections are held through keepalive rounds: the target PINGs at the bench's interval.
                var pingInterval = workload == BenchWorkload.Idle && options.IdleKeepaliveRounds > 0 ? options.IdlePingInterval : (TimeSpan?)null;
                await using var target = await StartAsync(nats, options, pingInterval, output, cancellationToken);
                lock (output)
                    output.WriteLine($"{Name(workload)} against {target.Name} ({target.Mode}, {target.EndPoint}{(target.ProcessId is { } pid ? $", pid {pid}" : "")}): {Explain(workload, options)}");
                var result = workload switch
                {
                    BenchWorkload.Ucast => await UcastWorkload.RunAsync(target, options, output, cancellationToken),
                    BenchWorkload.Fanout => await FanoutWorkload.RunAsync(target, options, output, cancellationToken),
                    BenchWorkload.Latency => await LatencyWorkload.RunAsync(target, options, output, cancellationToken),
                    _ => await IdleWorkload.RunAsync(target, options, output, cancellationToken),
                };
                results.Add(result);
                lock (output)
                    output.WriteLine($"  {result.Target}: {result.Describe()}");
            }
        }

        if (options.Nats)
            PrintRatios(results, output);
        var json = new StringBuilder();
        foreach (var result in results)
        {
            using var stream = new MemoryStream();
            using (var writer = new Utf8JsonWriter(stream))
                result.WriteJson(writer);
            json.AppendLine(Encoding.UTF8.GetString(stream.ToArray()));
        }
        lock (output)
            output.Write(json.ToString());
        return results.All(r => r.Complete) ? 0 : 1;
    }

    private static async Task<BenchTarget> StartAsync(bool nats, SsmpBenchOptions options, TimeSpan? pingInterval, TextWriter output,
        CancellationToken cancellationToken)
    {
        if (nats)
            return await BenchTarget.StartNatsAsync(options.NatsServerPath, pingInterval, output, cancellationToken);
        return options.Broker switch
        {
            BrokerMode.InProcess => await BenchTarget.StartInProcessAsync(options),
            BrokerMode.External => BenchTarget.External(options.Target!, options.TargetProcessId),
            _ => await BenchTarget.StartBrokerProcessAsync(options.BrokerLaunch!, pingInterval, output, cancellationToken),
        };
    }

    private static void PrintRatios(List<BenchResult> results, TextWriter output)
    {
        var lines = new List<string>();
        foreach (var skymesh in results.Where(r => r.Target == "skymesh"))
        {
            var nats = results.FirstOrDefault(r => r.Target == "nats" && r.Workload == skymesh.Workload);
            if (nats is null)
                continue;
            var c = CultureInfo.InvariantCulture;
            switch (skymesh.Workload)
            {
                case "latency":
                    lines.Add(string.Format(c, "  latency: p50 {0:0.0} vs {1:0.0} us, p99 {2:0.0} vs {3:0.0} us, p99.9 {4:0.0} vs {5:0.0} us (skymesh vs nats)",
                        skymesh.P50Us, nats.P50Us, skymesh.P99Us, nats.P99Us, skymesh.P999Us, nats.P999Us));
                    break;
                case "idle":
                    lines.Add(string.Format(c, "  idle: {0:N0} vs {1:N0} bytes per connection (skymesh vs nats)",
                        skymesh.BytesPerConnection, nats.BytesPerConnection));
                    break;
                default:
                    lines.Add(string.Format(c, "  {0}: {1:N0} vs {2:N0} msgs/s, skymesh/nats = {3:0.00}x",
                        skymesh.Workload, skymesh.MsgsPerSec, nats.MsgsPerSec, nats.MsgsPerSec > 0 ? skymesh.MsgsPerSec / nats.MsgsPerSec : double.NaN));
                    break;
            }
        }
        if (lines.Count == 0)
            return;
        lock (output)
        {
            output.WriteLine("skymesh vs nats-server, same run:");
            foreach (var line in lines)
                output.WriteLine(line);
        }
    }

    private static string Describe(SsmpBenchOptions options) => options.Broker switch
    {
        BrokerMode.InProcess => "in this process",
        BrokerMode.External => $"at {options.Target}",
        _ => "as a child process",
    };

    private static string Name(BenchWorkload workload) => workload.ToString().ToLowerInvariant();

    private static string Explain(BenchWorkload workload, SsmpBenchOptions o) => workload switch
    {
        BenchWorkload.Ucast => string.Format(CultureInfo.InvariantCulture, "{0} connections x {1:N0} UCASTs of {2} bytes to random peers, {3} per write, open loop",
            o.Connections, o.MessagesPerConnection, o.PayloadSize, o.Batch),
        BenchWorkload.Fanout => string.Format(CultureInfo.InvariantCulture, "1 publisher x {0:N0} MCASTs of {1} bytes to {2} subscribers, {3} per write",
            o.FanoutMessages, o.PayloadSize, o.Subscribers, o.Batch),
        BenchWorkload.Latency => string.Format(CultureInfo.InvariantCulture, "{0} pairs x {1:N0} UCASTs of {2} bytes, {3:0} per second per pair, one in flight",
            o.LatencyPairs, o.LatencySamples, o.PayloadSize, o.LatencyRate),
        _ => string.Format(CultureInfo.InvariantCulture, "{0:N0} logged-in idle connections (after {1} warm-up connections)",
            o.IdleConnections, o.IdleWarmupConnections),
    };
}
