using System.Buffers.Binary;
using Skymesh.Identity;

namespace Skymesh.Control.Settlement;

/// <summary>
/// Bytes and what they cost at the prices they were forwarded at, counted exactly. The value is kept as
/// Σ bytes × price per MiB (micro-units × bytes / MiB, in 128 bits), and the amount is that sum divided by one MiB
/// (1,048,576 bytes) rounded down: rounding happens once, on the total, so it never accumulates — the amount is at
/// most one micro-unit below the exact value however many counts went into it. Payer and payee count the same way,
/// so the same bytes at the same prices give the same amount on both sides.
/// </summary>
internal struct Meter
{
    public const int MiBShift = 20;

    public long Bytes;
    public UInt128 Value;

    public readonly long Amount => AmountOf(Value);

    public void Add(long bytes, uint pricePerMiB)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Bytes = checked(Bytes + bytes);
        Value += (UInt128)(ulong)bytes * pricePerMiB;
    }

    /// <summary>Raises the count to at least what a receipt acknowledges (its amount taken as exact).</summary>
    public void RaiseTo(long bytes, long amount)
    {
        Bytes = Math.Max(Bytes, bytes);
        Value = UInt128.Max(Value, (UInt128)(ulong)amount << MiBShift);
    }

    public static long AmountOf(UInt128 value)
    {
        var amount = value >> MiBShift;
        return amount > long.MaxValue ? long.MaxValue : (long)amount;
    }
}

/// <summary>A node address as its 32 raw bytes, so a record's fields can be matched without the 13 µs point check.</summary>
internal readonly record struct AddressKey(ulong W0, ulong W1, ulong W2, ulong W3)
{
    public static AddressKey From(ReadOnlySpan<byte> bytes) => new(
        BinaryPrimitives.ReadUInt64BigEndian(bytes),
        BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]),
        BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]),
        BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]));

    public static AddressKey From(NodeAddress address)
    {
        Span<byte> bytes = stackalloc byte[NodeAddress.Length];
        address.WriteTo(bytes);
        return From(bytes);
    }
}
