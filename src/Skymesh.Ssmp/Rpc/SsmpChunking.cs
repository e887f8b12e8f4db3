using System.Buffers.Binary;

namespace Skymesh.Ssmp.Rpc;

/// <summary>
/// Splits messages larger than one SSMP payload into fragments and describes a fragment's header
/// (docs/ssmp-rpc.md): <c>0xF5 | message id u32 | index u16 | count u16 | data</c>, big-endian.
/// </summary>
public static class SsmpChunking
{
    public const byte Marker = 0xF5;
    public const int HeaderLength = 9;
    public const int MaxFragmentData = Codec.SsmpGrammar.MaxPayloadLength - HeaderLength;
    public const int MaxFragments = ushort.MaxValue;

    /// <summary>Largest message the format can carry (65,535 fragments).</summary>
    public const long MaxMessageLength = (long)MaxFragments * MaxFragmentData;

    /// <summary>Number of fragments for a message of <paramref name="length"/> bytes (at least one, even when empty).</summary>
    public static int FragmentCount(int length) => length == 0 ? 1 : (length + MaxFragmentData - 1) / MaxFragmentData;

    /// <summary>Writes fragment <paramref name="index"/> of <paramref name="message"/> and returns it as a payload.</summary>
    public static byte[] Fragment(uint messageId, ReadOnlySpan<byte> message, int index)
    {
        var count = FragmentCount(message.Length);
        if (count > MaxFragments)
            throw new ArgumentException($"A message is at most {MaxMessageLength} bytes; this one is {message.Length}.", nameof(message));
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, count);
        var start = index * MaxFragmentData;
        var data = message.Slice(start, Math.Min(MaxFragmentData, message.Length - start));
        var payload = new byte[HeaderLength + data.Length];
        payload[0] = Marker;
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(1), messageId);
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(5), (ushort)index);
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(7), (ushort)count);
        data.CopyTo(payload.AsSpan(HeaderLength));
        return payload;
    }

    /// <summary>Writes the header of fragment <paramref name="index"/> of <paramref name="count"/> into the first <see cref="HeaderLength"/> bytes of <paramref name="destination"/>.</summary>
    public static void WriteHeader(Span<byte> destination, uint messageId, int index, int count)
    {
        destination[0] = Marker;
        BinaryPrimitives.WriteUInt32BigEndian(destination[1..], messageId);
        BinaryPrimitives.WriteUInt16BigEndian(destination[5..], (ushort)index);
        BinaryPrimitives.WriteUInt16BigEndian(destination[7..], (ushort)count);
    }

    public static bool IsFragment(ReadOnlySpan<byte> payload) => payload.Length >= HeaderLength && payload[0] == Marker;

    /// <summary>Reads a fragment header; false when the payload is not a well-formed fragment.</summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> payload, out uint messageId, out int index, out int count, out ReadOnlySpan<byte> data)
    {
        messageId = 0;
        index = count = 0;
        data = default;
        if (!IsFragment(payload))
            return false;
        messageId = BinaryPrimitives.ReadUInt32BigEndian(payload[1..]);
        index = BinaryPrimitives.ReadUInt16BigEndian(payload[5..]);
        count = BinaryPrimitives.ReadUInt16BigEndian(payload[7..]);
        data = payload[HeaderLength..];
        // Every fragment but the last is full; an empty message is one fragment with no data.
        if (count == 0 || index >= count)
            return false;
        if (index < count - 1 ? data.Length != MaxFragmentData : data.Length == 0 && count > 1)
            return false;
        return true;
    }
}
