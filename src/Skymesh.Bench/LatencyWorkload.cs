using System.Diagnostics;
using System.Globalization;

namespace Skymesh.Bench;

/// <summary>
/// A few sender/receiver pairs. Each sender sends one unicast carrying its send time, waits until the receiver
/// has it, and sends the next at a modest rate; the receiver's reader records arrival minus send time
/// (one way through the target, on one clock). Percentiles come from the sorted samples of all pairs.
/// </summary>
internal static class LatencyWorkload
{
    private static readonly TimeSpan LostAfter = TimeSpan.FromSeconds(1);

    public static async Task<BenchResult> RunAsync(BenchTarget target, SsmpBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        var pairs = options.LatencyPairs;
        var dialect = target.Dialect;
        var warmup = (int)Math.Round(options.LatencySamples * options.Warmup);
        var probes = Enumerable.Range(0, pairs).Select(_ => new LatencyProbe(Math.Max(options.LatencySamples, warmup))).ToArray();
        string ReceiverId(int i) => "lr" + i.ToString(CultureInfo.InvariantCulture);
        var receivers = await Workload.ConnectAsync(target, pairs, ReceiverId, i => dialect.UnicastNeedsSubscription ? ReceiverId(i) : null,
            4096, i => probes[i], 8, cancellationToken);
        BenchConnection[]? senders = null;
        try
        {
            senders = await Workload.ConnectAsync(target, pairs, i => "ls" + i.ToString(CultureInfo.InvariantCulture), _ => null,
                4096, _ => null, 8, cancellationToken);
            // The stamp goes at the start of the payload, so a receiver finds it within the first bytes of the line.
            var requests = new byte[pairs][];
            var stampAt = new int[pairs];
            for (var i = 0; i < pairs; i++)
            {
                var payload = Workload.Payload(options.PayloadSize);
                payload[0] = (byte)'#';
                requests[i] = dialect.Unicast(ReceiverId(i), payload);
                stampAt[i] = Array.IndexOf(requests[i], (byte)'#');
            }
            if (warmup > 0)
            {
                var w = await RunPhaseAsync(target, senders, receivers, probes, requests, stampAt, warmup, options, cancellationToken);
                lock (output)
                    output.WriteLine($"  warm-up: {w.Samples:N0} samples, p50 {w.P50Us:0.0} us");
                // A target that fails the warm-up would fail the measurement too; report what happened.
                if (!w.Complete)
                {
                    lock (output)
                        output.WriteLine("  the warm-up did not complete; not measuring");
                    return w;
                }
                foreach (var probe in probes)
                    probe.Reset();
            }
            return await RunPhaseAsync(target, senders, receivers, probes, requests, stampAt, options.LatencySamples, options, cancellationToken);
        }
        finally
        {
            if (senders is not null)
                await Workload.DisposeAllAsync(senders);
            await Workload.DisposeAllAsync(receivers);
        }
    }

    private static async Task<BenchResult> RunPhaseAsync(BenchTarget target, BenchConnection[] senders, BenchConnection[] receivers,
        LatencyProbe[] probes, byte[][] requests, int[] stampAt, int samples, SsmpBenchOptions options, CancellationToken cancellationToken)
    {
        var pairs = senders.Length;
        var baseErrors = Workload.Errors(senders) + Workload.Errors(receivers);
        var baseLate = probes.Sum(p => p.Late);
        var period = TimeSpan.FromSeconds(1 / options.LatencyRate);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(options.Timeout);
        var cpu = new CpuMeter(target);
        var start = Stopwatch.GetTimestamp();
        var lost = new int[pairs];
        var tasks = Enumerable.Range(0, pairs).Select(i => Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(period);
            var request = requests[i];
            var probe = probes[i];
            for (var s = 0; s < samples; s++)
            {
                if (!await timer.WaitForNextTickAsync(deadline.Token))
                    break;
                probe.Stamp(request.AsSpan(stampAt[i]), Stopwatch.GetTimestamp());
                try
                {
                    await senders[i].SendAsync(request, deadline.Token);
                }
                catch (Exception e) when (Workload.IsConnectionLost(e))
                {
                    break;
                }
                if (!await probe.WaitAsync(LostAfter, deadline.Token))
                {
                    probe.GiveUp();
                    lost[i]++;
                    if (receivers[i].Closed || senders[i].Closed)
                        break;
                }
            }
        }, cancellationToken)).ToArray();
        try
        {
            await Task.WhenAll(tasks);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // The workload timeout: report what was measured.
        }
        var end = Stopwatch.GetTimestamp();
        var cpuUse = cpu.Read();

        var all = new List<long>(pairs * samples);
        foreach (var probe in probes)
            all.AddRange(probe.Samples);
        all.Sort();
        double Us(long ticks) => ticks * 1e6 / Stopwatch.Frequency;
        double? Percentile(double q) => all.Count == 0 ? null : Us(all[Math.Clamp((int)Math.Ceiling(q * all.Count) - 1, 0, all.Count - 1)]);
        return new BenchResult
        {
            Workload = "latency",
            Target = target.Name,
            Mode = target.Mode,
            Connections = pairs * 2,
            Messages = (long)pairs * samples,
            Expected = (long)pairs * samples,
            Delivered = all.Count,
            Seconds = Workload.Seconds(start, end),
            Errors = Workload.Errors(senders) + Workload.Errors(receivers) - baseErrors,
            Disconnected = Workload.ClosedCount(senders) + Workload.ClosedCount(receivers),
            Cpu = cpuUse,
            Samples = all.Count,
            Late = probes.Sum(p => p.Late) - baseLate,
            P50Us = Percentile(0.50),
            P99Us = Percentile(0.99),
            P999Us = Percentile(0.999),
            MaxUs = all.Count == 0 ? null : Us(all[^1]),
            MeanUs = all.Count == 0 ? null : Us((long)all.Average()),
        };
    }
}
