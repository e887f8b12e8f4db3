using System.Buffers;
using System.Text;

namespace Skymesh.Ssmp.Codec;

/// <summary>
/// Writes SSMP messages to an <see cref="IBufferWriter{T}"/>. Identifiers are checked; payload content is
/// sent as text when the text form can carry it, otherwise with the binary length prefix.
/// </summary>
public static class SsmpWriter
{
    public static void WriteLogin(IBufferWriter<byte> writer, string id, string scheme, ReadOnlySpan<byte> credential)
    {
        SsmpGrammar.ValidateId(id, nameof(id));
        SsmpGrammar.ValidateId(scheme, nameof(scheme));
        if (credential.IsEmpty)
            WriteLine(writer, "LOGIN"u8, id, scheme);
        else
            WriteLine(writer, "LOGIN"u8, id, scheme, credential);
    }

    public static void WriteSubscribe(IBufferWriter<byte> writer, string topic, bool presence)
    {
        SsmpGrammar.ValidateId(topic, nameof(topic));
        var span = writer.GetSpan(10 + topic.Length + 10);
        var n = Copy(span, "SUBSCRIBE "u8);
        n += Ascii(span[n..], topic);
        if (presence)
            n += Copy(span[n..], " PRESENCE"u8);
        span[n++] = SsmpGrammar.Lf;
        writer.Advance(n);
    }

    public static void WriteUnsubscribe(IBufferWriter<byte> writer, string topic)
    {
        SsmpGrammar.ValidateId(topic, nameof(topic));
        WriteLine(writer, "UNSUBSCRIBE"u8, topic, null);
    }

    public static void WriteUcast(IBufferWriter<byte> writer, string to, ReadOnlySpan<byte> content)
    {
        SsmpGrammar.ValidateId(to, nameof(to));
        WriteLine(writer, "UCAST"u8, to, null, content, requirePayload: true);
    }

    public static void WriteMcast(IBufferWriter<byte> writer, string topic, ReadOnlySpan<byte> content)
    {
        SsmpGrammar.ValidateId(topic, nameof(topic));
        WriteLine(writer, "MCAST"u8, topic, null, content, requirePayload: true);
    }

    public static void WriteBcast(IBufferWriter<byte> writer, ReadOnlySpan<byte> content)
    {
        CheckContent(content, required: true);
        var span = writer.GetSpan(7 + SsmpGrammar.EncodedPayloadLength(content));
        var n = Copy(span, "BCAST "u8);
        n += WritePayload(span[n..], content);
        span[n++] = SsmpGrammar.Lf;
        writer.Advance(n);
    }

    public static void WritePing(IBufferWriter<byte> writer) => Raw(writer, "PING\n"u8);

    public static void WritePong(IBufferWriter<byte> writer) => Raw(writer, "PONG\n"u8);

    public static void WriteClose(IBufferWriter<byte> writer) => Raw(writer, "CLOSE\n"u8);

    /// <summary>An extension request: <c>VERB [SP id] [SP payload]</c>.</summary>
    public static void WriteExtension(IBufferWriter<byte> writer, string verb, string? id, ReadOnlySpan<byte> content)
    {
        ArgumentException.ThrowIfNullOrEmpty(verb);
        if (verb.Length > SsmpGrammar.MaxVerbLength || verb.Any(c => c is < 'A' or > 'Z'))
            throw new ArgumentException("A verb is 1 to 16 upper-case ASCII letters.", nameof(verb));
        if (id is not null)
            SsmpGrammar.ValidateId(id, nameof(id));
        CheckContent(content, required: false);
        var span = writer.GetSpan(verb.Length + 2 + (id?.Length ?? 0) + 1 + SsmpGrammar.EncodedPayloadLength(content) + 1);
        var n = Ascii(span, verb);
        if (id is not null)
        {
            span[n++] = SsmpGrammar.Sp;
            n += Ascii(span[n..], id);
        }
        if (!content.IsEmpty)
        {
            span[n++] = SsmpGrammar.Sp;
            n += WritePayload(span[n..], content);
        }
        span[n++] = SsmpGrammar.Lf;
        writer.Advance(n);
    }

    /// <summary>A response: <c>code [SP payload]</c>.</summary>
    public static void WriteResponse(IBufferWriter<byte> writer, int code, ReadOnlySpan<byte> content = default)
    {
        if (code is < 100 or > 999)
            throw new ArgumentOutOfRangeException(nameof(code), code, "A response code is three digits and never 000.");
        CheckContent(content, required: false);
        var span = writer.GetSpan(5 + SsmpGrammar.EncodedPayloadLength(content));
        span[0] = (byte)('0' + code / 100);
        span[1] = (byte)('0' + code / 10 % 10);
        span[2] = (byte)('0' + code % 10);
        var n = 3;
        if (!content.IsEmpty)
        {
            span[n++] = SsmpGrammar.Sp;
            n += WritePayload(span[n..], content);
        }
        span[n++] = SsmpGrammar.Lf;
        writer.Advance(n);
    }

    /// <summary>Writes <paramref name="content"/> as a payload into <paramref name="destination"/>; returns bytes written.</summary>
    public static int WritePayload(Span<byte> destination, ReadOnlySpan<byte> content)
    {
        if (SsmpGrammar.CanBeText(content))
        {
            content.CopyTo(destination);
            return content.Length;
        }
        var encodedLength = content.Length - 1;
        destination[0] = (byte)(encodedLength >> 8);
        destination[1] = (byte)encodedLength;
        content.CopyTo(destination[2..]);
        return content.Length + 2;
    }

    private static void WriteLine(IBufferWriter<byte> writer, ReadOnlySpan<byte> verb, string first, string? second,
        ReadOnlySpan<byte> content = default, bool requirePayload = false)
    {
        CheckContent(content, requirePayload);
        var size = verb.Length + 1 + first.Length + 1 + (second?.Length ?? 0) + 1 + SsmpGrammar.EncodedPayloadLength(content) + 1;
        var span = writer.GetSpan(size);
        var n = Copy(span, verb);
        span[n++] = SsmpGrammar.Sp;
        n += Ascii(span[n..], first);
        if (second is not null)
        {
            span[n++] = SsmpGrammar.Sp;
            n += Ascii(span[n..], second);
        }
        if (!content.IsEmpty)
        {
            span[n++] = SsmpGrammar.Sp;
            n += WritePayload(span[n..], content);
        }
        span[n++] = SsmpGrammar.Lf;
        writer.Advance(n);
    }

    private static void CheckContent(ReadOnlySpan<byte> content, bool required)
    {
        if (content.Length > SsmpGrammar.MaxPayloadLength)
            throw new ArgumentException($"An SSMP payload holds at most {SsmpGrammar.MaxPayloadLength} bytes; got {content.Length}. Use the chunking layer for larger messages.", nameof(content));
        if (required && content.IsEmpty)
            throw new ArgumentException("This request needs a payload of at least one byte.", nameof(content));
    }

    private static void Raw(IBufferWriter<byte> writer, ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(writer.GetSpan(bytes.Length));
        writer.Advance(bytes.Length);
    }

    private static int Copy(Span<byte> destination, ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(destination);
        return bytes.Length;
    }

    private static int Ascii(Span<byte> destination, string value) => Encoding.ASCII.GetBytes(value, destination);
}
