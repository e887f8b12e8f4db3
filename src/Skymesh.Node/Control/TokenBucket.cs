namespace Skymesh.Node.Control;

/// <summary>Bytes a second, with a burst of one second's worth: what a node relays for others is bounded by it.</summary>
internal sealed class TokenBucket(int rate)
{
    private readonly Lock _lock = new();
    private double _tokens = rate;
    private long _last;

    /// <summary>Takes <paramref name="bytes"/>, going into debt if need be: how long the taker must wait it off.</summary>
    public TimeSpan Take(int bytes, long now, long frequency)
    {
        lock (_lock)
        {
            Refill(now, frequency);
            _tokens -= bytes;
            return _tokens >= 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(-_tokens / rate);
        }
    }

    /// <summary>Takes <paramref name="bytes"/> if there are that many now; false (nothing taken) if not, for what is dropped rather than delayed.</summary>
    public bool TryTake(int bytes, long now, long frequency)
    {
        lock (_lock)
        {
            Refill(now, frequency);
            if (_tokens < bytes)
                return false;
            _tokens -= bytes;
            return true;
        }
    }

    private void Refill(long now, long frequency)
    {
        if (_last != 0)
            _tokens = Math.Min(rate, _tokens + (now - _last) * (double)rate / frequency);
        _last = now;
    }
}
