using Microsoft.Extensions.Time.Testing;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Ssmp.Tests.Rpc;

public class ReassemblerTests
{
    private static byte[] Message(int length)
    {
        var bytes = new byte[length];
        new Random(length).NextBytes(bytes);
        return bytes;
    }

    private static byte[][] Fragments(uint id, byte[] message) =>
        Enumerable.Range(0, SsmpChunking.FragmentCount(message.Length)).Select(i => SsmpChunking.Fragment(id, message, i)).ToArray();

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(SsmpChunking.MaxFragmentData)]
    [InlineData(SsmpChunking.MaxFragmentData + 1)]
    [InlineData(100_000)]
    public void A_message_split_into_payloads_comes_back_whole(int length)
    {
        var message = Message(length);
        var fragments = Fragments(7, message);
        Assert.All(fragments, f => Assert.InRange(f.Length, SsmpChunking.HeaderLength, 1024));
        var reassembler = new SsmpReassembler();
        byte[]? result = null;
        for (var i = 0; i < fragments.Length; i++)
        {
            var status = reassembler.Add("alice", fragments[i], out result, out _);
            Assert.Equal(i == fragments.Length - 1 ? ReassemblyStatus.Complete : ReassemblyStatus.Pending, status);
        }
        Assert.Equal(message, result);
        Assert.Equal(0, reassembler.Incomplete);
        Assert.Equal(0, reassembler.ReservedBytes);
    }

    [Fact]
    public void Fragments_out_of_order_and_repeated_still_make_the_message()
    {
        var message = Message(5000);
        var fragments = Fragments(1, message).Reverse().ToList();
        fragments.Insert(2, fragments[0]);
        var reassembler = new SsmpReassembler();
        byte[]? result = null;
        var completions = 0;
        foreach (var f in fragments)
        {
            if (reassembler.Add("bob", f, out var m, out _) == ReassemblyStatus.Complete)
            {
                completions++;
                result = m;
            }
        }
        Assert.Equal(1, completions);
        Assert.Equal(message, result);
    }

    [Fact]
    public void Messages_from_different_senders_with_the_same_id_do_not_mix()
    {
        var a = Message(3000);
        var b = Message(3001);
        var fa = Fragments(9, a);
        var fb = Fragments(9, b);
        var reassembler = new SsmpReassembler();
        byte[]? ra = null, rb = null;
        for (var i = 0; i < fa.Length; i++)
        {
            if (reassembler.Add("a", fa[i], out var m1, out _) == ReassemblyStatus.Complete)
                ra = m1;
            if (reassembler.Add("b", fb[i], out var m2, out _) == ReassemblyStatus.Complete)
                rb = m2;
        }
        Assert.Equal(a, ra);
        Assert.Equal(b, rb);
    }

    [Fact]
    public void A_first_fragment_declaring_more_than_the_limit_is_dropped_before_anything_is_buffered()
    {
        var reassembler = new SsmpReassembler(new SsmpReassemblerOptions { MaxMessageBytes = 10_000 });
        var huge = SsmpChunking.Fragment(1, new byte[SsmpChunking.MaxFragmentData * 20], 0);
        Assert.Equal(ReassemblyStatus.Dropped, reassembler.Add("mallory", huge, out _, out var why));
        Assert.Equal(ReassemblyDrop.TooLarge, why);
        Assert.Equal(0, reassembler.ReservedBytes);
        Assert.Equal(1, reassembler.Dropped(ReassemblyDrop.TooLarge));
    }

    [Fact]
    public void One_sender_cannot_hold_more_than_its_share_of_half_delivered_messages()
    {
        var reassembler = new SsmpReassembler(new SsmpReassemblerOptions { MaxIncompletePerSender = 3 });
        var first = Enumerable.Range(0, 4).Select(i => SsmpChunking.Fragment((uint)i, new byte[3000], 0)).ToArray();
        for (var i = 0; i < 3; i++)
            Assert.Equal(ReassemblyStatus.Pending, reassembler.Add("mallory", first[i], out _, out _));
        Assert.Equal(ReassemblyStatus.Dropped, reassembler.Add("mallory", first[3], out _, out var why));
        Assert.Equal(ReassemblyDrop.TooManyIncomplete, why);
        // Another sender is unaffected.
        Assert.Equal(ReassemblyStatus.Pending, reassembler.Add("alice", first[0], out _, out _));
    }

    [Fact]
    public void All_senders_together_stay_within_the_byte_budget()
    {
        var reassembler = new SsmpReassembler(new SsmpReassemblerOptions { MaxMessageBytes = 4 * SsmpChunking.MaxFragmentData, MaxIncompleteBytes = 8 * SsmpChunking.MaxFragmentData });
        var big = new byte[4 * SsmpChunking.MaxFragmentData];
        Assert.Equal(ReassemblyStatus.Pending, reassembler.Add("a", SsmpChunking.Fragment(1, big, 0), out _, out _));
        Assert.Equal(ReassemblyStatus.Pending, reassembler.Add("b", SsmpChunking.Fragment(1, big, 0), out _, out _));
        Assert.Equal(ReassemblyStatus.Dropped, reassembler.Add("c", SsmpChunking.Fragment(1, big, 0), out _, out var why));
        Assert.Equal(ReassemblyDrop.OverBudget, why);
        Assert.Equal(8 * SsmpChunking.MaxFragmentData, reassembler.ReservedBytes);
    }

    [Fact]
    public void A_half_delivered_message_expires_and_frees_its_room()
    {
        var time = new FakeTimeProvider();
        var reassembler = new SsmpReassembler(new SsmpReassemblerOptions { Timeout = TimeSpan.FromSeconds(30) }, time);
        Assert.Equal(ReassemblyStatus.Pending, reassembler.Add("a", SsmpChunking.Fragment(1, new byte[3000], 0), out _, out _));
        time.Advance(TimeSpan.FromSeconds(29));
        reassembler.Sweep();
        Assert.Equal(1, reassembler.Incomplete);
        time.Advance(TimeSpan.FromSeconds(1));
        reassembler.Sweep();
        Assert.Equal(0, reassembler.Incomplete);
        Assert.Equal(0, reassembler.ReservedBytes);
        Assert.Equal(1, reassembler.Dropped(ReassemblyDrop.Expired));
        // The rest of the expired message no longer completes anything.
        Assert.Equal(ReassemblyStatus.Pending, reassembler.Add("a", SsmpChunking.Fragment(1, new byte[3000], 1), out _, out _));
    }

    [Theory]
    [InlineData(new byte[] { 0xF5, 0, 0, 0, 1, 0, 0, 0, 0, 1 })] // count 0
    [InlineData(new byte[] { 0xF5, 0, 0, 0, 1, 0, 2, 0, 2, 1 })] // index past count
    [InlineData(new byte[] { 0xF5, 0, 0, 0, 1, 0, 0, 0, 2, 1 })] // first of two but not full
    [InlineData(new byte[] { 0xF5, 0, 0, 0, 1, 0, 0 })] // short header
    [InlineData(new byte[] { 0x41, 0, 0, 0, 1, 0, 0, 0, 1, 1 })] // not a fragment
    public void Malformed_fragments_are_dropped_and_counted(byte[] payload)
    {
        var reassembler = new SsmpReassembler();
        Assert.Equal(ReassemblyStatus.Dropped, reassembler.Add("x", payload, out _, out var why));
        Assert.Equal(ReassemblyDrop.Malformed, why);
        Assert.Equal(0, reassembler.ReservedBytes);
    }

    [Fact]
    public void A_fragment_that_changes_the_declared_count_drops_the_message()
    {
        var reassembler = new SsmpReassembler();
        Assert.Equal(ReassemblyStatus.Pending, reassembler.Add("x", SsmpChunking.Fragment(5, new byte[3000], 0), out _, out _));
        Assert.Equal(ReassemblyStatus.Dropped, reassembler.Add("x", SsmpChunking.Fragment(5, new byte[5000], 1), out _, out var why));
        Assert.Equal(ReassemblyDrop.Inconsistent, why);
        Assert.Equal(0, reassembler.Incomplete);
    }
}
