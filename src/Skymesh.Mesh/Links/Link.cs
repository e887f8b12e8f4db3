using System.Buffers.Binary;
using System.Net;
using Skymesh.Identity;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Links;

public enum LinkState
{
    Handshaking,
    Up,
    Down,
}

/// <summary>A point-in-time view of a link, for the local API and tests.</summary>
public sealed record LinkInfo(
    int Id, string Interface, string Remote, string? Peer, LinkState State, bool Encrypted, int Mtu,
    TimeSpan? Rtt, double Loss, long FramesSent, long FramesReceived, long MessagesSent, long MessagesReceived,
    long BytesSent, long BytesReceived, long SendDrops, string? DownReason);

/// <summary>
/// A connection to one neighbour over one interface, authenticated by both identities. It batches queued
/// messages into frames (everything queued, up to the MTU, one frame per send, no waiting when idle),
/// seals them when encryption was agreed, and reads frames for the switch.
/// </summary>
public sealed partial class Link : IThreadPoolWorkItem
{
    private readonly MeshSwitch _switch;
    private readonly object _queueLock = new();
    private readonly int _queueLimit;
    private byte[] _queue = new byte[4096];
    private int _queueLength;
    private int _queuedMessages;
    private bool _flushing;
    private FrameBuilder? _builder;
    private FrameCipher? _sendCipher;
    private FrameCipher? _receiveCipher;
    // Next frame sequence number; taken with Interlocked so that no two frames ever share a nonce.
    private long _sendSequence = -1;
    private ReplayWindow _replay;

    // Handshake state.
    private EphemeralKey? _ephemeral;
    private byte[]? _hello;
    private byte[]? _helloAck;
    private byte[]? _helloConfirm;
    private int _helloAttempts;
    private long _handshakeStarted;
    private bool _confirmed;
    private TaskCompletionSource<Link>? _upWaiter;

    // Liveness and quality.
    private long _lastReceived;
    private long _lastKeepaliveSent;
    private double _srttTicks;
    private long _lossWindowStartSequence = -1;
    private long _lossWindowReceived;
    private double _loss;

    private long _framesSent, _framesReceived, _messagesSent, _messagesReceived, _bytesSent, _bytesReceived, _sendDrops;

    internal Link(MeshSwitch owner, int id, IMeshInterface nic, EndPoint remote, bool initiator, NodeAddress? expectedPeer, int queueLimit)
    {
        _switch = owner;
        Id = id;
        Interface = nic;
        Remote = remote;
        IsInitiator = initiator;
        ExpectedPeer = expectedPeer;
        _queueLimit = queueLimit;
        _handshakeStarted = owner.Time.GetTimestamp();
        _lastReceived = _handshakeStarted;
    }

    public int Id { get; }

    public IMeshInterface Interface { get; }

    public EndPoint Remote { get; }

    public bool IsInitiator { get; }

    /// <summary>The neighbour this link must reach (for links we start); null accepts whoever answers.</summary>
    public NodeAddress? ExpectedPeer { get; }

    /// <summary>The neighbour's proven identity, once the handshake has got that far.</summary>
    public NodeAddress? Peer { get; private set; }

    public LinkState State { get; private set; } = LinkState.Handshaking;

    public bool Encrypted => _sendCipher is not null;

    public string? DownReason { get; private set; }

    /// <summary>Smoothed round-trip time from keepalives; null before the first answer.</summary>
    public TimeSpan? Rtt => _srttTicks > 0 ? TimeSpan.FromTicks((long)_srttTicks) : null;

    /// <summary>Share of the neighbour's frames lost on the way, estimated over the last keepalive interval.</summary>
    public double Loss => _loss;

    public LinkInfo Info() => new(Id, Interface.Name, Remote.ToString() ?? "", Peer?.ToString(), State, Encrypted,
        Interface.Mtu, Rtt, Loss, Interlocked.Read(ref _framesSent), Interlocked.Read(ref _framesReceived),
        Interlocked.Read(ref _messagesSent), Interlocked.Read(ref _messagesReceived), Interlocked.Read(ref _bytesSent),
        Interlocked.Read(ref _bytesReceived), Interlocked.Read(ref _sendDrops), DownReason);

    internal Task<Link> WaitUpAsync()
    {
        lock (_queueLock)
        {
            if (State == LinkState.Up)
                return Task.FromResult(this);
            _upWaiter ??= new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
            return _upWaiter.Task;
        }
    }

    /// <summary>
    /// Queues one message for the neighbour. Never blocks: false (and counted) when the link is not up, the
    /// payload cannot fit a frame, or the queue is full.
    /// </summary>
    public bool TryEnqueue(uint label, byte type, ReadOnlySpan<byte> payload)
    {
        if (State != LinkState.Up || label == MeshWire.ControlLabel)
        {
            Interlocked.Increment(ref _sendDrops);
            return false;
        }
        return Enqueue(label, type, payload);
    }

    private bool Enqueue(uint label, byte type, ReadOnlySpan<byte> payload)
    {
        if (payload.Length > FrameBuilder.MaxPayload(Interface.Mtu, encrypted: true))
        {
            Interlocked.Increment(ref _sendDrops);
            return false;
        }
        bool schedule;
        lock (_queueLock)
        {
            var need = MeshWire.MessageHeaderLength + payload.Length;
            if (_queueLength + need > _queueLimit || State == LinkState.Down)
            {
                _sendDrops++;
                return false;
            }
            if (_queue.Length - _queueLength < need)
                Array.Resize(ref _queue, Math.Max(_queue.Length * 2, _queueLength + need));
            var slot = _queue.AsSpan(_queueLength, need);
            BinaryPrimitives.WriteUInt32BigEndian(slot, label);
            slot[4] = type;
            slot[5] = 0;
            BinaryPrimitives.WriteUInt16BigEndian(slot[6..], (ushort)payload.Length);
            payload.CopyTo(slot[MeshWire.MessageHeaderLength..]);
            _queueLength += need;
            _queuedMessages++;
            schedule = !_flushing;
            _flushing = true;
        }
        if (schedule)
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: true);
        return true;
    }

    void IThreadPoolWorkItem.Execute()
    {
        try
        {
            Flush();
        }
        catch (Exception e) when (e is ObjectDisposedException or System.Security.Cryptography.CryptographicException)
        {
            // The link closed under the flush: what was queued is dropped, as on any link that goes down.
            lock (_queueLock)
            {
                _flushing = false;
                _queueLength = 0;
            }
        }
    }

    /// <summary>Sends everything queued, as few frames as the MTU allows, then stops until the next message.</summary>
    private void Flush()
    {
        byte[] batch;
        int length;
        var spare = Array.Empty<byte>();
        while (true)
        {
            lock (_queueLock)
            {
                if (_queueLength == 0 || State == LinkState.Down)
                {
                    _queueLength = 0;
                    _flushing = false;
                    return;
                }
                batch = _queue;
                length = _queueLength;
                _queue = spare.Length >= 4096 ? spare : new byte[Math.Max(4096, batch.Length)];
                _queueLength = 0;
                _queuedMessages = 0;
            }
            SendBatch(batch.AsSpan(0, length));
            spare = batch;
        }
    }

    private void SendBatch(ReadOnlySpan<byte> messages)
    {
        var builder = _builder ??= new FrameBuilder(Interface.Mtu);
        var encrypted = _sendCipher is not null;
        var offset = 0;
        while (offset < messages.Length)
        {
            var header = messages.Slice(offset, MeshWire.MessageHeaderLength);
            var length = BinaryPrimitives.ReadUInt16BigEndian(header[6..]);
            var payload = messages.Slice(offset + MeshWire.MessageHeaderLength, length);
            if (!builder.TryAdd(BinaryPrimitives.ReadUInt32BigEndian(header), header[4], payload, encrypted))
            {
                SendFrame(builder);
                builder.TryAdd(BinaryPrimitives.ReadUInt32BigEndian(header), header[4], payload, encrypted);
            }
            offset += MeshWire.MessageHeaderLength + length;
        }
        if (!builder.IsEmpty)
            SendFrame(builder);
    }

    private void SendFrame(FrameBuilder builder)
    {
        var count = builder.Count;
        var frame = builder.Seal(NextSequence(), _sendCipher);
        if (Interface.TrySend(Remote, frame))
        {
            Interlocked.Increment(ref _framesSent);
            Interlocked.Add(ref _messagesSent, count);
            Interlocked.Add(ref _bytesSent, frame.Length);
        }
        else
        {
            Interlocked.Add(ref _sendDrops, count);
        }
        builder.Reset();
    }

    private ulong NextSequence() => (ulong)Interlocked.Increment(ref _sendSequence);

    /// <summary>Handshake messages go out alone, unencrypted, at once (they are rare and must not wait behind data).</summary>
    private void SendControlNow(byte type, ReadOnlySpan<byte> payload)
    {
        var builder = new FrameBuilder(Math.Max(MeshWire.MinMtu, Interface.Mtu));
        builder.TryAdd(MeshWire.ControlLabel, type, payload, encrypted: false);
        Interface.TrySend(Remote, builder.Seal(0, null));
    }

    /// <summary>Control messages after the handshake travel like data (encrypted when the link is).</summary>
    private void SendControl(byte type, ReadOnlySpan<byte> payload)
    {
        if (State == LinkState.Up)
            Enqueue(MeshWire.ControlLabel, type, payload);
    }
}
