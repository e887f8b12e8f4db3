using System.Buffers;
using System.Net.Sockets;

namespace Skymesh.Ssmp.Broker;

internal sealed partial class BrokerConnection : IThreadPoolWorkItem
{
    // A PING or a single answer needs a few bytes: ten thousand idle connections PINGed at once must not each
    // take kilobytes. A busy connection's queue doubles from here.
    private const int InitialOutputSize = 256;

    private readonly object _outLock = new();
    private readonly int _maxQueued;
    private byte[]? _pending;
    private int _pendingLength;
    private byte[]? _spare;
    private int _inFlight;
    private bool _flushing;
    private bool _closed;
    private bool _shutdownAfterFlush;

    /// <summary>Bytes waiting to be written to this connection now (read without the lock: for statistics).</summary>
    public long QueuedBytes => (long)Volatile.Read(ref _pendingLength) + Volatile.Read(ref _inFlight);

    // Ends a drain that the peer does not read; see StartDrainTimer.
    private ITimer? _drainTimer;

    /// <summary>
    /// Queues bytes (up to three parts, written back to back) towards this connection without ever blocking.
    /// Returns false when the connection is closed or has just been closed as a slow consumer.
    /// </summary>
    public bool Enqueue(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b = default, ReadOnlySpan<byte> c = default)
    {
        var need = a.Length + b.Length + c.Length;
        bool schedule, overflow;
        long queued;
        lock (_outLock)
        {
            if (_closed)
                return false;
            queued = (long)_pendingLength + _inFlight;
            overflow = queued + need > _maxQueued;
            schedule = !overflow && AppendUnderLock(a, b, c, need);
        }
        if (overflow)
        {
            // Never wait for a slow reader: drop it, so that whoever is publishing goes on.
            // Several publishers may find it over the limit at once: the one that closes it logs it, once.
            if (Abort(DisconnectReason.SlowConsumer))
                Log.SlowConsumer(_broker.Logger, Serial, queued);
            return false;
        }
        if (schedule)
            #pragma warning disable RS0030 // SSMP runs on real sockets and the thread pool, never on a simulation's scheduler
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
            #pragma warning restore RS0030
        return true;
    }

    private bool AppendUnderLock(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, ReadOnlySpan<byte> c, int need)
    {
        var buffer = _pending;
        if (buffer is null || buffer.Length - _pendingLength < need)
            buffer = Grow(need);
        var span = buffer.AsSpan(_pendingLength);
        a.CopyTo(span);
        b.CopyTo(span[a.Length..]);
        c.CopyTo(span[(a.Length + b.Length)..]);
        _pendingLength += need;
        var schedule = !_flushing;
        _flushing = true;
        return schedule;
    }

    /// <summary>Queues one event forwarding a request; counted as an event.</summary>
    public bool EnqueueEvent(ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> request)
    {
        if (!Enqueue(prefix, request))
            return false;
        Interlocked.Increment(ref EventCount);
        return true;
    }

    private byte[] Grow(int need)
    {
        var size = Math.Max(InitialOutputSize, (_pending?.Length ?? 0) * 2);
        while (size - _pendingLength < need)
            size *= 2;
        var bigger = _broker.Buffers.Rent(size);
        if (_pending is not null)
        {
            _pending.AsSpan(0, _pendingLength).CopyTo(bigger);
            _broker.Buffers.Return(_pending);
        }
        _pending = bigger;
        return bigger;
    }

    /// <summary>
    /// Bounds a drain. The closing connection leaves the broker's table, so no sweep will find it again: a peer
    /// that never reads its last bytes would pin them and the socket for ever. It gets as long as an
    /// unanswered PING gets. Called before anything can finish the shutdown.
    /// </summary>
    private void StartDrainTimer() =>
        _drainTimer = _broker.Time.CreateTimer(static c => ((BrokerConnection)c!).FinishShutdown(), this,
            _broker.Options.PongTimeout, Timeout.InfiniteTimeSpan);

    private void FinishShutdown()
    {
        if (Interlocked.Exchange(ref _shutdownStarted, 1) == 0)
            _ = LingerAndCloseAsync();
    }

    private int _shutdownStarted;

    /// <summary>
    /// Sends FIN, then reads and discards what the peer still sends (bounded in bytes and time) before
    /// closing: closing a socket with unread input makes the kernel send RST, which can destroy the last
    /// response (a 400, or CLOSE's 200) before the peer has read it.
    /// </summary>
    private async Task LingerAndCloseAsync()
    {
        _drainTimer?.Dispose();
        try
        {
            if (_stream is System.Net.Security.SslStream ssl)
                await ssl.ShutdownAsync();
            _socket.Shutdown(SocketShutdown.Send);
            using var deadline = new CancellationTokenSource(LingerTime, _broker.Time);
            var sink = ArrayPool<byte>.Shared.Rent(4096);
            try
            {
                var total = 0;
                while (total < 64 * 1024)
                {
                    var n = await _socket.ReceiveAsync(sink, SocketFlags.None, deadline.Token);
                    if (n == 0)
                        break;
                    total += n;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(sink);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
        }
        finally
        {
            _stream.Dispose();
            ReleaseBuffers();
        }
    }

    private static readonly TimeSpan LingerTime = TimeSpan.FromSeconds(2);

    void IThreadPoolWorkItem.Execute() => _ = FlushAsync();

    /// <summary>Sends everything queued, one write per batch, until the queue is empty.</summary>
    private async Task FlushAsync()
    {
        try
        {
            while (true)
            {
                byte[] batch;
                int length;
                bool shutdown;
                lock (_outLock)
                {
                    if (_pendingLength == 0 || (_closed && !_shutdownAfterFlush))
                    {
                        _flushing = false;
                        _pendingLength = 0;
                        shutdown = _shutdownAfterFlush;
                        if (!shutdown)
                        {
                            // Idle connections hold no buffers.
                            ReturnUnderLock();
                            return;
                        }
                        batch = [];
                        length = 0;
                    }
                    else
                    {
                        batch = _pending!;
                        length = _pendingLength;
                        _pending = _spare;
                        _spare = null;
                        _pendingLength = 0;
                        _inFlight = length;
                        shutdown = false;
                    }
                }
                if (shutdown)
                {
                    FinishShutdown();
                    return;
                }
                await _stream.WriteAsync(batch.AsMemory(0, length));
                BytesOut += length;
                lock (_outLock)
                {
                    _inFlight = 0;
                    // Kept for the next batch while the connection stays busy; an idle one returns both.
                    if (_spare is null)
                        _spare = batch;
                    else
                        _broker.Buffers.Return(batch);
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            bool shutdown;
            lock (_outLock)
            {
                _flushing = false;
                shutdown = _shutdownAfterFlush;
            }
            Abort(DisconnectReason.SocketError);
            // A draining close whose shutdown was requested while this write was under way is finished here.
            if (shutdown)
                FinishShutdown();
        }
    }

    private void ReturnUnderLock()
    {
        if (_pending is not null && _pendingLength == 0)
        {
            _broker.Buffers.Return(_pending);
            _pending = null;
        }
        if (_spare is not null)
        {
            _broker.Buffers.Return(_spare);
            _spare = null;
        }
    }

    private void ReleaseBuffers()
    {
        lock (_outLock)
        {
            _pendingLength = 0;
            ReturnUnderLock();
        }
    }
}
