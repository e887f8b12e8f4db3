using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Tests.Wire;

public class FrameTests
{
    [Fact]
    public void A_frame_takes_messages_until_the_mtu_and_refuses_the_next_without_writing_it()
    {
        var builder = new FrameBuilder(MeshWire.MinMtu);
        var payload = new byte[100];
        var added = 0;
        while (builder.TryAdd((uint)(added + 1), 16, payload, encrypted: false))
            added++;
        // (1232 - 12) / (8 + 100) = 11 whole messages.
        Assert.Equal(11, added);
        var frame = builder.Seal(0, null);
        Assert.Equal(12 + 11 * 108, frame.Length);
        var reader = new MessageReader(frame[MeshWire.FrameHeaderLength..]);
        var read = 0;
        while (reader.TryRead(out var m))
            Assert.Equal((uint)++read, m.Label);
        Assert.Equal(11, read);
        Assert.Equal(WireError.None, reader.Error);
    }

    [Fact]
    public void Room_for_the_tag_is_kept_when_the_frame_will_be_encrypted()
    {
        var builder = new FrameBuilder(MeshWire.MinMtu);
        var max = FrameBuilder.MaxPayload(MeshWire.MinMtu, encrypted: true);
        Assert.Equal(MeshWire.MinMtu - 12 - 8 - 16, max);
        Assert.False(builder.TryAdd(1, 16, new byte[max + 1], encrypted: true));
        Assert.True(builder.TryAdd(1, 16, new byte[max], encrypted: true));
        using var cipher = new FrameCipher(new byte[32]);
        Assert.Equal(MeshWire.MinMtu, builder.Seal(0, cipher).Length);
    }

    [Theory]
    [InlineData("", WireError.TooShort)]
    [InlineData("a1000000000000000000", WireError.TooShort)]
    [InlineData("b1000000000000000000000000000000", WireError.BadMarker)]
    [InlineData("a1020000000000000000000000000000", WireError.ReservedBitsSet)]
    [InlineData("a1000100000000000000000000000000", WireError.ReservedFieldSet)]
    [InlineData("a10100000000000000000000", WireError.TooShort)]
    public void A_bad_frame_header_is_refused_with_its_reason(string hex, WireError expected)
    {
        Assert.False(FrameHeader.TryRead(Convert.FromHexString(hex), out _, out var error));
        Assert.Equal(expected, error);
    }

    [Fact]
    public void A_frame_longer_than_any_datagram_is_refused()
    {
        var frame = new byte[MeshWire.MaxFrameLength + 1];
        frame[0] = MeshWire.FrameMarker;
        Assert.False(FrameHeader.TryRead(frame, out _, out var error));
        Assert.Equal(WireError.TooLong, error);
    }

    [Theory]
    [InlineData("00000001100000", WireError.TruncatedMessage)] // 7 bytes: no whole header
    [InlineData("0000000110000005616263", WireError.TruncatedMessage)] // declares 5, holds 3
    [InlineData("0000000110010000", WireError.ReservedFieldSet)]
    [InlineData("000000011000000161" + "00000002", WireError.TruncatedMessage)] // good message, then 4 stray bytes
    public void A_body_whose_messages_do_not_fill_it_exactly_is_an_error(string hex, WireError expected)
    {
        var reader = new MessageReader(Convert.FromHexString(hex));
        while (reader.TryRead(out _))
        {
        }
        Assert.Equal(expected, reader.Error);
    }

    [Fact]
    public void Random_bytes_never_make_the_reader_throw_or_read_past_the_body()
    {
        var random = new Random(2015);
        var buffer = new byte[2048];
        for (var round = 0; round < 20_000; round++)
        {
            var length = random.Next(buffer.Length);
            random.NextBytes(buffer.AsSpan(0, length));
            if (round % 2 == 0 && length >= 12)
                new FrameHeader(FrameFlags.None, (ulong)round).Write(buffer);
            var frame = buffer.AsSpan(0, length);
            if (!FrameHeader.TryRead(frame, out _, out _))
                continue;
            var reader = new MessageReader(frame[MeshWire.FrameHeaderLength..]);
            var total = 0;
            while (reader.TryRead(out var m))
                total += MeshWire.MessageHeaderLength + m.Payload.Length;
            Assert.True(total <= length - MeshWire.FrameHeaderLength);
        }
    }

    [Fact]
    public void An_mtu_outside_the_allowed_range_is_refused_clearly()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new FrameBuilder(500));
        Assert.Contains("1232", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new FrameBuilder(70_000));
    }
}
