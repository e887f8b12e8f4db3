using Skymesh.Ssmp.Rpc;

namespace Skymesh.Control.Topology;

/// <summary>
/// How announcements travel on <see cref="RouteTopics.Links"/>: a record that fits one SSMP payload (up to
/// <see cref="LinkAnnouncement.MaxLinksInOnePayload"/> links) is one MCAST; a larger one is split into the
/// documented fragments (docs/ssmp-rpc.md §1), one MCAST each, and put back together by every receiver.
/// </summary>
public static class AnnouncementTransport
{
    /// <summary>Largest record a receiver reassembles: <see cref="LinkAnnouncement.MaxLinks"/> links.</summary>
    public const int MaxRecordBytes = 256 * 1024;

    /// <summary>The MCAST payloads that carry <paramref name="record"/>.</summary>
    public static IReadOnlyList<byte[]> Payloads(LinkAnnouncement record)
    {
        ArgumentNullException.ThrowIfNull(record);
        if (record.Bytes.Length <= Ssmp.Codec.SsmpGrammar.MaxPayloadLength)
            return [record.Bytes];
        // The sequence changes with every record, so its low bits tell this record's fragments from the last one's.
        var id = (uint)record.Sequence;
        var count = SsmpChunking.FragmentCount(record.Bytes.Length);
        return [.. Enumerable.Range(0, count).Select(i => SsmpChunking.Fragment(id, record.Bytes, i))];
    }
}

/// <summary>Feeds what arrives on the announcement topic to a graph, putting fragmented records back together.</summary>
public sealed class AnnouncementReceiver(TopologyGraph graph, TimeProvider? time = null)
{
    private readonly SsmpReassembler _reassembler = new(new SsmpReassemblerOptions
    {
        MaxMessageBytes = AnnouncementTransport.MaxRecordBytes,
        MaxIncompletePerSender = 2,
        MaxIncompleteBytes = 64L * 1024 * 1024,
        Timeout = TimeSpan.FromSeconds(10),
    }, time);

    public TopologyGraph Graph { get; } = graph;

    /// <summary>Fragments dropped by the reassembler (malformed, too large, too many, timed out).</summary>
    public long DroppedFragments => Enum.GetValues<ReassemblyDrop>().Sum(_reassembler.Dropped);

    /// <summary>One MCAST payload from <paramref name="from"/>; the outcome when it completed a record, null while a record is still in pieces.</summary>
    public AnnouncementError? Receive(string from, ReadOnlySpan<byte> payload)
    {
        if (!SsmpChunking.IsFragment(payload))
            return Graph.Offer(payload);
        return _reassembler.Add(from, payload, out var record, out _) switch
        {
            ReassemblyStatus.Complete => Graph.Offer(record!),
            ReassemblyStatus.Pending => null,
            _ => AnnouncementError.Malformed,
        };
    }
}
