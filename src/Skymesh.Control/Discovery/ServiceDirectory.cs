using Skymesh.Identity;

namespace Skymesh.Control.Discovery;

/// <summary>
/// The services of the mesh as the records describe them: the latest valid record of every node. Offering a record does
/// the cheap checks (form, time, sequence) before the signature, and counts every refusal by reason. A record with no
/// entries is kept like any other — it withdraws the node's earlier offers, and its sequence number keeps those from
/// being replayed. Safe for one writer and many readers at once.
/// </summary>
public sealed class ServiceDirectory
{
    private readonly TimeProvider _time;
    private readonly TimeSpan _clockTolerance;
    private readonly Dictionary<NodeAddress, ServiceRecord> _records = [];
    private readonly Lock _lock = new();
    private readonly long[] _refused = new long[Enum.GetValues<ServiceRecordError>().Length];
    private long _accepted;

    public ServiceDirectory(TimeProvider? time = null, TimeSpan? clockTolerance = null)
    {
        _time = time ?? TimeProvider.System;
        _clockTolerance = clockTolerance ?? TimeSpan.FromMinutes(1);
    }

    public long Accepted => Interlocked.Read(ref _accepted);

    /// <summary>Records refused for <paramref name="reason"/>.</summary>
    public long Refused(ServiceRecordError reason) => Interlocked.Read(ref _refused[(int)reason]);

    /// <summary>Raised (on the thread that offered it) for every record accepted; handlers must not block.</summary>
    public event Action<ServiceRecord>? RecordAccepted;

    /// <summary>Raised when a node's record is dropped because it left; handlers must not block.</summary>
    public event Action<NodeAddress>? NodeForgotten;

    /// <summary>Records held, one per node (withdrawals and expired ones until the next sweep included).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
                return _records.Count;
        }
    }

    /// <summary>The latest record of every node (expired ones until the next sweep).</summary>
    public IReadOnlyList<ServiceRecord> Records
    {
        get
        {
            lock (_lock)
                return [.. _records.Values];
        }
    }

    public ServiceRecord? RecordOf(NodeAddress node)
    {
        lock (_lock)
            return _records.GetValueOrDefault(node);
    }

    /// <summary>Checks and keeps a record as it arrived off the wire.</summary>
    public ServiceRecordError Offer(ReadOnlySpan<byte> bytes)
    {
        var error = ServiceRecord.TryParse(bytes, out var record);
        return error != ServiceRecordError.None ? Refuse(error) : Offer(record!);
    }

    public ServiceRecordError Offer(ServiceRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        var now = _time.GetUtcNow();
        if (record.Expires <= now)
            return Refuse(ServiceRecordError.Expired);
        if (record.Issued > now + _clockTolerance)
            return Refuse(ServiceRecordError.FromTheFuture);
        var previous = RecordOf(record.Node);
        if (previous is not null && previous.Expires > now)
        {
            if (record.Sequence < previous.Sequence)
                return Refuse(ServiceRecordError.Stale);
            if (record.Sequence == previous.Sequence)
                return Refuse(ServiceRecordError.Replayed);
        }
        if (!record.Verify())
            return Refuse(ServiceRecordError.BadSignature);
        lock (_lock)
        {
            // Another record of the node may have been accepted while this one's signature was checked.
            if (_records.TryGetValue(record.Node, out var current) && current.Expires > now && current.Sequence >= record.Sequence)
                return Refuse(current.Sequence == record.Sequence ? ServiceRecordError.Replayed : ServiceRecordError.Stale);
            _records[record.Node] = record;
        }
        Interlocked.Increment(ref _accepted);
        RecordAccepted?.Invoke(record);
        return ServiceRecordError.None;
    }

    private ServiceRecordError Refuse(ServiceRecordError error)
    {
        Interlocked.Increment(ref _refused[(int)error]);
        return error;
    }

    /// <summary>Drops a node's record (it left: its presence on the control bus ended).</summary>
    public bool Forget(NodeAddress node)
    {
        bool removed;
        lock (_lock)
            removed = _records.Remove(node);
        if (removed)
            NodeForgotten?.Invoke(node);
        return removed;
    }

    /// <summary>Drops expired records; returns how many.</summary>
    public int Sweep()
    {
        var now = _time.GetUtcNow();
        lock (_lock)
        {
            var expired = _records.Where(r => r.Value.Expires <= now).Select(r => r.Key).ToList();
            foreach (var node in expired)
                _records.Remove(node);
            return expired.Count;
        }
    }

    /// <summary>Every offer in an unexpired record that matches <paramref name="kind"/> and <paramref name="name"/> (null: any).</summary>
    public IReadOnlyList<(ServiceRecord Record, ServiceEntry Entry)> Matching(ServiceKind? kind = null, string? name = null)
    {
        var now = _time.GetUtcNow();
        var matching = new List<(ServiceRecord, ServiceEntry)>();
        lock (_lock)
        {
            foreach (var record in _records.Values)
            {
                if (record.Expires <= now)
                    continue;
                foreach (var entry in record.Entries)
                {
                    if ((kind is null || entry.Kind == kind) && (name is null || string.Equals(entry.Name, name, StringComparison.Ordinal)))
                        matching.Add((record, entry));
                }
            }
        }
        return matching;
    }
}
