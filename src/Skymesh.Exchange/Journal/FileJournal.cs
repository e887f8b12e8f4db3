using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Journal;

/// <summary>
/// The engine's commands in one append-only file, in the order the engine took them. Each record is
/// <c>length(4) crc32(4) payload</c>, little-endian; the payload is the command's fields (docs/exchange.md, "Journal").
/// Records are appended to a buffer and written and fsynced together by <see cref="Commit"/> (group commit): nothing is
/// acknowledged before the commit that holds it returns. On open, a torn or corrupt tail — a crash in the middle of a
/// write — is cut off: everything before it was committed whole.
/// </summary>
public sealed class FileJournal : IDisposable
{
    private const int HeaderLength = 8;
    private const int FixedPayload = 6 + 3 * 4 + 4 * 8 + 2;
    private static readonly byte[] Magic = "SKYMESH-EXCHANGE-JOURNAL-1\n"u8.ToArray();

    private readonly FileStream _file;
    private byte[] _buffer = new byte[1 << 16];
    private int _buffered;
    private long _records;

    private FileJournal(FileStream file, long records)
    {
        _file = file;
        _records = records;
    }

    /// <summary>Records committed so far (after open: those found whole).</summary>
    public long Records => _records;

    /// <summary>Records appended and not yet committed.</summary>
    public int Pending { get; private set; }

    /// <summary>Bytes cut off the end when the journal was opened (a torn tail), 0 when it was whole.</summary>
    public long TornBytes { get; private set; }

    /// <summary>
    /// Opens (or creates) a journal and hands every whole record in it to <paramref name="replay"/>, in order; cuts off a torn
    /// tail. The file is only ever opened by one process (an exclusive lock), and is readable by its owner only.
    /// </summary>
    public static FileJournal Open(string path, Action<ExchangeCommand>? replay = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var options = new FileStreamOptions
        {
            Mode = FileMode.OpenOrCreate,
            Access = FileAccess.ReadWrite,
            Share = FileShare.None,
            Options = FileOptions.None,
        };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        var file = new FileStream(path, options);
        try
        {
            if (file.Length == 0)
            {
                file.Write(Magic);
                file.Flush(flushToDisk: true);
            }
            else
            {
                Span<byte> magic = stackalloc byte[Magic.Length];
                if (file.Read(magic) != Magic.Length || !magic.SequenceEqual(Magic))
                    throw new InvalidDataException($"{path} is not an exchange journal.");
            }
            var (records, end) = ReadRecords(file, replay);
            var journal = new FileJournal(file, records) { TornBytes = file.Length - end };
            if (end < file.Length)
            {
                file.SetLength(end);
                file.Flush(flushToDisk: true);
            }
            file.Position = end;
            return journal;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static (long Records, long End) ReadRecords(FileStream file, Action<ExchangeCommand>? replay)
    {
        var reader = new BufferedStream(file, 1 << 20);
        Span<byte> header = stackalloc byte[HeaderLength];
        var payload = new byte[FixedPayload + 1024];
        long records = 0;
        var end = (long)Magic.Length;
        while (true)
        {
            if (reader.ReadAtLeast(header, HeaderLength, throwOnEndOfStream: false) < HeaderLength)
                break;
            var length = BinaryPrimitives.ReadInt32LittleEndian(header);
            if (length < FixedPayload || length > payload.Length)
                break;
            if (reader.ReadAtLeast(payload.AsSpan(0, length), length, throwOnEndOfStream: false) < length)
                break;
            if (Crc32.HashToUInt32(payload.AsSpan(0, length)) != BinaryPrimitives.ReadUInt32LittleEndian(header[4..]))
                break;
            replay?.Invoke(Decode(payload.AsSpan(0, length)));
            records++;
            end += HeaderLength + length;
        }
        return (records, end);
    }

    /// <summary>Adds a command to the next commit.</summary>
    public void Append(in ExchangeCommand command)
    {
        var keyLength = command.Key is null ? 0 : Encoding.UTF8.GetByteCount(command.Key);
        if (keyLength > 1024)
            throw new ArgumentException("An idempotency key may have at most 1,024 bytes.", nameof(command));
        var length = FixedPayload + keyLength;
        if (_buffer.Length - _buffered < HeaderLength + length)
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _buffered + HeaderLength + length));
        var record = _buffer.AsSpan(_buffered, HeaderLength + length);
        var p = record[HeaderLength..];
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
        BinaryPrimitives.WriteUInt16LittleEndian(p[50..], command.Key is null ? ushort.MaxValue : (ushort)keyLength);
        if (command.Key is not null)
            Encoding.UTF8.GetBytes(command.Key, p[FixedPayload..]);
        BinaryPrimitives.WriteInt32LittleEndian(record, length);
        BinaryPrimitives.WriteUInt32LittleEndian(record[4..], Crc32.HashToUInt32(p));
        _buffered += HeaderLength + length;
        Pending++;
    }

    /// <summary>Writes every appended command and waits until the disk has them (fsync). Returns how many it committed.</summary>
    public int Commit()
    {
        if (Pending == 0)
            return 0;
        _file.Write(_buffer, 0, _buffered);
        _file.Flush(flushToDisk: true);
        var committed = Pending;
        _records += committed;
        _buffered = 0;
        Pending = 0;
        return committed;
    }

    private static ExchangeCommand Decode(ReadOnlySpan<byte> p)
    {
        var keyLength = BinaryPrimitives.ReadUInt16LittleEndian(p[50..]);
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
            Key = keyLength == ushort.MaxValue ? null : Encoding.UTF8.GetString(p.Slice(FixedPayload, keyLength)),
        };
    }

    public void Dispose() => _file.Dispose();
}
