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
