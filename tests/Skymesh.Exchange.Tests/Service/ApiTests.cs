using System.Text;
using System.Text.Json;
using Skymesh.Exchange.Client;
using Skymesh.Exchange.Service;
using Skymesh.Identity;
using Skymesh.Ssmp.Client;

namespace Skymesh.Exchange.Tests.Service;

/// <summary>The API over the real broker: who may act on an account, replays, clocks, limits, idempotent orders and sessions.</summary>
public sealed class ApiTests
{
    private static CancellationToken Token => TestContext.Current.CancellationToken;

    /// <summary>A raw call: the body as given, so that the test can send what the client library never would.</summary>
    private static async Task<ExchangeApiException?> RawAsync(ExchangeClient client, string method, byte[] body)
    {
        try
        {
            await client.Peer.CallAsync("exchange", method, body, cancellationToken: Token);
            return null;
        }
        catch (Ssmp.Rpc.SsmpRpcException e)
        {
            return ExchangeApiException.FromRpc(e);
        }
    }

    private static byte[] Body(object value) => JsonSerializer.SerializeToUtf8Bytes(value);

    private static byte[] Signed(NodeKey claimed, NodeKey signer, string method, byte[] json)
    {
        var body = new byte[97 + json.Length];
        body[0] = ExchangeService.SignedMarker;
        claimed.Address.WriteTo(body.AsSpan(1, 32));
        signer.Sign(ExchangeService.RequestPurpose, ExchangeService.SignedMessage("exchange", method, json), body.AsSpan(33, 64));
        json.CopyTo(body.AsSpan(97));
        return body;
    }

    [Fact]
    public async Task A_signed_request_acts_for_its_key_through_any_login_and_one_signed_by_another_key_is_refused()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var alice = NodeKey.Generate();
        using var mallory = NodeKey.Generate();
        var aliceSession = await world.TraderAsync(alice);
        await world.FundAsync(aliceSession, "SKY", 5_000_000);

        // Alice signs through an ordinary open login: it is her account.
        var signed = await world.TraderAsync(alice, signed: true);
        Assert.Equal("5.000000", (await signed.BalancesAsync(Token))["SKY"].Available);

        // Mallory names Alice's key but signs with her own.
        var now = ExchangeWorld.T0.ToUnixTimeMilliseconds();
        var forged = await RawAsync(signed, "balances", Signed(alice, mallory, "balances", Body(new { nonce = 1, ts = now })));
        Assert.Equal(("bad_signature", 401), (forged!.Code, forged.Status));
        // A signature over one method does not carry over to another.
        var json = Body(new { nonce = 2, ts = now, asset = "SKY", address = "x", amount = "1", key = "k" });
        var body = Signed(alice, alice, "balances", json);
        var moved = await RawAsync(signed, "withdraw", body);
        Assert.Equal("bad_signature", moved!.Code);
        // An unsigned request from a login that is not a key has no account.
        var anonymous = await world.TraderAsync(id: "bob");
        var unsigned = await RawAsync(anonymous, "balances", Body(new { nonce = 3, ts = now }));
        Assert.Equal(("unauthenticated", 401), (unsigned!.Code, unsigned.Status));
        Assert.True(world.Service.Refused >= 3);
    }

    [Fact]
    public async Task A_replayed_request_and_one_outside_the_time_window_are_refused_with_their_codes()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var alice = NodeKey.Generate();
        var trader = await world.TraderAsync(alice, signed: true);
        var now = ExchangeWorld.T0.ToUnixTimeMilliseconds();
        var json = Body(new { nonce = 42, ts = now });
        Assert.Null(await RawAsync(trader, "balances", Signed(alice, alice, "balances", json)));
        // The very same signed bytes again (a new call, as an eavesdropper would send them).
        var replayed = await RawAsync(trader, "balances", Signed(alice, alice, "balances", json));
        Assert.Equal(("replayed", 409), (replayed!.Code, replayed.Status));

        var skewed = await RawAsync(trader, "balances", Signed(alice, alice, "balances", Body(new { nonce = 43, ts = now - 31_000 })));
        Assert.Equal("clock_skew", skewed!.Code);
        Assert.Equal(now, ((JsonElement)skewed.Details["serverTime"]!).GetInt64());
        var missing = await RawAsync(trader, "balances", Signed(alice, alice, "balances", Body(new { ts = now })));
        Assert.Equal("bad_request", missing!.Code);

        // A client whose clock is five minutes fast corrects it from the answer and goes on.
        var fast = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(ExchangeWorld.T0.AddMinutes(5));
        var late = await world.TraderAsync(alice, signed: true, clock: fast);
        Assert.Equal("0.000000", (await late.BalancesAsync(Token))["SKY"].Available);
    }

    [Fact]
    public async Task Every_answer_carries_the_remaining_rate_budget_and_the_request_past_it_is_refused_with_a_wait()
    {
        await using var world = await ExchangeWorld.StartAsync((dir, op) => ExchangeWorld.DefaultOptions(dir, op) is var o
            ? new ExchangeServiceOptions { Directory = o.Directory, Coins = o.Coins, Operators = o.Operators, RateLimitBurst = 3, RateLimitPerSecond = 1 } : null!);
        using var alice = NodeKey.Generate();
        var trader = await world.TraderAsync(alice);
        var remaining = new List<long>();
        for (var i = 0; i < 3; i++)
            remaining.Add((await trader.CallAsync("balances", null, Token)).GetProperty("rateLimit").GetProperty("remaining").GetInt64());
        Assert.Equal([2L, 1L, 0L], remaining);
        var limited = await Assert.ThrowsAsync<ExchangeApiException>(() => trader.CallAsync("balances", null, Token));
        Assert.Equal(("rate_limited", 429), (limited.Code, limited.Status));
        Assert.Equal(1000, ((JsonElement)limited.Details["retryAfterMs"]!).GetInt64());
        world.Time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(0, (await trader.CallAsync("balances", null, Token)).GetProperty("rateLimit").GetProperty("remaining").GetInt64());
    }

    [Fact]
    public async Task The_client_gives_a_placement_without_a_client_order_id_one_so_a_retry_of_it_places_nothing()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var alice = NodeKey.Generate();
        var trader = await world.FundedTraderAsync(alice, "SKY", 10_000_000);
        var first = await trader.PlaceAsync("SKY/BTC", "sell", "2", "0.002", cancellationToken: Token);
        var id = first.GetProperty("clientOrderId").GetString()!;
        Assert.Matches("^auto-[0-9a-f]{24}$", id);
        // What the client sends again when an answer is lost: the same order under the same id.
        var retried = await trader.PlaceAsync("SKY/BTC", "sell", "2", "0.002", clientOrderId: id, cancellationToken: Token);
        Assert.True(retried.GetProperty("duplicate").GetBoolean());
        Assert.Equal(first.GetProperty("id").GetInt64(), retried.GetProperty("id").GetInt64());
        // Two placements are still two orders.
        var second = await trader.PlaceAsync("SKY/BTC", "sell", "2", "0.002", cancellationToken: Token);
        Assert.NotEqual(id, second.GetProperty("clientOrderId").GetString());
        Assert.Equal(2, (await trader.OrdersAsync(cancellationToken: Token)).Count);
    }

    [Fact]
    public async Task A_repeated_client_order_id_returns_the_original_order_and_places_nothing()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var alice = NodeKey.Generate();
        var trader = await world.FundedTraderAsync(alice, "SKY", 10_000_000);
        var first = await trader.PlaceAsync("SKY/BTC", "sell", "2", "0.002", clientOrderId: "mine-1", cancellationToken: Token);
        var again = await trader.PlaceAsync("SKY/BTC", "sell", "2", "0.002", clientOrderId: "mine-1", cancellationToken: Token);
        Assert.Equal(first.GetProperty("id").GetInt64(), again.GetProperty("id").GetInt64());
        Assert.True(again.GetProperty("duplicate").GetBoolean());
        Assert.Single(await trader.OrdersAsync(cancellationToken: Token));
        Assert.Equal(("8.000000", "2.000000"), ((await trader.BalancesAsync(Token))["SKY"].Available, (await trader.BalancesAsync(Token))["SKY"].Held));
        // Named by its client order id, it can be cancelled.
        var canceled = (await trader.CallAsync("order.cancel", new { clientOrderId = "mine-1" }, Token)).GetProperty("order");
        Assert.Equal("canceled", canceled.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Orders_trade_and_every_answer_speaks_decimals_the_market_rules_publish()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var alice = NodeKey.Generate();
        using var bob = NodeKey.Generate();
        var seller = await world.TraderAsync(alice);
        var buyer = await world.TraderAsync(bob);
        await world.FundAsync(seller, "SKY", 10_000_000);
        await world.FundAsync(buyer, "BTC", 10_000_000);
        var markets = await buyer.MarketsAsync(Token);
        var market = markets.GetProperty("markets")[0];
        Assert.Equal(("SKY/BTC", "0.00001000", "0.001000"), (market.GetProperty("symbol").GetString(), market.GetProperty("tickSize").GetString(), market.GetProperty("lotSize").GetString()));

        var offTick = await Assert.ThrowsAsync<ExchangeApiException>(() => seller.PlaceAsync("SKY/BTC", "sell", "1", "0.000015", cancellationToken: Token));
        Assert.Equal("bad_price", offTick.Code);
        var tooPoor = await Assert.ThrowsAsync<ExchangeApiException>(() => buyer.PlaceAsync("SKY/BTC", "buy", "1000", "0.01", cancellationToken: Token));
        Assert.Equal("insufficient_funds", tooPoor.Code);

        var ask = await seller.PlaceAsync("SKY/BTC", "sell", "4", "0.01", cancellationToken: Token);
        var bid = await buyer.PlaceAsync("SKY/BTC", "buy", "1.5", "0.011", cancellationToken: Token);
        Assert.Equal(("filled", "1.500000", "0.01500000", "0.00003000"),
            (bid.GetProperty("status").GetString(), bid.GetProperty("filled").GetString(), bid.GetProperty("filledValue").GetString(), bid.GetProperty("fees").GetString()));
        Assert.Single(bid.GetProperty("fills").EnumerateArray());
        var resting = Assert.Single(await seller.OrdersAsync(cancellationToken: Token));
        Assert.Equal(("2.500000", "1.500000"), (resting.GetProperty("remaining").GetString(), resting.GetProperty("filled").GetString()));
        Assert.Equal(ask.GetProperty("id").GetInt64(), resting.GetProperty("id").GetInt64());
        var fill = Assert.Single(await seller.FillsAsync(cancellationToken: Token));
        Assert.Equal(("maker", "0.01000000", "0.00001500"), (fill.GetProperty("liquidity").GetString(), fill.GetProperty("price").GetString(), fill.GetProperty("fee").GetString()));
        var balances = await buyer.BalancesAsync(Token);
        Assert.Equal(("1.500000", "0.08497000"), (balances["SKY"].Available, balances["BTC"].Available));

        var amended = await seller.AmendAsync(ask.GetProperty("id").GetInt64(), "0.012", null, Token);
        Assert.Equal("0.01200000", amended.GetProperty("price").GetString());
        var batch = await buyer.CallAsync("order.batch", new
        {
            orders = new object[]
            {
                new { market = "SKY/BTC", side = "buy", price = "0.005", quantity = "1" },
                new { market = "SKY/BTC", side = "buy", price = "0.0050001", quantity = "1" },
            },
        }, Token);
        var items = batch.GetProperty("orders").EnumerateArray().ToList();
        Assert.Equal("open", items[0].GetProperty("status").GetString());
        Assert.Equal("bad_price", items[1].GetProperty("error").GetProperty("code").GetString());
        Assert.Equal([items[0].GetProperty("id").GetInt64()], await buyer.CancelAllAsync(cancellationToken: Token));
    }

    [Fact]
    public async Task A_session_placement_is_answered_byte_for_byte_as_the_general_path_answers_a_signed_one()
    {
        // Session-authenticated order.place takes the hot path, a signed one the general path: the same orders on two
        // exchanges in the same state, on the same frozen clock, must get the same bytes back.
        var answers = new List<List<string>>();
        foreach (var signed in new[] { false, true })
        {
            await using var world = await ExchangeWorld.StartAsync();
            using var alice = NodeKey.Generate();
            using var bob = NodeKey.Generate();
            var seller = await world.TraderAsync(alice, signed);
            var buyer = await world.TraderAsync(bob, signed);
            await world.FundAsync(seller, "SKY", 10_000_000);
            await world.FundAsync(buyer, "BTC", 10_000_000);
            var texts = new List<string>();
            async Task Place(ExchangeClient trader, object order)
            {
                try
                {
                    texts.Add((await trader.CallAsync("order.place", order, Token)).GetRawText());
                }
                catch (ExchangeApiException e)
                {
                    texts.Add($"{e.Status} {e.Code} {e.Message}");
                }
            }
            await Place(seller, new { market = "SKY/BTC", side = "sell", price = "0.01", quantity = "1" });
            await Place(seller, new { market = "SKY/BTC", side = "sell", price = "0.011", quantity = "2.5", clientOrderId = "s-\"1\"" });
            await Place(seller, new { market = "SKY/BTC", side = "sell", price = "0.012", quantity = "0.5", postOnly = true, selfTrade = "expireBoth" });
            await Place(buyer, new { market = "SKY/BTC", side = "buy", price = "0.0105", quantity = "1.5", timeInForce = "ioc" });
            await Place(buyer, new { market = "SKY/BTC", side = "buy", price = "0.011", quantity = "3", clientOrderId = "b-1" });
            await Place(buyer, new { market = "SKY/BTC", side = "buy", price = "0.011", quantity = "3", clientOrderId = "b-1" });
            await Place(buyer, new { market = "SKY/BTC", side = "buy", type = "market", quantity = "0.7" });
            await Place(seller, new { market = "SKY/BTC", side = "sell", type = "market", quantity = "0.2", timeInForce = "fok" });
            await Place(seller, new { market = "SKY/BTC", side = "sell", price = "0.0100001", quantity = "1" });
            await Place(seller, new { market = "SKY/BTC", side = "sell", price = "0.01", quantity = "0.0001" });
            await Place(buyer, new { market = "SKY/BTC", side = "buy", price = "0.01", quantity = "1", timeInForce = "day" });
            await Place(buyer, new { market = "SKY/BTC", side = "buy", price = "100", quantity = "10000" });
            answers.Add(texts);
        }
        Assert.Equal(answers[1], answers[0]);
        Assert.Contains("\"fills\":[{\"tradeId\":", answers[0][3], StringComparison.Ordinal);
    }

    /// <summary>Alice (two asks) and Bob (one), each with 10 SKY and cancel-on-disconnect on.</summary>
    private static async Task<(ExchangeClient Alice, ExchangeClient Bob)> TwoSellersWhoCancelOnDisconnectAsync(ExchangeWorld world, NodeKey alice, NodeKey bob)
    {
        var leaving = await world.FundedTraderAsync(alice, "SKY", 10_000_000);
        var staying = await world.FundedTraderAsync(bob, "SKY", 10_000_000);
        await leaving.CancelOnDisconnectAsync(true, Token);
        await staying.CancelOnDisconnectAsync(true, Token);
        await leaving.PlaceAsync("SKY/BTC", "sell", "1", "0.02", cancellationToken: Token);
        await leaving.PlaceAsync("SKY/BTC", "sell", "2", "0.03", cancellationToken: Token);
        await staying.PlaceAsync("SKY/BTC", "sell", "3", "0.02", cancellationToken: Token);
        return (leaving, staying);
    }

    /// <summary>Alice's two orders, and only those, were cancelled: she has none and all her SKY back, Bob keeps his.</summary>
    private static async Task AliceAloneWasCancelledAsync(ExchangeWorld world, NodeKey alice, ExchangeClient bob)
    {
        Assert.Equal(2, world.Service.CanceledOnDisconnect);
        Assert.Single(await bob.OrdersAsync(cancellationToken: Token));
        var back = await world.TraderAsync(alice);
        Assert.Empty(await back.OrdersAsync(cancellationToken: Token));
        Assert.Equal("10.000000", (await back.BalancesAsync(Token))["SKY"].Available);
    }

    [Fact]
    public async Task Cancel_on_disconnect_cancels_exactly_the_orders_of_the_trader_whose_session_ended()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var alice = NodeKey.Generate();
        using var bob = NodeKey.Generate();
        var observer = await world.TraderAsync(id: "watcher");
        var book = await observer.SubscribeBookAsync("SKY/BTC", Token);
        var (leaving, staying) = await TwoSellersWhoCancelOnDisconnectAsync(world, alice, bob);
        while (book.Asks.Count < 2)
            await book.WaitChangedAsync(Token);

        await leaving.DisposeAsync();
        while (book.Asks.Count != 1 || book.Asks[0].Quantity != "3.000000")
            await book.WaitChangedAsync(Token);
        await AliceAloneWasCancelledAsync(world, alice, staying);
    }

    [Fact]
    public async Task A_trader_who_leaves_while_the_exchanges_own_connection_is_down_has_its_orders_cancelled_when_it_is_back()
    {
        await using var world = await ExchangeWorld.StartAsync(exchangeReconnects: true);
        using var alice = NodeKey.Generate();
        using var bob = NodeKey.Generate();
        var (leaving, staying) = await TwoSellersWhoCancelOnDisconnectAsync(world, alice, bob);

        // Another connection logging in as the exchange makes the broker close the exchange's own; while it is away, Alice
        // leaves, and nobody tells the exchange.
        await using (var impostor = await SsmpClient.ConnectAsync(new SsmpClientOptions { Port = world.Broker.LocalEndPoint.Port, Id = "exchange", Reconnect = false, TimeProvider = world.Time }, Token))
            await leaving.DisposeAsync();
        // The exchange's client comes back (its backoff runs on the test's clock) and learns who is still here.
        using var tick = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        for (var i = 0; i < 500 && world.Service.CanceledOnDisconnect < 2 && await tick.WaitForNextTickAsync(Token); i++)
            world.Time.Advance(TimeSpan.FromMilliseconds(100));

        await AliceAloneWasCancelledAsync(world, alice, staying);
    }

    [Fact]
    public async Task Cancel_on_disconnect_needs_the_sessions_subscription_that_reports_the_end()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var alice = NodeKey.Generate();
        var trader = await world.TraderAsync(alice);
        var refused = await Assert.ThrowsAsync<ExchangeApiException>(() => trader.CallAsync("session", new { cancelOnDisconnect = true }, Token));
        Assert.Equal("not_subscribed", refused.Code);
        Assert.Contains("exchange.sessions", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task What_the_exchange_acknowledged_is_all_there_after_a_restart()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var alice = NodeKey.Generate();
        using var bob = NodeKey.Generate();
        var a = await world.TraderAsync(alice);
        var b = await world.TraderAsync(bob);
        await world.FundAsync(a, "SKY", 10_000_000);
        await world.FundAsync(b, "BTC", 10_000_000);
        await a.PlaceAsync("SKY/BTC", "sell", "3", "0.01", cancellationToken: Token);
        await a.PlaceAsync("SKY/BTC", "sell", "1", "0.012", clientOrderId: "keep", cancellationToken: Token);
        await b.PlaceAsync("SKY/BTC", "buy", "2", "0.01", cancellationToken: Token);
        var before = (await b.CallAsync("book", new { market = "SKY/BTC" }, Token)).GetRawText();
        var balancesBefore = await a.BalancesAsync(Token);
        var ordersBefore = (await a.OrdersAsync("all", cancellationToken: Token)).Select(o => o.GetRawText()).ToList();

        await world.RestartAsync();
        a = await world.TraderAsync(alice);
        var after = await a.CallAsync("book", new { market = "SKY/BTC" }, Token);
        Assert.Equal(JsonDocument.Parse(before).RootElement.GetProperty("bids").GetRawText(), after.GetProperty("bids").GetRawText());
        Assert.Equal(JsonDocument.Parse(before).RootElement.GetProperty("asks").GetRawText(), after.GetProperty("asks").GetRawText());
        Assert.Equal(balancesBefore, await a.BalancesAsync(Token));
        Assert.Equal(ordersBefore, (await a.OrdersAsync("all", cancellationToken: Token)).Select(o => o.GetRawText()).ToList());
        var duplicate = await a.PlaceAsync("SKY/BTC", "sell", "1", "0.012", clientOrderId: "keep", cancellationToken: Token);
        Assert.True(duplicate.GetProperty("duplicate").GetBoolean());
        _ = Encoding.UTF8;
    }
}
