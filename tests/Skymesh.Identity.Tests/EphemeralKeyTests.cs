using System.Security.Cryptography;
using NBitcoin.Secp256k1;
using SHA256 = System.Security.Cryptography.SHA256;

namespace Skymesh.Identity.Tests;

public class EphemeralKeyTests
{
    [Fact]
    public void Both_sides_of_a_handshake_derive_the_same_secret()
    {
        using var alice = EphemeralKey.Generate();
        using var bob = EphemeralKey.Generate();
        var atAlice = alice.DeriveSharedSecret(bob.PublicKey);
        var atBob = bob.DeriveSharedSecret(alice.PublicKey);
        Assert.Equal(EphemeralKey.SharedSecretLength, atAlice.Length);
        Assert.Equal(atAlice, atBob);
        Assert.NotEqual(new byte[32], atAlice);
    }

    [Fact]
    public void Different_pairs_derive_different_secrets()
    {
        using var alice = EphemeralKey.Generate();
        using var bob = EphemeralKey.Generate();
        using var carol = EphemeralKey.Generate();
        var aliceBob = alice.DeriveSharedSecret(bob.PublicKey);
        var aliceCarol = alice.DeriveSharedSecret(carol.PublicKey);
        var bobCarol = bob.DeriveSharedSecret(carol.PublicKey);
        Assert.NotEqual(aliceBob, aliceCarol);
        Assert.NotEqual(aliceBob, bobCarol);
        Assert.NotEqual(aliceCarol, bobCarol);
    }

    [Fact]
    public void The_public_key_is_a_33_byte_compressed_point()
    {
        using var key = EphemeralKey.Generate();
        Assert.Equal(EphemeralKey.PublicKeyLength, key.PublicKey.Length);
        Assert.True(key.PublicKey[0] is 0x02 or 0x03);
        using var other = EphemeralKey.Generate();
        Assert.False(key.PublicKey.SequenceEqual(other.PublicKey));
    }

    [Fact]
    public void The_secret_agrees_with_openssls_ecdh_on_secp256k1()
    {
        // An independent implementation: OpenSSL's raw ECDH gives x of the shared point; ours is SHA256(02|03 ‖ x).
        using var ours = EphemeralKey.Generate();
        using var openssl = ECDiffieHellman.Create(ECCurve.CreateFromFriendlyName("secp256k1"));
        var theirPoint = openssl.ExportParameters(false).Q;
        var theirCompressed = new byte[33];
        theirCompressed[0] = (byte)(0x02 | (theirPoint.Y![^1] & 1));
        theirPoint.X!.CopyTo(theirCompressed, 1);

        var ourUncompressed = Context.Instance.CreatePubKey(ours.PublicKey).ToBytes(false);
        using var ourPublic = ECDiffieHellman.Create(new ECParameters
        {
            Curve = ECCurve.CreateFromFriendlyName("secp256k1"),
            Q = new ECPoint { X = ourUncompressed[1..33], Y = ourUncompressed[33..] },
        });
        var x = openssl.DeriveRawSecretAgreement(ourPublic.PublicKey);

        var secret = ours.DeriveSharedSecret(theirCompressed);
        Assert.True(
            secret.AsSpan().SequenceEqual(SHA256.HashData([0x02, .. x])) || secret.AsSpan().SequenceEqual(SHA256.HashData([0x03, .. x])),
            "the shared secret is not SHA256 of OpenSSL's shared point");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(32)]
    [InlineData(34)]
    [InlineData(65)]
    public void A_peer_key_of_the_wrong_length_is_refused_clearly(int length)
    {
        using var key = EphemeralKey.Generate();
        var peer = new byte[length];
        if (length > 0)
            peer[0] = 0x02;
        var e = Assert.Throws<ArgumentException>(() => key.DeriveSharedSecret(peer));
        Assert.Contains($"33-byte compressed secp256k1 point; got {length} bytes", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_peer_key_without_a_compressed_prefix_is_refused_clearly()
    {
        using var key = EphemeralKey.Generate();
        using var peer = EphemeralKey.Generate();
        var bad = peer.PublicKey.ToArray();
        bad[0] = 0x04;
        var e = Assert.Throws<ArgumentException>(() => key.DeriveSharedSecret(bad));
        Assert.Contains("starts with 0x04", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("02EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34")] // x with no y (bip-0340 row 5)
    [InlineData("03FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC30")] // x above the field size
    [InlineData("020000000000000000000000000000000000000000000000000000000000000000")]
    public void A_peer_key_that_is_no_curve_point_is_refused_clearly(string hex)
    {
        using var key = EphemeralKey.Generate();
        var e = Assert.Throws<ArgumentException>(() => key.DeriveSharedSecret(Convert.FromHexString(hex)));
        Assert.Contains("not a point on secp256k1", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_disposed_ephemeral_key_derives_nothing()
    {
        var key = EphemeralKey.Generate();
        using var peer = EphemeralKey.Generate();
        key.Dispose();
        Assert.Throws<ObjectDisposedException>(() => key.DeriveSharedSecret(peer.PublicKey));
    }
}
