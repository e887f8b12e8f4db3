using System.Text;
using Skymesh.Ssmp.Codec;
using static Skymesh.Ssmp.Tests.Codec.CodecSamples;

namespace Skymesh.Ssmp.Tests.Codec;

public class ServerMessageParserTests
{
    public sealed record Parsed(int Code, string Payload, string From, SsmpVerb Verb, string Target, string EventPayload, bool Presence, int Length)
    {
        public static Parsed Of(in SsmpServerMessage m) => new(
            m.Code, Encoding.Latin1.GetString(m.Payload), Encoding.Latin1.GetString(m.From), m.IsEvent ? m.Event.Verb : default,
            Encoding.Latin1.GetString(m.Event.Id), Encoding.Latin1.GetString(m.Event.Payload), m.Event.Presence, m.Message.Length);
    }

    private static Parsed Response(int code, string wire, string payload = "") =>
        new(code, payload, "", default, "", "", false, Encoding.Latin1.GetByteCount(wire));

    private static Parsed Event(string wire, string from, SsmpVerb verb, string target = "", string payload = "", bool presence = false) =>
        new(0, "", from, verb, target, payload, presence, Encoding.Latin1.GetByteCount(wire));

    public static TheoryData<string, Parsed> ValidMessages()
    {
        var binary = Encoding.Latin1.GetString(Binary(B("a\nb")));
        var id64 = Repeat('z', 64);
        var full = Encoding.Latin1.GetString(Binary(Enumerable.Repeat((byte)0, 1024).ToArray()));
        return new TheoryData<string, Parsed>
        {
            { "200\n", Response(200, "200\n") },
            { "404\n", Response(404, "404\n") },
            { "401 open secret cert\n", Response(401, "401 open secret cert\n", "open secret cert") },
            { $"200 {binary}\n", Response(200, $"200 {binary}\n", binary) },
            { "000 . PING\n", Event("000 . PING\n", ".", SsmpVerb.Ping) },
            { "000 . PONG\n", Event("000 . PONG\n", ".", SsmpVerb.Pong) },
            { "000 alice UCAST bob hi there\n", Event("000 alice UCAST bob hi there\n", "alice", SsmpVerb.Ucast, "bob", "hi there") },
            { $"000 alice UCAST bob {binary}\n", Event($"000 alice UCAST bob {binary}\n", "alice", SsmpVerb.Ucast, "bob", binary) },
            { "000 . MCAST chat anon\n", Event("000 . MCAST chat anon\n", ".", SsmpVerb.Mcast, "chat", "anon") },
            { "000 carol BCAST all\n", Event("000 carol BCAST all\n", "carol", SsmpVerb.Bcast, payload: "all") },
            { "000 dave SUBSCRIBE chat PRESENCE\n", Event("000 dave SUBSCRIBE chat PRESENCE\n", "dave", SsmpVerb.Subscribe, "chat", presence: true) },
            { "000 dave SUBSCRIBE chat\n", Event("000 dave SUBSCRIBE chat\n", "dave", SsmpVerb.Subscribe, "chat") },
            { "000 dave UNSUBSCRIBE chat\n", Event("000 dave UNSUBSCRIBE chat\n", "dave", SsmpVerb.Unsubscribe, "chat") },
            { "000 eve FOO bar baz\n", Event("000 eve FOO bar baz\n", "eve", SsmpVerb.Extension, "bar", "baz") },
            { $"000 {id64} FOOBARBAZQUUXQUU {id64} {full}\n", Event($"000 {id64} FOOBARBAZQUUXQUU {id64} {full}\n", id64, SsmpVerb.Extension, id64, full) },
        };
    }

    public static TheoryData<string> InvalidMessages() =>
    [
        "\n",
        "20\n",
        "2000\n",
        "abc\n",
        "200 \n",
        "200\r\n",
        "000\n",
        "000 \n",
        "000 alice\n",
        "000 alice \n",
        "000 alice ucast bob x\n",
        "000 alice LOGIN bob open\n",
        "000 alice CLOSE\n",
        "000 alice UCAST bob\n",
        "000 al!ce UCAST bob x\n",
        "000 alice UCAST bob \u0000\u0001abc\n",
        $"200 {Repeat('x', 1025)}\n",
    ];

    [Theory]
    [MemberData(nameof(ValidMessages))]
    public void A_valid_server_message_parses_whole_and_split_anywhere(string wire, Parsed expected)
    {
        var one = B(wire);
        Assert.Equal(SsmpParseStatus.Complete, SsmpParser.TryParseServerMessage(one, out var message, out var consumed, out _));
        Assert.Equal(one.Length, consumed);
        Assert.Equal(expected, Parsed.Of(message));
        for (var n = 0; n < one.Length; n++)
            Assert.Equal(SsmpParseStatus.NeedMoreData, SsmpParser.TryParseServerMessage(one.AsSpan(0, n), out _, out _, out _));

        var stream = Concat(one, B("200\n"), one);
        var ok = Response(200, "200\n");
        for (var split = 0; split <= stream.Length; split++)
            Assert.Equal([expected, ok, expected], StreamReassembler.ServerMessages([stream[..split], stream[split..]]));
        Assert.Equal([expected, ok, expected], StreamReassembler.ServerMessages(stream.Select(b => new[] { b }).ToArray()));
    }

    [Theory]
    [MemberData(nameof(InvalidMessages))]
    public void A_malformed_server_message_is_refused_and_no_prefix_is_complete(string wire)
    {
        var bytes = B(wire);
        Assert.Equal(SsmpParseStatus.Invalid, SsmpParser.TryParseServerMessage(bytes, out _, out _, out var error));
        Assert.NotEqual(SsmpError.None, error);
        for (var n = 0; n < bytes.Length; n++)
            Assert.NotEqual(SsmpParseStatus.Complete, SsmpParser.TryParseServerMessage(bytes.AsSpan(0, n), out _, out _, out _));
    }
}
