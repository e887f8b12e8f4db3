using System.Net;
using Microsoft.Extensions.Logging;
using Skymesh.Exchange;
using Skymesh.Exchange.Chains;
using Skymesh.Exchange.Client;
using Skymesh.Exchange.Service;
using Skymesh.Identity;
using Skymesh.Ssmp.Client;

namespace Skymesh.Cli;

/// <summary>
/// The exchange inside <c>skymesh demo</c>: the service on the demo's broker with SKY and BTC on simulated chains (a
/// block a second), and a few simulated traders who fund their accounts by paying their deposit addresses on those
/// chains, then make a market and take from it over the real API while the mesh runs.
/// </summary>
internal sealed class DemoExchange : IAsyncDisposable
{
    private const string Market = "SKY/BTC";

    /// <summary>What <see cref="FundAsync"/> sends each node, in SKY units (100 SKY).</summary>
    public const long NodeFunding = 100_000_000;

    private readonly ExchangeService _service;
    private readonly List<SimulatedChain> _chains;
    private readonly List<ExchangeClient> _traders = [];
    private readonly List<NodeKey> _keys = [];
    private readonly NodeKey _exchangeKey;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _running = [];
    private long _placed;
    private long _refused;

    private DemoExchange(ExchangeService service, List<SimulatedChain> chains, NodeKey exchangeKey)
    {
        _service = service;
        _chains = chains;
        _exchangeKey = exchangeKey;
    }

    public ExchangeService Service => _service;

    public long Placed => Interlocked.Read(ref _placed);

    public static async Task<DemoExchange> StartAsync(string directory, IPEndPoint broker, IReadOnlyCollection<string> operators, ILoggerFactory logging, CancellationToken cancellationToken)
    {
        var time = TimeProvider.System;
        Directory.CreateDirectory(directory);
        var chains = new List<SimulatedChain>();
        var adapters = new List<IChainAdapter>();
        var seed = System.Security.Cryptography.RandomNumberGenerator.GetBytes(32);
        foreach (var asset in new[] { "SKY", "BTC" })
        {
            var chain = new SimulatedChain(new SimulatedChainOptions(asset)
            {
                StateFile = Path.Combine(directory, $"simchain-{asset.ToLowerInvariant()}.json"),
                BlockInterval = TimeSpan.FromSeconds(1),
            }, time);
            chains.Add(chain);
            adapters.Add(SimulatedChainAdapter.Create(chain, seed));
        }
        var exchangeKey = NodeKey.Generate();
        var service = await ExchangeService.StartAsync(new ExchangeServiceOptions
        {
            Directory = directory,
            Operators = operators,
            PollInterval = TimeSpan.FromMilliseconds(500),
            Coins = new Dictionary<string, CoinOptions>
            {
                ["SKY"] = new() { Confirmations = 2 },
                ["BTC"] = new() { Confirmations = 3, Withdrawals = new WithdrawalLimits { ApprovalThreshold = 10_000_000, Confirmations = 2 } },
            },
        }, adapters, new SsmpClientOptions { Host = broker.Address.ToString(), Port = broker.Port, Key = exchangeKey, Scheme = "key" }, time, logging, background: true, cancellationToken);
        foreach (var chain in chains)
            chain.Start();
        return new DemoExchange(service, chains, exchangeKey);
    }

    /// <summary>
    /// Funds <paramref name="count"/> traders through the simulated chains (a payment to each deposit address, blocks mined
    /// at once so the demo need not wait for them) and sets them trading: one makes a market around a drifting price,
    /// the others take from it now and then.
    /// </summary>
    public async Task StartTradersAsync(IPEndPoint broker, int count, CancellationToken cancellationToken)
    {
        for (var i = 0; i < count; i++)
        {
            var key = NodeKey.Generate();
            _keys.Add(key);
            _traders.Add(await ExchangeClient.ConnectAsync(new ExchangeClientOptions
            {
                Broker = new SsmpClientOptions { Host = broker.Address.ToString(), Port = broker.Port, Reconnect = false },
                Exchange = _service.Id,
                Key = key,
            }, cancellationToken));
        }
        var sky = _chains.First(c => c.Asset == "SKY");
        var btc = _chains.First(c => c.Asset == "BTC");
        foreach (var trader in _traders)
        {
            sky.Pay(await trader.DepositAddressAsync("SKY", cancellationToken), 5_000_000_000);     // 5,000 SKY
            btc.Pay(await trader.DepositAddressAsync("BTC", cancellationToken), 500_000_000);       // 5 BTC
        }
        sky.MineBlocks(3);
        btc.MineBlocks(3);
        await _service.PollChainsAsync(cancellationToken);
        _running.Add(Background.Run(() => MakeMarketAsync(_traders[0], _stop.Token)));
        for (var i = 1; i < _traders.Count; i++)
        {
            var trader = _traders[i];
            var seed = i;
            _running.Add(Background.Run(() => TakeAsync(trader, seed, _stop.Token)));
        }
    }

    /// <summary>Sends <paramref name="account"/> 100 SKY and 0.1 BTC from the first trader, for it to pay relays and trade with.</summary>
    public async Task FundAsync(string account, CancellationToken cancellationToken)
    {
        await _traders[0].CallAsync("transfer", new { to = account, asset = "SKY", amount = "100", key = $"demo-fund-sky-{account}" }, cancellationToken);
        await _traders[0].CallAsync("transfer", new { to = account, asset = "BTC", amount = "0.1", key = $"demo-fund-btc-{account}" }, cancellationToken);
    }

    /// <summary>Quotes five levels a side around a price that drifts, replacing them every half second.</summary>
    private async Task MakeMarketAsync(ExchangeClient maker, CancellationToken stop)
    {
        var random = new Random(7);
        var mid = 1000L;   // 0.01 BTC a SKY, in the API's steps of 0.00001
        try
        {
            while (!stop.IsCancellationRequested)
            {
                await Try(() => maker.CancelAllAsync(Market, stop));
                mid = Math.Clamp(mid + random.Next(-3, 4), 900, 1100);
                for (var level = 1; level <= 5; level++)
                {
                    await Try(() => maker.PlaceAsync(Market, "buy", $"{random.Next(1, 20)}", Price(mid - level * 2), cancellationToken: stop));
                    await Try(() => maker.PlaceAsync(Market, "sell", $"{random.Next(1, 20)}", Price(mid + level * 2), cancellationToken: stop));
                }
                await Task.Delay(TimeSpan.FromMilliseconds(500), TimeProvider.System, stop);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Every so often buys or sells a few SKY at the market, immediate-or-cancel.</summary>
    private async Task TakeAsync(ExchangeClient taker, int seed, CancellationToken stop)
    {
        var random = new Random(seed);
        try
        {
            while (!stop.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(random.Next(200, 700)), TimeProvider.System, stop);
                var side = random.Next(2) == 0 ? "buy" : "sell";
                await Try(() => taker.PlaceAsync(Market, side, $"{random.Next(1, 8)}", side == "buy" ? Price(1200) : Price(800), timeInForce: "ioc", cancellationToken: stop));
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static string Price(long steps) => AssetAmount.Format(steps * 1000, 8);

    private async Task Try(Func<Task> call)
    {
        try
        {
            await call();
            Interlocked.Increment(ref _placed);
        }
        catch (ExchangeApiException)
        {
            Interlocked.Increment(ref _refused);
        }
    }

    /// <summary>One line for the demo's end: what the traders did and what the exchange holds.</summary>
    public async Task<string> SummaryAsync(CancellationToken cancellationToken)
    {
        if (_traders.Count == 0)
            return "exchange: no traders";
        var fills = 0;
        foreach (var trader in _traders)
            fills += (await trader.FillsAsync(Market, cancellationToken)).Count;
        var book = await _traders[0].CallAsync("book", new { market = Market, depth = 1 }, cancellationToken);
        var bid = book.GetProperty("bids").GetArrayLength() > 0 ? book.GetProperty("bids")[0][0].GetString() : "-";
        var ask = book.GetProperty("asks").GetArrayLength() > 0 ? book.GetProperty("asks")[0][0].GetString() : "-";
        return $"Exchange: {_traders.Count} simulated traders made {Placed:N0} requests ({Interlocked.Read(ref _refused):N0} refused) and {fills:N0} fills on {Market}; best bid {bid}, best ask {ask}; {_service.Committed:N0} commands in its journal.";
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await Task.WhenAll(_running);
        }
        catch (OperationCanceledException)
        {
        }
        foreach (var trader in _traders)
            await trader.DisposeAsync();
        foreach (var chain in _chains)
            chain.Stop();
        await _service.DisposeAsync();
        foreach (var chain in _chains)
            chain.Dispose();
        foreach (var key in _keys)
            key.Dispose();
        _exchangeKey.Dispose();
        _stop.Dispose();
    }
}
