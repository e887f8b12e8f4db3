namespace Skymesh.Identity;

/// <summary>
/// Hex digits without going through strings, so that a secret decoded from a key file or encoded into one lives
/// only in buffers that can be zeroed.
/// </summary>
internal static class Hex
{
    private const string LowerDigits = "0123456789abcdef";

    /// <summary>The value of one hex digit (either case), or -1.</summary>
    public static int Value(int c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => c - 'a' + 10,
        >= 'A' and <= 'F' => c - 'A' + 10,
        _ => -1,
    };

    /// <summary>Decodes <c>2 × bytes.Length</c> hex digits; returns the index of the first bad digit, or -1.</summary>
    public static int Decode(ReadOnlySpan<char> digits, Span<byte> bytes) => DecodeCore(digits, bytes);

    /// <inheritdoc cref="Decode(ReadOnlySpan{char}, Span{byte})"/>
    public static int Decode(ReadOnlySpan<byte> digits, Span<byte> bytes) => DecodeCore(digits, bytes);

    // One loop for text held as chars or as ASCII bytes.
    private static int DecodeCore<T>(ReadOnlySpan<T> digits, Span<byte> bytes)
        where T : unmanaged, System.Numerics.IBinaryInteger<T>
    {
        for (var i = 0; i < bytes.Length; i++)
        {
            var high = Value((char)ushort.CreateTruncating(digits[2 * i]));
            if (high < 0)
                return 2 * i;
            var low = Value((char)ushort.CreateTruncating(digits[2 * i + 1]));
            if (low < 0)
                return 2 * i + 1;
            bytes[i] = (byte)(high << 4 | low);
        }
        return -1;
    }

    public static void EncodeLower(ReadOnlySpan<byte> bytes, Span<char> digits)
    {
        for (var i = 0; i < bytes.Length; i++)
        {
            digits[2 * i] = LowerDigits[bytes[i] >> 4];
            digits[2 * i + 1] = LowerDigits[bytes[i] & 0xF];
        }
    }

    public static void EncodeLower(ReadOnlySpan<byte> bytes, Span<byte> digits)
    {
        for (var i = 0; i < bytes.Length; i++)
        {
            digits[2 * i] = (byte)LowerDigits[bytes[i] >> 4];
            digits[2 * i + 1] = (byte)LowerDigits[bytes[i] & 0xF];
        }
    }
}
