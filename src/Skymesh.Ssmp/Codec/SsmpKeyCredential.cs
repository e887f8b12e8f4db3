using System.Buffers.Binary;
using System.Text;
using Skymesh.Identity;

namespace Skymesh.Ssmp.Codec;

/// <summary>
/// The credential of the <c>key</c> login scheme (a Skymesh extension, spec §7; docs/ssmp-broker.md "The key
/// scheme"): 72 bytes, sent as a binary payload.
/// <code>
/// credential = timestamp (8 bytes, big-endian signed Unix milliseconds) ‖ signature (64 bytes, BIP340)
/// message    = "skymesh ssmp login v1" LF server-name LF id LF timestamp      (the text parts in ASCII)
/// signature  = NodeKey.Sign("ssmp-login", message)                           (tag "skymesh/ssmp-login")
/// </code>
/// The id is the signer's address (64 lowercase hex digits). Naming the server makes a credential useless at any
/// broker with another name; the timestamp and the broker's memory of accepted credentials make it useless later.
/// </summary>
public static class SsmpKeyCredential
{
    /// <summary>The login scheme name.</summary>
    public const string Scheme = "key";

    /// <summary>The signature purpose (see docs/identity.md): the signed digest is tagged <c>skymesh/ssmp-login</c>.</summary>
    public const string SignaturePurpose = "ssmp-login";

    public const int TimestampLength = 8;

    public const int Length = TimestampLength + NodeKey.SignatureLength;

    /// <summary>The longest signed message: the prefix, a 64-character server name and id, two LFs, the timestamp.</summary>
    public const int MaxMessageLength = 22 + SsmpGrammar.MaxIdLength + 1 + SsmpGrammar.MaxIdLength + 1 + TimestampLength;

    /// <summary>What every signed message starts with; the version lets a later layout never verify as this one.</summary>
    public static ReadOnlySpan<byte> MessagePrefix => "skymesh ssmp login v1\n"u8;

    /// <summary>A fresh credential: the key's address as the id, <paramref name="unixMilliseconds"/> as the timestamp.</summary>
    /// <param name="serverName">The name of the broker it is for (its <c>ServerName</c>, <c>skymesh broker --name</c>).</param>
    /// <exception cref="ArgumentException">The server name is not an SSMP identifier.</exception>
    /// <exception cref="ObjectDisposedException">The key has been disposed.</exception>
    public static byte[] Create(NodeKey key, string serverName, long unixMilliseconds)
    {
        ArgumentNullException.ThrowIfNull(key);
        SsmpGrammar.ValidateId(serverName, nameof(serverName));
        Span<char> id = stackalloc char[NodeAddress.TextLength];
        key.Address.TryFormat(id, out _);
        Span<byte> message = stackalloc byte[MaxMessageLength];
        var n = WriteMessage(serverName, id, unixMilliseconds, message);
        var credential = new byte[Length];
        BinaryPrimitives.WriteInt64BigEndian(credential, unixMilliseconds);
        key.Sign(SignaturePurpose, message[..n], credential.AsSpan(TimestampLength));
        return credential;
    }

    /// <summary>
    /// Writes the signed message into <paramref name="destination"/> (at least <see cref="MaxMessageLength"/> bytes
    /// for any legal name and id) and returns its length. The caller has checked that both are SSMP identifiers.
    /// </summary>
    public static int WriteMessage(ReadOnlySpan<char> serverName, ReadOnlySpan<char> id, long unixMilliseconds, Span<byte> destination)
    {
        var n = 0;
        MessagePrefix.CopyTo(destination);
        n += MessagePrefix.Length;
        n += Encoding.ASCII.GetBytes(serverName, destination[n..]);
        destination[n++] = SsmpGrammar.Lf;
        n += Encoding.ASCII.GetBytes(id, destination[n..]);
        destination[n++] = SsmpGrammar.Lf;
        BinaryPrimitives.WriteInt64BigEndian(destination[n..], unixMilliseconds);
        return n + TimestampLength;
    }

    /// <summary>The timestamp of a credential of the right length.</summary>
    public static long ReadTimestamp(ReadOnlySpan<byte> credential) => BinaryPrimitives.ReadInt64BigEndian(credential);

    /// <summary>
    /// Whether an id has the shape of a node address: 64 hex digits, in either case, since whoever reads a sender's id
    /// as an address (<c>NodeAddress.TryParse</c>) takes either. Such an id names a node, so only a key login, which
    /// proves the key, may hold it: anyone could claim it under <c>open</c> or a shared secret.
    /// </summary>
    public static bool LooksLikeNodeAddress(ReadOnlySpan<char> id)
    {
        if (id.Length != 64)
            return false;
        foreach (var c in id)
        {
            if (!char.IsAsciiHexDigit(c))
                return false;
        }
        return true;
    }
}
