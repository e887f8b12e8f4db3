using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Tests.Codec;

/// <summary>
/// Feeds chunks to the parser the way a connection's read loop does: append, parse every whole message,
/// keep the rest. Used to check that where a stream is cut never changes what is parsed.
/// </summary>
internal static class StreamReassembler
{
    private delegate SsmpParseStatus ParseOne<T>(ReadOnlySpan<byte> buffer, out T value, out int used, out SsmpError error);

    public static List<RequestParserTests.Parsed> Requests(byte[][] chunks) =>
        Collect(chunks, static (ReadOnlySpan<byte> b, out RequestParserTests.Parsed v, out int used, out SsmpError e) =>
        {
            var s = SsmpParser.TryParseRequest(b, out var r, out used, out e);
            v = s == SsmpParseStatus.Complete ? RequestParserTests.Parsed.From(r) : null!;
            return s;
        });

    public static List<ServerMessageParserTests.Parsed> ServerMessages(byte[][] chunks) =>
        Collect(chunks, static (ReadOnlySpan<byte> b, out ServerMessageParserTests.Parsed v, out int used, out SsmpError e) =>
        {
            var s = SsmpParser.TryParseServerMessage(b, out var m, out used, out e);
            v = s == SsmpParseStatus.Complete ? ServerMessageParserTests.Parsed.Of(m) : null!;
            return s;
        });

    private static List<T> Collect<T>(byte[][] chunks, ParseOne<T> parse)
    {
        var results = new List<T>();
        var buffer = new List<byte>();
        foreach (var chunk in chunks)
        {
            buffer.AddRange(chunk);
            var bytes = buffer.ToArray();
            var offset = 0;
            while (true)
            {
                var status = parse(bytes.AsSpan(offset), out var value, out var used, out var error);
                if (status == SsmpParseStatus.NeedMoreData)
                    break;
                Assert.True(status == SsmpParseStatus.Complete, $"parse failed with {error} at offset {offset}");
                results.Add(value);
                offset += used;
            }
            buffer.RemoveRange(0, offset);
        }
        Assert.Empty(buffer);
        return results;
    }
}
