namespace Skymesh.Exchange.Service;

/// <summary>How one coin's deposits and withdrawals are run.</summary>
public sealed record CoinOptions
{
    /// <summary>Confirmations before a deposit is credited.</summary>
    public int Confirmations { get; init; } = 3;

    /// <summary>Blocks below the tip that are scanned again every time, for reorganisations; a credit older than this is final.</summary>
    public int WatchDepth { get; init; } = 100;

    public WithdrawalLimits Withdrawals { get; init; } = new();
}

/// <summary>The exchange service's settings (docs/exchange-api.md; `skymesh exchange serve`).</summary>
public sealed class ExchangeServiceOptions
{
    /// <summary>The exchange directory: exchange.json, journal, funds.db, sessions.json.</summary>
    public required string Directory { get; init; }

    /// <summary>Its assets and markets when the directory is new (<see cref="ExchangeDefinition.Default"/> if null).</summary>
    public ExchangeDefinition? Definition { get; init; }

    /// <summary>The prefix of its topics: <c>NAME.md.MARKET</c> (market data) and <c>NAME.sessions</c> (presence).</summary>
    public string Name { get; init; } = "exchange";

    /// <summary>
    /// Trust the broker's logins: a request without a signature acts for the account its sender logged in as (the broker
    /// checked the key). Off when the broker is not the operator's own: then every request must be signed.
    /// </summary>
    public bool SessionAuth { get; init; } = true;

    /// <summary>How far a request's timestamp may be from the exchange's clock, either way.</summary>
    public TimeSpan RequestWindow { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Requests per second an account may make on average (each order of a batch counts).</summary>
    public int RateLimitPerSecond { get; init; } = 1_000;

    /// <summary>Requests an account may make at once after a quiet spell.</summary>
    public int RateLimitBurst { get; init; } = 2_000;

    /// <summary>Most open orders one account may have.</summary>
    public int MaxOpenOrders { get; init; } = 10_000;

    /// <summary>Most orders or cancels in one batch.</summary>
    public int MaxBatch { get; init; } = 100;

    /// <summary>Per coin (by asset code); a coin not named gets the defaults.</summary>
    public IReadOnlyDictionary<string, CoinOptions> Coins { get; init; } = new Dictionary<string, CoinOptions>();

    /// <summary>How often the chains are scanned and unfinished withdrawals moved on.</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>How often every market topic gets a heartbeat.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Account keys (64 hex digits) allowed the operator's methods: listing, approving and rejecting withdrawals.</summary>
    public IReadOnlyCollection<string> Operators { get; init; } = [];

    /// <summary>Told the topic and sequence number of every diff as it goes to the broker (0 for a heartbeat): for measuring the feed's lag.</summary>
    public Action<string, long>? MarketDataSent { get; init; }

    public CoinOptions Coin(string asset) => Coins.TryGetValue(asset, out var options) ? options : new CoinOptions();
}
