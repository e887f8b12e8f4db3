using System.Buffers;
using System.Buffers.Binary;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Links;

/// <summary>
/// Recovery of lost frames on the link itself, as 802.11 does on a radio hop: the receiver names the frames it
/// misses (by sequence number) in a Nack, and the sender sends those frames again — the very bytes it sent, still
/// sealed under their own sequence number, so nothing is encrypted twice and the receiver's replay window drops a
/// copy that arrives twice. A frame lost on one hop is so recovered within that hop's round trip, and end-to-end
/// congestion control, which would read the loss as congestion and halve its rate, sees a clean path.
/// <para>
/// A sender keeps its last sent frames by moving their pooled buffers into a ring instead of returning them at once:
/// no copy, and no allocation once the ring has turned over (each frame kept returns the one it replaces). The ring
/// holds at most 2 MiB and one second of frames; an idle link gives its buffers back.
/// </para>
/// </summary>
public sealed partial class Link
{
    // ---- Receiver: frames missing from the sequence, and when to ask for them ----------------------------------

    /// <summary>Gaps remembered at once; a longer run of losses is not worth recovering hop by hop.</summary>
    internal const int MaxMissing = 256;

    /// <summary>Times a missing frame is asked for before the end-to-end recovery is left to deal with it.</summary>
    internal const int MaxNacks = 4;

    /// <summary>Sequence ranges one Nack names at most (16 bytes each: first sequence, 64-frame bitmap).</summary>
    internal const int MaxNackRanges = 16;

    private MissingFrame[]? _missing;
    private int _missingCount;
    private long _arqHighest = -1;
    private long _framesAskedFor, _framesRecovered, _framesRetransmitted, _framesGivenUp;

    private struct MissingFrame
    {
        public ulong Sequence;
        public long FirstSeen;
        public long LastAsked;
        public int Asked;
    }

    /// <summary>Frames this link asked its neighbour to send again.</summary>
    public long FramesAskedFor => Interlocked.Read(ref _framesAskedFor);

    /// <summary>Frames that arrived after this link had found them missing (late or sent again).</summary>
    public long FramesRecovered => Interlocked.Read(ref _framesRecovered);

    /// <summary>Frames this link sent again because its neighbour asked.</summary>
    public long FramesRetransmitted => Interlocked.Read(ref _framesRetransmitted);

    /// <summary>Missing frames given up on (asked for too often, or too old): end-to-end recovery takes over.</summary>
    public long FramesGivenUp => Interlocked.Read(ref _framesGivenUp);

    /// <summary>
    /// Notes a frame taken from the neighbour (receive loop only): a jump in sequence numbers leaves gaps to ask for,
    /// a frame that fills one closes it.
    /// </summary>
    private void ArqOnFrame(ulong sequence, long now)
    {
        if (!_switch.Options.LinkRecovery)
            return;
        var highest = _arqHighest;
        if (highest < 0 || (long)sequence > highest)
        {
            if (highest >= 0 && (long)sequence > highest + 1)
                NoteGap((ulong)highest + 1, sequence, now);
            _arqHighest = (long)sequence;
            return;
        }
        if (_missingCount == 0)
            return;
        var missing = _missing!;
        for (var i = 0; i < _missingCount; i++)
        {
            if (missing[i].Sequence == sequence)
            {
                missing[i] = missing[--_missingCount];
                Interlocked.Increment(ref _framesRecovered);
                return;
            }
        }
    }

    private void NoteGap(ulong from, ulong to, long now)
    {
        // A gap wider than what is remembered is a burst (or the neighbour restarted its numbering): only its newest
        // frames are asked for.
        if (to - from > MaxMissing)
            from = to - MaxMissing;
        _missing ??= new MissingFrame[MaxMissing];
        for (var s = from; s < to; s++)
        {
            if (_missingCount == MaxMissing)
            {
                // Full: the oldest gap is the least likely to be worth a retransmission.
                Interlocked.Increment(ref _framesGivenUp);
                RemoveOldestMissing();
            }
            _missing[_missingCount++] = new MissingFrame { Sequence = s, FirstSeen = now };
        }
    }

    private void RemoveOldestMissing()
    {
        var oldest = 0;
        for (var i = 1; i < _missingCount; i++)
        {
            if (_missing![i].Sequence < _missing[oldest].Sequence)
                oldest = i;
        }
        _missing![oldest] = _missing[--_missingCount];
    }

    /// <summary>
    /// Asks for the missing frames that are due (after each frame received, and on the switch's timer): a gap is
    /// asked for once it has outlived the reordering allowance, and again, up to <see cref="MaxNacks"/> times,
    /// when a retransmission's round trip passed without it.
    /// </summary>
    private void ArqAskForMissing(long now)
    {
        if (_missingCount == 0 || State != LinkState.Up)
            return;
        var time = _switch.Time;
        var rtt = RecoveryRtt;
        // Reordering allowance: an eighth of the link's round trip, at least 200 µs, at most 5 ms.
        var reorder = TimeSpan.FromTicks(Math.Clamp(rtt.Ticks / 8, TimeSpan.TicksPerMillisecond / 5, 5 * TimeSpan.TicksPerMillisecond));
        // Asked again after two round trips, at least 2 ms; abandoned after MaxNacks asks, or after 20 round trips and at least a second.
        var again = TimeSpan.FromTicks(Math.Max(rtt.Ticks * 2, 2 * TimeSpan.TicksPerMillisecond));
        var abandon = TimeSpan.FromTicks(Math.Max(rtt.Ticks * 20, TimeSpan.TicksPerSecond));
        Span<byte> nack = stackalloc byte[MaxNackRanges * 16];
        var ranges = 0;
        var missing = _missing!;
        for (var i = 0; i < _missingCount;)
        {
            ref var m = ref missing[i];
            var age = time.GetElapsedTime(m.FirstSeen, now);
            if (age >= abandon || (m.Asked >= MaxNacks && time.GetElapsedTime(m.LastAsked, now) >= again))
            {
                Interlocked.Increment(ref _framesGivenUp);
                missing[i] = missing[--_missingCount];
                continue;
            }
            var due = m.Asked == 0 ? age >= reorder : m.Asked < MaxNacks && time.GetElapsedTime(m.LastAsked, now) >= again;
            if (due && AddToNack(nack, ref ranges, m.Sequence))
            {
                m.Asked++;
                m.LastAsked = now;
                Interlocked.Increment(ref _framesAskedFor);
            }
            i++;
        }
        if (ranges > 0)
            SendNack(nack[..(ranges * 16)]);
    }

    /// <summary>
    /// A Nack goes out at once in a frame of its own, not behind the data queued for the neighbour: how soon it
    /// arrives is how soon the missing frame comes back.
    /// </summary>
    private void SendNack(ReadOnlySpan<byte> payload)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(MeshWire.FrameHeaderLength + MeshWire.MessageHeaderLength + payload.Length + MeshWire.TagLength);
        var unsealed = MeshWire.FrameHeaderLength + MeshWire.WriteMessage(buffer.AsSpan(MeshWire.FrameHeaderLength), MeshWire.ControlLabel, LinkMessageType.Nack, payload);
        var sequence = NextSequence();
        var length = MeshWire.SealFrame(buffer, unsealed, sequence, _sendCipher);
        var frame = buffer.AsSpan(0, length);
        // Sent twice: on a link that loses one frame in twenty, a lost Nack would cost a whole round of asking
        // again, late enough for the path's end-to-end recovery to step in; two copies make that rare.
        for (var copy = 0; copy < 2; copy++)
        {
            if (Interface.TrySend(Remote, frame))
            {
                Interlocked.Increment(ref _framesSent);
                Interlocked.Add(ref _bytesSent, length);
            }
        }
        // Kept like any frame while frames are kept: the neighbour may miss this one too, and ask.
        if (Retaining)
            Retain(buffer, sequence, length);
        else
            ArrayPool<byte>.Shared.Return(buffer);
    }

    /// <summary>
    /// The round trip recovery is timed by: the smallest the keepalives measured (a Nack and the frames sent again
    /// never wait in the queue, so queueing delay does not belong in it), 10 ms before the first measurement.
    /// </summary>
    private TimeSpan RecoveryRtt => _minRttTicks > 0 ? TimeSpan.FromTicks(_minRttTicks) : TimeSpan.FromMilliseconds(10);

    private long _minRttTicks;

    /// <summary>Sets the sequence's bit in a range of the Nack being built, opening a range if none covers it; false when full.</summary>
    private static bool AddToNack(Span<byte> nack, ref int ranges, ulong sequence)
    {
        for (var r = 0; r < ranges; r++)
        {
            var first = BinaryPrimitives.ReadUInt64BigEndian(nack[(r * 16)..]);
            if (sequence >= first && sequence - first < 64)
            {
                var bits = BinaryPrimitives.ReadUInt64BigEndian(nack[(r * 16 + 8)..]) | (1UL << (int)(sequence - first));
                BinaryPrimitives.WriteUInt64BigEndian(nack[(r * 16 + 8)..], bits);
                return true;
            }
        }
        if (ranges == MaxNackRanges)
            return false;
        BinaryPrimitives.WriteUInt64BigEndian(nack[(ranges * 16)..], sequence);
        BinaryPrimitives.WriteUInt64BigEndian(nack[(ranges * 16 + 8)..], 1);
        ranges++;
        return true;
    }

    // ---- Sender: frames kept for a while, and sent again when asked ---------------------------------------------

    /// <summary>Bytes of sent frames kept per link at most (and at least 32 frames).</summary>
    internal const int RetainBytes = 2 * 1024 * 1024;

    private readonly Lock _retainLock = new();
    private SentFrame[]? _retained;
    private long _newestRetained;
    private ulong _newestSequence;

    // The oldest sequence that may still hold a kept frame: trimming walks forward from here.
    private ulong _trimFrom;
    private long _lastNackReceived = long.MinValue / 2;

    private struct SentFrame
    {
        public byte[]? Buffer;
        public ulong Sequence;
        public int Length;
        public long SentAt;
    }

    /// <summary>Sent frames kept now for resending (each holds a buffer of the interface's MTU).</summary>
    internal int RetainedFrames
    {
        get
        {
            lock (_retainLock)
                return _retained?.Count(f => f.Buffer is not null) ?? 0;
        }
    }

    /// <summary>Slots of the ring of kept frames now (0 when none is kept): 32 on a quiet link, more while it is busy.</summary>
    internal int RetainSlots
    {
        get
        {
            lock (_retainLock)
                return _retained?.Length ?? 0;
        }
    }

    /// <summary>How old a kept frame may be and still be sent again when asked (older, the path's own recovery has it).</summary>
    private TimeSpan ResendHorizon => TimeSpan.FromTicks(Math.Max(RecoveryRtt.Ticks * 20, TimeSpan.TicksPerSecond));

    /// <summary>Whether sent frames are kept: while recovery is on and the link is up.</summary>
    private bool Retaining => _switch.Options.LinkRecovery && State == LinkState.Up;

    /// <summary>
    /// Keeps a sent frame's buffer in the ring (in place of returning it to the pool), returning the buffer of the
    /// frame it replaces. Called by the flush, after the send.
    /// </summary>
    private void Retain(byte[] buffer, ulong sequence, int length)
    {
        byte[]? evicted;
        lock (_retainLock)
        {
            var now = _switch.Time.GetTimestamp();
            _retained ??= new SentFrame[MinRetainSlots];
            // The ring starts small and doubles while it would overwrite a frame still young enough to be asked for,
            // up to RetainBytes of frames: an idle link (a keepalive a second) keeps 32 slots, not 1,024.
            while (_retained[(int)(sequence % (ulong)_retained.Length)] is { Buffer: not null } young
                && _retained.Length < MaxRetainSlots && _switch.Time.GetElapsedTime(young.SentAt, now) <= ResendHorizon)
            {
                GrowRetained();
            }
            ref var slot = ref _retained[(int)(sequence % (ulong)_retained.Length)];
            evicted = slot.Buffer;
            slot = new SentFrame { Buffer = buffer, Sequence = sequence, Length = length, SentAt = now };
            _newestRetained = now;
            if (_trimFrom == 0 || sequence < _trimFrom)
                _trimFrom = sequence;
            _newestSequence = Math.Max(_newestSequence, sequence);
        }
        if (evicted is not null)
            ArrayPool<byte>.Shared.Return(evicted);
    }

    private const int MinRetainSlots = 32;

    private int MaxRetainSlots => Math.Clamp(RetainBytes / Math.Max(1, Interface.Mtu), MinRetainSlots, 1024);

    // Under _retainLock: twice the slots, each kept frame moved to its place in the larger ring (the frames kept are
    // fewer than the old ring's length and consecutive at most that far apart, so no two land in one slot).
    private void GrowRetained()
    {
        var old = _retained!;
        var grown = new SentFrame[Math.Min(MaxRetainSlots, old.Length * 2)];
        foreach (var frame in old)
        {
            if (frame.Buffer is not null)
                grown[(int)(frame.Sequence % (ulong)grown.Length)] = frame;
        }
        _retained = grown;
    }

    /// <summary>Returns every kept buffer to the pool (the link went down, or nobody asked for a long time).</summary>
    private void ReleaseRetained()
    {
        if (Volatile.Read(ref _closed) != 0)
            Interlocked.Exchange(ref _tailTimer, null)?.Dispose();
        SentFrame[]? retained;
        lock (_retainLock)
        {
            retained = _retained;
            _retained = null;
            _trimFrom = 0;
            _newestSequence = 0;
        }
        if (retained is null)
            return;
        foreach (var frame in retained)
        {
            if (frame.Buffer is not null)
                ArrayPool<byte>.Shared.Return(frame.Buffer);
        }
    }

    /// <summary>
    /// Nack: <c>(first-sequence(8) bitmap(8))+</c> — bit i of a bitmap names frame first+i. Sends again each named
    /// frame this side still holds (receive loop).
    /// </summary>
    private void OnNack(ReadOnlySpan<byte> payload)
    {
        if (payload.Length == 0 || payload.Length % 16 != 0 || payload.Length > MaxNackRanges * 16)
        {
            _switch.CountBadFrame(WireError.BadControlMessage);
            return;
        }
        var now = _switch.Time.GetTimestamp();
        Volatile.Write(ref _lastNackReceived, now);
        var maxAge = ResendHorizon;
        lock (_retainLock)
        {
            var retained = _retained;
            if (retained is null)
                return;
            for (var r = 0; r < payload.Length; r += 16)
            {
                var first = BinaryPrimitives.ReadUInt64BigEndian(payload[r..]);
                var bits = BinaryPrimitives.ReadUInt64BigEndian(payload[(r + 8)..]);
                while (bits != 0)
                {
                    var bit = System.Numerics.BitOperations.TrailingZeroCount(bits);
                    bits &= bits - 1;
                    var sequence = first + (ulong)bit;
                    ref var slot = ref retained[(int)(sequence % (ulong)retained.Length)];
                    if (slot.Buffer is null || slot.Sequence != sequence || _switch.Time.GetElapsedTime(slot.SentAt, now) > maxAge)
                        continue;
                    // Twice, for the reason the Nack came twice; the neighbour's replay window drops the copy.
                    for (var copy = 0; copy < 2; copy++)
                    {
                        if (Interface.TrySend(Remote, slot.Buffer.AsSpan(0, slot.Length)))
                        {
                            Interlocked.Increment(ref _framesRetransmitted);
                            Interlocked.Add(ref _bytesSent, slot.Length);
                        }
                    }
                }
            }
        }
    }

    // ---- Tail probe: a lost last frame leaves no gap behind it for the neighbour to see -----------------------

    private ITimer? _tailTimer;
    private long _tailSequence = -1;
    private long _tailProbes;

    /// <summary>Last frames of a burst sent again because nothing followed them.</summary>
    public long TailProbes => Interlocked.Read(ref _tailProbes);

    /// <summary>
    /// The queue just ran dry while frames are kept: if nothing else is sent within a round trip of the link (and a
    /// half), the last frame goes again, so that the neighbour either gets it or sees the gaps before it and asks.
    /// </summary>
    private void ArmTailProbe()
    {
        // Only on a link that loses frames: on a clean one the copy would be pure waste.
        if (Volatile.Read(ref _closed) != 0 || !Retaining
            || _switch.Time.GetElapsedTime(Volatile.Read(ref _lastNackReceived)) > TimeSpan.FromSeconds(10))
            return;
        var delay = TimeSpan.FromTicks(Math.Max(RecoveryRtt.Ticks * 2, 2 * TimeSpan.TicksPerMillisecond));
        var timer = _tailTimer;
        if (timer is null)
        {
            timer = _switch.Time.CreateTimer(static s => ((Link)s!).OnTailTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            if (Interlocked.CompareExchange(ref _tailTimer, timer, null) is { } other)
            {
                timer.Dispose();
                timer = other;
            }
        }
        Volatile.Write(ref _tailSequence, Interlocked.Read(ref _sendSequence));
        timer.Change(delay, Timeout.InfiniteTimeSpan);
    }

    private void OnTailTimer()
    {
        var sequence = Volatile.Read(ref _tailSequence);
        if (Volatile.Read(ref _closed) != 0 || sequence < 0 || Interlocked.Read(ref _sendSequence) != sequence)
            return;
        lock (_retainLock)
        {
            var retained = _retained;
            if (retained is null)
                return;
            ref var slot = ref retained[(int)((ulong)sequence % (ulong)retained.Length)];
            if (slot.Buffer is null || slot.Sequence != (ulong)sequence)
                return;
            if (Interface.TrySend(Remote, slot.Buffer.AsSpan(0, slot.Length)))
                Interlocked.Increment(ref _tailProbes);
        }
    }

    /// <summary>
    /// On the switch's timer: an idle link (nothing sent for a second, too late to resend) gives its kept buffers back;
    /// a busy one gives back those too old to be sent again. So a link that sends a keepalive a second keeps a frame
    /// or two, not the whole ring (1,024 frames of its MTU: 2 MiB).
    /// </summary>
    private void ArqOnTimer(long now)
    {
        if (_retained is not null && _switch.Time.GetElapsedTime(Volatile.Read(ref _newestRetained), now) > TimeSpan.FromSeconds(1))
            ReleaseRetained();
        else if (_retained is not null)
            TrimRetained(now);
        ArqAskForMissing(now);
    }

    /// <summary>Returns to the pool the kept frames older than a Nack would still be answered for (oldest first).</summary>
    private void TrimRetained(long now)
    {
        var maxAge = ResendHorizon;
        List<byte[]>? old = null;
        lock (_retainLock)
        {
            var retained = _retained;
            if (retained is null || _trimFrom == 0)
                return;
            var length = (ulong)retained.Length;
            // Slots older than one lap were overwritten (and their buffers returned) already.
            if (_newestSequence >= length && _trimFrom < _newestSequence - length + 1)
                _trimFrom = _newestSequence - length + 1;
            for (; _trimFrom <= _newestSequence; _trimFrom++)
            {
                ref var slot = ref retained[(int)(_trimFrom % length)];
                if (slot.Buffer is null || slot.Sequence != _trimFrom)
                    continue;
                if (_switch.Time.GetElapsedTime(slot.SentAt, now) <= maxAge)
                    break;
                (old ??= []).Add(slot.Buffer);
                slot = default;
            }
        }
        if (old is null)
            return;
        foreach (var buffer in old)
            ArrayPool<byte>.Shared.Return(buffer);
    }
}
