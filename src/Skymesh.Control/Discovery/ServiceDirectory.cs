using Skymesh.Identity;

namespace Skymesh.Control.Discovery;

/// <summary>
/// The services of the mesh as the records describe them: the latest valid record of every node. Offering a record does
/// the cheap checks (form, time, sequence) before the signature, and counts every refusal by reason. A record with no
/// entries is kept like any other — it withdraws the node's earlier offers, and its sequence number keeps those from
/// being replayed. Safe for one writer and many readers at once.
/// </summary>
public sealed class ServiceDirectory : SignedRecordBook<ServiceRecord, ServiceRecordError>
{
    public ServiceDirectory(TimeProvider? time = null, TimeSpan? clockTolerance = null)
        : base(time, clockTolerance)
    {
    }

    /// <summary>Checks and keeps a record as it arrived off the wire.</summary>
    public ServiceRecordError Offer(ReadOnlySpan<byte> bytes)
    {
        var error = ServiceRecord.TryParse(bytes, out var record);
        return error != ServiceRecordError.None ? Refuse(error) : Offer(record!);
    }

    /// <summary>Every offer in an unexpired record that matches <paramref name="kind"/> and <paramref name="name"/> (null: any).</summary>
    public IReadOnlyList<(ServiceRecord Record, ServiceEntry Entry)> Matching(ServiceKind? kind = null, string? name = null)
    {
        var now = Time.GetUtcNow();
        var matching = new List<(ServiceRecord, ServiceEntry)>();
        lock (Sync)
        {
            foreach (var record in Held.Values)
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
