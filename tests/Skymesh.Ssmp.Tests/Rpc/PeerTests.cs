using System.Net;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Ssmp.Tests.Rpc;

public sealed class PeerTests : IAsyncLifetime
{
    private readonly SsmpBroker _broker = new(new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) });
    private readonly List<IAsyncDisposable> _owned = [];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public ValueTask InitializeAsync()
    {
        _broker.Start();
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var d in _owned)
            await d.DisposeAsync();
        await _broker.DisposeAsync();
    }

    private async Task<SsmpPeer> Peer(string id, TimeProvider? time = null, SsmpPeerOptions? options = null)
    {
        var peer = await SsmpPeer.ConnectAsync(new SsmpClientOptions
        {
            Port = _broker.LocalEndPoint.Port,
            Id = id,
            TimeProvider = time ?? TimeProvider.System,
        }, options, Ct);
        _owned.Add(peer);
        return peer;
    }

    private static byte[] Bytes(int length)
    {
        var b = new byte[length];
        new Random(length).NextBytes(b);
        return b;
    }

    [Fact]
    public async Task A_call_returns_what_the_remote_handler_answers()
    {
        var server = await Peer("server");
        server.Handle("upper", (req, _) => ValueTask.FromResult<ReadOnlyMemory<byte>>(Encoding.UTF8.GetBytes(req.From + ":" + Encoding.UTF8.GetString(req.Body.Span).ToUpperInvariant())));
        var client = await Peer("client");
        var answer = await client.CallAsync("server", "upper", Encoding.UTF8.GetBytes("hello mesh"), cancellationToken: Ct);
        Assert.Equal("client:HELLO MESH", Encoding.UTF8.GetString(answer.Span));
    }

    [Fact]
    public async Task Requests_and_answers_larger_than_one_payload_are_split_and_rejoined()
    {
        var server = await Peer("server");
        server.Handle("reverse", (req, _) => ValueTask.FromResult<ReadOnlyMemory<byte>>(req.Body.ToArray().Reverse().ToArray()));
        var client = await Peer("client");
        var body = Bytes(300_000);
        var answer = await client.CallAsync("server", "reverse", body, cancellationToken: Ct);
        Assert.Equal(body.Reverse().ToArray(), answer.ToArray());
    }

    [Fact]
    public async Task Many_concurrent_calls_each_get_their_own_answer()
    {
        var server = await Peer("server");
        server.Handle("square", (req, _) =>
        {
            var n = BitConverter.ToInt32(req.Body.Span);
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(BitConverter.GetBytes((long)n * n));
        });
        var client = await Peer("client");
        var calls = Enumerable.Range(0, 500).Select(async i =>
        {
            var r = await client.CallAsync("server", "square", BitConverter.GetBytes(i), cancellationToken: Ct);
            return (i, BitConverter.ToInt64(r.Span));
        });
        foreach (var (i, square) in await Task.WhenAll(calls))
            Assert.Equal((long)i * i, square);
    }

    [Fact]
    public async Task Calling_a_method_nobody_registered_fails_with_404()
    {
        await Peer("server");
        var client = await Peer("client");
        var e = await Assert.ThrowsAsync<SsmpRpcException>(() => client.CallAsync("server", "nope", new byte[] { 1 }, cancellationToken: Ct));
        Assert.Equal(SsmpRpcException.NoSuchMethod, e.Status);
        Assert.Contains("nope", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_handler_that_throws_gives_the_caller_a_500_with_the_reason()
    {
        var server = await Peer("server");
        server.Handle("fail", (_, _) => throw new InvalidOperationException("disk on fire"));
        server.Handle("refuse", (_, _) => throw new SsmpRpcException(403, "not yours"));
        var client = await Peer("client");
        var e = await Assert.ThrowsAsync<SsmpRpcException>(() => client.CallAsync("server", "fail", new byte[] { 1 }, cancellationToken: Ct));
        Assert.Equal(SsmpRpcException.HandlerFailed, e.Status);
        Assert.Contains("disk on fire", e.Message, StringComparison.Ordinal);
        var refused = await Assert.ThrowsAsync<SsmpRpcException>(() => client.CallAsync("server", "refuse", new byte[] { 1 }, cancellationToken: Ct));
        Assert.Equal(403, refused.Status);
    }

    [Fact]
    public async Task Calling_a_peer_that_is_not_connected_fails_at_once_with_404()
    {
        var client = await Peer("client");
        var e = await Assert.ThrowsAsync<SsmpException>(() => client.CallAsync("ghost", "anything", new byte[] { 1 }, cancellationToken: Ct));
        Assert.Equal(404, e.Code);
    }

    [Fact]
    public async Task A_retried_call_runs_the_handler_once_and_gets_its_answer()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var server = await Peer("server");
        var runs = 0;
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Handle("slow", async (_, _) =>
        {
            Interlocked.Increment(ref runs);
            started.TrySetResult();
            await release.Task;
            return Encoding.UTF8.GetBytes("done");
        });
        var client = await Peer("client", time);
        var call = client.CallAsync("server", "slow", new byte[] { 1 }, new SsmpCallOptions { AttemptTimeout = TimeSpan.FromSeconds(1), Attempts = 3 }, Ct);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        // The first attempt times out: the same request goes again, and the server must not run it twice.
        time.Advance(TimeSpan.FromSeconds(1));
        release.SetResult();
        var answer = await call.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        Assert.Equal("done", Encoding.UTF8.GetString(answer.Span));
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task A_call_nobody_answers_times_out_after_its_attempts()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        // A plain client that takes the request and never answers.
        var silent = await SsmpClient.ConnectAsync(new SsmpClientOptions { Port = _broker.LocalEndPoint.Port, Id = "silent" }, Ct);
        _owned.Add(silent);
        var client = await Peer("client", time);
        var call = client.CallAsync("silent", "never", new byte[] { 1 }, new SsmpCallOptions { AttemptTimeout = TimeSpan.FromSeconds(1), Attempts = 2 }, Ct);
        var first = await silent.Events.ReadAsync(Ct);
        Assert.False(call.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(1));
        var second = await silent.Events.ReadAsync(Ct);
        // The retry is the same request: same correlation id and method after the fragment header.
        Assert.Equal(first.Payload.Span[SsmpChunking.HeaderLength..].ToArray(), second.Payload.Span[SsmpChunking.HeaderLength..].ToArray());
        time.Advance(TimeSpan.FromSeconds(1));
        var e = await Assert.ThrowsAsync<SsmpRpcException>(() => call.WaitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.Equal(SsmpRpcException.Timeout, e.Status);
    }

    [Fact]
    public async Task A_request_delivered_twice_is_answered_twice_from_one_run()
    {
        var server = await Peer("server");
        var runs = 0;
        server.Handle("count", (_, _) => ValueTask.FromResult<ReadOnlyMemory<byte>>(BitConverter.GetBytes(Interlocked.Increment(ref runs))));
        // A raw client sends the same request fragment twice, as a retry after a lost answer would.
        var raw = await SsmpClient.ConnectAsync(new SsmpClientOptions { Port = _broker.LocalEndPoint.Port, Id = "raw" }, Ct);
        _owned.Add(raw);
        var request = new byte[] { (byte)'Q', 0, 0, 0, 0, 0, 0, 0, 42, 5, (byte)'c', (byte)'o', (byte)'u', (byte)'n', (byte)'t' };
        await raw.UcastAsync("server", SsmpChunking.Fragment(1, request, 0), Ct);
        var first = await raw.Events.ReadAsync(Ct);
        await raw.UcastAsync("server", SsmpChunking.Fragment(2, request, 0), Ct);
        var second = await raw.Events.ReadAsync(Ct);
        Assert.Equal(first.Payload.Span[SsmpChunking.HeaderLength..].ToArray(), second.Payload.Span[SsmpChunking.HeaderLength..].ToArray());
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task Whole_messages_of_any_size_arrive_in_order_and_other_events_pass_through()
    {
        var receiver = await Peer("receiver");
        var sender = await Peer("sender");
        var sizes = new[] { 0, 1, 1015, 1016, 50_000 };
        foreach (var size in sizes)
            await sender.SendAsync("receiver", Bytes(size), Ct);
        foreach (var size in sizes)
        {
            var m = await receiver.Messages.ReadAsync(Ct);
            Assert.Equal("sender", m.From);
            Assert.Equal(Bytes(size), m.Body.ToArray());
        }
        await sender.Client.UcastAsync("receiver", "plain text", Ct);
        var plain = await receiver.OtherEvents.ReadAsync(Ct);
        Assert.Equal("plain text", plain.PayloadText);
    }

    [Fact]
    public async Task What_handlers_and_readers_keep_stays_theirs_while_later_requests_fill_the_read_buffer()
    {
        // The peer reads one-fragment messages where they lie in the connection's buffer; a handler that answers after
        // an await, a message left in the queue and an event passed on must each still hold their own bytes.
        const int Count = 200;
        var server = await Peer("server");
        var started = 0;
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Handle("hold", async (req, _) =>
        {
            if (Interlocked.Increment(ref started) == Count)
                all.SetResult();
            await all.Task;
            return req.Body.ToArray().Reverse().ToArray();
        });
        var client = await Peer("client");
        var calls = Enumerable.Range(0, Count).Select(async i =>
        {
            var body = Bytes(100 + i);
            var answer = await client.CallAsync("server", "hold", body, cancellationToken: Ct);
            return (body, answer: answer.ToArray());
        });
        foreach (var (body, answer) in await Task.WhenAll(calls))
            Assert.Equal(body.Reverse().ToArray(), answer);

        for (var i = 0; i < Count; i++)
            await client.SendAsync("server", Bytes(300 + i), Ct);
        for (var i = 0; i < Count; i++)
            await client.Client.UcastAsync("server", $"plain {i} {new string('x', i)}", Ct);
        for (var i = 0; i < Count; i++)
            Assert.Equal(Bytes(300 + i), (await server.Messages.ReadAsync(Ct)).Body.ToArray());
        for (var i = 0; i < Count; i++)
            Assert.Equal($"plain {i} {new string('x', i)}", (await server.OtherEvents.ReadAsync(Ct)).PayloadText);
    }

    [Fact]
    public async Task Hostile_fragments_are_dropped_and_the_peer_keeps_answering()
    {
        var server = await Peer("server", options: new SsmpPeerOptions { Reassembly = new SsmpReassemblerOptions { MaxMessageBytes = 64 * 1024, MaxIncompleteBytes = 64 * 1024 } });
        server.Handle("ping", (_, _) => ValueTask.FromResult<ReadOnlyMemory<byte>>("pong"u8.ToArray()));
        var mallory = await SsmpClient.ConnectAsync(new SsmpClientOptions { Port = _broker.LocalEndPoint.Port, Id = "mallory" }, Ct);
        _owned.Add(mallory);
        var huge = new byte[1024];
        new byte[] { 0xF5, 0, 0, 0, 1, 0, 0, 0xFF, 0xFF }.CopyTo(huge, 0); // a full first fragment of 65,535: 66 MB declared
        await mallory.UcastAsync("server", huge, Ct);
        await mallory.UcastAsync("server", new byte[] { 0xF5, 0, 0, 0, 2, 0, 9, 0, 2, 1 }, Ct); // index past count
        await mallory.UcastAsync("server", SsmpChunking.Fragment(3, "R\0\0\0\0\0\0\0\u0007\0\0"u8.ToArray(), 0), Ct); // answer to no call
        var client = await Peer("client");
        var answer = await client.CallAsync("server", "ping", new byte[] { 1 }, cancellationToken: Ct);
        Assert.Equal("pong", Encoding.UTF8.GetString(answer.Span));
        Assert.Equal(1, server.Reassembler.Dropped(ReassemblyDrop.TooLarge));
        Assert.Equal(1, server.Reassembler.Dropped(ReassemblyDrop.Malformed));
        Assert.Equal(1, server.BadRpc);
    }
}
