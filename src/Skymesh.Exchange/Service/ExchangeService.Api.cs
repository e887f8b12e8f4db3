using System.Text;
using System.Text.Json;
using Skymesh.Exchange.Matching;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Exchange.Service;

public sealed partial class ExchangeService
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    private void RegisterHandlers(SsmpPeer peer)
    {
        Public(peer, "time", _ => Task.FromResult<object>(new { serverTime = Now }));
        Public(peer, "markets", _ => Task.FromResult<object>(MarketsAnswer()));
        Public(peer, "book", BookAsync);
        Private(peer, "order.place", PlaceAsync);
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

    private void Register(SsmpPeer peer, string method, Func<Call, Task<object>> handler, bool needsAccount, Func<SsmpRpcRequest, int>? cost)
    {
        peer.Handle(method, async (request, _) =>
        {
            Interlocked.Increment(ref _requests);
            Call? call = null;
            try
            {
                call = Admit(request, needsAccount, cost?.Invoke(request) ?? 1);
                var answer = await handler(call);
                return Serialize(answer, call.Gate);
            }
            catch (ExchangeApiException e)
            {
                Interlocked.Increment(ref _refused);
                throw WithLimits(e, call?.Gate).ToRpc();
            }
            catch (WithdrawalRefusedException e)
            {
                Interlocked.Increment(ref _refused);
                throw WithLimits(new ExchangeApiException(e.Status, e.Code, e.Message), call?.Gate).ToRpc();
            }
            catch (ExchangeStoppedException e)
            {
                throw new ExchangeApiException(503, "unavailable", e.Message).ToRpc();
            }
            catch (Exception e) when (e is not SsmpRpcException)
            {
                Log.RequestFailed(_logger, request.Method, request.From, e);
                throw new ExchangeApiException(500, "internal", $"{request.Method} failed inside the exchange.").ToRpc();
            }
        });
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

    private MarketRules Market(JsonElement args)
    {
        var symbol = Required(args, "market");
        return _markets.FirstOrDefault(m => m.Symbol == symbol)
            ?? throw new ExchangeApiException(404, "unknown_market", $"No market {symbol}; this exchange has {string.Join(", ", _markets.Select(m => m.Symbol))}.");
    }

    /// <summary>Reads an order request into an engine command (owner filled in on the engine thread).</summary>
    private ExchangeCommand ParseOrder(JsonElement args)
    {
        var market = Market(args);
        var side = Required(args, "side") switch
        {
            "buy" => Side.Buy,
            "sell" => Side.Sell,
            var other => throw new ExchangeApiException(400, "bad_request", $"'side' is buy or sell, not '{other}'."),
        };
        var type = String(args, "type") ?? "limit";
        if (!market.TryParseQuantity(Required(args, "quantity"), out var quantity))
            throw new ExchangeApiException(422, "bad_quantity", $"'quantity' must be a positive {market.Base.Code} amount with at most {market.Base.Scale} decimals, a multiple of {market.LotSize}.");
        var tif = (String(args, "timeInForce") ?? (type == "market" ? "ioc" : "gtc")) switch
        {
            "gtc" => TimeInForce.Gtc,
            "ioc" => TimeInForce.Ioc,
            "fok" => TimeInForce.Fok,
            var other => throw new ExchangeApiException(400, "bad_request", $"'timeInForce' is gtc, ioc or fok, not '{other}'."),
        };
        var stp = (String(args, "selfTrade") ?? "expireTaker") switch
        {
            "expireTaker" => SelfTradePrevention.ExpireTaker,
            "expireMaker" => SelfTradePrevention.ExpireMaker,
            "expireBoth" => SelfTradePrevention.ExpireBoth,
            "decrement" => SelfTradePrevention.Decrement,
            var other => throw new ExchangeApiException(400, "bad_request", $"'selfTrade' is expireTaker, expireMaker, expireBoth or decrement, not '{other}'."),
        };
        var clientOrderId = String(args, "clientOrderId");
        if (type == "market")
            return ExchangeCommand.MarketOrder(0, market.Index, side, quantity, tif, stp, clientOrderId);
        if (type != "limit")
            throw new ExchangeApiException(400, "bad_request", $"'type' is limit or market, not '{type}'.");
        if (!market.TryParsePrice(Required(args, "price"), out var price))
            throw new ExchangeApiException(422, "bad_price", $"'price' must be a positive {market.Quote.Code} amount per {market.Base.Code}, a multiple of {market.TickSize}.");
        return ExchangeCommand.Limit(0, market.Index, side, price, quantity, tif, Bool(args, "postOnly") ?? false, stp, clientOrderId);
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
        var owner = s.FindOwner(account);
        if (owner < 0)
            return new Placed(null, [], 0, null, false, new ExchangeApiException(422, "insufficient_funds", "This account holds nothing yet: deposit first."));
        if (_history.OpenCount(owner) >= _options.MaxOpenOrders)
            return new Placed(null, [], 0, null, false, new ExchangeApiException(422, "too_many_orders", $"An account may have at most {_options.MaxOpenOrders} open orders."));
        var events = s.Submit(command with { Owner = owner, Amount = s.Now });
        var first = events[0];
        if (first.Kind == EventKind.Rejected)
        {
            if (first.Reason == RejectReason.DuplicateClientOrderId)
                return new Placed(_history.TryGet(first.OrderId, out var original) ? original.Copy() : null, [], first.OrderId, command.Key, true, null);
            return new Placed(null, [], 0, null, false, new ExchangeApiException(ErrorCodes.Status(first.Reason), ErrorCodes.Of(first.Reason), Explain(first.Reason)));
        }
        var trades = events.Where(e => e.Kind == EventKind.Trade && e.OrderId == first.OrderId).ToArray();
        return new Placed(_history.TryGet(first.OrderId, out var order) ? order.Copy() : null, trades, first.OrderId, command.Key, false, null);
    }

    private OrderView ViewOf(in Placed placed) =>
        placed.Order is { } order ? View(order, placed.Trades) with { Duplicate = placed.Duplicate }
            : new OrderView { Id = placed.Id, ClientOrderId = placed.ClientOrderId, Duplicate = placed.Duplicate, Status = "unknown" };

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
