using System.Collections.Concurrent;
using System.Text.Json;
using Skymesh.Exchange.Service;
using Skymesh.Identity;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Exchange.Client;

/// <summary>How a client reaches an exchange and proves who it is.</summary>
public sealed class ExchangeClientOptions
{
    /// <summary>The broker (host, port, TLS); its Id, Scheme and Key are set by the client from <see cref="Key"/> and <see cref="Signed"/>.</summary>
    public SsmpClientOptions Broker { get; init; } = new();

    /// <summary>The exchange's SSMP id (what `skymesh exchange serve` prints).</summary>
    public required string Exchange { get; init; }

    /// <summary>The account key. Null: only the public methods (time, markets, book) and market data.</summary>
    public NodeKey? Key { get; init; }

    /// <summary>
    /// Sign every request (a broker the exchange does not trust; about 0.25 ms of CPU a request). Otherwise the client
    /// logs into the broker with the key scheme, and the exchange takes the session's proven id as the account.
    /// </summary>
    public bool Signed { get; init; }

    /// <summary>The exchange's topic prefix (its --name).</summary>
    public string Name { get; init; } = "exchange";

    public SsmpCallOptions Calls { get; init; } = new() { AttemptTimeout = TimeSpan.FromSeconds(5), Attempts = 3 };
}

/// <summary>
/// A .NET client of the exchange API over SSMP (docs/exchange-api.md): every request with a fresh nonce and the time
/// (corrected by the exchange's clock after a clock_skew answer), signed when asked, failures as
/// <see cref="ExchangeApiException"/> with the API's error code; and local order books kept in sync from the market-data
/// topics by snapshot and diffs, resynchronising by themselves after a gap or a checksum mismatch.
/// </summary>
public sealed class ExchangeClient : IAsyncDisposable
{
    private readonly ExchangeClientOptions _options;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, LocalBook> _books = new(StringComparer.Ordinal);
    private SsmpPeer? _peer;
    private long _nonce;
    private long _clockOffset;

    private ExchangeClient(ExchangeClientOptions options)
    {
        _options = options;
        _time = options.Broker.TimeProvider;
        // A random start: two clients of one account (or one restarted) never hand out the same nonces.
        _nonce = (long)(System.Security.Cryptography.RandomNumberGenerator.GetInt32(int.MaxValue) * (1L << 31));
    }

    /// <summary>The account (the key's address), or null.</summary>
    public string? Account => _options.Key?.Address.ToString();

    public SsmpPeer Peer => _peer ?? throw new InvalidOperationException("Not connected.");

    public static async Task<ExchangeClient> ConnectAsync(ExchangeClientOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var client = new ExchangeClient(options);
        var broker = options.Broker.Clone();
        if (options.Key is not null && !options.Signed)
        {
            broker.Id = options.Key.Address.ToString();
            broker.Scheme = "key";
            broker.Key = options.Key;
        }
        else if (string.IsNullOrEmpty(broker.Id))
        {
            // Signed requests need no particular login: a random open id keeps the connection addressable for answers.
            broker.Id = $"trader-{Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8)).ToLowerInvariant()}";
        }
        broker.OnEvent = client.OnEvent;
        // A snapshot of a deep book can be several MiB.
        client._peer = await SsmpPeer.ConnectAsync(broker, new SsmpPeerOptions { Reassembly = new SsmpReassemblerOptions { MaxMessageBytes = 32 << 20, MaxIncompleteBytes = 64 << 20 } }, cancellationToken);
        return client;
    }

    // ---- calls

    /// <summary>Calls <paramref name="method"/> with <paramref name="args"/> (an object serialised as JSON); returns the answer.</summary>
    public async Task<JsonElement> CallAsync(string method, object? args = null, CancellationToken cancellationToken = default)
    {
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return await CallOnceAsync(method, args, cancellationToken);
            }
            catch (ExchangeApiException e) when (e.Code == "clock_skew" && attempt == 0 && e.Details.TryGetValue("serverTime", out var server) && server is JsonElement t)
            {
                // The local clock is off: take the exchange's, once.
                Interlocked.Exchange(ref _clockOffset, t.GetInt64() - _time.GetUtcNow().ToUnixTimeMilliseconds());
            }
        }
    }

    private async Task<JsonElement> CallOnceAsync(string method, object? args, CancellationToken cancellationToken)
    {
        var body = new Dictionary<string, object?>();
        if (args is not null)
        {
            foreach (var property in JsonSerializer.SerializeToElement(args, Json).EnumerateObject())
                body[property.Name] = property.Value;
        }
        body["nonce"] = (ulong)Interlocked.Increment(ref _nonce);
        body["ts"] = _time.GetUtcNow().ToUnixTimeMilliseconds() + Interlocked.Read(ref _clockOffset);
        var json = JsonSerializer.SerializeToUtf8Bytes(body, Json);
        byte[] request;
        if (_options.Signed && _options.Key is { } key)
        {
            request = new byte[1 + 32 + 64 + json.Length];
            request[0] = ExchangeService.SignedMarker;
            key.Address.WriteTo(request.AsSpan(1, 32));
            key.Sign(ExchangeService.RequestPurpose, ExchangeService.SignedMessage(_options.Exchange, method, json), request.AsSpan(33, 64));
            json.CopyTo(request.AsSpan(97));
        }
        else
        {
            request = json;
        }
        ReadOnlyMemory<byte> answer;
        try
        {
            answer = await Peer.CallAsync(_options.Exchange, method, request, _options.Calls, cancellationToken);
        }
        catch (SsmpRpcException e)
        {
            throw ExchangeApiException.FromRpc(e) ?? new ExchangeApiException(e.Status, e.Status == SsmpRpcException.Timeout ? "no_answer" : "transport", e.Message);
        }
        using var document = JsonDocument.Parse(answer);
        return document.RootElement.Clone();
    }

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    public Task<JsonElement> MarketsAsync(CancellationToken cancellationToken = default) => CallAsync("markets", null, cancellationToken);

    public async Task<long> ServerTimeAsync(CancellationToken cancellationToken = default) =>
        (await CallAsync("time", null, cancellationToken)).GetProperty("serverTime").GetInt64();

    /// <summary>
    /// Places an order: price and quantity as decimal strings; returns the order (or, for a repeated client order id, the
    /// first one). Without a <paramref name="clientOrderId"/> the client makes one (<c>auto-</c> and 24 hex digits), so
    /// that its own retries — after a lost answer, or after <c>clock_skew</c> with a new nonce — can never place it twice.
    /// </summary>
    public async Task<JsonElement> PlaceAsync(string market, string side, string quantity, string? price = null, string type = "limit",
        string? timeInForce = null, string? clientOrderId = null, bool? postOnly = null, string? selfTrade = null, CancellationToken cancellationToken = default)
    {
        clientOrderId ??= NewClientOrderId();
        return (await CallAsync("order.place", new { market, side, type, price, quantity, timeInForce, clientOrderId, postOnly, selfTrade }, cancellationToken)).GetProperty("order");
    }

    /// <summary>A client order id for a placement made without one.</summary>
    public static string NewClientOrderId() => "auto-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(12));

    public async Task<JsonElement> CancelAsync(long orderId, CancellationToken cancellationToken = default) =>
        (await CallAsync("order.cancel", new { orderId }, cancellationToken)).GetProperty("order");

    public async Task<IReadOnlyList<long>> CancelAllAsync(string? market = null, CancellationToken cancellationToken = default) =>
        [.. (await CallAsync("order.cancelAll", new { market }, cancellationToken)).GetProperty("canceled").EnumerateArray().Select(e => e.GetInt64())];

    public async Task<JsonElement> AmendAsync(long orderId, string? price, string? quantity, CancellationToken cancellationToken = default) =>
        (await CallAsync("order.amend", new { orderId, price, quantity }, cancellationToken)).GetProperty("order");

    public async Task<IReadOnlyList<JsonElement>> OrdersAsync(string status = "open", string? market = null, CancellationToken cancellationToken = default) =>
        [.. (await CallAsync("orders", new { status, market }, cancellationToken)).GetProperty("orders").EnumerateArray()];

    public async Task<IReadOnlyList<JsonElement>> FillsAsync(string? market = null, CancellationToken cancellationToken = default) =>
        [.. (await CallAsync("fills", new { market }, cancellationToken)).GetProperty("fills").EnumerateArray()];

    /// <summary>Available, held and owed per asset, as decimal strings.</summary>
    public async Task<IReadOnlyDictionary<string, (string Available, string Held, string Owed)>> BalancesAsync(CancellationToken cancellationToken = default)
    {
        var answer = await CallAsync("balances", null, cancellationToken);
        return answer.GetProperty("balances").EnumerateArray().ToDictionary(b => b.GetProperty("asset").GetString()!,
            b => (b.GetProperty("available").GetString()!, b.GetProperty("held").GetString()!, b.GetProperty("owed").GetString()!));
    }

    public async Task<string> DepositAddressAsync(string asset, CancellationToken cancellationToken = default) =>
        (await CallAsync("deposit.address", new { asset }, cancellationToken)).GetProperty("address").GetString()!;

    public async Task<IReadOnlyList<JsonElement>> DepositsAsync(string? asset = null, CancellationToken cancellationToken = default) =>
        [.. (await CallAsync("deposits", new { asset }, cancellationToken)).GetProperty("deposits").EnumerateArray()];

    /// <summary>Asks for a withdrawal; <paramref name="key"/> makes it idempotent (the same key again returns the same withdrawal).</summary>
    public async Task<JsonElement> WithdrawAsync(string asset, string address, string amount, string key, CancellationToken cancellationToken = default) =>
        (await CallAsync("withdraw", new { asset, address, amount, key }, cancellationToken)).GetProperty("withdrawal");

    public async Task<IReadOnlyList<JsonElement>> WithdrawalsAsync(string? asset = null, CancellationToken cancellationToken = default) =>
        [.. (await CallAsync("withdrawals", new { asset }, cancellationToken)).GetProperty("withdrawals").EnumerateArray()];

    /// <summary>
    /// Asks the exchange to cancel this account's orders when this connection ends: subscribes to the exchange's sessions
    /// topic (its presence is how the exchange learns of the end), then tells it.
    /// </summary>
    public async Task CancelOnDisconnectAsync(bool enabled = true, CancellationToken cancellationToken = default)
    {
        if (enabled)
            await Peer.Client.SubscribeAsync($"{_options.Name}.sessions", cancellationToken: cancellationToken);
        await CallAsync("session", new { cancelOnDisconnect = enabled }, cancellationToken);
    }

    // ---- market data

    /// <summary>
    /// A local copy of <paramref name="market"/>'s book, kept in sync from its topic: subscribed, then started from a
    /// snapshot; it resynchronises by itself on a gap, a checksum mismatch or a new epoch.
    /// </summary>
    public async Task<LocalBook> SubscribeBookAsync(string market, CancellationToken cancellationToken = default)
    {
        var topic = $"{_options.Name}.md.{MarketRules.MarketTopic(market)}";
        var book = _books.GetOrAdd(topic, _ => new LocalBook(this, market, topic));
        await Peer.Client.SubscribeAsync(topic, cancellationToken: cancellationToken);
        await book.ResyncAsync(cancellationToken);
        return book;
    }

    /// <summary>Stops keeping <paramref name="market"/>'s book: unsubscribes from its topic (a later subscribe starts from a new snapshot).</summary>
    public async Task UnsubscribeBookAsync(string market, CancellationToken cancellationToken = default)
    {
        var topic = $"{_options.Name}.md.{MarketRules.MarketTopic(market)}";
        if (_books.TryRemove(topic, out _))
            await Peer.Client.UnsubscribeAsync(topic, cancellationToken);
    }

    internal async Task<JsonElement> SnapshotAsync(string market, CancellationToken cancellationToken) =>
        await CallAsync("book", new { market, depth = 100_000 }, cancellationToken);

    private void OnEvent(SsmpEvent e)
    {
        // Only the exchange's own messages: anyone may publish on a topic, and a forged diff must not touch the book.
        if (e.Verb == SsmpVerb.Mcast && e.From == _options.Exchange && e.Target is not null && _books.TryGetValue(e.Target, out var book))
            book.OnMessage(e.Payload);
    }

    public async ValueTask DisposeAsync()
    {
        if (_peer is not null)
            await _peer.DisposeAsync();
    }
}
