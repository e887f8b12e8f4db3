using System.Security.Cryptography;
using System.Text;

namespace Skymesh.Identity;

/// <summary>
/// What a Skymesh signature signs: the BIP340 tagged hash of the message under the tag <c>"skymesh/" + purpose</c>,
/// <c>SHA256(SHA256(tag) ‖ SHA256(tag) ‖ message)</c>. A signature made for one purpose therefore signs a different
/// 32-byte digest than the same bytes under any other purpose, and cannot be replayed as another kind of statement.
/// </summary>
internal static class SignatureDomain
{
    public const string TagPrefix = "skymesh/";
    public const int MaxPurposeLength = 64;
    public const int DigestLength = 32;

    public static void Digest(string purpose, ReadOnlySpan<byte> message, Span<byte> digest)
    {
        Validate(purpose);
        Span<byte> tag = stackalloc byte[TagPrefix.Length + MaxPurposeLength];
        var length = Encoding.ASCII.GetBytes(TagPrefix, tag);
        length += Encoding.ASCII.GetBytes(purpose, tag[length..]);

        Span<byte> tagHash = stackalloc byte[32];
        SHA256.HashData(tag[..length], tagHash);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(tagHash);
        hash.AppendData(tagHash);
        hash.AppendData(message);
        hash.GetHashAndReset(digest);
    }

    /// <summary>
    /// Purposes are names fixed in code ("link-hello", "path-setup", "announce/link"); the narrow alphabet keeps a typo
    /// or a stray space from silently creating a separate signature domain.
    /// </summary>
    private static void Validate(string purpose)
    {
        ArgumentNullException.ThrowIfNull(purpose);
        var valid = purpose.Length is > 0 and <= MaxPurposeLength;
        foreach (var c in purpose)
            valid &= c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '_' or '.' or '/';
        if (!valid)
            throw new ArgumentException(
                $"A signature purpose is 1 to {MaxPurposeLength} characters from a-z, 0-9, '-', '_', '.' and '/'; got '{(purpose.Length > 80 ? purpose[..80] + "…" : purpose)}'.",
                nameof(purpose));
    }
}
