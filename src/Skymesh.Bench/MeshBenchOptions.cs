namespace Skymesh.Bench;

/// <summary>How to start this same program (<c>skymesh</c>) as a child: the executable, and the arguments before the subcommand.</summary>
public sealed record SkymeshLaunch(string FileName, IReadOnlyList<string> Prefix);

/// <summary>Settings of <c>skymesh bench mesh</c>.</summary>
public sealed class MeshBenchOptions
{
    /// <summary>Starts the <c>skymesh node</c> children (relay, and the four nodes of the iperf3 chain).</summary>
    public SkymeshLaunch? Launch { get; init; }

    /// <summary>Measured time of each throughput run (relay, raw UDP).</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Unmeasured time before each throughput run, so that both sides run recompiled (tier-1, PGO) code.</summary>
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Payload bytes of each relayed message and each raw datagram.</summary>
    public int PayloadSize { get; init; } = 64;

    /// <summary>
    /// Messages the relay sender keeps in flight at most (sent, not yet counted by the receiver): enough to fill
    /// frames to the MTU at every hop, few enough that the 4 MiB socket buffers never overflow.
    /// </summary>
    public int Window { get; init; } = 32_768;

    /// <summary>Skip the iperf3 part (b).</summary>
    public bool SkipIperf { get; init; }

    /// <summary>Length of each iperf3 run (<c>-t</c>).</summary>
    public int IperfSeconds { get; init; } = 10;

    /// <summary>Parallel streams of the extra multi-stream 3-hop run; 0 skips it.</summary>
    public int IperfParallel { get; init; } = 4;

    public string Iperf3Path { get; init; } = "iperf3";

    /// <summary>The MTU of the iperf3 chain's UDP interfaces; null: the largest frame (loopback's default).</summary>
    public int? ChainMtu { get; init; }

    /// <summary>Skip the VPN part (d) of the iperf3 runs.</summary>
    public bool SkipVpn { get; init; }

    /// <summary>Skip the latency part (c).</summary>
    public bool SkipLatency { get; init; }

    /// <summary>Timestamped probe messages per route of the latency run (via the relay, and direct).</summary>
    public int Probes { get; init; } = 2_000;

    /// <summary>Time between two probes.</summary>
    public TimeSpan ProbeInterval { get; init; } = TimeSpan.FromMilliseconds(1);

    /// <summary>Background load of the latency part, as a fraction of the relay rate measured in the same run.</summary>
    public double LatencyLoad { get; init; } = 0.5;

    /// <summary>Longest any one step may take: starting a node, setting up links, one iperf3 run beyond its -t.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first value out of range.</summary>
    public void Validate()
    {
        if (Launch is null)
            throw new ArgumentException("The bench needs a way to start `skymesh node` children.");
        if (Duration < TimeSpan.FromMilliseconds(100) || Duration > TimeSpan.FromHours(1))
            throw new ArgumentException("--duration must be 0.1 to 3600 seconds.");
        if (Warmup < TimeSpan.Zero || Warmup > TimeSpan.FromMinutes(10))
            throw new ArgumentException("--warmup must be 0 to 600 seconds.");
        // Probes carry their index and a timestamp (12 bytes); the payload must fit one loopback frame.
        if (PayloadSize is < 12 or > 60_000)
            throw new ArgumentException($"--payload-size must be 12 to 60000 bytes; got {PayloadSize}.");
        if (Window < 1)
            throw new ArgumentException($"--window must be at least 1 message; got {Window}.");
        if (ChainMtu is { } mtu && mtu is < 576 or > 65_507)
            throw new ArgumentException($"--chain-mtu must be 576 to 65507 bytes; got {mtu}.");
        if (IperfSeconds is < 1 or > 3600)
            throw new ArgumentException($"--iperf-seconds must be 1 to 3600; got {IperfSeconds}.");
        if (IperfParallel is < 0 or > 128)
            throw new ArgumentException($"--iperf-parallel must be 0 to 128; got {IperfParallel}.");
        if (string.IsNullOrWhiteSpace(Iperf3Path))
            throw new ArgumentException("--iperf3 must name an executable.");
        if (Probes < 10)
            throw new ArgumentException($"--probes must be at least 10; got {Probes}.");
        if (ProbeInterval < TimeSpan.FromMicroseconds(100) || ProbeInterval > TimeSpan.FromSeconds(1))
            throw new ArgumentException("--probe-interval must be 0.1 to 1000 ms.");
        if (!(LatencyLoad >= 0) || LatencyLoad > 1)
            throw new ArgumentException("--latency-load must be between 0 and 1 (a fraction of the measured relay rate).");
        if (Timeout <= TimeSpan.Zero)
            throw new ArgumentException("--timeout must be a positive number of seconds.");
    }
}
