using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Skymesh.Mesh.Wire;

/// <summary>
/// Packs messages into one frame of at most <see cref="Mtu"/> bytes. A link fills it with whatever is queued
/// and sends it as one datagram (or TCP record): the batching that makes forwarding cheap. Reused frame
/// after frame; nothing is allocated per message.
/// </summary>
public sealed class FrameBuilder
{
    private readonly byte[] _buffer;
    private int _length = MeshWire.FrameHeaderLength;

    public FrameBuilder(int mtu)
    {
        if (mtu is < MeshWire.MinMtu or > MeshWire.MaxFrameLength)
            throw new ArgumentOutOfRangeException(nameof(mtu), mtu, $"A link MTU is {MeshWire.MinMtu} to {MeshWire.MaxFrameLength} bytes.");
        Mtu = mtu;
        _buffer = new byte[mtu];
    }

    public int Mtu { get; }

    /// <summary>Messages in the frame so far.</summary>
    public int Count { get; private set; }

    public bool IsEmpty => Count == 0;

    /// <summary>Largest payload that still fits, with room kept for the tag when the frame will be encrypted.</summary>
    public int Room(bool encrypted) =>
        Math.Max(0, Mtu - _length - MeshWire.MessageHeaderLength - (encrypted ? MeshWire.TagLength : 0));

    /// <summary>The largest payload an empty frame of this MTU can carry.</summary>
    public static int MaxPayload(int mtu, bool encrypted) =>
        mtu - MeshWire.FrameHeaderLength - MeshWire.MessageHeaderLength - (encrypted ? MeshWire.TagLength : 0);

    /// <summary>Appends one message; false (and nothing written) when it does not fit.</summary>
    public bool TryAdd(uint label, byte type, ReadOnlySpan<byte> payload, bool encrypted)
    {
        if (payload.Length > Room(encrypted))
            return false;
        _length += MeshWire.WriteMessage(_buffer.AsSpan(_length), label, type, payload);
        Count++;
        return true;
    }

    /// <summary>
    /// Writes the header and, with a cipher, encrypts the body in place and appends the tag. Returns the
    /// finished frame, valid until <see cref="Reset"/>.
    /// </summary>
    public ReadOnlySpan<byte> Seal(ulong sequence, FrameCipher? cipher) =>
        _buffer.AsSpan(0, MeshWire.SealFrame(_buffer, _length, sequence, cipher));

    public void Reset()
    {
        _length = MeshWire.FrameHeaderLength;
        Count = 0;
    }
}

/// <summary>
/// Authenticated encryption of whole frame bodies with ChaCha20-Poly1305: one key per direction, the
/// frame's sequence number as nonce (4 zero bytes then the 8-byte sequence) and the 12-byte header as
/// associated data, so a header cannot be altered or a body moved to another sequence number.
/// </summary>
public sealed class FrameCipher : IDisposable
{
    private readonly ChaCha20Poly1305 _aead;

    // One ChaCha20Poly1305 holds one native cipher context, which must never be used by two threads at once (a
    // link may seal its close message while a flush seals a frame): a lock per call, uncontended almost always,
    // costs tens of nanoseconds against microseconds of sealing.
    private readonly Lock _lock = new();

    public FrameCipher(ReadOnlySpan<byte> key)
    {
        if (key.Length != 32)
            throw new ArgumentException("A frame key is 32 bytes.", nameof(key));
        _aead = new ChaCha20Poly1305(key);
    }

    public void Encrypt(ulong sequence, ReadOnlySpan<byte> header, Span<byte> body, Span<byte> tag)
    {
        Span<byte> nonce = stackalloc byte[12];
        Nonce(sequence, nonce);
        lock (_lock)
            _aead.Encrypt(nonce, body, body, tag, header);
    }

    /// <summary>Decrypts an encrypted frame's body in place; false when it was altered or sealed with another key.</summary>
    public bool TryDecrypt(Span<byte> frame, out Span<byte> body)
    {
        body = default;
        if (frame.Length < MeshWire.FrameHeaderLength + MeshWire.TagLength)
            return false;
        var sequence = BinaryPrimitives.ReadUInt64BigEndian(frame[4..]);
        Span<byte> nonce = stackalloc byte[12];
        Nonce(sequence, nonce);
        var cipherText = frame[MeshWire.FrameHeaderLength..^MeshWire.TagLength];
        try
        {
            lock (_lock)
                _aead.Decrypt(nonce, cipherText, frame[^MeshWire.TagLength..], cipherText, frame[..MeshWire.FrameHeaderLength]);
        }
        catch (AuthenticationTagMismatchException)
        {
            return false;
        }
        body = cipherText;
        return true;
    }

    private static void Nonce(ulong sequence, Span<byte> nonce)
    {
        nonce[..4].Clear();
        BinaryPrimitives.WriteUInt64BigEndian(nonce[4..], sequence);
    }

    public void Dispose()
    {
        lock (_lock)
            _aead.Dispose();
    }
}
