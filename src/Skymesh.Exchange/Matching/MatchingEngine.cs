using Skymesh.Exchange.Accounts;

namespace Skymesh.Exchange.Matching;

/// <summary>
/// The exchange's matching engine: continuous price-time priority over several markets, with the ledger's holds taken at
/// acceptance and released on cancel. It does no I/O and reads no clock: the same commands in the same order give the
/// same events and the same <see cref="StateHash"/>, which is what the journal replays to (docs/exchange.md).
/// <para>
/// Rules: trades happen at the resting order's price; the incoming order pays the taker fee and the resting one the maker
/// fee, both in the quote asset and rounded down; a buy holds its value plus the larger fee, a sell holds its base
/// quantity; a market buy holds everything its owner has available in the quote asset while it runs and spends at most
/// that. Not thread-safe: one thread feeds it.
/// </para>
/// </summary>
public sealed class MatchingEngine
{
    private sealed class Market(MarketSpec spec, int baseAsset, int quoteAsset)
    {
        public MarketSpec Spec { get; } = spec;
        public int Base { get; } = baseAsset;
        public int Quote { get; } = quoteAsset;
        public int MaxFeePpm { get; } = Math.Max(spec.MakerFeePpm, spec.TakerFeePpm);
        public BookSide Bids { get; } = new(Side.Buy);
        public BookSide Asks { get; } = new(Side.Sell);

        private BookSide[]? _sides;

        /// <summary>Bids, then asks.</summary>
        public BookSide[] Sides => _sides ??= [Bids, Asks];

        public BookSide Own(Side side) => side == Side.Buy ? Bids : Asks;

        public BookSide Opposite(Side side) => side == Side.Buy ? Asks : Bids;
    }

    private readonly ExchangeLedger _ledger;
    private readonly Market[] _markets;
    private readonly OrderPool _pool = new();
    private readonly IExchangeEvents? _events;
    private readonly List<int> _scratch = [];
    private readonly ClientOrderIds _clientOrders = new(ClientOrderIdMemory);
    private long _sequence;
    private long _nextOrderId = 1;
    private long _priority;
    private int _leg;

    /// <summary>Longest client order id.</summary>
    public const int MaxClientOrderIdLength = 64;

    /// <summary>Client order ids remembered (the newest); an older one may be used again.</summary>
    public const int ClientOrderIdMemory = 1_000_000;

    public MatchingEngine(ExchangeLedger ledger, IReadOnlyList<MarketSpec> markets, IExchangeEvents? events = null)
    {
        ArgumentNullException.ThrowIfNull(ledger);
        ArgumentNullException.ThrowIfNull(markets);
        _ledger = ledger;
        _events = events;
        _markets = new Market[markets.Count];
        for (var i = 0; i < markets.Count; i++)
        {
            var spec = markets[i];
            spec.Validate();
            _markets[i] = new Market(spec, ledger.AssetIndex(spec.Base), ledger.AssetIndex(spec.Quote));
        }
    }

    public ExchangeLedger Ledger => _ledger;

    public IReadOnlyList<MarketSpec> Markets => [.. _markets.Select(m => m.Spec)];

    /// <summary>Commands taken so far (the number of the last one).</summary>
    public long Sequence => _sequence;

    /// <summary>Orders resting on every book.</summary>
    public int RestingOrders => _pool.Count;

    /// <summary>Takes one command; its events go to the sink before this returns. Returns the command's number.</summary>
    public long Execute(in ExchangeCommand command)
    {
        var sequence = ++_sequence;
        _leg = 0;
        switch (command.Kind)
        {
            case CommandKind.Place:
                Place(command, sequence);
                break;
            case CommandKind.Cancel:
                Cancel(command, sequence);
                break;
            case CommandKind.CancelAll:
                CancelAll(command, sequence);
                break;
            case CommandKind.Amend:
                Amend(command, sequence);
                break;
            case CommandKind.Deposit:
                Deposit(command, sequence);
                break;
            case CommandKind.Withdraw:
                Withdraw(command, sequence);
                break;
            case CommandKind.Transfer:
                Transfer(command, sequence);
                break;
            case CommandKind.Reverse:
                Reverse(command, sequence);
                break;
            case CommandKind.OpenAccount when !string.IsNullOrEmpty(command.Key) && command.Key.Length <= 256:
                Emit(new ExchangeEvent(EventKind.AccountOpened, sequence, 0, _ledger.Owner(command.Key), -1, Side.Buy, 0, 0));
                break;
            default:
                Reject(command, sequence, RejectReason.BadAmount);
                break;
        }
        return sequence;
    }

    private void Place(in ExchangeCommand c, long sequence)
    {
        if ((uint)c.Market >= (uint)_markets.Length)
        {
            Reject(c, sequence, RejectReason.UnknownMarket);
            return;
        }
        if ((uint)c.Owner >= (uint)_ledger.OwnerCount)
        {
            Reject(c, sequence, RejectReason.UnknownOwner);
            return;
        }
        if (c.Key is not null)
        {
            if (c.Key.Length is 0 or > MaxClientOrderIdLength)
            {
                Reject(c, sequence, RejectReason.BadClientOrderId);
                return;
            }
            if (_clientOrders.TryGet(c.Owner, c.Key, out var first))
            {
                Emit(new ExchangeEvent(EventKind.Rejected, sequence, first, c.Owner, c.Market, c.Side, c.Price, c.Quantity, Reason: RejectReason.DuplicateClientOrderId));
                return;
            }
        }
        if (_ledger.IsFrozen(c.Owner))
        {
            Reject(c, sequence, RejectReason.AccountFrozen);
            return;
        }
        var m = _markets[c.Market];
        var spec = m.Spec;
        if (c.Quantity <= 0 || c.Quantity % spec.LotSize != 0)
        {
            Reject(c, sequence, RejectReason.BadQuantity);
            return;
        }
        var lots = c.Quantity / spec.LotSize;
        var market = c.Type == OrderType.Market;
        if (market ? c.TimeInForce == TimeInForce.Gtc || c.PostOnly : c.PostOnly && c.TimeInForce != TimeInForce.Gtc)
        {
            Reject(c, sequence, RejectReason.BadTimeInForce);
            return;
        }
        long hold;
        if (!market)
        {
            if (PriceProblem(spec, c.Price, lots) is not RejectReason.None and var problem)
            {
                Reject(c, sequence, problem);
                return;
            }
            hold = Required(m, c.Side, c.Price, lots);
        }
        else
        {
            hold = c.Side == Side.Buy ? _ledger.Available(c.Owner, m.Quote) : c.Quantity;
        }
        var asset = c.Side == Side.Buy ? m.Quote : m.Base;
        if (hold <= 0 || _ledger.Available(c.Owner, asset) < hold)
        {
            Reject(c, sequence, RejectReason.InsufficientFunds);
            return;
        }
        if (c.PostOnly && Crosses(m, c.Side, c.Price))
        {
            Reject(c, sequence, RejectReason.WouldTakeLiquidity);
            return;
        }
        if (c.TimeInForce == TimeInForce.Fok && !CanFill(m, c.Owner, c.Side, !market, c.Price, lots, c.Stp, hold))
        {
            Reject(c, sequence, RejectReason.CannotFillCompletely);
            return;
        }
        var id = _nextOrderId++;
        if (c.Key is not null)
            RememberClientOrder(c.Owner, c.Key, id);
        Emit(new ExchangeEvent(EventKind.Accepted, sequence, id, c.Owner, c.Market, c.Side, c.Price, c.Quantity));
        _ledger.Hold(c.Owner, asset, hold, sequence, _leg++);
        Enter(m, c.Market, sequence, id, c.Owner, c.Side, !market, c.Price, lots, hold, c.TimeInForce == TimeInForce.Gtc && !market, c.PostOnly, c.Stp);
    }

    /// <summary>
    /// Matches an accepted (or re-priced) order against the book, then rests what is left (GTC limit) or lets it expire,
    /// releasing whatever of <paramref name="held"/> it no longer needs.
    /// </summary>
    private void Enter(Market m, int marketIndex, long sequence, long id, int owner, Side side, bool limit, long price, long lots,
        long held, bool rests, bool postOnly, SelfTradePrevention stp)
    {
        var spec = m.Spec;
        var opposite = m.Opposite(side);
        var buy = side == Side.Buy;
        var expiry = ExpiryReason.None;
        while (lots > 0 && !opposite.IsEmpty)
        {
            var level = opposite.Best;
            var levelPrice = opposite.PriceAt(level);
            if (limit && (buy ? levelPrice > price : levelPrice < price))
                break;
            var slot = opposite.HeadAt(level);
            ref var maker = ref _pool[slot];
            if (maker.Owner == owner)
            {
                if (stp == SelfTradePrevention.Decrement)
                {
                    var q = Math.Min(lots, maker.Remaining);
                    maker.Remaining -= q;
                    opposite.Reduce(levelPrice, q);
                    lots -= q;
                    Emit(new ExchangeEvent(EventKind.Decremented, sequence, id, owner, marketIndex, side, levelPrice, q * spec.LotSize,
                        MakerOrderId: maker.Id, MakerOwner: maker.Owner, Expiry: ExpiryReason.SelfTrade));
                    if (maker.Remaining == 0)
                        Remove(m, slot, sequence);
                    else
                        ReleaseExcess(m, ref maker, sequence);
                    continue;
                }
                if (stp != SelfTradePrevention.ExpireTaker)
                    CancelResting(m, slot, sequence, ExpiryReason.SelfTrade);
                if (stp == SelfTradePrevention.ExpireMaker)
                    continue;
                expiry = ExpiryReason.SelfTrade;
                break;
            }
            var lotsNow = Math.Min(lots, maker.Remaining);
            if (buy && !limit)
            {
                lotsNow = Math.Min(lotsNow, Affordable(held, levelPrice, spec.TakerFeePpm));
                if (lotsNow == 0)
                {
                    expiry = ExpiryReason.OutOfFunds;
                    break;
                }
            }
            held -= Trade(m, marketIndex, sequence, id, owner, side, slot, levelPrice, lotsNow);
            lots -= lotsNow;
        }
        var asset = buy ? m.Quote : m.Base;
        if (lots == 0)
        {
            _ledger.Release(owner, asset, held, sequence, _leg++);
            return;
        }
        if (rests && expiry == ExpiryReason.None)
        {
            var required = Required(m, side, price, lots);
            _ledger.Release(owner, asset, held - required, sequence, _leg++);
            var slot = _pool.Add(id);
            ref var order = ref _pool[slot];
            order.Price = price;
            order.Remaining = lots;
            order.Held = required;
            order.Owner = owner;
            order.Market = marketIndex;
            order.Side = side;
            order.PostOnly = postOnly;
            order.Stp = stp;
            order.Priority = ++_priority;
            m.Own(side).Append(_pool, slot);
            Emit(new ExchangeEvent(EventKind.Rested, sequence, id, owner, marketIndex, side, price, lots * spec.LotSize));
            return;
        }
        _ledger.Release(owner, asset, held, sequence, _leg++);
        Emit(new ExchangeEvent(EventKind.Expired, sequence, id, owner, marketIndex, side, price, lots * spec.LotSize,
            Expiry: expiry == ExpiryReason.None ? ExpiryReason.ImmediateOrCancel : expiry));
    }

    /// <summary>One trade with the resting order in <paramref name="slot"/>; returns what the incoming order spent of its hold.</summary>
    private long Trade(Market m, int marketIndex, long sequence, long takerId, int taker, Side takerSide, int slot, long price, long lots)
    {
        var spec = m.Spec;
        ref var maker = ref _pool[slot];
        var notional = price * lots;
        var baseAmount = lots * spec.LotSize;
        var takerFee = MarketSpec.Fee(notional, spec.TakerFeePpm);
        var makerFee = MarketSpec.Fee(notional, spec.MakerFeePpm);
        int buyer, seller;
        long buyerFee, sellerFee;
        if (takerSide == Side.Buy)
            (buyer, seller, buyerFee, sellerFee) = (taker, maker.Owner, takerFee, makerFee);
        else
            (buyer, seller, buyerFee, sellerFee) = (maker.Owner, taker, makerFee, takerFee);
        _ledger.Pay(buyer, seller, m.Quote, notional, sequence, _leg++);
        _ledger.PayFee(buyer, m.Quote, buyerFee, sequence, _leg++);
        _ledger.Pay(seller, buyer, m.Base, baseAmount, sequence, _leg++);
        _ledger.ChargeFee(seller, m.Quote, sellerFee, sequence, _leg++);
        maker.Held -= takerSide == Side.Buy ? baseAmount : notional + makerFee;
        maker.Remaining -= lots;
        m.Opposite(takerSide).Reduce(price, lots);
        Emit(new ExchangeEvent(EventKind.Trade, sequence, takerId, taker, marketIndex, takerSide, price, baseAmount,
            MakerOrderId: maker.Id, MakerOwner: maker.Owner, TakerFee: takerFee, MakerFee: makerFee));
        if (maker.Remaining == 0)
            Remove(m, slot, sequence);
        return takerSide == Side.Buy ? notional + takerFee : baseAmount;
    }

    private void Cancel(in ExchangeCommand c, long sequence)
    {
        if (!_pool.TryFind(c.OrderId, out var slot))
        {
            Reject(c, sequence, RejectReason.UnknownOrder);
            return;
        }
        if (_pool[slot].Owner != c.Owner)
        {
            Reject(c, sequence, RejectReason.NotYourOrder);
            return;
        }
        CancelResting(_markets[_pool[slot].Market], slot, sequence, ExpiryReason.Requested);
    }

    private void CancelAll(in ExchangeCommand c, long sequence)
    {
        if ((uint)c.Owner >= (uint)_ledger.OwnerCount)
        {
            Reject(c, sequence, RejectReason.UnknownOwner);
            return;
        }
        if (c.Market != -1 && (uint)c.Market >= (uint)_markets.Length)
        {
            Reject(c, sequence, RejectReason.UnknownMarket);
            return;
        }
        // In book order (market by market, bids then asks, best price first, oldest first), so that the events come in
        // the same order on every run; the slots are gathered first because cancelling changes the book.
        var mine = _scratch;
        mine.Clear();
        for (var index = 0; index < _markets.Length; index++)
        {
            if (c.Market != -1 && c.Market != index)
                continue;
            foreach (var side in _markets[index].Sides)
            {
                for (var level = side.Best; level >= 0; level--)
                {
                    for (var slot = side.HeadAt(level); slot >= 0; slot = _pool[slot].Next)
                    {
                        if (_pool[slot].Owner == c.Owner)
                            mine.Add(slot);
                    }
                }
            }
        }
        foreach (var slot in mine)
            CancelResting(_markets[_pool[slot].Market], slot, sequence, ExpiryReason.Requested);
    }

    private void RememberClientOrder(int owner, string clientOrderId, long id)
    {
        _clientOrders.Add(owner, clientOrderId, id);
    }

    /// <summary>The order an owner placed with <paramref name="clientOrderId"/>, while it is remembered.</summary>
    public bool TryGetClientOrder(int owner, string clientOrderId, out long orderId) =>
        _clientOrders.TryGet(owner, clientOrderId, out orderId);

    private void Reverse(in ExchangeCommand c, long sequence)
    {
        var reason = CheckTransfer(c);
        long owed = 0;
        if (reason == RejectReason.None && !_ledger.Reverse(c.Owner, c.Asset, c.Amount, c.Key!, sequence, out owed))
            reason = RejectReason.DuplicateKey;
        if (reason != RejectReason.None)
            Reject(c, sequence, reason);
        else
            Emit(new ExchangeEvent(EventKind.Reversed, sequence, 0, c.Owner, c.Asset, Side.Sell, owed, c.Amount));
    }

    private void Amend(in ExchangeCommand c, long sequence)
    {
        if (!_pool.TryFind(c.OrderId, out var slot))
        {
            Reject(c, sequence, RejectReason.UnknownOrder);
            return;
        }
        ref var order = ref _pool[slot];
        if (order.Owner != c.Owner)
        {
            Reject(c, sequence, RejectReason.NotYourOrder);
            return;
        }
        if (_ledger.IsFrozen(c.Owner))
        {
            Reject(c, sequence, RejectReason.AccountFrozen);
            return;
        }
        var marketIndex = order.Market;
        var m = _markets[marketIndex];
        var spec = m.Spec;
        if (c.Quantity <= 0 || c.Quantity % spec.LotSize != 0)
        {
            Reject(c, sequence, RejectReason.BadQuantity);
            return;
        }
        var lots = c.Quantity / spec.LotSize;
        if (PriceProblem(spec, c.Price, lots) is not RejectReason.None and var problem)
        {
            Reject(c, sequence, problem);
            return;
        }
        if (c.Price == order.Price && lots == order.Remaining)
        {
            Reject(c, sequence, RejectReason.NothingToAmend);
            return;
        }
        var side = order.Side;
        var asset = side == Side.Buy ? m.Quote : m.Base;
        if (c.Price == order.Price && lots < order.Remaining)
        {
            // Smaller at the same price: keeps its place in the queue.
            m.Own(side).Reduce(order.Price, order.Remaining - lots);
            order.Remaining = lots;
            Emit(new ExchangeEvent(EventKind.Amended, sequence, order.Id, order.Owner, marketIndex, side, order.Price, c.Quantity));
            ReleaseExcess(m, ref order, sequence);
            return;
        }
        var required = Required(m, side, c.Price, lots);
        if (_ledger.Available(order.Owner, asset) + order.Held < required)
        {
            Reject(c, sequence, RejectReason.InsufficientFunds);
            return;
        }
        if (order.PostOnly && Crosses(m, side, c.Price))
        {
            Reject(c, sequence, RejectReason.WouldTakeLiquidity);
            return;
        }
        // Any other change: out of the queue, and in again as if new (it may trade now), under the same id.
        var (id, owner, postOnly, stp, held) = (order.Id, order.Owner, order.PostOnly, order.Stp, order.Held);
        m.Own(side).Unlink(_pool, slot);
        _pool.Remove(slot);
        _ledger.Release(owner, asset, held, sequence, _leg++);
        Emit(new ExchangeEvent(EventKind.Amended, sequence, id, owner, marketIndex, side, c.Price, c.Quantity));
        _ledger.Hold(owner, asset, required, sequence, _leg++);
        Enter(m, marketIndex, sequence, id, owner, side, limit: true, c.Price, lots, required, rests: true, postOnly, stp);
    }

    private void Deposit(in ExchangeCommand c, long sequence)
    {
        var reason = CheckTransfer(c);
        if (reason == RejectReason.None && !_ledger.Deposit(c.Owner, c.Asset, c.Amount, c.Key!, sequence))
            reason = RejectReason.DuplicateKey;
        if (reason != RejectReason.None)
            Reject(c, sequence, reason);
        else
            Emit(new ExchangeEvent(EventKind.Deposited, sequence, 0, c.Owner, -1, Side.Buy, 0, c.Amount));
    }

    private void Withdraw(in ExchangeCommand c, long sequence)
    {
        var reason = CheckTransfer(c);
        if (reason == RejectReason.None)
        {
            if (_ledger.Seen(c.Key!))
                reason = RejectReason.DuplicateKey;
            else if (_ledger.IsFrozen(c.Owner))
                reason = RejectReason.AccountFrozen;
            else if (!_ledger.Withdraw(c.Owner, c.Asset, c.Amount, c.Key!, sequence))
                reason = RejectReason.InsufficientFunds;
        }
        if (reason != RejectReason.None)
            Reject(c, sequence, reason);
        else
            Emit(new ExchangeEvent(EventKind.Withdrawn, sequence, 0, c.Owner, -1, Side.Sell, 0, c.Amount));
    }

    private void Transfer(in ExchangeCommand c, long sequence)
    {
        var reason = CheckTransfer(c);
        if (reason == RejectReason.None)
        {
            if ((uint)c.Market >= (uint)_ledger.OwnerCount)
                reason = RejectReason.UnknownOwner;
            else if (c.Market == c.Owner)
                reason = RejectReason.SameOwner;
            else if (_ledger.Seen(c.Key!))
                reason = RejectReason.DuplicateKey;
            else if (_ledger.IsFrozen(c.Owner))
                reason = RejectReason.AccountFrozen;
            else if (!_ledger.Transfer(c.Owner, c.Market, c.Asset, c.Amount, c.Key!, sequence))
                reason = RejectReason.InsufficientFunds;
        }
        if (reason != RejectReason.None)
            Reject(c, sequence, reason);
        else
            Emit(new ExchangeEvent(EventKind.Transferred, sequence, 0, c.Owner, c.Asset, Side.Sell, 0, c.Amount, MakerOwner: c.Market));
    }

    private RejectReason CheckTransfer(in ExchangeCommand c)
    {
        if ((uint)c.Owner >= (uint)_ledger.OwnerCount)
            return RejectReason.UnknownOwner;
        if ((uint)c.Asset >= (uint)_ledger.Assets.Count)
            return RejectReason.UnknownAsset;
        if (c.Amount <= 0 || c.Amount > MarketSpec.MaxNotional)
            return RejectReason.BadAmount;
        return string.IsNullOrEmpty(c.Key) ? RejectReason.DuplicateKey : RejectReason.None;
    }

    /// <summary>Takes a resting order off the book unfilled, releasing its funds.</summary>
    private void CancelResting(Market m, int slot, long sequence, ExpiryReason why)
    {
        ref var order = ref _pool[slot];
        Emit(new ExchangeEvent(EventKind.Canceled, sequence, order.Id, order.Owner, order.Market, order.Side, order.Price,
            order.Remaining * m.Spec.LotSize, Expiry: why));
        m.Own(order.Side).Unlink(_pool, slot);
        _ledger.Release(order.Owner, order.Side == Side.Buy ? m.Quote : m.Base, order.Held, sequence, _leg++);
        _pool.Remove(slot);
    }

    /// <summary>Removes a resting order that has nothing left to trade, releasing what its hold still has.</summary>
    private void Remove(Market m, int slot, long sequence)
    {
        ref var order = ref _pool[slot];
        m.Own(order.Side).Unlink(_pool, slot);
        _ledger.Release(order.Owner, order.Side == Side.Buy ? m.Quote : m.Base, order.Held, sequence, _leg++);
        _pool.Remove(slot);
    }

    /// <summary>Releases what a resting order holds beyond what its remainder needs.</summary>
    private void ReleaseExcess(Market m, ref RestingOrder order, long sequence)
    {
        var required = Required(m, order.Side, order.Price, order.Remaining);
        _ledger.Release(order.Owner, order.Side == Side.Buy ? m.Quote : m.Base, order.Held - required, sequence, _leg++);
        order.Held = required;
    }

    /// <summary>Why a limit price for <paramref name="lots"/> is not acceptable: off the tick, too large a value, below the minimum; or None.</summary>
    private static RejectReason PriceProblem(MarketSpec spec, long price, long lots)
    {
        if (price <= 0 || price % spec.TickSize != 0)
            return RejectReason.BadPrice;
        if (lots > MarketSpec.MaxNotional / price)
            return RejectReason.TooLarge;
        return price * lots < spec.MinNotional ? RejectReason.BelowMinimum : RejectReason.None;
    }

    /// <summary>What an order of <paramref name="lots"/> at <paramref name="price"/> must hold: a buy its value and the larger fee, a sell its base.</summary>
    private static long Required(Market m, Side side, long price, long lots)
    {
        if (side == Side.Sell)
            return lots * m.Spec.LotSize;
        var notional = price * lots;
        return notional + MarketSpec.Fee(notional, m.MaxFeePpm);
    }

    /// <summary>The most lots at <paramref name="price"/> that <paramref name="funds"/> pay for with the fee.</summary>
    internal static long Affordable(long funds, long price, int feePpm)
    {
        var lots = (long)((Int128)funds * 1_000_000 / ((Int128)price * (1_000_000 + feePpm)));
        while (Cost(lots + 1) <= funds)
            lots++;
        while (lots > 0 && Cost(lots) > funds)
            lots--;
        return lots;

        Int128 Cost(long n) => (Int128)price * n + MarketSpec.Fee(price * n, feePpm);
    }

    /// <summary>True when a limit order at <paramref name="price"/> would trade at once.</summary>
    private static bool Crosses(Market m, Side side, long price)
    {
        var opposite = m.Opposite(side);
        if (opposite.IsEmpty)
            return false;
        var best = opposite.PriceAt(opposite.Best);
        return side == Side.Buy ? best <= price : best >= price;
    }

    /// <summary>Whether a fill-or-kill order would trade all of its lots now, with the same rules <see cref="Enter"/> applies.</summary>
    private bool CanFill(Market m, int owner, Side side, bool limit, long price, long lots, SelfTradePrevention stp, long funds)
    {
        var opposite = m.Opposite(side);
        var marketBuy = side == Side.Buy && !limit;
        for (var level = opposite.Best; level >= 0; level--)
        {
            var levelPrice = opposite.PriceAt(level);
            if (limit && (side == Side.Buy ? levelPrice > price : levelPrice < price))
                return false;
            for (var slot = opposite.HeadAt(level); slot >= 0; slot = _pool[slot].Next)
            {
                ref var order = ref _pool[slot];
                if (order.Owner == owner)
                {
                    // A maker of the same owner is cancelled (and skipped) only under ExpireMaker; every other mode stops
                    // the order or reduces it without a fill.
                    if (stp == SelfTradePrevention.ExpireMaker)
                        continue;
                    return false;
                }
                var q = Math.Min(lots, order.Remaining);
                if (marketBuy)
                {
                    q = Math.Min(q, Affordable(funds, levelPrice, m.Spec.TakerFeePpm));
                    if (q == 0)
                        return false;
                    var notional = levelPrice * q;
                    funds -= notional + MarketSpec.Fee(notional, m.Spec.TakerFeePpm);
                }
                lots -= q;
                if (lots == 0)
                    return true;
            }
        }
        return false;
    }

    private void Reject(in ExchangeCommand c, long sequence, RejectReason reason) =>
        Emit(new ExchangeEvent(EventKind.Rejected, sequence, c.OrderId, c.Owner, c.Market, c.Side, c.Price, c.Quantity, Reason: reason));

    private void Emit(in ExchangeEvent e) => _events?.On(e);

    /// <summary>
    /// A hash of everything the engine and its ledger hold: balances, fees, every resting order in book order, the next
    /// order id. Equal for two engines that took the same commands.
    /// </summary>
    public ulong StateHash()
    {
        var hasher = new StateHasher();
        hasher.Add(_sequence);
        hasher.Add(_nextOrderId);
        _ledger.Hash(ref hasher);
        foreach (var m in _markets)
        {
            foreach (var side in m.Sides)
            {
                hasher.Add(side.Levels);
                for (var level = side.Best; level >= 0; level--)
                {
                    for (var slot = side.HeadAt(level); slot >= 0; slot = _pool[slot].Next)
                    {
                        ref var o = ref _pool[slot];
                        hasher.Add(o.Id);
                        hasher.Add(o.Owner);
                        hasher.Add(o.Price);
                        hasher.Add(o.Remaining);
                        hasher.Add(o.Held);
                    }
                }
            }
        }
        // Only an engine that remembers client order ids folds them in, so hashes of engines without any stay as they were.
        if (_clientOrders.Count > 0)
        {
            hasher.Add(_clientOrders.Count);
            for (var k = 0; k < _clientOrders.Count; k++)
            {
                var id = _clientOrders.At(k, out var owner, out var order);
                hasher.Add(owner);
                hasher.Add(order);
                hasher.Add(id.Length);
                foreach (var ch in id)
                    hasher.Add(ch);
            }
        }
        return hasher.Value;
    }

    private static readonly byte[] SnapshotMagic = "SKYMESH-EXCHANGE-SNAPSHOT-2\n"u8.ToArray();

    // Before debts and client order ids: still read, as an engine that has neither.
    private static readonly byte[] SnapshotMagicVersion1 = "SKYMESH-EXCHANGE-SNAPSHOT-1\n"u8.ToArray();

    /// <summary>
    /// Writes the engine's whole state — counters, the ledger, every resting order in book order with its priority — so
    /// that <see cref="ReadSnapshot"/> rebuilds an engine with the same <see cref="StateHash"/> that behaves the same.
    /// </summary>
    public void WriteSnapshot(Stream stream)
    {
        using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        writer.Write(SnapshotMagic);
        writer.Write(_sequence);
        writer.Write(_nextOrderId);
        writer.Write(_priority);
        _ledger.WriteTo(writer);
        writer.Write(_markets.Length);
        foreach (var m in _markets)
        {
            writer.Write(m.Spec.Symbol);
            foreach (var side in m.Sides)
            {
                var count = 0;
                for (var level = 0; level < side.Levels; level++)
                {
                    for (var slot = side.HeadAt(level); slot >= 0; slot = _pool[slot].Next)
                        count++;
                }
                writer.Write(count);
                for (var level = side.Best; level >= 0; level--)
                {
                    for (var slot = side.HeadAt(level); slot >= 0; slot = _pool[slot].Next)
                    {
                        ref var o = ref _pool[slot];
                        writer.Write(o.Id);
                        writer.Write(o.Owner);
                        writer.Write(o.Price);
                        writer.Write(o.Remaining);
                        writer.Write(o.Held);
                        writer.Write(o.Priority);
                        writer.Write(o.PostOnly);
                        writer.Write((byte)o.Stp);
                    }
                }
            }
        }
        // Oldest first, so that reading them back in order keeps which is forgotten next.
        writer.Write(_clientOrders.Count);
        for (var k = 0; k < _clientOrders.Count; k++)
        {
            var id = _clientOrders.At(k, out var owner, out var order);
            writer.Write(owner);
            writer.Write(new string(id));
            writer.Write(order);
        }
        writer.Write(SnapshotMagic);
    }

    /// <summary>An engine rebuilt from <see cref="WriteSnapshot"/>'s bytes, for the same assets and markets.</summary>
    public static MatchingEngine ReadSnapshot(Stream stream, IReadOnlyList<AssetSpec> assets, IReadOnlyList<MarketSpec> markets, IExchangeEvents? events = null)
    {
        using var reader = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        var magic = reader.ReadBytes(SnapshotMagic.Length);
        var version1 = magic.AsSpan().SequenceEqual(SnapshotMagicVersion1);
        if (!version1 && !magic.AsSpan().SequenceEqual(SnapshotMagic))
            throw new InvalidDataException("Not an exchange snapshot.");
        var engine = new MatchingEngine(new ExchangeLedger(assets), markets, events)
        {
            _sequence = reader.ReadInt64(),
            _nextOrderId = reader.ReadInt64(),
            _priority = reader.ReadInt64(),
        };
        engine._ledger.ReadFrom(reader, withDebts: !version1);
        if (reader.ReadInt32() != engine._markets.Length)
            throw new InvalidDataException("The snapshot's markets differ from the engine's.");
        for (var index = 0; index < engine._markets.Length; index++)
        {
            var m = engine._markets[index];
            if (reader.ReadString() != m.Spec.Symbol)
                throw new InvalidDataException("The snapshot's markets differ from the engine's.");
            foreach (var side in m.Sides)
            {
                var count = reader.ReadInt32();
                for (var i = 0; i < count; i++)
                {
                    var slot = engine._pool.Add(reader.ReadInt64());
                    ref var o = ref engine._pool[slot];
                    o.Owner = reader.ReadInt32();
                    o.Price = reader.ReadInt64();
                    o.Remaining = reader.ReadInt64();
                    o.Held = reader.ReadInt64();
                    o.Priority = reader.ReadInt64();
                    o.PostOnly = reader.ReadBoolean();
                    o.Stp = (SelfTradePrevention)reader.ReadByte();
                    o.Side = side.Side;
                    o.Market = index;
                    // Book order, oldest first within a price: appending rebuilds each queue as it was.
                    side.Append(engine._pool, slot);
                }
            }
        }
        var clientOrders = version1 ? 0 : reader.ReadInt32();
        for (var i = 0; i < clientOrders; i++)
            engine.RememberClientOrder(reader.ReadInt32(), reader.ReadString(), reader.ReadInt64());
        if (!reader.ReadBytes(SnapshotMagic.Length).AsSpan().SequenceEqual(magic))
            throw new InvalidDataException("The snapshot is cut short.");
        engine.CheckInvariants();
        return engine;
    }

    /// <summary>A resting order as seen from outside.</summary>
    public readonly record struct BookOrder(long Id, int Owner, Side Side, long Price, long Quantity, long Held, int Market = 0);

    /// <summary>A resting order by id; false when there is none (filled, cancelled, or never rested).</summary>
    public bool TryGetOrder(long id, out BookOrder order)
    {
        if (!_pool.TryFind(id, out var slot))
        {
            order = default;
            return false;
        }
        ref var o = ref _pool[slot];
        order = new BookOrder(o.Id, o.Owner, o.Side, o.Price, o.Remaining * _markets[o.Market].Spec.LotSize, o.Held, o.Market);
        return true;
    }

    /// <summary>The quantity (base units) resting at <paramref name="price"/> on one side of a market; 0 when none.</summary>
    public long LevelQuantity(int market, Side side, long price)
    {
        var m = _markets[market];
        var book = m.Own(side);
        var level = book.Find(price);
        return level < 0 ? 0 : book.VolumeAt(level) * m.Spec.LotSize;
    }

    /// <summary>Up to <paramref name="depth"/> price levels of one side (best first) as (price, base units).</summary>
    public IReadOnlyList<(long Price, long Quantity)> Levels(int market, Side side, int depth = int.MaxValue)
    {
        var m = _markets[market];
        var book = m.Own(side);
        var list = new List<(long, long)>(Math.Min(book.Levels, Math.Max(depth, 0)));
        for (var level = book.Best; level >= 0 && list.Count < depth; level--)
            list.Add((book.PriceAt(level), book.VolumeAt(level) * m.Spec.LotSize));
        return list;
    }

    /// <summary>The orders of one side of a market, best price first and oldest first within a price.</summary>
    public IReadOnlyList<BookOrder> Book(int market, Side side)
    {
        var m = _markets[market];
        var book = m.Own(side);
        var list = new List<BookOrder>();
        for (var level = book.Best; level >= 0; level--)
        {
            for (var slot = book.HeadAt(level); slot >= 0; slot = _pool[slot].Next)
            {
                ref var o = ref _pool[slot];
                list.Add(new BookOrder(o.Id, o.Owner, o.Side, o.Price, o.Remaining * m.Spec.LotSize, o.Held, market));
            }
        }
        return list;
    }

    /// <summary>
    /// Checks the book's invariants and throws <see cref="InvalidOperationException"/> naming the first one broken: no
    /// market crossed at rest; every level's orders at its price, in the order they joined it, with its volume; every
    /// owner's held balance exactly what its resting orders hold; and the ledger's conservation.
    /// </summary>
    public void CheckInvariants()
    {
        var held = new Dictionary<(int Owner, int Asset), long>();
        for (var index = 0; index < _markets.Length; index++)
        {
            var m = _markets[index];
            if (!m.Bids.IsEmpty && !m.Asks.IsEmpty && m.Bids.PriceAt(m.Bids.Best) >= m.Asks.PriceAt(m.Asks.Best))
                throw new InvalidOperationException($"{m.Spec.Symbol}: crossed at rest, bid {m.Bids.PriceAt(m.Bids.Best)} >= ask {m.Asks.PriceAt(m.Asks.Best)}.");
            foreach (var side in m.Sides)
            {
                for (var level = 0; level < side.Levels; level++)
                {
                    if (level > 0 && !side.Better(side.PriceAt(level), side.PriceAt(level - 1)))
                        throw new InvalidOperationException($"{m.Spec.Symbol} {side.Side}: levels out of order at {side.PriceAt(level)}.");
                    long volume = 0, priority = 0;
                    for (var slot = side.HeadAt(level); slot >= 0; slot = _pool[slot].Next)
                    {
                        ref var o = ref _pool[slot];
                        if (o.Price != side.PriceAt(level) || o.Side != side.Side || o.Market != index || o.Remaining <= 0)
                            throw new InvalidOperationException($"{m.Spec.Symbol}: order {o.Id} misplaced or empty.");
                        if (o.Priority <= priority)
                            throw new InvalidOperationException($"{m.Spec.Symbol}: order {o.Id} is ahead of an order that joined its level before it.");
                        priority = o.Priority;
                        if (o.Held < Required(m, o.Side, o.Price, o.Remaining))
                            throw new InvalidOperationException($"{m.Spec.Symbol}: order {o.Id} holds {o.Held}, less than its remainder needs.");
                        volume += o.Remaining;
                        var key = (o.Owner, o.Side == Side.Buy ? m.Quote : m.Base);
                        held[key] = held.GetValueOrDefault(key) + o.Held;
                    }
                    if (volume != side.VolumeAt(level))
                        throw new InvalidOperationException($"{m.Spec.Symbol}: level {side.PriceAt(level)} says {side.VolumeAt(level)} lots, its orders {volume}.");
                }
            }
        }
        for (var owner = 0; owner < _ledger.OwnerCount; owner++)
        {
            for (var asset = 0; asset < _ledger.Assets.Count; asset++)
            {
                if (_ledger.Held(owner, asset) != held.GetValueOrDefault((owner, asset)))
                    throw new InvalidOperationException($"Owner {owner} holds {_ledger.Held(owner, asset)} of {_ledger.Assets[asset].Code}; its orders hold {held.GetValueOrDefault((owner, asset))}.");
            }
        }
        _ledger.CheckConservation();
    }
}
