using System.Security.Cryptography;
using System.Text;

namespace Skymesh.Identity.Tests;

public class SignatureTests
{
    private static readonly byte[] Hello = Encoding.UTF8.GetBytes("link-hello from a node at 127.0.0.1:4000, nonce 7f3a");

    [Fact]
    public void A_signature_verifies_under_the_signers_address_for_the_same_purpose_and_message()
    {
        using var key = NodeKey.Generate();
        var signature = key.Sign("link-hello", Hello);
        Assert.Equal(NodeKey.SignatureLength, signature.Length);
        Assert.True(key.Address.Verify("link-hello", Hello, signature));
    }

    [Fact]
    public void A_signature_of_an_empty_message_verifies()
    {
        using var key = NodeKey.Generate();
        Assert.True(key.Address.Verify("receipt", [], key.Sign("receipt", [])));
    }

    [Fact]
    public void A_tampered_message_fails_at_every_byte()
    {
        using var key = NodeKey.Generate();
        var signature = key.Sign("link-hello", Hello);
        for (var i = 0; i < Hello.Length; i++)
        {
            var tampered = (byte[])Hello.Clone();
            tampered[i] ^= 0x01;
            Assert.False(key.Address.Verify("link-hello", tampered, signature), $"byte {i}");
        }
        Assert.False(key.Address.Verify("link-hello", Hello.AsSpan(0, Hello.Length - 1), signature));
        Assert.False(key.Address.Verify("link-hello", [.. Hello, 0], signature));
    }

    [Fact]
    public void A_tampered_signature_fails_at_every_byte()
    {
        using var key = NodeKey.Generate();
        var signature = key.Sign("link-hello", Hello);
        for (var i = 0; i < signature.Length; i++)
        {
            var tampered = (byte[])signature.Clone();
            tampered[i] ^= 0x80;
            Assert.False(key.Address.Verify("link-hello", Hello, tampered), $"byte {i}");
        }
    }

    [Fact]
    public void Another_keys_address_does_not_verify_the_signature()
    {
        using var key = NodeKey.Generate();
        using var other = NodeKey.Generate();
        Assert.False(other.Address.Verify("link-hello", Hello, key.Sign("link-hello", Hello)));
    }

    [Fact]
    public void A_link_hello_signature_cannot_be_replayed_as_a_path_setup()
    {
        using var key = NodeKey.Generate();
        var signature = key.Sign("link-hello", Hello);
        Assert.False(key.Address.Verify("path-setup", Hello, signature));
        Assert.False(key.Address.Verify("link-hell", Hello, signature));
        Assert.True(key.Address.Verify("link-hello", Hello, signature));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(32)]
    [InlineData(63)]
    [InlineData(65)]
    [InlineData(128)]
    public void A_signature_of_the_wrong_length_is_false_rather_than_an_exception(int length)
    {
        using var key = NodeKey.Generate();
        var signature = key.Sign("link-hello", Hello);
        var malformed = new byte[length];
        signature.AsSpan(0, Math.Min(length, signature.Length)).CopyTo(malformed);
        Assert.False(key.Address.Verify("link-hello", Hello, malformed));
    }

    [Fact]
    public void Signatures_of_all_zero_or_all_ones_bytes_are_false_rather_than_an_exception()
    {
        using var key = NodeKey.Generate();
        Assert.False(key.Address.Verify("link-hello", Hello, new byte[64]));
        Assert.False(key.Address.Verify("link-hello", Hello, Enumerable.Repeat((byte)0xFF, 64).ToArray()));
    }

    [Fact]
    public void The_empty_address_verifies_nothing()
    {
        using var key = NodeKey.Generate();
        Assert.False(default(NodeAddress).Verify("link-hello", Hello, key.Sign("link-hello", Hello)));
    }

    [Fact]
    public void Two_signatures_of_the_same_message_differ_and_both_verify()
    {
        using var key = NodeKey.Generate();
        var first = key.Sign("announce", Hello);
        var second = key.Sign("announce", Hello);
        Assert.NotEqual(first, second);
        Assert.True(key.Address.Verify("announce", Hello, first));
        Assert.True(key.Address.Verify("announce", Hello, second));
    }

    [Fact]
    public void The_signature_is_plain_bip340_over_the_documented_tagged_hash()
    {
        // docs/identity.md: digest = SHA256(SHA256(tag) || SHA256(tag) || message), tag = "skymesh/" + purpose.
        using var key = NodeKey.Generate();
        var signature = key.Sign("path-setup", Hello);
        var tagHash = SHA256.HashData(Encoding.ASCII.GetBytes("skymesh/path-setup"));
        var digest = SHA256.HashData([.. tagHash, .. tagHash, .. Hello]);
        Assert.True(key.Address.VerifyDigest(digest, signature));
        Assert.False(key.Address.VerifyDigest(SHA256.HashData(Hello), signature));
    }

    [Fact]
    public void Signing_into_a_span_gives_a_verifiable_signature()
    {
        using var key = NodeKey.Generate();
        Span<byte> signature = stackalloc byte[NodeKey.SignatureLength];
        key.Sign("receipt", Hello, signature);
        Assert.True(key.Address.Verify("receipt", Hello, signature));
        var tooShort = new byte[63];
        Assert.Throws<ArgumentException>(() => key.Sign("receipt", Hello, tooShort));
    }

    [Theory]
    [InlineData("")]
    [InlineData("Link-Hello")]
    [InlineData("link hello")]
    [InlineData("link-hello\n")]
    [InlineData("ünïcode")]
    public void A_malformed_purpose_is_refused_with_the_rule_in_the_message(string purpose)
    {
        using var key = NodeKey.Generate();
        var sign = Assert.Throws<ArgumentException>(() => key.Sign(purpose, Hello));
        Assert.Contains("a-z, 0-9", sign.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => key.Address.Verify(purpose, Hello, new byte[64]));
    }

    [Fact]
    public void A_purpose_longer_than_64_characters_is_refused()
    {
        using var key = NodeKey.Generate();
        Assert.True(key.Address.Verify(new string('a', 64), Hello, key.Sign(new string('a', 64), Hello)));
        Assert.Throws<ArgumentException>(() => key.Sign(new string('a', 65), Hello));
    }

    [Fact]
    public void Many_threads_can_sign_and_verify_with_one_key_at_once()
    {
        using var key = NodeKey.Generate();
        var results = new bool[8];
        Parallel.For(0, results.Length, i =>
        {
            var message = BitConverter.GetBytes(i);
            results[i] = key.Address.Verify("receipt", message, key.Sign("receipt", message));
        });
        Assert.All(results, Assert.True);
    }
}
