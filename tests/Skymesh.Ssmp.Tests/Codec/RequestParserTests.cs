using System.Text;
using Skymesh.Ssmp.Codec;
using static Skymesh.Ssmp.Tests.Codec.CodecSamples;

namespace Skymesh.Ssmp.Tests.Codec;

public class RequestParserTests
{
    /// <summary>A parsed request copied out of the buffer so it can be compared.</summary>
    public sealed record Parsed(SsmpVerb Verb, string VerbToken, string Id, string Scheme, string Payload, bool Presence, int Length)
    {
        public static Parsed From(in SsmpRequest r) => new(
            r.Verb, Encoding.Latin1.GetString(r.VerbToken), Encoding.Latin1.GetString(r.Id), Encoding.Latin1.GetString(r.Scheme),
            Encoding.Latin1.GetString(r.Payload), r.Presence, r.Message.Length);
    }

    private static Parsed P(SsmpVerb verb, string wire, string id = "", string scheme = "", string payload = "", bool presence = false, string? verbToken = null) =>
        new(verb, verbToken ?? wire.Split(' ', '\n')[0], id, scheme, payload, presence, Encoding.Latin1.GetByteCount(wire));

    public static TheoryData<string, Parsed> ValidRequests()
    {
        var id64 = Repeat('a', 64);
        var text1024 = Repeat('x', 1024);
        var binary1024 = Encoding.Latin1.GetString(Binary(Enumerable.Repeat((byte)'\n', 1024).ToArray()));
        return new TheoryData<string, Parsed>
        {
            { "LOGIN alice open\n", P(SsmpVerb.Login, "LOGIN alice open\n", "alice", "open") },
            { "LOGIN bob secret hunter2\n", P(SsmpVerb.Login, "LOGIN bob secret hunter2\n", "bob", "secret", "hunter2") },
            { "LOGIN . open\n", P(SsmpVerb.Login, "LOGIN . open\n", ".", "open") },
            { $"LOGIN {id64} {id64} \u0000\u0000k\n", P(SsmpVerb.Login, $"LOGIN {id64} {id64} \u0000\u0000k\n", id64, id64, "\u0000\u0000k") },
            { "CLOSE\n", P(SsmpVerb.Close, "CLOSE\n") },
            { "PING\n", P(SsmpVerb.Ping, "PING\n") },
            { "PONG\n", P(SsmpVerb.Pong, "PONG\n") },
            { "SUBSCRIBE chat\n", P(SsmpVerb.Subscribe, "SUBSCRIBE chat\n", "chat") },
            { "SUBSCRIBE chat PRESENCE\n", P(SsmpVerb.Subscribe, "SUBSCRIBE chat PRESENCE\n", "chat", presence: true) },
            { "UNSUBSCRIBE chat\n", P(SsmpVerb.Unsubscribe, "UNSUBSCRIBE chat\n", "chat") },
            { "UCAST bob hello world\n", P(SsmpVerb.Ucast, "UCAST bob hello world\n", "bob", payload: "hello world") },
            { "UCAST bob  x\n", P(SsmpVerb.Ucast, "UCAST bob  x\n", "bob", payload: " x") },
            { "UCAST alice \u0000\u0004Hello\n", P(SsmpVerb.Ucast, "UCAST alice \u0000\u0004Hello\n", "alice", payload: "\u0000\u0004Hello") },
            { "UCAST alice \u0000\u0002a\nb\n", P(SsmpVerb.Ucast, "UCAST alice \u0000\u0002a\nb\n", "alice", payload: "\u0000\u0002a\nb") },
            { "UCAST a x\u0000\u0001\u0002\u0003y\n", P(SsmpVerb.Ucast, "UCAST a x\u0000\u0001\u0002\u0003y\n", "a", payload: "x\u0000\u0001\u0002\u0003y") },
            { $"UCAST {id64} {text1024}\n", P(SsmpVerb.Ucast, $"UCAST {id64} {text1024}\n", id64, payload: text1024) },
            { $"UCAST b {binary1024}\n", P(SsmpVerb.Ucast, $"UCAST b {binary1024}\n", "b", payload: binary1024) },
            { "MCAST chat hi all\n", P(SsmpVerb.Mcast, "MCAST chat hi all\n", "chat", payload: "hi all") },
            { "BCAST everyone\n", P(SsmpVerb.Bcast, "BCAST everyone\n", payload: "everyone") },
            { "BCAST \u0000\u0000\n\n", P(SsmpVerb.Bcast, "BCAST \u0000\u0000\n\n", payload: "\u0000\u0000\n") },
            { "MCAST a.b:c@d/e_f-g+h=i~j x\n", P(SsmpVerb.Mcast, "MCAST a.b:c@d/e_f-g+h=i~j x\n", "a.b:c@d/e_f-g+h=i~j", payload: "x") },
            { "FOO\n", P(SsmpVerb.Extension, "FOO\n") },
            { "FOO bar\n", P(SsmpVerb.Extension, "FOO bar\n", "bar") },
            { "FOO bar baz qux\n", P(SsmpVerb.Extension, "FOO bar baz qux\n", "bar", payload: "baz qux") },
            { "FOO !bang\n", P(SsmpVerb.Extension, "FOO !bang\n", payload: "!bang") },
            { "FOO \u0000\u0000\n\n", P(SsmpVerb.Extension, "FOO \u0000\u0000\n\n", payload: "\u0000\u0000\n") },
            { "ABCDEFGHIJKLMNOP\n", P(SsmpVerb.Extension, "ABCDEFGHIJKLMNOP\n") },
            { "UCASTX a b\n", P(SsmpVerb.Extension, "UCASTX a b\n", "a", payload: "b") },
        };
    }

    public static TheoryData<string, SsmpError> InvalidRequests()
    {
        var id65 = Repeat('a', 65);
        return new TheoryData<string, SsmpError>
        {
            { "\n", SsmpError.EmptyLine },
            { "PING\r\n", SsmpError.BadVerb },
            { "ping\n", SsmpError.BadVerb },
            { "Ping\n", SsmpError.BadVerb },
            { " PING\n", SsmpError.BadVerb },
            { "PING \n", SsmpError.ExtraField },
            { "PING x\n", SsmpError.ExtraField },
            { "CLOSE now\n", SsmpError.ExtraField },
            { "ABCDEFGHIJKLMNOPQ\n", SsmpError.VerbTooLong },
            { "LOGIN alice\n", SsmpError.MissingField },
            { "LOGIN\n", SsmpError.MissingField },
            { "LOGIN alice open \n", SsmpError.EmptyPayload },
            { "LOGIN al!ce open\n", SsmpError.BadId },
            { $"LOGIN {id65} open\n", SsmpError.IdTooLong },
            { "SUBSCRIBE\n", SsmpError.MissingField },
            { "SUBSCRIBE \n", SsmpError.MissingField },
            { "SUBSCRIBE t \n", SsmpError.BadFlag },
            { "SUBSCRIBE t FOO\n", SsmpError.BadFlag },
            { "SUBSCRIBE t presence\n", SsmpError.BadFlag },
            { "SUBSCRIBE t PRESENCE \n", SsmpError.BadFlag },
            { "UNSUBSCRIBE t x\n", SsmpError.ExtraField },
            { "UCAST bob\n", SsmpError.MissingField },
            { "UCAST bob \n", SsmpError.EmptyPayload },
            { "UCAST  bob x\n", SsmpError.MissingField },
            { $"UCAST bob {Repeat('x', 1025)}\n", SsmpError.PayloadTooLong },
            { "UCAST bob \u0000\u0002Hello\n", SsmpError.BinaryLengthMismatch },
            { "UCAST bob \u0000\u0000ab\n", SsmpError.BinaryLengthMismatch },
            { "UCAST b\u00e9b x\n", SsmpError.BadId },
            { "MCAST\n", SsmpError.MissingField },
            { "BCAST\n", SsmpError.MissingField },
            { "BCAST \n", SsmpError.EmptyPayload },
            { "FOO \n", SsmpError.EmptyPayload },
            { "FOO bar \n", SsmpError.EmptyPayload },
            { "\u0016\u0003\u0001\u0002\u0000", SsmpError.BadVerb },
        };
    }

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void A_valid_request_parses_whole(string wire, Parsed expected)
    {
        var bytes = B(wire);
        var status = SsmpParser.TryParseRequest(bytes, out var request, out var consumed, out var error);
        Assert.Equal(SsmpParseStatus.Complete, status);
        Assert.Equal(SsmpError.None, error);
        Assert.Equal(bytes.Length, consumed);
        Assert.Equal(expected, Parsed.From(request));
    }

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void Every_strict_prefix_of_a_valid_request_needs_more_data(string wire, Parsed expected)
    {
        var bytes = B(wire);
        for (var n = 0; n < bytes.Length; n++)
        {
            var status = SsmpParser.TryParseRequest(bytes.AsSpan(0, n), out _, out _, out var error);
            Assert.True(status == SsmpParseStatus.NeedMoreData, $"prefix of {n} bytes gave {status} ({error}); expected {expected.Verb} after {bytes.Length}");
        }
    }

    [Theory]
    [MemberData(nameof(ValidRequests))]
    public void A_valid_request_split_at_every_offset_and_byte_by_byte_parses_the_same(string wire, Parsed expected)
    {
        var bytes = Concat(B(wire), B("PING\n"), B(wire));
        for (var split = 0; split <= bytes.Length; split++)
        {
            var got = StreamReassembler.Requests([bytes[..split], bytes[split..]]);
            Assert.Equal([expected, PingParsed, expected], got);
        }
        var oneByOne = StreamReassembler.Requests(bytes.Select(b => new[] { b }).ToArray());
        Assert.Equal([expected, PingParsed, expected], oneByOne);
    }

    private static readonly Parsed PingParsed = new(SsmpVerb.Ping, "PING", "", "", "", false, 5);

    [Theory]
    [MemberData(nameof(InvalidRequests))]
    public void An_invalid_request_is_refused_with_its_reason(string wire, SsmpError expected)
    {
        var status = SsmpParser.TryParseRequest(B(wire), out _, out _, out var error);
        Assert.Equal(SsmpParseStatus.Invalid, status);
        Assert.Equal(expected, error);
    }

    [Theory]
    [MemberData(nameof(InvalidRequests))]
    public void No_prefix_of_an_invalid_request_is_ever_complete(string wire, SsmpError expected)
    {
        var bytes = B(wire);
        for (var n = 0; n <= bytes.Length; n++)
        {
            var status = SsmpParser.TryParseRequest(bytes.AsSpan(0, n), out _, out _, out var error);
            Assert.NotEqual(SsmpParseStatus.Complete, status);
            if (status == SsmpParseStatus.Invalid)
                Assert.Equal(expected, error);
        }
    }

    [Fact]
    public void An_endless_line_is_refused_once_no_legal_message_could_be_that_long()
    {
        // UCAST with a text payload that never ends: refused as soon as the payload passes 1024 bytes.
        var bytes = B("UCAST bob " + Repeat('x', 4000));
        var status = SsmpParser.TryParseRequest(bytes, out _, out _, out var error);
        Assert.Equal(SsmpParseStatus.Invalid, status);
        Assert.Equal(SsmpError.PayloadTooLong, error);
        Assert.Equal(SsmpParseStatus.Invalid, SsmpParser.TryParseRequest(B("UCAST bob " + Repeat('x', 1025)), out _, out _, out _));
        Assert.Equal(SsmpParseStatus.NeedMoreData, SsmpParser.TryParseRequest(B("UCAST bob " + Repeat('x', 1024)), out _, out _, out _));
    }

    [Fact]
    public void Any_buffer_of_the_longest_message_length_is_decided()
    {
        // Whatever the bytes, a reader holding MaxMessageLength of them never has to wait for more.
        var random = new Random(84);
        var buffer = new byte[SsmpGrammar.MaxMessageLength];
        for (var round = 0; round < 2000; round++)
        {
            random.NextBytes(buffer);
            // Bias towards plausible starts so that deep paths are reached too.
            var start = (round % 4) switch { 0 => "UCAST a ", 1 => "FOO ", 2 => "LOGIN a b ", _ => "" };
            B(start).CopyTo(buffer, 0);
            var status = SsmpParser.TryParseRequest(buffer, out _, out _, out _);
            Assert.NotEqual(SsmpParseStatus.NeedMoreData, status);
        }
    }

    [Theory]
    [InlineData(64, true)]
    [InlineData(65, false)]
    public void Identifiers_are_limited_to_64_characters(int length, bool valid)
    {
        var id = Repeat('i', length);
        foreach (var wire in new[] { $"UCAST {id} x\n", $"MCAST {id} x\n", $"SUBSCRIBE {id}\n", $"UNSUBSCRIBE {id}\n", $"LOGIN {id} open\n", $"LOGIN a {id}\n" })
        {
            var status = SsmpParser.TryParseRequest(B(wire), out _, out _, out _);
            Assert.Equal(valid ? SsmpParseStatus.Complete : SsmpParseStatus.Invalid, status);
        }
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(1024, true)]
    [InlineData(1025, false)]
    public void Text_payloads_are_limited_to_1024_bytes(int length, bool valid)
    {
        var status = SsmpParser.TryParseRequest(B($"MCAST t {Repeat('p', length)}\n"), out _, out _, out _);
        Assert.Equal(valid ? SsmpParseStatus.Complete : SsmpParseStatus.Invalid, status);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(255)]
    [InlineData(256)]
    [InlineData(1024)]
    public void Binary_payloads_carry_one_to_1024_bytes_of_anything(int length)
    {
        var content = Enumerable.Range(0, length).Select(i => (byte)(i * 7)).ToArray();
        var wire = Concat(B("UCAST bob "), Binary(content), B("\n"));
        var status = SsmpParser.TryParseRequest(wire, out var request, out var consumed, out _);
        Assert.Equal(SsmpParseStatus.Complete, status);
        Assert.Equal(wire.Length, consumed);
        Assert.Equal(content, request.PayloadContent.ToArray());
    }

    [Fact]
    public void A_binary_length_prefix_above_1024_cannot_be_expressed()
    {
        // LENHI is at most 0x03: 0x04 as first payload byte starts a text payload instead.
        var wire = Concat(B("UCAST bob "), [0x04, 0x00], B("x\n"));
        Assert.Equal(SsmpParseStatus.Complete, SsmpParser.TryParseRequest(wire, out var request, out _, out _));
        Assert.Equal(wire.Length - 11, request.Payload.Length);
        Assert.Equal(0x04, request.PayloadContent[0]);
    }

    [Theory]
    [InlineData(16, true)]
    [InlineData(17, false)]
    public void Verbs_are_limited_to_16_letters(int length, bool valid)
    {
        var status = SsmpParser.TryParseRequest(B(Repeat('V', length) + "\n"), out var request, out _, out _);
        Assert.Equal(valid ? SsmpParseStatus.Complete : SsmpParseStatus.Invalid, status);
        if (valid)
            Assert.Equal(SsmpVerb.Extension, request.Verb);
    }

    [Fact]
    public void Every_identifier_character_of_the_grammar_is_accepted_and_no_other()
    {
        const string allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:@/_-+=~";
        for (var c = 0; c < 256; c++)
        {
            if (c is ' ' or '\n')
                continue;
            var wire = Concat(B("SUBSCRIBE a"), [(byte)c], B("\n"));
            var status = SsmpParser.TryParseRequest(wire, out _, out _, out _);
            var expected = allowed.Contains((char)c) ? SsmpParseStatus.Complete : SsmpParseStatus.Invalid;
            Assert.True(expected == status, $"byte 0x{c:X2}: expected {expected}, got {status}");
        }
    }
}
