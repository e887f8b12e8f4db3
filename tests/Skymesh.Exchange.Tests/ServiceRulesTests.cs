using Skymesh.Exchange.Accounts;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Tests;

/// <summary>
/// What the exchange service leans on in the engine: client order ids that make a retried order safe, and deposits taken
/// back after a chain reorganisation without any balance ever going negative.
/// </summary>
public sealed class ServiceRulesTests
{
    private const long Sky = 1_000_000;
    private const int SkyAsset = 0, BtcAsset = 1;
    private static readonly AssetSpec[] Assets = [new("SKY", 6), new("BTC", 8)];
    private static readonly MarketSpec Market = new("SKY/BTC", "SKY", "BTC", LotSize: Sky, TickSize: 10, MinNotional: 1000, MakerFeePpm: 1000, TakerFeePpm: 2000);

    private readonly Recorder _events = new();
    private readonly MatchingEngine _engine;
    private readonly int _alice, _bob;

    public ServiceRulesTests()
    {
        _engine = new MatchingEngine(new ExchangeLedger(Assets), [Market], _events);
        (_alice, _bob) = (_engine.Ledger.Owner("alice"), _engine.Ledger.Owner("bob"));
        Run(ExchangeCommand.Deposit(_alice, SkyAsset, 100 * Sky, "a-sky"));
        Run(ExchangeCommand.Deposit(_alice, BtcAsset, 1_000_000, "a-btc"));
        Run(ExchangeCommand.Deposit(_bob, BtcAsset, 1_000_000, "b-btc"));
    }

    private List<ExchangeEvent> Run(ExchangeCommand command)
    {
        var before = _events.All.Count;
        _engine.Execute(command);
        _engine.CheckInvariants();
        return _events.All[before..];
    }

    [Fact]
    public void A_second_order_with_the_same_client_order_id_is_refused_naming_the_first_and_changes_nothing()
    {
        var first = Run(ExchangeCommand.Limit(_alice, 0, Side.Sell, 1000, 5 * Sky, clientOrderId: "my-1"))[0];
        Assert.Equal(EventKind.Accepted, first.Kind);
        var hash = _engine.StateHash();

        var again = Assert.Single(Run(ExchangeCommand.Limit(_alice, 0, Side.Sell, 1000, 5 * Sky, clientOrderId: "my-1")));
        Assert.Equal((EventKind.Rejected, RejectReason.DuplicateClientOrderId, first.OrderId), (again.Kind, again.Reason, again.OrderId));
        Assert.Single(_engine.Book(0, Side.Sell));
        Assert.Equal(95 * Sky, _engine.Ledger.Available(_alice, SkyAsset));

        // Another owner may use the same id; the first owner's id stays taken after the order is gone.
        Assert.Equal(EventKind.Accepted, Run(ExchangeCommand.Limit(_bob, 0, Side.Buy, 1000, 5 * Sky, clientOrderId: "my-1"))[0].Kind);
        Assert.Empty(_engine.Book(0, Side.Sell));
        Assert.Equal(RejectReason.DuplicateClientOrderId, Run(ExchangeCommand.Limit(_alice, 0, Side.Sell, 1000, 5 * Sky, clientOrderId: "my-1"))[0].Reason);
        Assert.True(_engine.TryGetClientOrder(_alice, "my-1", out var remembered));
        Assert.Equal(first.OrderId, remembered);
        Assert.Equal(RejectReason.BadClientOrderId, Run(ExchangeCommand.Limit(_alice, 0, Side.Sell, 1000, Sky, clientOrderId: new string('x', 65)))[0].Reason);
        Assert.NotEqual(hash, _engine.StateHash());
    }

    [Fact]
    public void A_reversal_the_balance_covers_takes_it_back_and_leaves_the_account_free()
    {
        var e = Assert.Single(Run(ExchangeCommand.Reverse(_alice, SkyAsset, 40 * Sky, "reverse:a-sky")));
        Assert.Equal((EventKind.Reversed, 40 * Sky, 0L), (e.Kind, e.Quantity, e.Price));
        Assert.Equal(60 * Sky, _engine.Ledger.Available(_alice, SkyAsset));
        Assert.False(_engine.Ledger.IsFrozen(_alice));
        Assert.Equal(60 * Sky, _engine.Ledger.Deposited(SkyAsset));
        // Once per key.
        Assert.Equal(RejectReason.DuplicateKey, Assert.Single(Run(ExchangeCommand.Reverse(_alice, SkyAsset, 40 * Sky, "reverse:a-sky"))).Reason);
        Assert.Equal(60 * Sky, _engine.Ledger.Available(_alice, SkyAsset));
    }

    [Fact]
    public void A_reversal_of_coins_already_traded_away_becomes_a_debt_that_freezes_the_account_until_a_deposit_repays_it()
    {
        // Alice sells 80 of her 100 SKY to Bob, then the chain takes her 100 SKY deposit back.
        Run(ExchangeCommand.Limit(_alice, 0, Side.Sell, 1000, 80 * Sky));
        Run(ExchangeCommand.Limit(_bob, 0, Side.Buy, 1000, 80 * Sky));
        var resting = Run(ExchangeCommand.Limit(_alice, 0, Side.Buy, 500, 2 * Sky))[0].OrderId;
        var e = Assert.Single(Run(ExchangeCommand.Reverse(_alice, SkyAsset, 100 * Sky, "reverse:a-sky")));
        Assert.Equal((80 * Sky), e.Price);   // 20 SKY were there to take; 80 are owed
        Assert.Equal(0, _engine.Ledger.Available(_alice, SkyAsset));
        Assert.Equal(80 * Sky, _engine.Ledger.Debt(_alice, SkyAsset));
        Assert.True(_engine.Ledger.IsFrozen(_alice));

        // Frozen: no order, amendment, withdrawal or transfer — but a cancel is allowed.
        Assert.Equal(RejectReason.AccountFrozen, Run(ExchangeCommand.Limit(_alice, 0, Side.Buy, 500, Sky))[0].Reason);
        Assert.Equal(RejectReason.AccountFrozen, Run(ExchangeCommand.Amend(_alice, resting, 490, Sky))[0].Reason);
        Assert.Equal(RejectReason.AccountFrozen, Run(ExchangeCommand.Withdraw(_alice, BtcAsset, 1000, "w1"))[0].Reason);
        Assert.Equal(RejectReason.AccountFrozen, Run(ExchangeCommand.Transfer(_alice, _bob, BtcAsset, 1000, "t1"))[0].Reason);
        Assert.Equal(EventKind.Canceled, Run(ExchangeCommand.Cancel(_alice, resting))[0].Kind);

        // A deposit of 50 repays 50 of the debt (still frozen); the next 50 repays the rest and 20 is left to spend.
        Run(ExchangeCommand.Deposit(_alice, SkyAsset, 50 * Sky, "a-sky-2"));
        Assert.Equal((30 * Sky, 0L, true), (_engine.Ledger.Debt(_alice, SkyAsset), _engine.Ledger.Available(_alice, SkyAsset), _engine.Ledger.IsFrozen(_alice)));
        Run(ExchangeCommand.Deposit(_alice, SkyAsset, 50 * Sky, "a-sky-3"));
        Assert.Equal((0L, 20 * Sky, false), (_engine.Ledger.Debt(_alice, SkyAsset), _engine.Ledger.Available(_alice, SkyAsset), _engine.Ledger.IsFrozen(_alice)));
        Assert.Equal(EventKind.Accepted, Run(ExchangeCommand.Limit(_alice, 0, Side.Sell, 1000, Sky))[0].Kind);
    }

    [Fact]
    public void A_snapshot_keeps_debts_and_client_order_ids()
    {
        Run(ExchangeCommand.Limit(_alice, 0, Side.Sell, 1000, 100 * Sky, clientOrderId: "all"));
        Run(ExchangeCommand.Limit(_bob, 0, Side.Buy, 1000, 100 * Sky));
        Run(ExchangeCommand.Reverse(_alice, SkyAsset, 100 * Sky, "reverse:a-sky"));
        using var snapshot = new MemoryStream();
        _engine.WriteSnapshot(snapshot);
        snapshot.Position = 0;
        var restored = MatchingEngine.ReadSnapshot(snapshot, Assets, [Market]);

        Assert.Equal(_engine.StateHash(), restored.StateHash());
        Assert.True(restored.Ledger.IsFrozen(_alice));
        Assert.Equal(100 * Sky, restored.Ledger.Debt(_alice, SkyAsset));
        Assert.True(restored.TryGetClientOrder(_alice, "all", out _));
        Assert.Equal(RejectReason.DuplicateClientOrderId, Place(restored, "all"));
    }

    private static RejectReason Place(MatchingEngine engine, string clientOrderId)
    {
        var recorder = new Recorder();
        var copy = new MemoryStream();
        engine.WriteSnapshot(copy);
        copy.Position = 0;
        var probe = MatchingEngine.ReadSnapshot(copy, Assets, [Market], recorder);
        probe.Execute(ExchangeCommand.Limit(0, 0, Side.Sell, 1000, Sky, clientOrderId: clientOrderId));
        return recorder.All[0].Reason;
    }
}
