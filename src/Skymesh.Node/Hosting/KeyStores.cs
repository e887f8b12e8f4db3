using Skymesh.Identity;

namespace Skymesh.Node.Hosting;

/// <summary>Where a node's key comes from: a file in its data directory by default, memory in tests and simulations.</summary>
public interface IKeyStore
{
    /// <summary>The node's key, created on first use; <paramref name="description"/> says for the log what happened ("new key in …").</summary>
    NodeKey LoadOrCreate(out string description);
}

/// <summary>The key in an owner-only file (docs/node.md, "Keys"); created at first start.</summary>
public sealed class FileKeyStore(string path) : IKeyStore
{
    public string Path { get; } = path;

    public NodeKey LoadOrCreate(out string description)
    {
        var key = NodeKeyFile.LoadOrCreate(Path, out var created);
        description = $"{(created ? "new key" : "key")} in {Path}";
        return key;
    }
}

/// <summary>A key held in memory only: given, or drawn from a seeded random source so that a simulation is the same every run.</summary>
public sealed class MemoryKeyStore : IKeyStore
{
    private readonly NodeKey _key;

    public MemoryKeyStore(NodeKey key) => _key = key ?? throw new ArgumentNullException(nameof(key));

    /// <summary>A key drawn from <paramref name="random"/> (the same seed gives the same keys in the same order).</summary>
    public static MemoryKeyStore From(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        Span<byte> secret = stackalloc byte[32];
        while (true)
        {
            random.NextBytes(secret);
            try
            {
                return new MemoryKeyStore(NodeKey.FromSecret(secret));
            }
            catch (ArgumentException)
            {
                // Zero or above the curve order: about one draw in 2^128; draw again.
            }
        }
    }

    public NodeKey LoadOrCreate(out string description)
    {
        description = "key in memory";
        return _key;
    }
}
