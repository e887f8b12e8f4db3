using NBitcoin.Secp256k1;

namespace Skymesh.Identity;

/// <summary>
/// A node's identity key: a secp256k1 secret whose x-only public key is the node's <see cref="Address"/>. It signs
/// BIP340 Schnorr signatures over domain-separated messages (see <see cref="Sign(string, ReadOnlySpan{byte})"/>).
/// Several threads may sign with one key at once; dispose it (once they are done) to zero the secret.
/// </summary>
public sealed class NodeKey : IDisposable
{
    public const int SecretLength = SecretKeys.Length;
    public const int SignatureLength = 64;

    private ECPrivKey? _key;

    // Kept so that signing does not recompute it: that is one of the two point multiplications of a signature.
    private readonly ECPubKey _publicKey;

    private NodeKey(ECPrivKey key)
    {
        _key = key;
        _publicKey = key.CreatePubKey();
        Span<byte> xOnly = stackalloc byte[NodeAddress.Length];
        _publicKey.ToXOnlyPubKey().WriteToSpan(xOnly);
        Address = NodeAddress.FromValidBytes(xOnly);
    }

    public NodeAddress Address { get; }

    /// <summary>A new key from the operating system's cryptographic random number generator.</summary>
    public static NodeKey Generate() => new(SecretKeys.Generate());

    /// <summary>The key with this 32-byte big-endian secret. The caller keeps (and should zero) its own copy.</summary>
    /// <exception cref="ArgumentException">The secret is not 32 bytes, is zero, or is not below the secp256k1 group order.</exception>
    public static NodeKey FromSecret(ReadOnlySpan<byte> secret)
    {
        if (secret.Length != SecretLength)
            throw new ArgumentException($"A node secret is {SecretLength} bytes; got {secret.Length}.", nameof(secret));
        if (!ECPrivKey.TryCreate(secret, out var key))
            throw new ArgumentException(
                "This secret is not a valid node key: it is zero or not below the secp256k1 group order.", nameof(secret));
        return new NodeKey(key);
    }

    /// <summary>
    /// Signs <paramref name="message"/> for one <paramref name="purpose"/>: a BIP340 Schnorr signature of the tagged hash
    /// <c>SHA256(SHA256(tag) ‖ SHA256(tag) ‖ message)</c> with tag <c>"skymesh/" + purpose</c>, with fresh auxiliary
    /// randomness. A signature for "link-hello" never verifies as a "path-setup", whatever the bytes.
    /// </summary>
    /// <param name="purpose">1 to 64 characters from a-z, 0-9, '-', '_', '.', '/'.</param>
    /// <returns>The 64-byte signature.</returns>
    public byte[] Sign(string purpose, ReadOnlySpan<byte> message)
    {
        var signature = new byte[SignatureLength];
        Sign(purpose, message, signature);
        return signature;
    }

    /// <inheritdoc cref="Sign(string, ReadOnlySpan{byte})"/>
    /// <param name="signature">At least 64 bytes; the first 64 receive the signature.</param>
    public void Sign(string purpose, ReadOnlySpan<byte> message, Span<byte> signature)
    {
        if (signature.Length < SignatureLength)
            throw new ArgumentException($"A signature needs {SignatureLength} bytes; the destination has {signature.Length}.", nameof(signature));
        Span<byte> digest = stackalloc byte[SignatureDomain.DigestLength];
        SignatureDomain.Digest(purpose, message, digest);
        // BIP340NonceFunction(true) draws 32 fresh bytes of auxiliary randomness from the system CSPRNG.
        SignDigest(digest, new BIP340NonceFunction(true)).WriteToSpan(signature);
    }

    /// <summary>The raw BIP340 signature of a 32-byte message with given auxiliary randomness (the BIP's test vectors).</summary>
    internal byte[] SignDigest(ReadOnlySpan<byte> digest, byte[] auxiliaryRandom) =>
        SignDigest(digest, new BIP340NonceFunction(auxiliaryRandom)).ToBytes();

    private SecpSchnorrSignature SignDigest(ReadOnlySpan<byte> digest, BIP340NonceFunction nonce) =>
        LiveKey.TrySignBIP340(digest, _publicKey, nonce, out var signature)
            ? signature
            : throw new InvalidOperationException("BIP340 signing failed, which the algorithm rules out for a valid key.");

    /// <summary>
    /// A secret shared with the node at <paramref name="peer"/> without any message exchanged (static ECDH): the
    /// SHA-256 of the x coordinate of <c>secret · P</c>, where P is the peer's address lifted to the point with even
    /// y. Both nodes compute the same value (the sign of y does not change x). It has no forward secrecy: derive
    /// session keys from it with a fresh salt, and prefer an ephemeral exchange where a round trip is affordable.
    /// </summary>
    /// <param name="sharedSecret">At least 32 bytes; the first 32 receive the secret.</param>
    public void DeriveSharedSecret(NodeAddress peer, Span<byte> sharedSecret)
    {
        if (sharedSecret.Length < 32)
            throw new ArgumentException($"A shared secret needs 32 bytes; the destination has {sharedSecret.Length}.", nameof(sharedSecret));
        Span<byte> point = stackalloc byte[33];
        point[0] = 0x02;
        peer.WriteTo(point[1..]);
        if (!ECPubKey.TryCreate(point, Context.Instance, out _, out var peerKey))
            throw new ArgumentException($"The address {peer} is not a point on secp256k1.", nameof(peer));
        peerKey.GetSharedPubkey(LiveKey).WriteToSpan(compressed: true, point, out _);
        System.Security.Cryptography.SHA256.HashData(point[1..], sharedSecret);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(point);
    }

    internal void WriteSecret(Span<byte> destination) => LiveKey.WriteToSpan(destination);

    private ECPrivKey LiveKey => _key ?? throw new ObjectDisposedException(nameof(NodeKey), "This node key has been disposed; its secret is gone.");

    /// <summary>Zeroes the secret. Signing afterwards throws <see cref="ObjectDisposedException"/>; the address remains.</summary>
    public void Dispose() => Interlocked.Exchange(ref _key, null)?.Dispose();

    /// <summary>Names the key by its address, so that logging a key by mistake never prints the secret.</summary>
    public override string ToString() => $"NodeKey {Address}";
}
