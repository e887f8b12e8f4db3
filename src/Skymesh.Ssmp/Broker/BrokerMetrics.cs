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

/// <summary>Why a <c>key</c> login was refused (docs/ssmp-broker.md, "The key scheme"); each reason is counted.</summary>
public enum KeyLoginFailure
{
    /// <summary>The credential is not a 72-byte binary payload.</summary>
    Malformed,

    /// <summary>The anonymous id <c>.</c>: it names no key to check the signature against.</summary>
    Anonymous,

    /// <summary>The id is not 64 lowercase hex digits that are the x coordinate of a point on secp256k1.</summary>
    BadId,

    /// <summary>The timestamp is further in the past than the window.</summary>
    TooOld,

    /// <summary>The timestamp is further in the future than the window.</summary>
    TooNew,

    /// <summary>This very credential (id, timestamp, signature) was already accepted.</summary>
    Replayed,

    /// <summary>The set of remembered credentials is full; refused without an answer (the client retries later).</summary>
    ReplaySetFull,

    /// <summary>The signature does not verify for this id, server name and timestamp.</summary>
    BadSignature,
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

    /// <summary>Bytes queued now towards all connections, not yet written to their sockets.</summary>
    public long QueuedBytes { get; init; }
    public long BadRequests { get; init; }
    public long UnknownVerbs { get; init; }
    public long UcastNotFound { get; init; }
    public IReadOnlyDictionary<DisconnectReason, long> Disconnects { get; init; } = new Dictionary<DisconnectReason, long>();

    /// <summary>Logins accepted through the <c>key</c> scheme.</summary>
    public long KeyLoginsAccepted { get; init; }

    /// <summary>Refused <c>key</c> logins by reason (empty when the broker does not offer the scheme).</summary>
    public IReadOnlyDictionary<KeyLoginFailure, long> KeyLoginFailures { get; init; } = new Dictionary<KeyLoginFailure, long>();

    /// <summary>Accepted key credentials remembered to refuse their replay (bounded by <c>KeyLoginReplayCapacity</c>).</summary>
    public long KeyLoginCredentialsRemembered { get; init; }

    /// <summary>Bytes held now in connection buffers too large for the shared pool (queues towards slow readers).</summary>
    public long LargeBufferBytes { get; init; }

    /// <summary>Connection buffers too large for the shared pool allocated so far.</summary>
    public long LargeBuffers { get; init; }

    /// <summary>Times the broker gave memory back after a burst of traffic had ended.</summary>
    public long MemoryReleases { get; init; }

    public long DisconnectsFor(DisconnectReason reason) => Disconnects.TryGetValue(reason, out var n) ? n : 0;

    public long KeyLoginFailuresFor(KeyLoginFailure reason) => KeyLoginFailures.TryGetValue(reason, out var n) ? n : 0;
}
