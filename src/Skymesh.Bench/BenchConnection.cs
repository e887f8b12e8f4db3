using System.Buffers.Text;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Skymesh.Bench;

/// <summary>
/// One raw TCP connection to the target. Sends pre-encoded bytes; its reader counts the lines that come back
/// by kind, looking only at the first bytes of each line, so that counting costs the generator little.
/// </summary>
internal sealed class BenchConnection : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly WireDialect _dialect;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly byte[] _buffer;
    private readonly byte[] _lineStart;
    private readonly CancellationTokenSource _closing = new();
    private int _lineStartLength;
    private int _skip;
    private Task? _reader;
    private long _deliveries;
    private long _oks;
    private long _errors;
    private long _pongs;
    private long _pings;
    private long _lastDelivery;
    private long _awaitedReplies = long.MaxValue;
    private TaskCompletionSource? _repliesArrived;
    private int _closed;
    private int _disposed;

    private BenchConnection(Socket socket, WireDialect dialect, int receiveBufferSize, LatencyProbe? probe)
    {
        _socket = socket;
        _dialect = dialect;
        _buffer = new byte[receiveBufferSize];
        Probe = probe;
        // A latency receiver looks for the timestamp further into the line than a classification needs.
        _lineStart = new byte[probe is null ? dialect.LineStartLength : Math.Max(dialect.LineStartLength, LatencyProbe.LineBytesNeeded)];
    }

    public long Deliveries => Volatile.Read(ref _deliveries);

    public long Oks => Volatile.Read(ref _oks);

    public long Errors => Volatile.Read(ref _errors);

    /// <summary>PINGs the target sent (each one answered).</summary>
    public long Pings => Volatile.Read(ref _pings);

    /// <summary><see cref="Stopwatch"/> timestamp of the last read that held a delivery.</summary>
    public long LastDelivery => Volatile.Read(ref _lastDelivery);

    /// <summary>True once the target closed the connection or it failed.</summary>
    public bool Closed => Volatile.Read(ref _closed) != 0;

    /// <summary>Set on latency receivers: every delivery's embedded timestamp is handed to it.</summary>
    public LatencyProbe? Probe { get; }

    public static async Task<BenchConnection> ConnectAsync(IPEndPoint target, WireDialect dialect, int receiveBufferSize,
        LatencyProbe? probe, CancellationToken cancellationToken)
    {
        var socket = new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(target, cancellationToken);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        var connection = new BenchConnection(socket, dialect, receiveBufferSize, probe);
        connection._reader = connection.ReadLoopAsync();
        return connection;
    }

    /// <summary>Sends <paramref name="request"/> and waits until the target has confirmed every part of it.</summary>
    public async Task SetupAsync(byte[] request, int replies, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var target = Oks + Volatile.Read(ref _pongs) + replies;
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _awaitedReplies, target);
        Volatile.Write(ref _repliesArrived, arrived);
        await SendAsync(request, cancellationToken);
        if (Oks + Volatile.Read(ref _pongs) >= target || Errors > 0 || Closed)
            arrived.TrySetResult();
        try
        {
            await arrived.Task.WaitAsync(timeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            throw new BenchException($"The {_dialect.TargetName} target did not confirm a login within {timeout.TotalSeconds:0.#} s.");
        }
        if (Errors > 0)
            throw new BenchException($"The {_dialect.TargetName} target refused a login or subscription.");
        if (Closed)
            throw new BenchException($"The {_dialect.TargetName} target closed a connection during login.");
    }

    public async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        await _sendLock.WaitAsync(cancellationToken);
        try
        {
            while (!data.IsEmpty)
            {
                var sent = await _socket.SendAsync(data, SocketFlags.None, cancellationToken);
                data = data[sent..];
            }
        }
        finally
        {
            _sendLock.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        try
        {
            while (true)
            {
                var n = await _socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None, _closing.Token);
                if (n == 0)
                    break;
                Consume(_buffer.AsSpan(0, n), Stopwatch.GetTimestamp());
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
        {
        }
        Volatile.Write(ref _closed, 1);
        Volatile.Read(ref _repliesArrived)?.TrySetResult();
    }

    private void Consume(ReadOnlySpan<byte> data, long now)
    {
        long deliveries = 0, oks = 0, errors = 0, pongs = 0;
        while (!data.IsEmpty)
        {
            if (_skip > 0)
            {
                var skipped = Math.Min(_skip, data.Length);
                _skip -= skipped;
                data = data[skipped..];
                continue;
            }
            var lf = data.IndexOf((byte)'\n');
            var line = lf < 0 ? data : data[..lf];
            if (_lineStartLength < _lineStart.Length)
            {
                var n = Math.Min(line.Length, _lineStart.Length - _lineStartLength);
                line[..n].CopyTo(_lineStart.AsSpan(_lineStartLength));
                _lineStartLength += n;
            }
            if (lf < 0)
                break;
            var start = _lineStart.AsSpan(0, _lineStartLength);
            switch (_dialect.Classify(start))
            {
                case LineKind.Delivery:
                    deliveries++;
                    // A latency receiver reads the payload as a line, to find the timestamp in it.
                    if (Probe is null && _lineStartLength < _lineStart.Length)
                        _skip = _dialect.PayloadAfter(start);
                    break;
                case LineKind.Ok:
                    oks++;
                    break;
                case LineKind.Error:
                    errors++;
                    break;
                case LineKind.Pong:
                    pongs++;
                    break;
                case LineKind.Ping:
                    Interlocked.Increment(ref _pings);
                    _ = ReplyToPingAsync();
                    break;
            }
            Probe?.Observe(start, now);
            _lineStartLength = 0;
            data = data[(lf + 1)..];
        }
        if (deliveries > 0)
        {
            Interlocked.Add(ref _deliveries, deliveries);
            Volatile.Write(ref _lastDelivery, now);
        }
        if ((oks | errors | pongs) == 0)
            return;
        Interlocked.Add(ref _oks, oks);
        Interlocked.Add(ref _errors, errors);
        Interlocked.Add(ref _pongs, pongs);
        if (Volatile.Read(ref _repliesArrived) is { } arrived
            && (Oks + Volatile.Read(ref _pongs) >= Volatile.Read(ref _awaitedReplies) || errors > 0))
            arrived.TrySetResult();
    }

    private async Task ReplyToPingAsync()
    {
        try
        {
            await SendAsync(_dialect.PingReply, _closing.Token);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await _closing.CancelAsync();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
        _socket.Dispose();
        if (_reader is not null)
            await _reader;
        _closing.Dispose();
        _sendLock.Dispose();
    }
}

/// <summary>
/// Measures one pair's one-way latency: the sender writes its <see cref="Stopwatch"/> timestamp into the
/// payload as <c>#</c> and 16 hex digits; the receiver's reader finds it at the start of the delivered line
/// (SSMP: the event line; NATS: the payload line after MSG) and records now minus then.
/// </summary>
internal sealed class LatencyProbe(int capacity)
{
    /// <summary>Enough of a line to hold <c>000 ls12 UCAST lr12 #</c> and the digits.</summary>
    public const int LineBytesNeeded = 96;

    public const int StampLength = 17;

    private readonly long[] _samples = new long[capacity];
    private readonly SemaphoreSlim _arrived = new(0, 1);
    private long _outstanding = -1;
    private int _count;
    private long _late;

    public int Count => Volatile.Read(ref _count);

    public long Late => Interlocked.Read(ref _late);

    public ReadOnlySpan<long> Samples => _samples.AsSpan(0, Count);

    /// <summary>Writes <c>#</c> and the timestamp at <paramref name="at"/> and marks that message outstanding.</summary>
    public void Stamp(Span<byte> at, long timestamp)
    {
        // A message that arrived just after its sender gave up on it may have left a signal behind.
        _arrived.Wait(0);
        at[0] = (byte)'#';
        Utf8Formatter.TryFormat(timestamp, at[1..StampLength], out _, new System.Buffers.StandardFormat('X', 16));
        Volatile.Write(ref _outstanding, timestamp);
    }

    /// <summary>Waits for the outstanding message; false if it did not arrive in time (it is then counted as late).</summary>
    public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken cancellationToken) => _arrived.WaitAsync(timeout, cancellationToken);

    /// <summary>Forget what is outstanding; a message arriving after this counts as late, not as a sample.</summary>
    public void GiveUp() => Volatile.Write(ref _outstanding, -1);

    /// <summary>Drops what was recorded (the warm-up).</summary>
    public void Reset() => Volatile.Write(ref _count, 0);

    public void Observe(ReadOnlySpan<byte> lineStart, long now)
    {
        var hash = lineStart.IndexOf((byte)'#');
        if (hash < 0 || lineStart.Length - hash < StampLength)
            return;
        if (!System.Buffers.Text.Utf8Parser.TryParse(lineStart.Slice(hash + 1, 16), out long sent, out _, 'X'))
            return;
        if (sent != Volatile.Read(ref _outstanding))
        {
            Interlocked.Increment(ref _late);
            return;
        }
        Volatile.Write(ref _outstanding, -1);
        var count = _count;
        if (count < _samples.Length)
        {
            _samples[count] = now - sent;
            Volatile.Write(ref _count, count + 1);
        }
        _arrived.Release();
    }
}
