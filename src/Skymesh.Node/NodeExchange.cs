using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Skymesh.Exchange.Client;
using Skymesh.Exchange.Service;
using Skymesh.Identity;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Node;

/// <summary>
/// The node's account on an exchange service (node.json's <c>exchange</c>; docs/dashboard.md, "Exchange"). The node
/// trades as its own address: every request is signed with the node key, sent over a broker login of its own under an
/// open id (<see cref="LoginId"/>), because the key login under the node's address belongs to its control bus and a
/// second one would push that out. The connection is made in the background and made again when the broker drops it
/// for good, so an exchange that is away never stops the node; callers get <see cref="ExchangeUnreachableException"/>
/// meanwhile. The books the dashboard shows are kept from the market-data topics while someone asks for them.
/// </summary>
public sealed partial class NodeExchange : IAsyncDisposable
{
    private static readonly TimeSpan FirstRetry = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan LastRetry = TimeSpan.FromSeconds(30);

    /// <summary>A book nobody asked for in this long is unsubscribed.</summary>
    private static readonly TimeSpan BookIdle = TimeSpan.FromSeconds(60);

    /// <summary>Requests go through a node's page: a short wait, a single retry, then "unreachable".</summary>
    private static readonly SsmpCallOptions Calls = new() { AttemptTimeout = TimeSpan.FromSeconds(3), Attempts = 2 };

    private readonly NodeKey _key;
    private readonly TimeProvider _time;
    private readonly Random? _random;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly AsyncSignal _lost = new();
    private readonly Lock _booksLock = new();
    private readonly Dictionary<string, WatchedBook> _books = new(StringComparer.Ordinal);
    private Task _loop = Task.CompletedTask;
    private volatile ExchangeClient? _client;
    private volatile string? _lastError;

    private sealed class WatchedBook(Task<LocalBook> subscribed, long askedAt)
    {
        public Task<LocalBook> Subscribed { get; } = subscribed;

        public long AskedAt { get; set; } = askedAt;
    }

    private NodeExchange(NodeExchangeOptions options, NodeKey key, TimeProvider time, Random? random, ILoggerFactory loggerFactory)
    {
        Options = options;
        _key = key;
        _time = time;
        _random = random;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger("Skymesh.Node.Exchange");
    }

    public NodeExchangeOptions Options { get; }

    /// <summary>The account: the node's address.</summary>
    public string Account => _key.Address.ToString();

    /// <summary>The broker login: open, under an id of its own (requests are signed, so the login proves nothing).</summary>
    public string LoginId => $"node-{Account[..16]}-exchange";

    /// <summary>Logged into the broker (whether the exchange answers is known only by asking it).</summary>
    public bool LoggedIn => _client is { } client && client.Peer.Client.State == SsmpClientState.Connected;

    /// <summary>Why the broker cannot be reached, or why the exchange did not answer the last request; null when it did.</summary>
    public string? LastError => _lastError;

    /// <summary>Starts connecting in the background; returns at once.</summary>
    public static NodeExchange Start(NodeExchangeOptions options, NodeKey key, TimeProvider time, Random? random, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        var exchange = new NodeExchange(options, key, time, random, loggerFactory);
        exchange._loop = Background.Run(exchange.RunAsync);
        return exchange;
    }

    private async Task RunAsync()
    {
        var delay = FirstRetry;
        while (!_stop.IsCancellationRequested)
        {
            ExchangeClient client;
            try
            {
                var broker = new SsmpClientOptions
                {
                    Host = Options.Host,
                    Port = Options.Port,
                    Id = LoginId,
                    ServerName = Options.BrokerName,
                    TimeProvider = _time,
                    LoggerFactory = _loggerFactory,
                };
                if (_random is not null)
                    broker.Random = _random;
                client = await ExchangeClient.ConnectAsync(new ExchangeClientOptions
                {
                    Broker = broker,
                    Exchange = Options.Service,
                    Key = _key,
                    Signed = true,
                    Name = Options.Name,
                    Calls = Calls,
                }, _stop.Token);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is SsmpException or SocketException or IOException or TimeoutException or OperationCanceledException or ArgumentException)
            {
                var reason = $"cannot reach the broker {Options.Broker}: {e.Message}";
                if (reason != _lastError)
                    Log.BrokerUnreachable(_logger, Options.Broker, e.Message, delay.TotalSeconds);
                _lastError = reason;
                try
                {
                    await Task.Delay(delay, _time, _stop.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, LastRetry.Ticks));
                continue;
            }
            delay = FirstRetry;
            _lastError = null;
            var ssmp = client.Peer.Client;
            void OnState(SsmpClientState state)
            {
                if (state is SsmpClientState.Closed or SsmpClientState.Failed)
                    _lost.Release();
            }
            ssmp.StateChanged += OnState;
            if (ssmp.State is SsmpClientState.Closed or SsmpClientState.Failed)
                _lost.Release();
            _client = client;
            var lost = await WatchAsync();
            ssmp.StateChanged -= OnState;
            _client = null;
            lock (_booksLock)
                _books.Clear();
            if (lost)
            {
                _lastError = $"the broker {Options.Broker} closed the connection (a refused re-login, or dropped); connecting again";
                Log.BrokerLost(_logger, Options.Broker);
            }
            await client.DisposeAsync();
        }
    }

    /// <summary>While connected: sweeps books nobody looks at any more; true when the client gave up, false when stopping.</summary>
    private async Task<bool> WatchAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            using (var sweep = new CancellationTokenSource(BookIdle, _time))
            using (var either = CancellationTokenSource.CreateLinkedTokenSource(sweep.Token, _stop.Token))
            {
                try
                {
                    await _lost.WaitAsync(either.Token);
                    return true;
                }
                catch (OperationCanceledException) when (!_stop.IsCancellationRequested)
                {
                    // Time to look at the books.
                }
                catch (OperationCanceledException)
                {
                    return false;
                }
            }
            await SweepBooksAsync();
        }
        return false;
    }

    private async Task SweepBooksAsync()
    {
        if (_client is not { } client)
            return;
        List<string> idle;
        lock (_booksLock)
        {
            idle = [.. _books.Where(b => _time.GetElapsedTime(b.Value.AskedAt) >= BookIdle).Select(b => b.Key)];
            foreach (var market in idle)
                _books.Remove(market);
        }
        foreach (var market in idle)
        {
            try
            {
                await client.UnsubscribeBookAsync(market, _stop.Token);
            }
            catch (Exception e) when (e is SsmpException or ObjectDisposedException or InvalidOperationException or OperationCanceledException)
            {
                // The connection went: its subscriptions went with it.
            }
        }
    }

    private ExchangeClient RequireClient() => _client
        ?? throw new ExchangeUnreachableException($"exchange unreachable: {_lastError ?? $"connecting to the broker {Options.Broker}"}");

    /// <summary>
    /// Calls <paramref name="method"/> as the node's account. An exchange's refusal comes back as
    /// <see cref="ExchangeApiException"/>; anything that kept the request from the exchange or its answer from the node
    /// as <see cref="ExchangeUnreachableException"/>.
    /// </summary>
    public async Task<JsonElement> CallAsync(string method, object? args, CancellationToken cancellationToken)
    {
        var client = RequireClient();
        try
        {
            var answer = await client.CallAsync(method, args, cancellationToken);
            _lastError = null;
            return answer;
        }
        catch (Exception e) when (Unreachable(e) is { } reason)
        {
            _lastError = reason;
            throw new ExchangeUnreachableException($"exchange unreachable: {reason}", e);
        }
    }

    /// <summary>Why a failed call never reached the exchange (or its answer never came); null for the exchange's own refusals.</summary>
    private string? Unreachable(Exception e) => e switch
    {
        ExchangeApiException { Code: "no_answer" } => $"the exchange {Options.Service} did not answer on the broker {Options.Broker}",
        ExchangeApiException { Code: "transport" } a => $"{Options.Service} on the broker {Options.Broker} is not an exchange that answers this ({a.Message})",
        SsmpConnectionException c => $"the connection to the broker {Options.Broker} is down ({c.Message})",
        SsmpException { Code: 404 } => $"the exchange {Options.Service} is not on the broker {Options.Broker} (is it running?)",
        SsmpException s => $"the broker {Options.Broker} refused the request: {s.Message}",
        ObjectDisposedException or InvalidOperationException => $"the connection to the broker {Options.Broker} closed",
        _ => null,
    };

    /// <summary>
    /// <paramref name="market"/>'s book, best <paramref name="depth"/> levels a side, from a local copy kept in sync from
    /// the market-data topic (subscribed at the first ask, dropped a minute after the last).
    /// </summary>
    public async Task<ExchangeBook> BookAsync(string market, int depth, CancellationToken cancellationToken)
    {
        var client = RequireClient();
        WatchedBook watched;
        TaskCompletionSource<LocalBook>? mine = null;
        lock (_booksLock)
        {
            if (_books.TryGetValue(market, out var known) && !known.Subscribed.IsFaulted && !known.Subscribed.IsCanceled)
            {
                known.AskedAt = _time.GetTimestamp();
                watched = known;
            }
            else
            {
                // One subscription per market, shared by every request that comes while it is being made.
                mine = new TaskCompletionSource<LocalBook>(TaskCreationOptions.RunContinuationsAsynchronously);
                watched = new WatchedBook(mine.Task, _time.GetTimestamp());
                _books[market] = watched;
            }
        }
        if (mine is not null)
        {
            try
            {
                mine.TrySetResult(await client.SubscribeBookAsync(market, _stop.Token));
            }
            catch (Exception e)
            {
                mine.TrySetException(e);
            }
        }
        LocalBook book;
        try
        {
            book = await Background.WaitAsync(watched.Subscribed, cancellationToken);
            _lastError = null;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            lock (_booksLock)
            {
                if (_books.TryGetValue(market, out var current) && current == watched)
                    _books.Remove(market);
            }
            if (watched.Subscribed.IsFaulted)
            {
                try
                {
                    await client.UnsubscribeBookAsync(market, CancellationToken.None);
                }
                catch (Exception cleanup) when (cleanup is SsmpException or ObjectDisposedException or InvalidOperationException)
                {
                    // Nothing to undo on a connection that is gone.
                }
            }
            if (Unreachable(e) is { } reason)
            {
                _lastError = reason;
                throw new ExchangeUnreachableException($"exchange unreachable: {reason}", e);
            }
            throw;
        }
        static IReadOnlyList<ExchangeBookLevel> Levels(IReadOnlyList<BookLevel> side, int depth) =>
            [.. side.Take(depth).Select(l => new ExchangeBookLevel(l.Price, l.Quantity))];
        return new ExchangeBook(book.Market, book.Sequence, Levels(book.Bids, depth), Levels(book.Asks, depth));
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        await Background.CancelAsync(_stop);
        await _loop;
        if (_client is { } client)
            await client.DisposeAsync();
        _stop.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 660, Level = LogLevel.Warning, Message = "Exchange: cannot reach the broker {Broker}: {Reason}; the node goes on and tries again (next in {Seconds:0.#} s, backing off to 30 s)")]
        public static partial void BrokerUnreachable(ILogger logger, string broker, string reason, double seconds);

        [LoggerMessage(EventId = 661, Level = LogLevel.Warning, Message = "Exchange: the broker {Broker} closed the connection; connecting again")]
        public static partial void BrokerLost(ILogger logger, string broker);
    }
}

/// <summary>The exchange could not be asked: the broker is away, the exchange is not on it, or it did not answer.</summary>
public sealed class ExchangeUnreachableException : Exception
{
    public ExchangeUnreachableException()
    {
    }

    public ExchangeUnreachableException(string message)
        : base(message)
    {
    }

    public ExchangeUnreachableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>One price level: the price (quote per base coin) and the total quantity there, as the exchange writes them.</summary>
public sealed record ExchangeBookLevel(string Price, string Quantity);

/// <summary>A market's book as the node keeps it: bids and asks best first, at market-data sequence <paramref name="Sequence"/>.</summary>
public sealed record ExchangeBook(string Market, long Sequence, IReadOnlyList<ExchangeBookLevel> Bids, IReadOnlyList<ExchangeBookLevel> Asks);
