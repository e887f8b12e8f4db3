using System.Buffers.Text;
using System.Text;

namespace Skymesh.Exchange.Service;

/// <summary>
/// Writes JSON text as UTF-8 straight into a buffer, for the answers and market-data messages written without a
/// <see cref="System.Text.Json.Utf8JsonWriter"/>: each call puts its bytes at <c>at</c> and moves it past them.
/// </summary>
internal static class Utf8Text
{
    public static void Put(Span<byte> destination, ref int at, ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(destination[at..]);
        at += bytes.Length;
    }

    public static void PutNumber(Span<byte> destination, ref int at, long value)
    {
        if (!Utf8Formatter.TryFormat(value, destination[at..], out var written))
            throw Outgrown();
        at += written;
    }

    public static void PutNumber(Span<byte> destination, ref int at, uint value)
    {
        if (!Utf8Formatter.TryFormat(value, destination[at..], out var written))
            throw Outgrown();
        at += written;
    }

    /// <summary>An amount as <see cref="AssetAmount.Format"/> writes it.</summary>
    public static void PutAmount(Span<byte> destination, ref int at, long units, int scale)
    {
        if (AssetAmount.TryFormat(units, scale, destination[at..], out var written))
            at += written;
        else
            at += Encoding.UTF8.GetBytes(AssetAmount.Format(units, scale), destination[at..]);
    }

    /// <summary>An amount as <see cref="AssetAmount.Format"/> writes it, in quotes (a JSON string).</summary>
    public static void PutQuotedAmount(Span<byte> destination, ref int at, long units, int scale)
    {
        destination[at++] = (byte)'"';
        PutAmount(destination, ref at, units, scale);
        destination[at++] = (byte)'"';
    }

    /// <summary><paramref name="key"/> (e.g. <c>,"fees":</c>), then the amount in quotes.</summary>
    public static void PutAmountField(Span<byte> destination, ref int at, ReadOnlySpan<byte> key, long units, int scale)
    {
        Put(destination, ref at, key);
        PutQuotedAmount(destination, ref at, units, scale);
    }

    private static InvalidOperationException Outgrown() => new("A message outgrew its buffer.");
}
