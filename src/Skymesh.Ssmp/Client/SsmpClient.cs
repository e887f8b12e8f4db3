using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Identity;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Client;

public enum SsmpClientState
{
    Connected,
    Reconnecting,
    Closed,
    /// <summary>The broker refused the login on reconnect (e.g. the credential was revoked); the client gave up.</summary>
    Failed,
}

/// <summary>
/// SSMP client. Requests are pipelined: many may be in flight, and their responses are matched in order.
/// Events arrive on <see cref="Events"/> (bounded, with a named overflow policy) or on a callback.
/// It answers the broker's PING, sends its own when the broker is silent, and — unless told not to —
/// re-connects with backoff after a lost connection, logging in again and restoring its subscriptions.
/// </summary>
public sealed partial class SsmpClient : IAsyncDisposable
{
    private readonly SsmpClientOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Channel<SsmpEvent> _events;
    private readonly Dictionary<string, bool> _topics = new(StringComparer.Ordinal);
    private readonly IdCache _ids = new();
    private readonly CancellationTokenSource _disposing = new();
    private volatile ClientSession? _session;
    private Task? _supervisor;
    private ITimer? _keepalive;
    private long _droppedEvents;
    private int _reconnects;
    private int _disposed;
    private volatile SsmpClientState _state = SsmpClientState.Connected;

    private SsmpClient(SsmpClientOptions options)
    {
        _options = options;
        _time = options.TimeProvider;
        _logger = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Skymesh.Ssmp.Client");
        var channelOptions = new BoundedChannelOptions(options.EventQueueCapacity)
        {
            SingleWriter = true,
            FullMode = options.EventOverflow == SsmpEventOverflow.DropOldest ? BoundedChannelFullMode.DropOldest : BoundedChannelFullMode.DropWrite,
        };
        _events = Channel.CreateBounded<SsmpEvent>(channelOptions, _ => Interlocked.Increment(ref _droppedEvents));
    }

    public string Id => _options.Id;

    public SsmpClientState State => _state;

    /// <summary>Events (UCAST, MCAST, BCAST, presence, extensions) in arrival order, unless <see cref="SsmpClientOptions.OnEvent"/> is set.</summary>
    public ChannelReader<SsmpEvent> Events => _events.Reader;

    /// <summary>Events dropped because the queue was full.</summary>
    public long DroppedEvents => Interlocked.Read(ref _droppedEvents);

    /// <summary>Successful re-connections since the first.</summary>
    public int Reconnects => Volatile.Read(ref _reconnects);

    /// <summary>Raised on every change of <see cref="State"/>.</summary>
    public event Action<SsmpClientState>? StateChanged;

    /// <summary>Connects, logs in, and returns a ready client. Throws <see cref="SsmpException"/> when the login is refused.</summary>
    public static async Task<SsmpClient> ConnectAsync(SsmpClientOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options = options.Clone();
        options.Validate();
        if (options.Key is { } key)
        {
            options.Id = key.Address.ToString();
            options.Scheme = SsmpKeyCredential.Scheme;
        }
        var client = new SsmpClient(options);
        try
        {
            var session = await client.OpenSessionAsync(cancellationToken);
            client._session = session;
            #pragma warning disable RS0030 // SSMP runs on real sockets and the thread pool, never on a simulation's scheduler
            client._supervisor = Task.Run(() => client.SuperviseAsync(session));
            #pragma warning restore RS0030
            var period = Min(options.PingInterval, options.PongTimeout) / 4;
            period = period < TimeSpan.FromMilliseconds(10) ? TimeSpan.FromMilliseconds(10) : period;
            client._keepalive = client._time.CreateTimer(static c => ((SsmpClient)c!).CheckKeepalive(), client, period, period);
        }
        catch
        {
            await client.DisposeAsync();
            throw;
        }
        return client;
    }

    public Task SubscribeAsync(string topic, bool presence = false, CancellationToken cancellationToken = default)
    {
        SsmpGrammar.ValidateId(topic, nameof(topic));
        return SubscribeCoreAsync(topic, presence, cancellationToken);
    }

    private async Task SubscribeCoreAsync(string topic, bool presence, CancellationToken cancellationToken)
    {
        var response = await RequestAsync((topic, presence), static (w, s) => SsmpWriter.WriteSubscribe(w, s.topic, s.presence), cancellationToken);
        if (response.Code == 200)
        {
            lock (_topics)
                _topics[topic] = presence;
        }
        Check(response, "SUBSCRIBE " + topic);
    }

    public async Task UnsubscribeAsync(string topic, CancellationToken cancellationToken = default)
    {
        SsmpGrammar.ValidateId(topic, nameof(topic));
        lock (_topics)
            _topics.Remove(topic);
        var response = await RequestAsync(topic, static (w, t) => SsmpWriter.WriteUnsubscribe(w, t), cancellationToken);
        Check(response, "UNSUBSCRIBE " + topic);
    }

    /// <summary>Sends <paramref name="payload"/> (1..1024 bytes) to the client logged in as <paramref name="to"/>; 404 if none is.</summary>
    public async Task UcastAsync(string to, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        var response = await RequestAsync((to, payload), static (w, s) => SsmpWriter.WriteUcast(w, s.to, s.payload.Span), cancellationToken);
        Check(response, "UCAST " + to);
    }

    public Task UcastAsync(string to, string text, CancellationToken cancellationToken = default) =>
        UcastAsync(to, Encoding.UTF8.GetBytes(text), cancellationToken);

    /// <summary>Sends <paramref name="payload"/> to every other subscriber of <paramref name="topic"/> (succeeds even when nobody listens).</summary>
    public async Task McastAsync(string topic, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        var response = await RequestAsync((topic, payload), static (w, s) => SsmpWriter.WriteMcast(w, s.topic, s.payload.Span), cancellationToken);
        Check(response, "MCAST " + topic);
    }

    public Task McastAsync(string topic, string text, CancellationToken cancellationToken = default) =>
        McastAsync(topic, Encoding.UTF8.GetBytes(text), cancellationToken);

    /// <summary>Sends <paramref name="payload"/> once to every client that shares at least one topic with this one.</summary>
    public async Task BcastAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        var response = await RequestAsync(payload, static (w, p) => SsmpWriter.WriteBcast(w, p.Span), cancellationToken);
        Check(response, "BCAST");
    }

    /// <summary>
    /// Sends UCAST without waiting for the broker's answer: the fastest way to send many. The request is
    /// written in order with the others; an error answer is counted in <see cref="UnconfirmedFailures"/>.
    /// Waits only when more than <see cref="SsmpClientOptions.MaxBufferedBytes"/> are waiting to be sent.
    /// </summary>
    public ValueTask PostUcastAsync(string to, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        var session = CurrentSession();
        if (session.IsCongested)
            return PostSlowAsync(session, to, payload, cancellationToken);
        session.PostUcast(to, payload.Span);
        return ValueTask.CompletedTask;
    }

    private static async ValueTask PostSlowAsync(ClientSession session, string to, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        await session.WaitDrainedAsync().WaitAsync(cancellationToken);
        session.PostUcast(to, payload.Span);
    }

    /// <summary>Requests sent with <see cref="PostUcastAsync"/> that the broker refused.</summary>
    public long UnconfirmedFailures => _session?.UnconfirmedFailures ?? 0;

    /// <summary>Sends an extension verb and returns the broker's answer as is (501 when it does not know the verb).</summary>
    public Task<SsmpResponse> SendExtensionAsync(string verb, string? id, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default) =>
        RequestAsync((verb, id, payload), static (w, s) => SsmpWriter.WriteExtension(w, s.verb, s.id, s.payload.Span), cancellationToken);

    /// <summary>Waits until the client is connected (immediately when it is).</summary>
    public async Task WaitConnectedAsync(CancellationToken cancellationToken = default)
    {
        while (_state != SsmpClientState.Connected)
        {
            if (_state is SsmpClientState.Closed or SsmpClientState.Failed)
                throw new SsmpConnectionException($"The client is {_state.ToString().ToLowerInvariant()}.");
            var changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            void Handler(SsmpClientState _) => changed.TrySetResult();
            StateChanged += Handler;
            try
            {
                if (_state == SsmpClientState.Reconnecting)
                    await changed.Task.WaitAsync(cancellationToken);
            }
            finally
            {
                StateChanged -= Handler;
            }
        }
    }

    private async Task<SsmpResponse> RequestAsync<TState>(TState state, WriteRequest<TState> write, CancellationToken cancellationToken)
    {
        var session = CurrentSession();
        if (session.IsCongested)
            await session.WaitDrainedAsync().WaitAsync(cancellationToken);
        var task = session.Send(state, write, expectResponse: true)!;
        return await task.WaitAsync(cancellationToken);
    }

    private ClientSession CurrentSession()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var session = _session;
        if (session is null || _state != SsmpClientState.Connected)
            throw new SsmpConnectionException($"Not connected to the broker (client is {_state.ToString().ToLowerInvariant()}).");
        return session;
    }

    private static void Check(SsmpResponse response, string request)
    {
        if (response.Code != 200)
            throw SsmpException.For(response.Code, request, response.Payload.Span);
    }

    private async Task<ClientSession> OpenSessionAsync(CancellationToken cancellationToken)
    {
        using var timeout = new Deadline(_options.ConnectTimeout, _time, cancellationToken, _disposing.Token);
        ClientSession session;
        try
        {
            session = await ClientSession.ConnectAsync(_options, timeout.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && !_disposing.IsCancellationRequested)
        {
            throw new SsmpConnectionException($"Could not connect to {_options.Host}:{_options.Port} within {_options.ConnectTimeout.TotalSeconds:0.#} s.");
        }
        catch (SocketException e)
        {
            throw new SsmpConnectionException($"Could not connect to {_options.Host}:{_options.Port}: {e.Message}", e);
        }
        // The read loop runs on the pool, never on the caller's synchronization context.
        #pragma warning disable RS0030 // SSMP runs on real sockets and the thread pool, never on a simulation's scheduler
        _ = Task.Run(() => session.RunReadLoopAsync(OnServerEvent));
        #pragma warning restore RS0030
        try
        {
            // A key login signs a new credential each time, just before sending it: a credential is good once, and only
            // for a short while, so one kept from an earlier login would be refused.
            var credential = _options.Key is { } key
                ? SsmpKeyCredential.Create(key, _options.ServerName, _time.GetUtcNow().ToUnixTimeMilliseconds())
                : _options.Credential;
            var login = session.Send((options: _options, credential), static (w, s) => SsmpWriter.WriteLogin(w, s.options.Id, s.options.Scheme, s.credential.Span), expectResponse: true)!;
            var response = await login.WaitAsync(timeout.Token);
            if (response.Code != 200)
                throw SsmpException.For(response.Code, "LOGIN " + _options.Id, response.Payload.Span);
            KeyValuePair<string, bool>[] topics;
            lock (_topics)
                topics = [.. _topics];
            var subscribes = new List<Task<SsmpResponse>>(topics.Length);
            foreach (var (topic, presence) in topics)
                subscribes.Add(session.Send((topic, presence), static (w, s) => SsmpWriter.WriteSubscribe(w, s.topic, s.presence), expectResponse: true)!);
            foreach (var r in await Task.WhenAll(subscribes).WaitAsync(timeout.Token))
            {
                if (r.Code is not (200 or 409))
                    Log.ResubscribeFailed(_logger, r.Code);
            }
            return session;
        }
        catch (Exception e)
        {
            session.Close(e);
            if (e is OperationCanceledException && !cancellationToken.IsCancellationRequested && !_disposing.IsCancellationRequested)
                throw new SsmpConnectionException("The broker did not answer LOGIN in time.");
            throw;
        }
    }

    private async Task SuperviseAsync(ClientSession session)
    {
        while (true)
        {
            await session.Completion;
            if (_disposing.IsCancellationRequested)
                return;
            Log.ConnectionLost(_logger, _options.Host, _options.Port, session.Error?.Message ?? "closed");
            if (!_options.Reconnect)
            {
                SetState(SsmpClientState.Closed);
                _events.Writer.TryComplete(session.Error);
                return;
            }
            SetState(SsmpClientState.Reconnecting);
            var delay = _options.ReconnectDelayMin;
            while (true)
            {
                try
                {
                    var jitter = 0.5 + _options.Random.NextDouble() / 2;
                    await Task.Delay(delay * jitter, _time, _disposing.Token);
                    session = await OpenSessionAsync(_disposing.Token);
                    _session = session;
                    Interlocked.Increment(ref _reconnects);
                    SetState(SsmpClientState.Connected);
                    Log.Reconnected(_logger, _options.Host, _options.Port);
                    break;
                }
                catch (OperationCanceledException) when (_disposing.IsCancellationRequested)
                {
                    return;
                }
                catch (SsmpException e) when (e is not SsmpConnectionException && e.Code is 400 or 401)
                {
                    Log.ReconnectRefused(_logger, e.Message);
                    SetState(SsmpClientState.Failed);
                    _events.Writer.TryComplete(e);
                    return;
                }
                catch (ObjectDisposedException e) when (_options.Key is not null && !_disposing.IsCancellationRequested)
                {
                    // The node key was disposed while the client still needed it to sign: nothing to retry with.
                    Log.ReconnectRefused(_logger, e.Message);
                    SetState(SsmpClientState.Failed);
                    _events.Writer.TryComplete(e);
                    return;
                }
                catch (Exception e) when (e is SsmpException or IOException or SocketException or System.Security.Authentication.AuthenticationException)
                {
                    delay = delay * 2 > _options.ReconnectDelayMax ? _options.ReconnectDelayMax : delay * 2;
                }
            }
        }
    }

    private void SetState(SsmpClientState state)
    {
        _state = state;
        StateChanged?.Invoke(state);
    }

    private void OnServerEvent(SsmpServerMessage message, byte[] buffer)
    {
        if (message.From.Length == 1 && message.From[0] == (byte)'.')
        {
            if (message.Event.Verb == SsmpVerb.Ping)
            {
                _session?.Send(0, static (w, _) => SsmpWriter.WritePong(w), expectResponse: false);
                return;
            }
            if (message.Event.Verb == SsmpVerb.Pong)
                return;
        }
        if (_options.OnEvent is { } callback)
        {
            var e = SsmpEvent.From_(message, _ids, _options.LendPayloads ? buffer : null);
            try
            {
                callback(e);
            }
            catch (Exception ex)
            {
                Log.CallbackFailed(_logger, ex);
            }
            return;
        }
        _events.Writer.TryWrite(SsmpEvent.From_(message, _ids));
    }

    private void CheckKeepalive()
    {
        var session = _session;
        if (session is null || _state != SsmpClientState.Connected)
            return;
        var idle = _time.GetElapsedTime(session.LastReceived);
        if (idle >= _options.PingInterval + _options.PongTimeout)
        {
            session.Close(new TimeoutException($"The broker was silent for {idle.TotalSeconds:0} s."));
        }
        else if (idle >= _options.PingInterval && !session.PingOutstanding)
        {
            session.PingOutstanding = true;
            try
            {
                session.Send(0, static (w, _) => SsmpWriter.WritePing(w), expectResponse: false);
            }
            catch (SsmpConnectionException)
            {
            }
        }
    }

    /// <summary>Sends CLOSE, waits briefly for the answer, and stops re-connecting.</summary>
    public Task CloseAsync() => DisposeAsync().AsTask();

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await _disposing.CancelAsync();
        if (_keepalive is not null)
            await _keepalive.DisposeAsync();
        if (_session is { } session)
            await session.CloseGracefullyAsync(TimeSpan.FromSeconds(2));
        if (_supervisor is not null)
            await _supervisor;
        SetState(SsmpClientState.Closed);
        _events.Writer.TryComplete();
        _disposing.Dispose();
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static partial class Log
    {
        [LoggerMessage(EventId = 100, Level = LogLevel.Warning, Message = "Connection to SSMP broker {Host}:{Port} lost: {Reason}")]
        public static partial void ConnectionLost(ILogger logger, string host, int port, string reason);

        [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Re-connected to SSMP broker {Host}:{Port}")]
        public static partial void Reconnected(ILogger logger, string host, int port);

        [LoggerMessage(EventId = 102, Level = LogLevel.Error, Message = "Re-connection refused, giving up: {Reason}")]
        public static partial void ReconnectRefused(ILogger logger, string reason);

        [LoggerMessage(EventId = 103, Level = LogLevel.Warning, Message = "Restoring a subscription failed with {Code}")]
        public static partial void ResubscribeFailed(ILogger logger, int code);

        [LoggerMessage(EventId = 104, Level = LogLevel.Error, Message = "The event callback threw")]
        public static partial void CallbackFailed(ILogger logger, Exception exception);
    }
}
