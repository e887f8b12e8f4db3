using System.Runtime.InteropServices;

namespace Skymesh.Exchange.Service;

/// <summary>
/// The nonces one account has used, each remembered at least until its request's time is older than a bound the caller
/// gives (twice the request window). Nonces are kept as bits in blocks of 64 consecutive numbers, one dictionary entry
/// a block, and a block is forgotten as a whole once the newest time among its nonces is past the bound.
/// </summary>
/// <remarks>
/// Clients count their nonces up (docs/exchange-api.md), so at 25,000 requests a second an account fills a block every
/// 2.6 ms: a minute of nonces is 23,000 entries of 24 bytes in one dictionary, instead of 1.5 million in a hash set and
/// a queue, which outgrow the caches and make every check a miss or two. Random nonces still work, a block each.
/// Not thread-safe: the caller holds the account's lock.
/// </remarks>
internal sealed class NonceSet
{
    private struct Block
    {
        public ulong Used;
        public long Newest;
    }

    private readonly Dictionary<ulong, Block> _blocks = [];

    // Blocks in the order they were made, with the time they may be forgotten from; a block still in use when its turn
    // comes goes to the back with its newest time.
    private readonly Queue<(long Time, ulong Block)> _expiry = new();

    /// <summary>Blocks held now.</summary>
    public int Blocks => _blocks.Count;

    /// <summary>
    /// Marks <paramref name="nonce"/> used by a request of time <paramref name="time"/>; false when it already was. Blocks
    /// whose newest time is before <paramref name="forgetBefore"/> are forgotten first.
    /// </summary>
    public bool TryUse(ulong nonce, long time, long forgetBefore)
    {
        Forget(forgetBefore);
        var key = nonce >> 6;
        var bit = 1UL << (int)(nonce & 63);
        ref var block = ref CollectionsMarshal.GetValueRefOrAddDefault(_blocks, key, out var exists);
        if (!exists)
        {
            block.Newest = time;
            _expiry.Enqueue((time, key));
        }
        else if ((block.Used & bit) != 0)
        {
            return false;
        }
        block.Used |= bit;
        if (time > block.Newest)
            block.Newest = time;
        return true;
    }

    private void Forget(long before)
    {
        // Each entry is looked at once a call: one put back carries a time not before the bound, and stops the loop.
        while (_expiry.TryPeek(out var next) && next.Time < before)
        {
            _expiry.Dequeue();
            ref var block = ref CollectionsMarshal.GetValueRefOrNullRef(_blocks, next.Block);
            if (block.Newest < before)
                _blocks.Remove(next.Block);
            else
                _expiry.Enqueue((block.Newest, next.Block));
        }
    }
}
