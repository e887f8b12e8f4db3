using System.Buffers;
using System.Text;
using Skymesh.Ssmp.Codec;
using static Skymesh.Ssmp.Tests.Codec.CodecSamples;

namespace Skymesh.Ssmp.Tests.Codec;

public class WriterTests
{
    private static string Write(Action<IBufferWriter<byte>> write)
    {
        var w = new ArrayBufferWriter<byte>();
        write(w);
        return Encoding.Latin1.GetString(w.WrittenSpan);
    }

    [Fact]
    public void Requests_are_written_as_the_grammar_spells_them()
    {
        Assert.Equal("LOGIN alice open\n", Write(w => SsmpWriter.WriteLogin(w, "alice", "open", default)));
        Assert.Equal("LOGIN alice secret s3cret\n", Write(w => SsmpWriter.WriteLogin(w, "alice", "secret", "s3cret"u8)));
        Assert.Equal("SUBSCRIBE chat\n", Write(w => SsmpWriter.WriteSubscribe(w, "chat", false)));
        Assert.Equal("SUBSCRIBE chat PRESENCE\n", Write(w => SsmpWriter.WriteSubscribe(w, "chat", true)));
        Assert.Equal("UNSUBSCRIBE chat\n", Write(w => SsmpWriter.WriteUnsubscribe(w, "chat")));
        Assert.Equal("UCAST bob hello\n", Write(w => SsmpWriter.WriteUcast(w, "bob", "hello"u8)));
        Assert.Equal("MCAST chat hi all\n", Write(w => SsmpWriter.WriteMcast(w, "chat", "hi all"u8)));
        Assert.Equal("BCAST x\n", Write(w => SsmpWriter.WriteBcast(w, "x"u8)));
        Assert.Equal("PING\n", Write(SsmpWriter.WritePing));
        Assert.Equal("PONG\n", Write(SsmpWriter.WritePong));
        Assert.Equal("CLOSE\n", Write(SsmpWriter.WriteClose));
        Assert.Equal("FOO bar baz\n", Write(w => SsmpWriter.WriteExtension(w, "FOO", "bar", "baz"u8)));
        Assert.Equal("FOO\n", Write(w => SsmpWriter.WriteExtension(w, "FOO", null, default)));
        Assert.Equal("200\n", Write(w => SsmpWriter.WriteResponse(w, 200)));
        Assert.Equal("401 open secret\n", Write(w => SsmpWriter.WriteResponse(w, 401, "open secret"u8)));
    }

    [Theory]
    [InlineData("a\nb", "\u0000\u0002a\nb")]
    [InlineData("\u0001x", "\u0000\u0001\u0001x")]
    [InlineData("\u0003", "\u0000\u0000\u0003")]
    [InlineData("Hello", "Hello")]
    [InlineData(" x", " x")]
    [InlineData("x\u0000y", "x\u0000y")]
    public void Content_that_text_cannot_carry_goes_binary(string content, string wirePayload)
    {
        Assert.Equal($"UCAST bob {wirePayload}\n", Write(w => SsmpWriter.WriteUcast(w, "bob", B(content))));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(1023)]
    [InlineData(1024)]
    public void Any_content_of_1_to_1024_bytes_round_trips(int length)
    {
        var random = new Random(length);
        var content = new byte[length];
        random.NextBytes(content);
        var w = new ArrayBufferWriter<byte>();
        SsmpWriter.WriteUcast(w, "bob", content);
        Assert.Equal(SsmpParseStatus.Complete, SsmpParser.TryParseRequest(w.WrittenSpan, out var request, out var consumed, out _));
        Assert.Equal(w.WrittenCount, consumed);
        Assert.Equal(content, request.PayloadContent.ToArray());
    }

    [Fact]
    public void Impossible_requests_are_refused_before_anything_is_written()
    {
        var w = new ArrayBufferWriter<byte>();
        Assert.Throws<ArgumentException>(() => SsmpWriter.WriteUcast(w, "bad id", "x"u8));
        Assert.Throws<ArgumentException>(() => SsmpWriter.WriteUcast(w, Repeat('a', 65), "x"u8));
        Assert.Throws<ArgumentException>(() => SsmpWriter.WriteUcast(w, "", "x"u8));
        Assert.Throws<ArgumentException>(() => SsmpWriter.WriteUcast(w, "bob", ReadOnlySpan<byte>.Empty));
        Assert.Throws<ArgumentException>(() => SsmpWriter.WriteUcast(w, "bob", new byte[1025]));
        Assert.Throws<ArgumentException>(() => SsmpWriter.WriteSubscribe(w, "t\n", false));
        Assert.Throws<ArgumentException>(() => SsmpWriter.WriteExtension(w, "lower", null, default));
        Assert.Throws<ArgumentException>(() => SsmpWriter.WriteExtension(w, Repeat('A', 17), null, default));
        Assert.Throws<ArgumentOutOfRangeException>(() => SsmpWriter.WriteResponse(w, 0));
        Assert.Equal(0, w.WrittenCount);
    }
}
