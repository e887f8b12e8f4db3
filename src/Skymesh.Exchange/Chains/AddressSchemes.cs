using System.Buffers.Binary;
using System.Security.Cryptography;
using NBitcoin;
using NBitcoin.DataEncoders;

namespace Skymesh.Exchange.Chains;

/// <summary>An asset's addresses: the exchange's deposit addresses, derived from its seed, and which destinations are valid.</summary>
public interface IAddressScheme
{
    /// <summary>"BTC" or "SKY".</summary>
    string Asset { get; }

    /// <summary>Decimal places of the asset.</summary>
    int Scale { get; }

    /// <summary>The deposit address number <paramref name="index"/>: the same seed and index always give the same address.</summary>
    string DepositAddress(long index);

    /// <summary>Whether <paramref name="address"/> is a valid destination on this scheme's chain.</summary>
    bool IsValidAddress(string address);
}

/// <summary>Checks of the exchange's seed, shared by the schemes.</summary>
internal static class ChainSeed
{
    public const int MinLength = 16;
    public const int MaxLength = 64;

    public static void Check(ReadOnlySpan<byte> seed)
    {
        if (seed.Length is < MinLength or > MaxLength)
            throw new ArgumentException($"A chain seed is {MinLength} to {MaxLength} bytes, not {seed.Length}.", nameof(seed));
    }

    public static void CheckIndex(long index)
    {
        // BIP32 numbers unhardened children below 2^31; the SKY scheme keeps to the same range so both coins agree.
        if (index is < 0 or > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(index), index, "A deposit address index is 0 to 2^31 - 1.");
    }
}

/// <summary>
/// BTC deposit addresses: P2WPKH (bech32) keys derived by BIP32 from the seed at m/84'/coin'/0'/0/index (BIP84), coin 0
/// on the main network and 1 on the test networks. Valid destinations are any address of the network, bech32 or legacy.
/// </summary>
public sealed class BitcoinAddressScheme : IAddressScheme
{
    public const string AssetCode = "BTC";
    public const int AssetScale = 8;

    private readonly ExtKey _master;
    private readonly ExtPubKey _receiving;

    public BitcoinAddressScheme(ReadOnlySpan<byte> seed, Network network)
    {
        ChainSeed.Check(seed);
        ArgumentNullException.ThrowIfNull(network);
        Network = network;
        CoinType = network.ChainName == ChainName.Mainnet ? 0 : 1;
        _master = ExtKey.CreateFromSeed(seed.ToArray());
        AccountPath = new KeyPath($"84'/{CoinType}'/0'");
        Account = _master.Derive(AccountPath).Neuter();
        _receiving = Account.Derive(0);
    }

    public string Asset => AssetCode;

    public int Scale => AssetScale;

    public Network Network { get; }

    /// <summary>0 on the main network, 1 on the test networks (BIP44 coin types).</summary>
    public int CoinType { get; }

    /// <summary>m/84'/coin'/0': the account whose external chain (/0/index) holds the deposit keys.</summary>
    public KeyPath AccountPath { get; }

    /// <summary>The account's extended public key: it derives every deposit address and no secret.</summary>
    public ExtPubKey Account { get; }

    /// <summary>The master key. It can spend every deposit: never log it.</summary>
    internal ExtKey Master => _master;

    public string DepositAddress(long index)
    {
        ChainSeed.CheckIndex(index);
        return _receiving.Derive((uint)index).PubKey.GetAddress(ScriptPubKeyType.Segwit, Network).ToString();
    }

    public bool IsValidAddress(string address) => IsValid(address, Network);

    /// <summary>Whether <paramref name="address"/> is a valid address of <paramref name="network"/> (any kind: bech32, bech32m, legacy).</summary>
    public static bool IsValid(string? address, Network network)
    {
        if (string.IsNullOrEmpty(address) || address.Length > 100 || address.Trim().Length != address.Length)
            return false;
        try
        {
            BitcoinAddress.Create(address, network);
            return true;
        }
        catch (Exception e) when (e is FormatException or ArgumentException or NotSupportedException)
        {
            return false;
        }
    }

    /// <summary>The network named "main", "test", "regtest" or "signet".</summary>
    public static Network NetworkFromName(string name) => name switch
    {
        "main" => NBitcoin.Network.Main,
        "test" => NBitcoin.Network.TestNet,
        "regtest" => NBitcoin.Network.RegTest,
        "signet" => Bitcoin.Instance.Signet,
        _ => throw new ArgumentException($"Unknown Bitcoin network '{name}': main, test, regtest or signet.", nameof(name)),
    };
}

/// <summary>
/// SKY deposit addresses in Skycoin's own format. The key of deposit <c>index</c> is the first of
/// SHA256(seed ‖ "skymesh/sky-deposit" ‖ index as 8 bytes big-endian ‖ counter as 4 bytes big-endian), counter = 0, 1,
/// ..., that is a valid secp256k1 secret (1 to n - 1); its compressed public key gives the address
/// (<see cref="SkycoinAddress.FromPublicKey"/>).
/// </summary>
public sealed class SkycoinAddressScheme : IAddressScheme
{
    public const string AssetCode = "SKY";
    public const int AssetScale = 6;

    private static readonly byte[] DepositTag = "skymesh/sky-deposit"u8.ToArray();
    private readonly byte[] _seed;

    public SkycoinAddressScheme(ReadOnlySpan<byte> seed)
    {
        ChainSeed.Check(seed);
        _seed = seed.ToArray();
    }

    public string Asset => AssetCode;

    public int Scale => AssetScale;

    public string DepositAddress(long index) => SkycoinAddress.FromSecretKey(DepositSecretKey(index));

    public bool IsValidAddress(string address) => SkycoinAddress.IsValid(address);

    /// <summary>The 32-byte secret key of deposit address <paramref name="index"/> (see the type's summary). It spends the deposit: never log it.</summary>
    public byte[] DepositSecretKey(long index)
    {
        ChainSeed.CheckIndex(index);
        var input = new byte[_seed.Length + DepositTag.Length + 8 + 4];
        _seed.CopyTo(input, 0);
        DepositTag.CopyTo(input, _seed.Length);
        BinaryPrimitives.WriteInt64BigEndian(input.AsSpan(_seed.Length + DepositTag.Length), index);
        for (var counter = 0u; ; counter++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(input.AsSpan(input.Length - 4), counter);
            var secret = SHA256.HashData(input);
            if (SkycoinAddress.IsValidSecretKey(secret))
            {
                CryptographicOperations.ZeroMemory(input);
                return secret;
            }
        }
    }
}

/// <summary>
/// Skycoin addresses: RIPEMD160(SHA256(SHA256(compressed public key))) (20 bytes), the version byte 0, and a checksum
/// (the first 4 bytes of SHA256 of those 21 bytes), in base58 with the Bitcoin alphabet.
/// </summary>
public static class SkycoinAddress
{
    private const int KeyHashLength = 20;
    private const int Length = KeyHashLength + 1 + 4;
    private const byte Version = 0;

    // The order n of secp256k1's group, big-endian: a secret key is 1 to n - 1.
    private static readonly byte[] GroupOrder = Convert.FromHexString("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141");

    /// <summary>The address of a 33-byte compressed secp256k1 public key.</summary>
    public static string FromPublicKey(ReadOnlySpan<byte> compressedPublicKey)
    {
        if (compressedPublicKey.Length != 33 || compressedPublicKey[0] is not (2 or 3))
            throw new ArgumentException("A Skycoin address is made from a 33-byte compressed public key.", nameof(compressedPublicKey));
        var key = compressedPublicKey.ToArray();
        try
        {
            _ = new PubKey(key);
        }
        catch (FormatException e)
        {
            throw new ArgumentException("The public key is not a point of secp256k1.", nameof(compressedPublicKey), e);
        }
        var inner = SHA256.HashData(SHA256.HashData(key));
        var bytes = new byte[Length];
        NBitcoin.Crypto.Hashes.RIPEMD160(inner).CopyTo(bytes, 0);
        bytes[KeyHashLength] = Version;
        SHA256.HashData(bytes.AsSpan(0, KeyHashLength + 1)).AsSpan(0, 4).CopyTo(bytes.AsSpan(KeyHashLength + 1));
        return Encoders.Base58.EncodeData(bytes);
    }

    /// <summary>The address of a 32-byte secret key.</summary>
    public static string FromSecretKey(ReadOnlySpan<byte> secretKey)
    {
        if (!IsValidSecretKey(secretKey))
            throw new ArgumentException("A secret key is 32 bytes, from 1 to n - 1.", nameof(secretKey));
        using var key = new Key(secretKey.ToArray());
        return FromPublicKey(key.PubKey.Compress().ToBytes());
    }

    /// <summary>Whether <paramref name="address"/> is a Skycoin address: base58 of 25 bytes, version 0, its checksum right.</summary>
    public static bool IsValid(string? address)
    {
        // 25 bytes are at most 35 base58 digits.
        if (string.IsNullOrEmpty(address) || address.Length > 35)
            return false;
        byte[] bytes;
        try
        {
            bytes = Encoders.Base58.DecodeData(address);
        }
        catch (FormatException)
        {
            return false;
        }
        if (bytes.Length != Length || bytes[KeyHashLength] != Version)
            return false;
        Span<byte> check = stackalloc byte[32];
        SHA256.HashData(bytes.AsSpan(0, KeyHashLength + 1), check);
        // Base58 has one spelling per byte string; anything else (spaces, extra leading '1's) is refused.
        return check[..4].SequenceEqual(bytes.AsSpan(KeyHashLength + 1)) && Encoders.Base58.EncodeData(bytes) == address;
    }

    internal static bool IsValidSecretKey(ReadOnlySpan<byte> secret) =>
        secret.Length == 32 && secret.IndexOfAnyExcept((byte)0) >= 0 && secret.SequenceCompareTo(GroupOrder) < 0;
}
