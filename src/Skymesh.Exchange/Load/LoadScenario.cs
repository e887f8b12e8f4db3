using System.Globalization;
using Skymesh.Exchange.Accounts;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Load;

/// <summary>
/// The benchmark's exchange: SKY/BTC in lots of 100 units and ticks of 5, maker 0.02 %, taker 0.05 %; a number of owners
/// opened and funded by commands; then a <see cref="CommandStream"/>. The whole thing is a list of commands, so the same
/// scenario can be matched, journaled, replayed and checked anywhere.
/// </summary>
public static class LoadScenario
{
    public static IReadOnlyList<AssetSpec> Assets { get; } = [new("SKY", 6), new("BTC", 8)];

    public static MarketSpec Market { get; } = new("SKY/BTC", "SKY", "BTC", LotSize: 100, TickSize: 5, MinNotional: 1000, MakerFeePpm: 200, TakerFeePpm: 500);

    /// <summary>An empty engine of the scenario's assets and market.</summary>
    public static MatchingEngine NewEngine(IExchangeEvents? events = null) => new(new ExchangeLedger(Assets), [Market], events);

    /// <summary>
    /// Every command of the scenario: the owners opened, funded, then <paramref name="count"/> commands of the stream,
    /// generated against an engine that tells the generator which orders are alive.
    /// </summary>
    public static ExchangeCommand[] Commands(int seed, int owners, int count)
    {
        var rested = new RestedIds();
        var engine = NewEngine(rested);
        var generator = new CommandStream(seed, owners, Market, 0, 1);
        var commands = new List<ExchangeCommand>(owners * 3 + count);
        for (var i = 0; i < owners; i++)
            commands.Add(ExchangeCommand.OpenAccount(string.Create(CultureInfo.InvariantCulture, $"owner-{i}")));
        commands.AddRange(generator.Funding());
        foreach (var command in commands)
            engine.Execute(command);
        for (var i = 0; i < count; i++)
        {
            rested.Ids.Clear();
            var command = generator.Next(id => engine.TryGetOrder(id, out var o) ? (o.Owner, o.Price, o.Quantity) : null, engine.RestingOrders);
            commands.Add(command);
            engine.Execute(command);
            foreach (var id in rested.Ids)
                generator.Placed(id);
        }
        return [.. commands];
    }

    private sealed class RestedIds : IExchangeEvents
    {
        public List<long> Ids { get; } = [];

        public void On(in ExchangeEvent e)
        {
            if (e.Kind == EventKind.Rested)
                Ids.Add(e.OrderId);
        }
    }
}
