using Skymesh.Identity;

namespace Skymesh.Control;

/// <summary>A record a node signs about itself and publishes on the control bus: numbered, dated, and void after it expires.</summary>
public interface ISignedNodeRecord
{
    NodeAddress Node { get; }

    /// <summary>Larger than every earlier record of the node.</summary>
    ulong Sequence { get; }

    DateTimeOffset Issued { get; }

    DateTimeOffset Expires { get; }

    /// <summary>Whether the signature is the node's, over the record.</summary>
    bool Verify();
}

/// <summary>
/// Why a record was refused, in the order both record kinds number their own reasons
/// (<c>AnnouncementError</c>, <c>ServiceRecordError</c>), which share these values.
/// </summary>
internal enum RecordVerdict
{
    None,
    Malformed,
    BadSignature,
    Expired,
    FromTheFuture,
    Stale,
    Replayed,
}

/// <summary>
/// The latest valid record of every node, for the link announcements (the topology graph) and the service records
/// alike. Offering a record does the cheap checks (time, sequence) before the signature and counts every refusal by
/// reason; once a node's record has expired, the node may number from anywhere again. Safe for one writer and many
/// readers at once; subclasses read <see cref="Held"/> under <see cref="Sync"/>.
/// </summary>
/// <typeparam name="TError">The record kind's refusal reasons, numbered as <see cref="RecordVerdict"/>.</typeparam>
public abstract class SignedRecordBook<TRecord, TError>
    where TRecord : class, ISignedNodeRecord
    where TError : struct, Enum
{
    private static readonly TError[] Reasons = Enum.GetValues<TError>();
    private readonly TimeSpan _clockTolerance;
    private readonly long[] _refused = new long[Reasons.Length];
    private long _accepted;

    protected SignedRecordBook(TimeProvider? time, TimeSpan? clockTolerance)
    {
        Time = time ?? TimeProvider.System;
        _clockTolerance = clockTolerance ?? TimeSpan.FromMinutes(1);
    }

    protected TimeProvider Time { get; }

    /// <summary>The records, by node; read and changed under <see cref="Sync"/>.</summary>
    protected Dictionary<NodeAddress, TRecord> Held { get; } = [];

    protected Lock Sync { get; } = new();

    public long Accepted => Interlocked.Read(ref _accepted);

    /// <summary>Records refused for <paramref name="reason"/>.</summary>
    public long Refused(TError reason) => Interlocked.Read(ref _refused[Convert.ToInt32(reason, System.Globalization.CultureInfo.InvariantCulture)]);

    /// <summary>Raised (on the thread that offered it) for every record accepted; handlers must not block.</summary>
    public event Action<TRecord>? RecordAccepted;

    /// <summary>Raised when a node's record is dropped because it left; handlers must not block.</summary>
    public event Action<NodeAddress>? NodeForgotten;

    /// <summary>Records held, one per node (expired ones until the next sweep included).</summary>
    public int Count
    {
        get
        {
            lock (Sync)
                return Held.Count;
        }
    }

    /// <summary>The latest record of every node (expired ones until the next sweep).</summary>
    public IReadOnlyList<TRecord> Records
    {
        get
        {
            lock (Sync)
                return [.. Held.Values];
        }
    }

    public TRecord? RecordOf(NodeAddress node)
    {
        lock (Sync)
            return Held.GetValueOrDefault(node);
    }

    /// <summary>Checks and keeps a record: refused when expired, from the future, stale, replayed, or not signed by its node.</summary>
    public TError Offer(TRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        var now = Time.GetUtcNow();
        if (record.Expires <= now)
            return Refuse(RecordVerdict.Expired);
        if (record.Issued > now + _clockTolerance)
            return Refuse(RecordVerdict.FromTheFuture);
        var previous = RecordOf(record.Node);
        if (previous is not null && previous.Expires > now)
        {
            if (record.Sequence < previous.Sequence)
                return Refuse(RecordVerdict.Stale);
            if (record.Sequence == previous.Sequence)
                return Refuse(RecordVerdict.Replayed);
        }
        if (!record.Verify())
            return Refuse(RecordVerdict.BadSignature);
        lock (Sync)
        {
            // Another record of the node may have been accepted while this one's signature was checked.
            if (Held.TryGetValue(record.Node, out var current) && current.Expires > now && current.Sequence >= record.Sequence)
                return Refuse(current.Sequence == record.Sequence ? RecordVerdict.Replayed : RecordVerdict.Stale);
            Held[record.Node] = record;
        }
        Interlocked.Increment(ref _accepted);
        RecordAccepted?.Invoke(record);
        return Reasons[(int)RecordVerdict.None];
    }

    /// <summary>Counts a record refused before it could be offered (it did not parse).</summary>
    protected TError Refuse(TError reason)
    {
        Interlocked.Increment(ref _refused[Convert.ToInt32(reason, System.Globalization.CultureInfo.InvariantCulture)]);
        return reason;
    }

    private TError Refuse(RecordVerdict verdict) => Refuse(Reasons[(int)verdict]);

    /// <summary>Drops a node's record (it left: its presence on the control bus ended).</summary>
    public bool Forget(NodeAddress node)
    {
        bool removed;
        lock (Sync)
            removed = Held.Remove(node);
        if (removed)
            NodeForgotten?.Invoke(node);
        return removed;
    }

    /// <summary>Drops expired records; returns how many.</summary>
    public int Sweep()
    {
        var now = Time.GetUtcNow();
        lock (Sync)
        {
            var expired = Held.Where(r => r.Value.Expires <= now).Select(r => r.Key).ToList();
            foreach (var node in expired)
                Held.Remove(node);
            return expired.Count;
        }
    }
}
