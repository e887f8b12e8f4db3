using Skymesh.Exchange.Accounts;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Journal;

/// <summary>
/// An engine whose every command is journaled. <see cref="Submit"/> runs a command (its events go to the sink at once) and
/// adds it to the journal; <see cref="Commit"/> makes every command submitted so far durable with one write and one fsync.
/// A caller acknowledges a command — sends its events to whoever asked — only after the commit that holds it returns, so
/// every acknowledged command survives a crash. Opening replays the journal into a fresh engine, which reaches the state
/// (and <see cref="MatchingEngine.StateHash"/>) it had after its last commit.
/// </summary>
public sealed class JournaledExchange : IDisposable
{
    private readonly ICommandJournal _journal;

    private JournaledExchange(MatchingEngine engine, ICommandJournal journal)
    {
        Engine = engine;
        _journal = journal;
    }

    public MatchingEngine Engine { get; }

    /// <summary>Commands committed to the journal.</summary>
    public long Committed => _journal.Records;

    /// <summary>Commands replayed when the journal was opened, and bytes of a torn tail cut off then.</summary>
    public (long Commands, long TornBytes) Recovered { get; private set; }

    /// <summary>Opens (or creates) the journal file at <paramref name="path"/> and replays it.</summary>
    /// <param name="events">Receives the events of new commands (not of the replay).</param>
    public static JournaledExchange Open(string path, IReadOnlyList<AssetSpec> assets, IReadOnlyList<MarketSpec> markets, IExchangeEvents? events = null)
    {
        long torn = 0;
        var exchange = Open(assets, markets, events, replay =>
        {
            var file = FileJournal.Open(path, replay);
            torn = file.TornBytes;
            return file;
        });
        exchange.Recovered = (exchange.Committed, torn);
        return exchange;
    }

    /// <summary>Opens (or creates) the journal <paramref name="name"/> in a PostgreSQL database and replays it.</summary>
    public static JournaledExchange OpenPostgres(string connectionString, string name, IReadOnlyList<AssetSpec> assets, IReadOnlyList<MarketSpec> markets,
        IExchangeEvents? events = null) =>
        Open(assets, markets, events, replay => PostgresJournal.Open(connectionString, name, replay));

    private static JournaledExchange Open(IReadOnlyList<AssetSpec> assets, IReadOnlyList<MarketSpec> markets, IExchangeEvents? events,
        Func<Action<ExchangeCommand>, ICommandJournal> open)
    {
        var sink = new SwitchableSink();
        var engine = new MatchingEngine(new ExchangeLedger(assets), markets, sink);
        var journal = open(command => engine.Execute(command));
        sink.Target = events;
        return new JournaledExchange(engine, journal) { Recovered = (journal.Records, 0) };
    }

    public long Submit(in ExchangeCommand command)
    {
        var sequence = Engine.Execute(command);
        _journal.Append(command);
        return sequence;
    }

    /// <summary>Makes every submitted command durable; returns how many this commit held.</summary>
    public int Commit() => _journal.Commit();

    public void Dispose() => _journal.Dispose();

    private sealed class SwitchableSink : IExchangeEvents
    {
        public IExchangeEvents? Target;

        public void On(in ExchangeEvent e) => Target?.On(e);
    }
}
