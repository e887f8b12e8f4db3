namespace Skymesh.Ssmp.Broker;

/// <summary>Why a broker connection ended; each reason is counted.</summary>
public enum DisconnectReason
{
    PeerClosed,
    CloseRequested,
    BadRequest,
    LoginRefused,
    LoginTimeout,
    IdleTimeout,
    SlowConsumer,
    Evicted,
    ConnectionLimit,
    TlsFailed,
    SocketError,
    BrokerStopping,
}

/// <summary>A point-in-time copy of the broker's counters.</summary>
public sealed record BrokerMetricsSnapshot
{
    public long ConnectionsAccepted { get; init; }
    public long ConnectionsOpen { get; init; }
    public long LoggedIn { get; init; }
    public long Topics { get; init; }
    public long RequestsReceived { get; init; }
    public long EventsQueued { get; init; }
    public long BytesReceived { get; init; }
    public long BytesSent { get; init; }
    public long BadRequests { get; init; }
    public long UnknownVerbs { get; init; }
    public long UcastNotFound { get; init; }
    public IReadOnlyDictionary<DisconnectReason, long> Disconnects { get; init; } = new Dictionary<DisconnectReason, long>();

    public long DisconnectsFor(DisconnectReason reason) => Disconnects.TryGetValue(reason, out var n) ? n : 0;
}
