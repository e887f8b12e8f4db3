using System.Buffers.Binary;
using System.Security.Cryptography;
using Skymesh.Identity;

namespace Skymesh.Mesh.Links;

/// <summary>Types of the messages on label 0 (docs/wire-format.md, "Link control").</summary>
public static class LinkMessageType
{
    public const byte Hello = 1;
    public const byte HelloAck = 2;
    public const byte HelloConfirm = 3;
    public const byte Keepalive = 4;
    public const byte KeepaliveAck = 5;
    public const byte Close = 6;
    public const byte Nack = 7;
    public const byte Receipt = 8;
    public const byte Forwarded = 9;
    public const byte Cookie = 10;
}

/// <summary>
/// The handshake's signed introductions. Hello and HelloAck share their first 77 bytes:
/// <c>version(1) options(1) max-frame(2) timestamp-ms(8) address(32) ephemeral(33)</c>; HelloAck adds the
/// SHA-256 of the Hello it answers, HelloConfirm is the SHA-256 of the HelloAck; each ends with a BIP340
/// signature, domain-separated per message, over everything before it.
/// </summary>
public static class LinkHandshake
{
    public const byte Version = 1;
    public const int IntroLength = 77;

    /// <summary>Where the sender's address starts in a Hello or HelloAck (after version, options, max-frame and timestamp).</summary>
    public const int AddressOffset = 12;
    public const int HelloLength = IntroLength + NodeKey.SignatureLength;
    public const int HelloAckLength = IntroLength + 32 + NodeKey.SignatureLength;
    public const int HelloConfirmLength = 32 + NodeKey.SignatureLength;

    /// <summary>A cookie a node under load hands a Hello's source address; the Hello comes back with it appended.</summary>
    public const int CookieLength = 16;

    /// <summary>Cookie message: the first 16 bytes of the SHA-256 of the Hello it answers, then the cookie.</summary>
    public const int CookieMessageLength = 16 + CookieLength;

    public const string HelloPurpose = "link-hello";
    public const string HelloAckPurpose = "link-hello-ack";
    public const string HelloConfirmPurpose = "link-hello-confirm";

    /// <summary>Options bit 0: the sender wants frames encrypted.</summary>
    public const byte OptionEncrypt = 0x01;

    public readonly record struct Intro(bool Encrypt, int MaxFrame, long TimestampMs, NodeAddress Address, byte[] Ephemeral);

    public static byte[] WriteHello(NodeKey key, EphemeralKey ephemeral, bool encrypt, int maxFrame, long timestampMs)
    {
        var hello = new byte[HelloLength];
        WriteIntro(hello, key.Address, ephemeral, encrypt, maxFrame, timestampMs);
        key.Sign(HelloPurpose, hello.AsSpan(0, IntroLength), hello.AsSpan(IntroLength));
        return hello;
    }

    public static byte[] WriteHelloAck(NodeKey key, EphemeralKey ephemeral, bool encrypt, int maxFrame, long timestampMs, ReadOnlySpan<byte> hello)
    {
        var ack = new byte[HelloAckLength];
        WriteIntro(ack, key.Address, ephemeral, encrypt, maxFrame, timestampMs);
        SHA256.HashData(hello, ack.AsSpan(IntroLength, 32));
        key.Sign(HelloAckPurpose, ack.AsSpan(0, IntroLength + 32), ack.AsSpan(IntroLength + 32));
        return ack;
    }

    public static byte[] WriteHelloConfirm(NodeKey key, ReadOnlySpan<byte> helloAck)
    {
        var confirm = new byte[HelloConfirmLength];
        SHA256.HashData(helloAck, confirm.AsSpan(0, 32));
        key.Sign(HelloConfirmPurpose, confirm.AsSpan(0, 32), confirm.AsSpan(32));
        return confirm;
    }

    /// <summary>A Hello as sent: the signed Hello, followed by the cookie when the far node asked for one.</summary>
    public static byte[] WithCookie(ReadOnlySpan<byte> hello, ReadOnlySpan<byte> cookie) => [.. hello, .. cookie];

    /// <summary>Splits a received Hello message into the signed Hello and its cookie (empty when none); false for any other length.</summary>
    public static bool TrySplitHello(ReadOnlySpan<byte> message, out ReadOnlySpan<byte> hello, out ReadOnlySpan<byte> cookie)
    {
        hello = default;
        cookie = default;
        if (message.Length != HelloLength && message.Length != HelloLength + CookieLength)
            return false;
        hello = message[..HelloLength];
        cookie = message[HelloLength..];
        return true;
    }

    /// <summary>The Cookie message answering <paramref name="hello"/> (the signed part) with <paramref name="cookie"/>.</summary>
    public static byte[] WriteCookie(ReadOnlySpan<byte> hello, ReadOnlySpan<byte> cookie)
    {
        var message = new byte[CookieMessageLength];
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(hello, hash);
        hash[..16].CopyTo(message);
        cookie.CopyTo(message.AsSpan(16));
        return message;
    }

    /// <summary>Reads a Cookie message that answers <paramref name="ourHello"/>; false when it answers anything else.</summary>
    public static bool TryReadCookie(ReadOnlySpan<byte> message, ReadOnlySpan<byte> ourHello, out ReadOnlySpan<byte> cookie)
    {
        cookie = default;
        if (message.Length != CookieMessageLength)
            return false;
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(ourHello, hash);
        if (!CryptographicOperations.FixedTimeEquals(message[..16], hash[..16]))
            return false;
        cookie = message[16..];
        return true;
    }

    /// <summary>Reads and checks a Hello: length, version, and the sender's signature over it.</summary>
    public static bool TryReadHello(ReadOnlySpan<byte> hello, out Intro intro) =>
        TryReadIntro(hello, HelloLength, out intro)
        && intro.Address.Verify(HelloPurpose, hello[..IntroLength], hello[IntroLength..]);

    /// <summary>Reads and checks a HelloAck: signature, and that it answers exactly <paramref name="ourHello"/>.</summary>
    public static bool TryReadHelloAck(ReadOnlySpan<byte> ack, ReadOnlySpan<byte> ourHello, out Intro intro)
    {
        if (!TryReadIntro(ack, HelloAckLength, out intro))
            return false;
        Span<byte> expected = stackalloc byte[32];
        SHA256.HashData(ourHello, expected);
        return CryptographicOperations.FixedTimeEquals(ack.Slice(IntroLength, 32), expected)
            && intro.Address.Verify(HelloAckPurpose, ack[..(IntroLength + 32)], ack[(IntroLength + 32)..]);
    }

    /// <summary>Checks a HelloConfirm: it names our HelloAck and is signed by the peer whose Hello we answered.</summary>
    public static bool CheckHelloConfirm(ReadOnlySpan<byte> confirm, ReadOnlySpan<byte> ourAck, NodeAddress peer)
    {
        if (confirm.Length != HelloConfirmLength)
            return false;
        Span<byte> expected = stackalloc byte[32];
        SHA256.HashData(ourAck, expected);
        return CryptographicOperations.FixedTimeEquals(confirm[..32], expected)
            && peer.Verify(HelloConfirmPurpose, confirm[..32], confirm[32..]);
    }

    /// <summary>
    /// Frame keys for both directions: HKDF-SHA256 over the ECDH secret, salted with the hash of Hello and
    /// HelloAck, info "skymesh link v1"; the first 32 bytes key initiator→responder, the next 32 the reverse.
    /// </summary>
    public static (byte[] InitiatorToResponder, byte[] ResponderToInitiator) DeriveKeys(ReadOnlySpan<byte> sharedSecret, ReadOnlySpan<byte> hello, ReadOnlySpan<byte> helloAck)
    {
        Span<byte> salt = stackalloc byte[32];
        using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
        {
            hash.AppendData(hello);
            hash.AppendData(helloAck);
            hash.GetHashAndReset(salt);
        }
        Span<byte> okm = stackalloc byte[64];
        HKDF.DeriveKey(HashAlgorithmName.SHA256, sharedSecret, okm, salt, "skymesh link v1"u8);
        return (okm[..32].ToArray(), okm[32..].ToArray());
    }

    private static void WriteIntro(Span<byte> destination, NodeAddress address, EphemeralKey ephemeral, bool encrypt, int maxFrame, long timestampMs)
    {
        destination[0] = Version;
        destination[1] = encrypt ? OptionEncrypt : (byte)0;
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], (ushort)Math.Min(maxFrame, ushort.MaxValue));
        BinaryPrimitives.WriteInt64BigEndian(destination[4..], timestampMs);
        address.WriteTo(destination[12..]);
        ephemeral.PublicKey.CopyTo(destination[44..]);
    }

    private static bool TryReadIntro(ReadOnlySpan<byte> message, int length, out Intro intro)
    {
        intro = default;
        if (message.Length != length || message[0] != Version || (message[1] & ~OptionEncrypt) != 0)
            return false;
        if (!NodeAddress.TryFromBytes(message.Slice(12, NodeAddress.Length), out var address))
            return false;
        var ephemeral = message.Slice(44, EphemeralKey.PublicKeyLength);
        if (ephemeral[0] is not (0x02 or 0x03))
            return false;
        intro = new Intro((message[1] & OptionEncrypt) != 0, BinaryPrimitives.ReadUInt16BigEndian(message[2..]),
            BinaryPrimitives.ReadInt64BigEndian(message[4..]), address, ephemeral.ToArray());
        return true;
    }
}
