using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Exchange.Chains;
using Skymesh.Exchange.Client;
using Skymesh.Exchange.Service;
using Skymesh.Identity;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;
using Skymesh.Tests;

namespace Skymesh.Exchange.Tests.Service;

/// <summary>
/// A real SSMP broker on loopback (key logins for accounts, open for the rest), simulated SKY and BTC chains and the
/// exchange service in a temporary directory — all on one frozen clock, the background rounds off (a test polls the
/// chains when it wants them polled). Traders are real <see cref="ExchangeClient"/>s.
/// </summary>
internal sealed class ExchangeWorld : IAsyncDisposable
{
    public static readonly DateTimeOffset T0 = new(2026, 12, 1, 12, 0, 0, TimeSpan.Zero);
    private static readonly byte[] Seed = [.. Enumerable.Range(1, 32).Select(i => (byte)i)];

    private readonly List<ExchangeClient> _clients = [];
    private readonly Func<string, ExchangeServiceOptions> _options;

    private readonly bool _exchangeReconnects;

    private ExchangeWorld(Func<string, ExchangeServiceOptions> options, bool exchangeReconnects)
    {
        _options = options;
        _exchangeReconnects = exchangeReconnects;
        Directory = System.IO.Directory.CreateTempSubdirectory("skymesh-exchange-").FullName;
        Broker = new SsmpBroker(new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0), TimeProvider = Time,
            Authenticators = { new KeyAuthenticator(), new OpenAuthenticator() } }, Logs);
        Broker.Start();
        Sky = new SimulatedChain(new SimulatedChainOptions("SKY") { StateFile = Path.Combine(Directory, "sim-sky.json") }, Time);
        Btc = new SimulatedChain(new SimulatedChainOptions("BTC") { StateFile = Path.Combine(Directory, "sim-btc.json") }, Time);
    }

    public FakeTimeProvider Time { get; } = new(T0);

    public CapturingLoggerFactory Logs { get; } = new();

    public string Directory { get; }

    public SsmpBroker Broker { get; }

    public SimulatedChain Sky { get; }

    public SimulatedChain Btc { get; }

    public ExchangeService Service { get; private set; } = null!;

    public NodeKey Operator { get; } = NodeKey.Generate();

    public static ExchangeServiceOptions DefaultOptions(string directory, NodeKey op) => new()
    {
        Directory = directory,
        Coins = new Dictionary<string, CoinOptions>
        {
            ["SKY"] = new() { Confirmations = 2, WatchDepth = 20 },
            ["BTC"] = new() { Confirmations = 3, WatchDepth = 20, Withdrawals = new WithdrawalLimits { ApprovalThreshold = 50_000_000, Confirmations = 2 } },
        },
        Operators = [op.Address.ToString()],
    };

    /// <summary>A broker, the two simulated chains and the service; with <paramref name="exchangeReconnects"/> the service's own client reconnects (10–100 ms of <see cref="Time"/>) when its connection drops.</summary>
    public static async Task<ExchangeWorld> StartAsync(Func<string, NodeKey, ExchangeServiceOptions>? options = null, bool exchangeReconnects = false)
    {
        ExchangeWorld? world = null;
        world = new ExchangeWorld(dir => (options ?? DefaultOptions)(dir, world!.Operator), exchangeReconnects);
        await world.StartServiceAsync();
        return world;
    }

    private SsmpClientOptions BrokerOptions(string id, TimeProvider? time = null) => new()
    {
        Port = Broker.LocalEndPoint.Port,
        Id = id,
        TimeProvider = time ?? Time,
        Reconnect = false,
    };

    private async Task StartServiceAsync()
    {
        var ssmp = BrokerOptions("exchange");
        if (_exchangeReconnects)
        {
            ssmp.Reconnect = true;
            ssmp.ReconnectDelayMin = TimeSpan.FromMilliseconds(10);
            ssmp.ReconnectDelayMax = TimeSpan.FromMilliseconds(100);
        }
        Service = await ExchangeService.StartAsync(_options(Directory), [SimulatedChainAdapter.Create(Sky, Seed), SimulatedChainAdapter.Create(Btc, Seed)],
            ssmp, Time, Logs, background: false, TestContext.Current.CancellationToken);
    }

    /// <summary>Stops the service (everything it acknowledged is on disk) and starts it again on the same directory and chains.</summary>
    public async Task RestartAsync()
    {
        await Service.DisposeAsync();
        await StartServiceAsync();
    }

    public async Task<ExchangeClient> TraderAsync(NodeKey? key = null, bool signed = false, string? id = null, TimeProvider? clock = null)
    {
        var broker = BrokerOptions(id ?? "", clock);
        var client = await ExchangeClient.ConnectAsync(new ExchangeClientOptions { Broker = broker, Exchange = "exchange", Key = key, Signed = signed },
            TestContext.Current.CancellationToken);
        _clients.Add(client);
        return client;
    }

    /// <summary>A trader logged in with <paramref name="key"/> whose account holds <paramref name="amount"/> units of <paramref name="asset"/>.</summary>
    public async Task<ExchangeClient> FundedTraderAsync(NodeKey key, string asset, long amount)
    {
        var trader = await TraderAsync(key);
        await FundAsync(trader, asset, amount);
        return trader;
    }

    /// <summary>Pays <paramref name="amount"/> units to the trader's deposit address and mines until it is credited.</summary>
    public async Task FundAsync(ExchangeClient trader, string asset, long amount)
    {
        var chain = asset == "SKY" ? Sky : Btc;
        var address = await trader.DepositAddressAsync(asset, TestContext.Current.CancellationToken);
        chain.Pay(address, amount);
        chain.MineBlocks(3);
        await Service.PollChainsAsync(TestContext.Current.CancellationToken);
    }

    public static string Decimal(JsonElement e, string name) => e.GetProperty(name).GetString()!;

    public async ValueTask DisposeAsync()
    {
        foreach (var client in _clients)
            await client.DisposeAsync();
        await Service.DisposeAsync();
        await Broker.DisposeAsync();
        Sky.Dispose();
        Btc.Dispose();
        Operator.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
