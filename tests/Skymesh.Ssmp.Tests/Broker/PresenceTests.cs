using System.Text;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>spec §6 presence, §5 SUBSCRIBE/UNSUBSCRIBE/CLOSE/LOGIN events.</summary>
public class PresenceTests
{
    [Fact]
    public async Task Only_subscribers_that_asked_for_presence_hear_who_joins_and_leaves()
    {
        await using var broker = TestBroker.Start();
        await using var plain = await broker.LoginAsync("plain");
        await using var watcher = await broker.LoginAsync("watcher");
        await using var alice = await broker.LoginAsync("alice");
        await plain.SendAsync("SUBSCRIBE room\n");
        await plain.ExpectLineAsync("200");
        await watcher.SendAsync("SUBSCRIBE room PRESENCE\n");
        // The 200 first, then the snapshot of who is there (spec §5-6).
        await watcher.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("000 plain SUBSCRIBE room");

        await alice.SendAsync("SUBSCRIBE room\n");
        await alice.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE room");
        await alice.SendAsync("UNSUBSCRIBE room\n");
        await alice.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("000 alice UNSUBSCRIBE room");

        await plain.ExpectNothingMoreAsync();
        await watcher.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task A_presence_event_repeats_the_joiners_request_including_its_presence_flag()
    {
        await using var broker = TestBroker.Start();
        await using var watcher = await broker.LoginAsync("watcher");
        await using var alice = await broker.LoginAsync("alice");
        await watcher.SendAsync("SUBSCRIBE room PRESENCE\n");
        await watcher.ExpectLineAsync("200");
        await alice.SendAsync("SUBSCRIBE room PRESENCE\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("000 watcher SUBSCRIBE room PRESENCE");
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE room PRESENCE");
    }

    [Fact]
    public async Task Nobody_gets_presence_events_about_itself()
    {
        await using var broker = TestBroker.Start();
        await using var watcher = await broker.LoginAsync("watcher");
        await watcher.SendAsync("SUBSCRIBE room PRESENCE\n");
        await watcher.ExpectLineAsync("200");
        await watcher.SendAsync("UNSUBSCRIBE room\n");
        await watcher.ExpectLineAsync("200");
        await watcher.SendAsync("SUBSCRIBE room PRESENCE\n");
        await watcher.ExpectLineAsync("200");
        await watcher.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Subscribing_with_presence_reports_every_current_member_once()
    {
        await using var broker = TestBroker.Start();
        await using var alice = await broker.LoginAsync("alice");
        await using var bob = await broker.LoginAsync("bob");
        await using var carol = await broker.LoginAsync("carol");
        await alice.SendAsync("SUBSCRIBE room\n");
        await alice.ExpectLineAsync("200");
        await bob.SendAsync("SUBSCRIBE room PRESENCE\n");
        await bob.ExpectLineAsync("200");
        await bob.ExpectLineAsync("000 alice SUBSCRIBE room");
        await carol.SendAsync("SUBSCRIBE room PRESENCE\n");
        await carol.ExpectLineAsync("200");
        await carol.ExpectLinesInAnyOrderAsync("000 alice SUBSCRIBE room", "000 bob SUBSCRIBE room PRESENCE");
        await bob.ExpectLineAsync("000 carol SUBSCRIBE room PRESENCE");
        await carol.ExpectNothingMoreAsync();
        await bob.ExpectNothingMoreAsync();
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Presence_is_per_topic()
    {
        await using var broker = TestBroker.Start();
        await using var watcher = await broker.LoginAsync("watcher");
        await using var alice = await broker.LoginAsync("alice");
        await watcher.SendAsync("SUBSCRIBE a PRESENCE\nSUBSCRIBE b\n");
        await watcher.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("200");
        await alice.SendAsync("SUBSCRIBE b\nSUBSCRIBE a\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE a");
        await watcher.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Close_tells_watchers_of_every_topic_the_leaver_had()
    {
        await using var broker = TestBroker.Start();
        await using var watcher = await broker.LoginAsync("watcher");
        await watcher.SendAsync("SUBSCRIBE a PRESENCE\nSUBSCRIBE b PRESENCE\nSUBSCRIBE c PRESENCE\n");
        for (var i = 0; i < 3; i++)
            await watcher.ExpectLineAsync("200");
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("SUBSCRIBE a\nSUBSCRIBE b\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE a");
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE b");

        await alice.SendAsync("CLOSE\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectClosedAsync();
        await watcher.ExpectLinesInAnyOrderAsync("000 alice UNSUBSCRIBE a", "000 alice UNSUBSCRIBE b");
        await watcher.ExpectNothingMoreAsync();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_dropped_socket_tells_watchers_that_the_member_left(bool reset)
    {
        await using var broker = TestBroker.Start();
        await using var watcher = await broker.LoginAsync("watcher");
        await watcher.SendAsync("SUBSCRIBE a PRESENCE\nSUBSCRIBE b PRESENCE\n");
        await watcher.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("200");
        var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("SUBSCRIBE a\nSUBSCRIBE b\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE a");
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE b");

        if (reset)
            alice.Abort();
        else
            await alice.DisposeAsync();
        await watcher.ExpectLinesInAnyOrderAsync("000 alice UNSUBSCRIBE a", "000 alice UNSUBSCRIBE b");
        await watcher.ExpectNothingMoreAsync();

        // And alice's id is free again.
        await watcher.SendAsync("UCAST alice hi\n");
        await watcher.ExpectLineAsync("404");
    }

    [Fact]
    public async Task Leaving_by_unsubscribe_then_close_reports_each_membership_end_once()
    {
        await using var broker = TestBroker.Start();
        await using var watcher = await broker.LoginAsync("watcher");
        await watcher.SendAsync("SUBSCRIBE a PRESENCE\n");
        await watcher.ExpectLineAsync("200");
        await using var alice = await broker.LoginAsync("alice");
        await alice.SendAsync("SUBSCRIBE a\nUNSUBSCRIBE a\nCLOSE\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("200");
        await alice.ExpectClosedAsync();
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE a");
        await watcher.ExpectLineAsync("000 alice UNSUBSCRIBE a");
        await watcher.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task A_duplicate_login_closes_the_earlier_connection_and_ucast_reaches_the_new_one()
    {
        await using var broker = TestBroker.Start();
        await using var bob = await broker.LoginAsync("bob");
        await using var first = await broker.LoginAsync("alice");
        await using var second = await broker.LoginAsync("alice");
        await first.ExpectClosedAsync();
        await bob.SendAsync("UCAST alice for the new one\n");
        await bob.ExpectLineAsync("200");
        await second.ExpectLineAsync("000 bob UCAST alice for the new one");
        await second.ExpectNothingMoreAsync();
        await broker.WaitUntilAsync(s => s.DisconnectsFor(DisconnectReason.Evicted) == 1, "the eviction is counted");
    }

    [Fact]
    public async Task An_evicted_connection_leaves_its_topics_with_presence_events()
    {
        await using var broker = TestBroker.Start();
        await using var watcher = await broker.LoginAsync("watcher");
        await watcher.SendAsync("SUBSCRIBE a PRESENCE\n");
        await watcher.ExpectLineAsync("200");
        await using var first = await broker.LoginAsync("alice");
        await first.SendAsync("SUBSCRIBE a\n");
        await first.ExpectLineAsync("200");
        await watcher.ExpectLineAsync("000 alice SUBSCRIBE a");

        await using var second = await broker.LoginAsync("alice");
        await first.ExpectClosedAsync();
        await watcher.ExpectLineAsync("000 alice UNSUBSCRIBE a");

        // The new connection holds no subscription of the old one: MCAST to a does not reach it.
        await watcher.SendAsync("MCAST a hello\n");
        await watcher.ExpectLineAsync("200");
        await second.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task When_the_new_connection_subscribes_at_once_watchers_see_the_old_membership_end_before_the_new_one_starts()
    {
        await using var broker = TestBroker.Start();
        await using var watcher = await broker.LoginAsync("watcher");
        await watcher.SendAsync("SUBSCRIBE a PRESENCE\n");
        await watcher.ExpectLineAsync("200");
        for (var round = 0; round < 20; round++)
        {
            await using var first = await broker.ConnectAsync();
            await first.SendAsync("LOGIN alice open\nSUBSCRIBE a\n");
            await first.ExpectLineAsync("200");
            await first.ExpectLineAsync("200");
            await watcher.ExpectLineAsync("000 alice SUBSCRIBE a");

            // LOGIN and SUBSCRIBE in one write: the eviction's UNSUBSCRIBE must still come first.
            var second = await broker.ConnectAsync();
            await second.SendAsync("LOGIN alice open\nSUBSCRIBE a\n");
            await second.ExpectLineAsync("200");
            await second.ExpectLineAsync("200");
            await watcher.ExpectLineAsync("000 alice UNSUBSCRIBE a");
            await watcher.ExpectLineAsync("000 alice SUBSCRIBE a");
            await second.SendAsync("CLOSE\n");
            await second.ExpectLineAsync("200");
            await second.ExpectClosedAsync();
            await second.DisposeAsync();
            await watcher.ExpectLineAsync("000 alice UNSUBSCRIBE a");
        }
        await watcher.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task A_connection_evicted_while_its_pipelined_subscribes_are_being_handled_does_not_stay_a_member()
    {
        const int topics = 2000;
        await using var broker = TestBroker.Start();
        var burst = new StringBuilder();
        for (var i = 0; i < topics; i++)
            burst.Append($"SUBSCRIBE t{i}\n");
        for (var round = 0; round < 5; round++)
        {
            await using var first = await broker.LoginAsync("alice");
            var sending = first.SendAsync(burst.ToString());
            await using var second = await broker.LoginAsync("alice");
            await first.DrainUntilClosedAsync();
            try
            {
                await sending;
            }
            catch (IOException)
            {
                // The broker closed the evicted connection while the burst was still being written.
            }
            await second.SendAsync("CLOSE\n");
            await second.ExpectLineAsync("200");
            await second.ExpectClosedAsync();
        }

        // Nobody is subscribed any more: a watcher joining every topic must get no snapshot at all.
        await broker.WaitUntilAsync(s => s.ConnectionsOpen == 0, "every connection is gone");
        await using var carol = await broker.LoginAsync("carol");
        var subscribe = new StringBuilder();
        for (var i = 0; i < topics; i++)
            subscribe.Append($"SUBSCRIBE t{i} PRESENCE\n");
        await carol.SendAsync(subscribe.ToString());
        for (var i = 0; i < topics; i++)
            await carol.ExpectLineAsync("200");
        await carol.ExpectNothingMoreAsync();
    }

    /// <summary>
    /// Many members join and leave one topic at once while watchers join at different moments. For every
    /// member each watcher must see SUBSCRIBE and UNSUBSCRIBE alternate, starting with SUBSCRIBE, and must end
    /// with the real membership.
    /// </summary>
    [Fact]
    public async Task Under_concurrent_joins_and_leaves_every_watcher_sees_each_membership_start_once_and_end_after_it_starts()
    {
        const int members = 24;
        const int rounds = 40;
        await using var broker = TestBroker.Start();
        var watchers = new List<RawPeer>();
        var early = await broker.LoginAsync("watcher0");
        await early.SendAsync("SUBSCRIBE room PRESENCE\n");
        await early.ExpectLineAsync("200");
        watchers.Add(early);

        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var halfway = 0;
        var expectedFinal = new System.Collections.Concurrent.ConcurrentDictionary<string, bool>();
        var churn = Enumerable.Range(0, members).Select(m => Task.Run(async () =>
        {
            var id = $"m{m}";
            var peer = await broker.LoginAsync(id);
            for (var r = 0; r < rounds; r++)
            {
                // Pipeline a join and a leave, sometimes with presence, so the broker sees them back to back.
                await peer.SendAsync(r % 3 == 0 ? "SUBSCRIBE room PRESENCE\nUNSUBSCRIBE room\n" : "SUBSCRIBE room\nUNSUBSCRIBE room\n");
                await ReadResponsesAsync(peer, 2);
                if (r == rounds / 2 && Interlocked.Increment(ref halfway) == members / 2)
                    started.TrySetResult();
            }
            // End in one of four ways: still a member, left by UNSUBSCRIBE, by CLOSE, or by dropping the socket.
            switch (m % 4)
            {
                case 0:
                    await peer.SendAsync("SUBSCRIBE room\n");
                    await ReadResponsesAsync(peer, 1);
                    expectedFinal[id] = true;
                    return peer;
                case 1:
                    await peer.SendAsync("SUBSCRIBE room\nUNSUBSCRIBE room\n");
                    await ReadResponsesAsync(peer, 2);
                    return peer;
                case 2:
                    await peer.SendAsync("SUBSCRIBE room\nCLOSE\n");
                    await ReadResponsesAsync(peer, 2);
                    await peer.ExpectClosedAsync();
                    return peer;
                default:
                    await peer.SendAsync("SUBSCRIBE room\n");
                    await ReadResponsesAsync(peer, 1);
                    peer.Abort();
                    return peer;
            }
        })).ToList();

        // Two more watchers join while the churn is under way: their snapshots race with live events.
        await started.Task.WaitAsync(RawPeer.ReadTimeout, TestContext.Current.CancellationToken);
        for (var w = 1; w <= 2; w++)
        {
            var late = await broker.LoginAsync($"watcher{w}");
            await late.SendAsync("SUBSCRIBE room PRESENCE\n");
            watchers.Add(late);
        }

        var peers = await Task.WhenAll(churn);
        try
        {
            // Members that dropped their socket leave when the broker notices; it releases a connection only
            // after queueing its UNSUBSCRIBE events. No byte on any wire tells when that is, so wait for the count.
            var stillOpen = watchers.Count + members / 2;
            await broker.WaitUntilAsync(s => s.ConnectionsOpen == stillOpen, $"{stillOpen} connections are open");
            for (var w = 0; w < watchers.Count; w++)
            {
                // Watchers are members too; each sees the others, never itself.
                var final = expectedFinal.Keys.Concat(Enumerable.Range(0, watchers.Count).Where(o => o != w).Select(o => $"watcher{o}")).ToHashSet();
                await CheckWatcherAsync(watchers[w], final, responseSeen: w == 0);
            }
        }
        finally
        {
            foreach (var p in peers.Concat(watchers))
                await p.DisposeAsync();
        }
    }

    private static async Task ReadResponsesAsync(RawPeer peer, int count)
    {
        // Members that asked for presence also get events; only the responses are counted here.
        var got = 0;
        while (got < count)
        {
            var line = await peer.ReadLineAsync();
            if (line.StartsWith("000 ", StringComparison.Ordinal))
                continue;
            Assert.Equal("200", line);
            got++;
        }
    }

    /// <summary>Reads everything queued to the watcher, checking the order rules, and compares its view with <paramref name="final"/>.</summary>
    private static async Task CheckWatcherAsync(RawPeer watcher, HashSet<string> final, bool responseSeen)
    {
        var member = new Dictionary<string, bool>(StringComparer.Ordinal);
        var log = new StringBuilder();
        await watcher.SendAsync("PING\n");
        foreach (var line in await watcher.ReadLinesUntilAsync("000 . PONG"))
        {
            log.AppendLine(line);
            if (line == "200")
            {
                Assert.False(responseSeen, "a second response");
                responseSeen = true;
                continue;
            }
            var parts = line.Split(' ');
            Assert.True(parts.Length >= 4 && parts[0] == "000" && parts[3] == "room", $"unexpected line {line}");
            var who = parts[1];
            var isMember = member.TryGetValue(who, out var m) && m;
            switch (parts[2])
            {
                case "SUBSCRIBE":
                    Assert.False(isMember, $"two SUBSCRIBEs in a row for {who}:\n{log}");
                    member[who] = true;
                    break;
                case "UNSUBSCRIBE":
                    Assert.True(isMember, $"UNSUBSCRIBE before SUBSCRIBE for {who}:\n{log}");
                    member[who] = false;
                    break;
                default:
                    Assert.Fail($"unexpected line {line}");
                    break;
            }
        }
        Assert.True(responseSeen, "the watcher's SUBSCRIBE was not answered");
        var view = member.Where(kv => kv.Value).Select(kv => kv.Key).Order(StringComparer.Ordinal);
        Assert.Equal(final.Order(StringComparer.Ordinal), view);
    }
}
