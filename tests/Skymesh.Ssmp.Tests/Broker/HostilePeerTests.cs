using System.Text;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>
/// spec §9: nothing a peer sends may crash the broker, grow its memory without bound, or affect other
/// clients. Each test keeps a well-behaved pair talking through the broker while the hostile peers act.
/// </summary>
public class HostilePeerTests
{
    /// <summary>Two clients that prove the broker still serves: a UCAST each way, checked byte for byte.</summary>
    private sealed class WellBehavedPair : IAsyncDisposable
    {
        private RawPeer _alice = null!;
        private RawPeer _bob = null!;
        private int _round;

        public static async Task<WellBehavedPair> StartAsync(TestBroker broker) =>
            new() { _alice = await broker.LoginAsync("alice"), _bob = await broker.LoginAsync("bob") };

        public async Task RoundTripAsync()
        {
            var n = _round++;
            await _alice.SendAsync($"UCAST bob ping {n}\n");
            await _alice.ExpectLineAsync("200");
            await _bob.ExpectLineAsync($"000 alice UCAST bob ping {n}");
            await _bob.SendAsync($"UCAST alice pong {n}\n");
            await _bob.ExpectLineAsync("200");
            await _alice.ExpectLineAsync($"000 bob UCAST alice pong {n}");
        }

        /// <summary>Round trips until <paramref name="until"/> completes; returns how many were made.</summary>
        public async Task<int> KeepTalkingAsync(Task until)
        {
            var rounds = 0;
            do
            {
                await RoundTripAsync();
                rounds++;
            }
            while (!until.IsCompleted);
            await until;
            return rounds;
        }

        public async ValueTask DisposeAsync()
        {
            await _alice.ExpectNothingMoreAsync();
            await _bob.ExpectNothingMoreAsync();
            await _alice.DisposeAsync();
            await _bob.DisposeAsync();
        }
    }

    [Fact]
    public async Task Random_garbage_gets_connections_closed_and_everyone_else_served()
    {
        await using var broker = TestBroker.Start();
        await using var pair = await WellBehavedPair.StartAsync(broker);
        var random = new Random(20150901);
        for (var i = 0; i < 100; i++)
        {
            var garbage = new byte[random.Next(1, 8192)];
            random.NextBytes(garbage);
            await using var mallory = i % 2 == 0 ? await broker.LoginAsync($"mallory{i}") : await broker.ConnectAsync();
            try
            {
                await mallory.SendAsync(garbage);
            }
            catch (IOException)
            {
                // The broker may close while the garbage is still being written.
            }
            // Garbage can end inside something that still looks like a request; ending the stream settles it.
            try
            {
                mallory.ShutdownSend();
            }
            catch (System.Net.Sockets.SocketException)
            {
            }
            var answer = Encoding.Latin1.GetString(await mallory.DrainUntilClosedAsync());
            // Whatever it got are whole lines: responses, or the PONG of a PING found in the garbage.
            Assert.True(answer.Length == 0 || answer.EndsWith('\n'), $"a partial line: {answer}");
            foreach (var line in answer.Split('\n')[..^1])
                Assert.Matches(@"^([1-9][0-9]{2}( .*)?|000 \. PONG)$", line);
            await pair.RoundTripAsync();
        }
    }

    [Theory]
    [InlineData("UCAST bob ", 'x')]
    [InlineData("", 'A')]
    [InlineData("SUBSCRIBE ", 'a')]
    [InlineData("LOGIN ", 'a')]
    [InlineData("FOO a ", 'x')]
    public async Task A_line_that_passes_its_limit_without_lf_is_answered_400_and_closed(string start, char filler)
    {
        await using var broker = TestBroker.Start();
        await using var pair = await WellBehavedPair.StartAsync(broker);
        await using var mallory = start.StartsWith("LOGIN", StringComparison.Ordinal)
            ? await broker.ConnectAsync()
            : await broker.LoginAsync("mallory");
        // 1200 bytes pass every field limit (verb 16, id 64, payload 1024); nothing more is sent, so the
        // broker's answer is not lost to a reset.
        await mallory.SendAsync(start + new string(filler, 1200));
        await mallory.ExpectLineAsync("400");
        await mallory.ExpectClosedAsync();
        await pair.RoundTripAsync();
    }

    [Fact]
    public async Task An_endless_line_is_cut_off_and_does_not_hold_up_anyone()
    {
        await using var broker = TestBroker.Start();
        await using var pair = await WellBehavedPair.StartAsync(broker);
        await using var mallory = await broker.LoginAsync("mallory");
        var chunk = Encoding.ASCII.GetBytes(new string('x', 64 * 1024));
        await mallory.SendAsync("UCAST bob ");
        var sent = 0L;
        try
        {
            // Up to 256 MiB: far beyond any buffer the broker should hold for one line.
            for (var i = 0; i < 4096; i++)
            {
                await mallory.SendAsync(chunk);
                sent += chunk.Length;
            }
            Assert.Fail($"The broker was still reading the line after {sent} bytes");
        }
        catch (IOException)
        {
            // The broker closed the connection.
        }
        Assert.Equal(1, broker.Broker.Snapshot().BadRequests);
        await pair.RoundTripAsync();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_truncated_binary_payload_followed_by_a_close_delivers_nothing(bool reset)
    {
        await using var broker = TestBroker.Start();
        await using var pair = await WellBehavedPair.StartAsync(broker);
        await using var carol = await broker.LoginAsync("carol");
        var mallory = await broker.LoginAsync("mallory");
        await mallory.SendAsync("UCAST carol \u0003\u00FF" + new string('\n', 500));
        await mallory.SendAsync("MCAST t \u0000\u0009short");
        if (reset)
            mallory.Abort();
        else
            await mallory.DisposeAsync();
        await pair.RoundTripAsync();
        await broker.WaitUntilAsync(s => s.ConnectionsOpen == 3, "mallory's connection is gone");
        await carol.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task A_million_subscription_attempts_on_one_connection_stop_at_the_limit_and_the_broker_keeps_serving()
    {
        const int attempts = 1_000_000;
        const int limit = 1000;
        const int perWrite = 20_000;
        await using var broker = TestBroker.Start(o => o.MaxSubscriptionsPerConnection = limit);
        await using var pair = await WellBehavedPair.StartAsync(broker);
        await using var mallory = await broker.LoginAsync("mallory");

        long ok = 0, refused = 0, other = 0;
        // Like any pipelining client, stay a bounded number of writes ahead of the answers read; otherwise the
        // answers pile up and the broker rightly drops mallory as a slow consumer.
        using var window = new SemaphoreSlim(5);
        var reading = mallory.ReadManyLinesAsync(attempts, line =>
        {
            var span = line.Span;
            if (span.SequenceEqual("200"u8))
                ok++;
            else if (span.StartsWith("429"u8))
                refused++;
            else
                other++;
            if ((ok + refused + other) % perWrite == 0)
                window.Release();
        });
        var writing = Task.Run(async () =>
        {
            var batch = new StringBuilder();
            for (var i = 0; i < attempts; i += perWrite)
            {
                await window.WaitAsync(RawPeer.ReadTimeout);
                batch.Clear();
                for (var k = i; k < i + perWrite; k++)
                    batch.Append("SUBSCRIBE t").Append(k).Append('\n');
                await mallory.SendAsync(batch.ToString());
            }
        }, TestContext.Current.CancellationToken);
        var rounds = await pair.KeepTalkingAsync(Task.WhenAll(writing, reading));

        Assert.Equal((limit, attempts - limit, 0L), (ok, refused, other));
        Assert.True(rounds >= 1);
        Assert.Equal(limit, broker.Broker.Snapshot().Topics);
        await mallory.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Many_connections_dropping_mid_message_deliver_only_whole_messages_and_leave_nothing_behind()
    {
        const int droppers = 300;
        await using var broker = TestBroker.Start();
        await using var pair = await WellBehavedPair.StartAsync(broker);
        await using var sink = await broker.LoginAsync("sink");
        await sink.SendAsync("SUBSCRIBE drop\n");
        await sink.ExpectLineAsync("200");

        var dropping = Task.Run(async () =>
        {
            for (var i = 0; i < droppers; i += 10)
            {
                var wave = Enumerable.Range(i, 10).Select(async d =>
                {
                    var peer = await broker.ConnectAsync();
                    var cut = d % 5;
                    var script = $"LOGIN d{d} open\nSUBSCRIBE drop PRESENCE\nUCAST sink whole {d}\nMCAST drop whole {d}\nUCAST sink \u0000\u0010par";
                    // Cut the script at a different place each time: inside LOGIN, after it, inside the last UCAST.
                    var upTo = cut switch
                    {
                        0 => 7,
                        1 => script.IndexOf('\n', StringComparison.Ordinal) + 1,
                        _ => script.Length - cut,
                    };
                    try
                    {
                        await peer.SendAsync(script[..upTo]);
                    }
                    catch (IOException)
                    {
                    }
                    if (d % 2 == 0)
                        peer.Abort();
                    else
                        await peer.DisposeAsync();
                });
                await Task.WhenAll(wave);
            }
        }, TestContext.Current.CancellationToken);
        var rounds = await pair.KeepTalkingAsync(dropping);
        Assert.True(rounds >= 1);

        // Every dropper is gone (and has left the topic) before the sink checks what it got.
        await broker.WaitUntilAsync(s => s.ConnectionsOpen == 3, "only the pair and the sink are connected");
        await sink.SendAsync("PING\n");
        foreach (var line in await sink.ReadLinesUntilAsync("000 . PONG"))
        {
            // Only whole messages, each from the dropper it names: no half UCAST, no half binary payload.
            var match = System.Text.RegularExpressions.Regex.Match(line, "^000 d([0-9]+) (UCAST sink|MCAST drop) whole ([0-9]+)$");
            Assert.True(match.Success, $"unexpected line {line}");
            Assert.Equal(match.Groups[1].Value, match.Groups[3].Value);
        }
        Assert.Equal(1, broker.Broker.Snapshot().Topics);
    }
}
