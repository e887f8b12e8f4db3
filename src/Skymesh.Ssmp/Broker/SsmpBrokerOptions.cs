using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace Skymesh.Ssmp.Broker;

/// <summary>Everything a broker can be told. <see cref="Validate"/> is called at start-up.</summary>
public sealed class SsmpBrokerOptions
{
    public const int DefaultPort = 8787;

    public const string DefaultServerName = "skymesh";

    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, DefaultPort);

    /// <summary>Login schemes offered, in the order the 401 payload lists them. Default: <c>open</c>.</summary>
    public IList<ISsmpAuthenticator> Authenticators { get; } = [];

    /// <summary>Whether the anonymous identifier <c>.</c> may log in (through any offered scheme).</summary>
    public bool AllowAnonymous { get; set; } = true;

    /// <summary>TLS on every connection when set (beside plain TCP on the same port with <see cref="SsmpTlsOptions.AllowPlaintext"/>).</summary>
    public SsmpTlsOptions? Tls { get; set; }

    /// <summary>A connection that has not logged in by then is closed silently.</summary>
    public TimeSpan LoginTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Silence from a client after which the broker sends <c>000 . PING</c>.</summary>
    public TimeSpan PingInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Further silence after the PING after which the connection is closed.</summary>
    public TimeSpan PongTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public int MaxConnections { get; set; } = 100_000;

    public int MaxSubscriptionsPerConnection { get; set; } = 10_000;

    /// <summary>Bytes queued towards one connection before it is disconnected as a slow consumer.</summary>
    public int MaxQueuedBytesPerConnection { get; set; } = DefaultMaxQueuedBytes;

    /// <summary>
    /// 32 MiB: what the broker itself writes towards one connection in about a tenth of a second at full speed (some
    /// 3 M small messages a second), so a receiver of a few pipelining senders survives a scheduling pause of its own
    /// without being taken for a slow consumer; a reader that stops for longer is. Held only while queued.
    /// </summary>
    public const int DefaultMaxQueuedBytes = 32 * 1024 * 1024;

    /// <summary>Size of the receive buffer a busy connection borrows from the pool (idle connections hold none).</summary>
    public int ReceiveBufferSize { get; set; } = 32 * 1024;

    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>
    /// After a burst of traffic, once the process has gone quiet for a few seconds, run one compacting collection so
    /// that the memory the burst used goes back to the operating system (docs/ssmp-broker.md, "Memory").
    /// </summary>
    public bool ReleaseMemoryWhenQuiet { get; set; } = true;

    /// <summary>Bytes the process has allocated so far; what tells a burst from quiet (replaced in tests).</summary>
    internal Func<long> AllocatedBytes { get; set; } = static () => GC.GetTotalAllocatedBytes();

    /// <summary>
    /// The broker's name, which every <c>key</c> credential signs: a credential made for one broker is refused by any
    /// broker with another name. An SSMP identifier (1 to 64 of letters, digits and <c>. : @ / _ - + = ~</c>).
    /// </summary>
    public string ServerName { get; set; } = DefaultServerName;

    /// <summary>How far a <c>key</c> credential's timestamp may be from the broker's clock, either way.</summary>
    public TimeSpan KeyLoginWindow { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Accepted <c>key</c> credentials remembered at once (each until its timestamp leaves the window, about 70 bytes
    /// each). When full, new key logins are closed without an answer until entries expire.
    /// </summary>
    public int KeyLoginReplayCapacity { get; set; } = 250_000;

    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Listen, nameof(Listen));
        if (Authenticators.Count == 0)
            throw new ArgumentException("The broker needs at least one login scheme.", nameof(Authenticators));
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var a in Authenticators)
        {
            Codec.SsmpGrammar.ValidateId(a.Scheme, nameof(Authenticators));
            if (!seen.Add(a.Scheme))
                throw new ArgumentException($"Login scheme '{a.Scheme}' is configured twice.", nameof(Authenticators));
            if (a.RequiresTls && Tls is null)
                throw new ArgumentException($"Login scheme '{a.Scheme}' needs TLS: give a server certificate.", nameof(Authenticators));
        }
        Positive(LoginTimeout, nameof(LoginTimeout));
        Positive(PingInterval, nameof(PingInterval));
        Positive(PongTimeout, nameof(PongTimeout));
        if (MaxConnections < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxConnections), MaxConnections, "Must be at least 1.");
        if (MaxSubscriptionsPerConnection < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxSubscriptionsPerConnection), MaxSubscriptionsPerConnection, "Must be at least 1.");
        if (MaxQueuedBytesPerConnection < 2 * Codec.SsmpGrammar.MaxMessageLength)
            throw new ArgumentOutOfRangeException(nameof(MaxQueuedBytesPerConnection), MaxQueuedBytesPerConnection,
                $"Must hold at least two of the longest messages ({2 * Codec.SsmpGrammar.MaxMessageLength} bytes).");
        if (ReceiveBufferSize < 2 * Codec.SsmpGrammar.MaxMessageLength)
            throw new ArgumentOutOfRangeException(nameof(ReceiveBufferSize), ReceiveBufferSize,
                $"Must hold at least two of the longest messages ({2 * Codec.SsmpGrammar.MaxMessageLength} bytes).");
        ArgumentNullException.ThrowIfNull(TimeProvider, nameof(TimeProvider));
        Codec.SsmpGrammar.ValidateId(ServerName, nameof(ServerName));
        if (KeyLoginWindow < TimeSpan.FromSeconds(1) || KeyLoginWindow > TimeSpan.FromHours(1))
            throw new ArgumentOutOfRangeException(nameof(KeyLoginWindow), KeyLoginWindow, "Must be between 1 second and 1 hour.");
        if (KeyLoginReplayCapacity < 1)
            throw new ArgumentOutOfRangeException(nameof(KeyLoginReplayCapacity), KeyLoginReplayCapacity, "Must be at least 1.");
    }

    private static void Positive(TimeSpan value, string name)
    {
        if (value <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(name, value, "Must be positive.");
    }
}

public sealed class SsmpTlsOptions
{
    public required X509Certificate2 ServerCertificate { get; init; }

    /// <summary>Roots that client certificates must chain to; when null, client certificates are not asked for.</summary>
    public X509Certificate2Collection? ClientCertificateAuthorities { get; init; }

    /// <summary>
    /// Serve plain SSMP on the same port too: a connection whose first byte opens a TLS handshake record (0x16) gets
    /// TLS, any other is plain SSMP, as without TLS. No SSMP request can start with 0x16, so nothing is misread.
    /// </summary>
    public bool AllowPlaintext { get; init; }
}
