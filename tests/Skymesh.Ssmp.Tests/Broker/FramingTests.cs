using Skymesh.Ssmp.Broker;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>spec §2 framing and §9 invalid input, as the broker sees them on the wire.</summary>
public class FramingTests
{
    private static readonly string Id64 = new('i', 64);
    private static readonly string Id65 = new('i', 65);
    private static readonly string Text1024 = new('x', 1024);
    private static readonly string Text1025 = new('x', 1025);

    public static TheoryData<string, string> GrammarViolations => new()
    {
        { "SUBSCRIBE with a flag other than PRESENCE", "SUBSCRIBE t FOO\n" },
        { "SUBSCRIBE with a lower-case presence flag", "SUBSCRIBE t presence\n" },
        { "SUBSCRIBE PRESENCE with something after it", "SUBSCRIBE t PRESENCE x\n" },
        { "a trailing space after PING", "PING \n" },
        { "a trailing space after SUBSCRIBE's topic", "SUBSCRIBE t \n" },
        { "a trailing space after UNSUBSCRIBE's topic", "UNSUBSCRIBE t \n" },
        { "a trailing space after CLOSE", "CLOSE \n" },
        { "a trailing space after an unknown verb", "FOO \n" },
        { "a lower-case verb", "ping\n" },
        { "a mixed-case verb", "Ucast bob hi\n" },
        { "CR before LF", "PING\r\n" },
        { "CR inside a verb", "PI\rNG\n" },
        { "an empty line", "\n" },
        { "a verb of 17 letters", "ABCDEFGHIJKLMNOPQ\n" },
        { "a verb with a digit", "UCAST2 bob hi\n" },
        { "a leading space", " PING\n" },
        { "two spaces between fields", "UCAST  bob hi\n" },
        { "a missing UCAST payload", "UCAST bob\n" },
        { "an empty UCAST payload", "UCAST bob \n" },
        { "a missing MCAST payload", "MCAST t\n" },
        { "a missing BCAST payload", "BCAST\n" },
        { "a missing SUBSCRIBE topic", "SUBSCRIBE\n" },
        { "an extra UNSUBSCRIBE field", "UNSUBSCRIBE t x\n" },
        { "an extra PONG field", "PONG x\n" },
        { "a bad identifier character", "SUBSCRIBE t#1\n" },
        { "a non-ASCII identifier", "UCAST b\u00F6b hi\n" },
        { "an identifier of 65 characters", $"SUBSCRIBE {Id65}\n" },
        { "a UCAST target of 65 characters", $"UCAST {Id65} hi\n" },
        { "a text payload of 1025 bytes", $"UCAST bob {Text1025}\n" },
        { "a binary payload followed by a byte that is not LF", "UCAST bob \u0000\u0004HelloX\n" },
        { "a binary payload shorter than declared", "UCAST bob \u0000\u0006Hello\nXY\n" },
        { "a binary length prefix in a text field position", "SUBSCRIBE \u0000\u0001ab\n" },
    };

    [Theory]
    [MemberData(nameof(GrammarViolations))]
    public async Task A_grammar_violation_is_answered_400_then_closed(string what, string request)
    {
        Assert.NotNull(what);
        await using var broker = TestBroker.Start();
        await using var bob = await broker.LoginAsync("bob");
        await using var mallory = await broker.LoginAsync("mallory");
        await mallory.SendAsync(request);
        await mallory.ExpectLineAsync("400");
        await mallory.ExpectClosedAsync();
        // The broker counts the disconnect as it closes: the client may see the close a moment before the count.
        await broker.WaitUntilAsync(m => m.DisconnectsFor(DisconnectReason.BadRequest) == 1, "the bad request counted as the disconnect's reason");
        Assert.Equal(1, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.BadRequest));
        await bob.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task A_grammar_violation_after_valid_requests_in_the_same_write_gets_their_answers_first()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("SUBSCRIBE t\nUCAST nobody x\nping\nSUBSCRIBE u\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("404");
        await alice.ExpectLineAsync("400");
        await alice.ExpectClosedAsync();
    }

    [Fact]
    public async Task Identifiers_of_64_characters_and_every_allowed_character_are_accepted()
    {
        await using var broker = TestBroker.Start();
        const string odd = "Az09.:@/_-+=~";
        await using var a = await broker.LoginAsync(Id64);
        await using var b = await broker.LoginAsync(odd);
        await a.SendAsync($"SUBSCRIBE {Id64}\nUCAST {odd} hi\n");
        await a.ExpectLineAsync("200");
        await a.ExpectLineAsync("200");
        await b.ExpectLineAsync($"000 {Id64} UCAST {odd} hi");
    }

    [Fact]
    public async Task A_text_payload_of_exactly_1024_bytes_is_accepted()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await alice.SendAsync($"UCAST bob {Text1024}\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync($"000 alice UCAST bob {Text1024}");
    }

    [Fact]
    public async Task A_binary_payload_must_be_followed_by_lf_even_when_its_content_ends_in_lf()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        // Declared length 2: content "a\n", then the LF that ends the message.
        await alice.SendAsync("UCAST bob \u0000\u0001a\n\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice UCAST bob \u0000\u0001a\n");
        // Declared length 2 but the message ends after "a\n": the next byte decides, and it is not LF.
        await alice.SendAsync("UCAST bob \u0000\u0001a\nPING\n");
        await alice.ExpectLineAsync("400");
        await alice.ExpectClosedAsync();
    }
}
