using System.Net;
using Microsoft.Extensions.Logging;

namespace Skymesh.Bench;

public enum BenchWorkload
{
    /// <summary>N connections UCAST pipelined 100-byte payloads to random peers (the original SSMP benchmark).</summary>
    Ucast,

    /// <summary>One publisher MCASTs to a topic with K subscribers.</summary>
    Fanout,

    /// <summary>A few sender/receiver pairs at a modest rate; one-way latency percentiles.</summary>
    Latency,

    /// <summary>Many logged-in idle connections; memory the target grows by per connection.</summary>
    Idle,
}

public enum BrokerMode
{
    /// <summary>A <c>skymesh broker</c> child process, started per workload.</summary>
    Process,

    /// <summary>A broker inside the bench's own process (shares its CPU, GC and thread pool).</summary>
    InProcess,

    /// <summary>A broker someone else started (<c>--target</c>).</summary>
    External,
}

/// <summary>How to start <c>skymesh broker</c> as a child process; it must print "listening on ADDRESS:PORT".</summary>
public sealed record BrokerLaunch(string FileName, IReadOnlyList<string> Arguments);

public sealed class SsmpBenchOptions
{
    public IReadOnlyList<BenchWorkload> Workloads { get; init; } = [BenchWorkload.Ucast, BenchWorkload.Fanout, BenchWorkload.Latency];

    public BrokerMode Broker { get; init; } = BrokerMode.Process;

    /// <summary>Required with <see cref="BrokerMode.Process"/>.</summary>
    public BrokerLaunch? BrokerLaunch { get; init; }

    /// <summary>Required with <see cref="BrokerMode.External"/>.</summary>
    public IPEndPoint? Target { get; init; }

    /// <summary>Process id of the external broker, so that its CPU time and memory can be read from /proc.</summary>
    public int? TargetProcessId { get; init; }

    /// <summary>Run every workload against nats-server too, in the same run.</summary>
    public bool Nats { get; init; }

    public string NatsServerPath { get; init; } = "nats-server";

    /// <summary>ucast: connections, each of which sends and receives.</summary>
    public int Connections { get; init; } = 100;

    /// <summary>ucast: requests each connection sends.</summary>
    public int MessagesPerConnection { get; init; } = 10_000;

    /// <summary>idle: connections opened and left idle.</summary>
    public int IdleConnections { get; init; } = 10_000;

    /// <summary>idle: connections opened first and not counted, so that start-up costs (JIT, pools) fall outside the measurement.</summary>
    public int IdleWarmupConnections { get; init; } = 100;

    /// <summary>
    /// idle: keepalive rounds the idle connections are held through after the first reading (each a PING from
    /// the target and its PONG), with memory read after each. Brokers this bench starts PING every
    /// <see cref="IdlePingInterval"/>; an external one at whatever interval it was started with.
    /// </summary>
    public int IdleKeepaliveRounds { get; init; } = 3;

    /// <summary>idle: the PING interval given to brokers this bench starts.</summary>
    public TimeSpan IdlePingInterval { get; init; } = TimeSpan.FromSeconds(1);

    public int Subscribers { get; init; } = 10;

    /// <summary>fanout: messages the publisher sends (each is delivered to every subscriber).</summary>
    public int FanoutMessages { get; init; } = 200_000;

    public int LatencyPairs { get; init; } = 4;

    /// <summary>latency: messages each pair measures.</summary>
    public int LatencySamples { get; init; } = 2_500;

    /// <summary>latency: messages per second per pair (each also waits for the previous one to arrive).</summary>
    public double LatencyRate { get; init; } = 200;

    public int PayloadSize { get; init; } = 100;

    /// <summary>Requests per socket write.</summary>
    public int Batch { get; init; } = 8;

    /// <summary>
    /// Fraction of each workload sent first, unmeasured, so that both sides run fully optimised code when the clock
    /// starts (.NET compiles hot methods again, with profile data, after they have run a while).
    /// </summary>
    public double Warmup { get; init; } = 1;

    /// <summary>Longest a workload may take; also the longest wait for the last deliveries.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>Give up waiting for deliveries when none has arrived for this long.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Receive buffer of the in-process broker's busy connections; null keeps the broker's default.</summary>
    public int? BrokerReceiveBufferSize { get; init; }

    public int Seed { get; init; } = 1;

    /// <summary>ucast and fanout: measured runs on the same connections; the median is reported (a shared machine is noisy).</summary>
    public int Repeat { get; init; } = 5;

    /// <summary>Logging of the in-process broker.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first value that is out of range.</summary>
    public void Validate()
    {
        if (Workloads.Count == 0)
            throw new ArgumentException("Choose at least one workload.");
        AtLeast(Connections, 2, "connections");
        AtLeast(MessagesPerConnection, 1, "messages");
        AtLeast(IdleConnections, 1, "idle connections");
        AtLeast(IdleWarmupConnections, 0, "idle warm-up connections");
        AtLeast(IdleKeepaliveRounds, 0, "idle keepalive rounds");
        if (IdlePingInterval < TimeSpan.FromSeconds(1))
            throw new ArgumentException($"The idle PING interval must be at least 1 s; got {IdlePingInterval.TotalSeconds} s.");
        AtLeast(Subscribers, 1, "subscribers");
        AtLeast(FanoutMessages, 1, "fanout messages");
        AtLeast(LatencyPairs, 1, "latency pairs");
        AtLeast(LatencySamples, 1, "latency samples");
        AtLeast(Batch, 1, "batch");
        AtLeast(Repeat, 1, "repeats");
        if (PayloadSize is < 20 or > 1024)
            throw new ArgumentException("The payload size must be 20 to 1024 bytes (latency samples carry a timestamp).");
        if (!(LatencyRate > 0) || !double.IsFinite(LatencyRate))
            throw new ArgumentException("The latency rate must be a positive number of messages per second.");
        if (!(Warmup >= 0) || Warmup > 10)
            throw new ArgumentException("The warm-up fraction must be between 0 and 10.");
        if (Timeout <= TimeSpan.Zero || StallTimeout <= TimeSpan.Zero)
            throw new ArgumentException("Timeouts must be positive.");
        switch (Broker)
        {
            case BrokerMode.Process when BrokerLaunch is null:
                throw new ArgumentException("A broker process needs a launch command.");
            case BrokerMode.External when Target is null:
                throw new ArgumentException("An external broker needs its address.");
        }
    }

    private static void AtLeast(int value, int least, string name)
    {
        if (value < least)
            throw new ArgumentException($"The number of {name} must be at least {least}; got {value}.");
    }
}
