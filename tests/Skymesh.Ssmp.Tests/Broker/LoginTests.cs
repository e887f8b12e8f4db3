using System.Text;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>spec §5 LOGIN row, §4 codes 200/400/401/405, §7.</summary>
public class LoginTests
{
    [Fact]
    public async Task Login_with_the_open_scheme_is_answered_200()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.ConnectAsync();
        await alice.SendAsync("LOGIN alice open\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Login_with_an_unknown_scheme_is_answered_401_listing_the_schemes_then_closed()
    {
        await using var broker = TestBroker.Start(o =>
        {
            o.Authenticators.Add(new OpenAuthenticator());
            o.Authenticators.Add(new SecretAuthenticator("s3cret"u8));
        });
        await using var alice = await broker.ConnectAsync();
        await alice.SendAsync("LOGIN alice kerberos\n");
        await alice.ExpectLineAsync("401 open secret");
        await alice.ExpectClosedAsync();
        Assert.Equal(1, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.LoginRefused));
    }

    [Fact]
    public async Task A_second_login_is_answered_405_and_the_connection_keeps_its_first_identity()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("LOGIN bob open\n");
        await alice.ExpectLineAsync("405");

        // Still open, still alice: a UCAST to bob finds nobody, one to alice reaches this connection.
        await alice.SendAsync("UCAST bob hi\n");
        await alice.ExpectLineAsync("404");
        await using var carol = await broker.LoginAsync("carol");
        await carol.SendAsync("UCAST alice hi\n");
        await carol.ExpectLineAsync("200");
        await alice.ExpectLineAsync("000 carol UCAST alice hi");
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task A_repeated_login_with_the_same_id_is_also_answered_405()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("LOGIN alice open\n");
        await alice.ExpectLineAsync("405");
        await alice.ExpectNothingMoreAsync();
    }

    [Theory]
    [InlineData("PING")]
    [InlineData("PONG")]
    [InlineData("CLOSE")]
    [InlineData("SUBSCRIBE t")]
    [InlineData("UCAST bob hi")]
    [InlineData("MCAST t hi")]
    [InlineData("FOO bar")]
    public async Task A_first_request_that_is_not_login_is_answered_400_then_closed(string request)
    {
        await using var broker = TestBroker.Start();
        await using var peer = await broker.ConnectAsync();
        await peer.SendAsync(request + "\n");
        await peer.ExpectLineAsync("400");
        await peer.ExpectClosedAsync();
    }

    [Fact]
    public async Task Requests_pipelined_after_a_refused_login_are_not_served()
    {
        await using var broker = TestBroker.Start();
        await using var bob = await broker.LoginAsync("bob");
        await using var mallory = await broker.ConnectAsync();
        await mallory.SendAsync("LOGIN mallory nosuch\nUCAST bob hi\n");
        await mallory.ExpectLineAsync("401 open");
        await mallory.ExpectClosedAsync();
        await bob.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Anonymous_login_is_accepted_and_several_anonymous_connections_coexist()
    {
        await using var broker = TestBroker.Start();
        await using var first = await broker.LoginAsync(".");
        await using var second = await broker.LoginAsync(".");
        await first.ExpectNothingMoreAsync();
        await second.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Anonymous_may_ucast_and_mcast_and_its_events_come_from_dot()
    {
        await using var broker = TestBroker.Start();
        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync("SUBSCRIBE news\n");
        await bob.ExpectLineAsync("200");
        await using var anon = await broker.LoginAsync(".");

        await anon.SendAsync("UCAST bob hello\n");
        await anon.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 . UCAST bob hello");

        await anon.SendAsync("MCAST news extra\n");
        await anon.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 . MCAST news extra");
        await bob.ExpectNothingMoreAsync();
    }

    [Theory]
    [InlineData("SUBSCRIBE news")]
    [InlineData("SUBSCRIBE news PRESENCE")]
    [InlineData("UNSUBSCRIBE news")]
    [InlineData("BCAST hello")]
    public async Task Anonymous_may_not_subscribe_unsubscribe_or_bcast_and_stays_connected(string request)
    {
        await using var broker = TestBroker.Start();
        await using var anon = await broker.LoginAsync(".");
        await anon.SendAsync(request + "\n");
        await anon.ExpectLineAsync("405");
        await anon.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Anonymous_cannot_be_a_ucast_target()
    {
        await using var broker = TestBroker.Start();
        await using var anon = await broker.LoginAsync(".");
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("UCAST . hi\n");
        await alice.ExpectLineAsync("404");
        await anon.SendAsync("UCAST . hi\n");
        await anon.ExpectLineAsync("404");
        await anon.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Anonymous_login_is_refused_401_when_the_broker_does_not_allow_it()
    {
        await using var broker = TestBroker.Start(o => o.AllowAnonymous = false);
        await using var anon = await broker.ConnectAsync();
        await anon.SendAsync("LOGIN . open\n");
        await anon.ExpectLineAsync("401 open");
        await anon.ExpectClosedAsync();
    }

    [Fact]
    public async Task Anonymous_login_goes_through_a_credential_scheme_too_but_needs_the_credential()
    {
        await using var broker = TestBroker.Start(o => o.Authenticators.Add(new SecretAuthenticator("s3cret"u8)));
        await using var good = await broker.ConnectAsync();
        await good.SendAsync("LOGIN . secret s3cret\n");
        await good.ExpectLineAsync("200");
        await using var bad = await broker.ConnectAsync();
        await bad.SendAsync("LOGIN . secret guess\n");
        await bad.ExpectLineAsync("401 secret");
        await bad.ExpectClosedAsync();
    }

    [Fact]
    public async Task A_secret_login_over_plain_tcp_is_accepted_with_the_right_secret_and_refused_with_a_wrong_one()
    {
        await using var broker = TestBroker.Start(o =>
        {
            o.Authenticators.Add(new SecretAuthenticator("s3cret"u8));
            o.Authenticators.Add(new OpenAuthenticator());
        });
        await using var alice = await broker.ConnectAsync();
        await alice.SendAsync("LOGIN alice secret s3cret\n");
        await alice.ExpectLineAsync("200");

        await using var mallory = await broker.ConnectAsync();
        await mallory.SendAsync("LOGIN mallory secret s3cre\n");
        await mallory.ExpectLineAsync("401 secret open");
        await mallory.ExpectClosedAsync();

        await using var nobody = await broker.ConnectAsync();
        await nobody.SendAsync("LOGIN nobody secret\n");
        await nobody.ExpectLineAsync("401 secret open");
        await nobody.ExpectClosedAsync();
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task A_secret_sent_as_a_binary_payload_is_compared_by_content()
    {
        var secret = "line one\nline two"u8.ToArray();
        await using var broker = TestBroker.Start(o => o.Authenticators.Add(new SecretAuthenticator(secret)));
        await using var alice = await broker.ConnectAsync();
        var login = Encoding.Latin1.GetBytes("LOGIN alice secret ")
            .Concat(new byte[] { 0, (byte)(secret.Length - 1) }).Concat(secret).Append((byte)'\n').ToArray();
        await alice.SendAsync(login);
        await alice.ExpectLineAsync("200");
    }

    [Fact]
    public async Task A_login_that_breaks_the_grammar_is_answered_400_then_closed()
    {
        await using var broker = TestBroker.Start();
        await using var peer = await broker.ConnectAsync();
        await peer.SendAsync("LOGIN alice\n");
        await peer.ExpectLineAsync("400");
        await peer.ExpectClosedAsync();
    }
}
