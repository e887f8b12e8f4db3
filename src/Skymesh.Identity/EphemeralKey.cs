using System.Security.Cryptography;
using NBitcoin.Secp256k1;

namespace Skymesh.Identity;

/// <summary>
/// A one-handshake secp256k1 key for ECDH. Each side sends <see cref="PublicKey"/> (33 bytes, compressed) and calls
/// <see cref="DeriveSharedSecret(ReadOnlySpan{byte})"/> with the other's; both get the same 32 bytes,
/// <c>SHA256(compressed(d · Q))</c> (the default hash of libsecp256k1's ECDH), which the caller feeds to HKDF to make
/// link keys. Dispose it as soon as the handshake is done, so that a later theft of the node cannot decrypt the link.
/// </summary>
public sealed class EphemeralKey : IDisposable
{
    public const int PublicKeyLength = 33;
    public const int SharedSecretLength = 32;

    private ECPrivKey? _key;
    private readonly byte[] _publicKey = new byte[PublicKeyLength];

    private EphemeralKey(ECPrivKey key)
    {
        _key = key;
        key.CreatePubKey().WriteToSpan(compressed: true, _publicKey, out _);
    }

    public static EphemeralKey Generate() => new(SecretKeys.Generate());

    /// <summary>The compressed point: 0x02 or 0x03 (the parity of y), then x, big-endian.</summary>
    public ReadOnlySpan<byte> PublicKey => _publicKey;

    /// <exception cref="ArgumentException">The peer's key is not a 33-byte compressed point on secp256k1.</exception>
    public byte[] DeriveSharedSecret(ReadOnlySpan<byte> peerPublicKey)
    {
        var secret = new byte[SharedSecretLength];
        DeriveSharedSecret(peerPublicKey, secret);
        return secret;
    }

    /// <inheritdoc cref="DeriveSharedSecret(ReadOnlySpan{byte})"/>
    /// <param name="sharedSecret">At least 32 bytes; the first 32 receive the secret.</param>
    public void DeriveSharedSecret(ReadOnlySpan<byte> peerPublicKey, Span<byte> sharedSecret)
    {
        if (sharedSecret.Length < SharedSecretLength)
            throw new ArgumentException($"A shared secret needs {SharedSecretLength} bytes; the destination has {sharedSecret.Length}.", nameof(sharedSecret));
        var key = _key ?? throw new ObjectDisposedException(nameof(EphemeralKey), "This ephemeral key has been disposed; its secret is gone.");
        var peer = ParsePeer(peerPublicKey);
        Span<byte> point = stackalloc byte[PublicKeyLength];
        peer.GetSharedPubkey(key).WriteToSpan(compressed: true, point, out _);
        System.Security.Cryptography.SHA256.HashData(point, sharedSecret);
        CryptographicOperations.ZeroMemory(point);
    }

    private static ECPubKey ParsePeer(ReadOnlySpan<byte> peerPublicKey)
    {
        if (peerPublicKey.Length != PublicKeyLength)
            throw new ArgumentException(
                $"A peer's ephemeral public key is a {PublicKeyLength}-byte compressed secp256k1 point; got {peerPublicKey.Length} bytes.",
                nameof(peerPublicKey));
        if (peerPublicKey[0] is not (0x02 or 0x03))
            throw new ArgumentException(
                $"A peer's ephemeral public key starts with 0x02 or 0x03 (a compressed point); this one starts with 0x{peerPublicKey[0]:x2}.",
                nameof(peerPublicKey));
        if (!ECPubKey.TryCreate(peerPublicKey, Context.Instance, out _, out var peer))
            throw new ArgumentException(
                "The peer's ephemeral public key is not a point on secp256k1: its x coordinate has no matching y.",
                nameof(peerPublicKey));
        return peer;
    }

    public void Dispose() => Interlocked.Exchange(ref _key, null)?.Dispose();
}
