using System.Diagnostics;

namespace Skymesh.Bench;

/// <summary>What the workloads share: opening many logged-in connections, waiting for deliveries, measuring CPU.</summary>
internal static class Workload
{
    /// <summary>Receive buffer of a connection that carries load.</summary>
    public const int LoadReceiveBuffer = 64 * 1024;

    private static readonly TimeSpan SetupTimeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Opens <paramref name="count"/> connections, at most <paramref name="parallel"/> at a time (a burst of
    /// thousands would overflow the target's listen backlog), and sets each up: login, and subscription when
    /// <paramref name="topic"/> gives one.
    /// </summary>
    public static async Task<BenchConnection[]> ConnectAsync(BenchTarget target, int count, Func<int, string> id, Func<int, string?> topic,
        int receiveBufferSize, Func<int, LatencyProbe?> probe, int parallel, CancellationToken cancellationToken)
    {
        var connections = new BenchConnection?[count];
        try
        {
            await Parallel.ForAsync(0, count, new ParallelOptions { MaxDegreeOfParallelism = parallel, CancellationToken = cancellationToken },
                async (i, ct) =>
                {
                    try
                    {
                        var connection = await BenchConnection.ConnectAsync(target.EndPoint, target.Dialect, receiveBufferSize, probe(i), ct);
                        connections[i] = connection;
                        var setup = target.Dialect.Setup(id(i), topic(i), out var replies);
                        await connection.SetupAsync(setup, replies, SetupTimeout, ct);
                    }
                    catch (System.Net.Sockets.SocketException e)
                    {
                        throw new BenchException($"Connection {i + 1} of {count} to {target.Name} at {target.EndPoint} failed: {e.Message}", e);
                    }
                });
        }
        catch
        {
            await DisposeAllAsync(connections);
            throw;
        }
        return connections!;
    }

    public static async Task DisposeAllAsync(IEnumerable<BenchConnection?> connections)
    {
        foreach (var connection in connections)
        {
            if (connection is not null)
                await connection.DisposeAsync();
        }
    }

    public static long Deliveries(IReadOnlyList<BenchConnection> connections)
    {
        long sum = 0;
        foreach (var c in connections)
            sum += c.Deliveries;
        return sum;
    }

    public static long Oks(IReadOnlyList<BenchConnection> connections)
    {
        long sum = 0;
        foreach (var c in connections)
            sum += c.Oks;
        return sum;
    }

    public static long Errors(IReadOnlyList<BenchConnection> connections)
    {
        long sum = 0;
        foreach (var c in connections)
            sum += c.Errors;
        return sum;
    }

    public static int ClosedCount(IReadOnlyList<BenchConnection> connections) => connections.Count(c => c.Closed);

    public static long LastDelivery(IReadOnlyList<BenchConnection> connections)
    {
        long last = 0;
        foreach (var c in connections)
            last = Math.Max(last, c.LastDelivery);
        return last;
    }

    /// <summary>
    /// Waits until <paramref name="expected"/> deliveries beyond <paramref name="baseline"/> have arrived, nothing
    /// has arrived for the stall timeout, the workload timeout has passed, or every receiver is closed.
    /// Returns the deliveries counted.
    /// </summary>
    public static async Task<long> WaitForDeliveriesAsync(IReadOnlyList<BenchConnection> receivers, long baseline, long expected,
        SsmpBenchOptions options, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var lastChange = started;
        var last = -1L;
        while (true)
        {
            var delivered = Deliveries(receivers) - baseline;
            if (delivered >= expected)
                return delivered;
            var now = Stopwatch.GetTimestamp();
            if (delivered != last)
            {
                last = delivered;
                lastChange = now;
            }
            else if (Stopwatch.GetElapsedTime(lastChange, now) > options.StallTimeout)
            {
                return delivered;
            }
            if (Stopwatch.GetElapsedTime(started, now) > options.Timeout || ClosedCount(receivers) == receivers.Count)
                return delivered;
            await Task.Delay(2, cancellationToken);
        }
    }

    /// <summary>Waits (briefly) until the senders have had <paramref name="expected"/> successful responses.</summary>
    public static async Task<long> WaitForResponsesAsync(IReadOnlyList<BenchConnection> senders, long baseline, long expected, CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 5;
        while (true)
        {
            var oks = Oks(senders) - baseline;
            if (oks >= expected || Stopwatch.GetTimestamp() > deadline || ClosedCount(senders) == senders.Count)
                return oks;
            await Task.Delay(5, cancellationToken);
        }
    }

    /// <summary>True for the exceptions a send raises when the target has closed the connection (it is then counted as closed).</summary>
    public static bool IsConnectionLost(Exception e) => e is System.Net.Sockets.SocketException or ObjectDisposedException;

    /// <summary>Seconds from <paramref name="start"/> to <paramref name="end"/> Stopwatch timestamps.</summary>
    public static double Seconds(long start, long end) => (double)(end - start) / Stopwatch.Frequency;

    /// <summary>A text payload of <paramref name="size"/> bytes (no LF, nothing that SSMP would read as a binary prefix).</summary>
    public static byte[] Payload(int size)
    {
        var payload = new byte[size];
        for (var i = 0; i < size; i++)
            payload[i] = (byte)('a' + i % 26);
        return payload;
    }

    /// <summary>Waits for <paramref name="senders"/>; a sender still blocked after the workload is over is a failure of the target.</summary>
    public static async Task<T> JoinSendersAsync<T>(Task<T> senders, CancellationToken cancellationToken)
    {
        try
        {
            return await senders.WaitAsync(TimeSpan.FromSeconds(10), cancellationToken);
        }
        catch (TimeoutException)
        {
            throw new BenchException("The senders were still blocked 10 s after the deliveries stopped: the target stopped reading.");
        }
    }
}

/// <summary>CPU time of the target's process, of this one and of the whole machine over a measured phase.</summary>
internal readonly struct CpuMeter
{
    private readonly int? _targetPid;
    private readonly TimeSpan? _target;
    private readonly TimeSpan _self;
    private readonly double? _idle;
    private readonly long _started;
    private readonly Dictionary<int, (string Name, double Seconds)> _processes;

    public CpuMeter(BenchTarget target)
    {
        _targetPid = target.InProcess ? null : target.ProcessId;
        _target = _targetPid is { } pid ? ProcessProbe.CpuTime(pid) : null;
        _self = SelfCpu();
        _processes = ProcessProbe.AllProcessesCpu();
        _idle = ProcessProbe.MachineIdleSeconds();
        _started = Stopwatch.GetTimestamp();
    }

    /// <summary>Seconds used since this meter was made.</summary>
    public CpuUse Read()
    {
        double? target = null;
        if (_targetPid is { } pid && _target is { } before && ProcessProbe.CpuTime(pid) is { } after)
            target = (after - before).TotalSeconds;
        var generator = (SelfCpu() - _self).TotalSeconds;
        double? busy = null;
        if (_idle is { } idle0 && ProcessProbe.MachineIdleSeconds() is { } idle1)
            busy = Math.Max(0, Environment.ProcessorCount * Stopwatch.GetElapsedTime(_started).TotalSeconds - (idle1 - idle0));
        // The busiest other processes, so that a figure disturbed by someone else's work says so.
        var others = new List<(string, double)>();
        foreach (var (other, (name, seconds)) in ProcessProbe.AllProcessesCpu())
        {
            if (other == Environment.ProcessId || other == _targetPid)
                continue;
            var used = seconds - (_processes.TryGetValue(other, out var earlier) ? earlier.Seconds : 0);
            if (used >= 0.02)
                others.Add(($"{name}[{other}]", used));
        }
        return new CpuUse(target, generator, busy, [.. others.OrderByDescending(o => o.Item2).Take(3)]);
    }

    private static TimeSpan SelfCpu()
    {
        using var self = Process.GetCurrentProcess();
        return self.TotalProcessorTime;
    }
}

/// <summary>
/// CPU seconds over a measured phase: the target's process, this process, and the whole machine (all CPUs), so
/// that the share of other processes and of kernel work charged to no process (loopback softirq) shows too.
/// </summary>
internal readonly record struct CpuUse(double? Target, double Generator, double? MachineBusy, IReadOnlyList<(string Process, double Seconds)> Busiest)
{
    /// <summary>Machine busy time used by neither the target nor the generator: other processes and uncharged kernel work.</summary>
    public double? Others => MachineBusy is { } busy && Target is { } target ? Math.Max(0, busy - target - Generator) : null;
}

/// <summary>xorshift32: the cheapest decent generator, so that picking peers costs the load generator nothing.</summary>
internal struct FastRandom(uint seed)
{
    private uint _state = seed == 0 ? 0x9E3779B9u : seed;

    /// <summary>A number in [0, <paramref name="bound"/>).</summary>
    public int Next(int bound)
    {
        var x = _state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        _state = x;
        return (int)((ulong)x * (uint)bound >> 32);
    }
}
