using CsCheck;
using Skymesh.Exchange.Accounts;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Tests;

/// <summary>
/// Property tests (CsCheck): random sequences of every kind of command, shrunk to the shortest that breaks a rule when
/// one does. After every command, checked from the outside through the engine's book and the ledger: the book is never
/// crossed at rest; each level is first in, first out; what each owner has on hold is exactly what its resting orders
/// hold; and no asset appears or vanishes.
/// </summary>
public sealed class BookPropertyTests
{
    private const long Lot = 1_000_000;
    private const int Owners = 4;

    /// <summary>One generated step: what to do, by whom, and the numbers to do it with.</summary>
    private readonly record struct Step(int Kind, int Owner, bool Buy, int Ticks, int Lots, int Flags, int Pick);

    private static readonly Gen<Step> StepGen = Gen.Select(Gen.Int[0, 9], Gen.Int[0, Owners - 1], Gen.Bool, Gen.Int[95, 105], Gen.Int[1, 12], Gen.Int[0, 63], Gen.Int[0, 1000])
        .Select(t => new Step(t.Item1, t.Item2, t.Item3, t.Item4, t.Item5, t.Item6, t.Item7));

    [Fact]
    public void The_book_stays_uncrossed_first_in_first_out_fully_held_and_conserved_under_any_commands()
    {
        StepGen.Array[1, 250].Sample(steps => Check(steps), iter: 300);
    }

    private static void Check(Step[] steps)
    {
        var ledger = new ExchangeLedger([new AssetSpec("SKY", 6), new AssetSpec("BTC", 8)]);
        var events = new Recorder();
        var engine = new MatchingEngine(ledger, [new MarketSpec("SKY/BTC", "SKY", "BTC", LotSize: Lot, TickSize: 10, MinNotional: 1000, MakerFeePpm: 1000, TakerFeePpm: 2000)], events);
        var owners = Enumerable.Range(0, Owners).Select(i => ledger.Owner($"owner-{i}")).ToArray();
        foreach (var owner in owners)
        {
            engine.Execute(ExchangeCommand.Deposit(owner, 0, 200 * Lot, $"sky-{owner}"));
            engine.Execute(ExchangeCommand.Deposit(owner, 1, 50_000, $"btc-{owner}"));
        }
        var n = 0;
        foreach (var step in steps)
        {
            var before = Levels(engine);
            var resting = before.Values.SelectMany(v => v).ToList();
            var owner = owners[step.Owner];
            var side = step.Buy ? Side.Buy : Side.Sell;
            var price = step.Ticks * 10L;
            var quantity = step.Lots * Lot;
            var tif = (TimeInForce)(step.Flags % 3);
            var stp = (SelfTradePrevention)(step.Flags / 3 % 4);
            var postOnly = step.Flags >= 48;
            long? moved = null;
            var command = step.Kind switch
            {
                <= 3 => ExchangeCommand.Limit(owner, 0, side, price, quantity, tif, postOnly, stp),
                4 => ExchangeCommand.MarketOrder(owner, 0, side, quantity, tif == TimeInForce.Fok ? TimeInForce.Fok : TimeInForce.Ioc, stp),
                5 when resting.Count > 0 => Pick(resting, step) is var o ? ExchangeCommand.Cancel(step.Flags % 5 == 0 ? owners[(step.Owner + 1) % Owners] : o.Owner, o.Id) : default,
                6 when resting.Count > 0 => Amend(Pick(resting, step), step, out moved),
                7 => ExchangeCommand.CancelAll(owner),
                8 => ExchangeCommand.Deposit(owner, step.Buy ? 1 : 0, step.Lots * 1000L, $"more-{n}"),
                _ => ExchangeCommand.Withdraw(owner, step.Buy ? 1 : 0, step.Lots * 1000L, $"out-{n}"),
            };
            var first = events.All.Count;
            engine.Execute(command);
            n++;
            // A refused amend leaves the order where it was.
            if (moved is not null && events.All.Skip(first).Any(e => e.Kind == EventKind.Rejected))
                moved = null;
            var after = Levels(engine);
            var what = $"{n} ({command.Kind} owner {command.Owner} order {command.OrderId} {command.Side} {command.Price} x {command.Quantity}; book before: {string.Join(" ", before.Select(l => $"{l.Key}:{string.Join(",", l.Value.Select(o => o.Id))}"))})";
            CheckUncrossed(after, what);
            CheckFifo(before, after, moved, what);
            CheckHolds(engine, ledger, owners, n);
            ledger.CheckConservation();
        }
    }

    private static MatchingEngine.BookOrder Pick(List<MatchingEngine.BookOrder> resting, Step step) => resting[step.Pick % resting.Count];

    /// <summary>
    /// An amend of a resting order; <paramref name="moved"/> is its id when the amend sends it to the back of its level:
    /// a new price or a larger size (a smaller size, or the same, at the same price keeps its place).
    /// </summary>
    private static ExchangeCommand Amend(MatchingEngine.BookOrder order, Step step, out long? moved)
    {
        var price = step.Flags % 2 == 0 ? order.Price : step.Ticks * 10L;
        var quantity = step.Lots * Lot;
        moved = price == order.Price && quantity <= order.Quantity ? null : order.Id;
        return ExchangeCommand.Amend(order.Owner, order.Id, price, quantity);
    }

    /// <summary>The resting orders by (side, price), each level in the engine's queue order.</summary>
    private static Dictionary<(Side, long), List<MatchingEngine.BookOrder>> Levels(MatchingEngine engine) =>
        engine.Book(0, Side.Buy).Concat(engine.Book(0, Side.Sell))
            .GroupBy(o => (o.Side, o.Price))
            .ToDictionary(g => g.Key, g => g.ToList());

    private static void CheckUncrossed(Dictionary<(Side, long), List<MatchingEngine.BookOrder>> levels, string n)
    {
        var bids = levels.Keys.Where(k => k.Item1 == Side.Buy).Select(k => k.Item2).DefaultIfEmpty(long.MinValue).Max();
        var asks = levels.Keys.Where(k => k.Item1 == Side.Sell).Select(k => k.Item2).DefaultIfEmpty(long.MaxValue).Min();
        Assert.True(bids < asks, $"after command {n}: crossed at rest, best bid {bids} >= best ask {asks}");
    }

    /// <summary>
    /// At every level, orders that were there before keep their order among themselves, and every order that joined the
    /// level (or was amended to its back) queues behind all of them.
    /// </summary>
    private static void CheckFifo(Dictionary<(Side, long), List<MatchingEngine.BookOrder>> before, Dictionary<(Side, long), List<MatchingEngine.BookOrder>> after, long? moved, string n)
    {
        foreach (var (level, orders) in after)
        {
            var earlier = before.TryGetValue(level, out var was) ? was.Where(o => o.Id != moved).Select(o => o.Id).ToList() : [];
            var ids = orders.Select(o => o.Id).ToList();
            var kept = ids.Where(earlier.Contains).ToList();
            Assert.True(kept.SequenceEqual(earlier.Where(ids.Contains)), $"after command {n}: level {level} reordered its earlier orders: {string.Join(",", ids)}");
            var lastKept = kept.Count == 0 ? -1 : ids.IndexOf(kept[^1]);
            var firstNew = ids.FindIndex(id => !earlier.Contains(id));
            Assert.True(firstNew < 0 || firstNew > lastKept, $"after command {n}: at level {level} an order that just joined is ahead of one that was there: {string.Join(",", ids)}");
        }
    }

    /// <summary>What each owner has on hold of each asset is exactly what its resting orders hold, and each order holds something.</summary>
    private static void CheckHolds(MatchingEngine engine, ExchangeLedger ledger, int[] owners, int n)
    {
        var orders = engine.Book(0, Side.Buy).Concat(engine.Book(0, Side.Sell)).ToList();
        Assert.All(orders, o => Assert.True(o.Held > 0 && o.Quantity > 0, $"after command {n}: order {o.Id} rests with {o.Quantity} and holds {o.Held}"));
        foreach (var owner in owners)
        {
            Assert.Equal(orders.Where(o => o.Owner == owner && o.Side == Side.Sell).Sum(o => o.Held), ledger.Held(owner, 0));
            Assert.Equal(orders.Where(o => o.Owner == owner && o.Side == Side.Buy).Sum(o => o.Held), ledger.Held(owner, 1));
        }
    }
}
