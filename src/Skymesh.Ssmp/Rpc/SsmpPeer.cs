using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Rpc;

public sealed class SsmpPeerOptions
{
    public SsmpReassemblerOptions Reassembly { get; set; } = new();

    /// <summary>Whole messages (<see cref="SsmpPeer.Messages"/>) held before the newest is dropped.</summary>
    public int MessageQueueCapacity { get; set; } = 4096;

    /// <summary>Requests handled at once; beyond this the caller is answered 503.</summary>
    public int MaxConcurrentRequests { get; set; } = 1024;

    /// <summary>
    /// How long an answer is remembered after it is sent, so a retry gets the same answer without running the handler
    /// again. It must cover the callers' retries: a call's last attempt starts (Attempts − 1) × AttemptTimeout after its first.
    /// </summary>
    public TimeSpan ResponseCacheTime { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Most answers remembered; beyond it the oldest is forgotten first.</summary>
    public int MaxCachedResponses { get; set; } = 10_000;

    /// <summary>Most bytes of answers remembered (taken as needed, in chunks of up to 4 MiB); beyond it the oldest are forgotten first.</summary>
    public long MaxCachedResponseBytes { get; set; } = 64L << 20;

    public void Validate()
    {
        Reassembly.Validate();
        if (MessageQueueCapacity < 1 || MaxConcurrentRequests < 1 || MaxCachedResponses < 0)
            throw new ArgumentException("Queue sizes must be positive.");
        if (MaxCachedResponseBytes < 4096)
            throw new ArgumentOutOfRangeException(nameof(MaxCachedResponseBytes), MaxCachedResponseBytes, "Must be at least 4096.");
        if (ResponseCacheTime < TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(ResponseCacheTime), ResponseCacheTime, "Must not be negative.");
    }
}

/// <summary>How one call is confirmed: each attempt waits <see cref="AttemptTimeout"/>; a retry re-sends the same request id.</summary>
public sealed record SsmpCallOptions
{
    public static SsmpCallOptions Default { get; } = new();

    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(2);

    public int Attempts { get; init; } = 3;
}

/// <summary>A whole message received through the chunking layer.</summary>
public sealed record SsmpMessage(string From, ReadOnlyMemory<byte> Body);

/// <summary>A request as a handler sees it.</summary>
public sealed record SsmpRpcRequest(string From, string Method, ReadOnlyMemory<byte> Body);

public delegate ValueTask<ReadOnlyMemory<byte>> SsmpRpcHandler(SsmpRpcRequest request, CancellationToken cancellationToken);

/// <summary>
/// A handler that answers through <paramref name="reply"/> when it is ready, exactly once, instead of returning a task:
/// no task or request object per call. It is called on the connection's read loop; <paramref name="body"/> lies in the
/// connection's read buffer and is valid only during the call: what is kept of it must be copied.
/// </summary>
public delegate void SsmpRpcDirectHandler(SsmpRpcReply reply, ReadOnlyMemory<byte> body);

/// <summary>
/// Where the answer to one request goes (see <see cref="SsmpRpcDirectHandler"/>). Exactly one of <see cref="Answer"/> and
/// <see cref="Fail"/> must be called once for each request: until then it counts as running.
/// </summary>
public readonly struct SsmpRpcReply
{
    private readonly SsmpPeer _peer;
    private readonly ulong _id;

    internal SsmpRpcReply(SsmpPeer peer, string from, string method, ulong id)
    {
        _peer = peer;
        From = from;
        Method = method;
        _id = id;
    }

    /// <summary>The caller's SSMP id, as the broker proved it.</summary>
    public string From { get; }

    public string Method { get; }

    /// <summary>Answers with success and <paramref name="body"/> (copied before this returns).</summary>
    public void Answer(ReadOnlySpan<byte> body) => _peer.AnswerDirect(From, _id, 0, body);

    /// <summary>Answers with an error: <paramref name="status"/> (1 to 65,535) and <paramref name="message"/>.</summary>
    public void Fail(int status, string message) =>
        _peer.AnswerDirect(From, _id, status is > 0 and <= ushort.MaxValue ? status : SsmpRpcException.HandlerFailed, Encoding.UTF8.GetBytes(message));
}

/// <summary>A call failed at the other end (or could not be made); <see cref="Status"/> says how.</summary>
public sealed class SsmpRpcException : Exception
{
    public const int BadRequest = 400;
    public const int NoSuchMethod = 404;
    public const int Timeout = 408;
    public const int HandlerFailed = 500;
    public const int Overloaded = 503;

    public SsmpRpcException(int status, string message)
        : base(message) => Status = status;

    public SsmpRpcException()
    {
    }

    public SsmpRpcException(string message)
        : base(message)
    {
    }

    public SsmpRpcException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public int Status { get; }
}

/// <summary>
/// The layers above SSMP (docs/ssmp-rpc.md): messages of any size up to the receiver's limit, split into
/// UCAST fragments and put back together; and request/response calls with correlation ids, timeouts and
/// retries that a server answers at most once per request id. Other events pass through to
/// <see cref="SsmpClientOptions.OnEvent"/> or to <see cref="OtherEvents"/>.
/// </summary>
public sealed partial class SsmpPeer : IAsyncDisposable
{
    private const byte KindMessage = (byte)'M';
    private const byte KindRequest = (byte)'Q';
    private const byte KindResponse = (byte)'R';

    private readonly SsmpPeerOptions _options;
    private readonly SsmpReassembler _reassembler;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Channel<SsmpMessage> _messages;
    private readonly Channel<SsmpEvent> _otherEvents;
    private readonly Action<SsmpEvent>? _userCallback;
    private readonly bool _userLends;
    private readonly ConcurrentDictionary<string, (SsmpRpcHandler? Handler, SsmpRpcDirectHandler? Direct, bool Inline)> _handlers = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<ReadOnlyMemory<byte>>> _calls = new();
    private readonly ResponseCache _answered;
    private readonly CancellationTokenSource _disposing = new();

    // Taken once: a request or a reply that arrives while the peer is being disposed still reads it (the source's
    // Token property throws once the source is disposed; a token taken before stays valid, and cancelled).
    private readonly CancellationToken _disposingToken;
    private SsmpClient? _client;
    private long _nextCallId;
    private int _nextMessageId;
    private int _running;
    private long _droppedMessages;
    private long _badRpc;

    private SsmpPeer(SsmpPeerOptions options, SsmpClientOptions clientOptions)
    {
        _options = options;
        _time = clientOptions.TimeProvider;
        _logger = (clientOptions.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Skymesh.Ssmp.Rpc");
        _reassembler = new SsmpReassembler(options.Reassembly, _time);
        _messages = Channel.CreateBounded<SsmpMessage>(new BoundedChannelOptions(options.MessageQueueCapacity) { FullMode = BoundedChannelFullMode.DropWrite },
            _ => Interlocked.Increment(ref _droppedMessages));
        _otherEvents = Channel.CreateBounded<SsmpEvent>(new BoundedChannelOptions(clientOptions.EventQueueCapacity) { FullMode = BoundedChannelFullMode.DropOldest });
        _userCallback = clientOptions.OnEvent;
        _userLends = clientOptions.LendPayloads;
        _answered = new ResponseCache(options.MaxCachedResponses, options.MaxCachedResponseBytes, options.ResponseCacheTime, _time);
        _disposingToken = _disposing.Token;
        // Random start so that a restarted peer does not reuse the ids of its previous life within a receiver's caches.
        _nextCallId = clientOptions.Random.NextInt64() & 0x3FFF_FFFF_FFFF_FFFF;
        _nextMessageId = clientOptions.Random.Next();
    }

    /// <summary>Connects a client with <paramref name="clientOptions"/> and layers messaging and RPC on it.</summary>
    public static async Task<SsmpPeer> ConnectAsync(SsmpClientOptions clientOptions, SsmpPeerOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(clientOptions);
        options ??= new SsmpPeerOptions();
        options.Validate();
        var peer = new SsmpPeer(options, clientOptions);
        var own = clientOptions.Clone();
        own.OnEvent = peer.OnEvent;
        // Payloads are read where they lie; whatever outlives the read loop's call (a message, a response, a request for
        // a task handler, an event for the application) is copied on its way out.
        own.LendPayloads = true;
        peer._client = await SsmpClient.ConnectAsync(own, cancellationToken);
        return peer;
    }

    public SsmpClient Client => _client ?? throw new InvalidOperationException("Not connected.");

    public string Id => Client.Id;

    /// <summary>Whole messages sent with <see cref="SendAsync"/> by other peers.</summary>
    public ChannelReader<SsmpMessage> Messages => _messages.Reader;

    /// <summary>Events that are not fragments (MCAST, presence, plain UCAST), when no callback was given.</summary>
    public ChannelReader<SsmpEvent> OtherEvents => _otherEvents.Reader;

    public SsmpReassembler Reassembler => _reassembler;

    /// <summary>Messages dropped because <see cref="Messages"/> was full.</summary>
    public long DroppedMessages => Interlocked.Read(ref _droppedMessages);

    /// <summary>Malformed requests and responses, and responses to calls nobody waits for.</summary>
    public long BadRpc => Interlocked.Read(ref _badRpc);

    /// <summary>Registers the handler of <paramref name="method"/> (1 to 64 identifier characters).</summary>
    public void Handle(string method, SsmpRpcHandler handler)
    {
        SsmpGrammar.ValidateId(method, nameof(method));
        ArgumentNullException.ThrowIfNull(handler);
        _handlers[method] = (handler, null, false);
    }

    /// <summary>
    /// Registers a handler that is started on the connection's read loop, saving a hop through the thread pool per request:
    /// for handlers that only check a request and hand it on before their first <c>await</c>. Until then the read loop
    /// waits for it, so anything slow (a signature check, I/O) must come after an <c>await</c> (e.g. of <c>Task.Yield()</c>).
    /// </summary>
    public void HandleInline(string method, SsmpRpcHandler handler)
    {
        SsmpGrammar.ValidateId(method, nameof(method));
        ArgumentNullException.ThrowIfNull(handler);
        _handlers[method] = (handler, null, true);
    }

    /// <summary>
    /// Registers a handler that answers through an <see cref="SsmpRpcReply"/>: for the hottest methods, where a task and a
    /// request object per call cost more than the work. Like <see cref="HandleInline"/> it is called on the connection's
    /// read loop and must only check and hand the request on there; what it throws is answered 500.
    /// </summary>
    public void HandleDirect(string method, SsmpRpcDirectHandler handler)
    {
        SsmpGrammar.ValidateId(method, nameof(method));
        ArgumentNullException.ThrowIfNull(handler);
        _handlers[method] = (null, handler, true);
    }

    /// <summary>Sends a message of any size up to the receiver's limit to <paramref name="to"/>; throws <see cref="SsmpException"/> 404 when it is not connected.</summary>
    public Task SendAsync(string to, ReadOnlyMemory<byte> body, CancellationToken cancellationToken = default) =>
        SendFramedAsync(to, Frame(KindMessage, body.Span), cancellationToken);

    /// <summary>
    /// Calls <paramref name="method"/> at <paramref name="to"/> and returns its answer. Each attempt waits
    /// <see cref="SsmpCallOptions.AttemptTimeout"/>; retries carry the same request id, so the handler runs once.
    /// </summary>
    public async Task<ReadOnlyMemory<byte>> CallAsync(string to, string method, ReadOnlyMemory<byte> body, SsmpCallOptions? callOptions = null, CancellationToken cancellationToken = default)
    {
        SsmpGrammar.ValidateId(to, nameof(to));
        SsmpGrammar.ValidateId(method, nameof(method));
        callOptions ??= SsmpCallOptions.Default;
        var id = (ulong)Interlocked.Increment(ref _nextCallId);
        var request = new byte[1 + 8 + 1 + method.Length + body.Length];
        request[0] = KindRequest;
        BinaryPrimitives.WriteUInt64BigEndian(request.AsSpan(1), id);
        request[9] = (byte)method.Length;
        Encoding.ASCII.GetBytes(method, request.AsSpan(10));
        body.Span.CopyTo(request.AsSpan(10 + method.Length));
        var waiter = new TaskCompletionSource<ReadOnlyMemory<byte>>(TaskCreationOptions.RunContinuationsAsynchronously);
        _calls[id] = waiter;
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                // The attempt's clock starts before the send, so sending counts against it too.
                using var attemptCancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                var deadline = Task.Delay(callOptions.AttemptTimeout, _time, attemptCancel.Token);
                await SendFramedAsync(to, request, cancellationToken);
                if (await Task.WhenAny(waiter.Task, deadline) == waiter.Task)
                {
                    await attemptCancel.CancelAsync();
                    return await waiter.Task;
                }
                cancellationToken.ThrowIfCancellationRequested();
                if (attempt >= callOptions.Attempts)
                {
                    throw new SsmpRpcException(SsmpRpcException.Timeout,
                        $"{method} at {to}: no answer after {callOptions.Attempts} attempt(s) of {callOptions.AttemptTimeout.TotalSeconds:0.###} s.");
                }
                Log.Retrying(_logger, method, to, attempt);
            }
        }
        finally
        {
            _calls.TryRemove(id, out _);
        }
    }

    private async Task SendFramedAsync(string to, byte[] framed, CancellationToken cancellationToken)
    {
        var client = Client;
        var messageId = (uint)Interlocked.Increment(ref _nextMessageId);
        var count = SsmpChunking.FragmentCount(framed.Length);
        if (count > SsmpChunking.MaxFragments)
            throw new ArgumentException($"A message is at most {SsmpChunking.MaxMessageLength} bytes.", nameof(framed));
        // Fragments are pipelined: FIFO per sender and recipient keeps them in order; every one is confirmed.
        var sends = new Task[count];
        for (var i = 0; i < count; i++)
            sends[i] = client.UcastAsync(to, SsmpChunking.Fragment(messageId, framed, i), cancellationToken);
        await Task.WhenAll(sends);
    }

    private static byte[] Frame(byte kind, ReadOnlySpan<byte> body)
    {
        var framed = new byte[1 + body.Length];
        framed[0] = kind;
        body.CopyTo(framed.AsSpan(1));
        return framed;
    }

    private void OnEvent(SsmpEvent e)
    {
        if (e.Verb == SsmpVerb.Ucast && SsmpChunking.IsFragment(e.Payload.Span))
        {
            // A message of one fragment is used where it lies, in the read buffer.
            if (SsmpChunking.TryReadHeader(e.Payload.Span, out _, out _, out var count, out var data) && count == 1
                && data.Length <= _options.Reassembly.MaxMessageBytes)
            {
                Dispatch(e.From, e.Payload[SsmpChunking.HeaderLength..], lent: true);
                return;
            }
            var status = _reassembler.Add(e.From, e.Payload.Span, out var message, out var drop);
            if (status == ReassemblyStatus.Complete)
                Dispatch(e.From, message!, lent: false);
            else if (status == ReassemblyStatus.Dropped)
                Log.FragmentDropped(_logger, e.From, drop);
            return;
        }
        if (_userCallback is not null)
            _userCallback(_userLends ? e : e.Detach());
        else
            _otherEvents.Writer.TryWrite(e.Detach());
    }

    /// <summary>Bytes to keep past the read loop's call: a copy of them when they are <paramref name="lent"/> (in the read buffer).</summary>
    private static ReadOnlyMemory<byte> Kept(ReadOnlyMemory<byte> bytes, bool lent) => lent ? bytes.ToArray() : bytes;

    /// <summary>A whole message; <paramref name="lent"/> when it lies in the read buffer (then what is kept is copied).</summary>
    private void Dispatch(string from, ReadOnlyMemory<byte> message, bool lent)
    {
        if (message.Length == 0)
        {
            Interlocked.Increment(ref _badRpc);
            return;
        }
        switch (message.Span[0])
        {
            case KindMessage:
                _messages.Writer.TryWrite(new SsmpMessage(from, Kept(message[1..], lent)));
                break;
            case KindRequest:
                OnRequest(from, message, lent);
                break;
            case KindResponse:
                OnResponse(message, lent);
                break;
            default:
                Interlocked.Increment(ref _badRpc);
                break;
        }
    }

    private void OnResponse(ReadOnlyMemory<byte> message, bool lent)
    {
        if (message.Length < 11)
        {
            Interlocked.Increment(ref _badRpc);
            return;
        }
        var id = BinaryPrimitives.ReadUInt64BigEndian(message.Span[1..]);
        var status = BinaryPrimitives.ReadUInt16BigEndian(message.Span[9..]);
        if (!_calls.TryGetValue(id, out var waiter))
        {
            // A late answer to a call that timed out, or a duplicate answer to a retry.
            Interlocked.Increment(ref _badRpc);
            return;
        }
        var body = message[11..];
        if (status == 0)
            waiter.TrySetResult(Kept(body, lent));
        else
            waiter.TrySetException(new SsmpRpcException(status, Encoding.UTF8.GetString(body.Span)));
    }

    // Request: 'Q' | call id u64 | method length u8 | method | body
    private void OnRequest(string from, ReadOnlyMemory<byte> request, bool lent)
    {
        var message = request.Span;
        if (message.Length < 11 || message[9] is 0 or > SsmpGrammar.MaxIdLength || message.Length < 10 + message[9]
            || !SsmpGrammar.IsValidId(message.Slice(10, message[9])))
        {
            Interlocked.Increment(ref _badRpc);
            if (message.Length >= 9)
                _ = ReplyAsync(from, BinaryPrimitives.ReadUInt64BigEndian(message[1..]), SsmpRpcException.BadRequest, Encoding.UTF8.GetBytes("malformed request"));
            return;
        }
        var id = BinaryPrimitives.ReadUInt64BigEndian(message[1..]);
        // The method is looked up by its characters: the registered name is used, no string made per request.
        Span<char> name = stackalloc char[SsmpGrammar.MaxIdLength];
        name = name[..Encoding.ASCII.GetChars(message.Slice(10, message[9]), name)];
        var body = request[(10 + message[9])..];
        switch (_answered.Begin(from, id, out var cached))
        {
            case ResponseCache.State.InProgress:
                return; // the handler is still working on the first copy; its answer will go out
            case ResponseCache.State.Answered:
                _ = SendFramedSafeAsync(from, cached!);
                return;
        }
        if (!_handlers.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(name, out var method, out var registered))
        {
            _ = ReplyAsync(from, id, SsmpRpcException.NoSuchMethod, Encoding.UTF8.GetBytes($"no method '{name}' here"));
            return;
        }
        if (Interlocked.Increment(ref _running) > _options.MaxConcurrentRequests)
        {
            Interlocked.Decrement(ref _running);
            _answered.Forget(from, id);
            _ = ReplyAsync(from, id, SsmpRpcException.Overloaded, Encoding.UTF8.GetBytes("too many requests at once; retry later"), remember: false);
            return;
        }
        if (registered.Direct is { } direct)
        {
            try
            {
                direct(new SsmpRpcReply(this, from, method, id), body);
            }
            catch (Exception e)
            {
                // The handler failed before handing the request on; it must not have answered it.
                Log.HandlerFailed(_logger, method, from, e);
                AnswerDirect(from, id, SsmpRpcException.HandlerFailed, Encoding.UTF8.GetBytes($"{method} failed: {e.Message}"));
            }
            return;
        }
        _ = RunHandlerAsync(registered.Handler!, registered.Inline, new SsmpRpcRequest(from, method, Kept(body, lent)), id);
    }

    /// <summary>The answer of a direct handler: the request stops counting as running, and the answer is remembered and sent.</summary>
    internal void AnswerDirect(string to, ulong id, int status, ReadOnlySpan<byte> body)
    {
        Interlocked.Decrement(ref _running);
        if (11 + body.Length <= SsmpChunking.MaxFragmentData)
            _ = ReplyOneFragment(to, id, status, body, remember: true);
        else
            _ = ReplyAsync(to, id, status, body.ToArray());
    }

    private async Task RunHandlerAsync(SsmpRpcHandler handler, bool inline, SsmpRpcRequest request, ulong id)
    {
        var status = 0;
        ReadOnlyMemory<byte> answer;
        try
        {
            if (!inline)
                await Task.Yield();
            answer = await handler(request, _disposingToken);
        }
        catch (SsmpRpcException e)
        {
            status = e.Status is > 0 and <= ushort.MaxValue ? e.Status : SsmpRpcException.HandlerFailed;
            answer = Encoding.UTF8.GetBytes(e.Message);
        }
        catch (Exception e)
        {
            Log.HandlerFailed(_logger, request.Method, request.From, e);
            status = SsmpRpcException.HandlerFailed;
            answer = Encoding.UTF8.GetBytes($"{request.Method} failed: {e.Message}");
        }
        finally
        {
            Interlocked.Decrement(ref _running);
        }
        await ReplyAsync(request.From, id, status, answer);
    }

    // Response: 'R' | call id u64 | status u16 (0 = success) | body
    private Task ReplyAsync(string to, ulong id, int status, ReadOnlyMemory<byte> body, bool remember = true)
    {
        const int Framing = 11;
        if (Framing + body.Length > SsmpChunking.MaxFragmentData)
        {
            var response = new byte[Framing + body.Length];
            WriteResponse(response, id, status, body.Span);
            if (remember)
                _answered.Complete(to, id, response);
            return SendFramedSafeAsync(to, response);
        }
        return ReplyOneFragment(to, id, status, body.Span, remember);
    }

    /// <summary>An answer that fits one fragment (the common case): written straight into a pooled buffer, remembered from it, posted from it.</summary>
    private Task ReplyOneFragment(string to, ulong id, int status, ReadOnlySpan<byte> body, bool remember)
    {
        const int Framing = 11;
        var buffer = ArrayPool<byte>.Shared.Rent(SsmpChunking.HeaderLength + Framing + body.Length);
        var fragment = buffer.AsMemory(0, SsmpChunking.HeaderLength + Framing + body.Length);
        var framed = fragment.Span[SsmpChunking.HeaderLength..];
        WriteResponse(framed, id, status, body);
        if (remember)
            _answered.Complete(to, id, framed);
        SsmpChunking.WriteHeader(fragment.Span, (uint)Interlocked.Increment(ref _nextMessageId), 0, 1);
        ValueTask posted;
        try
        {
            posted = Client.PostUcastAsync(to, fragment, _disposingToken);
        }
        // Not connected: a request that came in during the login, before the client was handed over; the answer is
        // remembered, so the caller's retry gets it.
        catch (Exception e) when (e is SsmpException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            Log.ReplyFailed(_logger, to, e.Message);
            return Task.CompletedTask;
        }
        if (posted.IsCompletedSuccessfully)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            return Task.CompletedTask;
        }
        return AwaitPostedAsync(posted, buffer, to);
    }

    private async Task AwaitPostedAsync(ValueTask posted, byte[] buffer, string to)
    {
        try
        {
            await posted;
        }
        catch (Exception e) when (e is SsmpException or OperationCanceledException or ObjectDisposedException)
        {
            Log.ReplyFailed(_logger, to, e.Message);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static void WriteResponse(Span<byte> destination, ulong id, int status, ReadOnlySpan<byte> body)
    {
        destination[0] = KindResponse;
        BinaryPrimitives.WriteUInt64BigEndian(destination[1..], id);
        BinaryPrimitives.WriteUInt16BigEndian(destination[9..], (ushort)status);
        body.CopyTo(destination[11..]);
    }

    private async Task SendFramedSafeAsync(string to, byte[] framed)
    {
        try
        {
            // Answers are posted without waiting for the broker's 200: a lost answer is recovered by the caller's retry
            // (answered from the cache), so the confirmation would change nothing but cost a round trip each.
            var client = Client;
            var messageId = (uint)Interlocked.Increment(ref _nextMessageId);
            var count = SsmpChunking.FragmentCount(framed.Length);
            for (var i = 0; i < count; i++)
                await client.PostUcastAsync(to, SsmpChunking.Fragment(messageId, framed, i), _disposingToken);
        }
        catch (Exception e) when (e is SsmpException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
        {
            // The caller left or the connection dropped: it will retry, and the cached answer will be sent then.
            Log.ReplyFailed(_logger, to, e.Message);
        }
    }

    /// <summary>Closes the connection and fails calls still waiting; disposing again does nothing.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await _disposing.CancelAsync();
        if (_client is not null)
            await _client.DisposeAsync();
        foreach (var waiter in _calls.Values)
            waiter.TrySetException(new SsmpConnectionException("The peer was closed."));
        _messages.Writer.TryComplete();
        _otherEvents.Writer.TryComplete();
        _disposing.Dispose();
    }

    private int _disposed;

    private static partial class Log
    {
        [LoggerMessage(EventId = 200, Level = LogLevel.Debug, Message = "{Method} at {To}: no answer to attempt {Attempt}, retrying")]
        public static partial void Retrying(ILogger logger, string method, string to, int attempt);

        [LoggerMessage(EventId = 201, Level = LogLevel.Warning, Message = "Fragment from {From} dropped: {Reason}")]
        public static partial void FragmentDropped(ILogger logger, string from, ReassemblyDrop reason);

        [LoggerMessage(EventId = 202, Level = LogLevel.Error, Message = "Handler of {Method} failed on a request from {From}")]
        public static partial void HandlerFailed(ILogger logger, string method, string from, Exception exception);

        [LoggerMessage(EventId = 203, Level = LogLevel.Debug, Message = "Answer to {To} not sent: {Reason}")]
        public static partial void ReplyFailed(ILogger logger, string to, string reason);
    }
}
