namespace Skymesh.Mesh.Paths;

/// <summary>Settings of one path endpoint and of the streams it carries.</summary>
public sealed record PathEndpointOptions
{
    /// <summary>The smallest receive buffer: what a sender may assume of its peer before the first acknowledgement.</summary>
    public const int MinReceiveBuffer = 64 * 1024;

    /// <summary>Names the far end in errors ("path to X lost…"), e.g. the destination's address.</summary>
    public string PeerName { get; init; } = "peer";

    /// <summary>
    /// The source of the path opens odd stream ids and the destination even ones, so both can open streams
    /// without agreeing first. Exactly one end must be the initiator.
    /// </summary>
    public bool IsInitiator { get; init; } = true;

    /// <summary>Without any acknowledgement (or, for the endpoint, any message) for this long, the path is declared lost.</summary>
    public TimeSpan FailureTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>How long the endpoint stays silent, or hears nothing, before it sends a keepalive; default a third of <see cref="FailureTimeout"/>.</summary>
    public TimeSpan? KeepaliveInterval { get; init; }

    /// <summary>Bytes a stream holds for sending (written, not yet acknowledged); a write waits while it is full.</summary>
    public int SendBufferSize { get; init; } = 4 << 20;

    /// <summary>Bytes a stream holds as received and not yet read, in order or not: the window it advertises. At least 64 KiB.</summary>
    public int ReceiveBufferSize { get; init; } = 4 << 20;

    /// <summary>Longest a receiver waits before acknowledging a lone in-order segment (every second one is acknowledged at once).</summary>
    public TimeSpan AckDelay { get; init; } = TimeSpan.FromMilliseconds(25);

    public TimeSpan InitialRto { get; init; } = TimeSpan.FromSeconds(1);

    public TimeSpan MinRto { get; init; } = TimeSpan.FromMilliseconds(200);

    public TimeSpan MaxRto { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Congestion window of a new stream, and after a retarget, in segments (RFC 6928).</summary>
    public int InitialWindowSegments { get; init; } = 10;

    public CongestionAlgorithm CongestionControl { get; init; } = CongestionAlgorithm.Cubic;

    /// <summary>Streams the peer may hold open on this endpoint at once; more are refused.</summary>
    public int MaxIncomingStreams { get; init; } = 64;

    /// <summary>Received datagrams held until the application takes them; more are dropped and counted.</summary>
    public int DatagramQueue { get; init; } = 256;

    internal TimeSpan EffectiveKeepalive => KeepaliveInterval ?? FailureTimeout / 3;

    public void Validate()
    {
        ArgumentException.ThrowIfNullOrEmpty(PeerName);
        if (FailureTimeout <= TimeSpan.Zero)
            throw new ArgumentException("The failure timeout must be positive.");
        if (EffectiveKeepalive <= TimeSpan.Zero || EffectiveKeepalive > FailureTimeout)
            throw new ArgumentException("The keepalive interval must be positive and no longer than the failure timeout.");
        if (SendBufferSize < 1024)
            throw new ArgumentException("The send buffer holds at least 1,024 bytes.");
        if (ReceiveBufferSize < MinReceiveBuffer)
            throw new ArgumentException($"The receive buffer holds at least {MinReceiveBuffer:N0} bytes.");
        if (AckDelay < TimeSpan.Zero || AckDelay >= MinRto)
            throw new ArgumentException("The acknowledgement delay must be shorter than the minimum retransmission timeout.");
        if (MinRto <= TimeSpan.Zero || MinRto > InitialRto || InitialRto > MaxRto)
            throw new ArgumentException("Retransmission timeouts must satisfy 0 < MinRto <= InitialRto <= MaxRto.");
        if (InitialWindowSegments < 1)
            throw new ArgumentException("The initial window is at least one segment.");
        if (MaxIncomingStreams < 0 || DatagramQueue < 1)
            throw new ArgumentException("Stream and datagram limits cannot be negative.");
    }
}
