using System.Collections.Concurrent;
using System.Net;
using System.Threading.Channels;
using Skymesh.Identity;

namespace Skymesh.Mesh.Interfaces;

/// <summary>The address of an in-memory interface.</summary>
public sealed class MemoryEndPoint(int port) : EndPoint
{
    public int Port { get; } = port;

    public override bool Equals(object? obj) => obj is MemoryEndPoint other && other.Port == Port;

    public override int GetHashCode() => Port;

    public override string ToString() => $"mem:{Port}";
}

/// <summary>
/// How the path from one in-memory interface to another misbehaves. All effects are drawn from the
/// network's seeded random source, so a run can be repeated.
/// </summary>
public sealed record Impairment
{
    public static Impairment None { get; } = new();

    /// <summary>One-way delay of every frame.</summary>
    public TimeSpan Latency { get; init; }

    /// <summary>Extra delay, uniform in [0, Jitter), drawn per frame; frames may overtake each other.</summary>
    public TimeSpan Jitter { get; init; }

    /// <summary>Share of frames lost, 0 to 1.</summary>
    public double Loss { get; init; }

    /// <summary>Share of frames delivered twice, 0 to 1.</summary>
    public double Duplication { get; init; }

    /// <summary>Share of frames held back by an extra <see cref="ReorderDelay"/>, so that later ones pass them.</summary>
    public double Reordering { get; init; }

    public TimeSpan ReorderDelay { get; init; } = TimeSpan.FromMilliseconds(5);

    /// <summary>Bytes per second the path carries (0 = unlimited); frames queue behind each other.</summary>
    public long BandwidthBytesPerSecond { get; init; }

    /// <summary>Frames that may wait in the path's queue; more are dropped (a router's tail drop).</summary>
    public int QueueLimit { get; init; } = 10_000;

    public bool IsNone => Latency == TimeSpan.Zero && Jitter == TimeSpan.Zero && Loss == 0 && Duplication == 0
        && Reordering == 0 && BandwidthBytesPerSecond == 0;

    public void Validate()
    {
        if (Latency < TimeSpan.Zero || Jitter < TimeSpan.Zero || ReorderDelay < TimeSpan.Zero)
            throw new ArgumentException("Delays cannot be negative.");
        if (Loss is < 0 or > 1 || Duplication is < 0 or > 1 || Reordering is < 0 or > 1)
            throw new ArgumentException("Loss, duplication and reordering are shares between 0 and 1.");
        if (BandwidthBytesPerSecond < 0 || QueueLimit < 1)
            throw new ArgumentException("Bandwidth cannot be negative and the queue holds at least one frame.");
    }
}

/// <summary>
/// A network of in-memory interfaces for tests and the simulator. Frames are copied on send and delivered
/// through each receiver's own queue and loop, never on the sender's stack; impairments (latency, jitter,
/// loss, duplication, reordering, bandwidth) run on the network's <see cref="TimeProvider"/>, so thousands
/// of nodes can share virtual time.
/// </summary>
public sealed class MemoryNetwork
{
    private readonly ConcurrentDictionary<int, MemoryInterface> _ports = new();
    private readonly ConcurrentDictionary<(int From, int To), DelayLine> _lines = new();
    private readonly ConcurrentDictionary<int, Impairment> _senders = new();
    private readonly Random _random;
    private readonly object _randomLock = new();
    private Impairment _default = Impairment.None;
    private int _nextPort;

    public MemoryNetwork(TimeProvider? time = null, int seed = 84)
    {
        Time = time ?? TimeProvider.System;
        _random = new Random(seed);
    }

    public TimeProvider Time { get; }

    /// <summary>Creates an interface on a new port of this network.</summary>
    public MemoryInterface CreateInterface(string? name = null, int mtu = Wire.MeshWire.MaxFrameLength, int receiveQueue = 4096)
    {
        while (true)
        {
            var port = Interlocked.Increment(ref _nextPort);
            var nic = new MemoryInterface(this, new MemoryEndPoint(port), name ?? $"mem{port}", mtu, receiveQueue);
            // A port taken by an interface created on a chosen port is skipped.
            if (_ports.TryAdd(port, nic))
                return nic;
        }
    }

    /// <summary>Creates an interface on <paramref name="port"/>; a port in use is refused, as a socket's would be.</summary>
    public MemoryInterface CreateInterface(int port, string? name = null, int mtu = Wire.MeshWire.MaxFrameLength, int receiveQueue = 4096)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(port);
        var nic = new MemoryInterface(this, new MemoryEndPoint(port), name ?? $"mem{port}", mtu, receiveQueue);
        if (!_ports.TryAdd(port, nic))
            throw new InvalidOperationException($"The memory address mem:{port} is in use.");
        return nic;
    }

    /// <summary>Impairment of every path from <paramref name="from"/> that has none of its own.</summary>
    public void SetSenderImpairment(MemoryEndPoint from, Impairment impairment)
    {
        ArgumentNullException.ThrowIfNull(from);
        impairment.Validate();
        _senders[from.Port] = impairment;
    }

    /// <summary>Impairment of every path that has none of its own.</summary>
    public void SetDefaultImpairment(Impairment impairment)
    {
        impairment.Validate();
        _default = impairment;
    }

    /// <summary>Impairment of the one-way path from <paramref name="from"/> to <paramref name="to"/>.</summary>
    public void SetImpairment(MemoryEndPoint from, MemoryEndPoint to, Impairment impairment)
    {
        impairment.Validate();
        Line(from.Port, to.Port).Impairment = impairment;
    }

    /// <summary>Cuts (or restores) both directions between two interfaces: every frame is lost.</summary>
    public void SetCut(MemoryEndPoint a, MemoryEndPoint b, bool cut)
    {
        Line(a.Port, b.Port).Cut = cut;
        Line(b.Port, a.Port).Cut = cut;
    }

    internal void Remove(MemoryInterface nic)
    {
        _ports.TryRemove(new KeyValuePair<int, MemoryInterface>(nic.Port, nic));
        _senders.TryRemove(nic.Port, out _);
    }

    internal bool Transmit(MemoryInterface from, MemoryEndPoint to, ReadOnlySpan<byte> frame)
    {
        if (!_ports.TryGetValue(to.Port, out var target))
            return false;
        var line = Line(from.Port, to.Port);
        if (line.Cut)
            return true; // sent, and lost on the way
        var impairment = line.Impairment ?? (_senders.TryGetValue(from.Port, out var own) ? own : _default);
        if (impairment.IsNone)
            return target.Arrive(from.EndPoint, frame.ToArray());
        double lossDraw, dupDraw, reorderDraw, jitterDraw;
        lock (_randomLock)
        {
            lossDraw = _random.NextDouble();
            dupDraw = _random.NextDouble();
            reorderDraw = _random.NextDouble();
            jitterDraw = _random.NextDouble();
        }
        if (lossDraw < impairment.Loss)
            return true;
        var delay = impairment.Latency + impairment.Jitter * jitterDraw;
        if (reorderDraw < impairment.Reordering)
            delay += impairment.ReorderDelay;
        var copy = frame.ToArray();
        line.Schedule(target, from.EndPoint, copy, delay, impairment);
        if (dupDraw < impairment.Duplication)
            line.Schedule(target, from.EndPoint, copy, delay + impairment.Jitter * (1 - jitterDraw), impairment);
        return true;
    }

    private DelayLine Line(int from, int to) => _lines.GetOrAdd((from, to), static (_, time) => new DelayLine(time), Time);

    /// <summary>Frames in flight on one path, released to the receiver at their due time by one timer.</summary>
    private sealed class DelayLine
    {
        private readonly TimeProvider _time;
        private readonly PriorityQueue<(MemoryInterface Target, MemoryEndPoint From, byte[] Frame), (long Due, long Order)> _queue = new();
        private readonly object _sync = new();
        private readonly ITimer _timer;
        private long _busyUntil;
        private long _order;

        public DelayLine(TimeProvider time)
        {
            _time = time;
            _timer = time.CreateTimer(static s => ((DelayLine)s!).Release(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }

        public Impairment? Impairment { get; set; }

        public bool Cut { get; set; }

        public void Schedule(MemoryInterface target, MemoryEndPoint from, byte[] frame, TimeSpan delay, Impairment impairment)
        {
            lock (_sync)
            {
                if (_queue.Count >= impairment.QueueLimit)
                {
                    target.Counters.ReceiveDropped();
                    return;
                }
                var now = _time.GetUtcNow().UtcTicks;
                var departs = now;
                if (impairment.BandwidthBytesPerSecond > 0)
                {
                    // Serialisation: a frame leaves when the one before it has, and takes size/bandwidth.
                    departs = Math.Max(now, _busyUntil) + frame.Length * TimeSpan.TicksPerSecond / impairment.BandwidthBytesPerSecond;
                    _busyUntil = departs;
                }
                var due = departs + delay.Ticks;
                // Equal due times keep their sending order.
                var key = (due, _order++);
                _queue.Enqueue((target, from, frame), key);
                if (_queue.TryPeek(out _, out var head) && head == key)
                    _timer.Change(TimeSpan.FromTicks(Math.Max(0, due - now)), Timeout.InfiniteTimeSpan);
            }
        }

        private void Release()
        {
            var ready = new List<(MemoryInterface, MemoryEndPoint, byte[])>();
            lock (_sync)
            {
                var now = _time.GetUtcNow().UtcTicks;
                while (_queue.TryPeek(out var item, out var key) && key.Due <= now)
                {
                    _queue.Dequeue();
                    ready.Add(item);
                }
                if (_queue.TryPeek(out _, out var next))
                    _timer.Change(TimeSpan.FromTicks(Math.Max(1, next.Due - now)), Timeout.InfiniteTimeSpan);
            }
            foreach (var (target, from, frame) in ready)
                target.Arrive(from, frame);
        }
    }
}

/// <summary>An interface on a <see cref="MemoryNetwork"/>.</summary>
public sealed class MemoryInterface : IMeshInterface
{
    private readonly MemoryNetwork _network;
    private readonly Channel<(MemoryEndPoint From, byte[] Frame)> _inbox;
    private Task? _loop;
    private int _closed;

    internal MemoryInterface(MemoryNetwork network, MemoryEndPoint endPoint, string name, int mtu, int receiveQueue)
    {
        if (mtu is < Wire.MeshWire.MinMtu or > Wire.MeshWire.MaxFrameLength)
            throw new ArgumentOutOfRangeException(nameof(mtu), mtu, $"An MTU is {Wire.MeshWire.MinMtu} to {Wire.MeshWire.MaxFrameLength} bytes.");
        _network = network;
        EndPoint = endPoint;
        Name = name;
        Mtu = mtu;
        _inbox = Channel.CreateBounded<(MemoryEndPoint, byte[])>(new BoundedChannelOptions(receiveQueue)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.DropWrite,
        }, _ => Counters.ReceiveDropped());
    }

    public string Name { get; }

    public int Mtu { get; }

    public MemoryEndPoint EndPoint { get; }

    public EndPoint LocalEndPoint => EndPoint;

    internal int Port => EndPoint.Port;

    public InterfaceCounters Counters { get; } = new();

    public void Start(FrameHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (_loop is not null)
            throw new InvalidOperationException("The interface has already started.");
        // In the background on the caller's scheduler (the pool, or a simulation's), never on a synchronization context.
        _loop = Background.Run(() => ReceiveLoopAsync(handler));
    }

    private async Task ReceiveLoopAsync(FrameHandler handler)
    {
        // Not ReadAllAsync: its awaits leave the caller's scheduler, and a simulation must keep every frame on its own.
        var reader = _inbox.Reader;
        while (await reader.WaitToReadAsync())
        {
            while (reader.TryRead(out var item))
            {
                var (from, frame) = item;
                Counters.Received(frame.Length);
                try
                {
                    handler(this, from, frame);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    // A fault in whoever handles frames must not stop the interface for every other link.
                    Counters.HandlerFailed(e);
                }
            }
        }
    }

    public bool TrySend(EndPoint to, ReadOnlySpan<byte> frame)
    {
        if (Volatile.Read(ref _closed) != 0 || frame.Length > Mtu || to is not MemoryEndPoint target || !_network.Transmit(this, target, frame))
        {
            Counters.SendDropped();
            return false;
        }
        Counters.Sent(frame.Length);
        return true;
    }

    internal bool Arrive(MemoryEndPoint from, byte[] frame)
    {
        if (Volatile.Read(ref _closed) != 0 || frame.Length > Mtu)
        {
            Counters.ReceiveDropped();
            return true;
        }
        _inbox.Writer.TryWrite((from, frame));
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
            return;
        _network.Remove(this);
        _inbox.Writer.TryComplete();
        if (_loop is not null)
            await _loop;
    }
}
