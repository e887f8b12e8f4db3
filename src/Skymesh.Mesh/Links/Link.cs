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
    long BytesSent, long BytesReceived, long SendDrops, string? DownReason,
    long FramesAskedFor = 0, long FramesRecovered = 0, long FramesRetransmitted = 0, long TailProbes = 0, long FramesGivenUp = 0)
{
    /// <summary>
    /// How the link was made: <c>dialled</c> (this node dialled), <c>answered</c> (the neighbour did), <c>punched</c>
    /// (through NATs, both at once) or <c>relayed</c> (through a port of <see cref="Via"/>, a neighbour of both).
    /// </summary>
    public string? How { get; init; }

    /// <summary>The node a <c>relayed</c> link goes through; null for any other.</summary>
    public string? Via { get; init; }
}

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
    // Messages waiting to be sent, laid out as the frames they will go in: each chunk is one frame's buffer with
    // room for the header before its messages and for the tag after them, so a flush seals it in place and sends
    // it, without copying the messages again. Buffers come from the shared array pool and go back as soon as their
    // frame is sent: a busy link allocates nothing per frame, and an idle one holds no buffer.
    private List<FrameChunk> _pending = [];
    private List<FrameChunk> _sending = [];
    private readonly Stack<FrameChunk> _freeChunks = new();
    private int _queueLength;
    private bool _flushing;
    private FrameCipher? _sendCipher;
    private FrameCipher? _receiveCipher;
    // Next frame sequence number; taken with Interlocked so that no two frames ever share a nonce.
    private long _sendSequence = -1;
    private ReplayWindow _replay;

    // Handshake state.
    private EphemeralKey? _ephemeral;
    private byte[]? _hello;

    // Initiator: the Hello as sent — the signed Hello, then the cookie once the far node asked for one.
    private byte[]? _helloSent;
    private byte[]? _helloAck;
    private byte[]? _helloConfirm;
    private int _helloAttempts;
    private long _handshakeStarted;
    private bool _confirmed;

    /// <summary>True once the handshake completed (the link was up at some time), whatever it is now.</summary>
    public bool WasUp => Volatile.Read(ref _confirmed);
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

    private volatile bool _answering;

    /// <summary>The handshake worker is answering this link's Hello: its receive loop leaves the link alone meanwhile.</summary>
    internal bool Answering
    {
        get => _answering;
        set => _answering = value;
    }

    public IMeshInterface Interface { get; }

    public EndPoint Remote { get; }

    public bool IsInitiator { get; }

    /// <summary>The neighbour this link must reach (for links we start); null accepts whoever answers.</summary>
    public NodeAddress? ExpectedPeer { get; }

    /// <summary>The neighbour's proven identity, once the handshake has got that far.</summary>
    public NodeAddress? Peer { get; private set; }

    /// <summary>
    /// The timestamp of the peer's signed introduction in this link's handshake (its Hello or HelloAck). A later Hello
    /// signed by the same peer from the same address means it restarted (MeshSwitch.Handshakes.cs).
    /// </summary>
    internal long PeerHelloTimestampMs { get; private set; }

    public LinkState State { get; private set; } = LinkState.Handshaking;

    public bool Encrypted => _sendCipher is not null;

    /// <summary>Where messages on the link-local channel's label (<see cref="Forwarding.LabelTable.LinkChannelLabel"/>) go; null: nowhere (dropped as an unknown label).</summary>
    public IPathSink? ChannelSink { get => Volatile.Read(ref _channelSink); set => Volatile.Write(ref _channelSink, value); }

    private IPathSink? _channelSink;

    public string? DownReason { get; private set; }

    /// <summary>Smoothed round-trip time from keepalives; null before the first answer.</summary>
    public TimeSpan? Rtt => _srttTicks > 0 ? TimeSpan.FromTicks((long)_srttTicks) : null;

    /// <summary>Share of the neighbour's frames lost on the way, estimated over the last keepalive interval.</summary>
    public double Loss => _loss;

    public LinkInfo Info() => new(Id, Interface.Name, Remote.ToString() ?? "", Peer?.ToString(), State, Encrypted,
        Interface.Mtu, Rtt, Loss, Interlocked.Read(ref _framesSent), Interlocked.Read(ref _framesReceived),
        Interlocked.Read(ref _messagesSent), Interlocked.Read(ref _messagesReceived), Interlocked.Read(ref _bytesSent),
        Interlocked.Read(ref _bytesReceived), Interlocked.Read(ref _sendDrops), DownReason,
        FramesAskedFor, FramesRecovered, FramesRetransmitted, TailProbes, FramesGivenUp);

    internal Task<Link> WaitUpAsync()
    {
        lock (_queueLock)
        {
            if (State == LinkState.Up)
                return Task.FromResult(this);
            // Down before anyone waited (a dial given up at once): say so, rather than wait for ever.
            if (State == LinkState.Down)
                return Task.FromException<Link>(new LinkFailedException(DownReason ?? "closed"));
            _upWaiter ??= new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
            return _upWaiter.Task;
        }
    }

    /// <summary>
    /// Queues one message for the neighbour. Never blocks: false (and counted) when the link is not up, the
    /// payload cannot fit a frame, or the queue is full. The queue is sent by a pool thread, or, inside a
    /// <see cref="MeshSwitch.DeferFlushes"/> scope (every receive loop runs in one), by this thread when the scope ends.
    /// </summary>
    /// <param name="billable">The neighbour forwards this message (it is not its path's end): it counts towards what this node owes it (settlement).</param>
    public bool TryEnqueue(uint label, byte type, ReadOnlySpan<byte> payload, bool billable = false)
    {
        if (State != LinkState.Up || label == MeshWire.ControlLabel)
        {
            Interlocked.Increment(ref _sendDrops);
            return false;
        }
        return Enqueue(label, type, payload, billable);
    }

    /// <summary>
    /// Sends a settlement receipt to the neighbour on the link itself (docs/wire-format.md, type 8): neighbours settle
    /// with each other whether or not the control bus is there. False when the link is not up or its queue is full.
    /// </summary>
    public bool TrySendReceipt(ReadOnlySpan<byte> receipt) =>
        State == LinkState.Up && receipt.Length <= MaxReceiptLength && Enqueue(MeshWire.ControlLabel, LinkMessageType.Receipt, receipt);

    /// <summary>The largest receipt a link carries (a receipt is a few hundred bytes).</summary>
    public const int MaxReceiptLength = 1024;

    /// <summary>Sends what is queued now (at the end of a <see cref="MeshSwitch.DeferFlushes"/> scope); what others queue meanwhile goes to the thread pool.</summary>
    internal void FlushHere() => RunFlush(once: true);

    private bool Enqueue(uint label, byte type, ReadOnlySpan<byte> payload, bool billable = false)
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
            // Data is queued only once the link is up, when the keys (if any) are in place: whether a frame needs
            // room for a tag is known here.
            var tag = _sendCipher is null ? 0 : MeshWire.TagLength;
            var pending = _pending;
            var chunk = pending.Count > 0 ? pending[^1] : null;
            if (chunk is null || chunk.Length + need + tag > chunk.Capacity)
            {
                chunk = _freeChunks.TryPop(out var free) ? free : new FrameChunk();
                chunk.Rent(Interface.Mtu);
                pending.Add(chunk);
            }
            MeshWire.WriteMessage(chunk.Buffer.AsSpan(chunk.Length, need), label, type, payload);
            chunk.Length += need;
            chunk.Count++;
            _queueLength += need;
            // Counted under the lock already held for the queue: no extra atomic operation per message.
            if (billable)
                _billableSent += payload.Length;
            schedule = !_flushing;
            _flushing = true;
        }
        // This caller is the one to see the flush done: at the end of its scope, or by a pool thread.
        if (schedule && MeshSwitch.Deferring)
            MeshSwitch.FlushAtScopeEnd(this);
        else if (schedule)
            Background.Queue(this, preferLocal: true);
        return true;
    }

    void IThreadPoolWorkItem.Execute() => RunFlush(once: false);

    private void RunFlush(bool once)
    {
        try
        {
            Flush(once);
        }
        catch (Exception e) when (e is ObjectDisposedException or System.Security.Cryptography.CryptographicException)
        {
            // The link closed under the flush: what was queued is dropped, as on any link that goes down.
            lock (_queueLock)
            {
                _pending.Clear();
                _sending.Clear();
                _flushing = false;
                _queueLength = 0;
            }
        }
    }

    /// <summary>
    /// Sends everything queued, a frame per chunk, then stops until the next message. With <paramref name="once"/>
    /// (a receive loop flushing inline) it sends what is queued when it starts and leaves the rest to the thread pool,
    /// so that a link others keep busy cannot hold a receive loop.
    /// </summary>
    private void Flush(bool once)
    {
        for (var pass = 0; ; pass++)
        {
            List<FrameChunk> batch;
            lock (_queueLock)
            {
                if (_pending.Count == 0 || State == LinkState.Down)
                {
                    _pending.Clear();
                    _queueLength = 0;
                    _flushing = false;
                    if (pass > 0 && _retained is not null)
                        ArmTailProbe();
                    return;
                }
                if (once && pass >= InlinePasses)
                {
                    // Still flushing (the flag stays set): a pool thread takes over.
                    Background.Queue(this, preferLocal: false);
                    return;
                }
                // Take the whole queue; new messages go into the other list meanwhile.
                batch = _pending;
                _pending = _sending;
                _sending = batch;
                _queueLength = 0;
            }
            var retain = Retaining;
            foreach (var chunk in batch)
            {
                var sent = SendChunk(chunk, out var sequence);
                if (retain && sent > 0)
                    Retain(chunk.Detach(), sequence, sent);
                else
                    chunk.Release();
                lock (_queueLock)
                {
                    if (_freeChunks.Count < MaxFreeChunks)
                        _freeChunks.Push(chunk);
                }
            }
            batch.Clear();
        }
    }

    /// <summary>
    /// Passes an inline flush makes before it leaves what is still queued to a pool thread. More than one, because
    /// a keepalive queued by the timer while this thread was sending would otherwise hand the link to the pool, and
    /// the receive loop's next frames would wait for a pool thread to wake.
    /// </summary>
    private const int InlinePasses = 8;

    /// <summary>Empty chunk objects kept for reuse (their buffers are in the shared pool).</summary>
    private const int MaxFreeChunks = 64;

    /// <summary>
    /// Writes the frame header into the chunk, seals the messages in place when the link is encrypted, and sends it;
    /// returns the frame's length when it was sent, 0 when it was not.
    /// </summary>
    private int SendChunk(FrameChunk chunk, out ulong sequence)
    {
        sequence = 0;
        var cipher = _sendCipher;
        var buffer = chunk.Buffer;
        var length = chunk.Length;
        if (cipher is not null && length + MeshWire.TagLength > chunk.Capacity)
        {
            // Queued before the keys were there (cannot happen: data waits for the handshake); never send it plain.
            Interlocked.Add(ref _sendDrops, chunk.Count);
            return 0;
        }
        sequence = NextSequence();
        length = MeshWire.SealFrame(buffer, length, sequence, cipher);
        if (Interface.TrySend(Remote, buffer.AsSpan(0, length)))
        {
            Interlocked.Increment(ref _framesSent);
            Interlocked.Add(ref _messagesSent, chunk.Count);
            Interlocked.Add(ref _bytesSent, length);
            return length;
        }
        Interlocked.Add(ref _sendDrops, chunk.Count);
        return 0;
    }

    /// <summary>One frame being filled: its buffer (at least the link's MTU), the bytes used so far (header included) and its messages.</summary>
    private sealed class FrameChunk
    {
        public byte[] Buffer { get; private set; } = [];

        /// <summary>The largest frame this chunk may become: the MTU (a pooled buffer may be longer).</summary>
        public int Capacity { get; private set; }

        public int Length { get; set; }

        public int Count { get; set; }

        public void Rent(int mtu)
        {
            Buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(mtu);
            Capacity = mtu;
            Length = MeshWire.FrameHeaderLength;
            Count = 0;
        }

        /// <summary>Hands the buffer over (to the ring of frames kept for retransmission) instead of returning it.</summary>
        public byte[] Detach()
        {
            var buffer = Buffer;
            Buffer = [];
            Capacity = 0;
            return buffer;
        }

        public void Release()
        {
            var buffer = Buffer;
            Buffer = [];
            Capacity = 0;
            if (buffer.Length > 0)
                System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
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
