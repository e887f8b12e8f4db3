using Skymesh.Exchange.Service;

namespace Skymesh.Exchange.Tests;

public sealed class NonceSetTests
{
    private const long Window = 30_000;

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void A_nonce_used_inside_the_window_is_refused_and_one_never_used_is_taken(int seed)
    {
        // Counting up from a random start (as clients do) mixed with random nonces, times moving on and a little out of order.
        var random = new Random(seed);
        var set = new NonceSet();
        var used = new Dictionary<ulong, long>();
        var counter = (ulong)random.NextInt64() & ~0xFFFUL;
        long now = 1_000_000;
        for (var step = 0; step < 50_000; step++)
        {
            now += random.Next(0, 4);
            var time = now - random.Next(0, 1000);
            var nonce = random.Next(10) switch
            {
                0 => (ulong)random.NextInt64(),
                1 when used.Count > 0 => used.Keys.ElementAt(random.Next(Math.Min(used.Count, 64))),
                _ => counter++,
            };
            var forgetBefore = now - 2 * Window;
            var fresh = !used.TryGetValue(nonce, out var at) || at < forgetBefore;
            var taken = set.TryUse(nonce, time, forgetBefore);
            // Never forgotten early: a nonce whose request is still inside twice the window is always refused.
            if (!fresh)
                Assert.False(taken, $"nonce {nonce} used at {at} was taken again at {now}");
            if (taken)
                used[nonce] = time;
            else if (fresh)
                Assert.True(used.ContainsKey(nonce), $"nonce {nonce} was never used, yet refused");
        }
    }

    [Fact]
    public void Nonces_are_forgotten_once_their_block_is_older_than_the_bound()
    {
        var set = new NonceSet();
        for (ulong n = 0; n < 630; n++)
            Assert.True(set.TryUse(n, 1000, 0));
        Assert.Equal(10, set.Blocks);
        Assert.False(set.TryUse(5, 1000, 0));

        // A later request in the tenth block (576 to 639) keeps it when the other nine go.
        Assert.True(set.TryUse(1_000_000, 50_000, 0));
        Assert.True(set.TryUse(635, 70_000, 0));
        Assert.False(set.TryUse(629, 70_000, 0));
        Assert.Equal(11, set.Blocks);
        Assert.True(set.TryUse(5_000_000, 90_000, forgetBefore: 60_000));
        Assert.Equal(2, set.Blocks);
        Assert.True(set.TryUse(5, 90_000, 60_000));
        Assert.True(set.TryUse(1_000_000, 90_000, 60_000));
        Assert.False(set.TryUse(600, 90_000, 60_000));
    }
}
