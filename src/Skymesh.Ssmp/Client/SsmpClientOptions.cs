using System.Net.Security;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;

namespace Skymesh.Ssmp.Client;

/// <summary>What the client does when its event queue is full and another event arrives.</summary>
public enum SsmpEventOverflow
{
    /// <summary>Drop the oldest queued event (counted in <see cref="SsmpClient.DroppedEvents"/>).</summary>
    DropOldest,

    /// <summary>Drop the event that just arrived (counted).</summary>
    DropNewest,
}

public sealed class SsmpClientOptions
{
    public string Host { get; set; } = "127.0.0.1";

    public int Port { get; set; } = Broker.SsmpBrokerOptions.DefaultPort;

    /// <summary>
    /// The identifier to log in as; <c>.</c> for anonymous. With <see cref="Key"/> it may be left empty: the id is
    /// then the key's address (and must be, if given).
    /// </summary>
    public string Id { get; set; } = "";

    public string Scheme { get; set; } = "open";

    /// <summary>The LOGIN credential (sent as a payload); empty for none.</summary>
    public ReadOnlyMemory<byte> Credential { get; set; }

    /// <summary>
    /// Log in with the <c>key</c> scheme as this key's address: every login, including each automatic one after a
    /// reconnect, sends a fresh credential signed for <see cref="ServerName"/> at the time of the
    /// <see cref="TimeProvider"/>. <see cref="Scheme"/> is then <c>key</c> and <see cref="Credential"/> must be empty.
    /// The client does not dispose the key; keep it alive as long as the client.
    /// </summary>
    public NodeKey? Key { get; set; }

    /// <summary>The name of the broker (its <c>--name</c>) that <see cref="Key"/> credentials are signed for.</summary>
    public string ServerName { get; set; } = Broker.SsmpBrokerOptions.DefaultServerName;

    /// <summary>
    /// Connect with TLS using these options when set; on top of <see cref="ConnectStream"/>'s stream when that is set
    /// too. A null <c>TargetHost</c> means <see cref="Host"/>. <see cref="SsmpTlsPinning"/> makes options that accept a
    /// broker by its certificate's key fingerprint.
    /// </summary>
    public SslClientAuthenticationOptions? Tls { get; set; }

    /// <summary>
    /// Opens the byte stream to the broker instead of a TCP connection to <see cref="Host"/>:<see cref="Port"/> (for a
    /// broker reached through something else, such as neighbours that relay the bytes). Called at every connect,
    /// including each reconnect; the session owns the stream it returns and disposes it when the connection ends.
    /// </summary>
    public Func<CancellationToken, ValueTask<Stream>>? ConnectStream { get; set; }

    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Silence from the server after which the client sends PING.</summary>
    public TimeSpan PingInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Further silence after that PING after which the connection is dropped (and re-made).</summary>
    public TimeSpan PongTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Re-connect after a lost connection, logging in again and restoring subscriptions.</summary>
    public bool Reconnect { get; set; } = true;

    public TimeSpan ReconnectDelayMin { get; set; } = TimeSpan.FromMilliseconds(100);

    public TimeSpan ReconnectDelayMax { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Events held for <see cref="SsmpClient.Events"/> before <see cref="EventOverflow"/> applies.</summary>
    public int EventQueueCapacity { get; set; } = 65_536;

    public SsmpEventOverflow EventOverflow { get; set; } = SsmpEventOverflow.DropOldest;

    /// <summary>
    /// Called on the read loop for every event instead of queueing it. Must be quick and must not block;
    /// the event's payload is only valid during the call unless copied.
    /// </summary>
    public Action<SsmpEvent>? OnEvent { get; set; }

    /// <summary>
    /// With <see cref="OnEvent"/>: each event's payload is not copied but lent, straight from the connection's read
    /// buffer, and is overwritten once the callback returns. Saves an allocation and a copy per event for callbacks that
    /// only read the payload; one that keeps it keeps <see cref="SsmpEvent.Detach"/>'s copy. Off by default.
    /// </summary>
    public bool LendPayloads { get; set; }

    /// <summary>Bytes queued for sending beyond which senders wait for the socket to drain.</summary>
    public int MaxBufferedBytes { get; set; } = 8 * 1024 * 1024;

    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Randomness of reconnect jitter and of message and call ids; seeded in simulations for repeatable runs.</summary>
    public Random Random { get; set; } = new();

    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>
    /// A copy, so that a client is not affected by later changes to the options it was given. Every property is
    /// copied (shallowly: the copy shares <see cref="Tls"/>, <see cref="ConnectStream"/>, <see cref="Key"/> and the
    /// other objects).
    /// </summary>
    public SsmpClientOptions Clone() => (SsmpClientOptions)MemberwiseClone();

    public void Validate()
    {
        ArgumentException.ThrowIfNullOrEmpty(Host, nameof(Host));
        // With a stream of its own the client dials nothing: the port is unused.
        if (ConnectStream is null && Port is < 1 or > 65535)
            throw new ArgumentOutOfRangeException(nameof(Port), Port, "A TCP port is 1 to 65535.");
        if (Key is not null)
        {
            var address = Key.Address.ToString();
            if (!string.IsNullOrEmpty(Id) && Id != address)
                throw new ArgumentException($"With a Key the client logs in as the key's address {address}, not '{Id}'; leave Id empty.", nameof(Id));
            if (Scheme is not ("open" or Codec.SsmpKeyCredential.Scheme))
                throw new ArgumentException($"With a Key the login scheme is '{Codec.SsmpKeyCredential.Scheme}', not '{Scheme}'.", nameof(Scheme));
            if (!Credential.IsEmpty)
                throw new ArgumentException("With a Key the client signs its own credential at every login; leave Credential empty.", nameof(Credential));
            Codec.SsmpGrammar.ValidateId(ServerName, nameof(ServerName));
        }
        else
        {
            Codec.SsmpGrammar.ValidateId(Id, nameof(Id));
            Codec.SsmpGrammar.ValidateId(Scheme, nameof(Scheme));
        }
        if (Credential.Length > Codec.SsmpGrammar.MaxPayloadLength)
            throw new ArgumentException($"A credential is at most {Codec.SsmpGrammar.MaxPayloadLength} bytes.", nameof(Credential));
        if (EventQueueCapacity < 1)
            throw new ArgumentOutOfRangeException(nameof(EventQueueCapacity), EventQueueCapacity, "Must be at least 1.");
        if (PingInterval <= TimeSpan.Zero || PongTimeout <= TimeSpan.Zero || ConnectTimeout <= TimeSpan.Zero)
            throw new ArgumentException("Timeouts must be positive.");
        if (ReconnectDelayMin <= TimeSpan.Zero || ReconnectDelayMax < ReconnectDelayMin)
            throw new ArgumentException("Reconnect delays must be positive, and the maximum at least the minimum.");
        if (MaxBufferedBytes < 4096)
            throw new ArgumentOutOfRangeException(nameof(MaxBufferedBytes), MaxBufferedBytes, "Must be at least 4096.");
    }
}
