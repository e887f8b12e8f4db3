namespace Skymesh.Mesh.Paths;

/// <summary>
/// The receiver. Segments land in a bounded buffer at their offsets, in order or not; the ranges held above
/// the cumulative point are reported as SACK blocks. In-order data is acknowledged every second segment or
/// after the acknowledgement delay; anything out of order, duplicate, filling a hole or ending the stream is
/// acknowledged at once, so the sender learns of loss within one round trip. The advertised window limit is
/// what has been read plus the buffer size: data beyond it is refused, so memory stays bounded whatever the
/// peer sends.
/// </summary>
public sealed partial class ReliableStream
{
    // Holes the receiver keeps track of; a segment needing more is refused and comes again later.
    private const int MaxReceiveRanges = 1024;

    private readonly RangeSet _received;
    private SlidingBuffer? _receiveBuffer;

    // _rcvRead <= _rcvNxt: read by the application; received without a gap.
    private long _rcvRead;
    private long _rcvNxt;
    private long _finalSize = -1;
    private long _advertised;
    private long _lastArrival = -1;
    private int _unacknowledged;
    private long _ackDue = long.MaxValue;

    private long _segmentsReceived;
    private long _duplicateSegments;
    private long _acksSent;

    /// <summary>The peer ended its direction and every byte up to the end has arrived.</summary>
    private bool ReceiveFinished => _finalSize >= 0 && _rcvNxt == _finalSize;

    private long ReceiveLimit => _rcvRead + _options.ReceiveBufferSize;

    /// <summary>A data message for this stream from the peer.</summary>
    internal void OnData(bool fin, long offset, ReadOnlySpan<byte> data)
    {
        lock (_sync)
        {
            if (_failure is not null || _retired)
                return;
            var now = _endpoint.Now;
            _segmentsReceived++;
            var end = offset + data.Length;
            if (data.IsEmpty && !fin)
            {
                // A window probe.
                SendAck();
                Reschedule(now);
                return;
            }
            if (end > ReceiveLimit)
            {
                Dropped();
                SendAck();
                Reschedule(now);
                return;
            }
            var newEnd = false;
            if (fin)
            {
                // The end cannot move, nor fall below data already received.
                if (_finalSize >= 0 ? _finalSize != end : end < Math.Max(_rcvNxt, _received.Highest))
                {
                    Dropped();
                    return;
                }
                newEnd = _finalSize < 0;
                _finalSize = end;
            }
            else if (_finalSize >= 0 && end > _finalSize)
            {
                Dropped();
                return;
            }
            if (_disposed && end > _rcvNxt)
            {
                // New data for a stream the application closed: nobody will read it.
                AbortLocally(StreamCloseCode.Aborted, "closed by the application");
                return;
            }

            var inOrder = false;
            var filledHole = false;
            var duplicate = false;
            if (end > _rcvNxt)
            {
                var start = Math.Max(offset, _rcvNxt);
                var bytes = data[(int)(start - offset)..];
                if (start == _rcvNxt)
                {
                    ReceiveBuffer.Write(start, bytes);
                    _rcvNxt = end;
                    inOrder = true;
                    filledHole = _received.Count > 0 && _received[0].Start <= _rcvNxt;
                    while (_received.Count > 0 && _received[0].Start <= _rcvNxt)
                        _rcvNxt = _received.TakeFrom(_rcvNxt);
                }
                else
                {
                    var added = _received.Add(start, end);
                    if (added < 0)
                    {
                        Dropped();
                        SendAck();
                        Reschedule(now);
                        return;
                    }
                    if (added == 0)
                        duplicate = true;
                    else
                        ReceiveBuffer.Write(start, bytes);
                    _lastArrival = start;
                }
            }
            else if (!newEnd)
            {
                duplicate = true;
            }
            if (duplicate)
                _duplicateSegments++;

            DeliverToReader();
            if (!inOrder || filledHole || duplicate || newEnd || _received.Count > 0 || ReceiveFinished)
            {
                SendAck();
            }
            else if (++_unacknowledged >= 2)
            {
                SendAck();
            }
            else if (_ackDue == long.MaxValue)
            {
                _ackDue = now + _options.AckDelay.Ticks;
            }
            CheckRetire();
            Reschedule(now);
        }
    }

    private SlidingBuffer ReceiveBuffer => _receiveBuffer ??= new SlidingBuffer(_options.ReceiveBufferSize, _rcvRead);

    /// <summary>Hands arrived data (or the end) to a waiting read.</summary>
    private void DeliverToReader()
    {
        if (!_readWaiter.Active)
            return;
        var read = TakeReceived(_readWaiter.Buffer.Span);
        if (read > 0)
            _readWaiter.Complete(read);
        else if (ReceiveFinished)
            _readWaiter.Complete(0);
    }

    private int TakeReceived(Span<byte> destination)
    {
        var count = (int)Math.Min(_rcvNxt - _rcvRead, destination.Length);
        if (count <= 0 || _receiveBuffer is null)
            return 0;
        _receiveBuffer.Read(_rcvRead, destination[..count]);
        _rcvRead += count;
        _receiveBuffer.Advance(_rcvRead);
        return count;
    }

    /// <summary>
    /// After a read: if the window opened by a good share of the buffer since it was last advertised, say so
    /// (a sender stalled on a full window would otherwise wait for its probe).
    /// </summary>
    private void MaybeUpdateWindow()
    {
        if (_failure is not null || _retired || ReceiveFinished || _rcvNxt == 0)
            return;
        var threshold = Math.Min(_options.ReceiveBufferSize / 2, Math.Max(2L * _mss, _options.ReceiveBufferSize / 8));
        if (ReceiveLimit - _advertised >= threshold)
            SendAck();
    }

    /// <summary>
    /// Acknowledges: cumulative point, end flag, window limit and SACK blocks — first the one holding the latest
    /// out-of-order arrival (RFC 2018), then the lowest ones, which name the holes the sender must fill first.
    /// </summary>
    private void SendAck()
    {
        _unacknowledged = 0;
        _ackDue = long.MaxValue;
        Span<SackBlock> blocks = stackalloc SackBlock[PathWire.MaxSackBlocks];
        var room = Math.Min(PathWire.MaxSackBlocks, (_scratch.Length - PathWire.AckFixedLength) / PathWire.SackBlockLength);
        var count = 0;
        var first = _lastArrival >= _rcvNxt ? _received.IndexOf(_lastArrival) : -1;
        if (first >= 0)
            blocks[count++] = _received[first];
        for (var index = 0; index < _received.Count && count < room; index++)
        {
            if (index != first)
                blocks[count++] = _received[index];
        }
        _advertised = ReceiveLimit;
        var length = PathWire.WriteAck(_scratch, Id, ReceiveFinished, _rcvNxt, _advertised, blocks[..count]);
        Send(PathMessageType.StreamAck, length);
        _acksSent++;
    }

    private void ReleaseReceiveBuffer()
    {
        _receiveBuffer?.Dispose();
        _receiveBuffer = null;
        _rcvRead = _rcvNxt;
        _received.Clear();
    }
}
