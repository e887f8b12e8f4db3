using System.Runtime.CompilerServices;

namespace Skymesh.Ssmp.Codec;

/// <summary>
/// Incremental, field-by-field SSMP parser. It never splits on LF first (binary payloads may hold LF):
/// each field is read in turn and its length checked against the spec's limit before the next is looked at.
/// A buffer that ends inside a message yields <see cref="SsmpParseStatus.NeedMoreData"/>; an error that is
/// already visible in the bytes present yields <see cref="SsmpParseStatus.Invalid"/> at once, so a peer cannot
/// make the reader wait for bytes that would not help. Any buffer of <see cref="SsmpGrammar.MaxMessageLength"/>
/// bytes or more always parses to Complete or Invalid.
/// </summary>
public static class SsmpParser
{
    private const byte Lf = SsmpGrammar.Lf;
    private const byte Sp = SsmpGrammar.Sp;

    /// <summary>Parses one client request from the start of <paramref name="buffer"/>.</summary>
    /// <remarks>Grammar: request = login / "CLOSE" / "PING" / "PONG" / forwardable, then LF.</remarks>
    public static SsmpParseStatus TryParseRequest(ReadOnlySpan<byte> buffer, out SsmpRequest request, out int consumed, out SsmpError error)
    {
        var status = ParseRequestAt(buffer, 0, allowLoginAndClose: true, out request, out consumed, out error);
        return status;
    }

    /// <summary>Parses one server message (response or event) from the start of <paramref name="buffer"/>.</summary>
    /// <remarks>Grammar: response = code [SP payload]; event = "000" SP id SP (forwardable / "PING" / "PONG"); then LF.</remarks>
    public static SsmpParseStatus TryParseServerMessage(ReadOnlySpan<byte> buffer, out SsmpServerMessage message, out int consumed, out SsmpError error)
    {
        message = default;
        consumed = 0;
        error = SsmpError.None;
        if (buffer.Length < 4)
        {
            // Check the digits we have so garbage is refused at once.
            for (var i = 0; i < buffer.Length && i < 3; i++)
            {
                if (!IsDigit(buffer[i]))
                    return Fail(SsmpError.BadCode, out error);
            }
            return SsmpParseStatus.NeedMoreData;
        }
        if (!IsDigit(buffer[0]) || !IsDigit(buffer[1]) || !IsDigit(buffer[2]))
            return Fail(SsmpError.BadCode, out error);
        var code = (buffer[0] - '0') * 100 + (buffer[1] - '0') * 10 + (buffer[2] - '0');
        var sep = buffer[3];
        if (code != 0)
        {
            if (sep == Lf)
            {
                consumed = 4;
                message = new SsmpServerMessage { Code = code, Message = buffer[..4] };
                return SsmpParseStatus.Complete;
            }
            if (sep != Sp)
                return Fail(SsmpError.BadCode, out error);
            var ps = ReadPayload(buffer, 4, out var payloadEnd, out error);
            if (ps != SsmpParseStatus.Complete)
                return ps;
            consumed = payloadEnd + 1;
            message = new SsmpServerMessage { Code = code, Payload = buffer[4..payloadEnd], Message = buffer[..consumed] };
            return SsmpParseStatus.Complete;
        }

        // Event: 000 SP from SP forwardable
        if (sep != Sp)
            return Fail(SsmpError.MissingField, out error);
        var s = ReadId(buffer, 4, out var idEnd, out error);
        if (s != SsmpParseStatus.Complete)
            return s;
        if (buffer[idEnd] != Sp)
            return Fail(SsmpError.MissingField, out error);
        var from = buffer[4..idEnd];
        s = ParseRequestAt(buffer, idEnd + 1, allowLoginAndClose: false, out var forwarded, out consumed, out error);
        if (s != SsmpParseStatus.Complete)
            return s;
        message = new SsmpServerMessage { Code = 0, From = from, Event = forwarded, Message = buffer[..consumed] };
        return SsmpParseStatus.Complete;
    }

    private static SsmpParseStatus ParseRequestAt(ReadOnlySpan<byte> buffer, int start, bool allowLoginAndClose,
        out SsmpRequest request, out int consumed, out SsmpError error)
    {
        request = default;
        consumed = 0;
        var status = ReadVerb(buffer, start, out var verbEnd, out error);
        if (status != SsmpParseStatus.Complete)
            return status;
        var verbToken = buffer[start..verbEnd];
        var verb = Classify(verbToken);
        var hasArgs = buffer[verbEnd] == Sp;
        var p = verbEnd + 1;
        ReadOnlySpan<byte> id = default, scheme = default, payload = default;
        var presence = false;
        int end; // index of the final LF

        switch (verb)
        {
            case SsmpVerb.Ucast:
            case SsmpVerb.Mcast:
                // "UCAST" SP id SP payload / "MCAST" SP id SP payload
                if (!hasArgs)
                    return Fail(SsmpError.MissingField, out error);
                status = ReadId(buffer, p, out var idEnd, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                if (buffer[idEnd] != Sp)
                    return Fail(SsmpError.MissingField, out error);
                id = buffer[p..idEnd];
                status = ReadPayload(buffer, idEnd + 1, out end, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                payload = buffer[(idEnd + 1)..end];
                break;

            case SsmpVerb.Bcast:
                // "BCAST" SP payload
                if (!hasArgs)
                    return Fail(SsmpError.MissingField, out error);
                status = ReadPayload(buffer, p, out end, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                payload = buffer[p..end];
                break;

            case SsmpVerb.Subscribe:
                // "SUBSCRIBE" SP id [ SP "PRESENCE" ]
                if (!hasArgs)
                    return Fail(SsmpError.MissingField, out error);
                status = ReadId(buffer, p, out idEnd, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                id = buffer[p..idEnd];
                if (buffer[idEnd] == Lf)
                {
                    end = idEnd;
                    break;
                }
                status = ReadFlag(buffer, idEnd + 1, "PRESENCE"u8, out end, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                presence = true;
                break;

            case SsmpVerb.Unsubscribe:
                // "UNSUBSCRIBE" SP id
                if (!hasArgs)
                    return Fail(SsmpError.MissingField, out error);
                status = ReadId(buffer, p, out idEnd, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                if (buffer[idEnd] != Lf)
                    return Fail(SsmpError.ExtraField, out error);
                id = buffer[p..idEnd];
                end = idEnd;
                break;

            case SsmpVerb.Login:
                // "LOGIN" SP id SP scheme [ SP payload ]
                if (!allowLoginAndClose)
                    return Fail(SsmpError.NotForwardable, out error);
                if (!hasArgs)
                    return Fail(SsmpError.MissingField, out error);
                status = ReadId(buffer, p, out idEnd, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                if (buffer[idEnd] != Sp)
                    return Fail(SsmpError.MissingField, out error);
                id = buffer[p..idEnd];
                var sStart = idEnd + 1;
                status = ReadId(buffer, sStart, out var schemeEnd, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                scheme = buffer[sStart..schemeEnd];
                if (buffer[schemeEnd] == Lf)
                {
                    end = schemeEnd;
                    break;
                }
                status = ReadPayload(buffer, schemeEnd + 1, out end, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                payload = buffer[(schemeEnd + 1)..end];
                break;

            case SsmpVerb.Close:
            case SsmpVerb.Ping:
            case SsmpVerb.Pong:
                if (verb == SsmpVerb.Close && !allowLoginAndClose)
                    return Fail(SsmpError.NotForwardable, out error);
                if (hasArgs)
                    return Fail(SsmpError.ExtraField, out error);
                end = verbEnd;
                break;

            default:
                // extension = verb [ SP id ] [ SP payload ]
                end = verbEnd;
                if (!hasArgs)
                    break;
                status = ParseExtensionArgs(buffer, p, out id, out payload, out end, out error);
                if (status != SsmpParseStatus.Complete)
                    return status;
                break;
        }

        consumed = end + 1;
        request = new SsmpRequest
        {
            Verb = verb,
            VerbToken = verbToken,
            Id = id,
            Scheme = scheme,
            Payload = payload,
            Presence = presence,
            Message = buffer[start..consumed],
        };
        return SsmpParseStatus.Complete;
    }

    /// <summary>
    /// Arguments of an unknown verb. A token of identifier characters followed by SP or LF is the id;
    /// anything else is the payload.
    /// </summary>
    private static SsmpParseStatus ParseExtensionArgs(ReadOnlySpan<byte> buffer, int p,
        out ReadOnlySpan<byte> id, out ReadOnlySpan<byte> payload, out int end, out SsmpError error)
    {
        id = default;
        payload = default;
        end = 0;
        error = SsmpError.None;
        var i = p;
        var limit = Math.Min(buffer.Length, p + SsmpGrammar.MaxIdLength + 1);
        while (i < limit && SsmpGrammar.IsIdChar(buffer[i]))
            i++;
        var tokenIsId = false;
        if (i > p)
        {
            if (i == buffer.Length)
            {
                if (i - p <= SsmpGrammar.MaxIdLength)
                    return SsmpParseStatus.NeedMoreData; // could still be an id, or a text payload
                // 65+ id characters in a row: only a text payload can be this long.
            }
            else if (i - p <= SsmpGrammar.MaxIdLength && (buffer[i] == Sp || buffer[i] == Lf))
            {
                tokenIsId = true;
            }
        }
        if (tokenIsId)
        {
            id = buffer[p..i];
            if (buffer[i] == Lf)
            {
                end = i;
                return SsmpParseStatus.Complete;
            }
            p = i + 1;
        }
        var status = ReadPayload(buffer, p, out end, out error);
        if (status == SsmpParseStatus.Complete)
            payload = buffer[p..end];
        return status;
    }

    /// <summary>verb = 1*16UPPER, followed by SP or LF. On success <paramref name="end"/> is the separator's index.</summary>
    private static SsmpParseStatus ReadVerb(ReadOnlySpan<byte> buffer, int start, out int end, out SsmpError error)
    {
        end = 0;
        error = SsmpError.None;
        var i = start;
        var limit = Math.Min(buffer.Length, start + SsmpGrammar.MaxVerbLength + 1);
        while (i < limit)
        {
            var b = buffer[i];
            if (b is >= (byte)'A' and <= (byte)'Z')
            {
                i++;
                continue;
            }
            if (b == Sp || b == Lf)
            {
                if (i == start)
                    return Fail(b == Lf ? SsmpError.EmptyLine : SsmpError.BadVerb, out error);
                end = i;
                return SsmpParseStatus.Complete;
            }
            return Fail(SsmpError.BadVerb, out error);
        }
        if (i - start > SsmpGrammar.MaxVerbLength)
            return Fail(SsmpError.VerbTooLong, out error);
        return SsmpParseStatus.NeedMoreData;
    }

    /// <summary>id = 1*64IDCHAR, followed by SP or LF. On success <paramref name="end"/> is the separator's index.</summary>
    private static SsmpParseStatus ReadId(ReadOnlySpan<byte> buffer, int start, out int end, out SsmpError error)
    {
        end = 0;
        error = SsmpError.None;
        var i = start;
        var limit = Math.Min(buffer.Length, start + SsmpGrammar.MaxIdLength + 1);
        while (i < limit)
        {
            var b = buffer[i];
            if (SsmpGrammar.IsIdChar(b))
            {
                i++;
                continue;
            }
            if (b == Sp || b == Lf)
            {
                if (i == start)
                    return Fail(SsmpError.MissingField, out error);
                end = i;
                return SsmpParseStatus.Complete;
            }
            return Fail(SsmpError.BadId, out error);
        }
        if (i - start > SsmpGrammar.MaxIdLength)
            return Fail(SsmpError.IdTooLong, out error);
        return SsmpParseStatus.NeedMoreData;
    }

    /// <summary>A fixed flag word that must be followed by LF.</summary>
    private static SsmpParseStatus ReadFlag(ReadOnlySpan<byte> buffer, int start, ReadOnlySpan<byte> flag, out int end, out SsmpError error)
    {
        end = 0;
        error = SsmpError.None;
        var available = buffer.Length - start;
        var n = Math.Min(available, flag.Length + 1);
        for (var k = 0; k < n; k++)
        {
            var expected = k < flag.Length ? flag[k] : Lf;
            if (buffer[start + k] != expected)
                return Fail(SsmpError.BadFlag, out error);
        }
        if (available < flag.Length + 1)
            return SsmpParseStatus.NeedMoreData;
        end = start + flag.Length;
        return SsmpParseStatus.Complete;
    }

    /// <summary>
    /// payload = text-payload / binary-payload, then LF. On success <paramref name="end"/> is the final LF's index.
    /// </summary>
    private static SsmpParseStatus ReadPayload(ReadOnlySpan<byte> buffer, int start, out int end, out SsmpError error)
    {
        end = 0;
        error = SsmpError.None;
        if (start >= buffer.Length)
            return SsmpParseStatus.NeedMoreData;
        var first = buffer[start];
        if (first <= 0x03)
        {
            // binary-payload = LENHI LENLO 1*1024OCTET; content length = LENHI*256+LENLO+1
            if (start + 1 >= buffer.Length)
                return SsmpParseStatus.NeedMoreData;
            var length = (first << 8 | buffer[start + 1]) + 1;
            var lfAt = start + SsmpGrammar.BinaryPrefixLength + length;
            if (lfAt >= buffer.Length)
                return SsmpParseStatus.NeedMoreData;
            if (buffer[lfAt] != Lf)
                return Fail(SsmpError.BinaryLengthMismatch, out error);
            end = lfAt;
            return SsmpParseStatus.Complete;
        }
        if (first == Lf)
            return Fail(SsmpError.EmptyPayload, out error);

        // text-payload = TFIRST *1023TANY
        var window = buffer.Slice(start, Math.Min(buffer.Length - start, SsmpGrammar.MaxPayloadLength + 1));
        var lf = window.IndexOf(Lf);
        if (lf < 0)
        {
            return window.Length > SsmpGrammar.MaxPayloadLength
                ? Fail(SsmpError.PayloadTooLong, out error)
                : SsmpParseStatus.NeedMoreData;
        }
        end = start + lf;
        return SsmpParseStatus.Complete;
    }

    private static SsmpVerb Classify(ReadOnlySpan<byte> verb)
    {
        switch (verb.Length)
        {
            case 4:
                if (verb.SequenceEqual("PING"u8))
                    return SsmpVerb.Ping;
                if (verb.SequenceEqual("PONG"u8))
                    return SsmpVerb.Pong;
                break;
            case 5:
                if (verb.SequenceEqual("UCAST"u8))
                    return SsmpVerb.Ucast;
                if (verb.SequenceEqual("MCAST"u8))
                    return SsmpVerb.Mcast;
                if (verb.SequenceEqual("BCAST"u8))
                    return SsmpVerb.Bcast;
                if (verb.SequenceEqual("LOGIN"u8))
                    return SsmpVerb.Login;
                if (verb.SequenceEqual("CLOSE"u8))
                    return SsmpVerb.Close;
                break;
            case 9:
                if (verb.SequenceEqual("SUBSCRIBE"u8))
                    return SsmpVerb.Subscribe;
                break;
            case 11:
                if (verb.SequenceEqual("UNSUBSCRIBE"u8))
                    return SsmpVerb.Unsubscribe;
                break;
        }
        return SsmpVerb.Extension;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsDigit(byte b) => b is >= (byte)'0' and <= (byte)'9';

    private static SsmpParseStatus Fail(SsmpError reason, out SsmpError error)
    {
        error = reason;
        return SsmpParseStatus.Invalid;
    }
}
