namespace Skymesh.Identity.Tests;

public class NodeKeyTests
{
    private const string GroupOrder = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141";

    [Fact]
    public void The_address_of_secret_three_is_the_bips_public_key()
    {
        // bip-0340 test vector 0: secret 3 has x-only public key F9308A01….
        var secret = new byte[32];
        secret[31] = 3;
        using var key = NodeKey.FromSecret(secret);
        Assert.Equal("f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9", key.Address.ToString());
    }

    [Fact]
    public void Generated_keys_have_different_addresses()
    {
        using var a = NodeKey.Generate();
        using var b = NodeKey.Generate();
        Assert.NotEqual(a.Address, b.Address);
        Assert.False(a.Address.IsEmpty);
    }

    [Theory]
    [InlineData("0000000000000000000000000000000000000000000000000000000000000000")]
    [InlineData(GroupOrder)]
    [InlineData("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364142")]
    [InlineData("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF")]
    public void A_zero_or_out_of_range_secret_is_refused_with_a_clear_message(string hex)
    {
        var e = Assert.Throws<ArgumentException>(() => NodeKey.FromSecret(Convert.FromHexString(hex)));
        Assert.Contains("zero or not below the secp256k1 group order", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(hex, e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void The_largest_valid_secret_is_accepted()
    {
        using var key = NodeKey.FromSecret(Convert.FromHexString("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364140"));
        Assert.True(key.Address.Verify("receipt", [1, 2, 3], key.Sign("receipt", [1, 2, 3])));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(31)]
    [InlineData(33)]
    [InlineData(64)]
    public void A_secret_of_the_wrong_length_is_refused(int length)
    {
        var e = Assert.Throws<ArgumentException>(() => NodeKey.FromSecret(new byte[length]));
        Assert.Contains($"32 bytes; got {length}", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_disposed_key_refuses_to_sign_but_keeps_its_address()
    {
        var key = NodeKey.Generate();
        var address = key.Address;
        key.Dispose();
        key.Dispose();
        Assert.Throws<ObjectDisposedException>(() => key.Sign("receipt", [1]));
        Assert.Equal(address, key.Address);
    }

    [Fact]
    public void Printing_a_key_shows_its_address_and_not_its_secret()
    {
        var secret = Convert.FromHexString("B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFEF");
        using var key = NodeKey.FromSecret(secret);
        Assert.Equal($"NodeKey {key.Address}", key.ToString());
        Assert.DoesNotContain("b7e15162", key.ToString(), StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void Two_nodes_derive_the_same_static_secret_and_a_third_does_not()
    {
        // Many keys so that both parities of y occur on each side.
        for (var i = 0; i < 16; i++)
        {
            using var a = NodeKey.Generate();
            using var b = NodeKey.Generate();
            using var c = NodeKey.Generate();
            var ab = new byte[32];
            var ba = new byte[32];
            var cb = new byte[32];
            a.DeriveSharedSecret(b.Address, ab);
            b.DeriveSharedSecret(a.Address, ba);
            c.DeriveSharedSecret(b.Address, cb);
            Assert.Equal(ab, ba);
            Assert.NotEqual(ab, cb);
            Assert.Contains(ab, x => x != 0);
        }
    }
}
