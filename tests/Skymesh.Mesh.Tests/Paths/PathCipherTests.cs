using System.Buffers.Binary;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Paths;

public class PathCipherTests
{
    private static readonly byte[] Plain = "a path message"u8.ToArray();

    [Fact]
    public void Sealing_the_same_message_twice_uses_a_new_nonce_and_gives_new_ciphertext()
    {
        using var cipher = new PathCipher(PathHarness.KeyAtoB, PathHarness.KeyBtoA);
        var first = new byte[Plain.Length + PathCipher.Overhead];
        var second = new byte[Plain.Length + PathCipher.Overhead];
        cipher.Seal(17, Plain, first);
        cipher.Seal(17, Plain, second);
        Assert.Equal(0ul, BinaryPrimitives.ReadUInt64BigEndian(first));
        Assert.Equal(1ul, BinaryPrimitives.ReadUInt64BigEndian(second));
        Assert.NotEqual(first.AsSpan(8).ToArray(), second.AsSpan(8).ToArray());
    }

    [Fact]
    public void Each_side_opens_what_the_other_sealed()
    {
        using var a = new PathCipher(PathHarness.KeyAtoB, PathHarness.KeyBtoA);
        using var b = new PathCipher(PathHarness.KeyBtoA, PathHarness.KeyAtoB);
        var sealedMessage = new byte[Plain.Length + PathCipher.Overhead];
        a.Seal(16, Plain, sealedMessage);
        var opened = new byte[Plain.Length];
        Assert.True(b.TryOpen(16, sealedMessage, opened, out var written));
        Assert.Equal(Plain, opened[..written]);
        // A's own receiving key is the other direction's: it cannot open its own message.
        Assert.False(a.TryOpen(16, sealedMessage, opened, out _));
    }

    [Fact]
    public void Every_flipped_bit_and_a_changed_type_make_a_sealed_message_fail_to_open()
    {
        using var a = new PathCipher(PathHarness.KeyAtoB, PathHarness.KeyBtoA);
        using var b = new PathCipher(PathHarness.KeyBtoA, PathHarness.KeyAtoB);
        var sealedMessage = new byte[Plain.Length + PathCipher.Overhead];
        a.Seal(17, Plain, sealedMessage);
        var opened = new byte[sealedMessage.Length];
        for (var bit = 0; bit < sealedMessage.Length * 8; bit++)
        {
            sealedMessage[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.False(b.TryOpen(17, sealedMessage, opened, out _), $"bit {bit}");
            sealedMessage[bit / 8] ^= (byte)(1 << (bit % 8));
        }
        Assert.False(b.TryOpen(18, sealedMessage, opened, out _));
        Assert.False(b.TryOpen(17, sealedMessage.AsSpan(0, PathCipher.Overhead - 1), opened, out _));
        Assert.True(b.TryOpen(17, sealedMessage, opened, out _));
    }

    [Fact]
    public void Keys_of_the_wrong_length_are_refused()
    {
        Assert.Throws<ArgumentException>(() => new PathCipher(new byte[16], new byte[32]));
    }
}

public sealed class PathCipherReplayTests
{
    [Fact]
    public void A_sealed_message_opens_once_and_its_copy_is_refused_even_out_of_order()
    {
        var key = new byte[32];
        var back = new byte[32];
        back[0] = 1;
        using var sender = new Skymesh.Mesh.Paths.PathCipher(key, back);
        using var receiver = new Skymesh.Mesh.Paths.PathCipher(back, key);
        var sealedMessages = Enumerable.Range(0, 5000).Select(i =>
        {
            var buffer = new byte[4 + Skymesh.Mesh.Paths.PathCipher.Overhead];
            var n = sender.Seal(17, BitConverter.GetBytes(i), buffer);
            return buffer[..n];
        }).ToList();
        var plain = new byte[4];
        // Out of order within the window: each opens once.
        foreach (var i in new[] { 10, 3, 4999, 4000, 904 })
        {
            Assert.True(receiver.TryOpen(17, sealedMessages[i], plain, out _));
            Assert.Equal(i, BitConverter.ToInt32(plain));
            Assert.False(receiver.TryOpen(17, sealedMessages[i], plain, out _));
        }
        // Older than the window behind the highest counter seen (4999): refused as a possible replay.
        Assert.False(receiver.TryOpen(17, sealedMessages[700], plain, out _));
        Assert.True(receiver.TryOpen(17, sealedMessages[1000], plain, out _));
        Assert.Equal(6, receiver.Replays);
    }
}
