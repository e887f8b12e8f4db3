using System.Buffers.Binary;

namespace Skymesh.Mesh.Wire;

/// <summary>Constants of the link wire format (docs/wire-format.md).</summary>
public static class MeshWire
{
    /// <summary>First byte of every frame: 0xA marks Skymesh, 1 is the format version.</summary>
    public const byte FrameMarker = 0xA1;

    public const int FrameHeaderLength = 12;
    public const int MessageHeaderLength = 8;

    /// <summary>ChaCha20-Poly1305 tag after the body of an encrypted frame.</summary>
    public const int TagLength = 16;

    /// <summary>Largest frame: the largest UDP payload over IPv4.</summary>
    public const int MaxFrameLength = 65_507;

    /// <summary>Largest message payload: a frame holding one message, encrypted.</summary>
    public const int MaxPayloadLength = MaxFrameLength - FrameHeaderLength - MessageHeaderLength - TagLength;

    /// <summary>Smallest MTU a link may be configured with (IPv6's minimum less IP and UDP headers).</summary>
    public const int MinMtu = 1232;

    /// <summary>Label 0 carries link control messages; labels 1 and up name paths.</summary>
    public const uint ControlLabel = 0;

    /// <summary>Writes one message (8-byte header, then the payload) at the start of <paramref name="destination"/>; returns its length.</summary>
    public static int WriteMessage(Span<byte> destination, uint label, byte type, ReadOnlySpan<byte> payload)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, label);
        destination[4] = type;
        destination[5] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)payload.Length);
        payload.CopyTo(destination[MessageHeaderLength..]);
        return MessageHeaderLength + payload.Length;
    }

    /// <summary>
    /// Finishes a frame whose messages fill <paramref name="buffer"/> from the header up to <paramref name="length"/>:
    /// writes the header and, with a cipher, seals the body in place and appends the tag (the buffer must have room
    /// for it). Returns the frame's length.
    /// </summary>
    public static int SealFrame(Span<byte> buffer, int length, ulong sequence, FrameCipher? cipher)
    {
        new FrameHeader(cipher is null ? FrameFlags.None : FrameFlags.Encrypted, sequence).Write(buffer);
        if (cipher is null)
            return length;
        cipher.Encrypt(sequence, buffer[..FrameHeaderLength], buffer[FrameHeaderLength..length], buffer.Slice(length, TagLength));
        return length + TagLength;
    }
}

[Flags]
public enum FrameFlags : byte
{
    None = 0,

    /// <summary>The body is ChaCha20-Poly1305 ciphertext followed by its 16-byte tag.</summary>
    Encrypted = 0x01,
}

/// <summary>Why a frame or message was refused; each is counted, none is thrown.</summary>
public enum WireError : byte
{
    None,
    TooShort,
    TooLong,
    BadMarker,
    ReservedBitsSet,
    TruncatedMessage,
    ReservedFieldSet,
    BadControlMessage,
    DecryptionFailed,
}

/// <summary>
/// Frame header: <c>marker(1) flags(1) reserved(2) sequence(8)</c>, big-endian. The sequence counts frames
/// per link and direction; it is the AEAD nonce of encrypted frames and tells the receiver about loss.
/// </summary>
public readonly record struct FrameHeader(FrameFlags Flags, ulong Sequence)
{
    public void Write(Span<byte> destination)
    {
        destination[0] = MeshWire.FrameMarker;
        destination[1] = (byte)Flags;
        destination[2] = 0;
        destination[3] = 0;
        BinaryPrimitives.WriteUInt64BigEndian(destination[4..], Sequence);
    }

    public static bool TryRead(ReadOnlySpan<byte> frame, out FrameHeader header, out WireError error)
    {
        header = default;
        if (frame.Length < MeshWire.FrameHeaderLength)
            return Fail(WireError.TooShort, out error);
        if (frame.Length > MeshWire.MaxFrameLength)
            return Fail(WireError.TooLong, out error);
        if (frame[0] != MeshWire.FrameMarker)
            return Fail(WireError.BadMarker, out error);
        if ((frame[1] & ~(int)FrameFlags.Encrypted) != 0)
            return Fail(WireError.ReservedBitsSet, out error);
        if (frame[2] != 0 || frame[3] != 0)
            return Fail(WireError.ReservedFieldSet, out error);
        var flags = (FrameFlags)frame[1];
        if ((flags & FrameFlags.Encrypted) != 0 && frame.Length < MeshWire.FrameHeaderLength + MeshWire.TagLength)
            return Fail(WireError.TooShort, out error);
        header = new FrameHeader(flags, BinaryPrimitives.ReadUInt64BigEndian(frame[4..]));
        error = WireError.None;
        return true;
    }

    private static bool Fail(WireError reason, out WireError error)
    {
        error = reason;
        return false;
    }
}

/// <summary>One message of a frame: label, type and payload (a view into the frame).</summary>
public readonly ref struct MeshMessage(uint label, byte type, ReadOnlySpan<byte> payload)
{
    public uint Label { get; } = label;

    public byte Type { get; } = type;

    public ReadOnlySpan<byte> Payload { get; } = payload;
}

/// <summary>
/// Reads the messages of a frame body one after another: <c>label(4) type(1) reserved(1) length(2) payload</c>.
/// A message whose declared length passes the end of the body makes the whole rest invalid.
/// </summary>
public ref struct MessageReader(ReadOnlySpan<byte> body)
{
    private readonly ReadOnlySpan<byte> _body = body;
    private int _offset;

    public WireError Error { get; private set; }

    /// <summary>Reads the next message; false at the end of the body or on an error (see <see cref="Error"/>).</summary>
    public bool TryRead(out MeshMessage message)
    {
        message = default;
        var rest = _body.Length - _offset;
        if (rest == 0 || Error != WireError.None)
            return false;
        if (rest < MeshWire.MessageHeaderLength)
        {
            Error = WireError.TruncatedMessage;
            return false;
        }
        var header = _body.Slice(_offset, MeshWire.MessageHeaderLength);
        if (header[5] != 0)
        {
            Error = WireError.ReservedFieldSet;
            return false;
        }
        var length = BinaryPrimitives.ReadUInt16BigEndian(header[6..]);
        if (length > rest - MeshWire.MessageHeaderLength)
        {
            Error = WireError.TruncatedMessage;
            return false;
        }
        message = new MeshMessage(BinaryPrimitives.ReadUInt32BigEndian(header), header[4],
            _body.Slice(_offset + MeshWire.MessageHeaderLength, length));
        _offset += MeshWire.MessageHeaderLength + length;
        return true;
    }
}
