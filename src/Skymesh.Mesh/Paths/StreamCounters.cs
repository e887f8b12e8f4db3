namespace Skymesh.Mesh.Paths;

/// <summary>A snapshot of one stream's counters and congestion state.</summary>
public readonly record struct StreamCounters
{
    /// <summary>Application bytes sent for the first time.</summary>
    public long BytesSent { get; init; }

    /// <summary>Bytes received in order (what the application can read, or has read).</summary>
    public long BytesReceived { get; init; }

    /// <summary>Data messages sent, first transmissions and retransmissions.</summary>
    public long SegmentsSent { get; init; }

    public long SegmentsRetransmitted { get; init; }

    public long BytesRetransmitted { get; init; }

    /// <summary>Segments declared lost by acknowledgements (RACK), not by a timeout.</summary>
    public long FastRetransmits { get; init; }

    /// <summary>Segments found delivered after they were presumed lost (reordering); they widen the reordering window.</summary>
    public long SpuriousRetransmits { get; init; }

    /// <summary>Window reductions taken back because every loss they answered turned out not to be one.</summary>
    public long Undos { get; init; }

    /// <summary>Times the congestion window was reduced for a loss found by acknowledgements (before any undo).</summary>
    public long WindowReductions { get; init; }

    /// <summary>Tail loss probes sent: one segment past the window after two silent round trips.</summary>
    public long TailProbes { get; init; }

    /// <summary>Retransmission timeouts that fired.</summary>
    public long Timeouts { get; init; }

    public long SegmentsReceived { get; init; }

    /// <summary>Segments that brought nothing new (already received).</summary>
    public long DuplicateSegments { get; init; }

    public long AcksSent { get; init; }

    public long AcksReceived { get; init; }

    /// <summary>Messages for this stream refused as malformed: beyond the window, acknowledging unsent data, contradicting the end.</summary>
    public long MessagesDropped { get; init; }

    public long CongestionWindow { get; init; }

    public long SlowStartThreshold { get; init; }

    /// <summary>Bytes sent and neither acknowledged nor presumed lost.</summary>
    public long BytesInFlight { get; init; }

    /// <summary>Smoothed round-trip time; zero before the first sample.</summary>
    public TimeSpan SmoothedRtt { get; init; }

    public TimeSpan RetransmissionTimeout { get; init; }

    /// <summary>Memory the stream's send and receive buffers hold now (a quiet stream gives its spares back within seconds).</summary>
    public long BufferBytesHeld { get; init; }

    /// <summary>The peer's advertised window still open to the sender, in bytes.</summary>
    public long PeerWindow { get; init; }
}
