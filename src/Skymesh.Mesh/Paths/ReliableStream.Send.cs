namespace Skymesh.Mesh.Paths;

/// <summary>A data segment the sender has sent and the receiver has not yet acknowledged cumulatively.</summary>
internal sealed class SentSegment
{
    public long Offset;
    public int Length;
    public bool Fin;

    /// <summary>Order of the latest transmission among all of the stream's transmissions.</summary>
    public long TxSeq;
    public long SentAt;
    public int Transmissions;
    public SegmentState State;

    // Entries in the lost queue that refer to this record (they are removed lazily); it is recycled only at 0.
    public int Queued;

    // Acknowledged and gone from the scoreboard: recycle once no queue entry refers to it.
    public bool Retired;

    // The in-flight list, oldest transmission first.
    public SentSegment? Prev;
    public SentSegment? Next;

    public long End => Offset + Length;
}

internal enum SegmentState : byte
{
    /// <summary>Sent, not known delivered or lost: counts in the pipe.</summary>
    InFlight,

    /// <summary>Presumed lost, waiting to be sent again.</summary>
    Lost,

    /// <summary>Reported by a SACK block: delivered, but not yet below the cumulative acknowledgement.</summary>
    Sacked,
}

/// <summary>
/// The sender. Every segment sent is kept until cumulatively acknowledged: in offset order for acknowledgement
/// processing, and (while in flight) in transmission order for loss detection. Loss detection is RACK
/// (RFC 8985), the SACK-based successor of three duplicate acknowledgements: a segment is lost when one sent
/// after it was delivered and a reordering window has passed since. The retransmission timer (RFC 6298) covers
/// what acknowledgements cannot reveal. Sending follows the RFC 6675 pipe: bytes in flight stay under the
/// congestion window, and never beyond the receiver's advertised limit.
/// </summary>
public sealed partial class ReliableStream
{
    private readonly RttEstimator _rtt;
    private readonly CongestionController _cc;
    private readonly List<SentSegment> _segments = [];
    private readonly PriorityQueue<SentSegment, long> _lost = new();

    // Recycled segment records: the data plane allocates nothing per message.
    private readonly Stack<SentSegment> _freeSegments = new();
    private int _segmentsHead;
    private SentSegment? _flightHead;
    private SentSegment? _flightTail;
    private SlidingBuffer? _sendBuffer;
    private TaskCompletionSource? _completion;
    private int _mss;

    // Byte offsets: _sndUna <= _sndNxt <= _writeEnd; the peer accepts bytes below _peerLimit.
    private long _sndUna;
    private long _sndNxt;
    private long _writeEnd;
    private long _peerLimit;
    private bool _finRequested;
    private bool _finSent;
    private bool _finAcked;

    // Bytes in flight (RFC 6675 "pipe").
    private long _pipe;
    private long _txSeq;

    // RACK: the most recently sent segment known delivered, and its round trip.
    private long _rackTxSeq;
    private long _rackRtt;

    // RACK's reordering window is a quarter of the minimum RTT times this; it grows when a retransmission
    // turns out spurious (the original arrived after all) and falls back after 16 recoveries.
    private int _reorderMultiplier = 1;
    private int _recoveriesSinceReorderChange;
    private bool _spuriousSeen;

    // Losses of segments below the recovery point belong to a window already reduced for.
    private long _recoveryPoint;
    private bool _inFastRecovery;
    private bool _inTimeoutRecovery;

    // Tail loss probe (RFC 8985 §7): sent when the acknowledgements stop before the retransmission timeout.
    private long _tailProbeDue = long.MaxValue;
    private bool _tailProbeSent;
    private bool _retransmitNow;
    private bool _windowLimited;

    private long _rtoDue = long.MaxValue;
    private long _reorderDue = long.MaxValue;
    private long _probeDue = long.MaxValue;
    private long _probeInterval;

    // Since when the sender has been waiting for an acknowledgement without getting one.
    private long _livenessMark;

    private long _bytesSent;
    private long _segmentsSent;
    private long _segmentsRetransmitted;
    private long _bytesRetransmitted;
    private long _fastRetransmits;
    private long _spuriousRetransmits;
    private long _undos;
    private long _windowReductions;
    // Segments presumed lost in the current fast recovery, and how many of those turned out not to be.
    private int _episodeLost;
    private int _episodeSpurious;
    private bool _undoPossible;
    private long _tailProbes;
    private long _timeouts;
    private long _acksReceived;
    private long _messagesDropped;

    private const long MinTailProbeTimeout = 10 * TimeSpan.TicksPerMillisecond;

    // Spare segment records kept for reuse; a window of 4 MiB in 1,351-byte segments needs about 3,100.
    private const int MaxFreeSegments = 4096;

    private int SegmentCount => _segments.Count - _segmentsHead;

    /// <summary>Something sent expects an answer: unacknowledged data or end, a window probe, or an abort.</summary>
    private bool AwaitingAck => SegmentCount > 0 || _probeDue != long.MaxValue;

    private SentSegment SegmentAt(int index) => _segments[_segmentsHead + index];

    /// <summary>Copies into the send buffer what fits; returns the bytes taken.</summary>
    private int Append(ReadOnlySpan<byte> data)
    {
        _sendBuffer ??= new SlidingBuffer(_options.SendBufferSize, _sndUna);
        var room = _options.SendBufferSize - (_writeEnd - _sndUna);
        var count = (int)Math.Min(room, data.Length);
        if (count > 0)
        {
            _sendBuffer.Write(_writeEnd, data[..count]);
            _writeEnd += count;
        }
        return count;
    }

    /// <summary>After acknowledgements freed buffer space: takes more of the pending write.</summary>
    private void FillFromPendingWrite()
    {
        if (!_writeWaiter.Active)
            return;
        var taken = Append(_writeWaiter.Remaining.Span);
        _writeWaiter.Remaining = _writeWaiter.Remaining[taken..];
        if (_writeWaiter.Remaining.IsEmpty)
            _writeWaiter.Complete();
    }

    /// <summary>Sends what the windows allow: lost segments first (lowest offset first), then new data, then the end.</summary>
    private void TrySendMore(long now)
    {
        if (_failure is not null || _retired)
            return;
        while (true)
        {
            if (TryPeekLost(out var lost))
            {
                if (_pipe > 0 && _pipe + lost.Length > _cc.Window && !_retransmitNow)
                {
                    _windowLimited = true;
                    return;
                }
                _retransmitNow = false;
                _lost.Dequeue();
                lost.Queued--;
                Transmit(lost, now);
                continue;
            }
            var available = _writeEnd - _sndNxt;
            var finPending = _finRequested && !_finSent;
            if (available == 0 && !finPending)
            {
                _windowLimited = false;
                return;
            }
            var length = (int)Math.Min(Math.Min(available, _mss), Math.Max(0, _peerLimit - _sndNxt));
            var fin = finPending && _sndNxt + length == _writeEnd;
            if (length == 0 && !fin)
            {
                // The peer's window is closed. With nothing in flight no acknowledgement will reopen it: probe.
                _windowLimited = false;
                if (SegmentCount == 0 && _probeDue == long.MaxValue)
                {
                    _livenessMark = now;
                    _probeInterval = _rtt.Rto;
                    _probeDue = now + _probeInterval;
                }
                return;
            }
            if (_pipe > 0 && _pipe + length > _cc.Window)
            {
                _windowLimited = true;
                return;
            }
            if (!AwaitingAck)
                _livenessMark = now;
            var segment = NewSegment(_sndNxt, length, fin);
            _segments.Add(segment);
            _sndNxt += length;
            if (fin)
                _finSent = true;
            Transmit(segment, now);
        }
    }

    private SentSegment NewSegment(long offset, int length, bool fin)
    {
        if (!_freeSegments.TryPop(out var segment))
            segment = new SentSegment();
        segment.Offset = offset;
        segment.Length = length;
        segment.Fin = fin;
        segment.TxSeq = 0;
        segment.SentAt = 0;
        segment.Transmissions = 0;
        segment.State = SegmentState.InFlight;
        segment.Queued = 0;
        segment.Retired = false;
        segment.Prev = segment.Next = null;
        return segment;
    }

    private void Recycle(SentSegment segment)
    {
        segment.Retired = true;
        if (segment.Queued == 0 && _freeSegments.Count < MaxFreeSegments)
            _freeSegments.Push(segment);
    }

    private bool TryPeekLost(out SentSegment segment)
    {
        // Segments delivered while waiting here (a late SACK) are skipped lazily.
        while (_lost.TryPeek(out segment!, out _))
        {
            if (segment.State == SegmentState.Lost && !segment.Retired)
                return true;
            _lost.Dequeue();
            if (--segment.Queued == 0 && segment.Retired)
                Recycle(segment);
        }
        return false;
    }

    private void Transmit(SentSegment segment, long now)
    {
        var retransmission = segment.Transmissions > 0;
        segment.Transmissions++;
        segment.TxSeq = ++_txSeq;
        segment.SentAt = now;
        segment.State = SegmentState.InFlight;
        AppendFlight(segment);
        var length = PathWire.WriteData(_scratch, Id, segment.Fin, segment.Offset, ReadOnlySpan<byte>.Empty);
        if (segment.Length > 0)
            _sendBuffer!.Read(segment.Offset, _scratch.AsSpan(length, segment.Length));
        Send(PathMessageType.StreamData, length + segment.Length);
        _segmentsSent++;
        if (retransmission)
        {
            _segmentsRetransmitted++;
            _bytesRetransmitted += segment.Length;
        }
        else
        {
            _bytesSent += segment.Length;
        }
        if (_rtoDue == long.MaxValue)
            _rtoDue = now + _rtt.Rto;
        if (!retransmission)
            ArmTailProbe(now);
    }

    /// <summary>
    /// Arms the tail loss probe two round trips out plus the peer's acknowledgement delay (an odd last segment
    /// waits that long for its acknowledgement; RFC 8985 adds it for one segment in flight, QUIC always), at
    /// least 10 ms, never after the retransmission timeout and not while recovering from one.
    /// </summary>
    private void ArmTailProbe(long now)
    {
        if (_tailProbeSent || _inTimeoutRecovery || !_rtt.HasSample || _flightHead is null)
        {
            _tailProbeDue = long.MaxValue;
            return;
        }
        var timeout = Math.Max(2 * _rtt.Smoothed + _options.AckDelay.Ticks, MinTailProbeTimeout);
        _tailProbeDue = Math.Min(now + timeout, _rtoDue);
    }

    /// <summary>
    /// No acknowledgement for two round trips: send one segment beyond the congestion window — new data if any
    /// may go, else the last segment again — so that its acknowledgement lets RACK find whatever was lost at
    /// the tail, instead of waiting for the retransmission timeout.
    /// </summary>
    private void OnTailProbe(long now)
    {
        _tailProbeDue = long.MaxValue;
        if (SegmentCount == 0)
            return;
        _tailProbeSent = true;
        var available = _writeEnd - _sndNxt;
        var length = (int)Math.Min(Math.Min(available, _mss), Math.Max(0, _peerLimit - _sndNxt));
        var fin = _finRequested && !_finSent && _sndNxt + length == _writeEnd;
        if (length > 0 || fin)
        {
            var segment = NewSegment(_sndNxt, length, fin);
            _segments.Add(segment);
            _sndNxt += length;
            if (fin)
                _finSent = true;
            Transmit(segment, now);
        }
        else
        {
            var last = SegmentAt(SegmentCount - 1);
            if (last.State == SegmentState.Sacked)
                return;
            if (last.State == SegmentState.InFlight)
                RemoveFlight(last);
            Transmit(last, now);
        }
        _tailProbes++;
        _rtoDue = now + _rtt.Rto;
    }

    /// <summary>An acknowledgement for this stream from the peer.</summary>
    internal void OnAck(bool finReceived, long cumulative, long windowLimit, ReadOnlySpan<SackBlock> blocks)
    {
        lock (_sync)
        {
            if (_failure is not null || _retired)
                return;
            var now = _endpoint.Now;
            // Nothing may acknowledge what was never sent.
            if (cumulative > _sndNxt || (finReceived && (!_finSent || cumulative != _sndNxt)))
            {
                Dropped();
                return;
            }
            foreach (var block in blocks)
            {
                if (block.End > _sndNxt)
                {
                    Dropped();
                    return;
                }
            }
            _acksReceived++;
            _livenessMark = now;
            if (windowLimit > _peerLimit)
            {
                // Limits only grow (a receiver never takes back window); an older, smaller one arrived late.
                _peerLimit = windowLimit;
                if (_peerLimit > _sndNxt)
                    _probeDue = long.MaxValue;
            }

            long delivered = 0;
            SentSegment? newest = null;
            if (cumulative > _sndUna || (finReceived && !_finAcked))
            {
                while (SegmentCount > 0)
                {
                    var segment = SegmentAt(0);
                    if (segment.End > cumulative || (segment.Fin && !finReceived))
                    {
                        if (cumulative > segment.Offset)
                            Trim(segment, cumulative - segment.Offset, ref delivered);
                        break;
                    }
                    if (segment.State != SegmentState.Sacked)
                    {
                        delivered += segment.Length;
                        newest = Newer(newest, segment);
                        NoteSpurious(segment, now);
                    }
                    if (segment.State == SegmentState.InFlight)
                        RemoveFlight(segment);
                    segment.State = SegmentState.Sacked; // leaves the lost queue lazily
                    PopSegment();
                }
                if (cumulative > _sndUna)
                {
                    _sndUna = cumulative;
                    _sendBuffer?.Advance(cumulative);
                }
                if (finReceived)
                    _finAcked = true;
            }
            foreach (var block in blocks)
            {
                for (var index = FirstSegmentAtOrAfter(block.Start); index < SegmentCount; index++)
                {
                    var segment = SegmentAt(index);
                    if (segment.End > block.End)
                        break;
                    if (segment.State == SegmentState.Sacked)
                        continue;
                    NoteSpurious(segment, now);
                    if (segment.State == SegmentState.InFlight)
                        RemoveFlight(segment);
                    segment.State = SegmentState.Sacked;
                    delivered += segment.Length;
                    newest = Newer(newest, segment);
                }
            }

            if (newest is not null)
            {
                var sample = now - newest.SentAt;
                // Karn: a retransmitted segment's round trip is ambiguous.
                if (newest.Transmissions == 1)
                    _rtt.Sample(sample);
                // RACK may still use it if it cannot be the original's acknowledgement (faster than any round trip).
                if ((newest.Transmissions == 1 || sample >= _rtt.Min) && newest.TxSeq > _rackTxSeq)
                {
                    _rackTxSeq = newest.TxSeq;
                    _rackRtt = sample;
                }
            }
            if (delivered > 0 || newest is not null)
            {
                _rtoDue = SegmentCount > 0 ? now + _rtt.Rto : long.MaxValue;
                if (_sndUna >= _recoveryPoint)
                    _inFastRecovery = _inTimeoutRecovery = false;
                if (!_inFastRecovery)
                    _cc.OnDelivered(delivered, _windowLimited, now, _rtt.Smoothed);
                _tailProbeSent = false;
                ArmTailProbe(now);
            }
            if (_spuriousSeen)
                WidenReorderWindow();
            DetectLosses(now);
            if (SegmentCount == 0)
                _rtoDue = _tailProbeDue = long.MaxValue;
            if (_finAcked)
                _completion?.TrySetResult();
            FillFromPendingWrite();
            TrySendMore(now);
            CheckRetire();
            Reschedule(now);
        }
    }

    /// <summary>
    /// A segment delivered while presumed lost, or whose retransmission was acknowledged faster than any round
    /// trip: the original arrived after all, so the reordering window was too small.
    /// </summary>
    private void NoteSpurious(SentSegment segment, long now)
    {
        if (segment.State == SegmentState.Lost || (segment.Transmissions > 1 && now - segment.SentAt < _rtt.Min))
        {
            _spuriousSeen = true;
            _spuriousRetransmits++;
            if (_undoPossible && ++_episodeSpurious >= _episodeLost)
            {
                // Every loss this recovery responded to was reordering or a loss the link itself repaired: take the
                // window reduction back instead of paying for a congestion that never was.
                _undoPossible = false;
                _cc.Undo();
                _inFastRecovery = false;
                _recoveryPoint = _sndUna;
                _undos++;
                // A recovery that was not one does not count towards narrowing the reordering window again.
                if (_recoveriesSinceReorderChange > 0)
                    _recoveriesSinceReorderChange--;
            }
        }
    }

    private void WidenReorderWindow()
    {
        _spuriousSeen = false;
        // Each acknowledgement that shows a spurious retransmission widens it a step; it never exceeds the
        // smoothed RTT anyway. (Links that recover their own losses deliver a recovered frame a hop's round trip
        // late: such a path needs a wide window for as long as it loses frames.)
        if ((long)(_reorderMultiplier + 1) * (_rtt.Min / 4) <= _rtt.Smoothed)
            _reorderMultiplier++;
        _recoveriesSinceReorderChange = 0;
    }

    private static SentSegment Newer(SentSegment? current, SentSegment candidate) =>
        current is null || candidate.TxSeq > current.TxSeq ? candidate : current;

    /// <summary>The cumulative acknowledgement ends inside a segment (boundaries changed after a retarget): keep only the rest.</summary>
    private void Trim(SentSegment segment, long cut, ref long delivered)
    {
        if (segment.State != SegmentState.Sacked)
            delivered += cut;
        if (segment.State == SegmentState.InFlight)
            _pipe -= cut;
        segment.Offset += cut;
        segment.Length -= (int)cut;
    }

    private void PopSegment()
    {
        Recycle(_segments[_segmentsHead]);
        _segments[_segmentsHead++] = null!;
        if (_segmentsHead >= 64 && _segmentsHead * 2 >= _segments.Count)
        {
            _segments.RemoveRange(0, _segmentsHead);
            _segmentsHead = 0;
        }
    }

    /// <summary>Index of the first unacknowledged segment starting at or after <paramref name="offset"/>.</summary>
    private int FirstSegmentAtOrAfter(long offset)
    {
        int lo = 0, hi = SegmentCount;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (SegmentAt(mid).Offset < offset)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }

    /// <summary>
    /// RACK: every segment in flight that was sent before the most recently sent delivered one, and longer ago
    /// than that one's round trip plus a reordering window (a quarter of the minimum RTT), is lost. Segments
    /// not yet past the window arm the reordering timer.
    /// </summary>
    private void DetectLosses(long now)
    {
        _reorderDue = long.MaxValue;
        if (_rackTxSeq == 0)
            return;
        var reorderWindow = Math.Min(_reorderMultiplier * (_rtt.Min / 4), _rtt.Smoothed);
        for (var segment = _flightHead; segment is not null && segment.TxSeq < _rackTxSeq;)
        {
            var next = segment.Next;
            var deadline = segment.SentAt + _rackRtt + reorderWindow;
            if (deadline > now)
            {
                _reorderDue = deadline;
                break;
            }
            MarkLost(segment);
            _fastRetransmits++;
            if (segment.Offset >= _recoveryPoint)
            {
                // The first loss in a window not yet reduced for: multiplicative decrease, and resend at once.
                _cc.SaveForUndo();
                _windowReductions++;
                _undoPossible = true;
                _episodeLost = _episodeSpurious = 0;
                _cc.OnLoss(_sndNxt - _sndUna, now);
                if (++_recoveriesSinceReorderChange >= 16)
                {
                    _reorderMultiplier = 1;
                    _recoveriesSinceReorderChange = 0;
                }
                _inFastRecovery = true;
                _recoveryPoint = _sndNxt;
                _retransmitNow = true;
            }
            _episodeLost++;
            segment = next;
        }
    }

    private void MarkLost(SentSegment segment)
    {
        RemoveFlight(segment);
        segment.State = SegmentState.Lost;
        segment.Queued++;
        _lost.Enqueue(segment, segment.Offset);
    }

    /// <summary>RFC 6298 5.4–5.7: everything in flight is presumed lost; back off and start again from one segment.</summary>
    private void OnRetransmissionTimeout(long now)
    {
        _undoPossible = false;
        _rtoDue = long.MaxValue;
        if (SegmentCount == 0)
            return;
        _timeouts++;
        _cc.OnTimeout(_sndNxt - _sndUna, firstInARow: _rtt.Backoffs == 0, now);
        while (_flightHead is { } segment)
            MarkLost(segment);
        _inFastRecovery = false;
        _inTimeoutRecovery = true;
        _recoveryPoint = _sndNxt;
        _retransmitNow = true;
        _rtt.Backoff();
        _rtoDue = now + _rtt.Rto;
        _tailProbeDue = long.MaxValue;
    }

    /// <summary>The window probe: an empty data message makes the receiver answer with its current limit.</summary>
    private void OnProbeTimer(long now)
    {
        _probeDue = long.MaxValue;
        if (SegmentCount > 0 || _sndNxt < _peerLimit || _writeEnd == _sndNxt)
            return;
        var length = PathWire.WriteData(_scratch, Id, fin: false, _sndNxt, ReadOnlySpan<byte>.Empty);
        Send(PathMessageType.StreamData, length);
        // Keep probing often enough that an answering peer never looks dead.
        var cap = Math.Min(_options.MaxRto.Ticks, _failureTimeout / 3);
        _probeInterval = Math.Min(Math.Max(_probeInterval * 2, 1), cap);
        _probeDue = now + _probeInterval;
    }

    private void AppendFlight(SentSegment segment)
    {
        segment.Next = null;
        segment.Prev = _flightTail;
        if (_flightTail is null)
            _flightHead = segment;
        else
            _flightTail.Next = segment;
        _flightTail = segment;
        _pipe += segment.Length;
    }

    private void RemoveFlight(SentSegment segment)
    {
        if (segment.Prev is null)
            _flightHead = segment.Next;
        else
            segment.Prev.Next = segment.Next;
        if (segment.Next is null)
            _flightTail = segment.Prev;
        else
            segment.Next.Prev = segment.Prev;
        segment.Prev = segment.Next = null;
        _pipe -= segment.Length;
    }

    /// <summary>
    /// The endpoint moved to a new path. Every segment not known delivered is presumed lost and sent again on it,
    /// cut to the new path's segment size; the old path's round trip and window say nothing about the new one.
    /// </summary>
    internal void OnRetarget()
    {
        lock (_sync)
        {
            if (_retired || _failure is not null)
                return;
            var now = _endpoint.Now;
            _mss = _endpoint.SegmentSize;
            if (_scratch.Length < _endpoint.MessageRoom)
                _scratch = new byte[_endpoint.MessageRoom];
            var kept = new List<SentSegment>(SegmentCount);
            for (var index = 0; index < SegmentCount; index++)
            {
                var segment = SegmentAt(index);
                if (segment.State == SegmentState.Sacked)
                {
                    kept.Add(segment);
                    continue;
                }
                var offset = segment.Offset;
                var remaining = segment.Length;
                do
                {
                    var piece = Math.Min(remaining, _mss);
                    var replacement = NewSegment(offset, piece, segment.Fin && piece == remaining);
                    replacement.Transmissions = Math.Max(1, segment.Transmissions);
                    replacement.State = SegmentState.Lost;
                    kept.Add(replacement);
                    offset += piece;
                    remaining -= piece;
                }
                while (remaining > 0);
            }
            _segments.Clear();
            _segments.AddRange(kept);
            _segmentsHead = 0;
            _flightHead = _flightTail = null;
            _pipe = 0;
            // The replaced records are left to the collector: the queue entries that referred to them are gone.
            _lost.Clear();
            foreach (var segment in kept)
            {
                segment.Queued = 0;
                if (segment.State == SegmentState.Lost)
                {
                    segment.Queued = 1;
                    _lost.Enqueue(segment, segment.Offset);
                }
            }
            _rtt.Reset();
            _cc.Reset(_mss);
            _inFastRecovery = false;
            _inTimeoutRecovery = false;
            _tailProbeSent = false;
            _tailProbeDue = long.MaxValue;
            _reorderMultiplier = 1;
            _recoveryPoint = _sndNxt;
            _rackTxSeq = 0;
            _rackRtt = 0;
            _reorderDue = long.MaxValue;
            _rtoDue = SegmentCount > 0 ? now + _rtt.Rto : long.MaxValue;
            if (_probeDue != long.MaxValue)
                _probeDue = now;
            _livenessMark = now;
            // Tell the peer at once where this side's receiving stands, over the new path.
            if (_rcvNxt > 0 || _received.Count > 0 || _finalSize >= 0)
                SendAck();
            TrySendMore(now);
            Reschedule(now);
        }
    }

    private void ReleaseSendState()
    {
        _freeSegments.Clear();
        _sendBuffer?.Dispose();
        _sendBuffer = null;
        _segments.Clear();
        _segmentsHead = 0;
        _flightHead = _flightTail = null;
        _lost.Clear();
        _pipe = 0;
    }
}
