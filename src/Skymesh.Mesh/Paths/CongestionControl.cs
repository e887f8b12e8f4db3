namespace Skymesh.Mesh.Paths;

/// <summary>Which congestion controller a stream runs.</summary>
public enum CongestionAlgorithm
{
    /// <summary>CUBIC (RFC 9438): fills long, fast paths quickly and backs off by 30 % on loss. The default.</summary>
    Cubic,

    /// <summary>NewReno (RFC 5681, RFC 6582): one segment per round trip, halves on loss.</summary>
    NewReno,
}

/// <summary>
/// A congestion window in bytes. Slow start doubles it each round trip until the threshold; after that the
/// algorithm decides the growth; a loss shrinks it once per window of data, a retransmission timeout drops it
/// to one segment. It grows only while the sender is limited by it, so an idle or application-limited stream
/// does not build a window it never tested.
/// </summary>
internal abstract class CongestionController
{
    // A window no path needs; it only keeps the arithmetic far from overflow.
    protected const long MaxWindow = 1L << 30;

    protected CongestionController(int mss, int initialSegments)
    {
        Mss = mss;
        InitialSegments = initialSegments;
        Window = (long)mss * initialSegments;
        SlowStartThreshold = MaxWindow;
    }

    public static CongestionController Create(CongestionAlgorithm algorithm, int mss, int initialSegments) => algorithm switch
    {
        CongestionAlgorithm.NewReno => new NewReno(mss, initialSegments),
        _ => new Cubic(mss, initialSegments),
    };

    public long Window { get; protected set; }

    public long SlowStartThreshold { get; protected set; }

    public bool InSlowStart => Window < SlowStartThreshold;

    protected int Mss { get; private set; }

    protected int InitialSegments { get; }

    /// <summary>Starts over (a new path): initial window, no threshold.</summary>
    public virtual void Reset(int mss)
    {
        Mss = mss;
        Window = (long)mss * InitialSegments;
        SlowStartThreshold = MaxWindow;
    }

    /// <summary>
    /// Bytes newly acknowledged outside loss recovery, at <paramref name="now"/> (ticks) with the smoothed RTT
    /// <paramref name="rtt"/> (ticks); <paramref name="windowLimited"/> when the window was what held the sender back.
    /// </summary>
    public void OnDelivered(long bytes, bool windowLimited, long now, long rtt)
    {
        if (bytes <= 0)
            return;
        if (!windowLimited)
        {
            OnApplicationLimited(now);
            return;
        }
        if (InSlowStart)
        {
            // Appropriate byte counting (RFC 3465) with L = 2 segments per acknowledgement.
            Window = Math.Min(MaxWindow, Window + Math.Min(bytes, 2L * Mss));
            return;
        }
        GrowInAvoidance(bytes, now, rtt);
    }

    /// <summary>A loss detected by acknowledgements: multiplicative decrease, once per window of data.</summary>
    public abstract void OnLoss(long flight, long now);

    /// <summary>A retransmission timeout: everything in flight is presumed lost; start again from one segment.</summary>
    public void OnTimeout(long flight, bool firstInARow, long now)
    {
        if (firstInARow)
            OnLoss(flight, now);
        Window = Mss;
    }

    protected abstract void GrowInAvoidance(long bytes, long now, long rtt);

    protected virtual void OnApplicationLimited(long now)
    {
    }

    private long _undoWindow;
    private long _undoThreshold;

    /// <summary>Remembers the state before a loss response, so that <see cref="Undo"/> can take it back.</summary>
    public virtual void SaveForUndo()
    {
        _undoWindow = Window;
        _undoThreshold = SlowStartThreshold;
    }

    /// <summary>
    /// The losses responded to were not losses (every segment presumed lost arrived after all, late or reordered):
    /// the window and threshold go back to what they were, as RFC 4015 and Linux's undo do.
    /// </summary>
    public virtual void Undo()
    {
        Window = Math.Max(Window, _undoWindow);
        SlowStartThreshold = Math.Max(SlowStartThreshold, _undoThreshold);
    }
}

/// <summary>NewReno: congestion avoidance adds one segment per window acknowledged; a loss halves the window.</summary>
internal sealed class NewReno(int mss, int initialSegments) : CongestionController(mss, initialSegments)
{
    private long _avoidanceCredit;

    public override void Reset(int mss)
    {
        base.Reset(mss);
        _avoidanceCredit = 0;
    }

    public override void OnLoss(long flight, long now)
    {
        SlowStartThreshold = Math.Max(Math.Min(Window, flight) / 2, 2L * Mss);
        Window = SlowStartThreshold;
        _avoidanceCredit = 0;
    }

    protected override void GrowInAvoidance(long bytes, long now, long rtt)
    {
        _avoidanceCredit += bytes;
        if (_avoidanceCredit >= Window)
        {
            _avoidanceCredit -= Window;
            Window = Math.Min(MaxWindow, Window + Mss);
        }
    }
}

/// <summary>
/// CUBIC (RFC 9438). After a loss at window W_max the window shrinks to β·W_max (β = 0.7) and then follows
/// W(t) = C·(t − K)³ + W_max (C = 0.4 segments/s³, K the time to get back to W_max): fast while far below
/// the last loss, flat near it, probing faster again beyond it — so growth depends on time, not on the round
/// trip, and a long path fills as fast as a short one. Where Reno would grow faster (short round trips,
/// small windows) it follows Reno's estimate instead, so it is never less than fair to Reno flows.
/// </summary>
internal sealed class Cubic(int mss, int initialSegments) : CongestionController(mss, initialSegments)
{
    private const double C = 0.4;
    private const double Beta = 0.7;

    // Reno-friendly additive increase that matches Reno's average rate at β = 0.7 (RFC 9438 §4.3).
    private const double AlphaCubic = 3 * (1 - Beta) / (1 + Beta);

    // In segments and seconds.
    private double _wMax;
    private double _k;
    private double _wEstimate;
    private long _epochStart = -1;
    private long _lastUpdate;
    private double _growthCredit;

    public override void Reset(int mss)
    {
        base.Reset(mss);
        _wMax = 0;
        _k = 0;
        _epochStart = -1;
        _growthCredit = 0;
    }

    public override void OnLoss(long flight, long now)
    {
        var window = Window / (double)Mss;
        // Fast convergence: a loss below the previous maximum means the share shrank; give some up.
        _wMax = window < _wMax ? window * (1 + Beta) / 2 : window;
        var reduced = Math.Max(Math.Min(Window, Math.Max(flight, 2L * Mss)) * Beta, 2.0 * Mss);
        SlowStartThreshold = (long)reduced;
        Window = SlowStartThreshold;
        _epochStart = -1;
        _growthCredit = 0;
    }

    protected override void GrowInAvoidance(long bytes, long now, long rtt)
    {
        var mss = (double)Mss;
        var cwnd = Window / mss;
        if (_epochStart < 0)
        {
            // A new epoch: after a loss, or on leaving slow start without one.
            _epochStart = now;
            _wEstimate = cwnd;
            if (_wMax < cwnd)
                _wMax = cwnd;
            _k = Math.Cbrt((_wMax - cwnd) / C);
        }
        _lastUpdate = now;
        var t = (now - _epochStart) / (double)TimeSpan.TicksPerSecond;
        var rttSeconds = Math.Max(rtt, TimeSpan.TicksPerMillisecond) / (double)TimeSpan.TicksPerSecond;
        var acked = bytes / mss;
        _wEstimate += AlphaCubic * acked / cwnd;
        var cubic = C * Math.Pow(t - _k, 3) + _wMax;
        double increase;
        if (cubic < _wEstimate)
        {
            // Reno-friendly region.
            increase = Math.Max(0, _wEstimate - cwnd);
        }
        else
        {
            // Aim at where the curve will be one round trip from now, at most 1.5 times the window.
            var target = Math.Clamp(C * Math.Pow(t + rttSeconds - _k, 3) + _wMax, cwnd, 1.5 * cwnd);
            increase = (target - cwnd) / cwnd * acked;
        }
        _growthCredit += increase * mss;
        if (_growthCredit >= 1)
        {
            var whole = (long)_growthCredit;
            _growthCredit -= whole;
            Window = Math.Min(MaxWindow, Window + whole);
        }
    }

    private double _undoWMax;
    private double _undoK;
    private long _undoEpochStart;
    private double _undoEstimate;

    public override void SaveForUndo()
    {
        base.SaveForUndo();
        _undoWMax = _wMax;
        _undoK = _k;
        _undoEpochStart = _epochStart;
        _undoEstimate = _wEstimate;
    }

    public override void Undo()
    {
        base.Undo();
        _wMax = _undoWMax;
        _k = _undoK;
        _epochStart = _undoEpochStart;
        _wEstimate = _undoEstimate;
        _growthCredit = 0;
    }

    /// <summary>Time spent not using the window does not count toward the curve (RFC 9438 §5.8).</summary>
    protected override void OnApplicationLimited(long now)
    {
        if (_epochStart >= 0 && now > _lastUpdate)
            _epochStart += now - _lastUpdate;
        _lastUpdate = now;
    }
}
