using System.Collections.Concurrent;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Exchange.Chains;
using Skymesh.Exchange.Journal;
using Skymesh.Exchange.Matching;
using Skymesh.Identity;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Exchange.Service;

/// <summary>
/// The exchange as a service (docs/exchange-api.md): the engine on its own thread with a group-committed journal, the
/// chains' deposits and withdrawals, and the API over SSMP — requests and answers as SSMP calls to this service's SSMP
/// id, market data on MCAST topics, trader sessions from SSMP presence. Started with <see cref="StartAsync"/>; disposing
/// it stops everything and leaves the directory ready to be opened again.
/// </summary>
public sealed partial class ExchangeService : IAsyncDisposable
{
    /// <summary>The purpose a signed request is signed under (see docs/exchange-api.md, "Signed requests").</summary>
    public const string RequestPurpose = "exchange/request";

    private readonly ExchangeServiceOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly EngineLoop _loop;
    private readonly OrderHistory _history;
    private readonly MarketData _marketData;
    private readonly FundsStore _funds;
    private readonly MarketRules[] _markets;
    private readonly Dictionary<string, int> _assetIndex;
    private readonly Dictionary<string, DepositTracker> _deposits = new(StringComparer.Ordinal);
    private readonly Dictionary<string, WithdrawalProcessor> _withdrawals = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _background = [];
    private readonly ConcurrentDictionary<string, AccountGate> _gates = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, NodeVerifier> _verifiers = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string?> _sessionAccounts = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, byte> _present = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _cancelOnDisconnect = new(StringComparer.Ordinal);
    private readonly Lock _sessionsLock = new();
    private readonly long _started;
    private SsmpPeer? _peer;
    private long _requests;
    private long _refused;
    private long _canceledOnDisconnect;

    private ExchangeService(ExchangeServiceOptions options, ExchangeDefinition definition, TimeProvider time, ILoggerFactory loggers, FundsStore funds)
    {
        _options = options;
        _time = time;
        _logger = loggers.CreateLogger("Skymesh.Exchange");
        _funds = funds;
        _started = time.GetUtcNow().ToUnixTimeMilliseconds();
        Definition = definition;
        _assetIndex = definition.Assets.Select((a, i) => (a.Code, i)).ToDictionary(p => p.Code, p => p.i, StringComparer.Ordinal);
        _markets = [.. definition.Markets.Select((m, i) => new MarketRules(i, m, definition.Assets[_assetIndex[m.Base]], definition.Assets[_assetIndex[m.Quote]]))];
        _history = new OrderHistory(definition.Markets);
        _marketData = new MarketData(_markets, options.Name, time.GetUtcNow().ToUnixTimeMilliseconds().ToString(System.Globalization.CultureInfo.InvariantCulture));
        var journal = Path.Combine(options.Directory, "journal");
        _loop = new EngineLoop((replay, events) => JournaledExchange.Open(journal, definition.Assets, definition.Markets, events, replay: replay),
            time, [_history, _marketData]);
    }

    public ExchangeDefinition Definition { get; }

    public IReadOnlyList<MarketRules> Markets => _markets;

    /// <summary>The SSMP id requests go to.</summary>
    public string Id => _peer?.Id ?? "";

    public string SessionsTopic => $"{_options.Name}.sessions";

    public long Requests => Interlocked.Read(ref _requests);

    /// <summary>Requests refused: bad input, authentication, replay, time window, rate limit, rules.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    public long CanceledOnDisconnect => Interlocked.Read(ref _canceledOnDisconnect);

    public long MarketDataMessages => _marketData.Messages;

    /// <summary>Commands the journal holds.</summary>
    public long Committed => _loop.Committed;

    public string MarketTopic(string symbol) => _marketData.TopicOf(_markets.First(m => m.Symbol == symbol));

    /// <summary>The tracker of a coin's deposits (for tests and the CLI: <see cref="DepositTracker.PollAsync"/>).</summary>
    internal DepositTracker DepositsOf(string asset) => _deposits[asset];

    internal WithdrawalProcessor WithdrawalsOf(string asset) => _withdrawals[asset];

    /// <summary>
    /// Opens the exchange in <see cref="ExchangeServiceOptions.Directory"/> (replaying its journal), connects to the broker
    /// with <paramref name="ssmp"/> and starts answering. Each chain serves the asset of its <see cref="IChainAdapter.Asset"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The directory holds something that is not this exchange's.</exception>
    /// <exception cref="IOException">Another process has the exchange open.</exception>
    public static async Task<ExchangeService> StartAsync(ExchangeServiceOptions options, IReadOnlyList<IChainAdapter> chains, SsmpClientOptions ssmp,
        TimeProvider? time = null, ILoggerFactory? loggers = null, bool background = true, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(chains);
        ArgumentNullException.ThrowIfNull(ssmp);
        time ??= TimeProvider.System;
        loggers ??= NullLoggerFactory.Instance;
        if (!SsmpGrammar.IsValidId(options.Name) || options.Name.Length > 40)
            throw new ArgumentException($"The exchange's name '{options.Name}' must be an SSMP id of at most 40 characters.", nameof(options));
        var definition = ExchangeDefinition.LoadOrCreate(options.Directory, options.Definition);
        var funds = FundsStore.Open(Path.Combine(options.Directory, "funds.db"));
        ExchangeService service;
        try
        {
            service = new ExchangeService(options, definition, time, loggers, funds);
        }
        catch
        {
            funds.Dispose();
            throw;
        }
        try
        {
            foreach (var chain in chains)
            {
                if (!service._assetIndex.TryGetValue(chain.Asset, out var asset))
                    throw new ArgumentException($"This exchange has no asset {chain.Asset} for its chain.", nameof(chains));
                var coin = options.Coin(chain.Asset);
                service._deposits[chain.Asset] = new DepositTracker(chain, funds, service._loop, asset, coin.Confirmations, coin.WatchDepth, time, service._logger);
                service._withdrawals[chain.Asset] = new WithdrawalProcessor(chain, funds, service._loop, asset, coin.Withdrawals, time, service._logger);
            }
            await service._loop.RunAsync(s =>
            {
                service._marketData.Start(s.Engine);
                return 0;
            });
            service.LoadSessions();
            await service.StartSettlementAsync(cancellationToken);
            var clientOptions = ssmp.Clone();
            clientOptions.OnEvent = service.OnSsmpEvent;
            service._peer = await SsmpPeer.ConnectAsync(clientOptions, PeerOptions(), cancellationToken);
            service.RegisterHandlers(service._peer);
            service.RegisterSettlement(service._peer);
            service._peer.Client.StateChanged += service.OnConnectionState;
            await service._peer.Client.SubscribeAsync(service.SessionsTopic, presence: true, cancellationToken);
            // Traders marked to have their orders cancelled who are not here now left while the exchange was down.
            await service.ReconcileSessionsAsync(cancellationToken);
            service._background.Add(Background.Run(service.PumpMarketDataAsync));
            if (background)
                service.StartBackground();
            return service;
        }
        catch
        {
            await service.DisposeAsync();
            throw;
        }
    }

    private void StartBackground()
    {
        foreach (var asset in _deposits.Keys)
        {
            var deposits = _deposits[asset];
            var withdrawals = _withdrawals[asset];
            _background.Add(Every(_options.PollInterval, async token =>
            {
                await deposits.PollAsync(token);
                await withdrawals.ProcessAllAsync(token);
            }));
        }
        _background.Add(Every(_options.HeartbeatInterval, _ => _loop.RunAsync(s =>
        {
            _marketData.Heartbeat(s.Now);
            return 0;
        })));
    }

    /// <summary>Runs <paramref name="tick"/> every <paramref name="interval"/> until the service stops; a failing tick is logged and the next one runs.</summary>
    private Task Every(TimeSpan interval, Func<CancellationToken, Task> tick)
    {
        var token = _stopping.Token;
        return Background.Run(async () =>
        {
            while (!token.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(interval, _time, token);
                    await tick(token);
                }
                catch (OperationCanceledException) when (token.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    Log.TickFailed(_logger, e);
                }
            }
        });
    }

    /// <summary>A heartbeat on every market topic now (what the background does every heartbeat interval).</summary>
    public Task HeartbeatAsync() => _loop.RunAsync(s =>
    {
        _marketData.Heartbeat(s.Now);
        return 0;
    });

    /// <summary>One round of the chains' work now: scan deposits and move withdrawals on (what the background does every poll interval).</summary>
    public async Task PollChainsAsync(CancellationToken cancellationToken = default)
    {
        foreach (var asset in _deposits.Keys)
        {
            await _deposits[asset].PollAsync(cancellationToken);
            await _withdrawals[asset].ProcessAllAsync(cancellationToken);
        }
    }

    private async Task PumpMarketDataAsync()
    {
        var reader = _marketData.Outgoing;
        var sends = new List<Task>();
        try
        {
            while (await reader.WaitToReadAsync(_stopping.Token))
            {
                // Requests to the broker go out in the order they are made: pipelined, then awaited together.
                while (sends.Count < 256 && reader.TryRead(out var message))
                {
                    _options.MarketDataSent?.Invoke(message.Topic, message.Sequence);
                    sends.Add(_peer!.Client.McastAsync(message.Topic, message.Payload, _stopping.Token));
                }
                try
                {
                    await Task.WhenAll(sends);
                }
                catch (Exception e) when (e is SsmpException or ObjectDisposedException)
                {
                    Log.MarketDataFailed(_logger, e.Message);
                }
                sends.Clear();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    // ---- presence: cancel-on-disconnect

    private void OnSsmpEvent(SsmpEvent e)
    {
        if (e.Target != SessionsTopic)
            return;
        if (e.Verb == SsmpVerb.Subscribe)
        {
            _present[e.From] = 0;
        }
        else if (e.Verb == SsmpVerb.Unsubscribe)
        {
            _present.TryRemove(e.From, out _);
            if (_cancelOnDisconnect.TryGetValue(e.From, out var account))
                _ = CancelForDisconnectAsync(e.From, account);
        }
    }

    /// <summary>
    /// The exchange's own connection to the broker dropped: who is on the sessions topic is learned again from the new
    /// connection's presence snapshot (the client subscribes again by itself), and whoever holds a cancel-on-disconnect
    /// session but is not there left while the exchange could not see it go.
    /// </summary>
    private void OnConnectionState(SsmpClientState state)
    {
        if (state == SsmpClientState.Reconnecting)
        {
            _present.Clear();
            return;
        }
        if (state != SsmpClientState.Connected || _stopping.IsCancellationRequested)
            return;
        _ = Background.Run(async () =>
        {
            try
            {
                await ReconcileSessionsAsync(_stopping.Token);
            }
            catch (Exception e) when (e is SsmpException or OperationCanceledException or ObjectDisposedException)
            {
                // Dropped again, or stopping: the next connection reconciles.
                Log.TickFailed(_logger, e);
            }
        });
    }

    /// <summary>Cancels the orders of cancel-on-disconnect sessions that are not on the sessions topic now.</summary>
    private async Task ReconcileSessionsAsync(CancellationToken cancellationToken)
    {
        // The broker sends who is subscribed after its answer to the subscription: one more request's answer comes after
        // all of them.
        await _peer!.Client.McastAsync($"{SessionsTopic}.sync", "s"u8.ToArray(), cancellationToken);
        foreach (var (session, account) in _cancelOnDisconnect)
        {
            if (!_present.ContainsKey(session))
                await CancelForDisconnectAsync(session, account);
        }
    }

    private async Task CancelForDisconnectAsync(string session, string account)
    {
        if (!_cancelOnDisconnect.TryRemove(new KeyValuePair<string, string>(session, account)))
            return;
        SaveSessions();
        try
        {
            var canceled = await _loop.RunAsync(s =>
            {
                var owner = s.FindOwner(account);
                return owner < 0 ? 0 : s.Submit(ExchangeCommand.CancelAll(owner) with { Amount = s.Now }).Count(e => e.Kind == EventKind.Canceled);
            });
            Interlocked.Add(ref _canceledOnDisconnect, canceled);
            Log.CanceledOnDisconnect(_logger, account, canceled);
        }
        catch (Exception e) when (e is ExchangeStoppedException or ObjectDisposedException)
        {
            Log.TickFailed(_logger, e);
        }
    }

    private string SessionsPath => Path.Combine(_options.Directory, "sessions.json");

    private void LoadSessions()
    {
        if (!File.Exists(SessionsPath))
            return;
        try
        {
            var saved = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(SessionsPath)) ?? [];
            foreach (var (session, account) in saved)
                _cancelOnDisconnect[session] = account;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{SessionsPath} is not the exchange's list of sessions: {e.Message}", e);
        }
    }

    private void SaveSessions()
    {
        lock (_sessionsLock)
        {
            var temporary = SessionsPath + ".tmp";
            var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using (var file = new FileStream(temporary, options))
            {
                JsonSerializer.Serialize(file, new Dictionary<string, string>(_cancelOnDisconnect));
                file.Flush(flushToDisk: true);
            }
            File.Move(temporary, SessionsPath, overwrite: true);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_stopping.IsCancellationRequested)
            return;
        await _stopping.CancelAsync();
        if (_peer is not null)
            await _peer.DisposeAsync();
        _marketData.Complete();
        try
        {
            await Task.WhenAll(_background);
        }
        catch (OperationCanceledException)
        {
        }
        _settlement?.Dispose();
        _loop.Dispose();
        _funds.Dispose();
        _stopping.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 720, Level = LogLevel.Warning, Message = "A background round of the exchange failed")]
        public static partial void TickFailed(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 721, Level = LogLevel.Warning, Message = "Market data not sent: {Reason}")]
        public static partial void MarketDataFailed(ILogger logger, string reason);

        [LoggerMessage(EventId = 722, Level = LogLevel.Information, Message = "{Account} left: {Count} order(s) cancelled on disconnect")]
        public static partial void CanceledOnDisconnect(ILogger logger, string account, int count);

        [LoggerMessage(EventId = 723, Level = LogLevel.Error, Message = "Request {Method} from {From} failed")]
        public static partial void RequestFailed(ILogger logger, string method, string from, Exception exception);
    }
}
