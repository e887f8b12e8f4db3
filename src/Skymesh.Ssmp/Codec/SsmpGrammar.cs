namespace Skymesh.Ssmp.Codec;

/// <summary>Limits and character classes of SSMP 1.1 (see docs/ssmp.md, "Lines on the wire").</summary>
public static class SsmpGrammar
{
    public const byte Lf = (byte)'\n';
    public const byte Sp = (byte)' ';
    public const int MaxVerbLength = 16;
    public const int MaxIdLength = 64;
    public const int MaxPayloadLength = 1024;
    public const int BinaryPrefixLength = 2;

    /// <summary>LOGIN with a 64-byte id, a 64-byte scheme and a full binary credential.</summary>
    public const int MaxRequestLength = 5 + 1 + MaxIdLength + 1 + MaxIdLength + 1 + BinaryPrefixLength + MaxPayloadLength + 1;

    /// <summary>An extension verb with id and full binary payload, forwarded as an event.</summary>
    public const int MaxForwardableLength = MaxVerbLength + 1 + MaxIdLength + 1 + BinaryPrefixLength + MaxPayloadLength + 1;

    public const int MaxEventLength = 4 + MaxIdLength + 1 + MaxForwardableLength;

    public const int MaxResponseLength = 3 + 1 + BinaryPrefixLength + MaxPayloadLength + 1;

    /// <summary>Longest message either side may send; a buffer this large always holds one whole message.</summary>
    public const int MaxMessageLength = MaxEventLength > MaxRequestLength ? MaxEventLength : MaxRequestLength;

    private static ReadOnlySpan<byte> IdCharTable =>
    [
        // 0x00-0x2F: only '+' (2B), '-' (2D), '.' (2E), '/' (2F)
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1,
        // 0x30-0x3F: digits, ':' (3A), '=' (3D)
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0,
        // 0x40-0x5F: '@', A-Z, '_' (5F)
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1,
        // 0x60-0x7F: a-z, '~' (7E)
        0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0,
    ];

    public static bool IsIdChar(byte b) => b < 0x80 && IdCharTable[b] != 0;

    public static bool IsIdChar(char c) => c < 0x80 && IdCharTable[c] != 0;

    public static bool IsValidId(ReadOnlySpan<byte> id)
    {
        if (id.IsEmpty || id.Length > MaxIdLength)
            return false;
        foreach (var b in id)
        {
            if (!IsIdChar(b))
                return false;
        }
        return true;
    }

    public static bool IsValidId(ReadOnlySpan<char> id)
    {
        if (id.IsEmpty || id.Length > MaxIdLength)
            return false;
        foreach (var c in id)
        {
            if (!IsIdChar(c))
                return false;
        }
        return true;
    }

    /// <summary>Throws a clear <see cref="ArgumentException"/> when <paramref name="id"/> is not a legal SSMP identifier.</summary>
    public static void ValidateId(string id, string paramName)
    {
        ArgumentNullException.ThrowIfNull(id, paramName);
        if (id.Length == 0)
            throw new ArgumentException("An SSMP identifier cannot be empty.", paramName);
        if (id.Length > MaxIdLength)
            throw new ArgumentException($"An SSMP identifier has at most {MaxIdLength} characters; got {id.Length}.", paramName);
        foreach (var c in id)
        {
            if (!IsIdChar(c))
                throw new ArgumentException($"'{c}' (U+{(int)c:X4}) is not allowed in an SSMP identifier; use letters, digits and . : @ / _ - + = ~", paramName);
        }
    }

    /// <summary>A payload can travel as text when it is 1..1024 bytes, has no LF, and does not start with 0x00-0x03.</summary>
    public static bool CanBeText(ReadOnlySpan<byte> content) =>
        content.Length is > 0 and <= MaxPayloadLength && content[0] > 0x03 && !content.Contains(Lf);

    /// <summary>Wire size of <paramref name="content"/> as a payload (text when possible, else binary).</summary>
    public static int EncodedPayloadLength(ReadOnlySpan<byte> content) =>
        CanBeText(content) ? content.Length : BinaryPrefixLength + content.Length;

    /// <summary>The content of a payload as it appears on the wire: strips the binary length prefix.</summary>
    public static ReadOnlySpan<byte> PayloadContent(ReadOnlySpan<byte> wirePayload) =>
        wirePayload.Length >= BinaryPrefixLength + 1 && wirePayload[0] <= 0x03 ? wirePayload[BinaryPrefixLength..] : wirePayload;
}
