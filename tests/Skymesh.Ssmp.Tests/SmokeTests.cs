using System.Buffers;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Tests;

public class SmokeTests
{
    [Fact]
    public void A_ucast_written_by_the_writer_parses_back()
    {
        var w = new ArrayBufferWriter<byte>();
        SsmpWriter.WriteUcast(w, "bob", "hi"u8);
        Assert.Equal(SsmpParseStatus.Complete, SsmpParser.TryParseRequest(w.WrittenSpan, out var r, out var n, out _));
        Assert.Equal(SsmpVerb.Ucast, r.Verb);
        Assert.Equal(w.WrittenCount, n);
    }
}
