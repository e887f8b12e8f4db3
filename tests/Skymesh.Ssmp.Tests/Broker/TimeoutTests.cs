using Microsoft.Extensions.Time.Testing;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>spec §7 login timeout and §8 keepalive, on virtual time.</summary>
public class TimeoutTests
{
    private static readonly TimeSpan LoginTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan PingInterval = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan PongTimeout = TimeSpan.FromSeconds(30);

    private static TestBroker StartBroker(FakeTimeProvider time, TimeSpan? pingInterval = null, TimeSpan? pongTimeout = null) => TestBroker.Start(o =>
    {
        o.TimeProvider = time;
        o.LoginTimeout = LoginTimeout;
        o.PingInterval = pingInterval ?? PingInterval;
        o.PongTimeout = pongTimeout ?? PongTimeout;
    });

    [Fact]
    public async Task A_connection_that_does_not_log_in_within_the_login_timeout_is_closed_without_a_400()
    {
        var time = new FakeTimeProvider();
        await using var broker = StartBroker(time);
        await using var silent = await broker.ConnectAsync();
        await using var partial = await broker.ConnectAsync();
        await partial.SendAsync("LOGIN ali");
        // The timeout counts from the accept, which no byte on the wire reveals.
        await broker.WaitUntilAsync(s => s.ConnectionsOpen == 2, "both connections are accepted");

        time.Advance(LoginTimeout);
        await silent.ExpectClosedAsync();
        await partial.ExpectClosedAsync();
        await broker.WaitUntilAsync(s => s.DisconnectsFor(DisconnectReason.LoginTimeout) == 2, "both are counted as login timeouts");
        Assert.Equal(0, broker.Broker.Snapshot().BadRequests);
    }

    [Fact]
    public async Task A_connection_that_logs_in_just_before_the_login_timeout_is_served_and_the_timeout_no_longer_applies()
    {
        var time = new FakeTimeProvider();
        await using var broker = StartBroker(time);
        await using var alice = await broker.ConnectAsync();
        await broker.WaitUntilAsync(s => s.ConnectionsOpen == 1, "the connection is accepted");

        time.Advance(LoginTimeout - TimeSpan.FromMilliseconds(1));
        await alice.SendAsync("LOGIN alice open\n");
        await alice.ExpectLineAsync("200");
        time.Advance(LoginTimeout);
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task After_the_ping_interval_of_silence_the_broker_sends_ping_from_dot()
    {
        var time = new FakeTimeProvider();
        await using var broker = StartBroker(time);
        await using var alice = await broker.LoginAsync("alice");
        time.Advance(PingInterval);
        await alice.ExpectLineAsync("000 . PING");
    }

    [Fact]
    public async Task A_pong_answering_the_ping_keeps_the_connection_and_restarts_the_idle_timer()
    {
        var time = new FakeTimeProvider();
        await using var broker = StartBroker(time);
        await using var alice = await broker.LoginAsync("alice");
        time.Advance(PingInterval);
        await alice.ExpectLineAsync("000 . PING");
        await alice.SendAsync("PONG\n");
        // PONG has no answer: wait until the broker has read it (LOGIN and PONG are its two requests).
        await broker.WaitUntilAsync(s => s.RequestsReceived == 2, "the broker has read the PONG");

        // Had the PONG not counted, this much silence would close the connection; instead it earns a new PING.
        time.Advance(PongTimeout);
        await alice.ExpectLineAsync("000 . PING");
        Assert.Equal(0, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.IdleTimeout));
    }

    [Fact]
    public async Task Silence_for_the_pong_timeout_after_the_ping_closes_the_connection()
    {
        var time = new FakeTimeProvider();
        await using var broker = StartBroker(time);
        await using var alice = await broker.LoginAsync("alice");
        time.Advance(PingInterval);
        await alice.ExpectLineAsync("000 . PING");
        time.Advance(PongTimeout);
        await alice.ExpectClosedAsync();
        await broker.WaitUntilAsync(s => s.DisconnectsFor(DisconnectReason.IdleTimeout) == 1, "the close is counted as an idle timeout");
    }

    [Fact]
    public async Task Any_traffic_resets_the_idle_timer()
    {
        var time = new FakeTimeProvider();
        await using var broker = StartBroker(time);
        await using var alice = await broker.LoginAsync("alice");
        time.Advance(PingInterval - TimeSpan.FromSeconds(1));
        await alice.SendAsync("UCAST nobody x\n");
        await alice.ExpectLineAsync("404");
        time.Advance(PingInterval - TimeSpan.FromSeconds(1));
        await alice.SendAsync("SUBSCRIBE t\n");
        await alice.ExpectLineAsync("200");
        // Two near-intervals have passed, but never one whole interval of silence: no PING came before these.
        time.Advance(PingInterval);
        await alice.ExpectLineAsync("000 . PING");
    }

    [Fact]
    public async Task An_idle_timeout_tells_watchers_that_the_member_left()
    {
        // A long interval and a short timeout, so that the watcher, who answers, is not pinged again meanwhile.
        var pingInterval = TimeSpan.FromSeconds(60);
        var pongTimeout = TimeSpan.FromSeconds(10);
        var time = new FakeTimeProvider();
        await using var broker = StartBroker(time, pingInterval, pongTimeout);
        await using var watcher = await broker.LoginAsync("watcher");
        await using var idle = await broker.LoginAsync("idle");
        await watcher.SendAsync("SUBSCRIBE t PRESENCE\n");
        await watcher.ExpectLineAsync("200");
        await idle.SendAsync("SUBSCRIBE t\nSUBSCRIBE u\n");
        await idle.ExpectLineAsync("200");
        await idle.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("000 idle SUBSCRIBE t");

        time.Advance(pingInterval);
        await watcher.ExpectLineAsync("000 . PING");
        await watcher.SendAsync("PONG\nPING\n");
        await watcher.ExpectLineAsync("000 . PONG");
        await idle.ExpectLineAsync("000 . PING");

        time.Advance(pongTimeout);
        await idle.ExpectClosedAsync();
        await watcher.ExpectLineAsync("000 idle UNSUBSCRIBE t");
        await watcher.ExpectNothingMoreAsync();
    }
}
