using System.Buffers.Binary;
using System.IO.Hashing;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Journal;

/// <summary>
/// The engine's commands in one append-only file, in the order the engine took them. Each record is
/// <c>length(4) crc32(4) payload</c>, little-endian; the payload is the command's fields (docs/exchange.md, "Journal").
/// Records are appended to a buffer and written and fsynced together by <see cref="Commit"/> (group commit): nothing is
/// acknowledged before the commit that holds it returns. On open, a torn or corrupt tail — a crash in the middle of a
/// write — is cut off: everything before it was committed whole. One thread appends; commits may run on another thread
/// at the same time (the appender fills a second buffer while the first is written and fsynced).
/// </summary>
public sealed class FileJournal : ICommandJournal
{
    private const int HeaderLength = 8;
    private static readonly byte[] Magic = "SKYMESH-EXCHANGE-JOURNAL-1\n"u8.ToArray();

    private readonly FileStream _file;
    private readonly Lock _append = new();
    private readonly Lock _commit = new();
    private byte[] _buffer = new byte[1 << 16];
    private byte[] _spare = new byte[1 << 16];
    private int _buffered;
    private int _pending;
    private long _records;

    private FileJournal(FileStream file, long records)
    {
        _file = file;
        _records = records;
    }

    /// <summary>Records committed so far (after open: those found whole).</summary>
    public long Records => Interlocked.Read(ref _records);

    /// <summary>Records appended and not yet committed.</summary>
    public int Pending => Volatile.Read(ref _pending);

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
        var payload = new byte[CommandCodec.MaxLength];
        long records = 0;
        var end = (long)Magic.Length;
        while (true)
        {
            if (reader.ReadAtLeast(header, HeaderLength, throwOnEndOfStream: false) < HeaderLength)
                break;
            var length = BinaryPrimitives.ReadInt32LittleEndian(header);
            if (length < CommandCodec.MinLength || length > payload.Length)
                break;
            if (reader.ReadAtLeast(payload.AsSpan(0, length), length, throwOnEndOfStream: false) < length)
                break;
            if (Crc32.HashToUInt32(payload.AsSpan(0, length)) != BinaryPrimitives.ReadUInt32LittleEndian(header[4..]))
                break;
            replay?.Invoke(CommandCodec.Read(payload.AsSpan(0, length)));
            records++;
            end += HeaderLength + length;
        }
        return (records, end);
    }

    /// <summary>Adds a command to the next commit.</summary>
    public void Append(in ExchangeCommand command)
    {
        var length = CommandCodec.Length(command);
        lock (_append)
        {
            if (_buffer.Length - _buffered < HeaderLength + length)
                Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _buffered + HeaderLength + length));
            var record = _buffer.AsSpan(_buffered, HeaderLength + length);
            var p = record[HeaderLength..];
            CommandCodec.Write(command, p);
            BinaryPrimitives.WriteInt32LittleEndian(record, length);
            BinaryPrimitives.WriteUInt32LittleEndian(record[4..], Crc32.HashToUInt32(p));
            _buffered += HeaderLength + length;
            _pending++;
        }
    }

    /// <summary>
    /// Writes every command appended before it was called and waits until the disk has them (fsync). Returns how many it
    /// committed. Commits run one at a time; appends go on meanwhile, into the next commit.
    /// </summary>
    public int Commit()
    {
        lock (_commit)
        {
            byte[] full;
            int length, committed;
            lock (_append)
            {
                if (_pending == 0)
                    return 0;
                (full, length, committed) = (_buffer, _buffered, _pending);
                (_buffer, _spare) = (_spare, _buffer);
                _buffered = 0;
                _pending = 0;
            }
            _file.Write(full, 0, length);
            _file.Flush(flushToDisk: true);
            Interlocked.Add(ref _records, committed);
            return committed;
        }
    }

    public void Dispose() => _file.Dispose();
}
