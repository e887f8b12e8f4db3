using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Skymesh.Bench;

/// <summary>What an <see cref="ImpairingRelay"/> does to every datagram, in each direction.</summary>
public sealed record ImpairmentSettings
{
    /// <summary>Share of datagrams dropped, 0 to 1.</summary>
    public double Loss { get; init; }

    /// <summary>Share of datagrams sent twice, 0 to 1.</summary>
    public double Duplication { get; init; }

    /// <summary>Share of datagrams held back by <see cref="ReorderDelay"/> more, so that later ones pass them, 0 to 1.</summary>
    public double Reordering { get; init; }

    /// <summary>Delay added to every datagram.</summary>
    public TimeSpan Delay { get; init; }

    /// <summary>Extra delay of a reordered datagram.</summary>
    public TimeSpan ReorderDelay { get; init; } = TimeSpan.FromMilliseconds(1);

    public int Seed { get; init; } = 84;

    public void Validate()
    {
        if (Loss is < 0 or > 1 || Duplication is < 0 or > 1 || Reordering is < 0 or > 1)
            throw new ArgumentException("Loss, duplication and reordering are shares from 0 to 1.");
        if (Delay < TimeSpan.Zero || Delay > TimeSpan.FromSeconds(10) || ReorderDelay < TimeSpan.Zero || ReorderDelay > TimeSpan.FromSeconds(10))
            throw new ArgumentException("Delays are 0 to 10 s.");
    }

    public override string ToString() =>
        FormattableString.Invariant($"{Loss:P1} loss, {Duplication:P1} duplicated, {Reordering:P1} reordered by {ReorderDelay.TotalMilliseconds:0.#} ms, {Delay.TotalMilliseconds:0.#} ms delay");
}

/// <summary>
/// A UDP relay that stands between two nodes on loopback and misbehaves as a radio link does: it loses, duplicates,
/// reorders and delays datagrams, in both directions, from a seeded random source. The kernel here has no netem, so
/// this is how impairments reach real node processes. One node sends to <see cref="FrontEnd"/> (its neighbour's
/// endpoint, as far as it knows); the relay passes that on to the target from a socket of its own, and what comes
/// back to that socket goes to whoever last sent to the front.
/// </summary>
public sealed class ImpairingRelay : IDisposable
{
    private readonly Socket _front;
    private readonly Socket _back;
    private readonly IPEndPoint _target;
    private readonly Direction _toTarget;
    private readonly Direction _toSource;
    private readonly Thread[] _threads;
    private volatile bool _stopping;
    private volatile IPEndPoint? _source;

    public ImpairingRelay(IPEndPoint target, ImpairmentSettings settings)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        _target = target;
        _front = Bind(target.AddressFamily);
        _back = Bind(target.AddressFamily);
        FrontEnd = (IPEndPoint)_front.LocalEndPoint!;
        _settings = settings;
        _toTarget = new Direction(this, settings.Seed, () => _target, _back);
        _toSource = new Direction(this, settings.Seed + 1, () => _source, _front);
        _threads =
        [
            new Thread(() => Receive(_front, _toTarget, remember: true)) { IsBackground = true, Name = "relay front" },
            new Thread(() => Receive(_back, _toSource, remember: false)) { IsBackground = true, Name = "relay back" },
            new Thread(_toTarget.Run) { IsBackground = true, Name = "relay to target" },
            new Thread(_toSource.Run) { IsBackground = true, Name = "relay to source" },
        ];
        foreach (var thread in _threads)
            thread.Start();
    }

    private volatile ImpairmentSettings _settings;

    /// <summary>What the relay does now; may be changed while it runs (the seed stays the first one's).</summary>
    public ImpairmentSettings Settings
    {
        get => _settings;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            value.Validate();
            _settings = value;
        }
    }

    /// <summary>Where a node sends to reach the target through the relay.</summary>
    public IPEndPoint FrontEnd { get; }

    public long Passed => _toTarget.Passed + _toSource.Passed;

    public long Dropped => _toTarget.Dropped + _toSource.Dropped;

    public long Duplicated => _toTarget.Duplicated + _toSource.Duplicated;

    public long Reordered => _toTarget.Reordered + _toSource.Reordered;

    private static Socket Bind(AddressFamily family)
    {
        var socket = new Socket(family, SocketType.Dgram, ProtocolType.Udp);
        socket.ReceiveBufferSize = 4 << 20;
        socket.SendBufferSize = 4 << 20;
        socket.Bind(new IPEndPoint(family == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Loopback : IPAddress.Loopback, 0));
        return socket;
    }

    private void Receive(Socket socket, Direction direction, bool remember)
    {
        var buffer = new byte[65_536];
        EndPoint from = new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        while (!_stopping)
        {
            int n;
            try
            {
                n = socket.ReceiveFrom(buffer, ref from);
            }
            catch (SocketException) when (!_stopping)
            {
                continue;
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }
            if (remember)
                _source = (IPEndPoint)from;
            direction.Offer(buffer.AsSpan(0, n));
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _toTarget.Stop();
        _toSource.Stop();
        _front.Dispose();
        _back.Dispose();
        foreach (var thread in _threads)
            thread.Join(TimeSpan.FromSeconds(2));
    }

    /// <summary>One direction: the random choices, and a delay line served by a thread of its own.</summary>
    private sealed class Direction(ImpairingRelay relay, int seed, Func<IPEndPoint?> destination, Socket socket)
    {
        private readonly Random _random = new(seed);
        private readonly PriorityQueue<byte[], (long Due, long Order)> _line = new();
        private readonly object _lock = new();
        private long _order;
        private long _passed, _dropped, _duplicated, _reordered;

        public long Passed => Interlocked.Read(ref _passed);

        public long Dropped => Interlocked.Read(ref _dropped);

        public long Duplicated => Interlocked.Read(ref _duplicated);

        public long Reordered => Interlocked.Read(ref _reordered);

        public void Offer(ReadOnlySpan<byte> datagram)
        {
            var settings = relay._settings;
            bool drop, twice, late;
            lock (_lock)
            {
                drop = _random.NextDouble() < settings.Loss;
                twice = _random.NextDouble() < settings.Duplication;
                late = _random.NextDouble() < settings.Reordering;
            }
            if (drop)
            {
                Interlocked.Increment(ref _dropped);
                return;
            }
            var delay = settings.Delay + (late ? settings.ReorderDelay : TimeSpan.Zero);
            if (late)
                Interlocked.Increment(ref _reordered);
            var copies = twice ? 2 : 1;
            if (twice)
                Interlocked.Increment(ref _duplicated);
            var bytes = datagram.ToArray();
            if (delay == TimeSpan.Zero)
            {
                for (var i = 0; i < copies; i++)
                    Send(bytes);
                return;
            }
            var due = Stopwatch.GetTimestamp() + (long)(delay.TotalSeconds * Stopwatch.Frequency);
            lock (_lock)
            {
                for (var i = 0; i < copies; i++)
                    _line.Enqueue(bytes, (due, _order++));
                Monitor.PulseAll(_lock);
            }
        }

        public void Run()
        {
            while (!relay._stopping)
            {
                byte[] ready;
                lock (_lock)
                {
                    if (!_line.TryPeek(out _, out var key))
                    {
                        Monitor.Wait(_lock, 100);
                        continue;
                    }
                    var wait = key.Due - Stopwatch.GetTimestamp();
                    if (wait > 0)
                    {
                        // The kernel's timer decides how exact this is: a sleep of 1 ms or a little more.
                        Monitor.Wait(_lock, Math.Max(1, (int)(wait * 1000 / Stopwatch.Frequency)));
                        continue;
                    }
                    ready = _line.Dequeue();
                }
                Send(ready);
            }
        }

        public void Stop()
        {
            lock (_lock)
                Monitor.PulseAll(_lock);
        }

        private void Send(byte[] datagram)
        {
            if (destination() is not { } to)
                return;
            try
            {
                socket.SendTo(datagram, to);
                Interlocked.Increment(ref _passed);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // A full buffer or a closed relay: the datagram is lost, as on any link.
            }
        }
    }
}
