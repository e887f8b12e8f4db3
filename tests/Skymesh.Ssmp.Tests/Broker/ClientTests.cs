using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>The SSMP client library against the real broker, and against a scripted raw server where the broker cannot misbehave on cue.</summary>
public class ClientTests
{
    private static CancellationToken Token => TestContext.Current.CancellationToken;

    private static Task<SsmpClient> ConnectAsync(int port, string id, Action<SsmpClientOptions>? configure = null)
    {
        var options = new SsmpClientOptions { Port = port, Id = id, Reconnect = false };
        configure?.Invoke(options);
        return SsmpClient.ConnectAsync(options, Token);
    }

    private static async Task<SsmpEvent> NextEventAsync(SsmpClient client)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Token);
        cts.CancelAfter(RawPeer.ReadTimeout);
        return await client.Events.ReadAsync(cts.Token);
    }

    [Fact]
    public async Task Pipelined_requests_complete_in_order_each_with_its_own_answer()
    {
        await using var broker = TestBroker.Start();
        await using var bob = await broker.LoginAsync("bob");
        await using var alice = await ConnectAsync(broker.Port, "alice");
        var tasks = new List<Task>();
        for (var i = 0; i < 400; i++)
            tasks.Add(i % 2 == 0 ? alice.UcastAsync("bob", $"message {i}", Token) : alice.UcastAsync("nobody", $"lost {i}", Token));
        tasks.Add(alice.SubscribeAsync("t", cancellationToken: Token));
        tasks.Add(alice.SubscribeAsync("t", cancellationToken: Token));
        try
        {
            await Task.WhenAll(tasks);
        }
        catch (SsmpException)
        {
            // Checked one by one below.
        }
        for (var i = 0; i < 400; i++)
        {
            if (i % 2 == 0)
                Assert.True(tasks[i].IsCompletedSuccessfully, $"UCAST {i} to bob failed: {tasks[i].Exception}");
            else
                Assert.Equal(404, Assert.IsType<SsmpException>(tasks[i].Exception!.InnerException).Code);
        }
        Assert.True(tasks[400].IsCompletedSuccessfully);
        Assert.Equal(409, Assert.IsType<SsmpException>(tasks[401].Exception!.InnerException).Code);
        for (var i = 0; i < 400; i += 2)
            await bob.ExpectLineAsync($"000 alice UCAST bob message {i}");
        await bob.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Ucast_to_nobody_throws_an_ssmp_exception_with_code_404()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await ConnectAsync(broker.Port, "alice");
        var e = await Assert.ThrowsAsync<SsmpException>(() => alice.UcastAsync("nobody", "hello", Token));
        Assert.Equal(404, e.Code);
        Assert.IsNotType<SsmpConnectionException>(e);
        // The connection is fine afterwards.
        await alice.McastAsync("t", "still here", Token);
    }

    [Fact]
    public async Task Error_answers_become_exceptions_with_their_codes_and_unknown_verbs_come_back_as_501()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await ConnectAsync(broker.Port, "alice");
        await using var anon = await ConnectAsync(broker.Port, ".");
        Assert.Equal(404, (await Assert.ThrowsAsync<SsmpException>(() => alice.UnsubscribeAsync("never", Token))).Code);
        await alice.SubscribeAsync("t", cancellationToken: Token);
        Assert.Equal(409, (await Assert.ThrowsAsync<SsmpException>(() => alice.SubscribeAsync("t", cancellationToken: Token))).Code);
        Assert.Equal(405, (await Assert.ThrowsAsync<SsmpException>(() => anon.SubscribeAsync("t", cancellationToken: Token))).Code);
        Assert.Equal(405, (await Assert.ThrowsAsync<SsmpException>(() => anon.BcastAsync("hi"u8.ToArray(), Token))).Code);
        var response = await alice.SendExtensionAsync("FROB", "x", "payload"u8.ToArray(), Token);
        Assert.Equal(501, response.Code);
    }

    [Fact]
    public async Task A_refused_login_throws_401_with_the_offered_schemes()
    {
        await using var broker = TestBroker.Start(o => o.Authenticators.Add(new Skymesh.Ssmp.Broker.SecretAuthenticator("s3cret"u8)));
        var e = await Assert.ThrowsAsync<SsmpException>(() => ConnectAsync(broker.Port, "alice", o =>
        {
            o.Scheme = "secret";
            o.Credential = "guess"u8.ToArray();
        }));
        Assert.Equal(401, e.Code);
        Assert.Contains("secret", e.Message, StringComparison.Ordinal);
        await using var ok = await ConnectAsync(broker.Port, "alice", o =>
        {
            o.Scheme = "secret";
            o.Credential = "s3cret"u8.ToArray();
        });
        Assert.Equal(SsmpClientState.Connected, ok.State);
    }

    [Fact]
    public async Task Events_arrive_on_the_events_channel_with_their_parts()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await ConnectAsync(broker.Port, "alice");
        await alice.SubscribeAsync("room", presence: true, Token);
        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync("SUBSCRIBE room PRESENCE\nUCAST alice \u0000\u0002a\nb\nMCAST room hi room\nBCAST hi all\nUNSUBSCRIBE room\n");
        for (var i = 0; i < 5; i++)
            await bob.ReadLinesUntilAsync("200");

        var subscribed = await NextEventAsync(alice);
        Assert.Equal(("bob", SsmpVerb.Subscribe, "room", true), (subscribed.From, subscribed.Verb, subscribed.Target, subscribed.Presence));
        var ucast = await NextEventAsync(alice);
        Assert.Equal(("bob", SsmpVerb.Ucast, "alice"), (ucast.From, ucast.Verb, ucast.Target));
        Assert.Equal("a\nb"u8.ToArray(), ucast.Payload.ToArray());
        var mcast = await NextEventAsync(alice);
        Assert.Equal(("bob", SsmpVerb.Mcast, "room", "hi room"), (mcast.From, mcast.Verb, mcast.Target, mcast.PayloadText));
        var bcast = await NextEventAsync(alice);
        Assert.Equal(("bob", SsmpVerb.Bcast, null, "hi all"), (bcast.From, bcast.Verb, bcast.Target, bcast.PayloadText));
        var unsubscribed = await NextEventAsync(alice);
        Assert.Equal(("bob", SsmpVerb.Unsubscribe, "room"), (unsubscribed.From, unsubscribed.Verb, unsubscribed.Target));
        Assert.False(alice.Events.TryRead(out _));
    }

    [Fact]
    public async Task The_client_sends_a_payload_holding_lf_in_the_binary_form()
    {
        await using var broker = TestBroker.Start();
        await using var bob = await broker.LoginAsync("bob");
        await using var alice = await ConnectAsync(broker.Port, "alice");
        await alice.UcastAsync("bob", "a\nb"u8.ToArray(), Token);
        await alice.UcastAsync("bob", new byte[] { 0x01, (byte)'x' }, Token);
        await alice.UcastAsync("bob", "plain text", Token);
        await bob.ExpectLineAsync("000 alice UCAST bob \u0000\u0002a\nb");
        await bob.ExpectLineAsync("000 alice UCAST bob \u0000\u0001\u0001x");
        await bob.ExpectLineAsync("000 alice UCAST bob plain text");
    }

    [Fact]
    public async Task With_an_event_callback_events_go_to_the_callback()
    {
        await using var broker = TestBroker.Start();
        var got = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var alice = await ConnectAsync(broker.Port, "alice", o => o.OnEvent = e => got.TrySetResult(e.ToString()));
        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync("UCAST alice over the callback\n");
        await bob.ExpectLineAsync("200");
        Assert.Equal("bob UCAST alice over the callback", await got.Task.WaitAsync(RawPeer.ReadTimeout, Token));
        Assert.False(alice.Events.TryRead(out _));
    }

    [Fact]
    public async Task Lent_payloads_are_right_during_the_callback_and_a_detached_event_keeps_its_own()
    {
        await using var broker = TestBroker.Start();
        const int Count = 300;
        var during = new List<string>();
        var detached = new List<SsmpEvent>();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var alice = await ConnectAsync(broker.Port, "alice", o =>
        {
            o.LendPayloads = true;
            o.OnEvent = e =>
            {
                during.Add(e.PayloadText);
                detached.Add(e.Detach());
                if (during.Count == Count)
                    done.SetResult();
            };
        });
        await using var bob = await ConnectAsync(broker.Port, "bob");
        for (var i = 0; i < Count; i++)
            await bob.UcastAsync("alice", $"message {i} {new string((char)('a' + i % 26), i)}", Token);
        await done.Task.WaitAsync(RawPeer.ReadTimeout, Token);
        var expected = Enumerable.Range(0, Count).Select(i => $"message {i} {new string((char)('a' + i % 26), i)}").ToList();
        Assert.Equal(expected, during);
        Assert.Equal(expected, detached.Select(e => e.PayloadText));
    }

    [Fact]
    public async Task After_the_broker_restarts_the_client_reconnects_logs_in_and_restores_its_subscriptions()
    {
        var first = TestBroker.Start();
        var port = first.Port;
        await using var alice = await SsmpClient.ConnectAsync(new SsmpClientOptions
        {
            Port = port,
            Id = "alice",
            ReconnectDelayMin = TimeSpan.FromMilliseconds(10),
            ReconnectDelayMax = TimeSpan.FromMilliseconds(200),
        }, Token);
        var reconnecting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var connected = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        alice.StateChanged += s =>
        {
            if (s == SsmpClientState.Reconnecting)
                reconnecting.TrySetResult();
            else if (s == SsmpClientState.Connected)
                connected.TrySetResult();
        };
        await alice.SubscribeAsync("room", cancellationToken: Token);
        await alice.SubscribeAsync("lobby", presence: true, Token);

        await first.DisposeAsync();
        await reconnecting.Task.WaitAsync(RawPeer.ReadTimeout, Token);
        Assert.Equal(SsmpClientState.Reconnecting, alice.State);
        await Assert.ThrowsAsync<SsmpConnectionException>(() => alice.UcastAsync("alice", "while down", Token));

        await using var second = TestBroker.Start(listen: new IPEndPoint(IPAddress.Loopback, port));
        await connected.Task.WaitAsync(RawPeer.ReadTimeout, Token);
        Assert.Equal(SsmpClientState.Connected, alice.State);
        Assert.Equal(1, alice.Reconnects);

        // Logged in as alice again, subscribed to room again (and to lobby with presence).
        await using var bob = await second.LoginAsync("bob");
        await bob.SendAsync("SUBSCRIBE lobby\nMCAST room after the restart\nUCAST alice direct\n");
        await bob.ExpectLineAsync("200");
        await bob.ExpectLineAsync("200");
        await bob.ExpectLineAsync("200");
        var joined = await NextEventAsync(alice);
        Assert.Equal(("bob", SsmpVerb.Subscribe, "lobby", false), (joined.From, joined.Verb, joined.Target, joined.Presence));
        Assert.Equal("bob MCAST room after the restart", (await NextEventAsync(alice)).ToString());
        Assert.Equal("bob UCAST alice direct", (await NextEventAsync(alice)).ToString());
    }

    [Fact]
    public async Task Disposing_the_client_sends_close_so_watchers_hear_it_leave()
    {
        await using var broker = TestBroker.Start();
        await using var watcher = await broker.LoginAsync("watcher");
        await watcher.SendAsync("SUBSCRIBE room PRESENCE\n");
        await watcher.ExpectLineAsync("200");
        var alice = await ConnectAsync(broker.Port, "alice");
        await alice.SubscribeAsync("room", cancellationToken: Token);
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE room");
        await alice.DisposeAsync();
        Assert.Equal(SsmpClientState.Closed, alice.State);
        await watcher.ExpectLineAsync("000 alice UNSUBSCRIBE room");
        await broker.WaitUntilAsync(m => m.DisconnectsFor(Skymesh.Ssmp.Broker.DisconnectReason.CloseRequested) == 1, "the close is counted");
    }

    [Fact]
    public async Task A_client_whose_login_is_refused_on_reconnect_gives_up_in_the_failed_state()
    {
        var first = TestBroker.Start(o => o.Authenticators.Add(new Skymesh.Ssmp.Broker.SecretAuthenticator("old"u8)));
        var port = first.Port;
        await using var alice = await SsmpClient.ConnectAsync(new SsmpClientOptions
        {
            Port = port,
            Id = "alice",
            Scheme = "secret",
            Credential = "old"u8.ToArray(),
            ReconnectDelayMin = TimeSpan.FromMilliseconds(10),
            ReconnectDelayMax = TimeSpan.FromMilliseconds(200),
        }, Token);
        var failed = WaitForStateAsync(alice, SsmpClientState.Failed);
        await first.DisposeAsync();
        await using var second = TestBroker.Start(
            o => o.Authenticators.Add(new Skymesh.Ssmp.Broker.SecretAuthenticator("new"u8)),
            new IPEndPoint(IPAddress.Loopback, port));
        await failed;
        var e = await Assert.ThrowsAsync<SsmpException>(() => alice.Events.Completion.WaitAsync(RawPeer.ReadTimeout, Token));
        Assert.Equal(401, e.Code);
    }

    /// <summary>A raw TCP server that plays the broker's part line by line.</summary>
    private sealed class ScriptedServer : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);

        public ScriptedServer() => _listener.Start();

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        /// <summary>Starts a client connecting, accepts it, answers its LOGIN with 200, and returns both ends.</summary>
        public async Task<(SsmpClient Client, RawPeer Server)> ConnectAsync(FakeTimeProvider? time = null)
        {
            var connecting = SsmpClient.ConnectAsync(new SsmpClientOptions
            {
                Port = Port,
                Id = "alice",
                Reconnect = false,
                TimeProvider = time ?? (TimeProvider)TimeProvider.System,
                PingInterval = TimeSpan.FromSeconds(30),
                PongTimeout = TimeSpan.FromSeconds(30),
            }, Token);
            var socket = await _listener.AcceptSocketAsync(Token);
            var server = new RawPeer(new NetworkStream(socket, ownsSocket: true), socket);
            await server.ExpectLineAsync("LOGIN alice open");
            await server.SendAsync("200\n");
            return (await connecting, server);
        }

        public ValueTask DisposeAsync()
        {
            _listener.Stop();
            _listener.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    private static Task WaitForStateAsync(SsmpClient client, SsmpClientState state)
    {
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        client.StateChanged += s =>
        {
            if (s == state)
                reached.TrySetResult();
        };
        if (client.State == state)
            reached.TrySetResult();
        return reached.Task.WaitAsync(RawPeer.ReadTimeout, Token);
    }

    [Fact]
    public async Task A_silent_broker_gets_a_ping_after_the_ping_interval_and_is_dropped_after_the_pong_timeout()
    {
        var time = new FakeTimeProvider();
        await using var scripted = new ScriptedServer();
        var (client, server) = await scripted.ConnectAsync(time);
        await using (client)
        await using (server)
        {
            var closed = WaitForStateAsync(client, SsmpClientState.Closed);
            time.Advance(TimeSpan.FromSeconds(30));
            await server.ExpectLineAsync("PING");
            time.Advance(TimeSpan.FromSeconds(30));
            await server.ExpectClosedAsync();
            await closed;
        }
    }

    [Fact]
    public async Task Any_line_from_the_broker_restarts_the_clients_idle_timer()
    {
        var time = new FakeTimeProvider();
        await using var scripted = new ScriptedServer();
        var (client, server) = await scripted.ConnectAsync(time);
        await using (client)
        await using (server)
        {
            time.Advance(TimeSpan.FromSeconds(30));
            await server.ExpectLineAsync("PING");
            // The broker answers late, but within the timeout; the client takes it as life.
            var pong = client.McastAsync("t", "x", Token);
            await server.ExpectLineAsync("MCAST t x");
            await server.SendAsync("000 . PONG\n200\n");
            await pong;
            time.Advance(TimeSpan.FromSeconds(30));
            await server.ExpectLineAsync("PING");
            Assert.Equal(SsmpClientState.Connected, client.State);
        }
    }

    [Fact]
    public async Task The_client_answers_the_brokers_ping_with_pong()
    {
        await using var scripted = new ScriptedServer();
        var (client, server) = await scripted.ConnectAsync();
        await using (client)
        await using (server)
        {
            await server.SendAsync("000 . PING\n");
            await server.ExpectLineAsync("PONG");
            Assert.False(client.Events.TryRead(out _));
        }
    }

    [Fact]
    public async Task The_client_accepts_an_event_that_overtakes_the_response_to_the_request_that_caused_it()
    {
        await using var scripted = new ScriptedServer();
        var (client, server) = await scripted.ConnectAsync();
        await using (client)
        await using (server)
        {
            var sending = client.UcastAsync("alice", "to myself", Token);
            await server.ExpectLineAsync("UCAST alice to myself");
            await server.SendAsync("000 alice UCAST alice to myself\n200\n");
            await sending;
            Assert.Equal("alice UCAST alice to myself", (await NextEventAsync(client)).ToString());
        }
    }

    [Theory]
    [InlineData("200 \n")]
    [InlineData("garbage\n")]
    [InlineData("000 bob ucast alice x\n")]
    [InlineData("\n")]
    [InlineData("200\r\n")]
    public async Task A_grammar_violation_from_the_broker_makes_the_client_close_and_fail_pending_requests(string line)
    {
        await using var scripted = new ScriptedServer();
        var (client, server) = await scripted.ConnectAsync();
        await using (client)
        await using (server)
        {
            var closed = WaitForStateAsync(client, SsmpClientState.Closed);
            var pending = client.McastAsync("t", "x", Token);
            await server.ExpectLineAsync("MCAST t x");
            await server.SendAsync(line);
            await Assert.ThrowsAsync<SsmpConnectionException>(() => pending);
            await server.ExpectClosedAsync();
            await closed;
        }
    }

    [Fact]
    public async Task A_response_to_no_request_makes_the_client_close()
    {
        await using var scripted = new ScriptedServer();
        var (client, server) = await scripted.ConnectAsync();
        await using (client)
        await using (server)
        {
            var closed = WaitForStateAsync(client, SsmpClientState.Closed);
            await server.SendAsync("200\n");
            await server.ExpectClosedAsync();
            await closed;
        }
    }
}
