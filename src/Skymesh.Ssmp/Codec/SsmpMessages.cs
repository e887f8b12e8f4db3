namespace Skymesh.Ssmp.Codec;

public enum SsmpVerb : byte
{
    /// <summary>A well-formed verb this implementation does not know (answered with 501).</summary>
    Extension = 0,
    Login,
    Close,
    Ping,
    Pong,
    Subscribe,
    Unsubscribe,
    Ucast,
    Mcast,
    Bcast,
}

public enum SsmpParseStatus : byte
{
    Complete,
    NeedMoreData,
    Invalid,
}

/// <summary>Why a message was refused; the broker counts these and logs them.</summary>
public enum SsmpError : byte
{
    None,
    EmptyLine,
    BadVerb,
    VerbTooLong,
    BadId,
    IdTooLong,
    MissingField,
    ExtraField,
    EmptyPayload,
    PayloadTooLong,
    BinaryLengthMismatch,
    BadFlag,
    BadCode,
    NotForwardable,
}

/// <summary>
/// One parsed request (or the forwarded part of an event). Every span points into the buffer that was
/// parsed, so it is valid only until that buffer is reused.
/// </summary>
public readonly ref struct SsmpRequest
{
    public SsmpVerb Verb { get; init; }

    /// <summary>The verb exactly as sent (also for extensions).</summary>
    public ReadOnlySpan<byte> VerbToken { get; init; }

    /// <summary>Identifier argument: LOGIN id, SUBSCRIBE/UNSUBSCRIBE/MCAST topic, UCAST recipient, extension id.</summary>
    public ReadOnlySpan<byte> Id { get; init; }

    /// <summary>LOGIN scheme.</summary>
    public ReadOnlySpan<byte> Scheme { get; init; }

    /// <summary>Payload as on the wire, binary prefix included (servers forward this unchanged).</summary>
    public ReadOnlySpan<byte> Payload { get; init; }

    /// <summary>SUBSCRIBE with PRESENCE.</summary>
    public bool Presence { get; init; }

    /// <summary>The whole request including its final LF.</summary>
    public ReadOnlySpan<byte> Message { get; init; }

    public bool HasPayload => !Payload.IsEmpty;

    /// <summary>Payload content with any binary length prefix removed.</summary>
    public ReadOnlySpan<byte> PayloadContent => SsmpGrammar.PayloadContent(Payload);
}

/// <summary>One parsed server message: a response (code, optional payload) or an event (000 from forwardable).</summary>
public readonly ref struct SsmpServerMessage
{
    public bool IsEvent => Code == 0;

    /// <summary>Response code; 0 for an event.</summary>
    public int Code { get; init; }

    /// <summary>Response payload as on the wire (binary prefix included), empty when none.</summary>
    public ReadOnlySpan<byte> Payload { get; init; }

    /// <summary>Event sender ("." for the server and for anonymous senders).</summary>
    public ReadOnlySpan<byte> From { get; init; }

    /// <summary>The forwarded request carried by an event.</summary>
    public SsmpRequest Event { get; init; }

    public ReadOnlySpan<byte> Message { get; init; }
}
