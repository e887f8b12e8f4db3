using System.Buffers.Binary;
using System.Text;
using System.Text.Unicode;

namespace Skymesh.Mesh.Paths;

/// <summary>Message types on path labels (docs/wire-format.md, "Path messages").</summary>
public enum PathMessageType : byte
{
    Datagram = 16,
    StreamData = 17,
    StreamAck = 18,
    StreamClose = 19,
    Keepalive = 20,
}

/// <summary>Why a path message was refused; each is counted, none is thrown.</summary>
public enum PathWireError : byte
{
    None,
    Truncated,
    BadLength,
    ReservedBitsSet,
    OffsetTooLarge,
    TooManyBlocks,
    BadBlock,
    BadText,
}

/// <summary>A range of stream bytes <c>[Start, End)</c> that the receiver holds above its cumulative acknowledgement.</summary>
public readonly record struct SackBlock(long Start, long End)
{
    public long Length => End - Start;
}

/// <summary>
/// Codec of the path messages, no I/O. All integers big-endian. Offsets are byte positions in a stream;
/// they stay below 2^62 so that no sum of an offset and a length can overflow.
/// <code>
/// data:      stream(4) flags(1: FIN) offset(8) bytes…
/// ack:       stream(4) flags(1: FIN received) cumulative(8) window-limit(8) count(1) count × (start-delta(4) length(4))
/// close:     stream(4) flags(1: CONFIRM) code(2) reason-length(1) reason…
/// keepalive: flags(1: REPLY) token(8)
/// datagram:  bytes…
/// </code>
/// </summary>
public static class PathWire
{
    public const int DataHeaderLength = 13;
    public const int AckFixedLength = 22;
    public const int SackBlockLength = 8;
    public const int CloseFixedLength = 8;
    public const int KeepaliveLength = 9;

    /// <summary>Most SACK blocks one acknowledgement may carry.</summary>
    public const int MaxSackBlocks = 16;

    public const int MaxReasonBytes = 255;

    /// <summary>Offsets and window limits stay below this.</summary>
    public const long MaxOffset = 1L << 62;

    public const byte DataFin = 0x01;
    public const byte AckFin = 0x01;
    public const byte CloseConfirm = 0x01;
    public const byte KeepaliveReply = 0x01;

    public static int WriteData(Span<byte> destination, uint streamId, bool fin, long offset, ReadOnlySpan<byte> data)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, streamId);
        destination[4] = fin ? DataFin : (byte)0;
        BinaryPrimitives.WriteInt64BigEndian(destination[5..], offset);
        data.CopyTo(destination[DataHeaderLength..]);
        return DataHeaderLength + data.Length;
    }

    public static PathWireError TryReadData(ReadOnlySpan<byte> payload, out uint streamId, out bool fin, out long offset, out ReadOnlySpan<byte> data)
    {
        streamId = 0;
        fin = false;
        offset = 0;
        data = default;
        if (payload.Length < DataHeaderLength)
            return PathWireError.Truncated;
        if ((payload[4] & ~DataFin) != 0)
            return PathWireError.ReservedBitsSet;
        var rawOffset = BinaryPrimitives.ReadUInt64BigEndian(payload[5..]);
        if (rawOffset >= MaxOffset)
            return PathWireError.OffsetTooLarge;
        streamId = BinaryPrimitives.ReadUInt32BigEndian(payload);
        fin = payload[4] == DataFin;
        offset = (long)rawOffset;
        data = payload[DataHeaderLength..];
        return PathWireError.None;
    }

    public static int AckLength(int blocks) => AckFixedLength + blocks * SackBlockLength;

    public static int WriteAck(Span<byte> destination, uint streamId, bool finReceived, long cumulative, long windowLimit, ReadOnlySpan<SackBlock> blocks)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, streamId);
        destination[4] = finReceived ? AckFin : (byte)0;
        BinaryPrimitives.WriteInt64BigEndian(destination[5..], cumulative);
        BinaryPrimitives.WriteInt64BigEndian(destination[13..], windowLimit);
        destination[21] = (byte)blocks.Length;
        var at = AckFixedLength;
        foreach (var block in blocks)
        {
            BinaryPrimitives.WriteUInt32BigEndian(destination[at..], checked((uint)(block.Start - cumulative)));
            BinaryPrimitives.WriteUInt32BigEndian(destination[(at + 4)..], checked((uint)block.Length));
            at += SackBlockLength;
        }
        return at;
    }

    /// <summary>
    /// Reads an acknowledgement; <paramref name="blocks"/> must hold <see cref="MaxSackBlocks"/>. Every block
    /// must start above the cumulative acknowledgement (the byte at it is, by definition, missing) and be non-empty.
    /// </summary>
    public static PathWireError TryReadAck(ReadOnlySpan<byte> payload, out uint streamId, out bool finReceived, out long cumulative,
        out long windowLimit, Span<SackBlock> blocks, out int blockCount)
    {
        streamId = 0;
        finReceived = false;
        cumulative = 0;
        windowLimit = 0;
        blockCount = 0;
        if (payload.Length < AckFixedLength)
            return PathWireError.Truncated;
        if ((payload[4] & ~AckFin) != 0)
            return PathWireError.ReservedBitsSet;
        var count = payload[21];
        if (count > MaxSackBlocks)
            return PathWireError.TooManyBlocks;
        if (payload.Length != AckLength(count))
            return PathWireError.BadLength;
        var rawCumulative = BinaryPrimitives.ReadUInt64BigEndian(payload[5..]);
        var rawLimit = BinaryPrimitives.ReadUInt64BigEndian(payload[13..]);
        if (rawCumulative >= MaxOffset || rawLimit >= MaxOffset)
            return PathWireError.OffsetTooLarge;
        cumulative = (long)rawCumulative;
        for (var i = 0; i < count; i++)
        {
            var at = AckFixedLength + i * SackBlockLength;
            long delta = BinaryPrimitives.ReadUInt32BigEndian(payload[at..]);
            long length = BinaryPrimitives.ReadUInt32BigEndian(payload[(at + 4)..]);
            if (delta == 0 || length == 0)
                return PathWireError.BadBlock;
            var start = cumulative + delta;
            if (start + length >= MaxOffset)
                return PathWireError.OffsetTooLarge;
            blocks[i] = new SackBlock(start, start + length);
        }
        streamId = BinaryPrimitives.ReadUInt32BigEndian(payload);
        finReceived = payload[4] == AckFin;
        windowLimit = (long)rawLimit;
        blockCount = count;
        return PathWireError.None;
    }

    /// <summary>Bytes of <paramref name="reason"/> that go on the wire: UTF-8, cut to at most 255 bytes on a character boundary.</summary>
    public static int ReasonBytes(string reason, Span<byte> destination)
    {
        var encoder = Encoding.UTF8;
        if (encoder.GetByteCount(reason) <= MaxReasonBytes)
            return encoder.GetBytes(reason, destination);
        var chars = reason.AsSpan();
        var length = Math.Min(chars.Length, MaxReasonBytes);
        while (encoder.GetByteCount(chars[..length]) > MaxReasonBytes)
            length--;
        if (length > 0 && char.IsHighSurrogate(chars[length - 1]))
            length--;
        return encoder.GetBytes(chars[..length], destination);
    }

    public static int WriteClose(Span<byte> destination, uint streamId, bool confirm, ushort code, string reason)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, streamId);
        destination[4] = confirm ? CloseConfirm : (byte)0;
        BinaryPrimitives.WriteUInt16BigEndian(destination[5..], code);
        var length = ReasonBytes(reason, destination[CloseFixedLength..]);
        destination[7] = (byte)length;
        return CloseFixedLength + length;
    }

    public static PathWireError TryReadClose(ReadOnlySpan<byte> payload, out uint streamId, out bool confirm, out ushort code, out string reason)
    {
        streamId = 0;
        confirm = false;
        code = 0;
        reason = "";
        if (payload.Length < CloseFixedLength)
            return PathWireError.Truncated;
        if ((payload[4] & ~CloseConfirm) != 0)
            return PathWireError.ReservedBitsSet;
        if (payload.Length != CloseFixedLength + payload[7])
            return PathWireError.BadLength;
        var text = payload[CloseFixedLength..];
        if (!Utf8.IsValid(text))
            return PathWireError.BadText;
        streamId = BinaryPrimitives.ReadUInt32BigEndian(payload);
        confirm = payload[4] == CloseConfirm;
        code = BinaryPrimitives.ReadUInt16BigEndian(payload[5..]);
        reason = Encoding.UTF8.GetString(text);
        return PathWireError.None;
    }

    public static int WriteKeepalive(Span<byte> destination, bool reply, ulong token)
    {
        destination[0] = reply ? KeepaliveReply : (byte)0;
        BinaryPrimitives.WriteUInt64BigEndian(destination[1..], token);
        return KeepaliveLength;
    }

    public static PathWireError TryReadKeepalive(ReadOnlySpan<byte> payload, out bool reply, out ulong token)
    {
        reply = false;
        token = 0;
        if (payload.Length < KeepaliveLength)
            return PathWireError.Truncated;
        if (payload.Length != KeepaliveLength)
            return PathWireError.BadLength;
        if ((payload[0] & ~KeepaliveReply) != 0)
            return PathWireError.ReservedBitsSet;
        reply = payload[0] == KeepaliveReply;
        token = BinaryPrimitives.ReadUInt64BigEndian(payload[1..]);
        return PathWireError.None;
    }
}

/// <summary>Codes of a stream close message.</summary>
public enum StreamCloseCode : ushort
{
    /// <summary>The application abandoned the stream.</summary>
    Aborted = 0,

    /// <summary>The receiver has no such stream (it ended, or never existed).</summary>
    UnknownStream = 1,

    /// <summary>The receiver already holds as many streams from this peer as it accepts.</summary>
    Refused = 2,

    /// <summary>The endpoint was shut down.</summary>
    EndpointClosed = 3,
}
