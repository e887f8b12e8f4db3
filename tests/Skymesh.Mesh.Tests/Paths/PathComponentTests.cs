using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Paths;

public class PathComponentTests
{
    private static long Ms(double ms) => (long)(ms * TimeSpan.TicksPerMillisecond);

    [Fact]
    public void The_retransmission_timeout_follows_rfc_6298()
    {
        var rtt = new RttEstimator(Ms(1000), Ms(200), Ms(60_000));
        Assert.Equal(Ms(1000), rtt.Rto);
        rtt.Sample(Ms(100));
        // SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR.
        Assert.Equal((Ms(100), Ms(50), Ms(300)), (rtt.Smoothed, rtt.Variation, rtt.Rto));
        rtt.Sample(Ms(200));
        // RTTVAR = 3/4·50 + 1/4·|100 − 200| = 62.5; SRTT = 7/8·100 + 1/8·200 = 112.5.
        Assert.Equal((Ms(112.5), Ms(62.5), Ms(362.5)), (rtt.Smoothed, rtt.Variation, rtt.Rto));
    }

    [Fact]
    public void The_retransmission_timeout_stays_between_its_bounds_and_backs_off_by_doubling()
    {
        var rtt = new RttEstimator(Ms(1000), Ms(200), Ms(60_000));
        rtt.Sample(Ms(5));
        Assert.Equal(Ms(200), rtt.Rto);
        rtt.Backoff();
        Assert.Equal(Ms(400), rtt.Rto);
        for (var i = 0; i < 20; i++)
            rtt.Backoff();
        Assert.Equal(Ms(60_000), rtt.Rto);
        rtt.Sample(Ms(5));
        Assert.Equal(Ms(200), rtt.Rto);
    }

    [Fact]
    public void After_a_loss_cubic_is_back_at_its_old_window_after_about_k_seconds()
    {
        const int Mss = 1000;
        var cubic = CongestionController.Create(CongestionAlgorithm.Cubic, Mss, 100);
        cubic.OnLoss(100 * Mss, now: 0);
        Assert.Equal(70 * Mss, cubic.Window);
        // K = cbrt(W_max·(1 − β)/C) = cbrt(100·0.3/0.4) ≈ 4.22 s. Acknowledge a window every 100 ms.
        // One second in, the curve 100 − 0.4·(K − t)³ stands near 87 segments: fast growth far below W_max…
        var rtt = Ms(100);
        long now = 0;
        while (now < Ms(1100))
        {
            now += rtt;
            cubic.OnDelivered(cubic.Window, windowLimited: true, now, rtt);
        }
        Assert.InRange(cubic.Window, 82 * Mss, 92 * Mss);
        // …and flat near it: at K it is back, not far beyond.
        while (now < Ms(4400))
        {
            now += rtt;
            cubic.OnDelivered(cubic.Window, windowLimited: true, now, rtt);
        }
        Assert.InRange(cubic.Window, 99 * Mss, 106 * Mss);
    }

    [Fact]
    public void Newreno_halves_on_loss_adds_a_segment_per_window_and_restarts_from_one_after_a_timeout()
    {
        const int Mss = 1000;
        var reno = CongestionController.Create(CongestionAlgorithm.NewReno, Mss, 10);
        reno.OnDelivered(2 * Mss, windowLimited: true, 0, 0);
        Assert.Equal(12 * Mss, reno.Window); // slow start
        reno.OnDelivered(2 * Mss, windowLimited: false, 0, 0);
        Assert.Equal(12 * Mss, reno.Window); // not limited by the window: no growth
        reno.OnLoss(12 * Mss, 0);
        Assert.Equal(6 * Mss, reno.Window);
        reno.OnDelivered(6 * Mss, windowLimited: true, 0, 0);
        Assert.Equal(7 * Mss, reno.Window);
        reno.OnTimeout(7 * Mss, firstInARow: true, 0);
        Assert.Equal(Mss, reno.Window);
        Assert.Equal(3500, reno.SlowStartThreshold);
    }

    [Fact]
    public void The_sliding_buffer_reads_back_across_chunks_reuses_the_chunks_it_passed_and_gives_them_back_when_asked()
    {
        using var buffer = new SlidingBuffer(100_000, start: 10);
        var data = Enumerable.Range(0, 90_000).Select(i => (byte)(i * 7)).ToArray();
        buffer.Write(10, data);
        var back = new byte[data.Length];
        buffer.Read(10, back);
        Assert.Equal(data, back);
        var held = buffer.ChunksHeld;

        buffer.Advance(80_000);
        Assert.True(buffer.Spares > 0);
        buffer.Write(90_010, data.AsSpan(0, 80_000));
        var tail = new byte[10];
        buffer.Read(170_000, tail);
        Assert.Equal(data.AsSpan(79_990, 10).ToArray(), tail);
        // Bytes 10–90,010 sat in chunks 0–2; bytes up to 170,010 reach chunk 5. Chunks 0 and 1, left behind,
        // carried two of the three new ones: only one more was taken.
        Assert.Equal(3, held);
        Assert.Equal(held + 1, buffer.ChunksHeld);
        Assert.True(buffer.ChunksHeld <= 100_000 / 32_768 + 2);

        // Everything read: only the chunk holding the window's start stays once the spares are given back.
        buffer.Advance(170_010);
        Assert.Equal(3, buffer.Spares);
        buffer.ReleaseSpares();
        Assert.Equal(0, buffer.Spares);
        Assert.Equal(1, buffer.ChunksHeld);
    }

    [Fact]
    public void The_range_set_merges_overlapping_and_touching_ranges_and_refuses_past_its_limit()
    {
        var set = new RangeSet(2);
        Assert.Equal(10, set.Add(10, 20));
        Assert.Equal(10, set.Add(30, 40));
        Assert.Equal(-1, set.Add(50, 60));
        Assert.Equal(0, set.Add(12, 18));
        Assert.Equal(10, set.Add(20, 30)); // joins both
        Assert.Equal(1, set.Count);
        Assert.Equal(new SackBlock(10, 40), set[0]);
        Assert.Equal(0, set.IndexOf(39));
        Assert.Equal(-1, set.IndexOf(40));
        Assert.Equal(40, set.TakeFrom(10));
        Assert.Equal(0, set.Count);
    }
}
