using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Load;

/// <summary>
/// A seeded random stream of commands in the proportions exchange engines are measured with (exchange-core's mix: about
/// 9 % limit GTC, 3 % immediate, 6 % cancel, 82 % amend), and a sprinkling of everything else: fill-or-kill, post-only,
/// market orders, every self-trade mode, cancel-all, deposits and withdrawals, and invalid commands. Prices wander around
/// a mid price over about 750 levels; the owners are funded so that some orders are beyond their means.
/// </summary>
public sealed class CommandStream(int seed, int owners, MarketSpec market, int baseAsset, int quoteAsset)
{
    // The stream is a test and benchmark load, not a secret: a seeded generator makes it the same on every machine.
    private readonly Random _random = new(seed);
    private readonly List<long> _live = [];
    private readonly List<long> _dead = [];
    private long _mid = 100_000;
    private int _keys;

    /// <summary>Initial deposits: every owner gets a random amount of both assets.</summary>
    public IEnumerable<ExchangeCommand> Funding()
    {
        for (var owner = 0; owner < owners; owner++)
        {
            yield return ExchangeCommand.Deposit(owner, baseAsset, market.LotSize * _random.NextInt64(100, 100_000), $"fund-base-{owner}");
            yield return ExchangeCommand.Deposit(owner, quoteAsset, _random.NextInt64(10_000_000, 10_000_000_000), $"fund-quote-{owner}");
        }
    }

    /// <summary>An order that rested: the stream may amend or cancel it while it lives.</summary>
    public void Placed(long orderId)
    {
        if (!_live.Contains(orderId))
            _live.Add(orderId);
    }

    /// <summary>A random live order (ids found gone on the way are dropped, a few kept to cancel again).</summary>
    private (long Id, (int Owner, long Price, long Quantity) Order)? PickLive(Func<long, (int Owner, long Price, long Quantity)?> lookUp)
    {
        while (_live.Count > 0)
        {
            var at = _random.Next(_live.Count);
            var id = _live[at];
            if (lookUp(id) is { } order)
                return (id, order);
            _live[at] = _live[^1];
            _live.RemoveAt(_live.Count - 1);
            if (_dead.Count < 100)
                _dead.Add(id);
        }
        return null;
    }

    /// <param name="lookUp">The resting order with that id, if any.</param>
    /// <param name="resting">How many orders rest now: above about 1,000 the stream cancels more than it places.</param>
    public ExchangeCommand Next(Func<long, (int Owner, long Price, long Quantity)?> lookUp, int resting)
    {
        if (_random.Next(100) == 0)
            _mid = Math.Max(10_000, _mid + market.TickSize * _random.Next(-20, 21));
        var roll = _random.Next(1000);
        var owner = _random.Next(owners);
        if (roll < 820 && PickLive(lookUp) is { } amended)
        {
            var (id, order) = amended;
            // Mostly small moves of price or size, as market makers do; now and then someone else's order.
            var price = _random.Next(3) == 0 ? order.Price : Math.Max(market.TickSize, order.Price + market.TickSize * _random.Next(-3, 4));
            var quantity = _random.Next(3) == 0 ? order.Quantity : Math.Max(market.LotSize, order.Quantity + market.LotSize * _random.Next(-5, 6));
            return ExchangeCommand.Amend(_random.Next(100) == 0 ? owner : order.Owner, id, price, quantity);
        }
        if (roll < 880 && PickLive(lookUp) is { } canceled)
            return ExchangeCommand.Cancel(_random.Next(100) == 0 ? owner : canceled.Order.Owner, canceled.Id);
        if (roll < 885 && _dead.Count > 0)
            return ExchangeCommand.Cancel(owner, _dead[_random.Next(_dead.Count)]);
        if (roll < 970 && resting > 1000 && PickLive(lookUp) is { } extra)
        {
            // Keep the book near its usual size: cancel a live order instead of adding one.
            return ExchangeCommand.Cancel(extra.Order.Owner, extra.Id);
        }
        var side = _random.Next(2) == 0 ? Side.Buy : Side.Sell;
        var stp = (SelfTradePrevention)_random.Next(4);
        if (roll < 970)
            return ExchangeCommand.Limit(owner, 0, side, Price(side), Lots(), stp: stp, postOnly: _random.Next(10) == 0);
        if (roll < 985)
            return ExchangeCommand.Limit(owner, 0, side, Price(side, aggressive: true), Lots(), _random.Next(3) == 0 ? TimeInForce.Fok : TimeInForce.Ioc, stp: stp);
        if (roll < 990)
            return ExchangeCommand.MarketOrder(owner, 0, side, Lots(), _random.Next(4) == 0 ? TimeInForce.Fok : TimeInForce.Ioc, stp);
        if (roll < 992)
            return ExchangeCommand.Deposit(owner, _random.Next(2) == 0 ? baseAsset : quoteAsset, _random.NextInt64(1, 1_000_000_000), Key());
        if (roll < 993)
        {
            // Settlement between owners; now and then to itself, to no one, or under a key already used.
            var to = _random.Next(50) switch { 0 => owner, 1 => owners + 1, _ => _random.Next(owners) };
            return ExchangeCommand.Transfer(owner, to, _random.Next(2) == 0 ? baseAsset : quoteAsset, _random.NextInt64(1, 1_000_000_000), _random.Next(20) == 0 ? $"k{_keys}" : Key());
        }
        if (roll < 996)
            return ExchangeCommand.Withdraw(owner, _random.Next(2) == 0 ? baseAsset : quoteAsset, _random.NextInt64(1, 1_000_000_000), _random.Next(20) == 0 ? $"k{_keys}" : Key());
        if (roll < 997)
            return ExchangeCommand.CancelAll(owner, _random.Next(2) == 0 ? 0 : -1);
        // Malformed: off the tick or lot, unknown market or owner, nothing at all.
        return _random.Next(5) switch
        {
            0 => ExchangeCommand.Limit(owner, 0, side, Price(side) + 1, Lots()),
            1 => ExchangeCommand.Limit(owner, 0, side, Price(side), Lots() + 1),
            2 => ExchangeCommand.Limit(owner, 3, side, Price(side), Lots()),
            3 => ExchangeCommand.Limit(owners + 5, 0, side, Price(side), Lots()),
            _ => ExchangeCommand.Limit(owner, 0, side, 0, 0),
        };
    }

    private string Key() => $"k{++_keys}";

    /// <summary>A price near the mid: resting bids below it and asks above (spread over ~750 levels), or across it.</summary>
    private long Price(Side side, bool aggressive = false)
    {
        var offset = market.TickSize * (aggressive ? _random.Next(-5, 40) : _random.Next(-10, 375));
        var price = side == Side.Buy ? _mid - offset : _mid + offset;
        return Math.Max(market.TickSize, price / market.TickSize * market.TickSize);
    }

    private long Lots() => market.LotSize * (_random.Next(8) == 0 ? _random.Next(1, 2000) : _random.Next(1, 50));
}
