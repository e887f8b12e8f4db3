using Skymesh.Identity;

namespace Skymesh.Mesh.Paths;

/// <summary>
/// One reliable, ordered byte stream in each direction between the two ends of a path (docs/architecture.md):
/// data numbered by 64-bit byte offsets, cumulative and selective acknowledgements, retransmission on an
/// RTT-based timer and on SACK-based loss detection, NewReno congestion control and a receive window. Several
/// streams share a path; <see cref="PathEndpoint"/> multiplexes them by stream id.
/// <para>
/// One lock guards the stream's state. Everything runs under it — application calls, arriving messages (on
/// the receive loop) and the stream's one timer — and nothing under it blocks or runs application code.
/// </para>
/// <para>
/// Files: this one holds the application's side and the lifetime; <c>ReliableStream.Send.cs</c> the sender
/// (scoreboard, loss detection, congestion control); <c>ReliableStream.Receive.cs</c> the receiver.
/// </para>
/// </summary>
public sealed partial class ReliableStream : IAsyncDisposable
{
    private readonly PathEndpoint _endpoint;
    private readonly PathEndpointOptions _options;
    private readonly Lock _sync = new();
    private readonly ITimer _timer;
    private readonly ReadWaiter _readWaiter = new();
    private readonly WriteWaiter _writeWaiter = new();
    private readonly long _failureTimeout;
    private long _timerDue = long.MaxValue;
    private long _activityAtLastCheck = -1;
    private byte[] _scratch;

    // Set once the stream can no longer carry data: the path broke, or it was aborted (either side).
    private Exception? _failure;

    // Gone from the endpoint's table; its timer is disposed.
    private bool _retired;
    private bool _disposed;

    // An abort of ours waiting for the peer to confirm it.
    private bool _closing;
    private long _closeDue = long.MaxValue;
    private long _closeInterval;
    private StreamCloseCode _closeCode;
    private string _closeReason = "";

    internal ReliableStream(PathEndpoint endpoint, uint id, bool openedLocally)
    {
        _endpoint = endpoint;
        _options = endpoint.Options;
        Id = id;
        OpenedLocally = openedLocally;
        _failureTimeout = _options.FailureTimeout.Ticks;
        _mss = endpoint.SegmentSize;
        _scratch = new byte[endpoint.MessageRoom];
        _rtt = new RttEstimator(_options.InitialRto.Ticks, _options.MinRto.Ticks, _options.MaxRto.Ticks);
        _cc = CongestionController.Create(_options.CongestionControl, _mss, _options.InitialWindowSegments);
        // Until the peer's first acknowledgement says otherwise, assume the smallest window any peer allows:
        // enough for the initial congestion window, so a new stream's first round trip is not held back.
        _peerLimit = PathEndpointOptions.MinReceiveBuffer;
        _received = new RangeSet(MaxReceiveRanges);
        _timer = endpoint.Time.CreateTimer(static state => ((ReliableStream)state!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>The stream id on this path: odd when the path's initiator opened it, even otherwise.</summary>
    public uint Id { get; }

    /// <summary>True when this end opened the stream, false when it was accepted from the peer.</summary>
    public bool OpenedLocally { get; }

    /// <summary>Why the stream stopped, or null while it works.</summary>
    public Exception? Failure
    {
        get
        {
            lock (_sync)
                return _failure;
        }
    }

    public StreamCounters Counters
    {
        get
        {
            lock (_sync)
            {
                return new StreamCounters
                {
                    BytesSent = _bytesSent,
                    BytesReceived = _rcvNxt,
                    SegmentsSent = _segmentsSent,
                    SegmentsRetransmitted = _segmentsRetransmitted,
                    BytesRetransmitted = _bytesRetransmitted,
                    FastRetransmits = _fastRetransmits,
                    SpuriousRetransmits = _spuriousRetransmits,
                    Undos = _undos,
                    WindowReductions = _windowReductions,
                    TailProbes = _tailProbes,
                    Timeouts = _timeouts,
                    SegmentsReceived = _segmentsReceived,
                    DuplicateSegments = _duplicateSegments,
                    AcksSent = _acksSent,
                    AcksReceived = _acksReceived,
                    MessagesDropped = _messagesDropped,
                    CongestionWindow = _cc.Window,
                    SlowStartThreshold = _cc.SlowStartThreshold,
                    BytesInFlight = _pipe,
                    SmoothedRtt = TimeSpan.FromTicks(_rtt.Smoothed),
                    RetransmissionTimeout = TimeSpan.FromTicks(_rtt.Rto),
                    PeerWindow = Math.Max(0, _peerLimit - _sndNxt),
                    BufferBytesHeld = (_sendBuffer?.BytesHeld ?? 0) + (_receiveBuffer?.BytesHeld ?? 0),
                };
            }
        }
    }

    /// <summary>
    /// Queues <paramref name="data"/> for sending. Completes as soon as all of it is in the send buffer (not
    /// when it is acknowledged); waits while the buffer is full. If cancelled while waiting, the part already
    /// buffered is still sent. Throws <see cref="PathBrokenException"/> or <see cref="StreamAbortedException"/>
    /// once the stream has failed.
    /// </summary>
    public ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        lock (_sync)
        {
            if (_failure is not null)
                return ValueTask.FromException(_failure);
            if (_finRequested || _disposed)
                return ValueTask.FromException(new InvalidOperationException("The stream was completed; nothing more can be written to it."));
            if (_writeWaiter.Active)
                return ValueTask.FromException(new InvalidOperationException("A write is already pending on this stream."));
            if (data.IsEmpty)
                return ValueTask.CompletedTask;
            if (cancellationToken.IsCancellationRequested)
                return ValueTask.FromCanceled(cancellationToken);
            var now = _endpoint.Now;
            var written = Append(data.Span);
            TrySendMore(now);
            Reschedule(now);
            if (written == data.Length)
                return ValueTask.CompletedTask;
            var pending = _writeWaiter.Start(data[written..], cancellationToken);
            if (cancellationToken.CanBeCanceled)
                _writeWaiter.Watch(cancellationToken.UnsafeRegister(static (state, token) => ((ReliableStream)state!).CancelWrite(token), this));
            return pending;
        }
    }

    /// <summary>
    /// Reads what has arrived in order, up to <paramref name="buffer"/>'s length, waiting until something has.
    /// Returns 0 at the end of the stream (the peer completed it). Data that arrived before a failure is
    /// still returned; then the failure is thrown. An empty buffer returns 0 at once.
    /// </summary>
    public ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.IsEmpty)
            return ValueTask.FromResult(0);
        lock (_sync)
        {
            if (_readWaiter.Active)
                return ValueTask.FromException<int>(new InvalidOperationException("A read is already pending on this stream."));
            if (_disposed)
                return ValueTask.FromException<int>(new ObjectDisposedException(nameof(ReliableStream)));
            var read = TakeReceived(buffer.Span);
            if (read > 0)
            {
                var now = _endpoint.Now;
                MaybeUpdateWindow();
                Reschedule(now);
                return ValueTask.FromResult(read);
            }
            if (ReceiveFinished)
                return ValueTask.FromResult(0);
            if (_failure is not null)
                return ValueTask.FromException<int>(_failure);
            if (cancellationToken.IsCancellationRequested)
                return ValueTask.FromCanceled<int>(cancellationToken);
            var pending = _readWaiter.Start(buffer, cancellationToken);
            if (cancellationToken.CanBeCanceled)
                _readWaiter.Watch(cancellationToken.UnsafeRegister(static (state, token) => ((ReliableStream)state!).CancelRead(token), this));
            return pending;
        }
    }

    /// <summary>
    /// Ends the sending direction: after everything written, the peer reads the end of the stream. Completes
    /// when the peer has acknowledged all data and the end (confirmed close), or throws if the stream fails
    /// first. Cancelling stops the wait, not the close. Reading goes on until the peer completes its side.
    /// </summary>
    public Task CompleteAsync(CancellationToken cancellationToken = default)
    {
        lock (_sync)
        {
            if (_completion is null)
            {
                if (_writeWaiter.Active)
                    return Task.FromException(new InvalidOperationException("A write is still pending on this stream."));
                _completion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                if (_failure is not null)
                {
                    _completion.SetException(_failure);
                }
                else
                {
                    _finRequested = true;
                    var now = _endpoint.Now;
                    TrySendMore(now);
                    Reschedule(now);
                }
            }
            return Background.WaitAsync(_completion.Task, cancellationToken);
        }
    }

    /// <summary>
    /// Abandons the stream in both directions: pending and later reads and writes throw
    /// <see cref="StreamAbortedException"/>, unread data is discarded, and the peer is told (until it confirms).
    /// </summary>
    public void Abort(string reason = "aborted")
    {
        ArgumentNullException.ThrowIfNull(reason);
        lock (_sync)
            AbortLocally(StreamCloseCode.Aborted, reason);
    }

    /// <summary>A <see cref="System.IO.Stream"/> over this stream, for code that wants one (port forwarding, SOCKS).</summary>
    public Stream AsStream() => new ReliableStreamAdapter(this);

    /// <summary>
    /// Closes the stream the way a socket closes: if unread data remains, it aborts; otherwise it completes the
    /// sending direction (without waiting for the confirmation) and refuses data that arrives afterwards.
    /// </summary>
    public ValueTask DisposeAsync()
    {
        Close();
        return ValueTask.CompletedTask;
    }

    internal void Close()
    {
        lock (_sync)
        {
            if (_disposed)
                return;
            _disposed = true;
            if (_failure is null && !_retired)
            {
                if (_rcvRead < _rcvNxt || _writeWaiter.Active)
                {
                    AbortLocally(StreamCloseCode.Aborted, "closed with unread data");
                }
                else
                {
                    _finRequested = true;
                    var now = _endpoint.Now;
                    TrySendMore(now);
                    CheckRetire();
                    Reschedule(now);
                }
            }
            if (_retired || _failure is not null)
                ReleaseReceiveBuffer();
        }
    }

    public override string ToString() => $"stream {Id}";

    /// <summary>
    /// Called by the endpoint every few seconds: a stream that sent and received nothing since the last call
    /// gives its spare buffer chunks and segment records back, so a quiet stream holds only what it must.
    /// </summary>
    internal void ReleaseIdleMemory()
    {
        lock (_sync)
        {
            var activity = _segmentsSent + _segmentsReceived;
            if (activity == _activityAtLastCheck)
            {
                _sendBuffer?.ReleaseSpares();
                _receiveBuffer?.ReleaseSpares();
                _freeSegments.Clear();
            }
            _activityAtLastCheck = activity;
        }
    }

    private void CancelRead(CancellationToken token)
    {
        lock (_sync)
        {
            if (_readWaiter.Active && _readWaiter.Token == token)
                _readWaiter.Fail(new OperationCanceledException(token));
        }
    }

    private void CancelWrite(CancellationToken token)
    {
        lock (_sync)
        {
            if (_writeWaiter.Active && _writeWaiter.Token == token)
                _writeWaiter.Fail(new OperationCanceledException(token));
        }
    }

    /// <summary>The stream's one timer: acknowledgement delay, retransmission, reordering, probe, close and failure deadlines.</summary>
    private void OnTimer()
    {
        lock (_sync)
        {
            if (_retired)
                return;
            var now = _endpoint.Now;
            _timerDue = long.MaxValue;
            if (_closing)
            {
                OnCloseTimer(now);
                Reschedule(now);
                return;
            }
            if (_failure is not null)
                return;
            if (AwaitingAck && now - _livenessMark >= _failureTimeout)
            {
                Fail(new PathBrokenException(_options.PeerName, _options.FailureTimeout));
                return;
            }
            if (_ackDue <= now)
                SendAck();
            if (_reorderDue <= now)
                DetectLosses(now);
            if (_rtoDue <= now)
                OnRetransmissionTimeout(now);
            else if (_tailProbeDue <= now)
                OnTailProbe(now);
            if (_probeDue <= now)
                OnProbeTimer(now);
            TrySendMore(now);
            Reschedule(now);
        }
    }

    /// <summary>Points the one timer at the earliest deadline, touching it only when that changed.</summary>
    private void Reschedule(long now)
    {
        if (_retired)
            return;
        var due = Math.Min(Math.Min(Math.Min(_ackDue, _rtoDue), Math.Min(_reorderDue, _probeDue)), _tailProbeDue);
        if (_closing)
            due = Math.Min(_closeDue, _livenessMark + _failureTimeout);
        else if (_failure is not null)
            due = long.MaxValue;
        else if (AwaitingAck)
            due = Math.Min(due, _livenessMark + _failureTimeout);
        if (due == _timerDue)
            return;
        _timerDue = due;
        // Whole milliseconds, rounded up: system timers have no finer resolution, and a delay rounded down to
        // zero would fire early and spin until the deadline.
        var delay = due == long.MaxValue
            ? Timeout.InfiniteTimeSpan
            : TimeSpan.FromMilliseconds(Math.Max(1, (due - now + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond));
        _timer.Change(delay, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Counts a refused message, here and on the endpoint.</summary>
    private void Dropped()
    {
        _messagesDropped++;
        _endpoint.CountDropped();
    }

    private void Send(PathMessageType type, int length) => _endpoint.Send((byte)type, _scratch.AsSpan(0, length));

    /// <summary>Marks the stream failed: every waiter and later call sees <paramref name="error"/>; nothing more is sent.</summary>
    private void SetFailed(Exception error)
    {
        if (_failure is not null)
            return;
        _failure = error;
        _ackDue = _rtoDue = _reorderDue = _probeDue = _tailProbeDue = long.MaxValue;
        if (_readWaiter.Active && _rcvRead == _rcvNxt)
            _readWaiter.Fail(error);
        if (_writeWaiter.Active)
            _writeWaiter.Fail(error);
        _completion?.TrySetException(error);
        ReleaseSendState();
    }

    /// <summary>The path broke, or the peer aborted: fail and leave the endpoint.</summary>
    internal void Fail(Exception error)
    {
        lock (_sync)
        {
            if (_retired && _failure is not null)
                return;
            SetFailed(error);
            _closing = false;
            Retire(finalSize: -1);
        }
    }

    private void AbortLocally(StreamCloseCode code, string reason)
    {
        if (_failure is not null || _retired)
            return;
        var now = _endpoint.Now;
        SetFailed(new StreamAbortedException(Id, byPeer: false, code, reason));
        ReleaseReceiveBuffer();
        if (_readWaiter.Active)
            _readWaiter.Fail(_failure!);
        _closing = true;
        _closeCode = code;
        _closeReason = reason;
        _livenessMark = now;
        _closeInterval = _rtt.Rto;
        SendClose(confirm: false);
        _closeDue = now + _closeInterval;
        Reschedule(now);
    }

    private void OnCloseTimer(long now)
    {
        if (now - _livenessMark >= _failureTimeout)
        {
            // The peer never confirmed; it will learn when it next sends (it gets a close back) or when its path times out.
            _closing = false;
            Retire(finalSize: -1);
            return;
        }
        if (_closeDue <= now)
        {
            SendClose(confirm: false);
            _closeInterval = Math.Min(_closeInterval * 2, _options.MaxRto.Ticks);
            _closeDue = now + _closeInterval;
        }
    }

    private void SendClose(bool confirm)
    {
        var length = PathWire.WriteClose(_scratch, Id, confirm, (ushort)_closeCode, _closeReason);
        Send(PathMessageType.StreamClose, length);
    }

    /// <summary>A close message for this stream from the peer.</summary>
    internal void OnClose(bool confirm, StreamCloseCode code, string reason)
    {
        lock (_sync)
        {
            if (confirm)
            {
                if (_closing)
                {
                    _closing = false;
                    Retire(finalSize: -1);
                }
                return;
            }
            _endpoint.SendClose(Id, confirm: true, code, "");
            if (_closing)
            {
                // Both ends aborted at once: each close confirms the other.
                _closing = false;
                Retire(finalSize: -1);
                return;
            }
            SetFailed(new StreamAbortedException(Id, byPeer: true, code, reason));
            Retire(finalSize: -1);
        }
    }

    /// <summary>The endpoint is shutting down: tell the peer once, fail, leave.</summary>
    internal void OnEndpointClosed()
    {
        lock (_sync)
        {
            if (_retired)
                return;
            if (_failure is null)
            {
                _closeCode = StreamCloseCode.EndpointClosed;
                _closeReason = "the path endpoint was closed";
                SendClose(confirm: false);
                SetFailed(new StreamAbortedException(Id, byPeer: false, _closeCode, _closeReason));
            }
            _closing = false;
            Retire(finalSize: -1);
        }
    }

    /// <summary>Leaves the endpoint's table once both directions are done (or the stream failed).</summary>
    private void CheckRetire()
    {
        if (!_retired && _failure is null && _finAcked && (ReceiveFinished || _disposed))
            Retire(ReceiveFinished ? _finalSize : -1);
    }

    private void Retire(long finalSize)
    {
        if (_retired)
            return;
        _retired = true;
        _timer.Dispose();
        _endpoint.Retire(this, finalSize);
        ReleaseSendState();
        if (_disposed)
            ReleaseReceiveBuffer();
    }
}
