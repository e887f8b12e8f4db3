using System.Globalization;
using System.Numerics;

namespace Skymesh.Exchange;

/// <summary>Amounts as people write them ("12.5" SKY) and as the ledger keeps them (12,500,000 units at 6 decimal places): exactly, never through a float.</summary>
public static class AssetAmount
{
    /// <summary>
    /// The whole number of smallest units that <paramref name="text"/> (digits, at most one point, at most
    /// <paramref name="scale"/> digits after it) names; false for anything else, a negative amount, or one past
    /// <see cref="long.MaxValue"/> units.
    /// </summary>
    public static bool TryParse(string? text, int scale, out long units) => TryParse(text.AsSpan(), scale, out units);

    /// <inheritdoc cref="TryParse(string?, int, out long)"/>
    public static bool TryParse(ReadOnlySpan<char> text, int scale, out long units)
    {
        units = 0;
        if (text.IsEmpty || scale is < 0 or > 18)
            return false;
        var point = text.IndexOf('.');
        var whole = point < 0 ? text : text[..point];
        var fraction = point < 0 ? [] : text[(point + 1)..];
        if ((whole.Length == 0 && fraction.Length == 0) || fraction.Length > scale || whole.ContainsAnyExceptInRange('0', '9') || fraction.ContainsAnyExceptInRange('0', '9'))
            return false;
        // Up to 18 digits in all fit a long without any chance of overflow: the common case, without big integers.
        if (whole.Length + scale <= 18)
        {
            long exact = 0;
            foreach (var c in whole)
                exact = exact * 10 + (c - '0');
            for (var i = 0; i < scale; i++)
                exact = exact * 10 + (i < fraction.Length ? fraction[i] - '0' : 0);
            units = exact;
            return true;
        }
        var value = (whole.Length == 0 ? BigInteger.Zero : BigInteger.Parse(whole, NumberStyles.Integer, CultureInfo.InvariantCulture)) * BigInteger.Pow(10, scale)
            + (fraction.Length == 0 ? BigInteger.Zero : BigInteger.Parse(fraction, NumberStyles.Integer, CultureInfo.InvariantCulture) * BigInteger.Pow(10, scale - fraction.Length));
        if (value > long.MaxValue)
            return false;
        units = (long)value;
        return true;
    }

    /// <summary>As <see cref="TryParse(ReadOnlySpan{char}, int, out long)"/>, for the UTF-8 of a request: the same answers.</summary>
    public static bool TryParse(ReadOnlySpan<byte> utf8, int scale, out long units)
    {
        units = 0;
        // Longer than any amount a long holds (19 digits and a point) with all the zeros one may lead with: refused the
        // slow way, so that the answer is the same as for the text.
        if (utf8.Length > 128)
            return TryParse(System.Text.Encoding.UTF8.GetString(utf8), scale, out units);
        // Each byte widened to a char: digits and '.' stay themselves, anything else stays something that is neither.
        Span<char> text = stackalloc char[utf8.Length];
        for (var i = 0; i < utf8.Length; i++)
            text[i] = (char)utf8[i];
        return TryParse(text, scale, out units);
    }

    /// <summary><paramref name="units"/> written with <paramref name="scale"/> decimal places ("12.500000").</summary>
    public static string Format(long units, int scale)
    {
        if (units >= 0 && scale is > 0 and <= 18)
        {
            var divisor = Pow10[scale];
            return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{units / divisor}.{(units % divisor).ToString(System.Globalization.CultureInfo.InvariantCulture).PadLeft(scale, '0')}");
        }
        return FormatAny(units, scale);
    }

    /// <summary>Writes what <see cref="Format"/> gives as UTF-8, for the common case (a non-negative amount, 1 to 18 decimals); false otherwise.</summary>
    public static bool TryFormat(long units, int scale, Span<byte> utf8, out int written)
    {
        written = 0;
        if (units < 0 || scale is <= 0 or > 18)
            return false;
        var divisor = Pow10[scale];
        if (!System.Buffers.Text.Utf8Formatter.TryFormat(units / divisor, utf8, out var whole) || utf8.Length < whole + 1 + scale)
            return false;
        utf8[whole] = (byte)'.';
        if (!System.Buffers.Text.Utf8Formatter.TryFormat(units % divisor, utf8[(whole + 1)..], out var fraction, new System.Buffers.StandardFormat('D', (byte)scale)))
            return false;
        written = whole + 1 + fraction;
        return true;
    }

    private static readonly long[] Pow10 = [.. Enumerable.Range(0, 19).Select(i => (long)BigInteger.Pow(10, i))];

    private static string FormatAny(long units, int scale)
    {
        var sign = units < 0 ? "-" : "";
        var magnitude = BigInteger.Abs(units);
        if (scale == 0)
            return sign + magnitude.ToString(CultureInfo.InvariantCulture);
        var divisor = BigInteger.Pow(10, scale);
        var fraction = (magnitude % divisor).ToString(CultureInfo.InvariantCulture).PadLeft(scale, '0');
        return $"{sign}{(magnitude / divisor).ToString(CultureInfo.InvariantCulture)}.{fraction}";
    }
}
