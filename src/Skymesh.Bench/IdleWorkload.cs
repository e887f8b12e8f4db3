using System.Globalization;

namespace Skymesh.Bench;

/// <summary>
/// Opens many logged-in connections and leaves them idle; reports how much the target's resident memory
/// (VmRSS) grew per connection. A warm-up set of connections is opened and logged in first, outside the
/// measurement, so that one-off costs (JIT, thread pool, first buffers) do not count against the connections.
/// </summary>
internal static class IdleWorkload
{
    /// <summary>An idle connection only ever receives a PING; its reader needs little.</summary>
    private const int IdleReceiveBuffer = 256;

    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(2);

    /// <summary>Descriptors this process needs beyond its sockets (runtime, pipes, logs).</summary>
    public const int SpareDescriptors = 256;

    /// <summary>Fails with a clear message when RLIMIT_NOFILE is too low for the connections asked for.</summary>
    public static void CheckDescriptorLimit(SsmpBenchOptions options)
    {
        var sockets = (long)options.IdleConnections + options.IdleWarmupConnections;
        // In process, both ends of every connection are in this process.
        var needed = (options.Broker == BrokerMode.InProcess ? 2 * sockets : sockets) + SpareDescriptors;
        if (ProcessProbe.OpenFilesLimit() is { } limit && limit < needed)
        {
            throw new BenchException(string.Create(CultureInfo.InvariantCulture,
                $"The open-files limit (RLIMIT_NOFILE) is {limit}, but {options.IdleConnections} idle connections need about {needed} descriptors here"
                + $"{(options.Broker == BrokerMode.InProcess ? " (the broker is in this process, so both ends count)" : " (the broker process inherits the same limit)")}. "
                + $"Raise it first, e.g. `ulimit -n {needed}`, or ask for fewer with --connections."));
        }
    }

    public static async Task<BenchResult> RunAsync(BenchTarget target, SsmpBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        var pid = target.ProcessId;
        var warm = Array.Empty<BenchConnection>();
        var idle = Array.Empty<BenchConnection>();
        try
        {
            warm = await Workload.ConnectAsync(target, options.IdleWarmupConnections, i => "w" + i.ToString(CultureInfo.InvariantCulture), _ => null,
                IdleReceiveBuffer, _ => null, 32, cancellationToken);
            await Task.Delay(Settle, cancellationToken);
            var before = Resident(target);
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            idle = await Workload.ConnectAsync(target, options.IdleConnections, i => "i" + i.ToString(CultureInfo.InvariantCulture), _ => null,
                IdleReceiveBuffer, _ => null, 64, cancellationToken);
            var seconds = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds;
            lock (output)
                output.WriteLine($"  {idle.Length:N0} connections logged in after {seconds:0.0} s; settling {Settle.TotalSeconds:0} s");
            await Task.Delay(Settle, cancellationToken);
            var after = Resident(target);
            var rounds = new List<long>();
            for (var round = 1; round <= options.IdleKeepaliveRounds; round++)
            {
                if (!await KeepaliveRoundAsync(idle, round, options, cancellationToken))
                {
                    lock (output)
                        output.WriteLine($"  keepalive round {round}: not every connection was PINGed within {options.Timeout.TotalSeconds:0} s; stopped");
                    break;
                }
                if (Resident(target) is not { } rss)
                    break;
                rounds.Add(rss);
                lock (output)
                    output.WriteLine($"  keepalive round {round}: every connection PINGed and answered; RSS {rss:N0} KiB");
            }
            var n = options.IdleConnections;
            return new BenchResult
            {
                Workload = "idle",
                Target = target.Name,
                Mode = target.Mode,
                Connections = n,
                Messages = 0,
                Expected = 0,
                Delivered = 0,
                Seconds = seconds,
                Errors = Workload.Errors(idle),
                Disconnected = Workload.ClosedCount(idle) + Workload.ClosedCount(warm),
                RssBeforeKib = before,
                RssAfterKib = after,
                BytesPerConnection = before is { } b && after is { } a ? (a - b) * 1024.0 / n : null,
                RssKeepaliveRoundsKib = rounds,
            };
        }
        finally
        {
            await Workload.DisposeAllAsync(idle);
            await Workload.DisposeAllAsync(warm);
        }
    }

    /// <summary>
    /// Waits until every open idle connection has been PINGed <paramref name="round"/> times (and has answered),
    /// polling a few times a second; false when that takes longer than the workload timeout.
    /// </summary>
    private static async Task<bool> KeepaliveRoundAsync(BenchConnection[] idle, int round, SsmpBenchOptions options, CancellationToken cancellationToken)
    {
        var deadline = System.Diagnostics.Stopwatch.GetTimestamp() + (long)(options.Timeout.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(200));
        while (idle.Any(c => !c.Closed && c.Pings < round))
        {
            if (System.Diagnostics.Stopwatch.GetTimestamp() > deadline)
                return false;
            await poll.WaitForNextTickAsync(cancellationToken);
        }
        // The PONGs were sent when the last PING arrived; give the target a moment to read them.
        await poll.WaitForNextTickAsync(cancellationToken);
        return true;
    }

    /// <summary>VmRSS of the target; in process, after a full collection so that garbage does not count.</summary>
    private static long? Resident(BenchTarget target)
    {
        if (target.ProcessId is not { } pid)
            return null;
        if (target.InProcess)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
        }
        return ProcessProbe.ResidentKib(pid);
    }
}
