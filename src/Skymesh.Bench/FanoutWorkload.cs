using System.Diagnostics;
using System.Globalization;

namespace Skymesh.Bench;

/// <summary>
/// One publisher multicasts 100-byte payloads to a topic with K subscribers, eight requests per write, open loop;
/// throughput is deliveries at the subscribers over the time from the first send to the last delivery.
/// </summary>
internal static class FanoutWorkload
{
    private const string Topic = "fanout";

    public static async Task<BenchResult> RunAsync(BenchTarget target, SsmpBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        var k = options.Subscribers;
        var subscribers = await Workload.ConnectAsync(target, k, i => "s" + i.ToString(CultureInfo.InvariantCulture), _ => Topic,
            Workload.LoadReceiveBuffer, _ => null, 32, cancellationToken);
        BenchConnection[]? publisher = null;
        try
        {
            publisher = await Workload.ConnectAsync(target, 1, _ => "p0", _ => null, Workload.LoadReceiveBuffer, _ => null, 1, cancellationToken);
            var request = target.Dialect.Multicast(Topic, Workload.Payload(options.PayloadSize));
            var chunk = new byte[request.Length * options.Batch];
            for (var i = 0; i < options.Batch; i++)
                request.CopyTo(chunk, i * request.Length);
            var warmup = (int)Math.Round(options.FanoutMessages * options.Warmup);
            if (warmup > 0)
            {
                var w = await RunPhaseAsync(target, publisher[0], subscribers, request, chunk, warmup, options, cancellationToken);
                lock (output)
                    output.WriteLine($"  warm-up: {w.Delivered:N0}/{w.Expected:N0} delivered in {w.Seconds:0.000} s");
                // A target that fails the warm-up would fail the measurement too; report what happened.
                if (!w.Complete)
                {
                    lock (output)
                        output.WriteLine("  the warm-up did not complete; not measuring");
                    return w;
                }
            }
            var runs = new List<BenchResult>();
            for (var r = 0; r < options.Repeat; r++)
            {
                var run = await RunPhaseAsync(target, publisher[0], subscribers, request, chunk, options.FanoutMessages, options, cancellationToken);
                runs.Add(run);
                if (options.Repeat > 1)
                {
                    lock (output)
                        output.WriteLine($"  run {r + 1}: {run.Describe()}");
                }
                if (!run.Complete)
                    break;
            }
            return runs.Count == 1 ? runs[0] : BenchResult.Median(runs);
        }
        finally
        {
            if (publisher is not null)
                await Workload.DisposeAllAsync(publisher);
            await Workload.DisposeAllAsync(subscribers);
        }
    }

    private static async Task<BenchResult> RunPhaseAsync(BenchTarget target, BenchConnection publisher, BenchConnection[] subscribers,
        byte[] request, byte[] chunk, int messages, SsmpBenchOptions options, CancellationToken cancellationToken)
    {
        var expected = (long)messages * subscribers.Length;
        var baseDeliveries = Workload.Deliveries(subscribers);
        var baseOks = publisher.Oks;
        var baseErrors = publisher.Errors + Workload.Errors(subscribers);
        var closedBefore = Workload.ClosedCount(subscribers);
        var cpu = new CpuMeter(target);
        var start = Stopwatch.GetTimestamp();
        var sender = Task.Run(async () =>
        {
            var batch = chunk.Length / request.Length;
            try
            {
                for (var sent = 0; sent < messages;)
                {
                    var n = Math.Min(batch, messages - sent);
                    await publisher.SendAsync(chunk.AsMemory(0, n * request.Length), cancellationToken);
                    sent += n;
                }
            }
            catch (Exception e) when (Workload.IsConnectionLost(e))
            {
                // The target dropped the publisher; the result counts it and the missing deliveries.
            }
            return Stopwatch.GetTimestamp();
        }, cancellationToken);
        var delivered = await Workload.WaitForDeliveriesAsync(subscribers, baseDeliveries, expected, options, cancellationToken);
        var end = delivered > 0 ? Workload.LastDelivery(subscribers) : Stopwatch.GetTimestamp();
        var cpuUse = cpu.Read();
        var sentAt = await Workload.JoinSendersAsync(sender, cancellationToken);
        long? responses = target.Dialect.RespondsToEveryRequest
            ? await Workload.WaitForResponsesAsync([publisher], baseOks, messages, cancellationToken)
            : null;
        return new BenchResult
        {
            Workload = "fanout",
            Target = target.Name,
            Mode = target.Mode,
            Connections = subscribers.Length + 1,
            Messages = messages,
            Expected = expected,
            Delivered = delivered,
            Seconds = Workload.Seconds(start, end),
            SendSeconds = Workload.Seconds(start, sentAt),
            Responses = responses,
            Errors = publisher.Errors + Workload.Errors(subscribers) - baseErrors,
            Disconnected = Workload.ClosedCount(subscribers) - closedBefore + (publisher.Closed ? 1 : 0),
            Cpu = cpuUse,
        };
    }
}
