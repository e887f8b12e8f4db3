using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Text.Json;
using Skymesh.Exchange;
using Skymesh.Exchange.Service;
using Skymesh.Identity;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Bench;

public sealed class ExchangeApiBenchOptions
{
    /// <summary>Seconds each measured phase runs.</summary>
    public double Seconds { get; init; } = 5;

    /// <summary>
    /// Seconds each timed phase runs before it is measured. The JIT's last tier needs a few on a busy two-core machine;
    /// the rest is the exchange's first gigabyte of remembered answers (docs/ssmp-rpc.md), which at full load takes
    /// 15–20 s to fill and, while it does, costs a page fault every 4 KiB. What is measured after it is the exchange as it
    /// runs for hours.
    /// </summary>
    public double Warmup { get; init; } = 20;

    public int Traders { get; init; } = 8;

    /// <summary>Requests each trader keeps in flight.</summary>
    public int Window { get; init; } = 256;

    /// <summary>Requests signed before the signed phase (the client's signing is not what is measured).</summary>
    public int SignedRequests { get; init; } = 20_000;

    /// <summary>Market-data subscribers in the fan-out phase; 0 skips it.</summary>
    public int Subscribers { get; init; } = 1000;

    /// <summary>Orders per second offered during the fan-out phase.</summary>
    public int FanoutRate { get; init; } = 1000;
}

/// <summary>
/// The exchange end to end over SSMP (docs/benchmarks.md): a real broker and the exchange service in this process, the
/// journal on disk; traders logged in by key send pipelined orders (session authentication), then pre-signed orders
/// (one signature check each), then a thousand subscribers follow the market data. Anchors in the same run: the same
/// request and answer through the same broker to an echo service (SSMP's own cost), and one core's BIP340 checks.
/// </summary>
public static class ExchangeApiBench
{
    private const string Market = "SKY/BTC";

    public static async Task<int> RunAsync(ExchangeApiBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        var json = await MeasureAsync(options, output, cancellationToken);
        output.WriteLine(json.ToJson());
        return 0;
    }

    private static async Task<JsonLine> MeasureAsync(ExchangeApiBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        var json = new JsonLine();
        json.Add("workload", "exchange-ssmp");
        var directory = Directory.CreateTempSubdirectory("skymesh-bench-exchange-").FullName;
        var traders = Enumerable.Range(0, options.Traders).Select(_ => NodeKey.Generate()).ToList();
        try
        {
            // Accounts funded offline first, as an operator would with `skymesh exchange ledger deposit`.
            using (var store = ExchangeStore.Open(directory))
            {
                foreach (var key in traders)
                {
                    store.Deposit(key.Address.ToString(), "SKY", 1_000_000_000_000, $"fund-sky-{key.Address}");
                    store.Deposit(key.Address.ToString(), "BTC", 1_000_000_000_000, $"fund-btc-{key.Address}");
                }
            }
            await using var broker = new SsmpBroker(new SsmpBrokerOptions
            {
                Listen = new IPEndPoint(IPAddress.Loopback, 0),
                Authenticators = { new KeyAuthenticator(), new OpenAuthenticator() },
                MaxQueuedBytesPerConnection = 256 << 20,
            });
            broker.Start();
            var port = broker.LocalEndPoint.Port;
            var lag = new LagProbe();
            await using var service = await ExchangeService.StartAsync(new ExchangeServiceOptions
            {
                Directory = directory,
                RateLimitPerSecond = 100_000_000,
                RateLimitBurst = 100_000_000,
                MaxOpenOrders = 100_000_000,
                MarketDataSent = lag.Sent,
            }, [], new SsmpClientOptions { Port = port, Id = "exchange", MaxBufferedBytes = 64 << 20 }, background: false, cancellationToken: cancellationToken);

            // Anchor: an echo service answering the same calls through the same broker.
            await using (var echo = await SsmpPeer.ConnectAsync(new SsmpClientOptions { Port = port, Id = "echo", MaxBufferedBytes = 64 << 20 },
                ExchangeService.PeerOptions(), cancellationToken))
            {
                echo.Handle("order.place", (request, _) => ValueTask.FromResult<ReadOnlyMemory<byte>>("{\"ok\":true}"u8.ToArray()));
                var anchor = await DriveAsync(port, traders, "echo", options, signed: null, cancellationToken);
                json.Add("echo_calls_per_sec", anchor.Rate, 0);
                json.Add("echo_p99_us", anchor.P99Us, 0);
                AddGc(json, "echo", anchor);
                output.WriteLine($"# anchor: echo service through the same broker, {anchor.Rate:N0} calls/s, p99 {anchor.P99Us:N0} µs");
            }

            var session = await DriveAsync(port, traders, "exchange", options, signed: null, cancellationToken);
            json.Add("ssmp_orders_per_sec", session.Rate, 0);
            json.Add("ssmp_ack_p50_us", session.P50Us, 0);
            json.Add("ssmp_ack_p99_us", session.P99Us, 0);
            json.Add("ssmp_refused", session.Errors);
            AddGc(json, "ssmp", session);
            output.WriteLine($"# session-authenticated orders: {session.Rate:N0}/s, ack p50 {session.P50Us:N0} µs, p99 {session.P99Us:N0} µs, {session.Errors} refused");

            json.Add("verify_per_sec_one_core", VerifyRate(traders[0]), 0);
            if (options.SignedRequests > 0)
            {
                var signedRun = await DriveAsync(port, traders, "exchange", options, signed: options.SignedRequests, cancellationToken);
                json.Add("signed_orders_per_sec", signedRun.Rate, 0);
                json.Add("signed_ack_p99_us", signedRun.P99Us, 0);
                json.Add("signed_refused", signedRun.Errors);
                AddGc(json, "signed", signedRun);
                output.WriteLine($"# signed orders: {signedRun.Rate:N0}/s (one core checks {json.Get("verify_per_sec_one_core")}/s), p99 {signedRun.P99Us:N0} µs, {signedRun.Errors} refused");
            }

            if (options.Subscribers > 0)
            {
                var (p50, p99, received, expected, placed, deliveries) = await FanoutAsync(port, traders[0], options, lag, cancellationToken);
                json.Add("md_subscribers", options.Subscribers);
                json.Add("md_orders_per_sec", placed, 0);
                json.Add("md_messages_expected", expected);
                json.Add("md_messages_received", received);
                json.Add("md_deliveries_per_sec", deliveries, 0);
                json.Add("md_fanout_p50_lag_us", p50, 0);
                json.Add("md_fanout_p99_lag_us", p99, 0);
                output.WriteLine($"# market data to {options.Subscribers} subscribers at {placed:N0} orders/s: {received:N0} of {expected:N0} messages received ({deliveries:N0}/s), lag p50 {p50:N0} µs, p99 {p99:N0} µs");
            }
            json.Add("journal_commands", service.Committed);
        }
        finally
        {
            foreach (var key in traders)
                key.Dispose();
            try
            {
                Directory.Delete(directory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
        return json;
    }

    /// <summary>A phase's figures; allocation and GC pauses are the whole process's (broker, service and traders) per answered call.</summary>
    private readonly record struct Result(double Rate, double P50Us, double P99Us, long Errors, double BytesPerCall, double GcPausePercent, int Gen2, double CpuUsPerCall);

    /// <summary>The process's allocation and GC counters at one moment, to difference over a phase.</summary>
    private readonly record struct GcMark(long Allocated, TimeSpan Paused, int Gen2, TimeSpan Cpu)
    {
        public static GcMark Now()
        {
            using var process = System.Diagnostics.Process.GetCurrentProcess();
            return new(GC.GetTotalAllocatedBytes(precise: false), GC.GetTotalPauseDuration(), GC.CollectionCount(2), process.TotalProcessorTime);
        }
    }

    private static double VerifyRate(NodeKey key)
    {
        var message = new byte[200];
        var signature = key.Sign(ExchangeService.RequestPurpose, message);
        var verifier = new NodeVerifier(key.Address);
        var time = TimeProvider.System;
        var start = time.GetTimestamp();
        var count = 0;
        while (time.GetElapsedTime(start).TotalSeconds < 1)
        {
            verifier.Verify(ExchangeService.RequestPurpose, message, signature);
            count++;
        }
        return count / time.GetElapsedTime(start).TotalSeconds;
    }

    /// <summary>
    /// Every trader keeps <see cref="ExchangeApiBenchOptions.Window"/> orders in flight for the phase's length: sells
    /// resting above the middle, and buys crossing it immediate-or-cancel, so the book stays about the same size.
    /// </summary>
    private static async Task<Result> DriveAsync(int port, IReadOnlyList<NodeKey> keys, string to, ExchangeApiBenchOptions options, int? signed, CancellationToken cancellationToken)
    {
        var time = TimeProvider.System;
        var traders = new List<RawTrader>();
        foreach (var key in keys)
            traders.Add(await RawTrader.ConnectAsync(port, key, to, options.Window, cancellationToken));
        try
        {
            if (signed is { } count)
            {
                // Signed ahead of time, spread over the traders; the phase ends when they are all answered.
                foreach (var (trader, i) in traders.Select((t, i) => (t, i)))
                    trader.PrepareSigned(count / traders.Count, i);
                var start = time.GetTimestamp();
                var startGc = GcMark.Now();
                await Task.WhenAll(traders.Select(t => t.RunPreparedAsync(cancellationToken)));
                var seconds = time.GetElapsedTime(start).TotalSeconds;
                return Summarise(traders, seconds, startGc);
            }
            var warmup = TimeSpan.FromSeconds(options.Warmup);
            var length = TimeSpan.FromSeconds(options.Seconds);
            using var stop = new CancellationTokenSource();
            var runs = traders.Select((t, i) => t.RunAsync(i, stop.Token)).ToList();
            await Task.Delay(warmup, time, cancellationToken);
            foreach (var t in traders)
                t.ResetCounters();
            var measured = time.GetTimestamp();
            var measuredGc = GcMark.Now();
            await Task.Delay(length, time, cancellationToken);
            var elapsed = time.GetElapsedTime(measured).TotalSeconds;
            var result = Summarise(traders, elapsed, measuredGc);
            await stop.CancelAsync();
            await Task.WhenAll(runs);
            return result;
        }
        finally
        {
            foreach (var trader in traders)
                await trader.DisposeAsync();
        }
    }

    private static Result Summarise(List<RawTrader> traders, double seconds, GcMark start)
    {
        var end = GcMark.Now();
        var answered = traders.Sum(t => t.Answered);
        var latencies = traders.SelectMany(t => t.Latencies()).Order().ToArray();
        return new Result(answered / seconds, Percentile(latencies, 0.5), Percentile(latencies, 0.99), traders.Sum(t => t.Errors),
            (double)(end.Allocated - start.Allocated) / Math.Max(1, answered), 100 * (end.Paused - start.Paused).TotalSeconds / seconds, end.Gen2 - start.Gen2,
            (end.Cpu - start.Cpu).TotalMicroseconds / Math.Max(1, answered));
    }

    private static void AddGc(JsonLine json, string prefix, Result result)
    {
        // CPU time of the whole process (broker, service and traders) per answered call: steadier than the rate on a shared machine.
        json.Add($"{prefix}_cpu_us_per_call", result.CpuUsPerCall, 1);
        json.Add($"{prefix}_alloc_bytes_per_call", result.BytesPerCall, 0);
        json.Add($"{prefix}_gc_pause_pct", result.GcPausePercent, 1);
        json.Add($"{prefix}_gen2_collections", result.Gen2);
    }

    private static double Percentile(double[] sorted, double q) => sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)(q * sorted.Length))];

    /// <summary>When each diff went to the broker, by sequence number, for the subscribers to measure against.</summary>
    private sealed class LagProbe
    {
        public readonly ConcurrentDictionary<long, long> SentAt = new();

        public void Sent(string topic, long sequence)
        {
            if (sequence > 0)
                SentAt[sequence] = TimeProvider.System.GetTimestamp();
        }
    }

    private static async Task<(double P50, double P99, long Received, long Expected, double OrdersPerSecond, double DeliveriesPerSecond)> FanoutAsync(int port, NodeKey key, ExchangeApiBenchOptions options, LagProbe lag, CancellationToken cancellationToken)
    {
        var time = TimeProvider.System;
        var topic = $"exchange.md.{MarketRules.MarketTopic(Market)}";
        var samples = new ConcurrentBag<double>();
        long received = 0;
        long expected = 0;
        double placed = 0, deliverySeconds = 1;
        var subscribers = new List<SsmpClient>();
        try
        {
            for (var i = 0; i < options.Subscribers; i++)
            {
                var subscriber = await SsmpClient.ConnectAsync(new SsmpClientOptions
                {
                    Port = port,
                    Id = $"md-{i}",
                    Reconnect = false,
                    OnEvent = e =>
                    {
                        var now = time.GetTimestamp();
                        var payload = e.Payload.Span;
                        var at = payload.IndexOf("\"seq\":"u8);
                        if (at < 0 || !System.Buffers.Text.Utf8Parser.TryParse(payload[(at + 6)..], out long seq, out _))
                            return;
                        Interlocked.Increment(ref received);
                        if (lag.SentAt.TryGetValue(seq, out var sent))
                            samples.Add(time.GetElapsedTime(sent, now).TotalMicroseconds);
                    },
                }, cancellationToken);
                await subscriber.SubscribeAsync(topic, cancellationToken: cancellationToken);
                subscribers.Add(subscriber);
            }
            // Paced, not one at a time: with one order in flight the rate would be one per journal commit, far below the offer.
            await using var trader = await RawTrader.ConnectAsync(port, key, "exchange", options.Window, cancellationToken);
            var diffsBefore = lag.SentAt.Count;
            var started = time.GetTimestamp();
            var interval = TimeSpan.FromSeconds(1.0 / options.FanoutRate);
            var end = time.GetTimestamp() + (long)(options.Seconds * time.TimestampFrequency);
            var next = time.GetTimestamp();
            var n = 0;
            while (time.GetTimestamp() < end)
            {
                await trader.SendOneAsync(n++, cancellationToken);
                next += (long)(interval.TotalSeconds * time.TimestampFrequency);
                var wait = time.GetElapsedTime(time.GetTimestamp(), next);
                if (wait > TimeSpan.Zero)
                    await Task.Delay(wait, time, cancellationToken);
            }
            await trader.DrainAsync(cancellationToken);
            placed = trader.Answered / time.GetElapsedTime(started).TotalSeconds;
            // Every subscriber is owed every diff: wait for them (a bounded while), so that the slowest deliveries are counted.
            expected = (long)(lag.SentAt.Count - diffsBefore) * options.Subscribers;
            var deadline = time.GetTimestamp() + 30 * time.TimestampFrequency;
            while (Interlocked.Read(ref received) < expected && time.GetTimestamp() < deadline)
                await Task.Delay(TimeSpan.FromMilliseconds(20), time, cancellationToken);
            deliverySeconds = time.GetElapsedTime(started).TotalSeconds;
        }
        finally
        {
            foreach (var subscriber in subscribers)
                await subscriber.DisposeAsync();
        }
        var sorted = samples.Order().ToArray();
        return (Percentile(sorted, 0.5), Percentile(sorted, 0.99), Interlocked.Read(ref received), expected, placed, Interlocked.Read(ref received) / deliverySeconds);
    }

    /// <summary>
    /// A lean load generator for the exchange's calls: the wire format of docs/ssmp-rpc.md written by hand (one fragment
    /// each), sent without waiting for the broker's 200, answers matched by request id — so that the client's own
    /// bookkeeping is not what limits the measurement.
    /// </summary>
    private sealed class RawTrader : IAsyncDisposable
    {
        private readonly SsmpClient _client;
        private readonly NodeKey _key;
        private readonly string _to;
        private readonly SemaphoreSlim _window;
        private readonly ConcurrentDictionary<ulong, long> _sent = new();
        private readonly ConcurrentQueue<double> _latencies = new();
        private readonly TimeProvider _time = TimeProvider.System;
        private readonly int _windowSize;
        private List<byte[]> _prepared = [];
        private ulong _nextId;
        private uint _nextMessage;
        private long _answered;
        private long _errors;
        private ulong _nonce;

        private RawTrader(SsmpClient client, NodeKey key, string to, int window)
        {
            _client = client;
            _key = key;
            _to = to;
            _windowSize = window;
            _window = new SemaphoreSlim(window, window);
            _nonce = (ulong)System.Security.Cryptography.RandomNumberGenerator.GetInt32(int.MaxValue) << 24;
            // Request ids must not repeat ones the exchange still remembers from this key's earlier connections.
            _nextId = (ulong)System.Security.Cryptography.RandomNumberGenerator.GetInt32(int.MaxValue) << 24;
        }

        public long Answered => Interlocked.Read(ref _answered);

        public long Errors => Interlocked.Read(ref _errors);

        public IEnumerable<double> Latencies() => _latencies;

        public static async Task<RawTrader> ConnectAsync(int port, NodeKey key, string to, int window, CancellationToken cancellationToken)
        {
            RawTrader? trader = null;
            var client = await SsmpClient.ConnectAsync(new SsmpClientOptions
            {
                Port = port,
                Id = to == "echo" ? $"t-{key.Address.ToString()[..16]}" : "",
                Key = to == "echo" ? null : key,
                Scheme = to == "echo" ? "open" : "key",
                Reconnect = false,
                MaxBufferedBytes = 64 << 20,
                // Answers are only looked at during the call: read where they lie, no copy each.
                OnEvent = e => trader?.OnAnswer(e),
                LendPayloads = true,
            }, cancellationToken);
            trader = new RawTrader(client, key, to, window);
            return trader;
        }

        public void ResetCounters()
        {
            Interlocked.Exchange(ref _answered, 0);
            Interlocked.Exchange(ref _errors, 0);
            _latencies.Clear();
        }

        // The generator's own garbage is kept small (the process's allocation per call is reported): one body writer and
        // one frame per trader, reused; a trader sends one request at a time (the window bounds how many are unanswered).
        private readonly System.Buffers.ArrayBufferWriter<byte> _body = new(256);
        private readonly byte[] _frame = new byte[SsmpGrammar.MaxPayloadLength];
        private Utf8JsonWriter? _bodyWriter;

        private static readonly string[] Prices = [.. Enumerable.Range(0, 61).Select(i => AssetAmount.Format((1000 + i) * 1000L, 8))];

        private ReadOnlyMemory<byte> OrderBody(long n, int trader)
        {
            // Sells rest above the middle; every other order is a buy that crosses, immediate-or-cancel.
            var sell = n % 2 == 0;
            // Engine prices in satoshis per lot of 0.001 SKY: 1,000 is 0.01 BTC a SKY.
            var price = Prices[sell ? (int)(n / 2 % 50) : 60];
            _body.ResetWrittenCount();
            var writer = _bodyWriter ??= new Utf8JsonWriter(_body);
            writer.Reset(_body);
            writer.WriteStartObject();
            writer.WriteNumber("nonce"u8, ++_nonce);
            writer.WriteNumber("ts"u8, _time.GetUtcNow().ToUnixTimeMilliseconds());
            writer.WriteString("market"u8, Market);
            writer.WriteString("side"u8, sell ? "sell"u8 : "buy"u8);
            writer.WriteString("price"u8, price);
            writer.WriteString("quantity"u8, "0.001"u8);
            writer.WriteString("timeInForce"u8, sell ? "gtc"u8 : "ioc"u8);
            Span<char> clientOrderId = stackalloc char[48];
            clientOrderId.TryWrite(System.Globalization.CultureInfo.InvariantCulture, $"b{trader}-{_nonce}", out var length);
            writer.WriteString("clientOrderId"u8, clientOrderId[..length]);
            writer.WriteEndObject();
            writer.Flush();
            return _body.WrittenMemory;
        }

        /// <summary>The request as one fragment, in the trader's frame buffer (good until its next request).</summary>
        private ReadOnlyMemory<byte> Frame(ReadOnlySpan<byte> body, out ulong id)
        {
            id = ++_nextId;
            var method = "order.place"u8;
            var frame = _frame.AsSpan();
            var message = frame[SsmpChunking.HeaderLength..];
            message[0] = (byte)'Q';
            BinaryPrimitives.WriteUInt64BigEndian(message[1..], id);
            message[9] = (byte)method.Length;
            method.CopyTo(message[10..]);
            body.CopyTo(message[(10 + method.Length)..]);
            var length = 10 + method.Length + body.Length;
            SsmpChunking.WriteHeader(frame, ++_nextMessage, 0, 1);
            return _frame.AsMemory(0, SsmpChunking.HeaderLength + length);
        }

        private async Task SendAsync(ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
        {
            await _window.WaitAsync(cancellationToken);
            var fragment = Frame(body.Span, out var id);
            // Answers come back in any order (a straggler may be overtaken by many): send times are kept by id.
            _sent[id] = _time.GetTimestamp();
            await _client.PostUcastAsync(_to, fragment, cancellationToken);
        }

        public async Task RunAsync(int trader, CancellationToken stop)
        {
            long n = 0;
            try
            {
                while (!stop.IsCancellationRequested)
                    await SendAsync(OrderBody(n++, trader), stop);
            }
            catch (OperationCanceledException)
            {
            }
            await DrainAsync(CancellationToken.None);
        }

        public Task SendOneAsync(int n, CancellationToken cancellationToken) => SendAsync(OrderBody(n, 99), cancellationToken);

        public async Task DrainAsync(CancellationToken cancellationToken)
        {
            for (var i = 0; i < _windowSize; i++)
                await _window.WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
            _window.Release(_windowSize);
        }

        public void PrepareSigned(int count, int trader)
        {
            _prepared = new List<byte[]>(count);
            for (var i = 0; i < count; i++)
            {
                var json = OrderBody(i, trader).ToArray();
                var body = new byte[97 + json.Length];
                body[0] = ExchangeService.SignedMarker;
                _key.Address.WriteTo(body.AsSpan(1, 32));
                _key.Sign(ExchangeService.RequestPurpose, ExchangeService.SignedMessage(_to, "order.place", json), body.AsSpan(33, 64));
                json.CopyTo(body.AsSpan(97));
                _prepared.Add(body);
            }
        }

        public async Task RunPreparedAsync(CancellationToken cancellationToken)
        {
            foreach (var body in _prepared)
                await SendAsync(body, cancellationToken);
            await DrainAsync(cancellationToken);
        }

        private void OnAnswer(SsmpEvent e)
        {
            if (e.Verb != SsmpVerb.Ucast || !SsmpChunking.TryReadHeader(e.Payload.Span, out _, out _, out var count, out var data) || count != 1
                || data.Length < 11 || data[0] != (byte)'R')
                return;
            var id = BinaryPrimitives.ReadUInt64BigEndian(data[1..]);
            if (!_sent.TryRemove(id, out var sent))
                return;
            _latencies.Enqueue(_time.GetElapsedTime(sent).TotalMicroseconds);
            if (BinaryPrimitives.ReadUInt16BigEndian(data[9..]) != 0)
                Interlocked.Increment(ref _errors);
            Interlocked.Increment(ref _answered);
            _window.Release();
        }

        public async ValueTask DisposeAsync()
        {
            await _client.DisposeAsync();
            _window.Dispose();
        }
    }
}
