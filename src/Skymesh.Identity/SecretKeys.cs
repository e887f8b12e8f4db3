using System.Security.Cryptography;
using NBitcoin.Secp256k1;

namespace Skymesh.Identity;

internal static class SecretKeys
{
    public const int Length = 32;

    /// <summary>
    /// A uniformly random valid scalar: 32 bytes from the system CSPRNG, drawn again in the (probability ~2⁻¹²⁸) case
    /// that they are zero or not below the group order.
    /// </summary>
    public static ECPrivKey Generate()
    {
        Span<byte> secret = stackalloc byte[Length];
        try
        {
            while (true)
            {
                RandomNumberGenerator.Fill(secret);
                if (ECPrivKey.TryCreate(secret, out var key))
                    return key;
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }
}
