using NBitcoin;
using Skymesh.Exchange.Chains;

namespace Skymesh.Exchange.Tests.Chains;

/// <summary>Deposit addresses are the real formats of each coin, derived the same way every time; bad ones are refused.</summary>
public sealed class ChainAddressTests
{
    // The BIP84 document's test mnemonic (empty passphrase) and its receiving addresses m/84'/0'/0'/0/0 and /1.
    private static readonly byte[] Bip84Seed = new Mnemonic("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about").DeriveSeed();

    [Fact]
    public void Bitcoin_deposit_addresses_are_the_BIP84_test_vectors()
    {
        var scheme = new BitcoinAddressScheme(Bip84Seed, Network.Main);
        Assert.Equal("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", scheme.DepositAddress(0));
        Assert.Equal("bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g", scheme.DepositAddress(1));
        Assert.Equal("m/84'/0'/0'", "m/" + scheme.AccountPath);
        Assert.Equal(0, scheme.CoinType);
    }

    [Fact]
    public void Bitcoin_deposit_addresses_on_a_test_network_use_coin_type_one_and_its_prefix()
    {
        var regtest = new BitcoinAddressScheme(Bip84Seed, Network.RegTest);
        Assert.Equal(1, regtest.CoinType);
        var expected = ExtKey.CreateFromSeed(Bip84Seed).Derive(new KeyPath("84'/1'/0'/0/7")).GetPublicKey()
            .GetAddress(ScriptPubKeyType.Segwit, Network.RegTest).ToString();
        Assert.Equal(expected, regtest.DepositAddress(7));
        Assert.StartsWith("bcrt1q", regtest.DepositAddress(7));
        Assert.Equal(regtest.DepositAddress(7), new BitcoinAddressScheme(Bip84Seed, Network.RegTest).DepositAddress(7));
        Assert.NotEqual(regtest.DepositAddress(7), regtest.DepositAddress(8));
    }

    [Fact]
    public void Bitcoin_destinations_must_belong_to_the_configured_network()
    {
        var main = new BitcoinAddressScheme(Bip84Seed, Network.Main);
        Assert.True(main.IsValidAddress("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"));
        Assert.True(main.IsValidAddress("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2")); // legacy P2PKH
        Assert.True(main.IsValidAddress("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy")); // legacy P2SH
        Assert.False(main.IsValidAddress("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyv")); // one character changed
        Assert.False(main.IsValidAddress(" bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"));
        Assert.False(main.IsValidAddress(""));
        var regtest = new BitcoinAddressScheme(Bip84Seed, Network.RegTest);
        Assert.False(main.IsValidAddress(regtest.DepositAddress(0)));
        Assert.False(regtest.IsValidAddress("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"));
        Assert.True(regtest.IsValidAddress(regtest.DepositAddress(0)));
    }

    [Fact]
    public void A_seed_outside_16_to_64_bytes_or_a_negative_index_is_refused()
    {
        Assert.Throws<ArgumentException>(() => new BitcoinAddressScheme(new byte[15], Network.Main));
        Assert.Throws<ArgumentException>(() => new SkycoinAddressScheme(new byte[65]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SkycoinAddressScheme(new byte[32]).DepositAddress(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BitcoinAddressScheme(new byte[32], Network.Main).DepositAddress(1L << 31));
    }

    // Secret key, compressed public key and address, from Skycoin's own golden files: skycoin/skycoin,
    // src/cipher/testsuite/testdata/seed-0000.golden (the first four keys) and many-addresses.golden (the first two).
    public static TheoryData<string, string, string> SkycoinVectors => new()
    {
        { "6614f0956f4e08e07ec2d4c2767b9f7121449fc2269e2b22f1a549d63e9f719b", "03b79123b2a3100420b19cccbfc688aa39f510b8491b67bdd296a92a021a3d0d8e", "cfb24jWcms9pZtvEx3UjUuLPdT6rbx6r9M" },
        { "93876705c31fbf77f756c7a59616ebafe12b5ec6bf6f0c85014b918fd79d6df6", "03e0298390270c0b67c62cc35b493503ae2b3e02d2d2e7711e03beb2b6f481115d", "nJUPS5CrLV2iBdMvdMzMiP7iA2dzumaWGc" },
        { "c1b8c857a2039d6249d3bd4e25d40b34c358e136869592d03c1e3ea85e2916a9", "037a13b47233d512e123c180984a67571c6b0ed10c012351842846a4eb33b26e37", "UxnG3PoFvKtRuLu5nyFdb6eu6pu1SZadkR" },
        { "2ccb1679652e9bad28f3a316dd8d98ebfb5d8d72d679655365c4fd42e07089b1", "0284eefe3f4d6500fb563b69d52c7cfdf3152a3394321cfe1dc8d1de1e2868e3f2", "SZRDLCVHyoP7Xo5FEnEw7ckibmitbNx25V" },
        { "e7550f33084a1b8ba935e2a943201adbea065ba9e87ae1e07c5a0b1d87ea8f3e", "024386ad78055064e65086ab69ae5c1629aca2fc7e4857261d141c181236700ae0", "2Niqzo12tZ9ioZq5vwPHMVR4g7UVpp9TCmP" },
        { "cd6c5e2d56c302496009c0cd8006e9264a69606524fc7f58b45351d2cd883209", "02b7e753683d5b53b5ce1c800dbfee62594d7d3f1d5f8a2af8f9b9b6d01fac02e3", "2UDzBKnxZf4d9pdrBJAqbtoeH641RFLYKxd" },
    };

    [Theory]
    [MemberData(nameof(SkycoinVectors))]
    public void Skycoin_addresses_match_Skycoin_golden_vectors(string secret, string publicKey, string address)
    {
        Assert.Equal(address, SkycoinAddress.FromPublicKey(Convert.FromHexString(publicKey)));
        Assert.Equal(address, SkycoinAddress.FromSecretKey(Convert.FromHexString(secret)));
        Assert.True(SkycoinAddress.IsValid(address));
    }

    [Fact]
    public void A_Skycoin_address_with_a_wrong_checksum_version_or_length_is_refused()
    {
        const string good = "cfb24jWcms9pZtvEx3UjUuLPdT6rbx6r9M";
        Assert.False(SkycoinAddress.IsValid(good[..^1] + (good[^1] == 'M' ? 'N' : 'M')));
        Assert.False(SkycoinAddress.IsValid("cfb24jWcms9pZtvEx3UjUuLPdT6rbx6r9"));
        Assert.False(SkycoinAddress.IsValid("1" + good));
        Assert.False(SkycoinAddress.IsValid(good + " "));
        Assert.False(SkycoinAddress.IsValid("0" + good[1..])); // '0' is not base58
        Assert.False(SkycoinAddress.IsValid(""));
        // A Bitcoin address of the same key is base58 of 25 bytes too, but its checksum and version are Bitcoin's.
        Assert.False(SkycoinAddress.IsValid("1GJ3vu6ZiskrnP7korsBVEanxb6fpqDjat"));
        // The same key hash and checksum rule with version 1 instead of 0.
        var bytes = NBitcoin.DataEncoders.Encoders.Base58.DecodeData(good);
        bytes[20] = 1;
        System.Security.Cryptography.SHA256.HashData(bytes.AsSpan(0, 21)).AsSpan(0, 4).CopyTo(bytes.AsSpan(21));
        Assert.False(SkycoinAddress.IsValid(NBitcoin.DataEncoders.Encoders.Base58.EncodeData(bytes)));
    }

    [Fact]
    public void Only_a_compressed_point_of_the_curve_or_a_secret_below_the_group_order_makes_a_Skycoin_address()
    {
        var notOnCurve = new byte[33];
        notOnCurve[0] = 2;
        notOnCurve.AsSpan(1).Fill(0xFF);
        Assert.ThrowsAny<ArgumentException>(() => SkycoinAddress.FromPublicKey(notOnCurve));
        Assert.ThrowsAny<ArgumentException>(() => SkycoinAddress.FromPublicKey(Convert.FromHexString("04" + new string('1', 128))));
        Assert.ThrowsAny<ArgumentException>(() => SkycoinAddress.FromSecretKey(new byte[32]));
        Assert.ThrowsAny<ArgumentException>(() => SkycoinAddress.FromSecretKey(Convert.FromHexString("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141")));
    }

    [Fact]
    public void Skycoin_deposit_addresses_are_deterministic_per_seed_and_index_and_spendable_by_their_key()
    {
        var seed = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();
        var scheme = new SkycoinAddressScheme(seed);
        var addresses = Enumerable.Range(0, 20).Select(i => scheme.DepositAddress(i)).ToList();
        Assert.Equal(addresses, Enumerable.Range(0, 20).Select(i => new SkycoinAddressScheme(seed).DepositAddress(i)));
        Assert.Equal(20, addresses.Distinct().Count());
        Assert.All(addresses, a => Assert.True(scheme.IsValidAddress(a)));
        Assert.Equal(addresses[3], SkycoinAddress.FromSecretKey(scheme.DepositSecretKey(3)));
        seed[0] ^= 1;
        Assert.NotEqual(addresses[0], new SkycoinAddressScheme(seed).DepositAddress(0));
    }

    [Fact]
    public void Descriptor_checksums_match_the_BIP380_vector()
    {
        Assert.Equal("raw(deadbeef)#89f8spxm", DescriptorChecksum.Append("raw(deadbeef)"));
    }
}
