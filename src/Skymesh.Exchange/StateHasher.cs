namespace Skymesh.Exchange;

/// <summary>
/// A running 64-bit hash of the engine's state (FNV-1a over 8-byte words), the same on every machine and every run: two
/// engines that went through the same commands have the same hash, and a restart that replays the journal must reach it.
/// </summary>
public struct StateHasher()
{
    private ulong _value = 14695981039346656037UL;

    public readonly ulong Value => _value;

    public void Add(long word)
    {
        var v = (ulong)word;
        for (var i = 0; i < 8; i++)
        {
            _value ^= v & 0xff;
            _value *= 1099511628211UL;
            v >>= 8;
        }
    }
}
