using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using NATS.Client.Core;
using Skymesh.Identity;

namespace Skymesh.Control.Bus.Nats;

public sealed class NatsControlBusOptions
{
    public TimeProvider? Time { get; init; }

    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>How often a member of a topic says it is still there; a watcher counts it gone after three silent periods.</summary>
    public TimeSpan MemberHeartbeat { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How far an envelope's timestamp may be from this node's clock (and how long its nonce is remembered).</summary>
    public TimeSpan Window { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>The first token of every subject, so several meshes can share one NATS cluster.</summary>
    public string SubjectPrefix { get; init; } = "skymesh";

    /// <summary>Envelopes remembered to refuse their replay; when full, new envelopes are refused until old ones expire.</summary>
    public int ReplayCapacity { get; init; } = 200_000;

    /// <summary>
    /// Opens the byte stream to a server instead of a TCP connection to one of the URLs, at the first connection and at
    /// every reconnection (a tunnel through the node's neighbours). Plain NATS inside it: every message is signed, so
    /// whoever carries the stream can drop messages but not forge them.
    /// </summary>
    public Func<CancellationToken, ValueTask<Stream>>? ConnectStream { get; init; }

    /// <summary>How the bus names its servers for people (logs, status); default the URLs.</summary>
    public string? Describe { get; init; }
}

/// <summary>A NATS client's connection over a stream that something else opened (<see cref="NatsControlBusOptions.ConnectStream"/>).</summary>
internal sealed class StreamSocketConnection(Stream stream) : INatsSocketConnection
{
    public async ValueTask<int> SendAsync(ReadOnlyMemory<byte> buffer)
    {
        await stream.WriteAsync(buffer);
        await stream.FlushAsync();
        return buffer.Length;
    }

    public ValueTask<int> ReceiveAsync(Memory<byte> buffer) => stream.ReadAsync(buffer);

    public ValueTask DisposeAsync() => stream.DisposeAsync();
}

/// <summary>Hands the NATS client the streams <see cref="NatsControlBusOptions.ConnectStream"/> opens, whatever server URL it means to reach.</summary>
internal sealed class StreamSocketConnectionFactory(Func<CancellationToken, ValueTask<Stream>> connect) : INatsSocketConnectionFactory
{
    public async ValueTask<INatsSocketConnection> ConnectAsync(Uri uri, NatsOpts opts, CancellationToken cancellationToken) =>
        new StreamSocketConnection(await connect(cancellationToken));
}

/// <summary>
/// The control bus on a NATS cluster (docs/control-plane.md, "The control bus on NATS"). NATS proves nothing about
/// senders, so every message is a signed <see cref="BusEnvelope"/> checked on arrival; topics are subjects
/// (<c>PREFIX.t.TOPIC</c>), a node's direct messages and calls arrive on <c>PREFIX.n.ADDRESS</c> and
/// <c>PREFIX.r.ADDRESS.METHOD</c>, and membership — which NATS does not have — is announced by the members on
/// <c>PREFIX.p.TOPIC</c>: a join, a heartbeat every <see cref="NatsControlBusOptions.MemberHeartbeat"/>, and a leave.
/// </summary>
public sealed partial class NatsControlBus : IControlBus
{
    private readonly NatsConnection _nats;
    private readonly NodeKey _key;
    private readonly NatsControlBusOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly string _prefix;
    private readonly Channel<BusEvent> _events;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _pumps = [];
    private readonly Lock _lock = new();
    private readonly HashSet<string> _memberOf = [];
    private readonly Dictionary<string, Dictionary<NodeAddress, long>> _watched = [];
    private readonly ConcurrentDictionary<string, BusHandler> _handlers = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<NodeAddress, NodeVerifier> _verifiers = new();
    private readonly ReplayGuard _replays;
    private readonly AnswerCache _answers;
    private readonly Task _heartbeat;
    private long _unproven;
    private long _dropped;
    private long _nextRequest;
    private int _running;

    /// <summary>Requests handled at once; more are answered 503 (and may be retried).</summary>
    public const int MaxConcurrentRequests = 1024;
    private int _disposed;
    private BusState _state = BusState.Connected;

    private NatsControlBus(NatsConnection nats, NodeKey key, string describe, NatsControlBusOptions options)
    {
        _nats = nats;
        _key = key;
        _options = options;
        _time = options.Time ?? TimeProvider.System;
        _logger = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Skymesh.Control.Bus");
        _prefix = options.SubjectPrefix;
        Self = key.Address;
        Describe = describe;
        _replays = new ReplayGuard(options.ReplayCapacity);
        _answers = new AnswerCache(10_000);
        _nextRequest = BinaryPrimitives.ReadInt64BigEndian(RandomNumberGenerator.GetBytes(8)) & long.MaxValue;
        _events = Channel.CreateBounded<BusEvent>(new BoundedChannelOptions(65_536) { FullMode = BoundedChannelFullMode.DropWrite },
            _ => Interlocked.Increment(ref _dropped));
        _heartbeat = Background.Run(HeartbeatAsync);
        // Every disconnection and every reconnection, however short: after one the far side may have forgotten
        // this node, and the agent announces again.
        _nats.ConnectionDisconnected += OnDisconnected;
        _nats.ConnectionOpened += OnOpened;
    }

    public NodeAddress Self { get; }

    public string Describe { get; }

    public BusState State => _state;

    public event Action<BusState>? StateChanged;

    public ChannelReader<BusEvent> Events => _events.Reader;

    public long UnprovenSenders => Interlocked.Read(ref _unproven);

    public long DroppedEvents => Interlocked.Read(ref _dropped);

    /// <summary>Connects <paramref name="key"/>'s node to the NATS servers at <paramref name="urls"/> (any one will do; the client moves between them).</summary>
    public static async Task<NatsControlBus> ConnectAsync(IReadOnlyList<string> urls, NodeKey key, NatsControlBusOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(urls);
        ArgumentNullException.ThrowIfNull(key);
        options ??= new NatsControlBusOptions();
        ControlBus.ValidateName(options.SubjectPrefix, nameof(options));
        var nats = new NatsConnection(new NatsOpts
        {
            Url = string.Join(',', urls),
            Name = $"skymesh-node-{key.Address.ToString()[..16]}",
            // Nobody hears its own publications on a bus (IControlBus.PublishAsync).
            Echo = false,
            MaxReconnectRetry = -1,
            ReconnectWaitMin = TimeSpan.FromMilliseconds(100),
            ReconnectWaitMax = TimeSpan.FromSeconds(2),
            ConnectTimeout = TimeSpan.FromSeconds(5),
            RequestTimeout = TimeSpan.FromSeconds(5),
            LoggerFactory = NullLoggerFactory.Instance,
            SocketConnectionFactory = options.ConnectStream is { } connect ? new StreamSocketConnectionFactory(connect) : null,
        });
        try
        {
            await nats.ConnectAsync().AsTask().WaitAsync(cancellationToken);
        }
        catch (Exception e) when (e is NatsException or TimeoutException or IOException or System.Net.Sockets.SocketException)
        {
            await nats.DisposeAsync();
            throw new ControlBusException(ControlBusException.Unavailable, $"cannot reach the NATS servers {string.Join(", ", urls)}: {e.Message}", e);
        }
        var bus = new NatsControlBus(nats, key, options.Describe ?? DescribeServers(urls), options);
        await bus.StartAsync(cancellationToken);
        return bus;
    }

    /// <summary>The servers, for people: <c>nats://h1:4222,h2:4222</c>.</summary>
    internal static string DescribeServers(IReadOnlyList<string> urls) =>
        $"nats://{string.Join(',', urls.Select(u => u.Replace("nats://", "", StringComparison.OrdinalIgnoreCase)))}";

    private async Task StartAsync(CancellationToken cancellationToken)
    {
        var self = Self.ToString();
        await ListenAsync($"{_prefix}.n.{self}", OnDirectAsync, cancellationToken);
        // Requests run side by side (a slow handler must not hold up the rest), up to a bound.
        await ListenAsync($"{_prefix}.r.{self}.*", (msg, e) =>
        {
            if (Interlocked.Increment(ref _running) > MaxConcurrentRequests)
            {
                Interlocked.Decrement(ref _running);
                return ReplyAsync(msg, e, ControlBusException.Unavailable, "too many requests at once");
            }
            _ = Background.Run(async () =>
            {
                try
                {
                    await OnRequestAsync(msg, e);
                }
                finally
                {
                    Interlocked.Decrement(ref _running);
                }
            });
            return Task.CompletedTask;
        }, cancellationToken);
        // The server has both subscriptions once it answers a ping.
        await _nats.PingAsync(cancellationToken);
    }

    private string Topic(string topic) => $"{_prefix}.t.{topic}";

    private string Members(string topic) => $"{_prefix}.p.{topic}";

    private string Who(string topic) => $"{_prefix}.w.{topic}";

    private long NowMs => _time.GetUtcNow().ToUnixTimeMilliseconds();

    private byte[] Seal(EnvelopeKind kind, string subject, ReadOnlySpan<byte> payload) =>
        BusEnvelope.Seal(_key, kind, subject, NowMs, BinaryPrimitives.ReadUInt64BigEndian(RandomNumberGenerator.GetBytes(8)), payload);

    /// <summary>Subscribes to <paramref name="subject"/> and hands each checked envelope to <paramref name="handle"/>, one at a time.</summary>
    private async Task ListenAsync(string subject, Func<NatsMsg<byte[]>, OpenedEnvelope, Task> handle, CancellationToken cancellationToken)
    {
        var sub = await _nats.SubscribeCoreAsync<byte[]>(subject, cancellationToken: cancellationToken);
        lock (_lock)
            _pumps.Add(Background.Run(async () =>
            {
                try
                {
                    await foreach (var msg in sub.Msgs.ReadAllAsync(_stop.Token))
                    {
                        if (Open(msg) is not { } envelope)
                            continue;
                        try
                        {
                            await handle(msg, envelope);
                        }
                        catch (Exception e) when (e is NatsException or ObjectDisposedException or ControlBusException)
                        {
                            // An answer or a heartbeat that could not go out: the reader goes on.
                            Log.ReplyFailed(_logger, msg.Subject, e.Message);
                        }
                    }
                }
                catch (Exception e) when (e is OperationCanceledException or ChannelClosedException)
                {
                }
                finally
                {
                    try
                    {
                        await sub.DisposeAsync();
                    }
                    catch (Exception e) when (e is ObjectDisposedException or NatsException)
                    {
                        // The connection went first.
                    }
                }
            }));
    }

    private OpenedEnvelope? Open(NatsMsg<byte[]> msg)
    {
        // One verifier per sender (its curve point recovered once); a flood of made-up senders only restarts the memory.
        if (_verifiers.Count > 100_000)
            _verifiers.Clear();
        var opened = BusEnvelope.Open(msg.Data ?? [], msg.Subject, NowMs, _options.Window, a => _verifiers.GetOrAdd(a, static a => new NodeVerifier(a)), out var refusal);
        if (opened is { } envelope && !_replays.TryAdd(envelope.From, envelope.Nonce, NowMs + (long)_options.Window.TotalMilliseconds * 2, NowMs))
            refusal = "replayed, or too many envelopes to remember";
        else if (opened is not null)
            return opened;
        Interlocked.Increment(ref _unproven);
        Log.Refused(_logger, msg.Subject, refusal ?? "");
        return null;
    }

    public async Task PublishAsync(string topic, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        ControlBus.ValidateName(topic, nameof(topic));
        if (payload.Length > ControlBus.MaxPublishBytes)
            throw new ArgumentException($"A publication is at most {ControlBus.MaxPublishBytes} bytes.", nameof(payload));
        var subject = Topic(topic);
        await RunAsync(() => _nats.PublishAsync(subject, Seal(EnvelopeKind.Publication, subject, payload.Span), cancellationToken: cancellationToken).AsTask());
    }

    public async Task SubscribeAsync(string topic, bool watchMembers, CancellationToken cancellationToken)
    {
        ControlBus.ValidateName(topic, nameof(topic));
        bool first;
        lock (_lock)
            first = _memberOf.Add(topic);
        var newWatch = false;
        try
        {
            await SubscribeCoreAsync(topic, first, watchMembers, () => newWatch = true, cancellationToken);
        }
        catch
        {
            // Not a member after all (a later call tries again from the start).
            lock (_lock)
            {
                if (first)
                    _memberOf.Remove(topic);
                if (newWatch)
                    _watched.Remove(topic);
            }
            throw;
        }
    }

    private Task SubscribeCoreAsync(string topic, bool first, bool watchMembers, Action watching, CancellationToken cancellationToken) =>
        RunAsync(async () =>
        {
            if (first)
            {
                var subject = Topic(topic);
                await ListenAsync(subject, (_, e) =>
                {
                    if (e.Kind == EnvelopeKind.Publication)
                        _events.Writer.TryWrite(new BusPublication(e.From, topic, e.Payload));
                    return Task.CompletedTask;
                }, cancellationToken);
                // Watchers who ask who is there get a heartbeat back.
                await ListenAsync(Who(topic), (_, e) => e.Kind == EnvelopeKind.Who ? SayAsync(EnvelopeKind.Heartbeat, topic, _stop.Token) : Task.CompletedTask, cancellationToken);
            }
            if (watchMembers)
            {
                bool newWatch;
                lock (_lock)
                    newWatch = _watched.TryAdd(topic, []);
                if (newWatch)
                {
                    watching();
                    await ListenAsync(Members(topic), (_, e) => OnMemberAsync(topic, e), cancellationToken);
                    var who = Who(topic);
                    await _nats.PublishAsync(who, Seal(EnvelopeKind.Who, who, default), cancellationToken: cancellationToken);
                }
            }
            if (first)
                await SayAsync(EnvelopeKind.Joined, topic, cancellationToken);
            // The server has the subscriptions once it answers a ping (other servers of the cluster learn them a moment later).
            await _nats.PingAsync(cancellationToken);
        });

    private Task SayAsync(EnvelopeKind kind, string topic, CancellationToken cancellationToken)
    {
        var subject = Members(topic);
        return _nats.PublishAsync(subject, Seal(kind, subject, default), cancellationToken: cancellationToken).AsTask();
    }

    private Task OnMemberAsync(string topic, OpenedEnvelope e)
    {
        BusEvent? report = null;
        lock (_lock)
        {
            if (!_watched.TryGetValue(topic, out var members))
                return Task.CompletedTask;
            switch (e.Kind)
            {
                case EnvelopeKind.Joined or EnvelopeKind.Heartbeat:
                    if (!members.ContainsKey(e.From))
                        report = new BusMemberJoined(e.From, topic);
                    members[e.From] = NowMs;
                    break;
                case EnvelopeKind.Left when members.Remove(e.From):
                    report = new BusMemberLeft(e.From, topic);
                    break;
            }
        }
        if (report is not null)
            _events.Writer.TryWrite(report);
        return Task.CompletedTask;
    }

    /// <summary>Says every member topic is still here, and counts as gone the members of watched topics that fell silent.</summary>
    private async Task HeartbeatAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                await Task.Delay(_options.MemberHeartbeat, _time, _stop.Token);
                string[] topics;
                var gone = new List<BusEvent>();
                var silentSince = NowMs - (long)(_options.MemberHeartbeat.TotalMilliseconds * 3);
                lock (_lock)
                {
                    topics = [.. _memberOf];
                    foreach (var (topic, members) in _watched)
                    {
                        foreach (var member in members.Where(m => m.Value < silentSince).Select(m => m.Key).ToList())
                        {
                            members.Remove(member);
                            gone.Add(new BusMemberLeft(member, topic));
                        }
                    }
                }
                foreach (var e in gone)
                    _events.Writer.TryWrite(e);
                _replays.Sweep(NowMs);
                _answers.Sweep(NowMs);
                if (_nats.ConnectionState != NatsConnectionState.Open)
                    continue;
                foreach (var topic in topics)
                {
                    try
                    {
                        await SayAsync(EnvelopeKind.Heartbeat, topic, _stop.Token);
                    }
                    catch (NatsException e)
                    {
                        Log.HeartbeatFailed(_logger, topic, e.Message);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public async Task SendAsync(NodeAddress to, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        if (payload.Length > ControlBus.MaxPublishBytes)
            throw new ArgumentException($"A message is at most {ControlBus.MaxPublishBytes} bytes.", nameof(payload));
        var subject = $"{_prefix}.n.{to}";
        // A request, so that a node that is not there is known at once (NATS answers "no responders").
        await RunAsync(() => _nats.RequestAsync<byte[], byte[]>(subject, Seal(EnvelopeKind.Direct, subject, payload.Span),
            replyOpts: new NatsSubOpts { Timeout = TimeSpan.FromSeconds(5) }, cancellationToken: cancellationToken).AsTask(), to);
    }

    private async Task OnDirectAsync(NatsMsg<byte[]> msg, OpenedEnvelope e)
    {
        if (e.Kind != EnvelopeKind.Direct)
            return;
        _events.Writer.TryWrite(new BusDirectMessage(e.From, e.Payload));
        if (msg.ReplyTo is not null)
            await msg.ReplyAsync(Array.Empty<byte>(), cancellationToken: _stop.Token);
    }

    public async Task<ReadOnlyMemory<byte>> RequestAsync(NodeAddress to, string method, ReadOnlyMemory<byte> body, BusCallOptions? options, CancellationToken cancellationToken)
    {
        ControlBus.ValidateName(method, nameof(method));
        options ??= BusCallOptions.Default;
        var subject = $"{_prefix}.r.{to}.{method}";
        // Every attempt is a new envelope (a fresh signature and nonce) around the same request id, which the far side
        // answers at most once.
        var request = new byte[8 + body.Length];
        BinaryPrimitives.WriteInt64BigEndian(request, Interlocked.Increment(ref _nextRequest));
        body.Span.CopyTo(request.AsSpan(8));
        for (var attempt = 1; ; attempt++)
        {
            NatsMsg<byte[]> reply;
            try
            {
                reply = await _nats.RequestAsync<byte[], byte[]>(subject, Seal(EnvelopeKind.Request, subject, request),
                    replyOpts: new NatsSubOpts { Timeout = options.AttemptTimeout }, cancellationToken: cancellationToken);
            }
            catch (NatsNoReplyException) when (attempt < options.Attempts)
            {
                continue;
            }
            catch (NatsNoReplyException e)
            {
                throw new ControlBusException(ControlBusException.Timeout, $"{to} did not answer {method} within {options.Attempts} attempts of {options.AttemptTimeout.TotalSeconds:0.#} s", e);
            }
            catch (Exception e) when (Translate(e, to) is { } failure)
            {
                throw failure;
            }
            // The answer must be signed by the node asked, on this caller's reply subject.
            if (Open(reply) is not { Kind: EnvelopeKind.Reply } answer || answer.From != to || answer.Payload.Length < 10
                || BinaryPrimitives.ReadInt64BigEndian(answer.Payload.Span) != BinaryPrimitives.ReadInt64BigEndian(request))
                throw new ControlBusException(ControlBusException.Forbidden, $"the answer to {method} was not signed by {to}");
            var status = BinaryPrimitives.ReadUInt16BigEndian(answer.Payload.Span[8..]);
            var result = answer.Payload[10..];
            return status == 0 ? result : throw new ControlBusException(status, System.Text.Encoding.UTF8.GetString(result.Span));
        }
    }

    public void Handle(string method, BusHandler handler)
    {
        ControlBus.ValidateName(method, nameof(method));
        ArgumentNullException.ThrowIfNull(handler);
        _handlers[method] = handler;
    }

    /// <summary>An answer's payload: the request id, a status (0 for success) and the result or the reason.</summary>
    private static byte[] Answer(long id, ushort status, ReadOnlySpan<byte> body)
    {
        var answer = new byte[10 + body.Length];
        BinaryPrimitives.WriteInt64BigEndian(answer, id);
        BinaryPrimitives.WriteUInt16BigEndian(answer.AsSpan(8), status);
        body.CopyTo(answer.AsSpan(10));
        return answer;
    }

    private Task ReplyAsync(NatsMsg<byte[]> msg, OpenedEnvelope e, int status, string reason)
    {
        if (e.Kind != EnvelopeKind.Request || msg.ReplyTo is not { } replyTo || e.Payload.Length < 8)
            return Task.CompletedTask;
        var answer = Answer(BinaryPrimitives.ReadInt64BigEndian(e.Payload.Span), (ushort)status, System.Text.Encoding.UTF8.GetBytes(reason));
        return _nats.PublishAsync(replyTo, Seal(EnvelopeKind.Reply, replyTo, answer), cancellationToken: _stop.Token).AsTask();
    }

    private async Task OnRequestAsync(NatsMsg<byte[]> msg, OpenedEnvelope e)
    {
        if (e.Kind != EnvelopeKind.Request || msg.ReplyTo is not { } replyTo || e.Payload.Length < 8)
            return;
        var id = BinaryPrimitives.ReadInt64BigEndian(e.Payload.Span);
        var method = msg.Subject[(msg.Subject.LastIndexOf('.') + 1)..];
        var answer = _answers.Get(e.From, id, NowMs);
        if (answer is null)
        {
            ushort status = 0;
            ReadOnlyMemory<byte> result;
            if (!_handlers.TryGetValue(method, out var handler))
            {
                (status, result) = (ControlBusException.NotFound, System.Text.Encoding.UTF8.GetBytes($"no method {method}"));
            }
            else
            {
                try
                {
                    result = await handler(new BusRequest(e.From, method, e.Payload[8..]), _stop.Token);
                }
                catch (ControlBusException failure)
                {
                    (status, result) = ((ushort)failure.Status, System.Text.Encoding.UTF8.GetBytes(failure.Message));
                }
                catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception failure)
                {
                    Log.HandlerFailed(_logger, method, failure);
                    (status, result) = (ControlBusException.HandlerFailed, System.Text.Encoding.UTF8.GetBytes($"{method} failed"));
                }
            }
            answer = Answer(id, status, result.Span);
            _answers.Add(e.From, id, answer, NowMs + 60_000);
        }
        try
        {
            await _nats.PublishAsync(replyTo, Seal(EnvelopeKind.Reply, replyTo, answer), cancellationToken: _stop.Token);
        }
        catch (Exception failure) when (failure is NatsException or ObjectDisposedException or OperationCanceledException)
        {
            // The caller retries, or the bus is closing.
            Log.ReplyFailed(_logger, method, failure.Message);
        }
    }

    private static async Task RunAsync(Func<Task> operation, NodeAddress? to = null)
    {
        try
        {
            await operation();
        }
        catch (Exception e) when (Translate(e, to) is { } failure)
        {
            throw failure;
        }
    }

    /// <summary>A NATS client failure as the bus reports it: 404 nobody there, 408 no answer, 503 the bus is away; null for anything else.</summary>
    private static ControlBusException? Translate(Exception e, NodeAddress? to) => e switch
    {
        NatsNoRespondersException => new ControlBusException(ControlBusException.NotFound, $"{to} is not on the bus", e),
        NatsNoReplyException => new ControlBusException(ControlBusException.Timeout, e.Message, e),
        NatsException or ObjectDisposedException or IOException => new ControlBusException(ControlBusException.Unavailable, e.Message, e),
        _ => null,
    };

    private ValueTask OnDisconnected(object? sender, NatsEventArgs args) => SetState(BusState.Reconnecting);

    private ValueTask OnOpened(object? sender, NatsEventArgs args) => SetState(BusState.Connected);

    private ValueTask SetState(BusState state)
    {
        lock (_lock)
        {
            if (Volatile.Read(ref _disposed) != 0 || _state == state)
                return ValueTask.CompletedTask;
            _state = state;
        }
        Log.State(_logger, Describe, state.ToString());
        StateChanged?.Invoke(state);
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        string[] topics;
        lock (_lock)
            topics = [.. _memberOf];
        // Say goodbye where possible, so watchers need not wait for the heartbeats to stop.
        foreach (var topic in topics)
        {
            try
            {
                if (_nats.ConnectionState == NatsConnectionState.Open)
                    await SayAsync(EnvelopeKind.Left, topic, CancellationToken.None);
            }
            catch (Exception e) when (e is NatsException or OperationCanceledException or ObjectDisposedException)
            {
            }
        }
        try
        {
            // The goodbyes leave before the connection closes.
            if (topics.Length > 0 && _nats.ConnectionState == NatsConnectionState.Open)
                await _nats.PingAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(2), _time);
        }
        catch (Exception e) when (e is NatsException or TimeoutException or OperationCanceledException or ObjectDisposedException)
        {
            // No server to say goodbye to: watchers will miss the heartbeats instead.
        }
        await _stop.CancelAsync();
        _nats.ConnectionDisconnected -= OnDisconnected;
        _nats.ConnectionOpened -= OnOpened;
        // The readers end (and drop their subscriptions) while the connection is still there, then it closes.
        Task[] pumps;
        lock (_lock)
            pumps = [.. _pumps, _heartbeat];
        await Task.WhenAll(pumps);
        await _nats.DisposeAsync();
        _events.Writer.TryComplete();
        _stop.Dispose();
        _state = BusState.Closed;
        StateChanged?.Invoke(BusState.Closed);
    }

    /// <summary>(sender, nonce) pairs seen within the window: an envelope is taken once.</summary>
    private sealed class ReplayGuard(int capacity)
    {
        private readonly Dictionary<(NodeAddress, ulong), long> _seen = [];
        private readonly Lock _lock = new();

        public bool TryAdd(NodeAddress from, ulong nonce, long expiresMs, long nowMs)
        {
            lock (_lock)
            {
                if (_seen.Count >= capacity)
                    SweepLocked(nowMs);
                return _seen.Count < capacity && _seen.TryAdd((from, nonce), expiresMs);
            }
        }

        public void Sweep(long nowMs)
        {
            lock (_lock)
                SweepLocked(nowMs);
        }

        private void SweepLocked(long nowMs)
        {
            foreach (var key in _seen.Where(s => s.Value <= nowMs).Select(s => s.Key).ToList())
                _seen.Remove(key);
        }
    }

    /// <summary>Answers already given, by (caller, request id), so a retried request gets the same answer without running twice.</summary>
    private sealed class AnswerCache(int capacity)
    {
        private readonly Dictionary<(NodeAddress, long), (byte[] Answer, long ExpiresMs)> _answers = [];
        private readonly Lock _lock = new();

        public byte[]? Get(NodeAddress from, long id, long nowMs)
        {
            lock (_lock)
                return _answers.TryGetValue((from, id), out var entry) && entry.ExpiresMs > nowMs ? entry.Answer : null;
        }

        public void Add(NodeAddress from, long id, byte[] answer, long expiresMs)
        {
            lock (_lock)
            {
                if (_answers.Count < capacity)
                    _answers[(from, id)] = (answer, expiresMs);
            }
        }

        public void Sweep(long nowMs)
        {
            lock (_lock)
            {
                foreach (var key in _answers.Where(a => a.Value.ExpiresMs <= nowMs).Select(a => a.Key).ToList())
                    _answers.Remove(key);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 750, Level = LogLevel.Debug, Message = "Bus: an envelope on {Subject} refused: {Reason}")]
        public static partial void Refused(ILogger logger, string subject, string reason);

        [LoggerMessage(EventId = 751, Level = LogLevel.Warning, Message = "Bus: the handler of {Method} failed")]
        public static partial void HandlerFailed(ILogger logger, string method, Exception exception);

        [LoggerMessage(EventId = 752, Level = LogLevel.Debug, Message = "Bus: the answer to {Method} could not be sent: {Reason}")]
        public static partial void ReplyFailed(ILogger logger, string method, string reason);

        [LoggerMessage(EventId = 753, Level = LogLevel.Debug, Message = "Bus: a heartbeat on {Topic} could not be sent: {Reason}")]
        public static partial void HeartbeatFailed(ILogger logger, string topic, string reason);

        [LoggerMessage(EventId = 754, Level = LogLevel.Information, Message = "Bus {Bus}: {State}")]
        public static partial void State(ILogger logger, string bus, string state);
    }
}

/// <summary>Connects nodes to a NATS cluster through any of its servers.</summary>
public sealed class NatsBusConnector(IReadOnlyList<string> urls, NatsControlBusOptions? options = null) : IControlBusConnector
{
    public string Describe => NatsControlBus.DescribeServers(urls);

    public async Task<IControlBus> ConnectAsync(NodeKey key, CancellationToken cancellationToken) =>
        await NatsControlBus.ConnectAsync(urls, key, options, cancellationToken);
}
