using System.Text;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>spec §5: every request row, its success and error codes, and the events it causes, on the wire.</summary>
public class RequestTests
{
    [Fact]
    public async Task Subscribe_is_answered_200_and_subscribing_again_409_with_the_connection_kept()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("SUBSCRIBE news\n");
        await alice.ExpectLineAsync("200");
        await alice.SendAsync("SUBSCRIBE news\n");
        await alice.ExpectLineAsync("409");
        await alice.SendAsync("SUBSCRIBE news PRESENCE\n");
        await alice.ExpectLineAsync("409");
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Unsubscribe_from_a_topic_not_subscribed_is_answered_404()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("UNSUBSCRIBE news\n");
        await alice.ExpectLineAsync("404");
        await alice.SendAsync("SUBSCRIBE news\nUNSUBSCRIBE news\nUNSUBSCRIBE news\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("404");
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task After_unsubscribe_mcast_to_the_topic_no_longer_arrives()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync("SUBSCRIBE news\n");
        await bob.ExpectLineAsync("200");
        await alice.SendAsync("MCAST news one\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice MCAST news one");
        await bob.SendAsync("UNSUBSCRIBE news\n");
        await bob.ExpectLineAsync("200");
        await alice.SendAsync("MCAST news two\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Ucast_to_a_connected_identifier_is_answered_200_and_forwarded_byte_for_byte()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await alice.SendAsync("UCAST bob hello, bob: how are you?\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice UCAST bob hello, bob: how are you?");
        await bob.ExpectNothingMoreAsync();
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Ucast_to_an_identifier_nobody_holds_is_answered_404()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("UCAST nobody hi\n");
        await alice.ExpectLineAsync("404");
        await alice.ExpectNothingMoreAsync();
        Assert.Equal(1, broker.Broker.Snapshot().UcastNotFound);
    }

    [Fact]
    public async Task Ucast_to_dot_is_answered_404()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("UCAST . hi\n");
        await alice.ExpectLineAsync("404");
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Ucast_to_oneself_works()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("UCAST alice note to self\n");
        await alice.ExpectLinesInAnyOrderAsync("200", "000 alice UCAST alice note to self");
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Ucast_to_an_identifier_that_has_left_is_answered_404()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        var bob = await broker.LoginAsync("bob");
        await bob.SendAsync("CLOSE\n");
        await bob.ExpectLineAsync("200");
        await bob.ExpectClosedAsync();
        await bob.DisposeAsync();
        await alice.SendAsync("UCAST bob hi\n");
        await alice.ExpectLineAsync("404");
    }

    public static TheoryData<string, byte[]> Payloads => new()
    {
        { "a text payload beginning with a space", Encoding.Latin1.GetBytes(" x") },
        { "a text payload with bytes 00-03 after its first byte", [(byte)'a', 0x00, 0x01, 0x02, 0x03, (byte)'z'] },
        { "a text payload of high bytes and a trailing space", [0xFF, 0x80, 0x7F, (byte)' '] },
        { "a text payload of 1024 bytes", Enumerable.Repeat((byte)'x', 1024).ToArray() },
        { "a binary payload holding LF", [0x00, 0x02, (byte)'a', (byte)'\n', (byte)'b'] },
        { "a binary payload of one LF", [0x00, 0x00, (byte)'\n'] },
        { "a binary payload of LFs and NULs", [0x00, 0x05, (byte)'\n', (byte)'\n', 0x00, (byte)'\n', 0x00, (byte)'\n'] },
        { "a binary payload of 1024 bytes", [0x03, 0xFF, .. Enumerable.Range(0, 1024).Select(i => (byte)(i % 7 == 0 ? '\n' : i))] },
        { "a binary payload that would fit as text", [0x00, 0x04, (byte)'H', (byte)'e', (byte)'l', (byte)'l', (byte)'o'] },
    };

    [Theory]
    [MemberData(nameof(Payloads))]
    public async Task Ucast_events_carry_the_payload_exactly_as_sent(string what, byte[] payload)
    {
        Assert.NotNull(what);
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await alice.SendAsync([.. "UCAST bob "u8, .. payload, (byte)'\n']);
        await alice.ExpectLineAsync("200");
        await bob.ExpectBytesAsync([.. "000 alice UCAST bob "u8, .. payload, (byte)'\n']);
        await bob.ExpectNothingMoreAsync();
    }

    [Theory]
    [MemberData(nameof(Payloads))]
    public async Task Mcast_events_carry_the_payload_exactly_as_sent(string what, byte[] payload)
    {
        Assert.NotNull(what);
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync("SUBSCRIBE t\n");
        await bob.ExpectLineAsync("200");
        await alice.SendAsync([.. "MCAST t "u8, .. payload, (byte)'\n']);
        await alice.ExpectLineAsync("200");
        await bob.ExpectBytesAsync([.. "000 alice MCAST t "u8, .. payload, (byte)'\n']);
        await bob.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Ucasts_from_one_sender_arrive_in_the_order_sent()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        var requests = new StringBuilder();
        for (var i = 0; i < 500; i++)
            requests.Append($"UCAST bob message {i}\n");
        await alice.SendAsync(requests.ToString());
        for (var i = 0; i < 500; i++)
            await alice.ExpectLineAsync("200");
        for (var i = 0; i < 500; i++)
            await bob.ExpectLineAsync($"000 alice UCAST bob message {i}");
        await bob.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Mcast_reaches_every_subscriber_except_the_sender()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await using var carol = await broker.LoginAsync("carol");
        await using var dave = await broker.LoginAsync("dave");
        foreach (var p in new[] { alice, bob, carol })
        {
            await p.SendAsync("SUBSCRIBE room\n");
            await p.ExpectLineAsync("200");
        }
        await alice.SendAsync("MCAST room hello all\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice MCAST room hello all");
        await carol.ExpectLineAsync("000 alice MCAST room hello all");
        await alice.ExpectNothingMoreAsync();
        await bob.ExpectNothingMoreAsync();
        await carol.ExpectNothingMoreAsync();
        await dave.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Mcast_without_subscription_and_to_a_topic_nobody_listens_to_is_answered_200()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await alice.SendAsync("MCAST empty hello\n");
        await alice.ExpectLineAsync("200");
        await bob.SendAsync("SUBSCRIBE room\n");
        await bob.ExpectLineAsync("200");
        await alice.SendAsync("MCAST room from outside\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice MCAST room from outside");
    }

    [Fact]
    public async Task Mcast_to_a_topic_whose_only_subscriber_is_the_sender_is_answered_200_and_goes_nowhere()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("SUBSCRIBE solo\nMCAST solo hello\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("200");
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Bcast_reaches_each_peer_sharing_a_topic_once_however_many_topics_are_shared()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await using var carol = await broker.LoginAsync("carol");
        await using var dave = await broker.LoginAsync("dave");
        await alice.SendAsync("SUBSCRIBE t1\nSUBSCRIBE t2\nSUBSCRIBE t3\n");
        await bob.SendAsync("SUBSCRIBE t1\nSUBSCRIBE t2\nSUBSCRIBE t3\n");
        await dave.SendAsync("SUBSCRIBE other\n");
        foreach (var (peer, n) in new[] { (alice, 3), (bob, 3), (dave, 1) })
        {
            for (var i = 0; i < n; i++)
                await peer.ExpectLineAsync("200");
        }
        await carol.SendAsync("SUBSCRIBE t3 PRESENCE\n");
        // carol asked for presence: her 200 first (spec §5), then a snapshot naming alice and bob, in either order.
        await carol.ExpectLineAsync("200");
        await carol.ExpectLinesInAnyOrderAsync("000 alice SUBSCRIBE t3", "000 bob SUBSCRIBE t3");

        await alice.SendAsync("BCAST hello everyone\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice BCAST hello everyone");
        await carol.ExpectLineAsync("000 alice BCAST hello everyone");
        await alice.ExpectNothingMoreAsync();
        await bob.ExpectNothingMoreAsync();
        await carol.ExpectNothingMoreAsync();
        await dave.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Bcast_with_no_topics_is_answered_200_and_goes_nowhere()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync("SUBSCRIBE t\n");
        await bob.ExpectLineAsync("200");
        await alice.SendAsync("BCAST anyone?\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Bcast_carries_a_binary_payload_unchanged()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await alice.SendAsync("SUBSCRIBE t\n");
        await alice.ExpectLineAsync("200");
        await bob.SendAsync("SUBSCRIBE t\n");
        await bob.ExpectLineAsync("200");
        await alice.SendAsync("BCAST \u0000\u0002a\nb\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice BCAST \u0000\u0002a\nb");
    }

    [Fact]
    public async Task Ping_is_answered_by_a_pong_event_from_dot_and_no_response()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("PING\nUCAST nobody x\n");
        await alice.ExpectLineAsync("000 . PONG");
        await alice.ExpectLineAsync("404");
    }

    [Fact]
    public async Task Pong_gets_no_answer()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("PONG\nPONG\nUCAST nobody x\n");
        await alice.ExpectLineAsync("404");
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Close_is_answered_200_and_then_the_broker_closes()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("CLOSE\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectClosedAsync();
        Assert.Equal(1, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.CloseRequested));
    }

    [Fact]
    public async Task Close_answers_every_request_before_it_and_none_after_it()
    {
        await using var broker = TestBroker.Start();
        await using var bob = await broker.LoginAsync("bob");
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("UCAST bob one\nUCAST nobody two\nCLOSE\nUCAST bob three\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("404");
        await alice.ExpectLineAsync("200");
        await alice.ExpectClosedAsync();
        await bob.ExpectLineAsync("000 alice UCAST bob one");
        await bob.ExpectNothingMoreAsync();
    }

    [Theory]
    [InlineData("FOO")]
    [InlineData("FOO bar")]
    [InlineData("FOO bar some text payload")]
    [InlineData("FOO \u0000\u0001a\n")]
    [InlineData("ABCDEFGHIJKLMNOP")]
    [InlineData("SUBSCRIBEX t")]
    public async Task A_well_formed_unknown_verb_is_answered_501_and_the_connection_stays_open(string request)
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync("SUBSCRIBE bar\n");
        await bob.ExpectLineAsync("200");
        await alice.SendAsync(request + "\n");
        await alice.ExpectLineAsync("501");
        await alice.ExpectNothingMoreAsync();
        await bob.ExpectNothingMoreAsync();
        Assert.Equal(1, broker.Broker.Snapshot().UnknownVerbs);
    }

    [Fact]
    public async Task Responses_come_in_request_order_for_pipelined_requests()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("SUBSCRIBE a\nSUBSCRIBE a\nUNSUBSCRIBE b\nUCAST nobody x\nFOO\nLOGIN alice open\nMCAST a x\nUNSUBSCRIBE a\n");
        foreach (var code in new[] { "200", "409", "404", "404", "501", "405", "200", "200" })
            await alice.ExpectLineAsync(code);
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task A_request_written_one_byte_at_a_time_is_served()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        foreach (var b in "UCAST bob \u0000\u0002a\nb\n"u8.ToArray())
            await alice.SendAsync([b]);
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice UCAST bob \u0000\u0002a\nb");
    }
}
