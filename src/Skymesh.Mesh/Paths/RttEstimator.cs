namespace Skymesh.Mesh.Paths;

/// <summary>
/// Round-trip time and retransmission timeout as RFC 6298 computes them, in <see cref="TimeSpan"/> ticks:
/// SRTT and RTTVAR from samples (never from retransmitted segments: Karn), RTO = SRTT + max(G, 4·RTTVAR)
/// clamped to [min, max], doubled on each timeout until a new sample arrives.
/// </summary>
internal sealed class RttEstimator
{
    // Clock granularity G: timers here are no finer than a millisecond.
    private const long Granularity = TimeSpan.TicksPerMillisecond;

    private readonly long _initialRto;
    private readonly long _minRto;
    private readonly long _maxRto;
    private long _baseRto;

    public RttEstimator(long initialRto, long minRto, long maxRto)
    {
        _initialRto = initialRto;
        _minRto = minRto;
        _maxRto = maxRto;
        _baseRto = initialRto;
    }

    public long Smoothed { get; private set; }

    public long Variation { get; private set; }

    /// <summary>Smallest sample seen on this path; 0 before the first.</summary>
    public long Min { get; private set; }

    public bool HasSample => Smoothed > 0;

    /// <summary>Timeouts in a row without a new sample (each doubles <see cref="Rto"/>).</summary>
    public int Backoffs { get; private set; }

    public long Rto => Math.Min(_maxRto, Backoffs >= 30 ? _maxRto : _baseRto << Backoffs);

    public void Sample(long rtt)
    {
        rtt = Math.Max(rtt, 1);
        if (!HasSample)
        {
            Smoothed = rtt;
            Variation = rtt / 2;
            Min = rtt;
        }
        else
        {
            Variation = (3 * Variation + Math.Abs(Smoothed - rtt)) / 4;
            Smoothed = (7 * Smoothed + rtt) / 8;
            Min = Math.Min(Min, rtt);
        }
        _baseRto = Math.Clamp(Smoothed + Math.Max(Granularity, 4 * Variation), _minRto, _maxRto);
        Backoffs = 0;
    }

    public void Backoff()
    {
        if (Rto < _maxRto)
            Backoffs++;
    }

    /// <summary>Forgets the path (after a retarget): the next path's RTT is unknown.</summary>
    public void Reset()
    {
        Smoothed = 0;
        Variation = 0;
        Min = 0;
        Backoffs = 0;
        _baseRto = _initialRto;
    }
}
