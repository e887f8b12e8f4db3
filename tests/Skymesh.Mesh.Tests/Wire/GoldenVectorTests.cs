using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Tests.Wire;

public class GoldenVectorTests
{
    // docs/wire-format.md, "Golden vectors".
    private static readonly byte[] PlainFrame = Convert.FromHexString(
        "a1000000000000000000000100000007100000026869010203041100" + "0000");

    private static readonly byte[] EncryptedFrame = Convert.FromHexString(
        "a10100000000000000000005" + "ccc8e31d329f9930c8ec20" + "7dd8c3de457ba268984c3c9a01918560");

    private static readonly byte[] Key = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();

    [Fact]
    public void The_builder_writes_the_documented_plain_frame()
    {
        var builder = new FrameBuilder(1400);
        Assert.True(builder.TryAdd(7, 0x10, "hi"u8, encrypted: false));
        Assert.True(builder.TryAdd(0x01020304, 0x11, ReadOnlySpan<byte>.Empty, encrypted: false));
        Assert.Equal(PlainFrame, builder.Seal(1, null).ToArray());
    }

    [Fact]
    public void The_builder_writes_the_documented_encrypted_frame()
    {
        var builder = new FrameBuilder(1400);
        using var cipher = new FrameCipher(Key);
        Assert.True(builder.TryAdd(1, 0x10, "abc"u8, encrypted: true));
        Assert.Equal(EncryptedFrame, builder.Seal(5, cipher).ToArray());
    }

    [Fact]
    public void The_documented_plain_frame_reads_back_message_by_message()
    {
        Assert.True(FrameHeader.TryRead(PlainFrame, out var header, out _));
        Assert.Equal(new FrameHeader(FrameFlags.None, 1), header);
        var reader = new MessageReader(PlainFrame.AsSpan(MeshWire.FrameHeaderLength));
        Assert.True(reader.TryRead(out var first));
        Assert.Equal(7u, first.Label);
        Assert.Equal(0x10, first.Type);
        Assert.Equal("hi"u8.ToArray(), first.Payload.ToArray());
        Assert.True(reader.TryRead(out var second));
        Assert.Equal(0x01020304u, second.Label);
        Assert.Equal(0x11, second.Type);
        Assert.True(second.Payload.IsEmpty);
        Assert.False(reader.TryRead(out _));
        Assert.Equal(WireError.None, reader.Error);
    }

    [Fact]
    public void The_documented_encrypted_frame_decrypts_to_its_message()
    {
        using var cipher = new FrameCipher(Key);
        var frame = EncryptedFrame.ToArray();
        Assert.True(FrameHeader.TryRead(frame, out var header, out _));
        Assert.Equal(new FrameHeader(FrameFlags.Encrypted, 5), header);
        Assert.True(cipher.TryDecrypt(frame, out var body));
        var reader = new MessageReader(body);
        Assert.True(reader.TryRead(out var message));
        Assert.Equal(1u, message.Label);
        Assert.Equal("abc"u8.ToArray(), message.Payload.ToArray());
        Assert.False(reader.TryRead(out _));
    }

    [Theory]
    [InlineData(0)] // a flipped bit in the header (the flags are authenticated too)
    [InlineData(11)] // the sequence number
    [InlineData(14)] // the ciphertext
    [InlineData(38)] // the tag
    public void An_encrypted_frame_altered_anywhere_fails_to_decrypt(int offset)
    {
        using var cipher = new FrameCipher(Key);
        var frame = EncryptedFrame.ToArray();
        frame[offset] ^= 0x01;
        Assert.False(cipher.TryDecrypt(frame, out _));
    }

    [Fact]
    public void An_encrypted_frame_does_not_open_with_another_key()
    {
        using var other = new FrameCipher(new byte[32]);
        Assert.False(other.TryDecrypt(EncryptedFrame.ToArray(), out _));
    }
}
