using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Security;
using System.Net.Sockets;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Client;

/// <summary>
/// One TCP (or TLS, or caller-supplied stream) connection of a client: a read loop that matches responses to requests in order and
/// hands events on, and a coalescing writer. A lost connection ends the session; the client makes a new one.
/// </summary>
internal sealed class ClientSession : IThreadPoolWorkItem
{
    private const int ReceiveBufferSize = 64 * 1024;

    private readonly Socket? _socket;
    private readonly Stream _stream;
    private readonly ConcurrentQueue<TaskCompletionSource<SsmpResponse>?> _pending = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TimeProvider _time;
    private readonly int _maxBuffered;
    private bool _flushing;
    private int _inFlight;
    private int _closed;
    private TaskCompletionSource? _drained;
    private long _lastReceived;

    private ClientSession(Socket? socket, Stream stream, TimeProvider time, int maxBuffered)
    {
        _socket = socket;
        _stream = stream;
        _time = time;
        _maxBuffered = maxBuffered;
        _lastReceived = time.GetTimestamp();
    }

    public OutgoingBuffer Out { get; } = new();

    /// <summary>Completes when the connection is gone.</summary>
    public Task Completion => _completion.Task;

    public Exception? Error { get; private set; }

    public bool PingOutstanding { get; set; }

    public long LastReceived => Volatile.Read(ref _lastReceived);

    /// <summary>
    /// Opens the transport — a TCP connection to Host:Port, or <see cref="SsmpClientOptions.ConnectStream"/>'s stream —
    /// and, with <see cref="SsmpClientOptions.Tls"/>, runs the TLS handshake on it.
    /// </summary>
    public static async Task<ClientSession> ConnectAsync(SsmpClientOptions options, CancellationToken cancellationToken)
    {
        Socket? socket = null;
        Stream stream;
        if (options.ConnectStream is { } connect)
        {
            stream = await connect(cancellationToken)
                ?? throw new InvalidOperationException($"{nameof(SsmpClientOptions.ConnectStream)} returned no stream.");
        }
        else
        {
            socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(options.Host, options.Port, cancellationToken);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            stream = new NetworkStream(socket, ownsSocket: true);
        }
        try
        {
            if (options.Tls is { } tls)
            {
                var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
                stream = ssl;
                var tlsOptions = tls.TargetHost is null ? CopyWithHost(tls, options.Host) : tls;
                await ssl.AuthenticateAsClientAsync(tlsOptions, cancellationToken);
            }
            return new ClientSession(socket, stream, options.TimeProvider, options.MaxBufferedBytes);
        }
        catch
        {
            // Disposes the transport below it too (and the socket, which the network stream owns).
            await stream.DisposeAsync();
            throw;
        }
    }

    private static SslClientAuthenticationOptions CopyWithHost(SslClientAuthenticationOptions tls, string host) => new()
    {
        TargetHost = host,
        ClientCertificates = tls.ClientCertificates,
        ClientCertificateContext = tls.ClientCertificateContext,
        RemoteCertificateValidationCallback = tls.RemoteCertificateValidationCallback,
        LocalCertificateSelectionCallback = tls.LocalCertificateSelectionCallback,
        ApplicationProtocols = tls.ApplicationProtocols,
        AllowRenegotiation = tls.AllowRenegotiation,
        AllowTlsResume = tls.AllowTlsResume,
        EnabledSslProtocols = tls.EnabledSslProtocols,
        CertificateRevocationCheckMode = tls.CertificateRevocationCheckMode,
        CertificateChainPolicy = tls.CertificateChainPolicy,
    };

    /// <summary>
    /// Writes one request (under the output lock, so its place in the response order is fixed) and returns
    /// the task of its response; with <paramref name="expectResponse"/> false (PING, PONG) none is awaited.
    /// </summary>
    public Task<SsmpResponse>? Send<TState>(TState state, WriteRequest<TState> write, bool expectResponse, bool confirm = true)
    {
        TaskCompletionSource<SsmpResponse>? waiter = expectResponse && confirm
            ? new TaskCompletionSource<SsmpResponse>(TaskCreationOptions.RunContinuationsAsynchronously)
            : null;
        bool schedule;
        lock (Out.Sync)
        {
            if (Volatile.Read(ref _closed) != 0)
                throw new SsmpConnectionException("Not connected to the broker.", Error ?? new IOException("connection closed"));
            var before = Out.Length;
            write(Out, state);
            if (Out.Length == before)
                return waiter?.Task;
            if (expectResponse)
                _pending.Enqueue(waiter);
            schedule = !_flushing;
            _flushing = true;
        }
        if (schedule)
            #pragma warning disable RS0030 // SSMP runs on real sockets and the thread pool, never on a simulation's scheduler
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
            #pragma warning restore RS0030
        return waiter?.Task;
    }

    /// <summary>Writes a UCAST whose answer nobody waits for (an error answer is counted).</summary>
    public void PostUcast(string to, ReadOnlySpan<byte> payload)
    {
        bool schedule;
        lock (Out.Sync)
        {
            if (Volatile.Read(ref _closed) != 0)
                throw new SsmpConnectionException("Not connected to the broker.", Error ?? new IOException("connection closed"));
            SsmpWriter.WriteUcast(Out, to, payload);
            _pending.Enqueue(null);
            schedule = !_flushing;
            _flushing = true;
        }
        if (schedule)
            #pragma warning disable RS0030 // SSMP runs on real sockets and the thread pool, never on a simulation's scheduler
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
            #pragma warning restore RS0030
    }

    /// <summary>Posted requests the broker refused.</summary>
    public long UnconfirmedFailures => Interlocked.Read(ref _unconfirmedFailures);

    private long _unconfirmedFailures;

    /// <summary>True when more than the configured bytes are waiting to be sent.</summary>
    public bool IsCongested => Out.Length + Volatile.Read(ref _inFlight) > _maxBuffered;

    /// <summary>Completes when the send queue has drained (or the session ended).</summary>
    public Task WaitDrainedAsync()
    {
        lock (Out.Sync)
        {
            if (!IsCongested || _closed != 0)
                return Task.CompletedTask;
            _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _drained.Task;
        }
    }

    void IThreadPoolWorkItem.Execute() => _ = FlushAsync();

    private async Task FlushAsync()
    {
        try
        {
            while (true)
            {
                ArraySegment<byte> batch = default;
                TaskCompletionSource? drained = null;
                lock (Out.Sync)
                {
                    if (Out.Length == 0 || _closed != 0)
                    {
                        _flushing = false;
                        if (_closed != 0)
                            Out.Clear();
                        drained = _drained;
                        _drained = null;
                    }
                    else
                    {
                        batch = Out.Take();
                        _inFlight = batch.Count;
                    }
                }
                if (batch.Array is null)
                {
                    drained?.TrySetResult();
                    return;
                }
                await _stream.WriteAsync(batch.AsMemory());
                // A stream from ConnectStream may hold bytes back until told; a socket (and TLS on it) never does.
                if (_socket is null)
                    await _stream.FlushAsync();
                lock (Out.Sync)
                {
                    _inFlight = 0;
                    Out.Recycle(batch.Array);
                    if (_drained is not null && !IsCongested)
                    {
                        drained = _drained;
                        _drained = null;
                    }
                }
                drained?.TrySetResult();
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            lock (Out.Sync)
                _flushing = false;
            Close(e);
        }
    }

    /// <summary>
    /// Reads server messages until the connection ends. Responses complete waiters in order; events go to
    /// <paramref name="onEvent"/> with the buffer they lie in (valid until it returns).
    /// </summary>
    public async Task RunReadLoopAsync(Action<SsmpServerMessage, byte[]> onEvent)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(ReceiveBufferSize);
        var filled = 0;
        try
        {
            while (true)
            {
                var n = await _stream.ReadAsync(buffer.AsMemory(filled, ReceiveBufferSize - filled));
                if (n == 0)
                {
                    Close(new IOException("The broker closed the connection."));
                    return;
                }
                filled += n;
                Volatile.Write(ref _lastReceived, _time.GetTimestamp());
                PingOutstanding = false;
                var offset = 0;
                while (offset < filled)
                {
                    var status = SsmpParser.TryParseServerMessage(buffer.AsSpan(offset, filled - offset), out var message, out var used, out var error);
                    if (status == SsmpParseStatus.NeedMoreData)
                        break;
                    if (status == SsmpParseStatus.Invalid)
                    {
                        Close(new InvalidDataException($"The broker sent a malformed message ({error})."));
                        return;
                    }
                    offset += used;
                    if (message.IsEvent)
                    {
                        onEvent(message, buffer);
                    }
                    else if (!_pending.TryDequeue(out var waiter))
                    {
                        Close(new InvalidDataException($"The broker sent a response ({message.Code}) to no request."));
                        return;
                    }
                    else if (waiter is null)
                    {
                        if (message.Code != 200)
                            Interlocked.Increment(ref _unconfirmedFailures);
                    }
                    else
                    {
                        waiter.TrySetResult(new SsmpResponse(message.Code, message.Payload.IsEmpty ? ReadOnlyMemory<byte>.Empty : message.Payload.ToArray()));
                    }
                }
                filled -= offset;
                if (filled > 0 && offset > 0)
                    buffer.AsSpan(offset, filled).CopyTo(buffer);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            Close(e);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Ends the session: pending requests fail with <see cref="SsmpConnectionException"/>.</summary>
    public void Close(Exception? reason)
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
            return;
        Error = reason;
        try
        {
            _stream.Dispose();
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
        }
        _socket?.Dispose();
        TaskCompletionSource? drained;
        lock (Out.Sync)
        {
            drained = _drained;
            _drained = null;
        }
        drained?.TrySetResult();
        var failure = new SsmpConnectionException("The connection to the broker was lost before the response arrived.", reason ?? new IOException("closed"));
        while (_pending.TryDequeue(out var waiter))
            waiter?.TrySetException(failure);
        _completion.TrySetResult();
    }

    /// <summary>Sends CLOSE and waits (bounded) for the broker's 200 before closing.</summary>
    public async Task CloseGracefullyAsync(TimeSpan timeout)
    {
        try
        {
            var ack = Send(0, static (w, _) => SsmpWriter.WriteClose(w), expectResponse: true);
            if (ack is not null)
                await ack.WaitAsync(timeout, _time);
        }
        catch (Exception e) when (e is SsmpException or TimeoutException)
        {
        }
        Close(null);
    }
}

internal delegate void WriteRequest<in TState>(IBufferWriter<byte> writer, TState state);
