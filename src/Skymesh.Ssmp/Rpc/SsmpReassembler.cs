namespace Skymesh.Ssmp.Rpc;

public sealed class SsmpReassemblerOptions
{
    /// <summary>Largest message accepted; a first fragment declaring more is dropped before anything is buffered.</summary>
    public int MaxMessageBytes { get; set; } = 1024 * 1024;

    /// <summary>Messages one sender may have half-delivered at once.</summary>
    public int MaxIncompletePerSender { get; set; } = 16;

    /// <summary>Bytes reserved for half-delivered messages from all senders together.</summary>
    public long MaxIncompleteBytes { get; set; } = 16L * 1024 * 1024;

    /// <summary>A message not complete this long after its first fragment is dropped.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(30);

    public void Validate()
    {
        if (MaxMessageBytes < 1 || MaxMessageBytes > SsmpChunking.MaxMessageLength)
            throw new ArgumentOutOfRangeException(nameof(MaxMessageBytes), MaxMessageBytes, $"Must be 1 to {SsmpChunking.MaxMessageLength}.");
        if (MaxIncompletePerSender < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxIncompletePerSender), MaxIncompletePerSender, "Must be at least 1.");
        if (MaxIncompleteBytes < MaxMessageBytes)
            throw new ArgumentOutOfRangeException(nameof(MaxIncompleteBytes), MaxIncompleteBytes, "Must hold at least one message of MaxMessageBytes.");
        if (Timeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(Timeout), Timeout, "Must be positive.");
    }
}

public enum ReassemblyStatus
{
    Complete,
    Pending,
    Dropped,
}

/// <summary>Why a fragment or a half-delivered message was thrown away; each is counted.</summary>
public enum ReassemblyDrop
{
    Malformed,
    TooLarge,
    TooManyIncomplete,
    OverBudget,
    Expired,
    Inconsistent,
}

/// <summary>
/// Puts fragmented messages back together, per sender, within fixed limits: a message's declared size is
/// checked and its room reserved before any byte of it is stored, so a hostile sender can neither make the
/// receiver allocate without bound nor crowd out other senders for longer than <see cref="SsmpReassemblerOptions.Timeout"/>.
/// </summary>
public sealed class SsmpReassembler
{
    private readonly SsmpReassemblerOptions _options;
    private readonly TimeProvider _time;
    private readonly Dictionary<(string From, uint Id), Partial> _partials = [];
    private readonly Dictionary<string, int> _perSender = new(StringComparer.Ordinal);
    private readonly long[] _drops = new long[Enum.GetValues<ReassemblyDrop>().Length];
    private readonly object _sync = new();
    private long _reserved;

    public SsmpReassembler(SsmpReassemblerOptions? options = null, TimeProvider? time = null)
    {
        _options = options ?? new SsmpReassemblerOptions();
        _options.Validate();
        _time = time ?? TimeProvider.System;
    }

    /// <summary>Half-delivered messages held now.</summary>
    public int Incomplete
    {
        get
        {
            lock (_sync)
                return _partials.Count;
        }
    }

    /// <summary>Bytes reserved for half-delivered messages now.</summary>
    public long ReservedBytes => Interlocked.Read(ref _reserved);

    public long Dropped(ReassemblyDrop reason) => Interlocked.Read(ref _drops[(int)reason]);

    /// <summary>Adds one fragment from <paramref name="from"/>; on <see cref="ReassemblyStatus.Complete"/>, <paramref name="message"/> is the whole message.</summary>
    public ReassemblyStatus Add(string from, ReadOnlySpan<byte> payload, out byte[]? message, out ReassemblyDrop drop)
    {
        message = null;
        drop = default;
        if (!SsmpChunking.TryReadHeader(payload, out var id, out var index, out var count, out var data))
            return Drop(ReassemblyDrop.Malformed, out drop);
        if (count == 1)
        {
            if (data.Length > _options.MaxMessageBytes)
                return Drop(ReassemblyDrop.TooLarge, out drop);
            message = data.ToArray();
            return ReassemblyStatus.Complete;
        }
        var capacity = (long)count * SsmpChunking.MaxFragmentData;
        if (capacity - (SsmpChunking.MaxFragmentData - 1) > _options.MaxMessageBytes)
            return Drop(ReassemblyDrop.TooLarge, out drop);
        var now = _time.GetTimestamp();
        lock (_sync)
        {
            ExpireUnderLock(now);
            var key = (from, id);
            if (!_partials.TryGetValue(key, out var partial))
            {
                _perSender.TryGetValue(from, out var held);
                if (held >= _options.MaxIncompletePerSender)
                    return Drop(ReassemblyDrop.TooManyIncomplete, out drop);
                if (_reserved + capacity > _options.MaxIncompleteBytes)
                    return Drop(ReassemblyDrop.OverBudget, out drop);
                partial = new Partial(count, capacity, now);
                _partials[key] = partial;
                _perSender[from] = held + 1;
                Interlocked.Add(ref _reserved, capacity);
            }
            if (partial.Count != count)
            {
                Remove(key, partial);
                return Drop(ReassemblyDrop.Inconsistent, out drop);
            }
            if (!partial.Received[index])
            {
                partial.Received[index] = true;
                partial.ReceivedCount++;
                data.CopyTo(partial.Buffer.AsSpan(index * SsmpChunking.MaxFragmentData));
                if (index == count - 1)
                    partial.Length = index * SsmpChunking.MaxFragmentData + data.Length;
            }
            if (partial.ReceivedCount < count)
                return ReassemblyStatus.Pending;
            Remove(key, partial);
            if (partial.Length > _options.MaxMessageBytes)
                return Drop(ReassemblyDrop.TooLarge, out drop);
            message = partial.Length == partial.Buffer.Length ? partial.Buffer : partial.Buffer.AsSpan(0, partial.Length).ToArray();
            return ReassemblyStatus.Complete;
        }
    }

    /// <summary>Drops half-delivered messages older than the timeout (also done on every <see cref="Add"/>).</summary>
    public void Sweep()
    {
        lock (_sync)
            ExpireUnderLock(_time.GetTimestamp());
    }

    private void ExpireUnderLock(long now)
    {
        if (_partials.Count == 0)
            return;
        List<(string, uint)>? expired = null;
        foreach (var (key, partial) in _partials)
        {
            if (_time.GetElapsedTime(partial.Started, now) >= _options.Timeout)
                (expired ??= []).Add(key);
        }
        if (expired is null)
            return;
        foreach (var key in expired)
        {
            Remove(key, _partials[key]);
            Interlocked.Increment(ref _drops[(int)ReassemblyDrop.Expired]);
        }
    }

    private void Remove((string From, uint Id) key, Partial partial)
    {
        _partials.Remove(key);
        Interlocked.Add(ref _reserved, -partial.Capacity);
        if (--CollectionsMarshalRef(key.From) == 0)
            _perSender.Remove(key.From);
    }

    private ref int CollectionsMarshalRef(string from) =>
        ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_perSender, from);

    private ReassemblyStatus Drop(ReassemblyDrop reason, out ReassemblyDrop drop)
    {
        drop = reason;
        Interlocked.Increment(ref _drops[(int)reason]);
        return ReassemblyStatus.Dropped;
    }

    private sealed class Partial(int count, long capacity, long started)
    {
        public int Count { get; } = count;
        public long Capacity { get; } = capacity;
        public long Started { get; } = started;
        public byte[] Buffer { get; } = new byte[capacity];
        public bool[] Received { get; } = new bool[count];
        public int ReceivedCount { get; set; }
        public int Length { get; set; }
    }
}
