namespace Skymesh.Sim;

/// <summary>
/// A clock that moves only when told (<see cref="AdvanceTo"/>): every timer, delay and timeout of every node of a
/// simulated mesh runs on it. Timers fire in order of due time, and timers due at the same instant in the order they
/// were set, so a run is the same every time. Not a test double: the simulator's clock.
/// </summary>
public sealed class VirtualTime : TimeProvider
{
    private readonly Lock _lock = new();
    private readonly PriorityQueue<VirtualTimer, (long Due, long Order)> _timers = new();
    private readonly DateTimeOffset _epoch;
    private long _now;
    private long _order;

    /// <param name="start">The wall-clock time the simulation starts at (fixed, so runs repeat).</param>
    public VirtualTime(DateTimeOffset start) => _epoch = start;

    /// <summary>Virtual time since the start.</summary>
    public TimeSpan Elapsed
    {
        get
        {
            lock (_lock)
                return TimeSpan.FromTicks(_now);
        }
    }

    /// <summary>Timers waiting to fire.</summary>
    public int Pending
    {
        get
        {
            lock (_lock)
                return _timers.Count;
        }
    }

    public override DateTimeOffset GetUtcNow() => _epoch + Elapsed;

    public override long GetTimestamp()
    {
        lock (_lock)
            return _now;
    }

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ArgumentNullException.ThrowIfNull(callback);
        var timer = new VirtualTimer(this, callback, state);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>When the next timer fires (virtual time since the start), or null when none is set.</summary>
    public TimeSpan? NextDue
    {
        get
        {
            lock (_lock)
            {
                DropStale();
                return _timers.TryPeek(out _, out var key) ? TimeSpan.FromTicks(key.Due) : null;
            }
        }
    }

    /// <summary>
    /// Moves the clock to <paramref name="until"/> (virtual time since the start), firing every timer due on the way,
    /// each at its own due time, on the calling thread.
    /// </summary>
    public void AdvanceTo(TimeSpan until)
    {
        while (true)
        {
            VirtualTimer timer;
            lock (_lock)
            {
                DropStale();
                if (!_timers.TryPeek(out timer!, out var key) || key.Due > until.Ticks)
                {
                    _now = Math.Max(_now, until.Ticks);
                    return;
                }
                _timers.Dequeue();
                _now = Math.Max(_now, key.Due);
                timer.Fired(_now);
            }
            timer.Invoke();
        }
    }

    // Under _lock: drops timers changed or disposed since they were queued.
    private void DropStale()
    {
        while (_timers.TryPeek(out var timer, out var key) && (timer.QueuedDue != key.Due || timer.QueuedOrder != key.Order))
            _timers.Dequeue();
    }

    private void Schedule(VirtualTimer timer, long due)
    {
        lock (_lock)
        {
            var key = (Math.Max(due, _now), _order++);
            timer.QueuedDue = key.Item1;
            timer.QueuedOrder = key.Item2;
            _timers.Enqueue(timer, key);
        }
    }

    private sealed class VirtualTimer(VirtualTime clock, TimerCallback callback, object? state) : ITimer
    {
        private long _period = -1;

        // The key of this timer's live entry in the queue (-1: none); older entries are stale and skipped.
        public long QueuedDue { get; set; } = -1;

        public long QueuedOrder { get; set; } = -1;

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (clock._lock)
            {
                QueuedDue = -1;
                QueuedOrder = -1;
                _period = period == Timeout.InfiniteTimeSpan || period <= TimeSpan.Zero ? -1 : period.Ticks;
                if (dueTime == Timeout.InfiniteTimeSpan)
                    return true;
                clock.Schedule(this, clock._now + Math.Max(0, dueTime.Ticks));
            }
            return true;
        }

        // Under the clock's lock, as the timer leaves the queue: a periodic timer is set again.
        public void Fired(long now)
        {
            QueuedDue = -1;
            QueuedOrder = -1;
            if (_period > 0)
                clock.Schedule(this, now + _period);
        }

        public void Invoke() => callback(state);

        public void Dispose()
        {
            lock (clock._lock)
            {
                QueuedDue = -1;
                QueuedOrder = -1;
                _period = -1;
            }
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
