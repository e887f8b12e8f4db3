using System.Text;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>spec §8 limits: connections, subscriptions per connection, bytes queued towards one connection.</summary>
public class LimitTests
{
    [Fact]
    public async Task A_connection_beyond_the_connection_limit_is_closed_and_the_others_are_unaffected()
    {
        await using var broker = TestBroker.Start(o => o.MaxConnections = 2);
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await using var carol = await broker.ConnectAsync();
        await carol.ExpectClosedAsync();
        Assert.Equal(1, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.ConnectionLimit));

        await alice.SendAsync("UCAST bob still here\n");
        await alice.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice UCAST bob still here");

        // Once a connection has gone, there is room again.
        await alice.SendAsync("CLOSE\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectClosedAsync();
        await using var dave = await broker.LoginAsync("dave");
        await dave.SendAsync("UCAST bob hi\n");
        await dave.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 dave UCAST bob hi");
    }

    [Fact]
    public async Task Subscribing_beyond_the_subscription_limit_is_refused_with_429_and_the_connection_kept()
    {
        await using var broker = TestBroker.Start(o => o.MaxSubscriptionsPerConnection = 3);
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await alice.SendAsync("SUBSCRIBE a\nSUBSCRIBE b\nSUBSCRIBE c\n");
        for (var i = 0; i < 3; i++)
            await alice.ExpectLineAsync("200");
        await alice.SendAsync("SUBSCRIBE d\n");
        var refusal = await alice.ReadLineAsync();
        Assert.StartsWith("429", refusal, StringComparison.Ordinal);

        // Not a member of d; still a member of a; a repeated SUBSCRIBE is still a conflict.
        await bob.SendAsync("MCAST d one\nMCAST a two\n");
        await bob.ExpectLineAsync("200");
        await bob.ExpectLineAsync("200");
        await alice.ExpectLineAsync("000 bob MCAST a two");
        await alice.SendAsync("SUBSCRIBE a\n");
        await alice.ExpectLineAsync("409");

        // Leaving one topic makes room for another.
        await alice.SendAsync("UNSUBSCRIBE a\nSUBSCRIBE d\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("200");
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task A_subscriber_that_never_reads_is_disconnected_without_holding_up_the_publisher_or_other_subscribers()
    {
        // A batch stays well below the 64 KiB limit, so that a reader that keeps up is never near it, even
        // counting bytes the broker has written but not yet seen written.
        const int batch = 16;
        const int maxBatches = 20_000;
        await using var broker = TestBroker.Start(o => o.MaxQueuedBytesPerConnection = 64 * 1024);
        await using var slow = await broker.LoginAsync("slow", receiveBufferSize: 1024);
        await slow.SendAsync("SUBSCRIBE t\n");
        await slow.ExpectLineAsync("200");
        await using var reader = await broker.LoginAsync("reader");
        await reader.SendAsync("SUBSCRIBE t PRESENCE\n");
        await reader.ExpectLineAsync("200");
        await reader.ExpectLineAsync("000 slow SUBSCRIBE t");
        await using var publisher = await broker.LoginAsync("publisher");

        var padding = new string('p', 1000);
        var sent = 0;
        var received = 0;
        var slowLeft = false;
        for (var b = 0; b < maxBatches && broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.SlowConsumer) == 0; b++)
        {
            var requests = new StringBuilder();
            for (var i = 0; i < batch; i++)
                requests.Append($"MCAST t {sent + i} {padding}\n");
            await publisher.SendAsync(requests.ToString());
            sent += batch;
            for (var i = 0; i < batch; i++)
                await publisher.ExpectLineAsync("200");
            // Every event of the batch was queued to the reader before the publisher's 200s.
            while (received < sent)
                slowLeft |= ReceivedInOrder(await reader.ReadLineAsync(), ref received, padding);
        }
        Assert.Equal(1, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.SlowConsumer));
        // Logged once, however many events found it over its limit.
        Assert.Equal(1, broker.Logged(13));
        TestContext.Current.TestOutputHelper?.WriteLine($"slow was dropped after {sent} MCASTs of about 1 KiB each");

        // The reader hears that slow left, and keeps receiving what is published after.
        while (!slowLeft)
            slowLeft |= ReceivedInOrder(await reader.ReadLineAsync(), ref received, padding);
        await publisher.SendAsync($"MCAST t {sent} {padding}\n");
        sent++;
        await publisher.ExpectLineAsync("200");
        await reader.ExpectLineAsync($"000 publisher MCAST t {sent - 1} {padding}");
        await reader.ExpectNothingMoreAsync();

        // The slow subscriber finds its connection closed after what the socket had buffered.
        var buffered = await slow.DrainUntilClosedAsync();
        Assert.True(buffered.Length < (long)sent * (padding.Length + 40), $"slow read {buffered.Length} bytes of {sent} events");
    }

    [Fact]
    public async Task A_peer_that_sends_close_and_never_reads_its_answer_is_cut_off_once_silent_as_long_as_an_idle_peer()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        var pingInterval = TimeSpan.FromSeconds(30);
        var pongTimeout = TimeSpan.FromSeconds(30);
        await using var broker = TestBroker.Start(o =>
        {
            o.TimeProvider = time;
            o.PingInterval = pingInterval;
            o.PongTimeout = pongTimeout;
        });
        // A fixed 64 KiB window: small enough that the kernel cannot take the flood, large enough that TCP
        // moves data briskly once mallory reads (a tiny window stalls on zero-window probes).
        await using var mallory = await broker.LoginAsync("mallory", receiveBufferSize: 64 * 1024);
        await mallory.SendAsync("SUBSCRIBE t\n");
        await mallory.ExpectLineAsync("200");
        await using var publisher = await broker.LoginAsync("publisher");

        // 6 MB towards mallory: more than the kernel buffers between the broker and mallory can take (the
        // broker's send buffer grows to 4 MiB at most), less than the 8 MiB queue limit.
        var padding = new string('p', 1000);
        const int events = 6000;
        await publisher.PublishNumberedAsync("t", events, padding);
        Assert.Equal(0, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.SlowConsumer));

        // mallory says CLOSE; its 200 waits behind megabytes that mallory will not read.
        await mallory.SendAsync("CLOSE\n");
        await broker.WaitUntilAsync(s => s.DisconnectsFor(DisconnectReason.CloseRequested) == 1, "the broker has handled CLOSE");
        time.Advance(pingInterval + pongTimeout);

        // A broker that gave up has closed the socket without the rest of the queue; one still waiting would
        // now deliver all of it, then the 200.
        var received = await mallory.DrainUntilClosedAsync();
        var tail = Encoding.Latin1.GetString(received.AsSpan(Math.Max(0, received.Length - 4)));
        TestContext.Current.TestOutputHelper?.WriteLine($"mallory received {received.Length} bytes");
        Assert.NotEqual("200\n", tail);
        Assert.True(received.Length < events * (padding.Length + 18), $"mallory received {received.Length} bytes");
    }

    /// <summary>Checks one reader line: the next MCAST in sequence (true is never returned for it) or slow's UNSUBSCRIBE.</summary>
    private static bool ReceivedInOrder(string line, ref int received, string padding)
    {
        if (line == "000 slow UNSUBSCRIBE t")
            return true;
        Assert.Equal($"000 publisher MCAST t {received} {padding}", line);
        received++;
        return false;
    }
}
