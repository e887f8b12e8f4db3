using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using Skymesh.Identity;

namespace Skymesh.Bench.Micro;

/// <summary>
/// What a node pays per signature and per check (docs/architecture.md budgets ~250 µs and ~100 µs), per link handshake
/// (ECDH), and, as the anchor measured in the same run, the BCL's OpenSSL ECDSA on the same curve. The message is 100
/// bytes, the size of a small control-plane request.
/// </summary>
[MemoryDiagnoser]
public class IdentityBenchmarks : IDisposable
{
    private const string Purpose = "path-setup";
    private readonly byte[] _message = new byte[100];
    private readonly byte[] _signature = new byte[NodeKey.SignatureLength];
    private readonly byte[] _ecdsaSignature = new byte[72];
    private readonly byte[] _digest = new byte[32];
    private readonly byte[] _sharedSecret = new byte[EphemeralKey.SharedSecretLength];
    private NodeKey _key = null!;
    private NodeAddress _address;
    private byte[] _addressBytes = [];
    private EphemeralKey _ephemeral = null!;
    private byte[] _peerPublicKey = [];
    private ECDsa _ecdsa = null!;

    [GlobalSetup]
    public void Setup()
    {
        new Random(1).NextBytes(_message);
        _key = NodeKey.Generate();
        _address = _key.Address;
        _addressBytes = _address.ToBytes();
        _key.Sign(Purpose, _message, _signature);
        _ephemeral = EphemeralKey.Generate();
        using var peer = EphemeralKey.Generate();
        _peerPublicKey = peer.PublicKey.ToArray();
        _ecdsa = ECDsa.Create(ECCurve.CreateFromFriendlyName("secp256k1"));
        SHA256.HashData(_message, _digest);
        _ecdsa.TrySignHash(_digest, _ecdsaSignature, out _);
        // Both checks measure the path of a good signature.
        if (!Verify() || !OpenSslEcdsaVerify())
            throw new InvalidOperationException("The benchmark's signatures do not verify.");
    }

    [Benchmark]
    public byte Sign()
    {
        _key.Sign(Purpose, _message, _signature);
        return _signature[0];
    }

    [Benchmark]
    public bool Verify() => _address.Verify(Purpose, _message, _signature);

    /// <summary>Checking that 32 bytes are a curve point (a square root); <see cref="Verify"/> includes one.</summary>
    [Benchmark]
    public bool AddressFromBytes() => NodeAddress.TryFromBytes(_addressBytes, out _);

    [Benchmark]
    public byte DeriveSharedSecret()
    {
        _ephemeral.DeriveSharedSecret(_peerPublicKey, _sharedSecret);
        return _sharedSecret[0];
    }

    [Benchmark]
    public int OpenSslEcdsaSign()
    {
        SHA256.HashData(_message, _digest);
        _ecdsa.TrySignHash(_digest, _ecdsaSignature, out var written);
        return written;
    }

    [Benchmark]
    public bool OpenSslEcdsaVerify()
    {
        SHA256.HashData(_message, _digest);
        return _ecdsa.VerifyHash(_digest, _ecdsaSignature.AsSpan(0, 64));
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _key?.Dispose();
        _ephemeral?.Dispose();
        _ecdsa?.Dispose();
        GC.SuppressFinalize(this);
    }
}
