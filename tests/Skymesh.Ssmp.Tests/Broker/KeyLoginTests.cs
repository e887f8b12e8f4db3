using System.Buffers.Binary;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Identity;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>
/// spec §7 the <c>key</c> scheme, as docs/ssmp-broker.md fixes its bytes: credentials are built here by hand from the
/// documented layout (not with the library's helper), sent on the raw wire, and the broker's counters checked.
/// </summary>
public class KeyLoginTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    private static long Now => T0.ToUnixTimeMilliseconds();

    /// <summary>A broker on a frozen clock at <see cref="T0"/> offering <c>key</c>, then <c>open</c> (for plain peers).</summary>
    private static TestBroker StartKeyBroker(FakeTimeProvider? time = null, Action<SsmpBrokerOptions>? configure = null) => TestBroker.Start(o =>
    {
        o.TimeProvider = time ?? new FakeTimeProvider(T0);
        o.Authenticators.Add(new KeyAuthenticator());
        o.Authenticators.Add(new OpenAuthenticator());
        configure?.Invoke(o);
    });

    /// <summary>The signed message exactly as documented: "skymesh ssmp login v1" LF server LF id LF, then the 8 timestamp bytes.</summary>
    private static byte[] SignedMessage(string server, string id, long timestamp)
    {
        var text = Encoding.ASCII.GetBytes($"skymesh ssmp login v1\n{server}\n{id}\n");
        var message = new byte[text.Length + 8];
        text.CopyTo(message, 0);
        BinaryPrimitives.WriteInt64BigEndian(message.AsSpan(text.Length), timestamp);
        return message;
    }

    /// <summary>timestamp (8 bytes, big-endian Unix ms) ‖ BIP340 signature with purpose "ssmp-login" (64 bytes).</summary>
    private static byte[] Credential(NodeKey signer, long timestamp, string server = "skymesh", string? id = null)
    {
        id ??= signer.Address.ToString();
        var credential = new byte[72];
        BinaryPrimitives.WriteInt64BigEndian(credential, timestamp);
        signer.Sign("ssmp-login", SignedMessage(server, id, timestamp)).CopyTo(credential, 8);
        return credential;
    }

    /// <summary><c>LOGIN id key</c> with the credential as a binary payload (prefix = length − 1, big-endian).</summary>
    private static byte[] Login(string id, byte[] credential) =>
    [
        .. Encoding.ASCII.GetBytes($"LOGIN {id} key "),
        (byte)((credential.Length - 1) >> 8), (byte)(credential.Length - 1),
        .. credential,
        (byte)'\n',
    ];

    private static async Task<RawPeer> LoginAsync(TestBroker broker, string id, byte[] credential, string expected)
    {
        var peer = await broker.ConnectAsync();
        await peer.SendAsync(Login(id, credential));
        await peer.ExpectLineAsync(expected);
        return peer;
    }

    private static async Task ExpectRefusedAsync(TestBroker broker, string id, byte[] credential)
    {
        await using var peer = await LoginAsync(broker, id, credential, "401 key open");
        await peer.ExpectClosedAsync();
    }

    private static void AssertOnlyFailure(TestBroker broker, KeyLoginFailure reason, long count)
    {
        var snapshot = broker.Broker.Snapshot();
        foreach (var (r, n) in snapshot.KeyLoginFailures)
            Assert.True(n == (r == reason ? count : 0), $"{r}: {n} (expected {(r == reason ? count : 0)})");
    }

    [Fact]
    public async Task A_credential_built_as_documented_logs_in_and_the_node_is_reachable_at_its_address()
    {
        await using var broker = StartKeyBroker();
        using var key = NodeKey.Generate();
        var address = key.Address.ToString();
        var credential = Credential(key, Now);
        Assert.Equal(72, credential.Length);
        await using var node = await LoginAsync(broker, address, credential, "200");

        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync($"UCAST {address} hello node\n");
        await bob.ExpectLineAsync("200");
        await node.ExpectLineAsync($"000 bob UCAST {address} hello node");
        await node.SendAsync("UCAST bob hello bob\n");
        await node.ExpectLineAsync("200");
        await bob.ExpectLineAsync($"000 {address} UCAST bob hello bob");

        var snapshot = broker.Broker.Snapshot();
        Assert.Equal(1, snapshot.KeyLoginsAccepted);
        Assert.Equal(1, snapshot.KeyLoginCredentialsRemembered);
        Assert.Equal(0, snapshot.KeyLoginFailures.Values.Sum());
    }

    [Fact]
    public void The_library_credential_has_the_documented_layout()
    {
        using var key = NodeKey.Generate();
        var credential = SsmpKeyCredential.Create(key, "broker-a", Now);
        Assert.Equal(72, credential.Length);
        Assert.Equal(Now, BinaryPrimitives.ReadInt64BigEndian(credential));
        // The example in docs/ssmp-broker.md: 2026-01-01 12:00:00 UTC.
        Assert.Equal(Convert.FromHexString("0000019b796dd600"), credential[..8]);
        Assert.True(key.Address.Verify("ssmp-login", SignedMessage("broker-a", key.Address.ToString(), Now), credential.AsSpan(8)));
        Assert.False(key.Address.Verify("ssmp-login", SignedMessage("broker-b", key.Address.ToString(), Now), credential.AsSpan(8)));
    }

    [Fact]
    public async Task A_credential_signed_by_another_key_is_refused_401()
    {
        await using var broker = StartKeyBroker();
        using var alice = NodeKey.Generate();
        using var mallory = NodeKey.Generate();
        // Mallory signs a credential naming alice's address.
        await ExpectRefusedAsync(broker, alice.Address.ToString(), Credential(mallory, Now, id: alice.Address.ToString()));
        // And alice's own credential presented under mallory's address.
        await ExpectRefusedAsync(broker, mallory.Address.ToString(), Credential(alice, Now));
        AssertOnlyFailure(broker, KeyLoginFailure.BadSignature, 2);
        Assert.Equal(2, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.LoginRefused));
    }

    [Fact]
    public async Task A_credential_signed_for_another_server_name_is_refused_401_but_works_at_that_server()
    {
        var time = new FakeTimeProvider(T0);
        await using var brokerA = StartKeyBroker(time, o => o.ServerName = "broker-a");
        await using var brokerB = StartKeyBroker(time, o => o.ServerName = "broker-b");
        using var key = NodeKey.Generate();
        var forB = Credential(key, Now, server: "broker-b");

        await ExpectRefusedAsync(brokerA, key.Address.ToString(), forB);
        AssertOnlyFailure(brokerA, KeyLoginFailure.BadSignature, 1);

        await using var atB = await LoginAsync(brokerB, key.Address.ToString(), forB, "200");
        Assert.Equal(1, brokerB.Broker.Snapshot().KeyLoginsAccepted);

        // The default name is "skymesh", and a credential for it is refused at broker-a too.
        await ExpectRefusedAsync(brokerA, key.Address.ToString(), Credential(key, Now));
        AssertOnlyFailure(brokerA, KeyLoginFailure.BadSignature, 2);
    }

    [Theory]
    [InlineData(-31_000, KeyLoginFailure.TooOld)]
    [InlineData(31_000, KeyLoginFailure.TooNew)]
    [InlineData(-30_001, KeyLoginFailure.TooOld)]
    [InlineData(30_001, KeyLoginFailure.TooNew)]
    [InlineData(long.MinValue / 2, KeyLoginFailure.TooOld)]
    [InlineData(long.MaxValue / 2, KeyLoginFailure.TooNew)]
    public async Task A_timestamp_outside_the_window_is_refused_401(long offsetMs, KeyLoginFailure reason)
    {
        await using var broker = StartKeyBroker();
        using var key = NodeKey.Generate();
        await ExpectRefusedAsync(broker, key.Address.ToString(), Credential(key, Now + offsetMs));
        AssertOnlyFailure(broker, reason, 1);
        Assert.Equal(0, broker.Broker.Snapshot().KeyLoginCredentialsRemembered);
    }

    [Theory]
    [InlineData(-29_000)]
    [InlineData(29_000)]
    [InlineData(-30_000)]
    [InlineData(30_000)]
    [InlineData(0)]
    public async Task A_timestamp_inside_the_window_is_accepted(long offsetMs)
    {
        await using var broker = StartKeyBroker();
        using var key = NodeKey.Generate();
        await using var node = await LoginAsync(broker, key.Address.ToString(), Credential(key, Now + offsetMs), "200");
        await node.ExpectNothingMoreAsync();
        Assert.Equal(1, broker.Broker.Snapshot().KeyLoginsAccepted);
    }

    [Fact]
    public async Task The_window_is_an_option()
    {
        await using var broker = StartKeyBroker(configure: o => o.KeyLoginWindow = TimeSpan.FromSeconds(5));
        using var key = NodeKey.Generate();
        await ExpectRefusedAsync(broker, key.Address.ToString(), Credential(key, Now - 6_000));
        await using var node = await LoginAsync(broker, key.Address.ToString(), Credential(key, Now - 4_000), "200");
        AssertOnlyFailure(broker, KeyLoginFailure.TooOld, 1);
    }

    [Fact]
    public async Task A_credential_whose_time_has_passed_is_refused_even_though_it_was_once_good()
    {
        var time = new FakeTimeProvider(T0);
        await using var broker = StartKeyBroker(time);
        using var key = NodeKey.Generate();
        var credential = Credential(key, Now);
        await using (var first = await LoginAsync(broker, key.Address.ToString(), credential, "200"))
        {
            await first.SendAsync("CLOSE\n");
            await first.ExpectLineAsync("200");
            await first.ExpectClosedAsync();
        }
        time.Advance(TimeSpan.FromSeconds(31));
        // The broker's sweep has forgotten it, and the window check refuses it from now on.
        Assert.Equal(0, broker.Broker.Snapshot().KeyLoginCredentialsRemembered);
        await ExpectRefusedAsync(broker, key.Address.ToString(), credential);
        AssertOnlyFailure(broker, KeyLoginFailure.TooOld, 1);
    }

    [Fact]
    public async Task The_same_credential_on_a_second_connection_is_refused_401_and_the_first_keeps_its_id()
    {
        await using var broker = StartKeyBroker();
        using var key = NodeKey.Generate();
        var address = key.Address.ToString();
        var credential = Credential(key, Now);
        await using var first = await LoginAsync(broker, address, credential, "200");

        // Replayed while the first is connected: refused, and the first is not evicted.
        await ExpectRefusedAsync(broker, address, credential);
        await first.ExpectNothingMoreAsync();
        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync($"UCAST {address} still you\n");
        await bob.ExpectLineAsync("200");
        await first.ExpectLineAsync($"000 bob UCAST {address} still you");

        // Replayed after the first has gone: still refused.
        await first.SendAsync("CLOSE\n");
        await first.ExpectLineAsync("200");
        await first.ExpectClosedAsync();
        await ExpectRefusedAsync(broker, address, credential);
        AssertOnlyFailure(broker, KeyLoginFailure.Replayed, 2);

        // A fresh credential from the same key, even with the same timestamp, is a new one.
        await using var again = await LoginAsync(broker, address, Credential(key, Now), "200");
        Assert.Equal(2, broker.Broker.Snapshot().KeyLoginsAccepted);
    }

    [Fact]
    public async Task The_same_credential_sent_on_many_connections_at_once_is_accepted_exactly_once()
    {
        await using var broker = StartKeyBroker();
        using var key = NodeKey.Generate();
        var login = Login(key.Address.ToString(), Credential(key, Now));
        var peers = new List<RawPeer>();
        try
        {
            for (var i = 0; i < 8; i++)
                peers.Add(await broker.ConnectAsync());
            await Task.WhenAll(peers.Select(p => p.SendAsync(login)));
            var answers = await Task.WhenAll(peers.Select(p => p.ReadLineAsync()));
            Assert.Single(answers, a => a == "200");
            Assert.Equal(7, answers.Count(a => a == "401 key open"));
        }
        finally
        {
            foreach (var p in peers)
                await p.DisposeAsync();
        }
        AssertOnlyFailure(broker, KeyLoginFailure.Replayed, 7);
    }

    public static TheoryData<string, byte[]> MalformedLogins()
    {
        var id = new string('a', 63) + "b";
        byte[] Binary(int length) => [.. Encoding.ASCII.GetBytes($"LOGIN {id} key "), (byte)((length - 1) >> 8), (byte)(length - 1), .. Enumerable.Repeat((byte)0x41, length), (byte)'\n'];
        return new()
        {
            { "no credential", Encoding.ASCII.GetBytes($"LOGIN {id} key\n") },
            { "71 bytes", Binary(71) },
            { "73 bytes", Binary(73) },
            { "1 byte", Binary(1) },
            { "1024 bytes", Binary(1024) },
            { "text payload", Encoding.ASCII.GetBytes($"LOGIN {id} key not a credential\n") },
            { "72-byte text payload", Encoding.ASCII.GetBytes($"LOGIN {id} key {new string('x', 72)}\n") },
        };
    }

    [Theory]
    [MemberData(nameof(MalformedLogins))]
    public async Task A_malformed_credential_is_refused_401(string what, byte[] login)
    {
        _ = what;
        await using var broker = StartKeyBroker();
        await using var peer = await broker.ConnectAsync();
        await peer.SendAsync(login);
        await peer.ExpectLineAsync("401 key open");
        await peer.ExpectClosedAsync();
        AssertOnlyFailure(broker, KeyLoginFailure.Malformed, 1);
        // The broker serves on.
        await using var bob = await broker.LoginAsync("bob");
        await bob.ExpectNothingMoreAsync();
    }

    [Theory]
    [InlineData("zz")] // not hex
    [InlineData("abc")] // short
    [InlineData("alice")]
    [InlineData("upper")] // the address in capitals: not the id it is reachable at
    [InlineData("not-a-point")] // 64 hex digits above the field size
    public async Task An_id_that_is_not_a_node_address_is_refused_401(string kind)
    {
        await using var broker = StartKeyBroker();
        using var key = NodeKey.Generate();
        var address = key.Address.ToString();
        var id = kind switch
        {
            "zz" => "zz" + address[2..],
            "upper" => address.ToUpperInvariant(),
            "not-a-point" => new string('f', 64),
            _ => kind,
        };
        // Signed for exactly that id, so only the id is wrong.
        await ExpectRefusedAsync(broker, id, Credential(key, Now, id: id));
        AssertOnlyFailure(broker, KeyLoginFailure.BadId, 1);
    }

    [Fact]
    public async Task Anonymous_cannot_log_in_through_the_key_scheme()
    {
        await using var broker = StartKeyBroker();
        using var key = NodeKey.Generate();
        await ExpectRefusedAsync(broker, ".", Credential(key, Now, id: "."));
        AssertOnlyFailure(broker, KeyLoginFailure.Anonymous, 1);
        // Anonymous through open still works on the same broker.
        await using var anon = await broker.LoginAsync(".");
    }

    [Fact]
    public async Task The_cheap_checks_come_before_the_signature()
    {
        await using var broker = StartKeyBroker();
        using var key = NodeKey.Generate();
        var address = key.Address.ToString();
        var garbage = Credential(key, Now - 60_000);
        garbage.AsSpan(8).Fill(0x5A);
        // A bad signature on a stale credential is counted as stale: the signature was never checked.
        await ExpectRefusedAsync(broker, address, garbage);
        AssertOnlyFailure(broker, KeyLoginFailure.TooOld, 1);

        var good = Credential(key, Now);
        await using var first = await LoginAsync(broker, address, good, "200");
        var tampered = (byte[])good.Clone();
        tampered[^1] ^= 1;
        await ExpectRefusedAsync(broker, address, tampered);
        Assert.Equal(1, broker.Broker.Snapshot().KeyLoginFailuresFor(KeyLoginFailure.BadSignature));
    }

    [Fact]
    public async Task A_full_replay_set_refuses_new_key_logins_without_an_answer_until_its_entries_expire()
    {
        var time = new FakeTimeProvider(T0);
        await using var broker = StartKeyBroker(time, o => o.KeyLoginReplayCapacity = 2);
        using var a = NodeKey.Generate();
        using var b = NodeKey.Generate();
        using var c = NodeKey.Generate();
        await using var pa = await LoginAsync(broker, a.Address.ToString(), Credential(a, Now), "200");
        await using var pb = await LoginAsync(broker, b.Address.ToString(), Credential(b, Now), "200");

        // Full: the login is closed unanswered (a client treats that as a lost connection and retries later).
        await using (var pc = await broker.ConnectAsync())
        {
            await pc.SendAsync(Login(c.Address.ToString(), Credential(c, Now)));
            await pc.ExpectClosedAsync();
        }
        AssertOnlyFailure(broker, KeyLoginFailure.ReplaySetFull, 1);
        Assert.Equal(2, broker.Broker.Snapshot().KeyLoginCredentialsRemembered);

        // Other schemes are not affected.
        await using var bob = await broker.LoginAsync("bob");

        // Once the remembered credentials' timestamps leave the window, there is room again.
        time.Advance(TimeSpan.FromSeconds(31));
        await using var later = await LoginAsync(broker, c.Address.ToString(), Credential(c, time.GetUtcNow().ToUnixTimeMilliseconds()), "200");
        Assert.Equal(1, broker.Broker.Snapshot().KeyLoginCredentialsRemembered);
    }

    [Fact]
    public async Task A_broker_offering_only_key_lists_it_in_the_401()
    {
        await using var broker = TestBroker.Start(o =>
        {
            o.TimeProvider = new FakeTimeProvider(T0);
            o.Authenticators.Add(new KeyAuthenticator());
        });
        await using var peer = await broker.ConnectAsync();
        await peer.SendAsync("LOGIN alice open\n");
        await peer.ExpectLineAsync("401 key");
        await peer.ExpectClosedAsync();
        Assert.Equal(0, broker.Broker.Snapshot().KeyLoginFailures.Values.Sum());
    }

    [Fact]
    public void Options_refuse_a_server_name_that_is_not_an_identifier_and_a_window_out_of_range()
    {
        static SsmpBrokerOptions With(Action<SsmpBrokerOptions> change)
        {
            var options = new SsmpBrokerOptions { Authenticators = { new KeyAuthenticator() } };
            change(options);
            return options;
        }
        With(_ => { }).Validate();
        var e = Assert.Throws<ArgumentException>(() => With(o => o.ServerName = "two words").Validate());
        Assert.Equal(nameof(SsmpBrokerOptions.ServerName), e.ParamName);
        e = Assert.Throws<ArgumentException>(() => With(o => o.ServerName = "").Validate());
        Assert.Equal(nameof(SsmpBrokerOptions.ServerName), e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => With(o => o.KeyLoginWindow = TimeSpan.Zero).Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => With(o => o.KeyLoginReplayCapacity = 0).Validate());
    }

    // The client.

    [Fact]
    public async Task A_client_with_a_key_logs_in_as_its_address_and_is_reachable_by_ucast()
    {
        var time = new FakeTimeProvider(T0);
        await using var broker = StartKeyBroker(time, o => o.ServerName = "hub-1");
        using var key = NodeKey.Generate();
        await using var client = await SsmpClient.ConnectAsync(new SsmpClientOptions
        {
            Port = broker.Port,
            Key = key,
            ServerName = "hub-1",
            Reconnect = false,
            TimeProvider = time,
        }, Token);
        Assert.Equal(key.Address.ToString(), client.Id);

        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync($"UCAST {client.Id} hello key\n");
        await bob.ExpectLineAsync("200");
        Assert.Equal($"bob UCAST {client.Id} hello key", (await NextEventAsync(client)).ToString());
        Assert.Equal(1, broker.Broker.Snapshot().KeyLoginsAccepted);
    }

    [Fact]
    public async Task A_client_signs_with_its_own_clock_and_for_its_server_name()
    {
        var brokerTime = new FakeTimeProvider(T0);
        await using var broker = StartKeyBroker(brokerTime, o => o.ServerName = "hub-1");
        using var key = NodeKey.Generate();
        SsmpClientOptions Options(TimeSpan skew, string server) => new()
        {
            Port = broker.Port,
            Key = key,
            ServerName = server,
            Reconnect = false,
            TimeProvider = new FakeTimeProvider(T0 + skew),
        };

        var e = await Assert.ThrowsAsync<SsmpException>(() => SsmpClient.ConnectAsync(Options(TimeSpan.FromSeconds(-31), "hub-1"), Token));
        Assert.Equal(401, e.Code);
        e = await Assert.ThrowsAsync<SsmpException>(() => SsmpClient.ConnectAsync(Options(TimeSpan.FromSeconds(31), "hub-1"), Token));
        Assert.Equal(401, e.Code);
        e = await Assert.ThrowsAsync<SsmpException>(() => SsmpClient.ConnectAsync(Options(TimeSpan.Zero, "skymesh"), Token));
        Assert.Equal(401, e.Code);
        await using var ok = await SsmpClient.ConnectAsync(Options(TimeSpan.FromSeconds(29), "hub-1"), Token);

        var snapshot = broker.Broker.Snapshot();
        Assert.Equal(1, snapshot.KeyLoginFailuresFor(KeyLoginFailure.TooOld));
        Assert.Equal(1, snapshot.KeyLoginFailuresFor(KeyLoginFailure.TooNew));
        Assert.Equal(1, snapshot.KeyLoginFailuresFor(KeyLoginFailure.BadSignature));
        Assert.Equal(1, snapshot.KeyLoginsAccepted);
    }

    [Fact]
    public async Task After_the_broker_drops_a_key_client_it_logs_in_again_with_a_fresh_credential()
    {
        // The broker's clock is the client's: both real, so the client's reconnect back-off runs by itself.
        await using var broker = TestBroker.Start(o =>
        {
            o.Authenticators.Add(new KeyAuthenticator());
            o.Authenticators.Add(new OpenAuthenticator());
        });
        using var key = NodeKey.Generate();
        await using var client = await SsmpClient.ConnectAsync(new SsmpClientOptions
        {
            Port = broker.Port,
            Key = key,
            ReconnectDelayMin = TimeSpan.FromMilliseconds(10),
            ReconnectDelayMax = TimeSpan.FromMilliseconds(100),
        }, Token);
        await client.SubscribeAsync("news", cancellationToken: Token);
        var reconnected = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var sawReconnecting = false;
        client.StateChanged += s =>
        {
            if (s == SsmpClientState.Reconnecting)
                sawReconnecting = true;
            else if (s == SsmpClientState.Connected && sawReconnecting)
                reconnected.TrySetResult();
        };

        var held = broker.Broker.FindById(Encoding.ASCII.GetBytes(client.Id));
        Assert.NotNull(held);
        held.Abort(DisconnectReason.SocketError);
        await reconnected.Task.WaitAsync(RawPeer.ReadTimeout, Token);
        Assert.Equal(SsmpClientState.Connected, client.State);
        Assert.Equal(1, client.Reconnects);

        // The first credential is still remembered (its timestamp is inside the window), so re-sending it would
        // have been refused as a replay: the second login carried a new one.
        var snapshot = broker.Broker.Snapshot();
        Assert.Equal(2, snapshot.KeyLoginsAccepted);
        Assert.Equal(2, snapshot.KeyLoginCredentialsRemembered);
        Assert.Equal(0, snapshot.KeyLoginFailures.Values.Sum());

        await using var bob = await broker.LoginAsync("bob");
        await bob.SendAsync($"UCAST {client.Id} welcome back\nMCAST news subscribed again\n");
        await bob.ExpectLineAsync("200");
        await bob.ExpectLineAsync("200");
        Assert.Equal($"bob UCAST {client.Id} welcome back", (await NextEventAsync(client)).ToString());
        Assert.Equal("bob MCAST news subscribed again", (await NextEventAsync(client)).ToString());
    }

    [Fact]
    public async Task A_client_turned_away_by_a_full_replay_set_on_reconnect_retries_until_there_is_room()
    {
        // The broker's clock stands still at the real time; the client signs with the real clock.
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var broker = StartKeyBroker(time, o => o.KeyLoginReplayCapacity = 2);
        var brokerNow = time.GetUtcNow().ToUnixTimeMilliseconds();
        // One remembered credential that leaves the window a second from now on the broker's clock...
        using var filler = NodeKey.Generate();
        await using var fillerPeer = await LoginAsync(broker, filler.Address.ToString(), Credential(filler, brokerNow - 29_000), "200");
        // ...and the client's, which fills the set.
        using var key = NodeKey.Generate();
        await using var client = await SsmpClient.ConnectAsync(new SsmpClientOptions
        {
            Port = broker.Port,
            Key = key,
            ReconnectDelayMin = TimeSpan.FromMilliseconds(10),
            ReconnectDelayMax = TimeSpan.FromMilliseconds(50),
        }, Token);
        Assert.Equal(2, broker.Broker.Snapshot().KeyLoginCredentialsRemembered);
        var failed = false;
        client.StateChanged += s => failed |= s == SsmpClientState.Failed;

        broker.Broker.FindById(Encoding.ASCII.GetBytes(client.Id))!.Abort(DisconnectReason.SocketError);
        await broker.WaitUntilAsync(m => m.KeyLoginFailuresFor(KeyLoginFailure.ReplaySetFull) >= 2, "the client has been turned away twice");
        Assert.Equal(SsmpClientState.Reconnecting, client.State);

        time.Advance(TimeSpan.FromSeconds(2));
        await client.WaitConnectedAsync(Token).WaitAsync(RawPeer.ReadTimeout, Token);
        Assert.False(failed);
        Assert.Equal(1, client.Reconnects);
        var snapshot = broker.Broker.Snapshot();
        Assert.Equal(3, snapshot.KeyLoginsAccepted);
        Assert.Equal(snapshot.KeyLoginFailuresFor(KeyLoginFailure.ReplaySetFull), snapshot.KeyLoginFailures.Values.Sum());
    }

    [Fact]
    public void Client_options_with_a_key_refuse_another_id_scheme_or_credential()
    {
        using var key = NodeKey.Generate();
        new SsmpClientOptions { Key = key }.Validate();
        new SsmpClientOptions { Key = key, Id = key.Address.ToString(), Scheme = "key" }.Validate();
        Assert.Throws<ArgumentException>(() => new SsmpClientOptions { Key = key, Id = "alice" }.Validate());
        Assert.Throws<ArgumentException>(() => new SsmpClientOptions { Key = key, Scheme = "secret" }.Validate());
        Assert.Throws<ArgumentException>(() => new SsmpClientOptions { Key = key, Credential = new byte[] { 1 } }.Validate());
        Assert.Throws<ArgumentException>(() => new SsmpClientOptions { Key = key, ServerName = "a b" }.Validate());
        Assert.Throws<ArgumentException>(() => new SsmpClientOptions().Validate());
    }

    private static async Task<SsmpEvent> NextEventAsync(SsmpClient client)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Token);
        cts.CancelAfter(RawPeer.ReadTimeout);
        return await client.Events.ReadAsync(cts.Token);
    }
    [Fact]
    public async Task An_open_login_under_a_node_address_is_refused_and_the_node_is_never_evicted()
    {
        await using var broker = StartKeyBroker(configure: o => o.Authenticators.Add(new SecretAuthenticator("s3cret"u8)));
        using var key = NodeKey.Generate();
        var id = key.Address.ToString();
        await using var node = await LoginAsync(broker, id, Credential(key, Now), "200");
        await node.SendAsync("SUBSCRIBE mesh PRESENCE\n");
        await node.ExpectLineAsync("200");

        // Twenty-one impostors, as the attack was tried: by open, by the shared secret, and anonymously named.
        for (var i = 0; i < 21; i++)
        {
            await using var impostor = await broker.ConnectAsync();
            // Upper case too: readers of sender ids parse either case as the same node.
            var claimed = i % 3 == 2 ? id.ToUpperInvariant() : id;
            await impostor.SendAsync(i % 2 == 0 ? $"LOGIN {claimed} open\n" : $"LOGIN {claimed} secret s3cret\n");
            await impostor.ExpectLineAsync("401 key open secret");
            await impostor.ExpectClosedAsync();
        }

        // The node still holds its id: a UCAST reaches it, and it saw nobody come or go.
        await using var sender = await broker.LoginAsync("sender");
        await sender.SendAsync($"UCAST {id} receipt\n");
        await sender.ExpectLineAsync("200");
        await node.ExpectLineAsync("000 sender UCAST " + id + " receipt");
        await node.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task An_open_login_never_evicts_a_connection_that_proved_more_but_an_equal_proof_still_does()
    {
        await using var broker = StartKeyBroker(configure: o => o.Authenticators.Add(new SecretAuthenticator("s3cret"u8)));
        await using var member = await broker.ConnectAsync();
        await member.SendAsync("LOGIN hub secret s3cret\n");
        await member.ExpectLineAsync("200");

        await using var impostor = await broker.ConnectAsync();
        await impostor.SendAsync("LOGIN hub open\n");
        await impostor.ExpectLineAsync("401 key open secret");
        await impostor.ExpectClosedAsync();
        Assert.Equal(1, broker.Broker.ImpersonationsRefused);

        // The same proof again is the spec's duplicate login: the new connection takes the id, the old one is closed.
        await using var again = await broker.ConnectAsync();
        await again.SendAsync("LOGIN hub secret s3cret\n");
        await again.ExpectLineAsync("200");
        await member.ExpectClosedAsync();
    }
}
