using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using Skymesh.Exchange.Chains;
using Skymesh.Exchange.Client;
using Skymesh.Exchange.Service;
using Skymesh.Identity;
using Skymesh.Node;
using Skymesh.Node.Tests;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;
using Skymesh.Tests;
using static Microsoft.Playwright.Assertions;

namespace Skymesh.Dashboard.Tests;

/// <summary>
/// The dashboard's Exchange page in a real headless chromium: a real broker on loopback, a real exchange service with
/// simulated SKY and BTC chains (no background rounds: the test mines blocks and polls the chains when it wants), and a
/// real node whose node.json names the exchange. The node is the exchange's operator, so its approvals show too.
/// </summary>
public sealed class ExchangePageTests : IAsyncDisposable
{
    private const string ServiceId = "exchange-under-test";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private static readonly byte[] Seed = [.. Enumerable.Range(1, 32).Select(i => (byte)i)];

    private readonly string _directory = Directory.CreateTempSubdirectory("skymesh-exchange-page-").FullName;
    private readonly CapturingLoggerFactory _serviceLogs = new();
    private readonly List<TestNode> _nodes = [];
    private readonly List<ExchangeClient> _traders = [];
    private readonly List<IPage> _pages = [];
    private readonly SsmpBroker _broker;
    private readonly SimulatedChain _sky;
    private readonly SimulatedChain _btc;
    private readonly Chromium _chromium;
    private ExchangeService? _service;

    public ExchangePageTests(Chromium chromium)
    {
        _chromium = chromium;
        // Key logins for the nodes' control buses, open ones for the exchange and the node's signed-request login.
        _broker = new SsmpBroker(new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0), Authenticators = { new KeyAuthenticator(), new OpenAuthenticator() } });
        _broker.Start();
        _sky = new SimulatedChain(new SimulatedChainOptions("SKY") { StateFile = Path.Combine(_directory, "sim-sky.json") }, TimeProvider.System);
        _btc = new SimulatedChain(new SimulatedChainOptions("BTC") { StateFile = Path.Combine(_directory, "sim-btc.json") }, TimeProvider.System);
    }

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static LocatorAssertionsToHaveTextOptions Text => new() { Timeout = 30_000 };

    private static LocatorAssertionsToContainTextOptions Contains => new() { Timeout = 30_000 };

    private static LocatorAssertionsToBeVisibleOptions Visible => new() { Timeout = 30_000 };

    private static LocatorAssertionsToHaveCountOptions Count => new() { Timeout = 30_000 };

    private ExchangeService Service => _service ?? throw new InvalidOperationException("The exchange is not started.");

    /// <summary>A node on the broker whose node.json has an <c>exchange</c> section (the broker is the node's own).</summary>
    private async Task<TestNode> StartNodeAsync(bool withExchange = true)
    {
        var node = await TestNode.StartAsync(withExchange ? $$""", "exchange": { "service": "{{ServiceId}}" }""" : null, broker: _broker.LocalEndPoint);
        _nodes.Add(node);
        return node;
    }

    /// <summary>The exchange, with <paramref name="operatorNode"/> among its operators: SKY credited after 2 confirmations, BTC after 3, BTC withdrawals above 0.5 waiting for approval.</summary>
    private async Task StartExchangeAsync(TestNode operatorNode)
    {
        var options = new ExchangeServiceOptions
        {
            Directory = _directory,
            Coins = new Dictionary<string, CoinOptions>
            {
                ["SKY"] = new() { Confirmations = 2, WatchDepth = 20 },
                ["BTC"] = new() { Confirmations = 3, WatchDepth = 20, Withdrawals = new WithdrawalLimits { ApprovalThreshold = 50_000_000, Confirmations = 1 } },
            },
            Operators = [operatorNode.Address],
        };
        _service = await ExchangeService.StartAsync(options, [SimulatedChainAdapter.Create(_sky, Seed), SimulatedChainAdapter.Create(_btc, Seed)],
            new SsmpClientOptions { Port = _broker.LocalEndPoint.Port, Id = ServiceId }, TimeProvider.System, _serviceLogs, background: false, Ct);
    }

    private static NodeExchange ExchangeOf(TestNode node) => node.Host.Exchange ?? throw new InvalidOperationException("The node has no exchange.");

    /// <summary>Pays <paramref name="units"/> to the node's deposit address and mines until the exchange credits it; the payment's transaction id.</summary>
    private async Task<string> FundAsync(TestNode node, string asset, long units)
    {
        await UntilAsync(() => ExchangeOf(node).LoggedIn, "the node logging into the broker for the exchange");
        var address = (await ExchangeOf(node).CallAsync("deposit.address", new { asset }, Ct)).GetProperty("address").GetString()!;
        var chain = asset == "SKY" ? _sky : _btc;
        var tx = chain.Pay(address, units);
        chain.MineBlocks(3);
        await Service.PollChainsAsync(Ct);
        return tx;
    }

    /// <summary>Another account, logged in with its own key.</summary>
    private async Task<ExchangeClient> TraderAsync()
    {
        var key = NodeKey.Generate();
        var trader = await ExchangeClient.ConnectAsync(new ExchangeClientOptions
        {
            Broker = new SsmpClientOptions { Port = _broker.LocalEndPoint.Port, Reconnect = false },
            Exchange = ServiceId,
            Key = key,
        }, Ct);
        _traders.Add(trader);
        return trader;
    }

    private async Task<IPage> SignInAsync(TestNode node)
    {
        var page = await _chromium.NewPageAsync(1280, 1400);
        _pages.Add(page);
        var response = await page.GotoAsync(node.Api.DashboardAddress);
        Assert.Equal(200, response!.Status);
        await Expect(page.Locator("#connection")).ToHaveAttributeAsync("data-state", "connected", new() { Timeout = 30_000 });
        await page.GotoAsync($"http://{node.Api.EndPoint}/#/exchange");
        await Expect(page.Locator("#nav-exchange")).ToHaveAttributeAsync("aria-current", "page");
        return page;
    }

    /// <summary>The page has the exchange connected: the node's account shown and the forms enabled.</summary>
    private static async Task ConnectedAsync(IPage page, TestNode node)
    {
        await Expect(page.Locator("#exchange-account .exchange-state")).ToHaveTextAsync("connected", Text);
        await Expect(page.Locator("#exchange-account-address")).ToContainTextAsync(node.Address);
    }

    private static async Task PlaceAsync(IPage page, string side, string quantity, string price)
    {
        await page.Locator("#order-side").SelectOptionAsync(side);
        await page.Locator("#order-type").SelectOptionAsync("limit");
        await page.Locator("#order-price").FillAsync(price);
        await page.Locator("#order-quantity").FillAsync(quantity);
        await page.Locator("#order-submit").ClickAsync();
    }

    [Fact]
    public async Task The_page_shows_the_deposit_address_and_a_payment_to_it_confirming_then_credited_with_the_balance()
    {
        var node = await StartNodeAsync();
        await StartExchangeAsync(node);
        var page = await SignInAsync(node);
        await ConnectedAsync(page, node);

        var coin = page.Locator("#exchange-deposit-addresses li[data-asset='SKY']");
        await coin.Locator("button.show-address").ClickAsync();
        await Expect(coin.Locator(".deposit-address")).ToHaveTextAsync(new Regex(@"\S+"), Text);
        var address = (await coin.Locator(".deposit-address").TextContentAsync())!.Trim();
        Assert.True(_sky.IsValidAddress(address));
        // It is the node's own address on the exchange: the same the node's account gets by asking.
        Assert.Equal(address, (await ExchangeOf(node).CallAsync("deposit.address", new { asset = "SKY" }, Ct)).GetProperty("address").GetString());

        var tx = _sky.Pay(address, 100_000_000);
        _sky.MineBlocks(1);
        await Service.PollChainsAsync(Ct);
        var deposit = page.Locator($"#exchange-deposits tr[data-tx='{tx}']");
        await Expect(deposit.Locator(".state")).ToHaveTextAsync("confirming 1/2", Text);
        await Expect(page.Locator("#exchange-balances tr[data-asset='SKY'] .available")).ToHaveTextAsync("0.000000", Text);

        _sky.MineBlocks(1);
        await Service.PollChainsAsync(Ct);
        await Expect(deposit.Locator(".state")).ToHaveTextAsync("credited", Text);
        await Expect(page.Locator("#exchange-balances tr[data-asset='SKY'] .available")).ToHaveTextAsync("100.000000", Text);
        await Expect(page.Locator("#exchange-frozen")).ToBeHiddenAsync();
    }

    [Fact]
    public async Task A_limit_sell_placed_on_the_page_rests_in_the_book_and_the_open_orders_and_cancel_takes_it_out()
    {
        var node = await StartNodeAsync();
        await StartExchangeAsync(node);
        await FundAsync(node, "SKY", 100_000_000);
        await FundAsync(node, "BTC", 1_000_000);
        var page = await SignInAsync(node);
        await ConnectedAsync(page, node);

        await PlaceAsync(page, "sell", "10", "0.00013");
        var ask = page.Locator("#exchange-book tr.ask[data-price='0.00013000']");
        await Expect(ask.Locator(".quantity")).ToHaveTextAsync("10.000000", Text);
        await Expect(ask).ToHaveClassAsync(new Regex(@"\bbest\b"), new() { Timeout = 30_000 });
        var order = page.Locator("#exchange-orders tr[data-order-id]");
        await Expect(order).ToHaveCountAsync(1, Count);
        await Expect(order.Locator(".price")).ToHaveTextAsync("0.00013000");
        await Expect(page.Locator("#exchange-balances tr[data-asset='SKY'] .held")).ToHaveTextAsync("10.000000", Text);
        var open = (await ExchangeOf(node).CallAsync("orders", new { status = "open" }, Ct)).GetProperty("orders").EnumerateArray().Single();
        Assert.Equal("sell", open.GetProperty("side").GetString());
        Assert.Equal("10.000000", open.GetProperty("remaining").GetString());

        // A bid below it, and another account buying part of the ask: the book, the trades and the balances move.
        await PlaceAsync(page, "buy", "5", "0.00011");
        await Expect(page.Locator("#exchange-book tr.bid[data-price='0.00011000'].best")).ToBeVisibleAsync(Visible);
        var buyer = await TraderAsync();
        var buyerAddress = await buyer.DepositAddressAsync("BTC", Ct);
        _btc.Pay(buyerAddress, 1_000_000);
        _btc.MineBlocks(3);
        await Service.PollChainsAsync(Ct);
        var bought = await buyer.PlaceAsync("SKY/BTC", "buy", "2", price: "0.00013", timeInForce: "ioc", cancellationToken: Ct);
        Assert.Equal("2.000000", bought.GetProperty("filled").GetString());
        await Expect(ask.Locator(".quantity")).ToHaveTextAsync("8.000000", Text);
        await Expect(page.Locator("#exchange-fills tr[data-trade-id]")).ToHaveCountAsync(1, Count);
        await Expect(page.Locator("#exchange-fills tr[data-trade-id]")).ToContainTextAsync("maker");
        await Expect(order.First.Locator(".filled")).ToHaveTextAsync("2.000000", Text);
        await Expect(page.Locator("#notice")).ToBeHiddenAsync(new() { Timeout = 30_000 });
        await Chromium.ScreenshotAsync(page, "exchange");

        // Cancel on the page: the sell leaves the exchange's book and the open orders.
        var sell = page.Locator($"#exchange-orders tr[data-order-id='{open.GetProperty("id").GetInt64()}']");
        await sell.Locator("button.cancel").ClickAsync();
        await Expect(sell).ToHaveCountAsync(0, Count);
        await Expect(ask).ToHaveCountAsync(0, Count);
        await Expect(page.Locator("#exchange-orders tr[data-order-id]")).ToHaveCountAsync(1, Count);
        var left = (await ExchangeOf(node).CallAsync("orders", new { status = "open" }, Ct)).GetProperty("orders").EnumerateArray().ToList();
        Assert.Equal("buy", Assert.Single(left).GetProperty("side").GetString());
        var snapshot = await buyer.CallAsync("book", new { market = "SKY/BTC" }, Ct);
        Assert.Equal(0, snapshot.GetProperty("asks").GetArrayLength());
    }

    [Fact]
    public async Task A_withdrawal_above_the_threshold_is_held_and_approve_on_the_page_broadcasts_it()
    {
        var node = await StartNodeAsync();
        await StartExchangeAsync(node);
        await FundAsync(node, "BTC", 100_000_000);
        var to = SimulatedChainAdapter.SchemeFor("BTC", [.. Enumerable.Repeat((byte)7, 32)]).DepositAddress(0);
        var page = await SignInAsync(node);
        await ConnectedAsync(page, node);

        await page.Locator("#withdraw-asset").SelectOptionAsync("BTC");
        await Expect(page.Locator("#withdraw-rules")).ToContainTextAsync("above 0.50000000 BTC an operator approves", Contains);
        await page.Locator("#withdraw-address").FillAsync(to);
        await page.Locator("#withdraw-amount").FillAsync("0.6");
        await page.Locator("#withdraw-submit").ClickAsync();
        var row = page.Locator("#exchange-withdrawals tr[data-withdrawal-id]");
        await Expect(row).ToHaveCountAsync(1, Count);
        await Expect(row.Locator(".state")).ToContainTextAsync("held", Contains);
        await Expect(page.Locator("#exchange-balances tr[data-asset='BTC'] .available")).ToHaveTextAsync("0.40000000", Text);
        var id = await row.GetAttributeAsync("data-withdrawal-id");

        // The node is an operator of this exchange: the withdrawal waits for it on the same page.
        var waiting = page.Locator($"#exchange-approvals tr[data-withdrawal-id='{id}']");
        await Expect(waiting).ToBeVisibleAsync(Visible);
        await Expect(waiting).ToContainTextAsync("0.60000000");
        await waiting.Locator("button[data-choice='approve']").ClickAsync();
        await Expect(row.Locator(".state")).ToContainTextAsync("broadcast", Contains);
        await Expect(waiting).ToHaveCountAsync(0, Count);
        var withdrawal = (await ExchangeOf(node).CallAsync("withdrawals", null, Ct)).GetProperty("withdrawals").EnumerateArray().Single();
        Assert.Equal("broadcast", withdrawal.GetProperty("state").GetString());
        Assert.Equal(node.Address, withdrawal.GetProperty("approvedBy").GetString());
        Assert.Equal(1, _btc.BroadcastCount(withdrawal.GetProperty("txId").GetString()!));
    }

    [Fact]
    public async Task An_order_the_exchange_refuses_shows_the_exchanges_error_on_the_page()
    {
        var node = await StartNodeAsync();
        await StartExchangeAsync(node);
        await FundAsync(node, "SKY", 1_000_000);
        var page = await SignInAsync(node);
        await ConnectedAsync(page, node);
        await Expect(page.Locator("#exchange-balances tr[data-asset='SKY'] .available")).ToHaveTextAsync("1.000000", Text);

        // 5 SKY to sell from a balance of 1: the exchange says no, in its words, beside the form.
        await PlaceAsync(page, "sell", "5", "0.0001");
        var error = page.Locator("#order-form #order-error");
        await Expect(error).ToBeVisibleAsync(Visible);
        await Expect(error).ToHaveAttributeAsync("data-code", "insufficient_funds");
        var refusal = await Assert.ThrowsAsync<ExchangeApiException>(() =>
            ExchangeOf(node).CallAsync("order.place", new { market = "SKY/BTC", side = "sell", type = "limit", price = "0.0001", quantity = "5" }, Ct));
        await Expect(error.Locator(".error-message")).ToHaveTextAsync(refusal.Message);
        await Expect(page.Locator("#exchange-orders tr[data-order-id]")).ToHaveCountAsync(0);
        await Expect(page.Locator("#toast:visible")).ToHaveCountAsync(0);

        // Over HTTP the same refusal is a 422 carrying the exchange's code and message.
        using var http = new HttpClient();
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", node.Api.Token);
        using var response = await http.PostAsJsonAsync($"http://{node.Api.EndPoint}/api/exchange/orders",
            new { market = "SKY/BTC", side = "sell", quantity = "5", price = "0.0001" }, Ct);
        Assert.Equal((HttpStatusCode)422, response.StatusCode);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>(Ct);
        Assert.Equal("insufficient_funds", problem.GetProperty("code").GetString());
        Assert.Equal(refusal.Message, problem.GetProperty("message").GetString());
    }

    [Fact]
    public async Task A_reversed_deposit_the_account_already_sold_shows_the_account_frozen_with_what_it_owes()
    {
        var node = await StartNodeAsync();
        await StartExchangeAsync(node);
        var deposit = await FundAsync(node, "SKY", 10_000_000);
        var page = await SignInAsync(node);
        await ConnectedAsync(page, node);
        await PlaceAsync(page, "sell", "10", "0.0001");
        await Expect(page.Locator("#exchange-orders tr[data-order-id]")).ToHaveCountAsync(1, Count);
        var buyer = await TraderAsync();
        _btc.Pay(await buyer.DepositAddressAsync("BTC", Ct), 1_000_000);
        _btc.MineBlocks(3);
        await Service.PollChainsAsync(Ct);
        await buyer.PlaceAsync("SKY/BTC", "buy", "10", price: "0.0001", cancellationToken: Ct);
        await Expect(page.Locator("#exchange-balances tr[data-asset='SKY'] .held")).ToHaveTextAsync("0.000000", Text);

        // The chain takes the deposit back after the coins were sold: the account owes them and is frozen.
        _sky.Reorganise(3, [deposit]);
        await Service.PollChainsAsync(Ct);
        var banner = page.Locator("#exchange-frozen");
        await Expect(banner).ToBeVisibleAsync(Visible);
        await Expect(banner).ToContainTextAsync("FROZEN");
        await Expect(banner).ToContainTextAsync("10.000000 SKY");
        await Expect(page.Locator("#exchange-balances tr[data-asset='SKY'] .owed")).ToHaveTextAsync("10.000000", Text);
        await Expect(page.Locator($"#exchange-deposits tr[data-tx='{deposit}'] .state")).ToContainTextAsync("reversed", Contains);

        // And the exchange refuses its orders, which the page says.
        await PlaceAsync(page, "buy", "1", "0.0001");
        await Expect(page.Locator("#order-error")).ToHaveAttributeAsync("data-code", "account_frozen", new() { Timeout = 30_000 });
    }

    [Fact]
    public async Task An_exchange_that_is_not_running_shows_as_unreachable_and_the_page_connects_once_it_starts()
    {
        var node = await StartNodeAsync();
        var page = await SignInAsync(node);
        await Expect(page.Locator("#exchange-unreachable")).ToContainTextAsync("exchange unreachable", Contains);
        await Expect(page.Locator("#exchange-unreachable")).ToContainTextAsync(ServiceId);
        var status = await page.EvaluateAsync<int>("""
            async () => (await fetch('/api/exchange/orders', { method: 'POST', headers: { 'Content-Type': 'application/json' },
              body: JSON.stringify({ market: 'SKY/BTC', side: 'buy', quantity: '1', price: '0.0001' }) })).status
            """);
        Assert.Equal(503, status);
        // The node itself goes on: its own API answers.
        Assert.Equal(node.Address, (await node.Client.StatusAsync(Ct)).Address);

        await StartExchangeAsync(node);
        await ConnectedAsync(page, node);
        await Expect(page.Locator("#exchange-unreachable")).ToHaveCountAsync(0, Count);
        await Expect(page.Locator("#exchange-market")).ToHaveValueAsync("SKY/BTC");
    }

    [Fact]
    public async Task A_node_without_an_exchange_section_shows_how_to_configure_one()
    {
        var node = await StartNodeAsync(withExchange: false);
        var page = await SignInAsync(node);
        var setup = page.Locator("#exchange-setup");
        await Expect(setup).ToBeVisibleAsync(Visible);
        await Expect(setup.Locator("pre")).ToContainTextAsync("\"exchange\": {");
        await Expect(setup.Locator("pre")).ToContainTextAsync("\"service\"");
        await Expect(setup.Locator("pre")).ToContainTextAsync(_broker.LocalEndPoint.ToString());
        await Expect(page.Locator("#exchange-main")).ToBeHiddenAsync();

        var status = await page.EvaluateAsync<int>("""
            async () => (await fetch('/api/exchange/deposit-address', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"asset":"SKY"}' })).status
            """);
        Assert.Equal(409, status);
    }

    private static Task UntilAsync(Func<bool> condition, string what) => UntilAsync(() => Task.FromResult(condition()), what);

    /// <summary>Asks again every 50 ms until <paramref name="condition"/> holds, within <see cref="Bound"/>.</summary>
    private static async Task UntilAsync(Func<Task<bool>> condition, string what)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        deadline.CancelAfter(Bound);
        using var tick = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        try
        {
            while (!await condition())
                await tick.WaitForNextTickAsync(deadline.Token);
        }
        catch (OperationCanceledException) when (!Ct.IsCancellationRequested)
        {
            throw new Xunit.Sdk.XunitException($"{what} did not happen within {Bound.TotalSeconds} s");
        }
    }

    public async ValueTask DisposeAsync()
    {
        // The pages first: they would go on asking the nodes below as those stop.
        foreach (var page in _pages)
            await page.Context.CloseAsync();
        foreach (var node in _nodes)
            await node.DisposeAsync();
        foreach (var trader in _traders)
            await trader.DisposeAsync();
        if (_service is not null)
            await _service.DisposeAsync();
        await _broker.DisposeAsync();
        _sky.Dispose();
        _btc.Dispose();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
        // The exchange logs what goes wrong inside it; nothing should have.
        Assert.True(_serviceLogs.Errors.IsEmpty, "the exchange logged errors:\n" + string.Join("\n", _serviceLogs.Errors));
    }
}
