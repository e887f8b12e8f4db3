using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using NBitcoin.Secp256k1;

namespace Skymesh.Identity;

/// <summary>
/// A node's address: its BIP340 x-only secp256k1 public key, 32 bytes, written as 64 lowercase hex digits. The text
/// form is also the node's SSMP login id. Every value made by <see cref="Parse(string)"/>, <see cref="FromBytes"/> or
/// <see cref="NodeKey.Address"/> is a point on the curve; <c>default</c> is no address (x = 0 is not on secp256k1),
/// equal to no node's and verifying no signature.
/// </summary>
public readonly struct NodeAddress : IEquatable<NodeAddress>, ISpanFormattable
{
    public const int Length = 32;
    public const int TextLength = 64;

    // Four big-endian words: equality and hashing without an array, and a NodeAddress fits in a dictionary key inline.
    private readonly ulong _w0, _w1, _w2, _w3;

    private NodeAddress(ReadOnlySpan<byte> bytes)
    {
        _w0 = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        _w1 = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
        _w2 = BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]);
        _w3 = BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]);
    }

    /// <summary>True for <c>default(NodeAddress)</c>, which names no node.</summary>
    public bool IsEmpty => (_w0 | _w1 | _w2 | _w3) == 0;

    public static NodeAddress FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Length)
            throw new ArgumentException($"A node address is {Length} bytes; got {bytes.Length}.", nameof(bytes));
        if (!IsPoint(bytes))
            throw new ArgumentException("These 32 bytes are not a node address: they are not the x coordinate of a point on secp256k1.", nameof(bytes));
        return new NodeAddress(bytes);
    }

    public static bool TryFromBytes(ReadOnlySpan<byte> bytes, out NodeAddress address)
    {
        address = bytes.Length == Length && IsPoint(bytes) ? new NodeAddress(bytes) : default;
        return !address.IsEmpty;
    }

    /// <summary>For keys the library derived itself: already known to be on the curve.</summary>
    internal static NodeAddress FromValidBytes(ReadOnlySpan<byte> bytes) => new(bytes);

    /// <summary>Parses exactly 64 hex digits, either case, that are the x coordinate of a point on secp256k1.</summary>
    /// <exception cref="FormatException">The text is not such an address; the message says why.</exception>
    public static NodeAddress Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Parse(text.AsSpan());
    }

    /// <inheritdoc cref="Parse(string)"/>
    public static NodeAddress Parse(ReadOnlySpan<char> text)
    {
        var error = TryParseCore(text, out var address);
        return error is null ? address : throw new FormatException(error);
    }

    public static bool TryParse([NotNullWhen(true)] string? text, out NodeAddress address)
    {
        if (text is null)
        {
            address = default;
            return false;
        }
        return TryParseCore(text, out address) is null;
    }

    public static bool TryParse(ReadOnlySpan<char> text, out NodeAddress address) => TryParseCore(text, out address) is null;

    /// <summary>Returns null on success, or the reason the text is not an address.</summary>
    private static string? TryParseCore(ReadOnlySpan<char> text, out NodeAddress address)
    {
        address = default;
        if (text.Length != TextLength)
            return $"A node address is {TextLength} hex digits; got {text.Length} characters.";
        Span<byte> bytes = stackalloc byte[Length];
        var bad = Hex.Decode(text, bytes);
        if (bad >= 0)
            return $"A node address is {TextLength} hex digits; the character at position {bad} ('{Printable(text[bad])}') is not a hex digit.";
        if (!IsPoint(bytes))
            return $"'{text}' is not a node address: it is not the x coordinate of a point on secp256k1.";
        address = new NodeAddress(bytes);
        return null;
    }

    private static string Printable(char c) => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString();

    private static bool IsPoint(ReadOnlySpan<byte> bytes) => ECXOnlyPubKey.TryCreate(bytes, out _);

    public void WriteTo(Span<byte> destination)
    {
        if (destination.Length < Length)
            throw new ArgumentException($"A node address needs {Length} bytes; the destination has {destination.Length}.", nameof(destination));
        BinaryPrimitives.WriteUInt64BigEndian(destination, _w0);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], _w1);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], _w2);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], _w3);
    }

    public byte[] ToBytes()
    {
        var bytes = new byte[Length];
        WriteTo(bytes);
        return bytes;
    }

    /// <summary>
    /// Checks a signature made by <see cref="NodeKey.Sign(string, ReadOnlySpan{byte})"/> with the same purpose and
    /// message. False, never an exception, for a signature of the wrong length, a malformed one, another key's, another
    /// purpose's or another message's, and for the empty address.
    /// </summary>
    /// <exception cref="ArgumentException">The purpose itself is not a valid purpose name (a programming error).</exception>
    public bool Verify(string purpose, ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature)
    {
        Span<byte> digest = stackalloc byte[SignatureDomain.DigestLength];
        SignatureDomain.Digest(purpose, message, digest);
        return VerifyDigest(digest, signature);
    }

    /// <summary>The raw BIP340 check of a 32-byte message; the BIP's own test vectors run through here.</summary>
    internal bool VerifyDigest(ReadOnlySpan<byte> digest, ReadOnlySpan<byte> signature)
    {
        if (signature.Length != NodeKey.SignatureLength || IsEmpty)
            return false;
        return VerifiedSignatures.Enabled ? VerifiedSignatures.Verify(this, digest, signature, CheckDigest) : CheckDigest(digest, signature);
    }

    private bool CheckDigest(ReadOnlySpan<byte> digest, ReadOnlySpan<byte> signature)
    {
        Span<byte> key = stackalloc byte[Length];
        WriteTo(key);
        return ECXOnlyPubKey.TryCreate(key, out var publicKey)
            && SecpSchnorrSignature.TryCreate(signature, out var parsed)
            && publicKey.SigVerifyBIP340(parsed, digest);
    }

    public bool Equals(NodeAddress other) => _w0 == other._w0 && _w1 == other._w1 && _w2 == other._w2 && _w3 == other._w3;

    public override bool Equals(object? obj) => obj is NodeAddress other && Equals(other);

    // The words are uniformly random for real keys; one word would do, all four cost nothing.
    public override int GetHashCode() => HashCode.Combine(_w0, _w1, _w2, _w3);

    public static bool operator ==(NodeAddress left, NodeAddress right) => left.Equals(right);

    public static bool operator !=(NodeAddress left, NodeAddress right) => !left.Equals(right);

    /// <summary>64 lowercase hex digits (the empty address gives 64 zeros).</summary>
    public override string ToString() => string.Create(TextLength, this, static (chars, address) => address.TryFormat(chars, out _));

    public string ToString(string? format, IFormatProvider? formatProvider) => ToString();

    public bool TryFormat(Span<char> destination, out int charsWritten)
    {
        if (destination.Length < TextLength)
        {
            charsWritten = 0;
            return false;
        }
        Span<byte> bytes = stackalloc byte[Length];
        WriteTo(bytes);
        Hex.EncodeLower(bytes, destination);
        charsWritten = TextLength;
        return true;
    }

    public bool TryFormat(Span<char> destination, out int charsWritten, ReadOnlySpan<char> format, IFormatProvider? provider) =>
        TryFormat(destination, out charsWritten);
}
