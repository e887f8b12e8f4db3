using Microsoft.Extensions.Time.Testing;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Paths;

/// <summary>How one direction of a simulated path misbehaves.</summary>
internal sealed record Conditions
{
    public static Conditions Clean { get; } = new();

    /// <summary>One-way propagation delay.</summary>
    public TimeSpan Latency { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Extra delay, uniform in [0, Jitter).</summary>
    public TimeSpan Jitter { get; init; }

    public double Loss { get; init; }

    public double Duplication { get; init; }

    /// <summary>Share of messages held back by <see cref="ReorderDelay"/>, so later ones overtake them.</summary>
    public double Reordering { get; init; }

    public TimeSpan ReorderDelay { get; init; } = TimeSpan.FromMilliseconds(5);

    /// <summary>Share of messages that arrive with one bit flipped.</summary>
    public double Corruption { get; init; }

    /// <summary>Bytes per second the line carries (0: unlimited); messages queue for it.</summary>
    public long BandwidthBytesPerSecond { get; init; }

    /// <summary>Messages that may wait for the line; more are dropped (a router's tail drop).</summary>
    public int QueueLimit { get; init; } = int.MaxValue;
}

/// <summary>
/// One direction of a path for tests: messages are copied on send and delivered by a timer of the shared
/// <see cref="FakeTimeProvider"/>, so everything happens on the thread that advances time, in an order fixed
/// by the seed. Never delivers from inside <see cref="TrySend"/>.
/// </summary>
internal sealed class SimulatedChannel : IPathChannel
{
    // Bytes of link framing counted against the bandwidth with each message (the link's message header).
    private const int Framing = 8;

    private readonly FakeTimeProvider _time;
    private readonly Random _random;
    private readonly PriorityQueue<(byte Type, byte[] Payload), (long Due, long Order)> _inFlight = new();
    private readonly Queue<long> _departures = new();
    private readonly ITimer _timer;
    private long _busyUntil;
    private long _order;
    private long _timerDue = long.MaxValue;

    public SimulatedChannel(FakeTimeProvider time, Conditions conditions, int maxPayload, int seed)
    {
        _time = time;
        _random = new Random(seed);
        Conditions = conditions;
        MaxPayload = maxPayload;
        _timer = time.CreateTimer(static state => ((SimulatedChannel)state!).Release(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public int MaxPayload { get; }

    public Conditions Conditions { get; set; }

    /// <summary>A dead channel takes every message and delivers none.</summary>
    public bool Dead { get; set; }

    /// <summary>Where messages arrive (the far endpoint's OnMessage).</summary>
    public Action<byte, byte[]>? Deliver { get; set; }

    /// <summary>Sees every message as it was sent.</summary>
    public Action<byte, byte[]>? Tap { get; set; }

    public long Sent { get; private set; }

    public long BytesSent { get; private set; }

    public long Delivered { get; private set; }

    public long Lost { get; private set; }

    public long QueueDrops { get; private set; }

    public long Duplicated { get; private set; }

    private long Now => _time.GetUtcNow().UtcTicks;

    public bool TrySend(byte type, ReadOnlySpan<byte> payload)
    {
        Assert.True(payload.Length <= MaxPayload, $"a {payload.Length}-byte message on a channel of {MaxPayload}");
        var copy = payload.ToArray();
        Sent++;
        BytesSent += copy.Length;
        Tap?.Invoke(type, copy);
        if (Dead)
        {
            Lost++;
            return true;
        }
        var conditions = Conditions;
        var now = Now;
        var departs = now;
        if (conditions.BandwidthBytesPerSecond > 0)
        {
            while (_departures.Count > 0 && _departures.Peek() <= now)
                _departures.Dequeue();
            if (_departures.Count >= conditions.QueueLimit)
            {
                QueueDrops++;
                return true;
            }
            departs = Math.Max(now, _busyUntil) + (copy.Length + Framing) * TimeSpan.TicksPerSecond / conditions.BandwidthBytesPerSecond;
            _busyUntil = departs;
            _departures.Enqueue(departs);
        }
        if (_random.NextDouble() < conditions.Loss)
        {
            Lost++;
            return true;
        }
        Schedule(type, Corrupt(copy, conditions), departs + Delay(conditions));
        if (_random.NextDouble() < conditions.Duplication)
        {
            Duplicated++;
            Schedule(type, Corrupt(copy.ToArray(), conditions), departs + Delay(conditions));
        }
        return true;
    }

    private long Delay(Conditions conditions)
    {
        var delay = conditions.Latency.Ticks + (long)(conditions.Jitter.Ticks * _random.NextDouble());
        if (_random.NextDouble() < conditions.Reordering)
            delay += conditions.ReorderDelay.Ticks;
        return delay;
    }

    private byte[] Corrupt(byte[] payload, Conditions conditions)
    {
        if (conditions.Corruption > 0 && payload.Length > 0 && _random.NextDouble() < conditions.Corruption)
        {
            var bit = _random.Next(payload.Length * 8);
            payload[bit / 8] ^= (byte)(1 << (bit % 8));
        }
        return payload;
    }

    private void Schedule(byte type, byte[] payload, long due)
    {
        _inFlight.Enqueue((type, payload), (due, _order++));
        Arm();
    }

    private void Arm()
    {
        if (!_inFlight.TryPeek(out _, out var head))
            return;
        if (head.Due == _timerDue)
            return;
        _timerDue = head.Due;
        _timer.Change(TimeSpan.FromTicks(Math.Max(0, head.Due - Now)), Timeout.InfiniteTimeSpan);
    }

    private void Release()
    {
        _timerDue = long.MaxValue;
        var now = Now;
        while (_inFlight.TryPeek(out var message, out var key) && key.Due <= now)
        {
            _inFlight.Dequeue();
            if (Dead)
            {
                Lost++;
                continue;
            }
            Delivered++;
            Deliver?.Invoke(message.Type, message.Payload);
        }
        Arm();
    }
}
