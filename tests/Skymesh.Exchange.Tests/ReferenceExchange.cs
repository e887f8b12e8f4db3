using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Tests;

/// <summary>
/// A second exchange written to be obviously right rather than fast: each side of a book is a plain list sorted by price
/// and arrival, balances a dictionary, every rule spelled out once. The differential test runs the same commands
/// through it and through <see cref="MatchingEngine"/> and requires the same events, books and balances.
/// </summary>
internal sealed class ReferenceExchange
{
    private sealed class Order
    {
        public long Id;
        public int Owner;
        public int Market;
        public Side Side;
        public long Price;
        public long Lots;
        public long Held;
        public bool PostOnly;
        public SelfTradePrevention Stp;
    }

    private readonly AssetSpec[] _assets;
    private readonly MarketSpec[] _markets;
    private readonly int[] _base;
    private readonly int[] _quote;
    private readonly List<Order>[,] _books;
    private readonly Dictionary<(int Owner, int Asset), long> _available = [];
    private readonly Dictionary<(int Owner, int Asset), long> _held = [];
    private readonly long[] _fees;
    private readonly HashSet<string> _keys = [];
    private readonly Dictionary<long, Order> _byId = [];
    private long _sequence;
    private long _nextId = 1;

    public ReferenceExchange(IReadOnlyList<AssetSpec> assets, IReadOnlyList<MarketSpec> markets, int owners)
    {
        _assets = [.. assets];
        _markets = [.. markets];
        Owners = owners;
        _base = [.. markets.Select(m => Array.FindIndex(_assets, a => a.Code == m.Base))];
        _quote = [.. markets.Select(m => Array.FindIndex(_assets, a => a.Code == m.Quote))];
        _books = new List<Order>[markets.Count, 2];
        for (var i = 0; i < markets.Count; i++)
        {
            _books[i, 0] = [];
            _books[i, 1] = [];
        }
        _fees = new long[assets.Count];
    }

    public int Owners { get; }

    public List<ExchangeEvent> Events { get; } = [];

    public long Available(int owner, int asset) => _available.GetValueOrDefault((owner, asset));

    public long Held(int owner, int asset) => _held.GetValueOrDefault((owner, asset));

    public long Fees(int asset) => _fees[asset];

    /// <summary>A side of a book, best first: bids highest first, asks lowest first, and oldest first at a price.</summary>
    public IEnumerable<MatchingEngine.BookOrder> Book(int market, Side side) =>
        Sorted(market, side).Select(o => new MatchingEngine.BookOrder(o.Id, o.Owner, o.Side, o.Price, o.Lots * _markets[market].LotSize, o.Held));

    /// <summary>A side of a book, kept in priority order by <see cref="Insert"/>.</summary>
    private List<Order> Sorted(int market, Side side) => _books[market, (int)side];

    /// <summary>Puts a new order after every order with a better or equal price (and so after every older one at its price).</summary>
    private void Insert(Order o)
    {
        var list = _books[o.Market, (int)o.Side];
        var at = list.FindIndex(x => o.Side == Side.Buy ? x.Price < o.Price : x.Price > o.Price);
        list.Insert(at < 0 ? list.Count : at, o);
        _byId.Add(o.Id, o);
    }

    private void RemoveOrder(Order o)
    {
        _books[o.Market, (int)o.Side].Remove(o);
        _byId.Remove(o.Id);
    }

    public void Execute(ExchangeCommand c)
    {
        var seq = ++_sequence;
        switch (c.Kind)
        {
            case CommandKind.Place:
                Place(c, seq);
                break;
            case CommandKind.Cancel:
                var found = Find(c.OrderId);
                if (found is null)
                    Reject(c, seq, RejectReason.UnknownOrder);
                else if (found.Owner != c.Owner)
                    Reject(c, seq, RejectReason.NotYourOrder);
                else
                    CancelOrder(found, seq, ExpiryReason.Requested);
                break;
            case CommandKind.CancelAll:
                if (c.Owner < 0 || c.Owner >= Owners)
                {
                    Reject(c, seq, RejectReason.UnknownOwner);
                    break;
                }
                if (c.Market != -1 && (c.Market < 0 || c.Market >= _markets.Length))
                {
                    Reject(c, seq, RejectReason.UnknownMarket);
                    break;
                }
                // Market by market, bids then asks, in book order.
                var mine = new List<Order>();
                for (var m = 0; m < _markets.Length; m++)
                {
                    if (c.Market == -1 || c.Market == m)
                        mine.AddRange(_books[m, 0].Concat(_books[m, 1]).Where(o => o.Owner == c.Owner));
                }
                foreach (var o in mine)
                    CancelOrder(o, seq, ExpiryReason.Requested);
                break;
            case CommandKind.Amend:
                Amend(c, seq);
                break;
            case CommandKind.Deposit:
            case CommandKind.Withdraw:
            case CommandKind.Transfer:
                Transfer(c, seq);
                break;
        }
    }

    private Order? Find(long id) => _byId.GetValueOrDefault(id);

    private void Transfer(ExchangeCommand c, long seq)
    {
        RejectReason reason;
        if (c.Owner < 0 || c.Owner >= Owners)
            reason = RejectReason.UnknownOwner;
        else if (c.Asset < 0 || c.Asset >= _assets.Length)
            reason = RejectReason.UnknownAsset;
        else if (c.Amount <= 0 || c.Amount > MarketSpec.MaxNotional)
            reason = RejectReason.BadAmount;
        else if (string.IsNullOrEmpty(c.Key))
            reason = RejectReason.DuplicateKey;
        else if (c.Kind == CommandKind.Transfer && (c.Market < 0 || c.Market >= Owners))
            reason = RejectReason.UnknownOwner;
        else if (c.Kind == CommandKind.Transfer && c.Market == c.Owner)
            reason = RejectReason.SameOwner;
        else if (_keys.Contains(c.Key))
            reason = RejectReason.DuplicateKey;
        else if (c.Kind != CommandKind.Deposit && Available(c.Owner, c.Asset) < c.Amount)
            reason = RejectReason.InsufficientFunds;
        else
            reason = RejectReason.None;
        if (reason != RejectReason.None)
        {
            Reject(c, seq, reason);
            return;
        }
        _keys.Add(c.Key!);
        if (c.Kind == CommandKind.Deposit)
        {
            _available[(c.Owner, c.Asset)] = Available(c.Owner, c.Asset) + c.Amount;
            Events.Add(new ExchangeEvent(EventKind.Deposited, seq, 0, c.Owner, -1, Side.Buy, 0, c.Amount));
        }
        else if (c.Kind == CommandKind.Transfer)
        {
            _available[(c.Owner, c.Asset)] = Available(c.Owner, c.Asset) - c.Amount;
            _available[(c.Market, c.Asset)] = Available(c.Market, c.Asset) + c.Amount;
            Events.Add(new ExchangeEvent(EventKind.Transferred, seq, 0, c.Owner, c.Asset, Side.Sell, 0, c.Amount, MakerOwner: c.Market));
        }
        else
        {
            _available[(c.Owner, c.Asset)] = Available(c.Owner, c.Asset) - c.Amount;
            Events.Add(new ExchangeEvent(EventKind.Withdrawn, seq, 0, c.Owner, -1, Side.Sell, 0, c.Amount));
        }
    }

    private long Required(int market, Side side, long price, long lots)
    {
        var spec = _markets[market];
        if (side == Side.Sell)
            return lots * spec.LotSize;
        var notional = price * lots;
        return notional + MarketSpec.Fee(notional, Math.Max(spec.MakerFeePpm, spec.TakerFeePpm));
    }

    private int FundingAsset(int market, Side side) => side == Side.Buy ? _quote[market] : _base[market];

    private void Move(int owner, int asset, long fromAvailableToHeld)
    {
        _available[(owner, asset)] = Available(owner, asset) - fromAvailableToHeld;
        _held[(owner, asset)] = Held(owner, asset) + fromAvailableToHeld;
    }

    private bool Acceptable(Side side, bool limit, long limitPrice, long price) =>
        !limit || (side == Side.Buy ? price <= limitPrice : price >= limitPrice);

    /// <summary>Lots of a market buy that <paramref name="funds"/> pay for at <paramref name="price"/>, counted one by one.</summary>
    private static long Affordable(long funds, long price, int ppm)
    {
        // Binary search on the cost, which grows with the lots.
        long lo = 0, hi = funds / price + 1;
        while (lo < hi)
        {
            var mid = lo + (hi - lo + 1) / 2;
            var cost = (Int128)price * mid + MarketSpec.Fee(price * mid, ppm);
            if (cost <= funds)
                lo = mid;
            else
                hi = mid - 1;
        }
        return lo;
    }

    private void Place(ExchangeCommand c, long seq)
    {
        if (c.Market < 0 || c.Market >= _markets.Length)
        {
            Reject(c, seq, RejectReason.UnknownMarket);
            return;
        }
        if (c.Owner < 0 || c.Owner >= Owners)
        {
            Reject(c, seq, RejectReason.UnknownOwner);
            return;
        }
        var spec = _markets[c.Market];
        if (c.Quantity <= 0 || c.Quantity % spec.LotSize != 0)
        {
            Reject(c, seq, RejectReason.BadQuantity);
            return;
        }
        var lots = c.Quantity / spec.LotSize;
        var limit = c.Type == OrderType.Limit;
        var badTif = limit ? c.PostOnly && c.TimeInForce != TimeInForce.Gtc : c.TimeInForce == TimeInForce.Gtc || c.PostOnly;
        if (badTif)
        {
            Reject(c, seq, RejectReason.BadTimeInForce);
            return;
        }
        long hold;
        var asset = FundingAsset(c.Market, c.Side);
        if (limit)
        {
            if (PriceRule(spec, c.Price, lots) is not RejectReason.None and var broken)
            {
                Reject(c, seq, broken);
                return;
            }
            hold = Required(c.Market, c.Side, c.Price, lots);
        }
        else
        {
            hold = c.Side == Side.Buy ? Available(c.Owner, asset) : c.Quantity;
        }
        if (hold <= 0 || Available(c.Owner, asset) < hold)
        {
            Reject(c, seq, RejectReason.InsufficientFunds);
            return;
        }
        var opposite = Sorted(c.Market, c.Side == Side.Buy ? Side.Sell : Side.Buy);
        if (c.PostOnly && opposite.Count > 0 && Acceptable(c.Side, true, c.Price, opposite[0].Price))
        {
            Reject(c, seq, RejectReason.WouldTakeLiquidity);
            return;
        }
        if (c.TimeInForce == TimeInForce.Fok && !WouldFillCompletely(c, lots, hold, opposite))
        {
            Reject(c, seq, RejectReason.CannotFillCompletely);
            return;
        }
        var id = _nextId++;
        Events.Add(new ExchangeEvent(EventKind.Accepted, seq, id, c.Owner, c.Market, c.Side, c.Price, c.Quantity));
        Move(c.Owner, asset, hold);
        Match(seq, id, c.Owner, c.Market, c.Side, limit, c.Price, lots, hold, limit && c.TimeInForce == TimeInForce.Gtc, c.PostOnly, c.Stp);
    }

    private bool WouldFillCompletely(ExchangeCommand c, long lots, long funds, List<Order> opposite)
    {
        var spec = _markets[c.Market];
        var limit = c.Type == OrderType.Limit;
        foreach (var o in opposite)
        {
            if (!Acceptable(c.Side, limit, c.Price, o.Price))
                return false;
            if (o.Owner == c.Owner)
            {
                if (c.Stp == SelfTradePrevention.ExpireMaker)
                    continue;
                return false;
            }
            var q = Math.Min(lots, o.Lots);
            if (c.Side == Side.Buy && !limit)
            {
                q = Math.Min(q, Affordable(funds, o.Price, spec.TakerFeePpm));
                if (q == 0)
                    return false;
                funds -= o.Price * q + MarketSpec.Fee(o.Price * q, spec.TakerFeePpm);
            }
            lots -= q;
            if (lots == 0)
                return true;
        }
        return false;
    }

    private void Match(long seq, long id, int owner, int market, Side side, bool limit, long price, long lots, long held, bool rests, bool postOnly, SelfTradePrevention stp)
    {
        var spec = _markets[market];
        var oppositeSide = side == Side.Buy ? Side.Sell : Side.Buy;
        var asset = FundingAsset(market, side);
        var expiry = ExpiryReason.None;
        while (lots > 0)
        {
            var opposite = Sorted(market, oppositeSide);
            if (opposite.Count == 0 || !Acceptable(side, limit, price, opposite[0].Price))
                break;
            var maker = opposite[0];
            if (maker.Owner == owner)
            {
                if (stp == SelfTradePrevention.Decrement)
                {
                    var cut = Math.Min(lots, maker.Lots);
                    maker.Lots -= cut;
                    lots -= cut;
                    Events.Add(new ExchangeEvent(EventKind.Decremented, seq, id, owner, market, side, maker.Price, cut * spec.LotSize,
                        MakerOrderId: maker.Id, MakerOwner: maker.Owner, Expiry: ExpiryReason.SelfTrade));
                    var makerAsset = FundingAsset(market, maker.Side);
                    var keep = maker.Lots == 0 ? 0 : Required(market, maker.Side, maker.Price, maker.Lots);
                    Move(maker.Owner, makerAsset, -(maker.Held - keep));
                    maker.Held = keep;
                    if (maker.Lots == 0)
                        RemoveOrder(maker);
                    continue;
                }
                if (stp is SelfTradePrevention.ExpireMaker or SelfTradePrevention.ExpireBoth)
                    CancelOrder(maker, seq, ExpiryReason.SelfTrade);
                if (stp == SelfTradePrevention.ExpireMaker)
                    continue;
                expiry = ExpiryReason.SelfTrade;
                break;
            }
            var lotsNow = Math.Min(lots, maker.Lots);
            if (side == Side.Buy && !limit)
            {
                lotsNow = Math.Min(lotsNow, Affordable(held, maker.Price, spec.TakerFeePpm));
                if (lotsNow == 0)
                {
                    expiry = ExpiryReason.OutOfFunds;
                    break;
                }
            }
            // The trade, at the maker's price.
            var notional = maker.Price * lotsNow;
            var baseAmount = lotsNow * spec.LotSize;
            var takerFee = MarketSpec.Fee(notional, spec.TakerFeePpm);
            var makerFee = MarketSpec.Fee(notional, spec.MakerFeePpm);
            var (buyer, seller) = side == Side.Buy ? (owner, maker.Owner) : (maker.Owner, owner);
            var (buyerFee, sellerFee) = side == Side.Buy ? (takerFee, makerFee) : (makerFee, takerFee);
            var (q, b) = (_quote[market], _base[market]);
            _held[(buyer, q)] = Held(buyer, q) - notional - buyerFee;
            _available[(seller, q)] = Available(seller, q) + notional - sellerFee;
            _held[(seller, b)] = Held(seller, b) - baseAmount;
            _available[(buyer, b)] = Available(buyer, b) + baseAmount;
            _fees[q] += buyerFee + sellerFee;
            Events.Add(new ExchangeEvent(EventKind.Trade, seq, id, owner, market, side, maker.Price, baseAmount,
                MakerOrderId: maker.Id, MakerOwner: maker.Owner, TakerFee: takerFee, MakerFee: makerFee));
            held -= side == Side.Buy ? notional + takerFee : baseAmount;
            maker.Held -= side == Side.Buy ? baseAmount : notional + makerFee;
            maker.Lots -= lotsNow;
            lots -= lotsNow;
            if (maker.Lots == 0)
            {
                Move(maker.Owner, FundingAsset(market, maker.Side), -maker.Held);
                RemoveOrder(maker);
            }
        }
        if (lots == 0)
        {
            Move(owner, asset, -held);
            return;
        }
        if (rests && expiry == ExpiryReason.None)
        {
            var required = Required(market, side, price, lots);
            Move(owner, asset, -(held - required));
            Insert(new Order
            {
                Id = id, Owner = owner, Market = market, Side = side, Price = price, Lots = lots, Held = required,
                PostOnly = postOnly, Stp = stp,
            });
            Events.Add(new ExchangeEvent(EventKind.Rested, seq, id, owner, market, side, price, lots * spec.LotSize));
            return;
        }
        Move(owner, asset, -held);
        Events.Add(new ExchangeEvent(EventKind.Expired, seq, id, owner, market, side, price, lots * spec.LotSize,
            Expiry: expiry == ExpiryReason.None ? ExpiryReason.ImmediateOrCancel : expiry));
    }

    private void CancelOrder(Order o, long seq, ExpiryReason why)
    {
        Events.Add(new ExchangeEvent(EventKind.Canceled, seq, o.Id, o.Owner, o.Market, o.Side, o.Price, o.Lots * _markets[o.Market].LotSize, Expiry: why));
        Move(o.Owner, FundingAsset(o.Market, o.Side), -o.Held);
        RemoveOrder(o);
    }

    private void Amend(ExchangeCommand c, long seq)
    {
        var o = Find(c.OrderId);
        if (o is null)
        {
            Reject(c, seq, RejectReason.UnknownOrder);
            return;
        }
        if (o.Owner != c.Owner)
        {
            Reject(c, seq, RejectReason.NotYourOrder);
            return;
        }
        var spec = _markets[o.Market];
        if (c.Quantity <= 0 || c.Quantity % spec.LotSize != 0)
        {
            Reject(c, seq, RejectReason.BadQuantity);
            return;
        }
        var lots = c.Quantity / spec.LotSize;
        if (PriceRule(spec, c.Price, lots) is not RejectReason.None and var broken)
        {
            Reject(c, seq, broken);
            return;
        }
        if (c.Price == o.Price && lots == o.Lots)
        {
            Reject(c, seq, RejectReason.NothingToAmend);
            return;
        }
        var asset = FundingAsset(o.Market, o.Side);
        if (c.Price == o.Price && lots < o.Lots)
        {
            o.Lots = lots;
            Events.Add(new ExchangeEvent(EventKind.Amended, seq, o.Id, o.Owner, o.Market, o.Side, o.Price, c.Quantity));
            var keep = Required(o.Market, o.Side, o.Price, lots);
            Move(o.Owner, asset, -(o.Held - keep));
            o.Held = keep;
            return;
        }
        var required = Required(o.Market, o.Side, c.Price, lots);
        if (Available(o.Owner, asset) + o.Held < required)
        {
            Reject(c, seq, RejectReason.InsufficientFunds);
            return;
        }
        var opposite = Sorted(o.Market, o.Side == Side.Buy ? Side.Sell : Side.Buy);
        if (o.PostOnly && opposite.Count > 0 && Acceptable(o.Side, true, c.Price, opposite[0].Price))
        {
            Reject(c, seq, RejectReason.WouldTakeLiquidity);
            return;
        }
        RemoveOrder(o);
        Move(o.Owner, asset, -o.Held);
        Events.Add(new ExchangeEvent(EventKind.Amended, seq, o.Id, o.Owner, o.Market, o.Side, c.Price, c.Quantity));
        Move(o.Owner, asset, required);
        Match(seq, o.Id, o.Owner, o.Market, o.Side, true, c.Price, lots, required, true, o.PostOnly, o.Stp);
    }

    /// <summary>The price rules of a limit order, in the order they are checked.</summary>
    private static RejectReason PriceRule(MarketSpec spec, long price, long lots)
    {
        if (price <= 0 || price % spec.TickSize != 0)
            return RejectReason.BadPrice;
        if ((Int128)price * lots > MarketSpec.MaxNotional)
            return RejectReason.TooLarge;
        if (price * lots < spec.MinNotional)
            return RejectReason.BelowMinimum;
        return RejectReason.None;
    }

    private void Reject(ExchangeCommand c, long seq, RejectReason reason) =>
        Events.Add(new ExchangeEvent(EventKind.Rejected, seq, c.OrderId, c.Owner, c.Market, c.Side, c.Price, c.Quantity, Reason: reason));
}
