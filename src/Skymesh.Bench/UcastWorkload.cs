using System.Diagnostics;
using System.Globalization;

namespace Skymesh.Bench;

/// <summary>
/// The original SSMP benchmark: N connections each send M pipelined unicasts of a 100-byte payload to random
/// other connections, eight requests per write, open loop (never waiting for responses), while a reader per
/// connection counts what arrives. Throughput is deliveries over the time from the first send to the last delivery.
/// </summary>
internal static class UcastWorkload
{
    public static async Task<BenchResult> RunAsync(BenchTarget target, SsmpBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        var n = options.Connections;
        var dialect = target.Dialect;
        var ids = Enumerable.Range(0, n).Select(i => "c" + i.ToString(CultureInfo.InvariantCulture)).ToArray();
        var payload = Workload.Payload(options.PayloadSize);
        // Request i goes to connection i; it does not name the sender, so every connection shares them.
        var requests = ids.Select(id => dialect.Unicast(id, payload)).ToArray();
        var connections = await Workload.ConnectAsync(target, n, i => ids[i], i => dialect.UnicastNeedsSubscription ? ids[i] : null,
            Workload.LoadReceiveBuffer, _ => null, 32, cancellationToken);
        try
        {
            var warmup = (int)Math.Round(options.MessagesPerConnection * options.Warmup);
            if (warmup > 0)
            {
                var w = await RunPhaseAsync(target, connections, requests, warmup, options, seed: options.Seed + 1, cancellationToken);
                lock (output)
                    output.WriteLine($"  warm-up: {w.Delivered:N0}/{(long)n * warmup:N0} delivered in {w.Seconds:0.000} s");
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
                var run = await RunPhaseAsync(target, connections, requests, options.MessagesPerConnection, options, options.Seed + 7919 * r, cancellationToken);
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
            await Workload.DisposeAllAsync(connections);
        }
    }

    private static async Task<BenchResult> RunPhaseAsync(BenchTarget target, BenchConnection[] connections, byte[][] requests, int perConnection,
        SsmpBenchOptions options, int seed, CancellationToken cancellationToken)
    {
        var n = connections.Length;
        var expected = (long)n * perConnection;
        var baseDeliveries = Workload.Deliveries(connections);
        var baseOks = Workload.Oks(connections);
        var baseErrors = Workload.Errors(connections);
        var closedBefore = Workload.ClosedCount(connections);
        var longest = requests.Max(r => r.Length);
        var cpu = new CpuMeter(target);
        var start = Stopwatch.GetTimestamp();
        var senders = new Task<long>[n];
        for (var i = 0; i < n; i++)
        {
            var self = i;
            senders[i] = Task.Run(() => SendAsync(connections[self], self, requests, perConnection, options.Batch, longest,
                (uint)HashCode.Combine(seed, self), cancellationToken), cancellationToken);
        }
        var delivered = await Workload.WaitForDeliveriesAsync(connections, baseDeliveries, expected, options, cancellationToken);
        var end = delivered > 0 ? Workload.LastDelivery(connections) : Stopwatch.GetTimestamp();
        var cpuUse = cpu.Read();
        var sent = (await Workload.JoinSendersAsync(Task.WhenAll(senders), cancellationToken)).Max();
        long? responses = target.Dialect.RespondsToEveryRequest
            ? await Workload.WaitForResponsesAsync(connections, baseOks, expected, cancellationToken)
            : null;
        return new BenchResult
        {
            Workload = "ucast",
            Target = target.Name,
            Mode = target.Mode,
            Connections = n,
            Messages = expected,
            Expected = expected,
            Delivered = delivered,
            Seconds = Workload.Seconds(start, end),
            SendSeconds = Workload.Seconds(start, sent),
            Responses = responses,
            Errors = Workload.Errors(connections) - baseErrors,
            Disconnected = Workload.ClosedCount(connections) - closedBefore,
            Cpu = cpuUse,
        };
    }

    /// <summary>Sends <paramref name="count"/> unicasts to random other connections, <paramref name="batch"/> per write; returns when it finished.</summary>
    private static async Task<long> SendAsync(BenchConnection connection, int self, byte[][] requests, int count, int batch, int longest,
        uint seed, CancellationToken cancellationToken)
    {
        var others = requests.Length - 1;
        var random = new FastRandom(seed);
        var buffer = new byte[batch * longest];
        try
        {
            for (var sent = 0; sent < count;)
            {
                var k = Math.Min(batch, count - sent);
                var length = 0;
                for (var j = 0; j < k; j++)
                {
                    var peer = random.Next(others);
                    if (peer >= self)
                        peer++;
                    var request = requests[peer];
                    request.CopyTo(buffer, length);
                    length += request.Length;
                }
                await connection.SendAsync(buffer.AsMemory(0, length), cancellationToken);
                sent += k;
            }
        }
        catch (Exception e) when (Workload.IsConnectionLost(e))
        {
            // The target dropped this connection; the result counts it and the deliveries it misses.
        }
        return Stopwatch.GetTimestamp();
    }
}
