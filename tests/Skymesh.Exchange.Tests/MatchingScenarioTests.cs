using Skymesh.Exchange.Accounts;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Tests;

/// <summary>
/// One market, SKY/BTC: a lot is 1 SKY (10^6 units), a price the satoshis one lot costs, a multiple of 10; maker fee
/// 0.1 %, taker fee 0.2 %; orders worth at least 1,000 satoshis. Alice, Bob and Carol start with 1,000 SKY and 1 BTC each.
/// </summary>
public sealed class MatchingScenarioTests
{
    private const long Sky = 1_000_000;
    private const long Btc = 100_000_000;

    private readonly ExchangeLedger _ledger = new([new AssetSpec("SKY", 6), new AssetSpec("BTC", 8)]);
    private readonly Recorder _events = new();
    private readonly MatchingEngine _engine;
    private readonly int _alice, _bob, _carol;
    private const int SkyAsset = 0, BtcAsset = 1;

    public MatchingScenarioTests()
    {
        _engine = new MatchingEngine(_ledger, [new MarketSpec("SKY/BTC", "SKY", "BTC", LotSize: Sky, TickSize: 10, MinNotional: 1000, MakerFeePpm: 1000, TakerFeePpm: 2000)], _events);
        (_alice, _bob, _carol) = (_ledger.Owner("alice"), _ledger.Owner("bob"), _ledger.Owner("carol"));
        foreach (var owner in new[] { _alice, _bob, _carol })
        {
            Run(ExchangeCommand.Deposit(owner, SkyAsset, 1000 * Sky, $"sky-{owner}"));
            Run(ExchangeCommand.Deposit(owner, BtcAsset, Btc, $"btc-{owner}"));
        }
    }

    /// <summary>Runs a command and returns its events; the invariants hold after every command.</summary>
    private List<ExchangeEvent> Run(ExchangeCommand command)
    {
        var before = _events.All.Count;
        _engine.Execute(command);
        _engine.CheckInvariants();
        return _events.All[before..];
    }

    private long Place(int owner, Side side, long price, long skies, TimeInForce tif = TimeInForce.Gtc, bool postOnly = false,
        SelfTradePrevention stp = SelfTradePrevention.ExpireTaker)
    {
        var events = Run(ExchangeCommand.Limit(owner, 0, side, price, skies * Sky, tif, postOnly, stp));
        Assert.Equal(EventKind.Accepted, events[0].Kind);
        return events[0].OrderId;
    }

    private RejectReason Refused(ExchangeCommand command)
    {
        var events = Run(command);
        var e = Assert.Single(events);
        Assert.Equal(EventKind.Rejected, e.Kind);
        return e.Reason;
    }

    [Fact]
    public void A_crossing_order_trades_at_the_resting_price_in_time_priority_and_each_side_pays_its_fee()
    {
        var first = Place(_alice, Side.Sell, 1000, 5);
        var second = Place(_bob, Side.Sell, 1000, 5);
        var worse = Place(_bob, Side.Sell, 1010, 5);

        // Carol bids 1,020 for 7: she buys 5 from Alice (first at 1,000), 2 from Bob at 1,000, never at 1,010 or her 1,020.
        var events = Run(ExchangeCommand.Limit(_carol, 0, Side.Buy, 1020, 7 * Sky));
        var trades = events.Where(e => e.Kind == EventKind.Trade).ToList();
        Assert.Equal([(first, 5 * Sky, 1000L), (second, 2 * Sky, 1000L)], trades.Select(t => (t.MakerOrderId, t.Quantity, t.Price)));
        Assert.Equal([10L, 4L], trades.Select(t => t.TakerFee));   // 0.2 % of 5,000 and of 2,000
        Assert.Equal([5L, 2L], trades.Select(t => t.MakerFee));    // 0.1 %
        Assert.DoesNotContain(events, e => e.Kind is EventKind.Rested or EventKind.Expired);

        // Carol paid 7,000 + 14 and holds nothing more; Alice got 5,000 − 5; Bob 2,000 − 2 and still offers 3 + 5.
        Assert.Equal(Btc - 7014, _ledger.Available(_carol, BtcAsset));
        Assert.Equal(0, _ledger.Held(_carol, BtcAsset));
        Assert.Equal(1007 * Sky, _ledger.Available(_carol, SkyAsset));
        Assert.Equal(Btc + 4995, _ledger.Available(_alice, BtcAsset));
        Assert.Equal(Btc + 1998, _ledger.Available(_bob, BtcAsset));
        Assert.Equal(21, _ledger.Fees(BtcAsset));
        Assert.Equal([(second, 3 * Sky), (worse, 5 * Sky)], _engine.Book(0, Side.Sell).Select(o => (o.Id, o.Quantity)));
    }

    [Fact]
    public void A_resting_buy_holds_its_value_and_the_larger_fee_and_a_cancel_gives_it_all_back()
    {
        var bid = Place(_alice, Side.Buy, 990, 10);
        Assert.Equal(9900 + 19, _ledger.Held(_alice, BtcAsset)); // 0.2 % of 9,900, rounded down
        Assert.Equal(Btc - 9919, _ledger.Available(_alice, BtcAsset));
        var events = Run(ExchangeCommand.Cancel(_alice, bid));
        Assert.Equal(EventKind.Canceled, Assert.Single(events).Kind);
        Assert.Equal(Btc, _ledger.Available(_alice, BtcAsset));
        Assert.Equal(0, _ledger.Held(_alice, BtcAsset));
        Assert.Equal(RejectReason.UnknownOrder, Refused(ExchangeCommand.Cancel(_alice, bid)));
    }

    [Fact]
    public void Ioc_trades_what_it_can_and_the_rest_expires_while_fok_trades_all_or_nothing()
    {
        Place(_alice, Side.Sell, 1000, 3);
        var ioc = Run(ExchangeCommand.Limit(_bob, 0, Side.Buy, 1000, 5 * Sky, TimeInForce.Ioc));
        Assert.Equal(3 * Sky, ioc.Single(e => e.Kind == EventKind.Trade).Quantity);
        Assert.Equal((2 * Sky, ExpiryReason.ImmediateOrCancel), ioc.Where(e => e.Kind == EventKind.Expired).Select(e => (e.Quantity, e.Expiry)).Single());
        Assert.Equal(0, _ledger.Held(_bob, BtcAsset));

        Place(_alice, Side.Sell, 1000, 3);
        Assert.Equal(RejectReason.CannotFillCompletely, Refused(ExchangeCommand.Limit(_bob, 0, Side.Buy, 1000, 4 * Sky, TimeInForce.Fok)));
        Assert.Single(_engine.Book(0, Side.Sell));
        var fok = Run(ExchangeCommand.Limit(_bob, 0, Side.Buy, 1000, 3 * Sky, TimeInForce.Fok));
        Assert.Equal(3 * Sky, fok.Single(e => e.Kind == EventKind.Trade).Quantity);
        Assert.Empty(_engine.Book(0, Side.Sell));
    }

    [Fact]
    public void A_post_only_order_that_would_take_liquidity_is_refused_and_one_that_would_not_rests()
    {
        Place(_alice, Side.Sell, 1000, 3);
        Assert.Equal(RejectReason.WouldTakeLiquidity, Refused(ExchangeCommand.Limit(_bob, 0, Side.Buy, 1000, Sky, postOnly: true)));
        var maker = Place(_bob, Side.Buy, 990, 2, postOnly: true);
        Assert.Contains(_engine.Book(0, Side.Buy), o => o.Id == maker);
        Assert.Equal(RejectReason.BadTimeInForce, Refused(ExchangeCommand.Limit(_bob, 0, Side.Buy, 990, Sky, TimeInForce.Ioc, postOnly: true)));
    }

    [Fact]
    public void A_market_buy_walks_the_book_within_what_its_owner_has_and_never_rests()
    {
        Place(_alice, Side.Sell, 1000, 2);
        Place(_alice, Side.Sell, 2000, 100);
        // Dave has 10,000 satoshis: 2 lots at 1,000 (+4 fee), then 3 at 2,000 (6,000 + 12); a fourth would need 2,004 more.
        var dave = _ledger.Owner("dave");
        Run(ExchangeCommand.Deposit(dave, BtcAsset, 10_000, "dave-btc"));
        var events = Run(ExchangeCommand.MarketOrder(dave, 0, Side.Buy, 50 * Sky));
        Assert.Equal([2 * Sky, 3 * Sky], events.Where(e => e.Kind == EventKind.Trade).Select(e => e.Quantity));
        Assert.Equal((45 * Sky, ExpiryReason.OutOfFunds), events.Where(e => e.Kind == EventKind.Expired).Select(e => (e.Quantity, e.Expiry)).Single());
        Assert.Equal(10_000 - 2004 - 6012, _ledger.Available(dave, BtcAsset));
        Assert.Equal(0, _ledger.Held(dave, BtcAsset));
        Assert.Equal(RejectReason.BadTimeInForce, Refused(ExchangeCommand.MarketOrder(dave, 0, Side.Buy, Sky, TimeInForce.Gtc)));
    }

    [Theory]
    [InlineData(SelfTradePrevention.ExpireTaker)]
    [InlineData(SelfTradePrevention.ExpireMaker)]
    [InlineData(SelfTradePrevention.ExpireBoth)]
    [InlineData(SelfTradePrevention.Decrement)]
    public void An_order_never_trades_with_its_own_owner(SelfTradePrevention stp)
    {
        var own = Place(_alice, Side.Sell, 1000, 4);
        var other = Place(_bob, Side.Sell, 1000, 4);
        var events = Run(ExchangeCommand.Limit(_alice, 0, Side.Buy, 1000, 6 * Sky, stp: stp));
        Assert.DoesNotContain(events, e => e.Kind == EventKind.Trade && e.MakerOwner == _alice);
        var book = _engine.Book(0, Side.Sell).Select(o => (o.Id, o.Quantity)).ToList();
        var bids = _engine.Book(0, Side.Buy).Select(o => o.Quantity).ToList();
        switch (stp)
        {
            case SelfTradePrevention.ExpireTaker:
                // Alice's buy stops at her own sell; it expires whole, and both sells stay.
                Assert.Equal((6 * Sky, ExpiryReason.SelfTrade), events.Where(e => e.Kind == EventKind.Expired).Select(e => (e.Quantity, e.Expiry)).Single());
                Assert.Equal([(own, 4 * Sky), (other, 4 * Sky)], book);
                break;
            case SelfTradePrevention.ExpireMaker:
                // Her sell is cancelled, she buys Bob's 4 and rests 2.
                Assert.Contains(events, e => e.Kind == EventKind.Canceled && e.OrderId == own && e.Expiry == ExpiryReason.SelfTrade);
                Assert.Equal(4 * Sky, events.Single(e => e.Kind == EventKind.Trade).Quantity);
                Assert.Empty(book);
                Assert.Equal([2 * Sky], bids);
                break;
            case SelfTradePrevention.ExpireBoth:
                Assert.Contains(events, e => e.Kind == EventKind.Canceled && e.OrderId == own);
                Assert.Contains(events, e => e.Kind == EventKind.Expired && e.Expiry == ExpiryReason.SelfTrade);
                Assert.Equal([(other, 4 * Sky)], book);
                break;
            case SelfTradePrevention.Decrement:
                // 4 lots cancel out against her own sell without a trade; the other 2 trade with Bob.
                Assert.Equal(4 * Sky, events.Single(e => e.Kind == EventKind.Decremented).Quantity);
                Assert.Equal(2 * Sky, events.Single(e => e.Kind == EventKind.Trade).Quantity);
                Assert.Equal([(other, 2 * Sky)], book);
                break;
        }
    }

    [Fact]
    public void Amending_down_keeps_the_place_in_the_queue_and_any_other_change_loses_it()
    {
        var a = Place(_alice, Side.Buy, 990, 5);
        var b = Place(_bob, Side.Buy, 990, 5);
        var heldBefore = _ledger.Held(_alice, BtcAsset);
        Assert.Equal(EventKind.Amended, Run(ExchangeCommand.Amend(_alice, a, 990, 3 * Sky)).Single().Kind);
        Assert.Equal([a, b], _engine.Book(0, Side.Buy).Select(o => o.Id));
        Assert.True(_ledger.Held(_alice, BtcAsset) < heldBefore, "a smaller order holds less");

        Run(ExchangeCommand.Amend(_alice, a, 990, 4 * Sky));
        Assert.Equal([b, a], _engine.Book(0, Side.Buy).Select(o => o.Id));
        Run(ExchangeCommand.Amend(_bob, b, 980, 5 * Sky));
        Assert.Equal([a, b], _engine.Book(0, Side.Buy).Select(o => o.Id));

        // A new price that crosses trades at once, under the same id.
        Place(_carol, Side.Sell, 1000, 2);
        var events = Run(ExchangeCommand.Amend(_alice, a, 1000, 4 * Sky));
        Assert.Equal((a, 2 * Sky), events.Where(e => e.Kind == EventKind.Trade).Select(e => (e.OrderId, e.Quantity)).Single());
        Assert.Equal(2 * Sky, _engine.Book(0, Side.Buy).Single(o => o.Id == a).Quantity);

        Assert.Equal(RejectReason.NothingToAmend, Refused(ExchangeCommand.Amend(_alice, a, 1000, 2 * Sky)));
        Assert.Equal(RejectReason.NotYourOrder, Refused(ExchangeCommand.Amend(_bob, a, 1000, Sky)));
        Assert.Equal(RejectReason.InsufficientFunds, Refused(ExchangeCommand.Amend(_alice, a, 1000, 200_000 * Sky)));
    }

    [Fact]
    public void Orders_off_the_tick_or_lot_below_the_minimum_or_beyond_the_funds_are_refused_and_change_nothing()
    {
        Assert.Equal(RejectReason.BadPrice, Refused(ExchangeCommand.Limit(_alice, 0, Side.Buy, 995, Sky)));
        Assert.Equal(RejectReason.BadPrice, Refused(ExchangeCommand.Limit(_alice, 0, Side.Buy, 0, Sky)));
        Assert.Equal(RejectReason.BadQuantity, Refused(ExchangeCommand.Limit(_alice, 0, Side.Buy, 1000, Sky + 1)));
        Assert.Equal(RejectReason.BadQuantity, Refused(ExchangeCommand.Limit(_alice, 0, Side.Buy, 1000, -Sky)));
        Assert.Equal(RejectReason.BelowMinimum, Refused(ExchangeCommand.Limit(_alice, 0, Side.Buy, 10, Sky)));
        Assert.Equal(RejectReason.InsufficientFunds, Refused(ExchangeCommand.Limit(_alice, 0, Side.Buy, 1000, 100_000 * Sky)));
        Assert.Equal(RejectReason.InsufficientFunds, Refused(ExchangeCommand.Limit(_alice, 0, Side.Sell, 1000, 1001 * Sky)));
        Assert.Equal(RejectReason.TooLarge, Refused(ExchangeCommand.Limit(_alice, 0, Side.Buy, long.MaxValue / 10 * 10, long.MaxValue / Sky * Sky)));
        Assert.Equal(RejectReason.UnknownMarket, Refused(ExchangeCommand.Limit(_alice, 7, Side.Buy, 1000, Sky)));
        Assert.Equal(RejectReason.UnknownOwner, Refused(ExchangeCommand.Limit(99, 0, Side.Buy, 1000, Sky)));
        // Nothing moved.
        Assert.Empty(_engine.Book(0, Side.Buy));
        Assert.Empty(_engine.Book(0, Side.Sell));
        Assert.Equal((Btc, 1000 * Sky, 0L, 0L), (_ledger.Available(_alice, BtcAsset), _ledger.Available(_alice, SkyAsset), _ledger.Held(_alice, BtcAsset), _ledger.Held(_alice, SkyAsset)));
    }

    [Fact]
    public void Deposits_and_withdrawals_are_idempotent_by_key_and_a_withdrawal_never_overdraws()
    {
        Assert.Equal(EventKind.Deposited, Run(ExchangeCommand.Deposit(_alice, BtcAsset, 500, "tx-1")).Single().Kind);
        Assert.Equal(RejectReason.DuplicateKey, Refused(ExchangeCommand.Deposit(_alice, BtcAsset, 500, "tx-1")));
        Assert.Equal(Btc + 500, _ledger.Available(_alice, BtcAsset));
        Place(_alice, Side.Buy, 1000, 10);
        Assert.Equal(RejectReason.InsufficientFunds, Refused(ExchangeCommand.Withdraw(_alice, BtcAsset, Btc, "w-1")));
        Assert.Equal(EventKind.Withdrawn, Run(ExchangeCommand.Withdraw(_alice, BtcAsset, 1000, "w-1")).Single().Kind);
        Assert.Equal(RejectReason.DuplicateKey, Refused(ExchangeCommand.Withdraw(_alice, BtcAsset, 1000, "w-1")));
        Assert.Equal(Btc + 500 - 1000, _ledger.Deposited(BtcAsset) - _ledger.Withdrawn(BtcAsset) - 2 * Btc);
        Assert.Equal(RejectReason.BadAmount, Refused(ExchangeCommand.Deposit(_alice, BtcAsset, 0, "tx-2")));
    }

    [Fact]
    public void A_transfer_pays_from_available_funds_once_per_key_and_never_from_held_ones()
    {
        // Alice's bid holds most of her BTC: a transfer may spend only what is left.
        Place(_alice, Side.Buy, 9_000_000, 10);
        var free = _ledger.Available(_alice, BtcAsset);
        Assert.Equal(RejectReason.InsufficientFunds, Refused(ExchangeCommand.Transfer(_alice, _bob, BtcAsset, free + 1, "s-1")));
        var paid = Run(ExchangeCommand.Transfer(_alice, _bob, BtcAsset, free, "s-1")).Single();
        Assert.Equal((EventKind.Transferred, _alice, _bob, free), (paid.Kind, paid.Owner, paid.MakerOwner, paid.Quantity));
        Assert.Equal(0, _ledger.Available(_alice, BtcAsset));
        Assert.Equal(Btc + free, _ledger.Available(_bob, BtcAsset));
        // The same key again moves nothing, even for another amount or payer.
        Assert.Equal(RejectReason.DuplicateKey, Refused(ExchangeCommand.Transfer(_carol, _bob, BtcAsset, 1, "s-1")));
        Assert.Equal(RejectReason.SameOwner, Refused(ExchangeCommand.Transfer(_bob, _bob, SkyAsset, 1, "s-2")));
        Assert.Equal(RejectReason.UnknownOwner, Refused(ExchangeCommand.Transfer(_bob, 99, SkyAsset, 1, "s-2")));
        Assert.Equal(RejectReason.BadAmount, Refused(ExchangeCommand.Transfer(_bob, _carol, SkyAsset, 0, "s-2")));
        // Transfers move money between owners; what owners hold in all is still what was deposited.
        _ledger.CheckConservation();
        Assert.Equal(3 * Btc, _ledger.Deposited(BtcAsset));
    }

    [Fact]
    public void Cancel_all_takes_every_resting_order_of_its_owner_and_no_one_elses()
    {
        Place(_alice, Side.Buy, 990, 2);
        Place(_alice, Side.Sell, 1010, 2);
        var bobs = Place(_bob, Side.Buy, 980, 2);
        var events = Run(ExchangeCommand.CancelAll(_alice));
        Assert.Equal(2, events.Count(e => e.Kind == EventKind.Canceled));
        Assert.Equal([bobs], _engine.Book(0, Side.Buy).Concat(_engine.Book(0, Side.Sell)).Select(o => o.Id));
        Assert.Equal(0, _ledger.Held(_alice, BtcAsset) + _ledger.Held(_alice, SkyAsset));
    }
}
