using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Client;

/// <summary>
/// An event from the broker: <c>000 from VERB [target] [payload]</c>, where everything after <c>from</c>
/// is the sender's request. For UCAST the target is the recipient (this client), for MCAST and presence
/// events the topic.
/// </summary>
public sealed class SsmpEvent
{
    public required string From { get; init; }

    public required SsmpVerb Verb { get; init; }

    /// <summary>The verb as sent; differs from <see cref="Verb"/>'s name only for extensions.</summary>
    public required string VerbToken { get; init; }

    /// <summary>UCAST recipient, MCAST/SUBSCRIBE/UNSUBSCRIBE topic, or an extension's id; null when absent.</summary>
    public string? Target { get; init; }

    /// <summary>Payload content (binary prefix removed); empty when none.</summary>
    public ReadOnlyMemory<byte> Payload { get; init; }

    /// <summary>For SUBSCRIBE events: the member asked for presence.</summary>
    public bool Presence { get; init; }

    public string PayloadText => Encoding.UTF8.GetString(Payload.Span);

    public override string ToString() => Target is null
        ? $"{From} {VerbToken} {PayloadText}"
        : $"{From} {VerbToken} {Target} {PayloadText}";

    /// <summary>
    /// The event of <paramref name="message"/>; its payload a copy, or, given the <paramref name="lent"/> buffer the message
    /// was read into, that buffer's bytes (valid until the read loop goes on).
    /// </summary>
    internal static SsmpEvent From_(in SsmpServerMessage message, IdCache? ids = null, byte[]? lent = null) => new()
    {
        From = ids is null ? Encoding.ASCII.GetString(message.From) : ids.Get(message.From),
        Verb = message.Event.Verb,
        VerbToken = message.Event.Verb == SsmpVerb.Extension ? Encoding.ASCII.GetString(message.Event.VerbToken) : VerbName(message.Event.Verb),
        Target = message.Event.Id.IsEmpty ? null : ids is null ? Encoding.ASCII.GetString(message.Event.Id) : ids.Get(message.Event.Id),
        Payload = !message.Event.HasPayload ? ReadOnlyMemory<byte>.Empty
            : lent is null ? message.Event.PayloadContent.ToArray() : Within(lent, message.Event.PayloadContent),
        Presence = message.Event.Presence,
    };

    /// <summary><paramref name="content"/>, a part of <paramref name="buffer"/>, as memory (bounds checked).</summary>
    private static ReadOnlyMemory<byte> Within(byte[] buffer, ReadOnlySpan<byte> content)
    {
        var offset = Unsafe.ByteOffset(ref MemoryMarshal.GetArrayDataReference(buffer), ref MemoryMarshal.GetReference(content));
        if (offset < 0 || offset > buffer.Length)
            throw new InvalidOperationException("The payload does not lie in the read buffer.");
        return buffer.AsMemory((int)offset, content.Length);
    }

    /// <summary>
    /// This event with a payload of its own: what a callback that keeps an event lent to it
    /// (<see cref="SsmpClientOptions.LendPayloads"/>) keeps.
    /// </summary>
    public SsmpEvent Detach() => new()
    {
        From = From,
        Verb = Verb,
        VerbToken = VerbToken,
        Target = Target,
        Payload = Payload.IsEmpty ? ReadOnlyMemory<byte>.Empty : Payload.ToArray(),
        Presence = Presence,
    };

    private static string VerbName(SsmpVerb verb) => verb switch
    {
        SsmpVerb.Ucast => "UCAST",
        SsmpVerb.Mcast => "MCAST",
        SsmpVerb.Bcast => "BCAST",
        SsmpVerb.Subscribe => "SUBSCRIBE",
        SsmpVerb.Unsubscribe => "UNSUBSCRIBE",
        SsmpVerb.Ping => "PING",
        SsmpVerb.Pong => "PONG",
        _ => verb.ToString().ToUpperInvariant(),
    };
}

/// <summary>A response from the broker.</summary>
public readonly record struct SsmpResponse(int Code, ReadOnlyMemory<byte> Payload)
{
    public bool IsSuccess => Code is >= 200 and < 300;

    public string PayloadText => Encoding.UTF8.GetString(Payload.Span);
}

/// <summary>The broker answered a request with an error code.</summary>
public class SsmpException : Exception
{
    public SsmpException(int code, string message)
        : base(message) => Code = code;

    public SsmpException()
    {
    }

    public SsmpException(string message)
        : base(message)
    {
    }

    public SsmpException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public int Code { get; }

    internal static SsmpException For(int code, string request, ReadOnlySpan<byte> payload)
    {
        var detail = payload.IsEmpty ? "" : $" ({Encoding.UTF8.GetString(SsmpGrammar.PayloadContent(payload))})";
        var meaning = code switch
        {
            400 => "bad request: the broker found a grammar violation and closes the connection",
            401 => "unauthorized: unknown login scheme or rejected credential; offered schemes follow",
            404 => "not found: no such recipient is connected, or no such subscription",
            405 => "not allowed for this connection",
            409 => "conflict: already subscribed",
            429 => "limit reached",
            501 => "not implemented by the broker",
            _ => "error",
        };
        return new SsmpException(code, $"{request} failed with {code} {meaning}{detail}.");
    }
}

/// <summary>The connection to the broker is down, so the request's fate is unknown.</summary>
public sealed class SsmpConnectionException : SsmpException
{
    public SsmpConnectionException(string message)
        : base(message)
    {
    }

    public SsmpConnectionException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public SsmpConnectionException()
    {
    }
}

/// <summary>
/// The strings of the ids a client hears most (senders, topics), kept so that each event does not make its own: a busy
/// exchange hears the same few traders hundreds of thousands of times a second. Direct-mapped; a miss makes a new string.
/// </summary>
internal sealed class IdCache
{
    private readonly string?[] _slots = new string?[256];

    public string Get(ReadOnlySpan<byte> ascii)
    {
        var hash = new HashCode();
        hash.AddBytes(ascii);
        ref var slot = ref _slots[hash.ToHashCode() & (_slots.Length - 1)];
        var known = slot;
        if (known is not null && known.Length == ascii.Length && Ascii.Equals(ascii, known))
            return known;
        var text = Encoding.ASCII.GetString(ascii);
        slot = text;
        return text;
    }
}
