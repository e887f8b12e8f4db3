using System.Buffers.Binary;
using System.Text;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Journal;

/// <summary>
/// A command as journal bytes, the same in every storage: kind, side, type, time in force, post-only and self-trade mode
/// (one byte each); owner, market, asset (4 bytes each); order id, price, quantity, amount (8 bytes each); the key's length
/// (2 bytes, 0xFFFF for none) and its UTF-8 bytes. Little-endian.
/// </summary>
public static class CommandCodec
{
    public const int MinLength = 6 + 3 * 4 + 4 * 8 + 2;

    public const int MaxKeyLength = 1024;

    public const int MaxLength = MinLength + MaxKeyLength;

    public static int Length(in ExchangeCommand command)
    {
        var keyLength = command.Key is null ? 0 : Encoding.UTF8.GetByteCount(command.Key);
        if (keyLength > MaxKeyLength)
            throw new ArgumentException($"A key may have at most {MaxKeyLength} bytes.", nameof(command));
        return MinLength + keyLength;
    }

    /// <summary>Writes the command into <paramref name="p"/>, which is exactly <see cref="Length"/> bytes.</summary>
    public static void Write(in ExchangeCommand command, Span<byte> p)
    {
        p[0] = (byte)command.Kind;
        p[1] = (byte)command.Side;
        p[2] = (byte)command.Type;
        p[3] = (byte)command.TimeInForce;
        p[4] = command.PostOnly ? (byte)1 : (byte)0;
        p[5] = (byte)command.Stp;
        BinaryPrimitives.WriteInt32LittleEndian(p[6..], command.Owner);
        BinaryPrimitives.WriteInt32LittleEndian(p[10..], command.Market);
        BinaryPrimitives.WriteInt32LittleEndian(p[14..], command.Asset);
        BinaryPrimitives.WriteInt64LittleEndian(p[18..], command.OrderId);
        BinaryPrimitives.WriteInt64LittleEndian(p[26..], command.Price);
        BinaryPrimitives.WriteInt64LittleEndian(p[34..], command.Quantity);
        BinaryPrimitives.WriteInt64LittleEndian(p[42..], command.Amount);
        if (command.Key is null)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(p[50..], ushort.MaxValue);
            return;
        }
        var written = Encoding.UTF8.GetBytes(command.Key, p[MinLength..]);
        BinaryPrimitives.WriteUInt16LittleEndian(p[50..], (ushort)written);
    }

    public static ExchangeCommand Read(ReadOnlySpan<byte> p)
    {
        if (p.Length < MinLength)
            throw new InvalidDataException("A journal record is shorter than a command.");
        var keyLength = BinaryPrimitives.ReadUInt16LittleEndian(p[50..]);
        if (keyLength != ushort.MaxValue && MinLength + keyLength != p.Length)
            throw new InvalidDataException("A journal record's key does not fit it.");
        return new ExchangeCommand
        {
            Kind = (CommandKind)p[0],
            Side = (Side)p[1],
            Type = (OrderType)p[2],
            TimeInForce = (TimeInForce)p[3],
            PostOnly = p[4] != 0,
            Stp = (SelfTradePrevention)p[5],
            Owner = BinaryPrimitives.ReadInt32LittleEndian(p[6..]),
            Market = BinaryPrimitives.ReadInt32LittleEndian(p[10..]),
            Asset = BinaryPrimitives.ReadInt32LittleEndian(p[14..]),
            OrderId = BinaryPrimitives.ReadInt64LittleEndian(p[18..]),
            Price = BinaryPrimitives.ReadInt64LittleEndian(p[26..]),
            Quantity = BinaryPrimitives.ReadInt64LittleEndian(p[34..]),
            Amount = BinaryPrimitives.ReadInt64LittleEndian(p[42..]),
            Key = keyLength == ushort.MaxValue ? null : Encoding.UTF8.GetString(p.Slice(MinLength, keyLength)),
        };
    }
}

/// <summary>Where a <see cref="JournaledExchange"/> keeps its commands: a file, or PostgreSQL.</summary>
public interface ICommandJournal : IDisposable
{
    /// <summary>Commands committed so far.</summary>
    long Records { get; }

    /// <summary>Bytes of a torn or corrupt tail cut off when the journal was opened (0 where a store cannot tear).</summary>
    long TornBytes { get; }

    /// <summary>Adds a command to the next commit.</summary>
    void Append(in ExchangeCommand command);

    /// <summary>Makes every appended command durable; returns how many.</summary>
    int Commit();
}
