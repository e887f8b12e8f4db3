using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Net;
using Skymesh.Identity;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Interfaces;

/// <summary>Settings of a <see cref="TcpInterface"/>.</summary>
public sealed class TcpInterfaceOptions
{
    /// <summary>Name shown in link listings; "tcp:" and the listening address when null.</summary>
    public string? Name { get; set; }

    /// <summary>Largest frame sent or accepted; a record announcing a longer one closes its connection.</summary>
    public int Mtu { get; set; } = MeshWire.MaxFrameLength;

    /// <summary>Bytes (frames and their length prefixes) queued towards one connection before more are dropped.</summary>
    public int SendQueueBytes { get; set; } = 8 * 1024 * 1024;

    /// <summary>Connections from other nodes held at once; more are closed as soon as they are accepted.</summary>
    public int MaxAcceptedConnections { get; set; } = 1024;

    /// <summary>How long a connection has, from its accept or the start of its dial, to deliver the peer's preamble.</summary>
    public TimeSpan PreambleTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Accepted connections that may wait for their preamble at once. A real neighbour sends it at once; idle
    /// connections beyond this are closed oldest first, so a flood of them cannot keep a neighbour out.
    /// </summary>
    public int MaxPendingConnections { get; set; } = 64;

    /// <summary>How long an accepted connection has to deliver its preamble (a dial of ours gets <see cref="PreambleTimeout"/>).</summary>
    public TimeSpan AcceptedPreambleTimeout { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>Least time between two dials to one neighbour; doubled after each dial that fails, up to <see cref="MaxRedialDelay"/>.</summary>
    public TimeSpan RedialDelay { get; set; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxRedialDelay { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Connections the operating system may hold for the listener before they are accepted.</summary>
    public int ListenBacklog { get; set; } = 512;

    public void Validate()
    {
        if (Mtu is < MeshWire.MinMtu or > MeshWire.MaxFrameLength)
            throw new ArgumentOutOfRangeException(nameof(Mtu), Mtu, $"An MTU is {MeshWire.MinMtu} to {MeshWire.MaxFrameLength} bytes.");
        if (SendQueueBytes < 2 * (MeshWire.MaxFrameLength + TcpInterface.LengthPrefixLength))
            throw new ArgumentOutOfRangeException(nameof(SendQueueBytes), SendQueueBytes, "The send queue must hold at least two of the largest frames.");
        if (MaxAcceptedConnections < 1 || ListenBacklog < 1 || MaxPendingConnections < 1 || AcceptedPreambleTimeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(MaxAcceptedConnections), "At least one connection and a backlog of one.");
        if (PreambleTimeout <= TimeSpan.Zero || RedialDelay <= TimeSpan.Zero || MaxRedialDelay < RedialDelay)
            throw new ArgumentException("The preamble timeout and redial delay must be positive, and MaxRedialDelay at least RedialDelay.");
    }
}

/// <summary>
/// A TCP interface (docs/wire-format.md, "TCP interface"): it listens for neighbours and dials the ones it
/// sends to, and carries frames as length-delimited records. Each direction of a connection starts with an
/// 8-byte preamble that names the sender's listening port, so a neighbour is known by one endpoint — the
/// address we dial it at, or its source address with the port its preamble announces — whichever side opened
/// the connection, and a link's replies go back over the connection its frames came on.
/// </summary>
/// <remarks>
/// Sending never blocks: a frame is appended to its connection's queue and a single writer per connection
/// writes everything queued in one socket write. A full queue (or a neighbour being redialled too soon)
/// drops the frame and counts it. Every connection has its own receive loop; frames from one neighbour are
/// handed over one at a time, frames from different neighbours concurrently. When two nodes dial each other
/// at once both connections are kept: each side goes on sending on the one it had first, and the other takes
/// over if that one ends.
/// </remarks>
public sealed partial class TcpInterface : IMeshInterface
{
    /// <summary>Bytes of the preamble each side sends first on every connection.</summary>
    public const int PreambleLength = 8;

    /// <summary>Version of the TCP preamble and framing.</summary>
    public const byte PreambleVersion = 1;

    /// <summary>Bytes of the big-endian length before each frame.</summary>
    public const int LengthPrefixLength = 2;

    /// <summary>"SKYT": the first four bytes of every Skymesh TCP connection.</summary>
    public static ReadOnlySpan<byte> PreambleMagic => "SKYT"u8;

    private readonly Socket _listener;
    private readonly TcpInterfaceOptions _options;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<EndPoint, Neighbour> _neighbours = new();
    private readonly HashSet<Connection> _connections = [];
    private readonly CancellationTokenSource _closing = new();
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly byte[] _preamble;
    private FrameHandler? _handler;
    private Task? _acceptLoop;
    private int _closed;
    private int _accepted;
    private long _protocolErrors;
    private long _refusedConnections;
    private long _dialFailures;
    private long _socketWrites;

    public TcpInterface(IPEndPoint bind, TcpInterfaceOptions? options = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(bind);
        _options = options ?? new TcpInterfaceOptions();
        _options.Validate();
        _time = time ?? TimeProvider.System;
        Mtu = _options.Mtu;
        _listener = new Socket(bind.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (bind.AddressFamily == AddressFamily.InterNetworkV6 && bind.Address.Equals(IPAddress.IPv6Any))
                _listener.DualMode = true;
            // A node that restarts must get its port back while connections of its last run wait out TIME_WAIT,
            // without ever sharing it with another process.
            Identity.ListenSocket.AllowQuickRestart(_listener);
            _listener.Bind(bind);
            _listener.Listen(_options.ListenBacklog);
        }
        catch (SocketException e)
        {
            _listener.Dispose();
            throw new InvalidOperationException($"Cannot listen on TCP {bind}: {e.Message}", e);
        }
        LocalEndPoint = Normalize((IPEndPoint)_listener.LocalEndPoint!);
        _preamble = WritePreamble(((IPEndPoint)LocalEndPoint).Port);
        Name = _options.Name ?? $"tcp:{LocalEndPoint}";
    }

    public string Name { get; }

    public int Mtu { get; }

    /// <summary>The listening address, with the real port when the interface was bound to port 0.</summary>
    public EndPoint LocalEndPoint { get; }

    public InterfaceCounters Counters { get; } = new();

    /// <summary>Connections broken off for breaking the protocol: a bad preamble, none in time, a frame length of 0 or above the MTU.</summary>
    public long ProtocolErrors => Interlocked.Read(ref _protocolErrors);

    /// <summary>Connections closed on accept because <see cref="TcpInterfaceOptions.MaxAcceptedConnections"/> were open.</summary>
    public long RefusedConnections => Interlocked.Read(ref _refusedConnections);

    /// <summary>Dials that ended before the neighbour's preamble arrived (refused, unreachable, timed out, closed).</summary>
    public long DialFailures => Interlocked.Read(ref _dialFailures);

    /// <summary>Socket writes made; far fewer than frames sent under load, as each write carries every queued frame.</summary>
    public long SocketWrites => Interlocked.Read(ref _socketWrites);

    /// <summary>Open connections, dialled and accepted, including those still connecting.</summary>
    public int ConnectionCount
    {
        get
        {
            lock (_connections)
                return _connections.Count;
        }
    }

    /// <summary>Raised on a receive loop when a neighbour's preamble has arrived: its endpoint, and whether we dialled it.</summary>
    public event Action<EndPoint, bool>? ConnectionOpened;

    /// <summary>Raised when a connection (or a dial) has ended and been removed: the neighbour's endpoint and why.</summary>
    public event Action<EndPoint, string>? ConnectionClosed;

    public void Start(FrameHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (Interlocked.CompareExchange(ref _handler, handler, null) is not null)
            throw new InvalidOperationException("The interface has already started.");
        _started.TrySetResult();
        _acceptLoop = Background.Run(AcceptLoopAsync);
    }

    /// <summary>
    /// Queues one frame for the neighbour at <paramref name="to"/> (an <see cref="IPEndPoint"/>), dialling it in the
    /// background when there is no connection. False, and counted, when the frame is empty or above the MTU, the
    /// connection's queue is full, the neighbour may not be redialled yet, or the interface is closed.
    /// </summary>
    public bool TrySend(EndPoint to, ReadOnlySpan<byte> frame)
    {
        if (Volatile.Read(ref _closed) != 0 || frame.Length == 0 || frame.Length > Mtu || to is not IPEndPoint address)
        {
            Counters.SendDropped();
            return false;
        }
        while (true)
        {
            var neighbour = _neighbours.GetOrAdd(to, static key => new Neighbour(key));
            var connection = neighbour.Current;
            if (connection is null)
            {
                lock (neighbour)
                {
                    if (neighbour.Removed)
                        continue;
                    connection = neighbour.Current ?? Dial(neighbour, address);
                }
            }
            if (connection is null || !connection.TryEnqueue(frame))
            {
                Counters.SendDropped();
                return false;
            }
            return true;
        }
    }

    /// <summary>Opens a connection to a neighbour we have none with, unless it was dialled too recently. Called under the neighbour's lock.</summary>
    private Connection? Dial(Neighbour neighbour, IPEndPoint address)
    {
        var now = _time.GetTimestamp();
        if (now < neighbour.NotBefore)
            return null;
        // Each dial holds the next one back by at least RedialDelay (more once it has failed: see Forget).
        neighbour.NotBefore = now + RedialTicks(neighbour.Failures);
        Socket socket;
        try
        {
            socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        }
        catch (SocketException)
        {
            neighbour.Failures++;
            neighbour.NotBefore = now + RedialTicks(neighbour.Failures);
            Interlocked.Increment(ref _dialFailures);
            return null;
        }
        var connection = new Connection(this, socket, address, dialled: true) { Neighbour = neighbour, DialStarted = now };
        if (!Launch(connection))
            return null;
        neighbour.Connections.Add(connection);
        neighbour.Current = connection;
        return connection;
    }

    /// <summary>Wait before the next dial after <paramref name="failures"/> failed dials in a row: RedialDelay · 2^failures, capped.</summary>
    private long RedialTicks(int failures)
    {
        var delay = _options.RedialDelay * Math.Pow(2, Math.Min(failures, 16));
        if (delay > _options.MaxRedialDelay)
            delay = _options.MaxRedialDelay;
        return (long)(delay.TotalSeconds * _time.TimestampFrequency);
    }

    private async Task AcceptLoopAsync()
    {
        var token = _closing.Token;
        while (true)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptAsync(token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                if (token.IsCancellationRequested)
                    return;
                // A connection reset before we took it is simply skipped; anything else (out of descriptors or
                // buffers) may last, so pause rather than spin.
                if (e.SocketErrorCode is SocketError.ConnectionAborted or SocketError.ConnectionReset)
                    continue;
                try
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(100), _time, token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                continue;
            }
            if (Interlocked.Increment(ref _accepted) > _options.MaxAcceptedConnections)
            {
                Interlocked.Decrement(ref _accepted);
                Interlocked.Increment(ref _refusedConnections);
                socket.Dispose();
                continue;
            }
            IPEndPoint observed;
            try
            {
                observed = Normalize((IPEndPoint)socket.RemoteEndPoint!);
            }
            catch (SocketException)
            {
                // Reset before we could look at it.
                Interlocked.Decrement(ref _accepted);
                socket.Dispose();
                continue;
            }
            var accepted = new Connection(this, socket, observed, dialled: false);
            _pending.Enqueue(accepted);
            Launch(accepted);
            EvictIdlePending();
        }
    }

    // Accepted connections in the order they came, some of which may still await their preamble (those that do
    // not are skipped when met); only the accept loop touches it.
    private readonly Queue<Connection> _pending = new();
    private long _evicted;

    /// <summary>Accepted connections closed because too many waited for their preamble at once (oldest first).</summary>
    public long PendingEvicted => Interlocked.Read(ref _evicted);

    private void EvictIdlePending()
    {
        int waiting;
        lock (_connections)
            waiting = _connections.Count(c => !c.Dialled && !c.Identified);
        while (waiting > _options.MaxPendingConnections && _pending.TryDequeue(out var oldest))
        {
            if (oldest.Identified || oldest.IsClosed)
                continue;
            oldest.Close("too many connections waiting for a preamble; the oldest goes");
            Interlocked.Increment(ref _evicted);
            waiting--;
        }
        // Forget what no longer waits, so the queue stays as short as the connections that do.
        var keep = _pending.Count;
        for (var i = 0; i < keep; i++)
        {
            var c = _pending.Dequeue();
            if (!c.Identified && !c.IsClosed)
                _pending.Enqueue(c);
        }
    }

    /// <summary>Registers a connection and starts its loops; false (and the socket closed) when the interface is closing.</summary>
    private bool Launch(Connection connection)
    {
        lock (_connections)
        {
            if (Volatile.Read(ref _closed) == 0)
            {
                _connections.Add(connection);
                connection.Completion = Background.Run(connection.RunAsync);
                return true;
            }
        }
        connection.Abandon();
        return false;
    }

    /// <summary>An accepted connection has told us who it is: it joins that neighbour, and we send on it unless we already send on another.</summary>
    private Neighbour Identify(Connection connection, EndPoint key)
    {
        while (true)
        {
            var neighbour = _neighbours.GetOrAdd(key, static k => new Neighbour(k));
            lock (neighbour)
            {
                if (neighbour.Removed)
                    continue;
                neighbour.Connections.Add(connection);
                // A connection in use keeps its place, so frames keep their order and a stranger on the neighbour's
                // host cannot take over its traffic by announcing its port; this one takes over when that one ends.
                neighbour.Current ??= connection;
                return neighbour;
            }
        }
    }

    private void Forget(Connection connection)
    {
        if (connection.Neighbour is { } neighbour)
        {
            lock (neighbour)
            {
                neighbour.Connections.Remove(connection);
                if (connection.Dialled && !connection.Identified)
                {
                    // A dial that failed: the next one waits twice as long as the last wait.
                    neighbour.Failures++;
                    neighbour.NotBefore = Math.Max(neighbour.NotBefore, connection.DialStarted + RedialTicks(neighbour.Failures));
                }
                else if (connection.Dialled)
                {
                    neighbour.Failures = 0;
                }
                if (neighbour.Current == connection)
                {
                    // Carry on over another connection with this neighbour (the newest), if there is one.
                    Connection? next = null;
                    for (var i = neighbour.Connections.Count - 1; i >= 0 && next is null; i--)
                    {
                        if (!neighbour.Connections[i].IsClosed)
                            next = neighbour.Connections[i];
                    }
                    neighbour.Current = next;
                }
                // A neighbour with nothing left to remember goes; one still being held off keeps its backoff.
                if (neighbour.Connections.Count == 0 && neighbour.Failures == 0 && _time.GetTimestamp() >= neighbour.NotBefore)
                {
                    neighbour.Removed = true;
                    _neighbours.TryRemove(new KeyValuePair<EndPoint, Neighbour>(neighbour.Key, neighbour));
                }
            }
        }
        if (!connection.Dialled)
            Interlocked.Decrement(ref _accepted);
        if (connection.Dialled && !connection.Identified)
            Interlocked.Increment(ref _dialFailures);
        lock (_connections)
            _connections.Remove(connection);
    }

    private void CountProtocolError() => Interlocked.Increment(ref _protocolErrors);

    private void CountWrite(int frames, long bytes)
    {
        Interlocked.Increment(ref _socketWrites);
        if (frames > 0)
            Counters.Sent(frames, bytes);
    }

    private void RaiseOpened(EndPoint remote, bool dialled)
    {
        try
        {
            ConnectionOpened?.Invoke(remote, dialled);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Counters.HandlerFailed(e);
        }
    }

    private void RaiseClosed(EndPoint remote, string reason)
    {
        try
        {
            ConnectionClosed?.Invoke(remote, reason);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Counters.HandlerFailed(e);
        }
    }

    /// <summary>Writes the 8-byte preamble: "SKYT", version, reserved 0, and the sender's listening port.</summary>
    public static byte[] WritePreamble(int listenPort)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(listenPort);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(listenPort, IPEndPoint.MaxPort);
        var preamble = new byte[PreambleLength];
        PreambleMagic.CopyTo(preamble);
        preamble[4] = PreambleVersion;
        preamble[5] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(preamble.AsSpan(6), (ushort)listenPort);
        return preamble;
    }

    /// <summary>Reads a preamble; false when the magic, version or reserved byte is wrong.</summary>
    public static bool TryReadPreamble(ReadOnlySpan<byte> preamble, out int listenPort)
    {
        listenPort = 0;
        if (preamble.Length != PreambleLength || !preamble[..4].SequenceEqual(PreambleMagic) || preamble[4] != PreambleVersion || preamble[5] != 0)
            return false;
        listenPort = BinaryPrimitives.ReadUInt16BigEndian(preamble[6..]);
        return true;
    }

    private static IPEndPoint Normalize(IPEndPoint endPoint) =>
        endPoint.Address.IsIPv4MappedToIPv6 ? new IPEndPoint(endPoint.Address.MapToIPv4(), endPoint.Port) : endPoint;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
            return;
        await _closing.CancelAsync();
        _listener.Dispose();
        if (_acceptLoop is not null)
            await _acceptLoop;
        Connection[] open;
        lock (_connections)
            open = [.. _connections];
        foreach (var connection in open)
            connection.Close("interface closed");
        foreach (var connection in open)
            await connection.Completion;
        _closing.Dispose();
    }

    /// <summary>
    /// Everything known about one neighbour endpoint: its connections (usually one; two when both sides dialled
    /// at once), the one frames go out on, the lock that hands its frames over one at a time, and its redial backoff.
    /// Fields other than <see cref="Current"/> and <see cref="Gate"/> are guarded by the neighbour's own lock.
    /// </summary>
    private sealed class Neighbour(EndPoint key)
    {
        public EndPoint Key { get; } = key;

        /// <summary>Held while frames from this neighbour are handed over, so a link never sees two at once.</summary>
        public object Gate { get; } = new();

        public List<Connection> Connections { get; } = [];

        private volatile Connection? _current;

        public Connection? Current
        {
            get => _current;
            set => _current = value;
        }

        public int Failures { get; set; }

        /// <summary>Timestamp before which the neighbour is not dialled again.</summary>
        public long NotBefore { get; set; } = long.MinValue;

        public bool Removed { get; set; }
    }
}
