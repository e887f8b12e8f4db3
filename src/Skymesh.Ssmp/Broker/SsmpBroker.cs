using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Skymesh.Ssmp.Broker;

/// <summary>
/// The SSMP broker: accepts TCP (optionally TLS) connections and routes UCAST, MCAST and BCAST between them,
/// with presence, login schemes, keepalive and per-connection limits as in docs/ssmp.md.
/// </summary>
public sealed partial class SsmpBroker : IAsyncDisposable
{
    private readonly SsmpBrokerOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<long, BrokerConnection> _all = new();
    private readonly ConcurrentDictionary<string, BrokerConnection> _byId = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Topic> _topics = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, BrokerConnection>.AlternateLookup<ReadOnlySpan<char>> _byIdSpan;
    private readonly ConcurrentDictionary<string, Topic>.AlternateLookup<ReadOnlySpan<char>> _topicsSpan;
    private readonly long[] _disconnects = new long[Enum.GetValues<DisconnectReason>().Length];
    private readonly CancellationTokenSource _stopping = new();
    private readonly byte[] _unauthorizedPayload;
    private readonly KeyLoginGuard? _keyLogin;
    private Socket? _listener;
    private Task? _acceptLoop;
    private ITimer? _sweepTimer;
    private long _nextConnectionId;
    private long _accepted;
    private long _loggedIn;
    private int _stopped;

    // Counters folded in from connections that have closed; live ones are summed on demand.
    private long _closedRequests;
    private long _closedEvents;
    private long _closedBytesIn;
    private long _closedBytesOut;
    private long _badRequests;
    private long _unknownVerbs;
    private long _ucastNotFound;

    public SsmpBroker(SsmpBrokerOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Authenticators.Count == 0)
            options.Authenticators.Add(new OpenAuthenticator());
        options.Validate();
        _options = options;
        _time = options.TimeProvider;
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Skymesh.Ssmp.Broker");
        _byIdSpan = _byId.GetAlternateLookup<ReadOnlySpan<char>>();
        _topicsSpan = _topics.GetAlternateLookup<ReadOnlySpan<char>>();
        _unauthorizedPayload = System.Text.Encoding.ASCII.GetBytes(string.Join(' ', options.Authenticators.Select(a => a.Scheme)));
        Buffers = new BrokerBuffers(_time, options.ReleaseMemoryWhenQuiet, options.AllocatedBytes);
        if (options.Authenticators.Any(a => a is KeyAuthenticator))
            _keyLogin = new KeyLoginGuard(options.ServerName, options.KeyLoginWindow, options.KeyLoginReplayCapacity, _time, _logger);
    }

    internal SsmpBrokerOptions Options => _options;

    internal ILogger Logger => _logger;

    internal TimeProvider Time => _time;

    internal BrokerBuffers Buffers { get; }

    internal byte[] UnauthorizedPayload => _unauthorizedPayload;

    /// <summary>The key scheme's state, when the broker offers it.</summary>
    internal KeyLoginGuard? KeyLogin => _keyLogin;

    /// <summary>The address the broker listens on (with the real port when started on port 0).</summary>
    public IPEndPoint LocalEndPoint => (IPEndPoint?)_listener?.LocalEndPoint ?? throw new InvalidOperationException("The broker has not started.");

    public void Start()
    {
        if (_listener is not null)
            throw new InvalidOperationException("The broker has already started.");
        var listener = new Socket(_options.Listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            Identity.ListenSocket.AllowQuickRestart(listener);
            listener.Bind(_options.Listen);
            listener.Listen(4096);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new InvalidOperationException($"Cannot listen on {_options.Listen}: {e.Message}", e);
        }
        _listener = listener;
        var sweep = Min(_options.LoginTimeout, Min(_options.PingInterval, _options.PongTimeout)) / 10;
        sweep = Max(TimeSpan.FromMilliseconds(10), Min(sweep, TimeSpan.FromSeconds(1)));
        _sweepTimer = _time.CreateTimer(_ => Sweep(), null, sweep, sweep);
        // Connection loops start from here: run them on the pool, free of the caller's synchronization context.
        #pragma warning disable RS0030 // SSMP runs on real sockets and the thread pool, never on a simulation's scheduler
        _acceptLoop = Task.Run(AcceptLoopAsync);
        #pragma warning restore RS0030
        Log.Started(_logger, _options.ServerName, LocalEndPoint, string.Join(' ', _options.Authenticators.Select(a => a.Scheme)), _options.Tls is not null);
    }

    private async Task AcceptLoopAsync()
    {
        var listener = _listener!;
        while (!_stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(_stopping.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (ObjectDisposedException)
            {
                break;
            }
            catch (SocketException e)
            {
                // Transient accept failures (e.g. out of descriptors) must not end the loop.
                Log.AcceptFailed(_logger, e.SocketErrorCode);
                continue;
            }
            Interlocked.Increment(ref _accepted);
            if (_all.Count >= _options.MaxConnections)
            {
                Count(DisconnectReason.ConnectionLimit);
                socket.Dispose();
                continue;
            }
            socket.NoDelay = true;
            var id = Interlocked.Increment(ref _nextConnectionId);
            var connection = new BrokerConnection(this, id, socket);
            _all[id] = connection;
            connection.Start();
        }
    }

    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
            return;
        await _stopping.CancelAsync();
        _listener?.Dispose();
        if (_sweepTimer is not null)
            await _sweepTimer.DisposeAsync();
        if (_acceptLoop is not null)
            await _acceptLoop;
        foreach (var c in _all.Values)
            c.Abort(DisconnectReason.BrokerStopping);
        if (_listener is not null)
            Log.Stopped(_logger, Snapshot().ConnectionsAccepted);
    }

    public ValueTask DisposeAsync() => new(StopAsync());

    public BrokerMetricsSnapshot Snapshot()
    {
        long requests = Volatile.Read(ref _closedRequests), events = Volatile.Read(ref _closedEvents);
        long bytesIn = Volatile.Read(ref _closedBytesIn), bytesOut = Volatile.Read(ref _closedBytesOut);
        long queued = 0;
        foreach (var c in _all.Values)
        {
            queued += c.QueuedBytes;
            requests += c.RequestCount;
            events += c.EventCount;
            bytesIn += c.BytesIn;
            bytesOut += c.BytesOut;
        }
        var disconnects = new Dictionary<DisconnectReason, long>();
        foreach (var reason in Enum.GetValues<DisconnectReason>())
            disconnects[reason] = Volatile.Read(ref _disconnects[(int)reason]);
        var keyFailures = new Dictionary<KeyLoginFailure, long>();
        if (_keyLogin is not null)
        {
            foreach (var reason in Enum.GetValues<KeyLoginFailure>())
                keyFailures[reason] = _keyLogin.FailuresFor(reason);
        }
        return new BrokerMetricsSnapshot
        {
            ConnectionsAccepted = Volatile.Read(ref _accepted),
            ConnectionsOpen = _all.Count,
            LoggedIn = Volatile.Read(ref _loggedIn),
            Topics = _topics.Count,
            RequestsReceived = requests,
            EventsQueued = events,
            BytesReceived = bytesIn,
            BytesSent = bytesOut,
            QueuedBytes = queued,
            BadRequests = Volatile.Read(ref _badRequests),
            UnknownVerbs = Volatile.Read(ref _unknownVerbs),
            UcastNotFound = Volatile.Read(ref _ucastNotFound),
            Disconnects = disconnects,
            KeyLoginsAccepted = _keyLogin?.Accepted ?? 0,
            KeyLoginFailures = keyFailures,
            KeyLoginCredentialsRemembered = _keyLogin?.Remembered ?? 0,
            LargeBufferBytes = Buffers.LargeBytes,
            LargeBuffers = Buffers.LargeAllocations,
            MemoryReleases = Buffers.Releases,
        };
    }

    internal void Count(DisconnectReason reason) => Interlocked.Increment(ref _disconnects[(int)reason]);

    internal void CountBadRequest() => Interlocked.Increment(ref _badRequests);

    internal void CountUnknownVerb() => Interlocked.Increment(ref _unknownVerbs);

    internal void CountUcastNotFound() => Interlocked.Increment(ref _ucastNotFound);

    internal CancellationToken Stopping => _stopping.Token;

    /// <summary>
    /// Makes <paramref name="connection"/> the holder of its id, evicting any previous holder — unless that one
    /// proved more at its login (a key or certificate login is never pushed out by an open one): false then, and
    /// the new login is refused.
    /// </summary>
    internal bool Register(BrokerConnection connection)
    {
        if (connection.IsAnonymous)
        {
            Interlocked.Increment(ref _loggedIn);
            return true;
        }
        BrokerConnection? previous = null;
        var kept = _byId.AddOrUpdate(connection.Id!, connection, (_, old) =>
        {
            previous = null;
            if (old.Assurance > connection.Assurance)
                return old;
            previous = old;
            return connection;
        });
        if (kept != connection)
        {
            Interlocked.Increment(ref _impersonationsRefused);
            return false;
        }
        Interlocked.Increment(ref _loggedIn);
        if (previous is not null && previous != connection)
        {
            Log.Evicted(_logger, connection.Id!);
            previous.Evict();
        }
        return true;
    }

    private long _impersonationsRefused;

    /// <summary>Logins refused because a connection that proved more holds the id.</summary>
    public long ImpersonationsRefused => Interlocked.Read(ref _impersonationsRefused);

    internal void Forget(BrokerConnection connection)
    {
        _all.TryRemove(connection.Serial, out _);
        if (connection.LoggedIn)
        {
            Interlocked.Decrement(ref _loggedIn);
            if (!connection.IsAnonymous)
                _byId.TryRemove(new KeyValuePair<string, BrokerConnection>(connection.Id!, connection));
        }
        Interlocked.Add(ref _closedRequests, connection.RequestCount);
        Interlocked.Add(ref _closedEvents, connection.EventCount);
        Interlocked.Add(ref _closedBytesIn, connection.BytesIn);
        Interlocked.Add(ref _closedBytesOut, connection.BytesOut);
    }

    internal BrokerConnection? FindById(ReadOnlySpan<byte> id)
    {
        Span<char> chars = stackalloc char[Codec.SsmpGrammar.MaxIdLength];
        var n = System.Text.Encoding.Latin1.GetChars(id, chars);
        return _byIdSpan.TryGetValue(chars[..n], out var c) ? c : null;
    }

    internal Topic? FindTopic(ReadOnlySpan<byte> name)
    {
        Span<char> chars = stackalloc char[Codec.SsmpGrammar.MaxIdLength];
        var n = System.Text.Encoding.Latin1.GetChars(name, chars);
        return _topicsSpan.TryGetValue(chars[..n], out var t) ? t : null;
    }

    /// <summary>Returns the live topic of that name, creating it if needed. The caller locks it and checks <see cref="Topic.Dead"/>.</summary>
    internal Topic GetOrAddTopic(string name) => _topics.GetOrAdd(name, static n => new Topic(n));

    /// <summary>Removes an empty topic; called under the topic's lock after marking it dead.</summary>
    internal void RemoveTopic(Topic topic) => _topics.TryRemove(new KeyValuePair<string, Topic>(topic.Name, topic));

    private void Sweep()
    {
        var now = _time.GetTimestamp();
        foreach (var c in _all.Values)
            c.CheckTimers(now);
        _keyLogin?.Sweep();
        if (Buffers.ReleaseIfQuiet())
            Log.Released(_logger, Environment.WorkingSet / (1024 * 1024));
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private static partial class Log
    {
        [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "SSMP broker {Name} listening on {EndPoint} (schemes: {Schemes}; tls: {Tls})")]
        public static partial void Started(ILogger logger, string name, IPEndPoint endPoint, string schemes, bool tls);

        [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "SSMP broker stopped after {Accepted} connections")]
        public static partial void Stopped(ILogger logger, long accepted);

        [LoggerMessage(EventId = 3, Level = LogLevel.Warning, Message = "Accept failed: {Error}")]
        public static partial void AcceptFailed(ILogger logger, SocketError error);

        [LoggerMessage(EventId = 5, Level = LogLevel.Debug, Message = "Traffic stopped: memory released, {WorkingSetMiB} MiB resident")]
        public static partial void Released(ILogger logger, long workingSetMiB);

        [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "Login as {Id} evicts the previous connection with that id")]
        public static partial void Evicted(ILogger logger, string id);
    }
}
