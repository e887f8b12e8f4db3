using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Threading.Channels;

namespace Skymesh.Mesh.Paths;

/// <summary>
/// One end of a path: it multiplexes reliable streams (by a 32-bit id in every stream message) and datagrams
/// over one <see cref="IPathChannel"/>, seals every message with the end-to-end <see cref="PathCipher"/> when
/// it has one, and watches the path with keepalives. Its owner feeds it what arrives with
/// <see cref="OnMessage"/> and moves it to a repaired path with <see cref="Retarget"/>.
/// </summary>
public sealed class PathEndpoint : IAsyncDisposable
{
    /// <summary>Smallest message payload a path must carry: a data header plus useful data, or an acknowledgement with several SACK blocks.</summary>
    public const int MinMessageRoom = 256;

    // Ended streams remembered, so that a late retransmission gets the right answer (a final acknowledgement or a close).
    private const int ClosedStreamMemory = 4096;

    // What the memory of ended streams holds instead of a final size.
    private const long Aborted = -1;
    private const long Refused = -2;
    private const long RefusedClosing = -3;

    private readonly Lock _tableLock = new();
    private readonly Dictionary<uint, ReliableStream> _streams = [];
    private readonly Dictionary<uint, long> _closed = [];
    private readonly Queue<uint> _closedOrder = new();
    private readonly Channel<ReliableStream> _accepted;
    private readonly PathCipher? _cipher;
    private readonly ITimer _keepaliveTimer;
    private readonly long _epoch;
    private readonly double _ticksPerTimestamp;
    private readonly long _keepaliveInterval;
    private readonly long _failureTimeout;
    private IPathChannel _channel;
    private int _messageRoom;
    private uint _nextLocalId;
    private uint _highestPeerId;
    private int _incomingOpen;
    private long _lastReceived;
    private long _lastSent;
    private ulong _keepaliveToken;
    private PathBrokenException? _broken;

    // Set under _tableLock when disposal begins: from then on no stream joins the table, so the streams that
    // disposal closes are all there will ever be. Sends still go out until _disposed, so that they can tell the peer.
    private bool _closing;
    private volatile bool _disposed;
    private int _disposing;

    private long _messagesSent;
    private long _messagesReceived;
    private long _messagesDropped;
    private long _unknownTypes;
    private long _decryptionFailures;
    private long _sendsRefused;
    private long _streamsRefused;
    private long _keepalivesSent;

    /// <summary>
    /// Creates the endpoint on <paramref name="channel"/>. It owns <paramref name="cipher"/> (null: plaintext)
    /// and disposes it with itself.
    /// </summary>
    public PathEndpoint(IPathChannel channel, PathEndpointOptions? options = null, PathCipher? cipher = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(channel);
        Options = options ?? new PathEndpointOptions();
        Options.Validate();
        Time = time ?? TimeProvider.System;
        _cipher = cipher;
        _channel = channel;
        _messageRoom = RoomOn(channel);
        _epoch = Time.GetTimestamp();
        _ticksPerTimestamp = TimeSpan.TicksPerSecond / (double)Time.TimestampFrequency;
        _keepaliveInterval = Options.EffectiveKeepalive.Ticks;
        _failureTimeout = Options.FailureTimeout.Ticks;
        _nextLocalId = Options.IsInitiator ? 1u : 2u;
        _accepted = Channel.CreateBounded<ReliableStream>(new BoundedChannelOptions(Math.Max(1, Options.MaxIncomingStreams))
        {
            SingleWriter = false,
            SingleReader = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
        Datagrams = new PathDatagramEndpoint(this, Options.DatagramQueue);
        _keepaliveTimer = Time.CreateTimer(static state => ((PathEndpoint)state!).OnKeepaliveTimer(), this, Options.EffectiveKeepalive, Timeout.InfiniteTimeSpan);
    }

    public PathEndpointOptions Options { get; }

    public TimeProvider Time { get; }

    /// <summary>Unreliable messages on this path (type 16).</summary>
    public PathDatagramEndpoint Datagrams { get; }

    public bool IsEncrypted => _cipher is not null;

    /// <summary>Set when the path was declared lost (nothing heard for the failure timeout); cleared by <see cref="Retarget"/>.</summary>
    public PathBrokenException? BrokenBy => Volatile.Read(ref _broken);

    /// <summary>Raised (on a timer thread) when the path is declared lost; every stream on it has failed.</summary>
    public event EventHandler<PathBrokenException>? Broken;

    /// <summary>Streams open on this path, opened by either side.</summary>
    public int OpenStreams
    {
        get
        {
            lock (_tableLock)
                return _streams.Count;
        }
    }

    /// <summary>The counters of every stream open on this path now.</summary>
    public IReadOnlyList<StreamCounters> StreamCounters()
    {
        ReliableStream[] streams;
        lock (_tableLock)
            streams = [.. _streams.Values];
        return [.. streams.Select(s => s.Counters)];
    }

    public PathEndpointCounters Counters => new()
    {
        MessagesSent = Interlocked.Read(ref _messagesSent),
        MessagesReceived = Interlocked.Read(ref _messagesReceived),
        MessagesDropped = Interlocked.Read(ref _messagesDropped),
        UnknownTypes = Interlocked.Read(ref _unknownTypes),
        DecryptionFailures = Interlocked.Read(ref _decryptionFailures),
        SendsRefused = Interlocked.Read(ref _sendsRefused),
        StreamsRefused = Interlocked.Read(ref _streamsRefused),
        KeepalivesSent = Interlocked.Read(ref _keepalivesSent),
    };

    /// <summary>Largest plaintext message payload: the channel's, less the cipher's overhead.</summary>
    internal int MessageRoom => Volatile.Read(ref _messageRoom);

    internal int SegmentSize => MessageRoom - PathWire.DataHeaderLength;

    /// <summary>Time since the endpoint was created, in <see cref="TimeSpan"/> ticks.</summary>
    internal long Now => (long)((Time.GetTimestamp() - _epoch) * _ticksPerTimestamp);

    /// <summary>Opens a new stream to the peer. The peer learns of it with the first data (or end) written on it.</summary>
    public ReliableStream OpenStream()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (BrokenBy is { } broken)
            throw broken;
        lock (_tableLock)
        {
            ObjectDisposedException.ThrowIf(_closing, this);
            if (_nextLocalId > uint.MaxValue - 2)
                throw new InvalidOperationException("This path has used all its stream ids; set up a new path.");
            var stream = new ReliableStream(this, _nextLocalId, openedLocally: true);
            _streams.Add(stream.Id, stream);
            _nextLocalId += 2;
            return stream;
        }
    }

    /// <summary>Waits for the next stream the peer opens.</summary>
    public async ValueTask<ReliableStream> AcceptStreamAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return await _accepted.Reader.ReadAsync(cancellationToken);
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(nameof(PathEndpoint));
        }
    }

    /// <summary>Takes the next stream the peer opened, if one is waiting.</summary>
    public bool TryAcceptStream([MaybeNullWhen(false)] out ReliableStream stream) => _accepted.Reader.TryRead(out stream);

    /// <summary>
    /// Moves the endpoint to a new path (after a repair): every stream sends again, on the new channel, all it
    /// has not seen acknowledged, so no data is lost; round-trip and congestion state start afresh. Revives an
    /// endpoint declared lost, though not the streams that failed with it.
    /// </summary>
    public void Retarget(IPathChannel newChannel)
    {
        ArgumentNullException.ThrowIfNull(newChannel);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var room = RoomOn(newChannel);
        ReliableStream[] streams;
        lock (_tableLock)
        {
            Volatile.Write(ref _channel, newChannel);
            Volatile.Write(ref _messageRoom, room);
            Volatile.Write(ref _broken, null);
            var now = Now;
            Volatile.Write(ref _lastReceived, now);
            Volatile.Write(ref _lastSent, now);
            streams = [.. _streams.Values];
        }
        foreach (var stream in streams)
            stream.OnRetarget();
        _keepaliveTimer.Change(TimeSpan.FromTicks(_keepaliveInterval), Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// One message that arrived on the path. Called on the receive loop; never blocks, never throws for what
    /// the peer (or anyone on the way) sent: a malformed, unknown or unauthentic message is dropped and counted.
    /// </summary>
    public void OnMessage(byte type, ReadOnlySpan<byte> payload)
    {
        if (_disposed)
            return;
        Interlocked.Increment(ref _messagesReceived);
        if (type is < (byte)PathMessageType.Datagram or > (byte)PathMessageType.Keepalive)
        {
            Interlocked.Increment(ref _unknownTypes);
            CountDropped();
            return;
        }
        byte[]? rented = null;
        try
        {
            if (_cipher is not null)
            {
                rented = ArrayPool<byte>.Shared.Rent(Math.Max(1, payload.Length));
                if (!_cipher.TryOpen(type, payload, rented, out var length))
                {
                    Interlocked.Increment(ref _decryptionFailures);
                    CountDropped();
                    return;
                }
                payload = rented.AsSpan(0, length);
            }
            var accepted = (PathMessageType)type switch
            {
                PathMessageType.StreamData => OnData(payload),
                PathMessageType.StreamAck => OnAck(payload),
                PathMessageType.StreamClose => OnClose(payload),
                PathMessageType.Keepalive => OnKeepalive(payload),
                _ => Datagrams.OnDatagram(payload),
            };
            if (accepted)
                Volatile.Write(ref _lastReceived, Now);
            else
                CountDropped();
        }
        catch (ObjectDisposedException) when (_disposed)
        {
            // Shut down while this message was being handled.
        }
        finally
        {
            if (rented is not null)
                ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private bool OnData(ReadOnlySpan<byte> payload)
    {
        if (PathWire.TryReadData(payload, out var id, out var fin, out var offset, out var data) != PathWireError.None || id == 0)
            return false;
        var stream = FindOrCreate(id, out var known);
        if (stream is not null)
        {
            stream.OnData(fin, offset, data);
            return true;
        }
        if (!known)
            return false;
        var recalled = TryRecallClosed(id, out var finalSize);
        if (recalled && finalSize >= 0)
        {
            // A stream that ended gracefully: the peer missed the last acknowledgement of its end.
            Span<byte> ack = stackalloc byte[PathWire.AckFixedLength];
            PathWire.WriteAck(ack, id, finReceived: true, finalSize, finalSize, []);
            Send((byte)PathMessageType.StreamAck, ack);
        }
        else if (recalled && finalSize == Refused)
        {
            SendClose(id, confirm: false, StreamCloseCode.Refused, $"more than {Options.MaxIncomingStreams} streams open");
        }
        else if (recalled && finalSize == RefusedClosing)
        {
            SendClose(id, confirm: false, StreamCloseCode.EndpointClosed, "the path endpoint was closed");
        }
        else
        {
            SendClose(id, confirm: false, StreamCloseCode.UnknownStream, "");
        }
        return true;
    }

    private bool OnAck(ReadOnlySpan<byte> payload)
    {
        Span<SackBlock> blocks = stackalloc SackBlock[PathWire.MaxSackBlocks];
        if (PathWire.TryReadAck(payload, out var id, out var fin, out var cumulative, out var limit, blocks, out var count) != PathWireError.None)
            return false;
        // An acknowledgement for a stream that already ended is a late duplicate: harmless.
        Find(id)?.OnAck(fin, cumulative, limit, blocks[..count]);
        return true;
    }

    private bool OnClose(ReadOnlySpan<byte> payload)
    {
        if (PathWire.TryReadClose(payload, out var id, out var confirm, out var code, out var reason) != PathWireError.None)
            return false;
        if (Find(id) is { } stream)
            stream.OnClose(confirm, (StreamCloseCode)code, reason);
        else if (!confirm)
            SendClose(id, confirm: true, (StreamCloseCode)code, "");
        return true;
    }

    private bool OnKeepalive(ReadOnlySpan<byte> payload)
    {
        if (PathWire.TryReadKeepalive(payload, out var reply, out var token) != PathWireError.None)
            return false;
        if (!reply)
        {
            Span<byte> answer = stackalloc byte[PathWire.KeepaliveLength];
            PathWire.WriteKeepalive(answer, reply: true, token);
            Send((byte)PathMessageType.Keepalive, answer);
        }
        return true;
    }

    private ReliableStream? Find(uint id)
    {
        lock (_tableLock)
            return _streams.GetValueOrDefault(id);
    }

    /// <summary>
    /// The stream for an arriving data message; a new one when the peer opens it. Null with
    /// <paramref name="known"/> set for a stream that existed and ended (or was refused); null without it for
    /// an id that was never valid.
    /// </summary>
    private ReliableStream? FindOrCreate(uint id, out bool known)
    {
        lock (_tableLock)
        {
            known = true;
            if (_streams.TryGetValue(id, out var stream))
                return stream;
            var peerOpened = (id & 1) == (Options.IsInitiator ? 0u : 1u);
            if (!peerOpened)
            {
                known = id < _nextLocalId;
                return null;
            }
            if (id <= _highestPeerId)
                return null;
            _highestPeerId = id;
            if (_closing)
            {
                RememberClosed(id, RefusedClosing);
                return null;
            }
            if (_incomingOpen >= Options.MaxIncomingStreams)
            {
                Interlocked.Increment(ref _streamsRefused);
                RememberClosed(id, Refused);
                return null;
            }
            stream = new ReliableStream(this, id, openedLocally: false);
            if (!_accepted.Writer.TryWrite(stream))
            {
                Interlocked.Increment(ref _streamsRefused);
                RememberClosed(id, Refused);
                return null;
            }
            _streams.Add(id, stream);
            _incomingOpen++;
            return stream;
        }
    }

    private bool TryRecallClosed(uint id, out long finalSize)
    {
        lock (_tableLock)
            return _closed.TryGetValue(id, out finalSize);
    }

    private void RememberClosed(uint id, long finalSize)
    {
        if (_closed.TryAdd(id, finalSize))
        {
            _closedOrder.Enqueue(id);
            if (_closedOrder.Count > ClosedStreamMemory)
                _closed.Remove(_closedOrder.Dequeue());
        }
    }

    /// <summary>A stream is done: it leaves the table; <paramref name="finalSize"/> is its received length if it ended gracefully, else negative.</summary>
    internal void Retire(ReliableStream stream, long finalSize)
    {
        lock (_tableLock)
        {
            if (!_streams.Remove(stream.Id))
                return;
            if (!stream.OpenedLocally)
                _incomingOpen--;
            RememberClosed(stream.Id, Math.Max(finalSize, Aborted));
        }
    }

    internal void SendClose(uint id, bool confirm, StreamCloseCode code, string reason)
    {
        Span<byte> message = stackalloc byte[PathWire.CloseFixedLength + PathWire.MaxReasonBytes];
        var length = PathWire.WriteClose(message, id, confirm, (ushort)code, reason);
        Send((byte)PathMessageType.StreamClose, message[..length]);
    }

    /// <summary>Seals (when encrypted) and sends one message; false when the channel refused it.</summary>
    internal bool Send(byte type, ReadOnlySpan<byte> plaintext)
    {
        if (_disposed)
            return false;
        Interlocked.Increment(ref _messagesSent);
        Volatile.Write(ref _lastSent, Now);
        var channel = Volatile.Read(ref _channel);
        bool sent;
        byte[]? buffer = null;
        try
        {
            if (_cipher is null)
            {
                sent = channel.TrySend(type, plaintext);
            }
            else
            {
                buffer = ArrayPool<byte>.Shared.Rent(plaintext.Length + PathCipher.Overhead);
                var length = _cipher.Seal(type, plaintext, buffer);
                sent = channel.TrySend(type, buffer.AsSpan(0, length));
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A channel must not throw, but this runs on timers and the receive loop, where an exception would
            // end the process or the loop: count it as a message the path refused, which streams recover from.
            sent = false;
        }
        finally
        {
            if (buffer is not null)
                ArrayPool<byte>.Shared.Return(buffer);
        }
        if (!sent)
            Interlocked.Increment(ref _sendsRefused);
        return sent;
    }

    internal void CountDropped() => Interlocked.Increment(ref _messagesDropped);

    /// <summary>
    /// Sends a keepalive when the path has been quiet either way for an interval (the peer answers, and the
    /// label entries on the way stay alive); declares the path lost when nothing was heard for the failure timeout.
    /// Also lets quiet streams give back spare memory.
    /// </summary>
    private void OnKeepaliveTimer()
    {
        if (_disposed || BrokenBy is not null)
            return;
        var now = Now;
        var lastReceived = Volatile.Read(ref _lastReceived);
        if (now - lastReceived >= _failureTimeout)
        {
            DeclareBroken();
            return;
        }
        if (now - lastReceived >= _keepaliveInterval || now - Volatile.Read(ref _lastSent) >= _keepaliveInterval)
        {
            Span<byte> request = stackalloc byte[PathWire.KeepaliveLength];
            PathWire.WriteKeepalive(request, reply: false, Interlocked.Increment(ref _keepaliveToken));
            Send((byte)PathMessageType.Keepalive, request);
            Interlocked.Increment(ref _keepalivesSent);
        }
        ReliableStream[] streams;
        lock (_tableLock)
            streams = [.. _streams.Values];
        foreach (var stream in streams)
            stream.ReleaseIdleMemory();
        var next = Math.Min(Math.Min(lastReceived, Volatile.Read(ref _lastSent)) + _keepaliveInterval, lastReceived + _failureTimeout);
        if (next <= now)
            next = Math.Min(now + _keepaliveInterval, lastReceived + _failureTimeout);
        try
        {
            _keepaliveTimer.Change(TimeSpan.FromTicks(Math.Max(1, next - now)), Timeout.InfiniteTimeSpan);
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>
    /// Declares the path lost now, for a reason the owner knows before any timeout would tell (the link under
    /// it went down): every stream fails with a <see cref="PathBrokenException"/> carrying <paramref name="reason"/>.
    /// </summary>
    public void Break(string reason)
    {
        ArgumentNullException.ThrowIfNull(reason);
        if (!_disposed)
            DeclareBroken(new PathBrokenException($"path to {Options.PeerName} lost: {reason}"));
    }

    private void DeclareBroken() => DeclareBroken(new PathBrokenException(Options.PeerName, Options.FailureTimeout));

    private void DeclareBroken(PathBrokenException error)
    {
        ReliableStream[] streams;
        lock (_tableLock)
        {
            if (_broken is not null)
                return;
            Volatile.Write(ref _broken, error);
            streams = [.. _streams.Values];
        }
        foreach (var stream in streams)
            stream.Fail(error);
        Broken?.Invoke(this, error);
    }

    private int RoomOn(IPathChannel channel)
    {
        var room = channel.MaxPayload - (_cipher is null ? 0 : PathCipher.Overhead);
        if (room < MinMessageRoom)
            throw new ArgumentException($"The path carries payloads of {channel.MaxPayload} bytes; streams need at least {MinMessageRoom + (_cipher is null ? 0 : PathCipher.Overhead)}.", nameof(channel));
        return Math.Min(room, ushort.MaxValue);
    }

    /// <summary>
    /// Shuts the endpoint down: every open stream is aborted (the peer is told once), timers stop. Safe while the
    /// receive loop is still delivering messages and while the application still opens streams: a stream either
    /// joined the table before disposal took its snapshot, and is closed with the others, or is refused.
    /// </summary>
    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposing, 1) != 0)
            return ValueTask.CompletedTask;
        ReliableStream[] streams;
        lock (_tableLock)
        {
            // OpenStream and FindOrCreate check _closing under this lock, so no stream joins the table after
            // this snapshot: one that did would never be closed, and a read on it would wait for ever.
            _closing = true;
            streams = [.. _streams.Values];
        }
        _keepaliveTimer.Dispose();
        foreach (var stream in streams)
            stream.OnEndpointClosed();
        _disposed = true;
        _accepted.Writer.TryComplete();
        Datagrams.Complete();
        _cipher?.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>A snapshot of a path endpoint's counters.</summary>
public readonly record struct PathEndpointCounters
{
    public long MessagesSent { get; init; }

    public long MessagesReceived { get; init; }

    /// <summary>Messages refused: malformed, unknown type, failed decryption, or refused by a stream (beyond its window, acknowledging unsent data…).</summary>
    public long MessagesDropped { get; init; }

    public long UnknownTypes { get; init; }

    public long DecryptionFailures { get; init; }

    /// <summary>Messages the channel would not take (its queue was full, or it failed); recovered like loss.</summary>
    public long SendsRefused { get; init; }

    /// <summary>Streams the peer opened beyond <see cref="PathEndpointOptions.MaxIncomingStreams"/>.</summary>
    public long StreamsRefused { get; init; }

    public long KeepalivesSent { get; init; }
}
