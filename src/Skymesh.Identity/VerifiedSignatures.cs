using System.Security.Cryptography;

namespace Skymesh.Identity;

/// <summary>
/// A process-wide memory of signatures already found good, for simulations: thousands of simulated nodes in one
/// process each check the same announcement, where in a real mesh each node — in its own process — checks it once.
/// Off unless <see cref="Enable"/> is called (a real node never calls it: it would only cost memory). A triple is
/// remembered by the SHA-256 of key, digest and signature, so only exactly what was checked is ever taken as good.
/// </summary>
public static class VerifiedSignatures
{
    private static readonly Lock Sync = new();
    private static HashSet<(UInt128, UInt128)>? s_good;
    private static int s_capacity;
    private static long s_hits;

    /// <summary>Whether the memory is on.</summary>
    public static bool Enabled => Volatile.Read(ref s_good) is not null;

    /// <summary>Checks skipped because the same triple was found good before.</summary>
    public static long Hits => Interlocked.Read(ref s_hits);

    /// <summary>Turns the memory on, holding up to <paramref name="capacity"/> triples (it starts over when full).</summary>
    public static void Enable(int capacity = 1 << 20)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        lock (Sync)
        {
            s_capacity = capacity;
            s_good ??= [];
        }
    }

    /// <summary>Checks with <paramref name="check"/> unless this exact triple was found good before.</summary>
    internal static bool Verify(NodeAddress key, ReadOnlySpan<byte> digest, ReadOnlySpan<byte> signature, VerifyDigest check)
    {
        if (Volatile.Read(ref s_good) is null)
            return check(digest, signature);
        Span<byte> triple = stackalloc byte[NodeAddress.Length + SignatureDomain.DigestLength + NodeKey.SignatureLength];
        if (signature.Length != NodeKey.SignatureLength || digest.Length != SignatureDomain.DigestLength)
            return check(digest, signature);
        key.WriteTo(triple);
        digest.CopyTo(triple[NodeAddress.Length..]);
        signature.CopyTo(triple[(NodeAddress.Length + SignatureDomain.DigestLength)..]);
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(triple, hash);
        var id = (BitConverter.ToUInt128(hash), BitConverter.ToUInt128(hash[16..]));
        lock (Sync)
        {
            if (s_good!.Contains(id))
            {
                s_hits++;
                return true;
            }
        }
        if (!check(digest, signature))
            return false;
        lock (Sync)
        {
            if (s_good!.Count >= s_capacity)
                s_good.Clear();
            s_good.Add(id);
        }
        return true;
    }

    internal delegate bool VerifyDigest(ReadOnlySpan<byte> digest, ReadOnlySpan<byte> signature);
}
