namespace Skymesh.Ssmp.Rpc;

/// <summary>
/// Remembers which requests a peer has started or answered, keyed by (caller, request id), so that a retried
/// request neither runs its handler twice nor goes unanswered. Bounded in count and in age.
/// </summary>
internal sealed class ResponseCache(int capacity, TimeSpan lifetime, TimeProvider time)
{
    public enum State
    {
        New,
        InProgress,
        Answered,
    }

    private readonly Dictionary<(string, ulong), Entry> _entries = [];
    private readonly Queue<((string, ulong) Key, long Added)> _order = new();
    private readonly object _sync = new();

    /// <summary>Records that a request is being handled, unless it already is or was.</summary>
    public State Begin(string from, ulong id, out byte[]? response)
    {
        response = null;
        if (capacity == 0)
            return State.New;
        var now = time.GetTimestamp();
        lock (_sync)
        {
            Trim(now);
            if (_entries.TryGetValue((from, id), out var entry))
            {
                response = entry.Response;
                return response is null ? State.InProgress : State.Answered;
            }
            _entries[(from, id)] = new Entry();
            _order.Enqueue(((from, id), now));
            return State.New;
        }
    }

    public void Complete(string from, ulong id, byte[] response)
    {
        lock (_sync)
        {
            if (_entries.TryGetValue((from, id), out var entry))
                entry.Response = response;
        }
    }

    public void Forget(string from, ulong id)
    {
        lock (_sync)
            _entries.Remove((from, id));
    }

    private void Trim(long now)
    {
        while (_order.TryPeek(out var head) && (_order.Count >= capacity || time.GetElapsedTime(head.Added, now) >= lifetime))
        {
            _order.Dequeue();
            _entries.Remove(head.Key);
        }
    }

    private sealed class Entry
    {
        public byte[]? Response { get; set; }
    }
}
