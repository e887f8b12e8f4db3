using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using Skymesh.Exchange.Matching;
using Skymesh.Ssmp.Rpc;
using static Skymesh.Exchange.Service.Utf8Text;

namespace Skymesh.Exchange.Service;

public sealed partial class ExchangeService
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>
    /// How the exchange's SSMP peer takes requests. Answers are remembered for 15 s, the whole of an
    /// <see cref="Client.ExchangeClient"/> call (3 attempts of 5 s): a retry within it gets the same answer and the handler
    /// does not run again. The cost is the answers' bytes (about 430 for an order) and 85 bytes of index each: at 200,000
    /// orders a second the 2,000,000 kept (about 0.9 GB) cover 10 s, and the oldest go first.
    /// </summary>
    public static SsmpPeerOptions PeerOptions() => new()
    {
        MaxConcurrentRequests = 65_536,
        ResponseCacheTime = TimeSpan.FromSeconds(15),
        MaxCachedResponses = 2_000_000,
        MaxCachedResponseBytes = 1L << 30,
    };

    private void RegisterHandlers(SsmpPeer peer)
    {
        Public(peer, "time", _ => Task.FromResult<object>(new { serverTime = Now }));
        Public(peer, "markets", _ => Task.FromResult<object>(MarketsAnswer()));
        Public(peer, "book", BookAsync);
        var place = Wrap(PlaceAsync, needsAccount: true, null);
        // order.place in its common shape skips the JsonDocument, the reflection writer and every task (the hot path);
        // anything else takes the general path, which answers exactly as it always did.
        // It starts on the read loop (checks and queueing only, a few microseconds); the general path, which may check a
        // signature, goes on the pool first.
        peer.HandleDirect("order.place", (reply, body) => PlaceDirect(reply, body, place));
        Private(peer, "order.cancel", CancelAsync);
        Private(peer, "order.cancelAll", CancelAllAsync);
        Private(peer, "order.amend", AmendAsync);
        Private(peer, "order.batch", BatchAsync, call => BatchCost(call));
        Private(peer, "order", OrderAsync);
        Private(peer, "orders", OrdersAsync);
        Private(peer, "fills", FillsAsync);
        Private(peer, "balances", BalancesAsync);
        Private(peer, "deposit.address", DepositAddressAsync);
        Private(peer, "deposits", DepositsAsync);
        Private(peer, "withdraw", WithdrawAsync);
        Private(peer, "withdrawals", WithdrawalsAsync);
        Private(peer, "session", SessionAsync);
        Private(peer, "transfer", TransferAsync);
        Private(peer, "admin.withdrawals", AdminWithdrawalsAsync);
        Private(peer, "admin.approve", call => AdminDecideAsync(call, approve: true));
        Private(peer, "admin.reject", call => AdminDecideAsync(call, approve: false));
        Private(peer, "simchain", SimChainAsync);
    }

    private void Public(SsmpPeer peer, string method, Func<Call, Task<object>> handler) => Register(peer, method, handler, needsAccount: false, null);

    private void Private(SsmpPeer peer, string method, Func<Call, Task<object>> handler, Func<SsmpRpcRequest, int>? cost = null) =>
        Register(peer, method, handler, needsAccount: true, cost);

    private void Register(SsmpPeer peer, string method, Func<Call, Task<object>> handler, bool needsAccount, Func<SsmpRpcRequest, int>? cost) =>
        peer.Handle(method, Wrap(handler, needsAccount, cost));

    private SsmpRpcHandler Wrap(Func<Call, Task<object>> handler, bool needsAccount, Func<SsmpRpcRequest, int>? cost) => async (request, _) =>
    {
        Interlocked.Increment(ref _requests);
        Call? call = null;
        try
        {
            call = Admit(request, needsAccount, cost?.Invoke(request) ?? 1);
            var answer = await handler(call);
            return Serialize(answer, call.Gate);
        }
        catch (Exception e) when (e is not SsmpRpcException)
        {
            throw Refusal(e, request.Method, request.From, call?.Gate);
        }
    };

    /// <summary>A request the hot path does not take, answered by the general handler on the pool.</summary>
    private async Task AnswerLaterAsync(SsmpRpcReply reply, SsmpRpcHandler handler, ReadOnlyMemory<byte> body)
    {
        ReadOnlyMemory<byte> answer;
        try
        {
            await Task.Yield();
            answer = await handler(new SsmpRpcRequest(reply.From, reply.Method, body), CancellationToken.None);
        }
        catch (SsmpRpcException e)
        {
            reply.Fail(e.Status, e.Message);
            return;
        }
        catch (Exception e)
        {
            Log.RequestFailed(_logger, reply.Method, reply.From, e);
            reply.Fail(SsmpRpcException.HandlerFailed, $"{reply.Method} failed: {e.Message}");
            return;
        }
        reply.Answer(answer.Span);
    }

    /// <summary>What the caller is told when a request fails: the API's error, with the account's rate budget when known.</summary>
    private SsmpRpcException Refusal(Exception e, string method, string from, AccountGate? gate)
    {
        switch (e)
        {
            case ExchangeApiException api:
                Interlocked.Increment(ref _refused);
                return WithLimits(api, gate).ToRpc();
            case WithdrawalRefusedException refused:
                Interlocked.Increment(ref _refused);
                return WithLimits(new ExchangeApiException(refused.Status, refused.Code, refused.Message), gate).ToRpc();
            case ExchangeStoppedException stopped:
                return new ExchangeApiException(503, "unavailable", stopped.Message).ToRpc();
            default:
                Log.RequestFailed(_logger, method, from, e);
                return new ExchangeApiException(500, "internal", $"{method} failed inside the exchange.").ToRpc();
        }
    }

    private ExchangeApiException WithLimits(ExchangeApiException e, AccountGate? gate)
    {
        if (gate is null || e.Details.ContainsKey("rateLimit"))
            return e;
        var details = new Dictionary<string, object?>(e.Details);
        lock (gate.Lock)
            details["rateLimit"] = RateLimit(gate);
        return new ExchangeApiException(e.Status, e.Code, e.Message, details);
    }

    /// <summary>The answer as JSON, with the account's rate budget added as its last property.</summary>
    private ReadOnlyMemory<byte> Serialize(object answer, AccountGate? gate)
    {
        var bytes = JsonSerializer.SerializeToUtf8Bytes(answer, answer.GetType(), Json);
        if (gate is null)
            return bytes;
        long remaining;
        lock (gate.Lock)
            remaining = (long)Math.Floor(gate.Tokens);
        // The object's closing brace is replaced by the budget and a new one.
        var tail = Encoding.UTF8.GetBytes(
            $"{(bytes.Length > 2 ? "," : "")}\"rateLimit\":{{\"limit\":{_options.RateLimitBurst},\"remaining\":{remaining},\"perSecond\":{_options.RateLimitPerSecond}}}}}");
        var joined = new byte[bytes.Length - 1 + tail.Length];
        bytes.AsSpan(0, bytes.Length - 1).CopyTo(joined);
        tail.CopyTo(joined.AsSpan(bytes.Length - 1));
        return joined;
    }

    // ---- public

    private object MarketsAnswer() => new
    {
        serverTime = Now,
        markets = _markets.Select(m => new
        {
            symbol = m.Symbol,
            @base = m.Base.Code,
            quote = m.Quote.Code,
            tickSize = m.TickSize,
            lotSize = m.LotSize,
            minNotional = m.MinNotional,
            makerFee = FormatPpm(m.Spec.MakerFeePpm),
            takerFee = FormatPpm(m.Spec.TakerFeePpm),
            topic = MarketTopic(m.Symbol),
        }),
        assets = Definition.Assets.Select(a => new
        {
            code = a.Code,
            scale = a.Scale,
            confirmations = _deposits.TryGetValue(a.Code, out var d) ? d.Confirmations : (int?)null,
            chain = _deposits.TryGetValue(a.Code, out var c) ? c.Chain.Network : null,
            withdrawalMinimum = _withdrawals.TryGetValue(a.Code, out var w) ? AssetAmount.Format(w.Limits.Minimum, a.Scale) : null,
            withdrawalApprovalAbove = _withdrawals.TryGetValue(a.Code, out var wa) && wa.Limits.ApprovalThreshold != long.MaxValue ? AssetAmount.Format(wa.Limits.ApprovalThreshold, a.Scale) : null,
            withdrawalDailyLimit = _withdrawals.TryGetValue(a.Code, out var wl) && wl.Limits.PerAccountDaily != long.MaxValue ? AssetAmount.Format(wl.Limits.PerAccountDaily, a.Scale) : null,
        }),
        limits = new
        {
            requestsPerSecond = _options.RateLimitPerSecond,
            burst = _options.RateLimitBurst,
            requestWindowMs = (long)_options.RequestWindow.TotalMilliseconds,
            maxOpenOrders = _options.MaxOpenOrders,
            maxBatch = _options.MaxBatch,
            clientOrderIdMaxLength = MatchingEngine.MaxClientOrderIdLength,
        },
        sessionsTopic = SessionsTopic,
        sessionAuth = _options.SessionAuth,
    };

    private static string FormatPpm(int ppm) => AssetAmount.Format(ppm, 6);

    private async Task<object> BookAsync(Call call)
    {
        var market = Market(call.Args);
        var depth = (int)Math.Clamp(Long(call.Args, "depth") ?? 1000, 1, 100_000);
        var (sequence, checksum, bids, asks) = await _loop.RunAsync(_ => _marketData.Snapshot(market.Index, depth));
        return new
        {
            market = market.Symbol, epoch = _marketData.Epoch, seq = sequence, checksum,
            bids = bids.Select(l => new[] { l.Price, l.Quantity }), asks = asks.Select(l => new[] { l.Price, l.Quantity }),
        };
    }

    // ---- orders

    private MarketRules Market(JsonElement args) => MarketOf(Required(args, "market"));

    private MarketRules MarketOf(string symbol)
    {
        foreach (var market in _markets)
        {
            if (market.Symbol == symbol)
                return market;
        }
        throw new ExchangeApiException(404, "unknown_market", $"No market {symbol}; this exchange has {string.Join(", ", _markets.Select(m => m.Symbol))}.");
    }

    /// <summary>An order's fields as a request gives them: read from its JSON, or already read by <see cref="PlaceArgs"/>.</summary>
    private interface IOrderFields
    {
        string? String(string name);

        bool? Bool(string name);

        /// <summary>The decimal amount <paramref name="name"/>, a price or a quantity of <paramref name="market"/>: null when absent, else whether it parsed.</summary>
        bool? Amount(string name, MarketRules market, bool price, out long units);
    }

    private readonly struct JsonFields(JsonElement args) : IOrderFields
    {
        public string? String(string name) => ExchangeService.String(args, name);

        public bool? Bool(string name) => ExchangeService.Bool(args, name);

        public bool? Amount(string name, MarketRules market, bool price, out long units)
        {
            units = 0;
            return String(name) is not { } text ? null : price ? market.TryParsePrice(text, out units) : market.TryParseQuantity(text, out units);
        }
    }

    private ExchangeCommand ParseOrder(JsonElement args) => ParseOrder(new JsonFields(args));

    /// <summary>Reads an order request into an engine command (owner filled in on the engine thread).</summary>
    private ExchangeCommand ParseOrder<TFields>(TFields args)
        where TFields : IOrderFields
    {
        var market = MarketOf(Required(args, "market"));
        var side = Required(args, "side") switch
        {
            "buy" => Side.Buy,
            "sell" => Side.Sell,
            var other => throw new ExchangeApiException(400, "bad_request", $"'side' is buy or sell, not '{other}'."),
        };
        var type = args.String("type") ?? "limit";
        if ((args.Amount("quantity", market, price: false, out var quantity) ?? throw new ExchangeApiException(400, "bad_request", "'quantity' is required.")) is false)
            throw new ExchangeApiException(422, "bad_quantity", $"'quantity' must be a positive {market.Base.Code} amount with at most {market.Base.Scale} decimals, a multiple of {market.LotSize}.");
        var tif = (args.String("timeInForce") ?? (type == "market" ? "ioc" : "gtc")) switch
        {
            "gtc" => TimeInForce.Gtc,
            "ioc" => TimeInForce.Ioc,
            "fok" => TimeInForce.Fok,
            var other => throw new ExchangeApiException(400, "bad_request", $"'timeInForce' is gtc, ioc or fok, not '{other}'."),
        };
        var stp = (args.String("selfTrade") ?? "expireTaker") switch
        {
            "expireTaker" => SelfTradePrevention.ExpireTaker,
            "expireMaker" => SelfTradePrevention.ExpireMaker,
            "expireBoth" => SelfTradePrevention.ExpireBoth,
            "decrement" => SelfTradePrevention.Decrement,
            var other => throw new ExchangeApiException(400, "bad_request", $"'selfTrade' is expireTaker, expireMaker, expireBoth or decrement, not '{other}'."),
        };
        var clientOrderId = args.String("clientOrderId");
        if (type == "market")
            return ExchangeCommand.MarketOrder(0, market.Index, side, quantity, tif, stp, clientOrderId);
        if (type != "limit")
            throw new ExchangeApiException(400, "bad_request", $"'type' is limit or market, not '{type}'.");
        if ((args.Amount("price", market, price: true, out var price) ?? throw new ExchangeApiException(400, "bad_request", "'price' is required.")) is false)
            throw new ExchangeApiException(422, "bad_price", $"'price' must be a positive {market.Quote.Code} amount per {market.Base.Code}, a multiple of {market.TickSize}.");
        return ExchangeCommand.Limit(0, market.Index, side, price, quantity, tif, args.Bool("postOnly") ?? false, stp, clientOrderId);
    }

    private async Task<object> PlaceAsync(Call call)
    {
        var account = call.RequireAccount();
        var command = ParseOrder(call.Args);
        var placed = await _loop.RunAsync(s => Place(s, account, command));
        return placed.Error is not null ? throw placed.Error : new { order = ViewOf(placed) };
    }

    /// <summary>What placing an order gave, copied on the engine thread; <see cref="ViewOf"/> turns it into the answer elsewhere.</summary>
    private readonly record struct Placed(OrderRecord? Order, ExchangeEvent[] Trades, long Id, string? ClientOrderId, bool Duplicate, ExchangeApiException? Error);

    /// <summary>Places one order on the engine thread: a copy of its record and its trades, or the error to answer with.</summary>
    private Placed Place(EngineLoop.EngineSession s, string account, ExchangeCommand command)
    {
        var error = PlaceOnEngine(s, account, command, out var order, out var id, out var duplicate, out var events);
        if (error is not null)
            return new Placed(null, [], 0, null, false, error);
        if (duplicate)
            return new Placed(order?.Copy(), [], id, command.Key, true, null);
        var count = 0;
        foreach (ref readonly var e in events)
            count += e.Kind == EventKind.Trade && e.OrderId == id ? 1 : 0;
        var trades = count == 0 ? [] : new ExchangeEvent[count];
        count = 0;
        foreach (ref readonly var e in events)
        {
            if (e.Kind == EventKind.Trade && e.OrderId == id)
                trades[count++] = e;
        }
        return new Placed(order?.Copy(), trades, id, command.Key, false, null);
    }

    /// <summary>
    /// Submits a placement on the engine thread. On success: the order's id, its live record in the history (null when not
    /// kept; to be copied before it leaves the engine thread), whether it repeated a client order id (then the record is the
    /// first order's), and the command's events (good until the next command).
    /// </summary>
    private ExchangeApiException? PlaceOnEngine(EngineLoop.EngineSession s, string account, in ExchangeCommand command, out OrderRecord? order, out long id,
        out bool duplicate, out ReadOnlySpan<ExchangeEvent> events)
    {
        order = null;
        id = 0;
        duplicate = false;
        events = [];
        var owner = s.FindOwner(account);
        if (owner < 0)
            return new ExchangeApiException(422, "insufficient_funds", "This account holds nothing yet: deposit first.");
        if (_history.OpenCount(owner) >= _options.MaxOpenOrders)
            return new ExchangeApiException(422, "too_many_orders", $"An account may have at most {_options.MaxOpenOrders} open orders.");
        events = s.SubmitInPlace(command with { Owner = owner, Amount = s.Now });
        ref readonly var first = ref events[0];
        if (first.Kind == EventKind.Rejected && first.Reason != RejectReason.DuplicateClientOrderId)
            return new ExchangeApiException(ErrorCodes.Status(first.Reason), ErrorCodes.Of(first.Reason), Explain(first.Reason));
        duplicate = first.Kind == EventKind.Rejected;
        id = first.OrderId;
        order = _history.TryGet(id, out var record) ? record : null;
        return null;
    }

    private OrderView ViewOf(in Placed placed) =>
        placed.Order is { } order ? View(order, placed.Trades) with { Duplicate = placed.Duplicate }
            : new OrderView { Id = placed.Id, ClientOrderId = placed.ClientOrderId, Duplicate = placed.Duplicate, Status = "unknown" };

    // ---- order.place, the hot path: the same checks and the same answer as the general path, without its allocations

    private (byte[] Utf8, string Symbol)[]? _marketSymbolsCache;

    private (byte[] Utf8, string Symbol)[] _marketSymbols => _marketSymbolsCache ??= [.. _markets.Select(m => (Encoding.UTF8.GetBytes(m.Symbol), m.Symbol))];

    /// <summary>
    /// order.place on the connection's read loop: a plain JSON request in its usual shape is checked here and handed to the
    /// engine as a pooled <see cref="PlaceWork"/>, which answers once its batch is durable; anything else goes the general way.
    /// </summary>
    private void PlaceDirect(SsmpRpcReply reply, ReadOnlyMemory<byte> body, SsmpRpcHandler general)
    {
        if (!_options.SessionAuth || !PlaceArgs.TryRead(body, _marketSymbols, out var args))
        {
            // The body lies in the read buffer: the general way, which goes on after this call, takes a copy.
            _ = AnswerLaterAsync(reply, general, body.ToArray());
            return;
        }
        Interlocked.Increment(ref _requests);
        AccountGate? gate = null;
        try
        {
            var account = SessionAccount(reply.From) ?? throw Unauthenticated();
            gate = Gate(account, args.Ts ?? throw NoTs(), args.Nonce ?? throw NoNonce(), cost: 1);
            var command = ParseOrder(args);
            _loop.Post(RentPlaceWork(reply, account, command, gate));
        }
        catch (Exception e)
        {
            FailWith(reply, Refusal(e, reply.Method, reply.From, gate));
        }
    }

    private static void FailWith(SsmpRpcReply reply, SsmpRpcException refusal) => reply.Fail(refusal.Status, refusal.Message);

    // Work items of placements in flight come back here once answered: one a request would otherwise cost a closure, a
    // delegate, a task source and a copy of the order. Bounded: past it the rest go to the GC.
    private readonly ConcurrentQueue<PlaceWork> _placeWorkPool = new();
    private int _placeWorkPooled;
    private const int PlaceWorkPoolSize = 16_384;

    private PlaceWork RentPlaceWork(SsmpRpcReply reply, string account, in ExchangeCommand command, AccountGate gate)
    {
        if (_placeWorkPool.TryDequeue(out var work))
            Interlocked.Decrement(ref _placeWorkPooled);
        else
            work = new PlaceWork(this);
        work.Start(reply, account, command, gate);
        return work;
    }

    private void ReturnPlaceWork(PlaceWork work)
    {
        if (Interlocked.Increment(ref _placeWorkPooled) <= PlaceWorkPoolSize)
            _placeWorkPool.Enqueue(work);
        else
            Interlocked.Decrement(ref _placeWorkPooled);
    }

    /// <summary>
    /// One order.place of the hot path: placed on the engine thread, which also writes the answer while the order's record
    /// is in its cache (or, for an answer the direct writer does not take, copies what the answer needs into this item's
    /// own record and list); answered on the pool once the batch is durable, then reused.
    /// </summary>
    private sealed class PlaceWork(ExchangeService service) : EngineLoop.WorkItem
    {
        private readonly OrderRecord _order = new();
        private readonly List<ExchangeEvent> _trades = [];
        private byte[] _answer = new byte[1024];
        private int _answerLength;
        private SsmpRpcReply _reply;
        private string _account = "";
        private ExchangeCommand _command;
        private AccountGate? _gate;
        private bool _hasOrder;
        private bool _duplicate;
        private long _id;
        private Exception? _error;
        private int _done;

        public void Start(SsmpRpcReply reply, string account, in ExchangeCommand command, AccountGate gate)
        {
            _reply = reply;
            _account = account;
            _command = command;
            _gate = gate;
            _hasOrder = false;
            _duplicate = false;
            _id = 0;
            _error = null;
            _trades.Clear();
            _answerLength = 0;
            _done = 0;
        }

        public override void Execute(EngineLoop.EngineSession session)
        {
            try
            {
                _error = service.PlaceOnEngine(session, _account, _command, out var order, out _id, out _duplicate, out var events);
                if (_error is not null || order is null)
                    return;
                if (!_duplicate)
                {
                    foreach (ref readonly var e in events)
                    {
                        if (e.Kind == EventKind.Trade && e.OrderId == _id)
                            _trades.Add(e);
                    }
                }
                if (service.TryWritePlacedRaw(order, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_trades), _duplicate, _gate!, out var answer))
                {
                    if (answer.Length > _answer.Length)
                        _answer = new byte[answer.Length];
                    answer.CopyTo(_answer);
                    _answerLength = answer.Length;
                    return;
                }
                order.CopyTo(_order);
                _hasOrder = true;
            }
            catch (Exception e)
            {
                _error = e;
            }
        }

        public override void Complete()
        {
            if (Interlocked.Exchange(ref _done, 1) != 0)
                return;
            try
            {
                if (_error is not null)
                    FailWith(_reply, service.Refusal(_error, _reply.Method, _reply.From, _gate));
                else if (_answerLength > 0)
                    _reply.Answer(_answer.AsSpan(0, _answerLength));
                else if (_hasOrder)
                    _reply.Answer(service.WritePlaced(_order, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_trades), _duplicate, _gate!));
                else
                    _reply.Answer(service.Serialize(new { order = service.ViewOf(new Placed(null, [], _id, _command.Key, _duplicate, null)) }, _gate).Span);
            }
            catch (Exception e) when (e is not SsmpRpcException)
            {
                FailWith(_reply, service.Refusal(e, _reply.Method, _reply.From, _gate));
            }
            Recycle();
        }

        public override void Fail(Exception e)
        {
            if (Interlocked.Exchange(ref _done, 1) != 0)
                return;
            FailWith(_reply, service.Refusal(e, _reply.Method, _reply.From, _gate));
            Recycle();
        }

        private void Recycle()
        {
            _reply = default;
            _account = "";
            _command = default;
            _gate = null;
            _error = null;
            service.ReturnPlaceWork(this);
        }
    }

    /// <summary>
    /// The fields of an order.place request, read straight from its JSON. <see cref="TryRead"/> takes only a plain JSON
    /// object whose known fields have the types the API wants (or null), each once; any other body goes the general way,
    /// which explains what is wrong with it.
    /// </summary>
    private struct PlaceArgs : IOrderFields
    {
        public long? Ts;
        public ulong? Nonce;
        public string? Market;
        public string? Side;
        public string? Type;

        // The amounts are kept as the request's bytes, read once the market (and so the scale) is known: no string each.
        public ReadOnlyMemory<byte>? Price;
        public ReadOnlyMemory<byte>? Quantity;
        public string? TimeInForce;
        public string? SelfTrade;
        public string? ClientOrderId;
        public bool? PostOnly;

        private static readonly (byte[] Utf8, string Text)[] Words =
            [.. new[] { "buy", "sell", "limit", "market", "gtc", "ioc", "fok", "expireTaker", "expireMaker", "expireBoth", "decrement" }.Select(w => (Encoding.UTF8.GetBytes(w), w))];

        public readonly string? String(string name) => name switch
        {
            "market" => Market,
            "side" => Side,
            "type" => Type,
            "timeInForce" => TimeInForce,
            "selfTrade" => SelfTrade,
            "clientOrderId" => ClientOrderId,
            _ => null,
        };

        public readonly bool? Bool(string name) => name == "postOnly" ? PostOnly : null;

        public readonly bool? Amount(string name, MarketRules market, bool price, out long units)
        {
            units = 0;
            return (name switch { "price" => Price, "quantity" => Quantity, _ => null }) is not { } text ? null
                : price ? market.TryParsePrice(text.Span, out units) : market.TryParseQuantity(text.Span, out units);
        }

        public static bool TryRead(ReadOnlyMemory<byte> body, (byte[] Utf8, string Symbol)[] markets, out PlaceArgs args)
        {
            args = default;
            if (body.IsEmpty || body.Span[0] == SignedMarker)
                return false;
            try
            {
                var reader = new Utf8JsonReader(body.Span);
                if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                    return false;
                var seen = 0;
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    var field = Field(ref reader);
                    if (field > 0 && (seen & (1 << field)) != 0)
                        return false;
                    seen |= 1 << field;
                    if (!reader.Read())
                        return false;
                    if (field == 0)
                    {
                        reader.Skip();
                        continue;
                    }
                    if (reader.TokenType == JsonTokenType.Null)
                        continue;
                    if (!args.TryTake(field, ref reader, body, markets))
                        return false;
                }
                return reader.TokenType == JsonTokenType.EndObject;
            }
            catch (JsonException)
            {
                return false;
            }
        }

        private static int Field(ref Utf8JsonReader reader) =>
            reader.ValueTextEquals("nonce"u8) ? 1 : reader.ValueTextEquals("ts"u8) ? 2 : reader.ValueTextEquals("market"u8) ? 3
            : reader.ValueTextEquals("side"u8) ? 4 : reader.ValueTextEquals("type"u8) ? 5 : reader.ValueTextEquals("price"u8) ? 6
            : reader.ValueTextEquals("quantity"u8) ? 7 : reader.ValueTextEquals("timeInForce"u8) ? 8 : reader.ValueTextEquals("selfTrade"u8) ? 9
            : reader.ValueTextEquals("clientOrderId"u8) ? 10 : reader.ValueTextEquals("postOnly"u8) ? 11 : 0;

        private bool TryTake(int field, ref Utf8JsonReader reader, ReadOnlyMemory<byte> body, (byte[] Utf8, string Symbol)[] markets)
        {
            switch (field)
            {
                case 1:
                    if (reader.TokenType != JsonTokenType.Number || !reader.TryGetUInt64(out var nonce))
                        return false;
                    Nonce = nonce;
                    return true;
                case 2:
                    if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var ts))
                        return false;
                    Ts = ts;
                    return true;
                case 11:
                    if (reader.TokenType is not (JsonTokenType.True or JsonTokenType.False))
                        return false;
                    PostOnly = reader.TokenType == JsonTokenType.True;
                    return true;
            }
            if (reader.TokenType != JsonTokenType.String)
                return false;
            switch (field)
            {
                case 3:
                    Market = Known(ref reader, markets);
                    break;
                case 4:
                    Side = Known(ref reader, Words);
                    break;
                case 5:
                    Type = Known(ref reader, Words);
                    break;
                case 6:
                case 7:
                    // An amount written with escapes is left to the general path; digits never need them.
                    if (reader.ValueIsEscaped || reader.HasValueSequence)
                        return false;
                    var text = body.Slice((int)reader.TokenStartIndex + 1, reader.ValueSpan.Length);
                    if (field == 6)
                        Price = text;
                    else
                        Quantity = text;
                    break;
                case 8:
                    TimeInForce = Known(ref reader, Words);
                    break;
                case 9:
                    SelfTrade = Known(ref reader, Words);
                    break;
                default:
                    ClientOrderId = reader.GetString();
                    break;
            }
            return true;
        }

        /// <summary>The string, as the one instance kept when it is one of <paramref name="known"/> (no allocation).</summary>
        private static string? Known(ref Utf8JsonReader reader, (byte[] Utf8, string Text)[] known)
        {
            foreach (var (utf8, text) in known)
            {
                if (reader.ValueTextEquals(utf8))
                    return text;
            }
            return reader.GetString();
        }
    }

    private static readonly JsonEncodedText OrderName = JsonEncodedText.Encode("order");

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_answerBuffer;

    [ThreadStatic]
    private static Utf8JsonWriter? t_answerWriter;

    /// <summary>
    /// The answer to a placed order, byte for byte what <see cref="Serialize"/> makes of <c>new { order = View(order, trades) }</c>
    /// (the same fields, order, escaping and rate budget), written without reflection or intermediate strings: through the
    /// JSON writer, for the answers <see cref="TryWritePlacedRaw"/> does not take (the engine thread tried that first).
    /// </summary>
    private ReadOnlySpan<byte> WritePlaced(OrderRecord o, ReadOnlySpan<ExchangeEvent> trades, bool duplicate, AccountGate gate)
    {
        var buffer = t_answerBuffer ??= new ArrayBufferWriter<byte>(1024);
        buffer.ResetWrittenCount();
        var w = t_answerWriter ??= new Utf8JsonWriter(buffer);
        w.Reset(buffer);
        var rules = _markets[o.Market];
        var side = o.Side == Side.Buy ? "buy" : "sell";
        w.WriteStartObject();
        w.WriteStartObject(OrderName);
        w.WriteNumber("id"u8, o.Id);
        w.WriteString("clientOrderId"u8, o.ClientOrderId);
        w.WriteString("market"u8, rules.Symbol);
        w.WriteString("side"u8, side);
        w.WriteString("type"u8, o.Type == OrderType.Market ? "market" : "limit");
        w.WriteString("timeInForce"u8, o.TimeInForce switch
        {
            TimeInForce.Gtc => "gtc",
            TimeInForce.Ioc => "ioc",
            TimeInForce.Fok => "fok",
            var other => other.ToString().ToLowerInvariant(),
        });
        w.WriteBoolean("postOnly"u8, o.PostOnly);
        if (o.Type == OrderType.Market)
            w.WriteNull("price"u8);
        else
            WriteAmount(w, "price"u8, checked(o.Price * rules.PriceFactor), rules.Quote.Scale);
        WriteAmount(w, "quantity"u8, o.Quantity, rules.Base.Scale);
        WriteAmount(w, "filled"u8, o.Filled, rules.Base.Scale);
        WriteAmount(w, "remaining"u8, o.Status == OrderStatus.Open ? o.Remaining : 0, rules.Base.Scale);
        WriteAmount(w, "filledValue"u8, o.FilledValue, rules.Quote.Scale);
        WriteAmount(w, "fees"u8, o.Fees, rules.Quote.Scale);
        w.WriteString("status"u8, o.Status switch
        {
            OrderStatus.Open => "open",
            OrderStatus.Filled => "filled",
            OrderStatus.Canceled => "canceled",
            OrderStatus.Expired => "expired",
            var other => other.ToString().ToLowerInvariant(),
        });
        w.WriteString("reason"u8, o.Expiry switch
        {
            ExpiryReason.ImmediateOrCancel => "immediate_or_cancel",
            ExpiryReason.SelfTrade => "self_trade",
            ExpiryReason.OutOfFunds => "out_of_funds",
            ExpiryReason.Requested => "requested",
            _ => null,
        });
        w.WriteNumber("created"u8, o.Created);
        w.WriteNumber("updated"u8, o.Updated);
        w.WriteBoolean("duplicate"u8, duplicate);
        w.WriteStartArray("fills"u8);
        Span<char> tradeId = stackalloc char[48];
        for (var i = 0; i < trades.Length; i++)
        {
            ref readonly var e = ref trades[i];
            w.WriteStartObject();
            tradeId.TryWrite(System.Globalization.CultureInfo.InvariantCulture, $"{e.Command}-{i}", out var length);
            w.WriteString("tradeId"u8, tradeId[..length]);
            w.WriteNumber("orderId"u8, o.Id);
            w.WriteString("market"u8, rules.Symbol);
            w.WriteString("side"u8, side);
            WriteAmount(w, "price"u8, checked(e.Price * rules.PriceFactor), rules.Quote.Scale);
            WriteAmount(w, "quantity"u8, e.Quantity, rules.Base.Scale);
            WriteAmount(w, "fee"u8, e.TakerFee, rules.Quote.Scale);
            w.WriteString("liquidity"u8, "taker");
            w.WriteNumber("time"u8, o.Updated);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
        long remaining;
        lock (gate.Lock)
            remaining = (long)Math.Floor(gate.Tokens);
        w.WriteStartObject("rateLimit"u8);
        w.WriteNumber("limit"u8, _options.RateLimitBurst);
        w.WriteNumber("remaining"u8, remaining);
        w.WriteNumber("perSecond"u8, _options.RateLimitPerSecond);
        w.WriteEndObject();
        w.WriteEndObject();
        w.Flush();
        // Good until this thread's next answer: the caller copies it out at once.
        return buffer.WrittenSpan;
    }

    [ThreadStatic]
    private static byte[]? t_rawAnswer;

    /// <summary>
    /// The same bytes as <see cref="WritePlaced"/>'s JSON writer, put down directly: every value here but the client order id
    /// is digits or a word from a fixed list, which the writer never escapes. False (the writer then does it) when the
    /// client order id has a character the writer might escape, or when there are too many fills for the buffer.
    /// </summary>
    private bool TryWritePlacedRaw(OrderRecord o, ReadOnlySpan<ExchangeEvent> trades, bool duplicate, AccountGate gate, out ReadOnlySpan<byte> answer)
    {
        answer = default;
        const int MaxFills = 64;
        var rules = _markets[o.Market];
        if (trades.Length > MaxFills || (o.ClientOrderId is { } id && (id.Length > 64 || id.AsSpan().ContainsAnyExcept(PlainIdCharacters)))
            || rules.Symbol.Length > 64 || rules.Symbol.AsSpan().ContainsAnyExcept(PlainIdCharacters))
            return false;
        var buffer = t_rawAnswer ??= new byte[1024 + MaxFills * 512];
        var b = buffer.AsSpan();
        var n = 0;
        Put(b, ref n, "{\"order\":{\"id\":"u8);
        PutNumber(b, ref n, o.Id);
        if (o.ClientOrderId is { } clientOrderId)
        {
            Put(b, ref n, ",\"clientOrderId\":\""u8);
            n += Encoding.ASCII.GetBytes(clientOrderId, b[n..]);
            Put(b, ref n, "\",\"market\":\""u8);
        }
        else
        {
            Put(b, ref n, ",\"clientOrderId\":null,\"market\":\""u8);
        }
        n += Encoding.UTF8.GetBytes(rules.Symbol, b[n..]);
        var side = o.Side == Side.Buy ? "buy"u8 : "sell"u8;
        Put(b, ref n, "\",\"side\":\""u8);
        Put(b, ref n, side);
        Put(b, ref n, o.Type == OrderType.Market ? "\",\"type\":\"market\",\"timeInForce\":\""u8 : "\",\"type\":\"limit\",\"timeInForce\":\""u8);
        Put(b, ref n, o.TimeInForce switch
        {
            TimeInForce.Gtc => "gtc"u8,
            TimeInForce.Ioc => "ioc"u8,
            _ => "fok"u8,
        });
        Put(b, ref n, o.PostOnly ? "\",\"postOnly\":true,\"price\":"u8 : "\",\"postOnly\":false,\"price\":"u8);
        if (o.Type == OrderType.Market)
            Put(b, ref n, "null"u8);
        else
            PutQuotedAmount(b, ref n, checked(o.Price * rules.PriceFactor), rules.Quote.Scale);
        PutAmountField(b, ref n, ",\"quantity\":"u8, o.Quantity, rules.Base.Scale);
        PutAmountField(b, ref n, ",\"filled\":"u8, o.Filled, rules.Base.Scale);
        PutAmountField(b, ref n, ",\"remaining\":"u8, o.Status == OrderStatus.Open ? o.Remaining : 0, rules.Base.Scale);
        PutAmountField(b, ref n, ",\"filledValue\":"u8, o.FilledValue, rules.Quote.Scale);
        PutAmountField(b, ref n, ",\"fees\":"u8, o.Fees, rules.Quote.Scale);
        Put(b, ref n, o.Status switch
        {
            OrderStatus.Open => ",\"status\":\"open\",\"reason\":"u8,
            OrderStatus.Filled => ",\"status\":\"filled\",\"reason\":"u8,
            OrderStatus.Canceled => ",\"status\":\"canceled\",\"reason\":"u8,
            _ => ",\"status\":\"expired\",\"reason\":"u8,
        });
        Put(b, ref n, o.Expiry switch
        {
            ExpiryReason.ImmediateOrCancel => "\"immediate_or_cancel\""u8,
            ExpiryReason.SelfTrade => "\"self_trade\""u8,
            ExpiryReason.OutOfFunds => "\"out_of_funds\""u8,
            ExpiryReason.Requested => "\"requested\""u8,
            _ => "null"u8,
        });
        Put(b, ref n, ",\"created\":"u8);
        PutNumber(b, ref n, o.Created);
        Put(b, ref n, ",\"updated\":"u8);
        PutNumber(b, ref n, o.Updated);
        Put(b, ref n, duplicate ? ",\"duplicate\":true,\"fills\":["u8 : ",\"duplicate\":false,\"fills\":["u8);
        for (var i = 0; i < trades.Length; i++)
        {
            ref readonly var e = ref trades[i];
            Put(b, ref n, i == 0 ? "{\"tradeId\":\""u8 : ",{\"tradeId\":\""u8);
            PutNumber(b, ref n, e.Command);
            b[n++] = (byte)'-';
            PutNumber(b, ref n, i);
            Put(b, ref n, "\",\"orderId\":"u8);
            PutNumber(b, ref n, o.Id);
            Put(b, ref n, ",\"market\":\""u8);
            n += Encoding.UTF8.GetBytes(rules.Symbol, b[n..]);
            Put(b, ref n, "\",\"side\":\""u8);
            Put(b, ref n, side);
            PutAmountField(b, ref n, "\",\"price\":"u8, checked(e.Price * rules.PriceFactor), rules.Quote.Scale);
            PutAmountField(b, ref n, ",\"quantity\":"u8, e.Quantity, rules.Base.Scale);
            PutAmountField(b, ref n, ",\"fee\":"u8, e.TakerFee, rules.Quote.Scale);
            Put(b, ref n, ",\"liquidity\":\"taker\",\"time\":"u8);
            PutNumber(b, ref n, o.Updated);
            b[n++] = (byte)'}';
        }
        long remaining;
        lock (gate.Lock)
            remaining = (long)Math.Floor(gate.Tokens);
        Put(b, ref n, "]},\"rateLimit\":{\"limit\":"u8);
        PutNumber(b, ref n, (long)_options.RateLimitBurst);
        Put(b, ref n, ",\"remaining\":"u8);
        PutNumber(b, ref n, remaining);
        Put(b, ref n, ",\"perSecond\":"u8);
        PutNumber(b, ref n, (long)_options.RateLimitPerSecond);
        Put(b, ref n, "}}"u8);
        answer = b[..n];
        return true;
    }

    /// <summary>Characters of a client order id that the JSON writer writes as they are (it escapes others, e.g. '+', '&amp;').</summary>
    private static readonly SearchValues<char> PlainIdCharacters = SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:/");

    /// <summary>An amount as <see cref="AssetAmount.Format"/> writes it, as a JSON string.</summary>
    private static void WriteAmount(Utf8JsonWriter w, ReadOnlySpan<byte> name, long units, int scale)
    {
        Span<byte> text = stackalloc byte[48];
        if (AssetAmount.TryFormat(units, scale, text, out var written))
            w.WriteString(name, text[..written]);
        else
            w.WriteString(name, AssetAmount.Format(units, scale));
    }

    private static string Explain(RejectReason reason) => reason switch
    {
        RejectReason.InsufficientFunds => "The account's available balance does not cover this.",
        RejectReason.BadPrice => "The price is not a positive multiple of the market's tick size.",
        RejectReason.BadQuantity => "The quantity is not a positive multiple of the market's lot size.",
        RejectReason.BelowMinimum => "The order's value is below the market's minimum.",
        RejectReason.TooLarge => "The order's value is beyond what the exchange takes.",
        RejectReason.WouldTakeLiquidity => "A post-only order would have traded at once.",
        RejectReason.CannotFillCompletely => "A fill-or-kill order could not be filled in full at once.",
        RejectReason.AccountFrozen => "The account owes a reversed deposit: it may only cancel orders until a deposit repays it.",
        RejectReason.UnknownOrder => "No such open order.",
        RejectReason.NotYourOrder => "That order belongs to another account.",
        RejectReason.BadTimeInForce => "That time in force does not go with this order type.",
        RejectReason.BadClientOrderId => $"A client order id is 1 to {MatchingEngine.MaxClientOrderIdLength} characters.",
        RejectReason.NothingToAmend => "The amendment changes nothing.",
        _ => reason.ToString(),
    };

    /// <summary>The order a cancel, amend or query names: by 'orderId', or by 'clientOrderId' among the account's.</summary>
    private long OrderId(EngineLoop.EngineSession s, int owner, JsonElement args)
    {
        if (Long(args, "orderId") is { } id)
            return id;
        var clientOrderId = String(args, "clientOrderId") ?? throw new ExchangeApiException(400, "bad_request", "Name the order by 'orderId' or 'clientOrderId'.");
        return owner >= 0 && s.Engine.TryGetClientOrder(owner, clientOrderId, out var found) ? found
            : throw new ExchangeApiException(404, "unknown_order", $"No order with client order id '{clientOrderId}'.");
    }

    private async Task<object> CancelAsync(Call call)
    {
        var account = call.RequireAccount();
        var view = await _loop.RunAsync(s => Cancel(s, account, call.Args));
        return new { order = view };
    }

    private OrderView Cancel(EngineLoop.EngineSession s, string account, JsonElement args)
    {
        var owner = s.FindOwner(account);
        var id = OrderId(s, owner, args);
        if (owner < 0)
            throw new ExchangeApiException(404, "unknown_order", "No such open order.");
        var events = s.Submit(ExchangeCommand.Cancel(owner, id) with { Amount = s.Now });
        if (events[0].Kind == EventKind.Rejected)
            throw new ExchangeApiException(ErrorCodes.Status(events[0].Reason), ErrorCodes.Of(events[0].Reason), Explain(events[0].Reason));
        return _history.TryGet(id, out var order) ? View(order) : new OrderView { Id = id, Status = "canceled" };
    }

    private async Task<object> CancelAllAsync(Call call)
    {
        var account = call.RequireAccount();
        var market = Has(call.Args, "market") ? Market(call.Args).Index : -1;
        var canceled = await _loop.RunAsync(s =>
        {
            var owner = s.FindOwner(account);
            return owner < 0 ? [] : s.Submit(ExchangeCommand.CancelAll(owner, market) with { Amount = s.Now })
                .Where(e => e.Kind == EventKind.Canceled).Select(e => e.OrderId).ToList();
        });
        return new { canceled };
    }

    private async Task<object> AmendAsync(Call call)
    {
        var account = call.RequireAccount();
        var view = await _loop.RunAsync(s =>
        {
            var owner = s.FindOwner(account);
            var id = OrderId(s, owner, call.Args);
            if (owner < 0 || !_history.TryGet(id, out var order) || order.Owner != owner)
                throw new ExchangeApiException(404, "unknown_order", "No such open order.");
            var rules = _markets[order.Market];
            var price = order.Price;
            if (String(call.Args, "price") is { } text && !rules.TryParsePrice(text, out price))
                throw new ExchangeApiException(422, "bad_price", $"'price' must be a positive multiple of {rules.TickSize}.");
            var quantity = order.Remaining;
            if (String(call.Args, "quantity") is { } q && !rules.TryParseQuantity(q, out quantity))
                throw new ExchangeApiException(422, "bad_quantity", $"'quantity' (what is left to trade) must be a positive multiple of {rules.LotSize}.");
            var events = s.Submit(ExchangeCommand.Amend(owner, id, price, quantity) with { Amount = s.Now });
            if (events[0].Kind == EventKind.Rejected)
                throw new ExchangeApiException(ErrorCodes.Status(events[0].Reason), ErrorCodes.Of(events[0].Reason), Explain(events[0].Reason));
            return (Order: order.Copy(), Trades: events.Where(e => e.Kind == EventKind.Trade && e.OrderId == id).ToArray());
        });
        return new { order = View(view.Order, view.Trades) };
    }

    private int BatchCost(SsmpRpcRequest request)
    {
        // Counted before the body is trusted: a rough count of the items, at least one.
        var body = request.Body.Span;
        var items = 0;
        foreach (var b in body)
            items += b == '{' ? 1 : 0;
        return Math.Clamp(items - 1, 1, Math.Min(_options.MaxBatch, _options.RateLimitBurst));
    }

    private async Task<object> BatchAsync(Call call)
    {
        var account = call.RequireAccount();
        var orders = call.Args.TryGetProperty("orders", out var o) && o.ValueKind == JsonValueKind.Array ? o.EnumerateArray().ToList() : [];
        var cancels = call.Args.TryGetProperty("cancels", out var c) && c.ValueKind == JsonValueKind.Array ? c.EnumerateArray().ToList() : [];
        if (orders.Count + cancels.Count == 0 || orders.Count + cancels.Count > _options.MaxBatch)
            throw new ExchangeApiException(400, "bad_request", $"A batch holds 1 to {_options.MaxBatch} orders and cancels.");
        // Each item is parsed here; the ones that parse run in one piece of work on the engine thread, in order: cancels first.
        var parsed = new List<(ExchangeCommand Command, ExchangeApiException? Error)>();
        foreach (var item in orders)
        {
            try
            {
                if (item.ValueKind != JsonValueKind.Object)
                    throw new ExchangeApiException(400, "bad_request", "Each order of a batch is a JSON object.");
                parsed.Add((ParseOrder(item), null));
            }
            catch (ExchangeApiException e)
            {
                parsed.Add((default, e));
            }
        }
        var (canceled, placed) = await _loop.RunAsync(s =>
        {
            var cancelResults = cancels.Select(item => Try(() => item.ValueKind == JsonValueKind.Object ? (object)Cancel(s, account, item)
                : throw new ExchangeApiException(400, "bad_request", "Each cancel of a batch is a JSON object."))).ToList();
            var placeResults = parsed.Select(p => p.Error is not null ? new Placed(null, [], 0, null, false, p.Error) : Place(s, account, p.Command)).ToList();
            return (cancelResults, placeResults);
        });
        return new { cancels = canceled, orders = placed.Select(p => p.Error is not null ? ErrorItem(p.Error) : ViewOf(p)).ToList() };

        static object Try(Func<object> work)
        {
            try
            {
                return work();
            }
            catch (ExchangeApiException e)
            {
                return ErrorItem(e);
            }
        }
    }

    private static object ErrorItem(ExchangeApiException e) => new { error = new { code = e.Code, message = e.Message } };

    private async Task<object> OrderAsync(Call call)
    {
        var account = call.RequireAccount();
        return new
        {
            order = await _loop.RunAsync(s =>
            {
                var owner = s.FindOwner(account);
                var id = OrderId(s, owner, call.Args);
                return owner >= 0 && _history.TryGet(id, out var order) && order.Owner == owner ? View(order)
                    : throw new ExchangeApiException(404, "unknown_order", $"No order {id} of this account (or it is too old to be kept).");
            }),
        };
    }

    private async Task<object> OrdersAsync(Call call)
    {
        var account = call.RequireAccount();
        var status = String(call.Args, "status") ?? "open";
        if (status is not ("open" or "closed" or "all"))
            throw new ExchangeApiException(400, "bad_request", "'status' is open, closed or all.");
        var market = Has(call.Args, "market") ? Market(call.Args).Index : -1;
        var limit = (int)Math.Clamp(Long(call.Args, "limit") ?? 100, 1, 1000);
        var views = await _loop.RunAsync(s =>
        {
            var owner = s.FindOwner(account);
            if (owner < 0)
                return [];
            IEnumerable<OrderRecord> orders = status switch
            {
                "open" => _history.Open(owner),
                "closed" => _history.Closed(owner),
                _ => _history.Open(owner).Concat(_history.Closed(owner)),
            };
            return orders.Where(o => market < 0 || o.Market == market).Take(limit).Select(o => View(o)).ToList();
        });
        return new { orders = views };
    }

    private async Task<object> FillsAsync(Call call)
    {
        var account = call.RequireAccount();
        var market = Has(call.Args, "market") ? Market(call.Args).Index : -1;
        var limit = (int)Math.Clamp(Long(call.Args, "limit") ?? 100, 1, 1000);
        var fills = await _loop.RunAsync(s =>
        {
            var owner = s.FindOwner(account);
            return owner < 0 ? [] : _history.Fills(owner).Where(f => market < 0 || f.Market == market).Take(limit).Select(f =>
            {
                var rules = _markets[f.Market];
                return new FillView(f.TradeId, f.OrderId, rules.Symbol, f.Side == Side.Buy ? "buy" : "sell", rules.FormatPrice(f.Price),
                    rules.FormatQuantity(f.Quantity), rules.FormatQuote(f.Fee), f.Maker ? "maker" : "taker", f.Time);
            }).ToList();
        });
        return new { fills };
    }

    private async Task<object> BalancesAsync(Call call)
    {
        var account = call.RequireAccount();
        return await _loop.RunAsync(s =>
        {
            var owner = s.FindOwner(account);
            var ledger = s.Engine.Ledger;
            return new
            {
                account,
                frozen = owner >= 0 && ledger.IsFrozen(owner),
                balances = Definition.Assets.Select((a, i) => new
                {
                    asset = a.Code,
                    available = AssetAmount.Format(owner < 0 ? 0 : ledger.Available(owner, i), a.Scale),
                    held = AssetAmount.Format(owner < 0 ? 0 : ledger.Held(owner, i), a.Scale),
                    owed = AssetAmount.Format(owner < 0 ? 0 : ledger.Debt(owner, i), a.Scale),
                }).ToList(),
            };
        });
    }

    private OrderView View(OrderRecord o, IReadOnlyList<ExchangeEvent>? events = null)
    {
        var rules = _markets[o.Market];
        var view = new OrderView
        {
            Id = o.Id,
            ClientOrderId = o.ClientOrderId,
            Market = rules.Symbol,
            Side = o.Side == Side.Buy ? "buy" : "sell",
            Type = o.Type == OrderType.Market ? "market" : "limit",
            TimeInForce = o.TimeInForce.ToString().ToLowerInvariant(),
            PostOnly = o.PostOnly,
            Price = o.Type == OrderType.Market ? null : rules.FormatPrice(o.Price),
            Quantity = rules.FormatQuantity(o.Quantity),
            Filled = rules.FormatQuantity(o.Filled),
            Remaining = rules.FormatQuantity(o.Status == OrderStatus.Open ? o.Remaining : 0),
            FilledValue = rules.FormatQuote(o.FilledValue),
            Fees = rules.FormatQuote(o.Fees),
            Status = o.Status.ToString().ToLowerInvariant(),
            Reason = o.Expiry switch
            {
                ExpiryReason.ImmediateOrCancel => "immediate_or_cancel",
                ExpiryReason.SelfTrade => "self_trade",
                ExpiryReason.OutOfFunds => "out_of_funds",
                ExpiryReason.Requested => "requested",
                _ => null,
            },
            Created = o.Created,
            Updated = o.Updated,
        };
        if (events is not null)
        {
            var fills = events.Where(e => e.Kind == EventKind.Trade && e.OrderId == o.Id).Select((e, i) =>
                new FillView($"{e.Command}-{i}", o.Id, rules.Symbol, view.Side, rules.FormatPrice(e.Price), rules.FormatQuantity(e.Quantity),
                    rules.FormatQuote(e.TakerFee), "taker", o.Updated)).ToList();
            view = view with { Fills = fills };
        }
        return view;
    }

    private sealed record OrderView
    {
        public long Id { get; init; }
        public string? ClientOrderId { get; init; }
        public string Market { get; init; } = "";
        public string Side { get; init; } = "";
        public string Type { get; init; } = "";
        public string TimeInForce { get; init; } = "";
        public bool PostOnly { get; init; }
        public string? Price { get; init; }
        public string Quantity { get; init; } = "0";
        public string Filled { get; init; } = "0";
        public string Remaining { get; init; } = "0";
        public string FilledValue { get; init; } = "0";
        public string Fees { get; init; } = "0";
        public string Status { get; init; } = "";
        public string? Reason { get; init; }
        public long Created { get; init; }
        public long Updated { get; init; }
        public bool Duplicate { get; init; }
        public IReadOnlyList<FillView>? Fills { get; init; }
    }

    private sealed record FillView(string TradeId, long OrderId, string Market, string Side, string Price, string Quantity, string Fee, string Liquidity, long Time);

    // ---- deposits and withdrawals

    private AssetSpec Asset(JsonElement args, out int index)
    {
        var code = Required(args, "asset");
        if (!_assetIndex.TryGetValue(code, out index))
            throw new ExchangeApiException(404, "unknown_asset", $"No asset {code}.");
        return Definition.Assets[index];
    }

    private Task<object> DepositAddressAsync(Call call)
    {
        var account = call.RequireAccount();
        var asset = Asset(call.Args, out _);
        if (!_deposits.TryGetValue(asset.Code, out var tracker))
            throw new ExchangeApiException(404, "no_chain", $"{asset.Code} has no chain here: it cannot be deposited.");
        var (_, address) = _funds.DepositAddress(asset.Code, account, tracker.Chain.DepositAddress);
        return Task.FromResult<object>(new { asset = asset.Code, address, confirmations = tracker.Confirmations, network = tracker.Chain.Network });
    }

    private Task<object> DepositsAsync(Call call)
    {
        var account = call.RequireAccount();
        var asset = Has(call.Args, "asset") ? Asset(call.Args, out _).Code : null;
        var limit = (int)Math.Clamp(Long(call.Args, "limit") ?? 100, 1, 1000);
        return Task.FromResult<object>(new { deposits = _funds.Deposits(account, asset, limit).Select(DepositView).ToList() });
    }

    private object DepositView(DepositRecord d)
    {
        var scale = Definition.Assets[_assetIndex[d.Asset]].Scale;
        var required = _deposits.TryGetValue(d.Asset, out var t) ? t.Confirmations : 0;
        return new
        {
            asset = d.Asset, txId = d.TxId, index = d.Index, address = d.Address, amount = AssetAmount.Format(d.Amount, scale),
            state = d.State.ToString().ToLowerInvariant(), confirmations = d.Confirmations, required, height = d.Height, credits = d.Credits,
            seen = d.Seen, updated = d.Updated,
        };
    }

    private async Task<object> WithdrawAsync(Call call)
    {
        var account = call.RequireAccount();
        var asset = Asset(call.Args, out _);
        if (!_withdrawals.TryGetValue(asset.Code, out var processor))
            throw new ExchangeApiException(404, "no_chain", $"{asset.Code} has no chain here: it cannot be withdrawn.");
        if (!AssetAmount.TryParse(Required(call.Args, "amount"), asset.Scale, out var amount) || amount <= 0)
            throw new ExchangeApiException(422, "bad_amount", $"'amount' must be a positive {asset.Code} amount with at most {asset.Scale} decimals.");
        var record = await processor.RequestAsync(account, Required(call.Args, "key"), Required(call.Args, "address"), amount);
        return new { withdrawal = WithdrawalView(record) };
    }

    private Task<object> WithdrawalsAsync(Call call)
    {
        var account = call.RequireAccount();
        var asset = Has(call.Args, "asset") ? Asset(call.Args, out _).Code : null;
        var limit = (int)Math.Clamp(Long(call.Args, "limit") ?? 100, 1, 1000);
        return Task.FromResult<object>(new { withdrawals = _funds.Withdrawals(account, asset, null, limit).Select(WithdrawalView).ToList() });
    }

    private object WithdrawalView(WithdrawalRecord w) => new
    {
        id = w.Id, key = w.Key, asset = w.Asset, address = w.Address, account = w.Owner,
        amount = AssetAmount.Format(w.Amount, Definition.Assets[_assetIndex[w.Asset]].Scale),
        state = w.State.ToString().ToLowerInvariant(), txId = w.TxId, confirmations = w.Confirmations, reason = w.Reason,
        approvedBy = w.ApprovedBy, created = w.Created, updated = w.Updated,
    };

    /// <summary>
    /// Pays another account from the caller's available balance, once per key (mesh settlement pays its neighbours'
    /// receipts this way). A key already used answers "already": nothing moved now.
    /// </summary>
    private async Task<object> TransferAsync(Call call)
    {
        var account = call.RequireAccount();
        var asset = Asset(call.Args, out var index);
        var to = Required(call.Args, "to");
        if (to.Length is 0 or > 256)
            throw new ExchangeApiException(400, "bad_request", "'to' names an account: 1 to 256 characters (an account key).");
        if (!AssetAmount.TryParse(Required(call.Args, "amount"), asset.Scale, out var amount) || amount <= 0)
            throw new ExchangeApiException(422, "bad_amount", $"'amount' must be a positive {asset.Code} amount with at most {asset.Scale} decimals.");
        var key = Required(call.Args, "key");
        if (key.Length is 0 or > 200)
            throw new ExchangeApiException(400, "bad_request", "'key' is 1 to 200 characters.");
        var reason = await _loop.RunAsync(s =>
        {
            var from = s.FindOwner(account);
            if (from < 0)
                return RejectReason.InsufficientFunds;
            var events = s.Submit(ExchangeCommand.Transfer(from, s.Owner(to), index, amount, $"transfer:{account}:{key}"));
            return events[0].Kind == EventKind.Rejected ? events[0].Reason : RejectReason.None;
        });
        return reason switch
        {
            RejectReason.None => new { transferred = true, already = false },
            RejectReason.DuplicateKey => new { transferred = false, already = true },
            _ => throw new ExchangeApiException(ErrorCodes.Status(reason), ErrorCodes.Of(reason), Explain(reason)),
        };
    }

    // ---- sessions

    private Task<object> SessionAsync(Call call)
    {
        var account = call.RequireAccount();
        var enable = Bool(call.Args, "cancelOnDisconnect") ?? throw new ExchangeApiException(400, "bad_request", "'cancelOnDisconnect' (true or false) is required.");
        if (enable)
        {
            if (!_present.ContainsKey(call.From))
            {
                throw new ExchangeApiException(409, "not_subscribed",
                    $"Subscribe to the topic {SessionsTopic} first: the exchange learns that the session ended when that subscription goes.",
                    new Dictionary<string, object?> { ["topic"] = SessionsTopic });
            }
            _cancelOnDisconnect[call.From] = account;
        }
        else
        {
            _cancelOnDisconnect.TryRemove(call.From, out _);
        }
        SaveSessions();
        return Task.FromResult<object>(new { cancelOnDisconnect = enable, session = call.From, topic = SessionsTopic });
    }

    // ---- the operator

    private void RequireOperator(Call call)
    {
        if (!_options.Operators.Contains(call.RequireAccount(), StringComparer.OrdinalIgnoreCase))
            throw new ExchangeApiException(403, "not_operator", "Only the exchange's operators may do this.");
    }

    private Task<object> AdminWithdrawalsAsync(Call call)
    {
        RequireOperator(call);
        var state = String(call.Args, "state");
        WithdrawalState[]? states = state is null ? null
            : Enum.TryParse<WithdrawalState>(state, ignoreCase: true, out var parsed) ? [parsed]
            : throw new ExchangeApiException(400, "bad_request", $"No withdrawal state '{state}'.");
        var limit = (int)Math.Clamp(Long(call.Args, "limit") ?? 100, 1, 1000);
        return Task.FromResult<object>(new { withdrawals = _funds.Withdrawals(null, null, states, limit).Select(WithdrawalView).ToList() });
    }

    private async Task<object> AdminDecideAsync(Call call, bool approve)
    {
        RequireOperator(call);
        var id = Long(call.Args, "id") ?? throw new ExchangeApiException(400, "bad_request", "'id' (the withdrawal) is required.");
        var record = _funds.Withdrawal(id) ?? throw new ExchangeApiException(404, "unknown_withdrawal", $"No withdrawal {id}.");
        var processor = _withdrawals[record.Asset];
        var result = approve ? await processor.ApproveAsync(id, call.Account!)
            : await processor.RejectAsync(id, call.Account!, String(call.Args, "reason") ?? "no reason given");
        return new { withdrawal = WithdrawalView(result) };
    }

    /// <summary>Drives a simulated chain (any account may: it is a simulation, for trying the exchange).</summary>
    private Task<object> SimChainAsync(Call call)
    {
        call.RequireAccount();
        var asset = Asset(call.Args, out _);
        if (!_deposits.TryGetValue(asset.Code, out var tracker) || tracker.Chain is not Chains.SimulatedChainAdapter simulated)
            throw new ExchangeApiException(404, "no_simulated_chain", $"{asset.Code} is not on a simulated chain here.");
        var chain = simulated.Chain;
        switch (Required(call.Args, "action"))
        {
            case "pay":
                if (!AssetAmount.TryParse(Required(call.Args, "amount"), asset.Scale, out var amount) || amount <= 0)
                    throw new ExchangeApiException(422, "bad_amount", $"'amount' must be a positive {asset.Code} amount.");
                var address = Required(call.Args, "address");
                if (!simulated.IsValidAddress(address))
                    throw new ExchangeApiException(422, "bad_address", $"'{address}' is not a {asset.Code} address.");
                return Task.FromResult<object>(new { txId = chain.Pay(address, amount), height = chain.Height });
            case "mine":
                chain.MineBlocks((int)Math.Clamp(Long(call.Args, "blocks") ?? 1, 1, 1000));
                return Task.FromResult<object>(new { height = chain.Height });
            case "reorg":
                var drop = call.Args.TryGetProperty("drop", out var d) && d.ValueKind == JsonValueKind.Array
                    ? d.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()! : throw new ExchangeApiException(400, "bad_request", "'drop' lists transaction ids.")).ToList() : [];
                try
                {
                    chain.Reorganise((int)Math.Clamp(Long(call.Args, "depth") ?? 1, 1, 100), drop);
                }
                catch (ArgumentException e)
                {
                    throw new ExchangeApiException(422, "bad_reorganisation", e.Message);
                }
                return Task.FromResult<object>(new { height = chain.Height });
            case "down":
                chain.Down = Bool(call.Args, "down") ?? true;
                return Task.FromResult<object>(new { down = chain.Down });
            case "status":
                return Task.FromResult<object>(new { height = chain.Height, down = chain.Down });
            default:
                throw new ExchangeApiException(400, "bad_request", "'action' is pay, mine, reorg, down or status.");
        }
    }
}
