using Skymesh.Exchange.Accounts;
using Skymesh.Exchange.Load;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Tests;

/// <summary>
/// The engine and <see cref="ReferenceExchange"/> take the same seeded random stream of commands and must agree on every
/// event, on both books and on every balance at each checkpoint; the engine's invariants (never crossed at rest, FIFO
/// within a level, holds equal to the open orders', exact conservation of every asset) are checked at each checkpoint.
/// </summary>
public sealed class DifferentialTests
{
    private static readonly AssetSpec[] Assets = [new("SKY", 6), new("BTC", 8)];

    private static readonly MarketSpec Market = new("SKY/BTC", "SKY", "BTC", LotSize: 100, TickSize: 5, MinNotional: 1000, MakerFeePpm: 200, TakerFeePpm: 500);

    /// <summary>Commands of the long run bench/exchange-differential.sh asks for (100,000,000 there); none in the suite.</summary>
    public const string LongRunVariable = "SKYMESH_DIFFERENTIAL_COMMANDS";

    [Fact]
    public void The_long_differential_run_of_the_bench_agrees_too()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable(LongRunVariable), out var commands) || commands <= 0)
            Assert.Skip($"the long run is bench/exchange-differential.sh (it sets {LongRunVariable})");
        The_engine_and_a_simple_reference_agree_on_every_event_book_and_balance(3, commands);
    }

    [Theory]
    [InlineData(1, 1_000_000)]
    [InlineData(2, 200_000)]
    public void The_engine_and_a_simple_reference_agree_on_every_event_book_and_balance(int seed, int commands)
    {
        const int owners = 1000;
        const int checkpoint = 10_000;
        var ledger = new ExchangeLedger(Assets);
        for (var i = 0; i < owners; i++)
            ledger.Owner($"owner-{i}");
        var recorder = new Recorder();
        var engine = new MatchingEngine(ledger, [Market], recorder);
        var reference = new ReferenceExchange(Assets, [Market], owners);
        var stream = new CommandStream(seed, owners, Market, 0, 1);
        foreach (var c in stream.Funding())
        {
            engine.Execute(c);
            reference.Execute(c);
        }
        var (trades, rejected, amended) = (0L, 0L, 0L);
        for (var n = 1; n <= commands; n++)
        {
            var before = recorder.All.Count;
            var command = stream.Next(id => engine.TryGetOrder(id, out var o) ? (o.Owner, o.Price, o.Quantity) : null, engine.RestingOrders);
            engine.Execute(command);
            reference.Execute(command);
            for (var i = before; i < recorder.All.Count; i++)
            {
                var e = recorder.All[i];
                if (e.Kind == EventKind.Rested)
                    stream.Placed(e.OrderId);
                trades += e.Kind == EventKind.Trade ? 1 : 0;
                rejected += e.Kind == EventKind.Rejected ? 1 : 0;
                amended += e.Kind == EventKind.Amended ? 1 : 0;
            }
            if (n % checkpoint == 0 || n == commands)
            {
                Compare(recorder.All, reference.Events, n);
                recorder.All.Clear();
                reference.Events.Clear();
                Assert.Equal(reference.Book(0, Side.Buy), engine.Book(0, Side.Buy));
                Assert.Equal(reference.Book(0, Side.Sell), engine.Book(0, Side.Sell));
                for (var owner = 0; owner < owners; owner++)
                {
                    for (var asset = 0; asset < Assets.Length; asset++)
                    {
                        if ((ledger.Available(owner, asset), ledger.Held(owner, asset)) != (reference.Available(owner, asset), reference.Held(owner, asset)))
                            Assert.Fail($"after command {n}: owner {owner}, {Assets[asset].Code}: engine {ledger.Available(owner, asset)}/{ledger.Held(owner, asset)}, reference {reference.Available(owner, asset)}/{reference.Held(owner, asset)}");
                    }
                }
                Assert.Equal(reference.Fees(1), ledger.Fees(1));
                engine.CheckInvariants();
            }
        }
        // The stream did exercise the engine: trades, a book of about the usual size, refusals.
        Assert.True(trades > commands / 100, $"{trades} trades");
        Assert.InRange(engine.RestingOrders, 300, 1100);
        Assert.True(rejected > commands / 100, $"{rejected} rejections");
        Assert.True(amended > commands / 4, $"{amended} amendments");
        TestContext.Current.SendDiagnosticMessage($"seed {seed}: {commands:N0} commands, {trades:N0} trades, {amended:N0} amendments, {rejected:N0} refused, {engine.RestingOrders} resting");
    }

    private static void Compare(List<ExchangeEvent> engine, List<ExchangeEvent> reference, int n)
    {
        var count = Math.Min(engine.Count, reference.Count);
        for (var i = 0; i < count; i++)
        {
            if (engine[i] != reference[i])
                Assert.Fail($"by command {n}, event {i} differs:\n engine:    {engine[i]}\n reference: {reference[i]}");
        }
        Assert.True(engine.Count == reference.Count, $"by command {n}: the engine made {engine.Count} events, the reference {reference.Count}");
    }

    [Fact]
    public void The_same_commands_give_the_same_state_hash_and_a_different_stream_another()
    {
        ulong Run(int seed)
        {
            var ledger = new ExchangeLedger(Assets);
            for (var i = 0; i < 50; i++)
                ledger.Owner($"owner-{i}");
            var recorder = new Recorder();
            var engine = new MatchingEngine(ledger, [Market], recorder);
            var stream = new CommandStream(seed, 50, Market, 0, 1);
            foreach (var c in stream.Funding())
                engine.Execute(c);
            for (var n = 0; n < 20_000; n++)
            {
                var before = recorder.All.Count;
                engine.Execute(stream.Next(id => engine.TryGetOrder(id, out var o) ? (o.Owner, o.Price, o.Quantity) : null, engine.RestingOrders));
                foreach (var e in recorder.All.Skip(before).Where(e => e.Kind == EventKind.Rested))
                    stream.Placed(e.OrderId);
            }
            return engine.StateHash();
        }
        Assert.Equal(Run(7), Run(7));
        Assert.NotEqual(Run(7), Run(8));
    }
}
