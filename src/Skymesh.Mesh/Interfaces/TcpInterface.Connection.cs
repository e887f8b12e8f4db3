using System.Buffers.Binary;
using System.Buffers;
using System.Net.Sockets;
using System.Net;
using Skymesh.Identity;

namespace Skymesh.Mesh.Interfaces;

public sealed partial class TcpInterface
{
    /// <summary>
    /// One TCP connection: a send queue of length-prefixed frames with a single writer that writes all of it
    /// at once, and a receive loop that cuts the byte stream back into frames. Either loop ending for any
    /// reason closes the connection; the interface then forgets it, and the next frame for the neighbour dials
    /// again (or goes over another connection with it).
    /// </summary>
    private sealed class Connection
    {
        // The queue starts at this size and grows (by renting larger pooled arrays) up to the limit; a batch
        // goes back to the pool once written, so an idle connection holds no send buffer.
        private const int InitialQueueBytes = 16 * 1024;

        private readonly TcpInterface _owner;
        private readonly Socket _socket;
        private readonly CancellationTokenSource _cts = new();
        private readonly object _queueLock = new();
        private readonly SemaphoreSlim _doorbell = new(0);
        private byte[]? _queue;
        private int _queueLength;
        private int _queuedFrames;
        private long _queuedFrameBytes;
        // Size of the last batch written: a new queue starts that large, so a busy connection does not grow it afresh each time.
        private int _sizeHint;
        private bool _writerWaiting;
        private bool _queueClosed;
        private ITimer? _preambleTimer;
        // 0 waiting for the peer's preamble, 1 identified, 2 timed out.
        private int _preambleState;
        private volatile bool _connected;
        private int _closed;
        private string _reason = "closed";

        public Connection(TcpInterface owner, Socket socket, IPEndPoint remote, bool dialled)
        {
            _owner = owner;
            _socket = socket;
            Remote = remote;
            Dialled = dialled;
            _connected = !dialled;
            // Our preamble goes first, in the same write as any frames queued while connecting.
            _queue = ArrayPool<byte>.Shared.Rent(InitialQueueBytes);
            owner._preamble.CopyTo(_queue, 0);
            _queueLength = PreambleLength;
        }

        /// <summary>The address dialled, or the one an accepted connection came from.</summary>
        public IPEndPoint Remote { get; }

        public bool Dialled { get; }

        /// <summary>Timestamp at which our dial began.</summary>
        public long DialStarted { get; init; }

        /// <summary>The neighbour this connection belongs to: known from the start when dialled, from the preamble when accepted.</summary>
        public Neighbour? Neighbour { get; set; }

        /// <summary>The peer's preamble has arrived.</summary>
        public bool Identified => Volatile.Read(ref _preambleState) == 1;

        public bool IsClosed => Volatile.Read(ref _closed) != 0;

        public Task Completion { get; set; } = Task.CompletedTask;

        /// <summary>Appends one frame to the queue; never blocks. False when the queue is full or closed.</summary>
        public bool TryEnqueue(ReadOnlySpan<byte> frame)
        {
            var need = LengthPrefixLength + frame.Length;
            bool ring;
            lock (_queueLock)
            {
                if (_queueClosed || _queueLength + need > _owner._options.SendQueueBytes)
                    return false;
                if (_queue is null)
                {
                    _queue = ArrayPool<byte>.Shared.Rent(Math.Max(Math.Max(InitialQueueBytes, need), _sizeHint));
                }
                else if (_queue.Length - _queueLength < need)
                {
                    var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(_queue.Length * 2, _queueLength + need));
                    _queue.AsSpan(0, _queueLength).CopyTo(bigger);
                    ArrayPool<byte>.Shared.Return(_queue);
                    _queue = bigger;
                }
                var slot = _queue.AsSpan(_queueLength, need);
                BinaryPrimitives.WriteUInt16BigEndian(slot, (ushort)frame.Length);
                frame.CopyTo(slot[LengthPrefixLength..]);
                _queueLength += need;
                _queuedFrames++;
                _queuedFrameBytes += frame.Length;
                ring = _writerWaiting;
                _writerWaiting = false;
            }
            if (ring)
                _doorbell.Release();
            return true;
        }

        /// <summary>The connection's life: dial (when ours), then both loops until either ends, then clean up.</summary>
        public async Task RunAsync()
        {
            var timeout = Dialled ? _owner._options.PreambleTimeout : _owner._options.AcceptedPreambleTimeout;
            _preambleTimer = _owner._time.CreateTimer(static s => ((Connection)s!).OnPreambleTimeout(), this, timeout, Timeout.InfiniteTimeSpan);
            Task? reader = null;
            try
            {
                if (Dialled)
                {
                    try
                    {
                        await _socket.ConnectAsync(Remote, _cts.Token);
                    }
                    catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
                    {
                        Close(e is SocketException se ? $"dial failed: {se.SocketErrorCode}" : _reason);
                        return;
                    }
                    _connected = true;
                }
                Configure(_socket);
                reader = Background.Run(ReadLoopAsync);
                await WriteLoopAsync();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Loops handle their own errors; this is whatever else went wrong, and ends only this connection.
                Close($"failed: {e.Message}");
            }
            finally
            {
                Close(_reason);
                if (reader is not null)
                    await reader;
                CleanUp();
            }
        }

        private static void Configure(Socket socket)
        {
            try
            {
                socket.NoDelay = true;
                // Finds a neighbour that vanished without a word (power cut, cable) on a connection left idle.
                socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
                socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, 30);
                socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, 10);
                socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, 3);
            }
            catch (Exception e) when (e is SocketException or PlatformNotSupportedException or ObjectDisposedException)
            {
                // Not every platform has every keepalive option (the defaults then apply), and a socket may already be closed.
            }
        }

        private async Task WriteLoopAsync()
        {
            var token = _cts.Token;
            byte[]? batch = null;
            var frames = 0;
            try
            {
                while (true)
                {
                    int length;
                    long frameBytes = 0;
                    lock (_queueLock)
                    {
                        if (_queueClosed)
                            return;
                        length = _queueLength;
                        if (length == 0)
                        {
                            _writerWaiting = true;
                        }
                        else
                        {
                            batch = _queue;
                            frames = _queuedFrames;
                            frameBytes = _queuedFrameBytes;
                            _queue = null;
                            _sizeHint = length;
                            _queueLength = 0;
                            _queuedFrames = 0;
                            _queuedFrameBytes = 0;
                        }
                    }
                    if (length == 0)
                    {
                        await _doorbell.WaitAsync(token);
                        continue;
                    }
                    // Everything queued since the last write goes in this one.
                    var sent = 0;
                    while (sent < length)
                    {
                        var n = await _socket.SendAsync(batch!.AsMemory(sent, length - sent), SocketFlags.None, token);
                        if (n <= 0)
                            throw new SocketException((int)SocketError.ConnectionAborted);
                        sent += n;
                    }
                    _owner.CountWrite(frames, frameBytes);
                    frames = 0;
                    ArrayPool<byte>.Shared.Return(batch!);
                    batch = null;
                }
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                Close(_reason);
            }
            catch (SocketException e)
            {
                Close($"send failed: {e.SocketErrorCode}");
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Close($"send failed: {e.Message}");
            }
            finally
            {
                // Frames taken for a write that did not finish are lost with the connection.
                if (frames > 0)
                    _owner.Counters.SendDropped(frames);
                if (batch is not null)
                    ArrayPool<byte>.Shared.Return(batch);
            }
        }

        private async Task ReadLoopAsync()
        {
            var token = _cts.Token;
            byte[]? buffer = null;
            try
            {
                // Frames are not read before there is someone to hand them to.
                await _owner._started.Task.WaitAsync(token);
                var preamble = new byte[PreambleLength];
                for (var got = 0; got < PreambleLength;)
                {
                    var n = await _socket.ReceiveAsync(preamble.AsMemory(got), SocketFlags.None, token);
                    if (n == 0)
                    {
                        Close("closed before its preamble");
                        return;
                    }
                    got += n;
                }
                if (!TryReadPreamble(preamble, out var listenPort))
                {
                    _owner.CountProtocolError();
                    Close("bad preamble");
                    return;
                }
                if (!OnPreamble(listenPort))
                    return;

                // Room for a whole record behind any partial one, so a record is always contiguous.
                var maxRecord = LengthPrefixLength + _owner.Mtu;
                buffer = ArrayPool<byte>.Shared.Rent(2 * maxRecord);
                int start = 0, end = 0;
                while (true)
                {
                    var n = await _socket.ReceiveAsync(buffer.AsMemory(end), SocketFlags.None, token);
                    if (n == 0)
                    {
                        Close("closed by the neighbour");
                        return;
                    }
                    end += n;
                    start = Deliver(buffer, start, end);
                    if (start < 0)
                        return;
                    if (start == end)
                    {
                        start = end = 0;
                    }
                    else if (buffer.Length - start < maxRecord)
                    {
                        buffer.AsSpan(start, end - start).CopyTo(buffer);
                        end -= start;
                        start = 0;
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                Close(_reason);
            }
            catch (SocketException e)
            {
                Close($"receive failed: {e.SocketErrorCode}");
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Close($"receive failed: {e.Message}");
            }
            finally
            {
                if (buffer is not null)
                    ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        /// <summary>Hands every whole frame in buffer[start..end) to the handler; returns where the rest starts, or -1 after a protocol error.</summary>
        private int Deliver(byte[] buffer, int start, int end)
        {
            var neighbour = Neighbour!;
            var handler = _owner._handler!;
            var mtu = _owner.Mtu;
            lock (neighbour.Gate)
            {
                while (end - start >= LengthPrefixLength && !IsClosed)
                {
                    int length = BinaryPrimitives.ReadUInt16BigEndian(buffer.AsSpan(start));
                    if (length == 0 || length > mtu)
                    {
                        _owner.CountProtocolError();
                        Close($"bad frame length {length}");
                        return -1;
                    }
                    if (end - start < LengthPrefixLength + length)
                        break;
                    _owner.Counters.Received(length);
                    try
                    {
                        handler(_owner, neighbour.Key, buffer.AsSpan(start + LengthPrefixLength, length));
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        // A fault in whoever handles frames must not break the connection or the interface.
                        _owner.Counters.HandlerFailed(e);
                    }
                    start += LengthPrefixLength + length;
                }
            }
            return start;
        }

        /// <summary>The peer has proven to speak this protocol: an accepted connection learns which neighbour it is.</summary>
        private bool OnPreamble(int listenPort)
        {
            if (Interlocked.CompareExchange(ref _preambleState, 1, 0) != 0)
                return false;
            _preambleTimer?.Dispose();
            if (!Dialled)
            {
                // Known by the address it came from and the port it listens on, so that what we send back to
                // that endpoint (and what we would dial there) uses this connection.
                EndPoint key = listenPort == 0 ? Remote : new IPEndPoint(Remote.Address, listenPort);
                Neighbour = _owner.Identify(this, key);
            }
            _owner.RaiseOpened(Neighbour!.Key, Dialled);
            return true;
        }

        private void OnPreambleTimeout()
        {
            if (Interlocked.CompareExchange(ref _preambleState, 2, 0) != 0)
                return;
            if (_connected)
            {
                _owner.CountProtocolError();
                Close($"no preamble within {(Dialled ? _owner._options.PreambleTimeout : _owner._options.AcceptedPreambleTimeout).TotalSeconds:0.###} s");
            }
            else
            {
                Close($"dial timed out after {_owner._options.PreambleTimeout.TotalSeconds:0.###} s");
            }
        }

        /// <summary>Ends the connection once: both loops stop, the socket goes, and queued frames are dropped.</summary>
        public void Close(string reason)
        {
            if (Interlocked.Exchange(ref _closed, 1) != 0)
                return;
            _reason = reason;
            bool ring;
            lock (_queueLock)
            {
                _queueClosed = true;
                ring = _writerWaiting;
                _writerWaiting = false;
            }
            if (ring)
                _doorbell.Release();
            try
            {
                _cts.Cancel();
            }
            catch (ObjectDisposedException)
            {
            }
            _socket.Dispose();
        }

        /// <summary>Never started (the interface was closing): just let the socket go.</summary>
        public void Abandon()
        {
            Interlocked.Exchange(ref _closed, 1);
            _socket.Dispose();
            lock (_queueLock)
            {
                _queueClosed = true;
                ReturnQueue();
            }
            _cts.Dispose();
        }

        private void CleanUp()
        {
            _preambleTimer?.Dispose();
            int dropped;
            lock (_queueLock)
            {
                _queueClosed = true;
                dropped = _queuedFrames;
                _queuedFrames = 0;
                ReturnQueue();
            }
            if (dropped > 0)
                _owner.Counters.SendDropped(dropped);
            _owner.Forget(this);
            _cts.Dispose();
            _owner.RaiseClosed(Neighbour?.Key ?? Remote, _reason);
        }

        private void ReturnQueue()
        {
            if (_queue is not null)
                ArrayPool<byte>.Shared.Return(_queue);
            _queue = null;
            _queueLength = 0;
        }
    }
}
