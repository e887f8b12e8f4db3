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
    private readonly string? _snapshotPath;

    private JournaledExchange(MatchingEngine engine, ICommandJournal journal, string? snapshotPath)
    {
        Engine = engine;
        _journal = journal;
        _snapshotPath = snapshotPath;
    }

    public MatchingEngine Engine { get; }

    /// <summary>Commands committed to the journal.</summary>
    public long Committed => _journal.Records;

    /// <summary>Commands replayed from the journal when it was opened (after the snapshot, if any), and bytes of a torn tail cut off then.</summary>
    public (long Commands, long TornBytes) Recovered { get; private init; }

    /// <summary>Opens (or creates) the journal file at <paramref name="path"/> and replays it.</summary>
    /// <param name="events">Receives the events of new commands (not of the replay).</param>
    /// <param name="snapshotPath">Where snapshots are kept (<see cref="SaveSnapshot"/>): the latest is loaded and only the commands after it replayed.</param>
    /// <param name="replay">Sees each replayed command before it runs, and its events (to rebuild what is kept beside the engine).</param>
    public static JournaledExchange Open(string path, IReadOnlyList<AssetSpec> assets, IReadOnlyList<MarketSpec> markets, IExchangeEvents? events = null,
        string? snapshotPath = null, IReplayObserver? replay = null) =>
        Open(assets, markets, events, snapshotPath, replay, onRecord => FileJournal.Open(path, onRecord));

    /// <summary>Opens (or creates) the journal <paramref name="name"/> in a PostgreSQL database and replays it.</summary>
    public static JournaledExchange OpenPostgres(string connectionString, string name, IReadOnlyList<AssetSpec> assets, IReadOnlyList<MarketSpec> markets,
        IExchangeEvents? events = null, string? snapshotPath = null, IReplayObserver? replay = null) =>
        Open(assets, markets, events, snapshotPath, replay, onRecord => PostgresJournal.Open(connectionString, name, onRecord));

    private static JournaledExchange Open(IReadOnlyList<AssetSpec> assets, IReadOnlyList<MarketSpec> markets, IExchangeEvents? events,
        string? snapshotPath, IReplayObserver? replay, Func<Action<ExchangeCommand>, ICommandJournal> open)
    {
        var sink = new SwitchableSink { Target = replay };
        MatchingEngine engine;
        long covered = 0;
        if (snapshotPath is not null && File.Exists(snapshotPath))
        {
            using var file = File.OpenRead(snapshotPath);
            using (var reader = new BinaryReader(file, System.Text.Encoding.UTF8, leaveOpen: true))
                covered = reader.ReadInt64();
            engine = MatchingEngine.ReadSnapshot(file, assets, markets, sink);
        }
        else
        {
            engine = new MatchingEngine(new ExchangeLedger(assets), markets, sink);
        }
        // The journal holds every command; those the snapshot already covers are skipped.
        long seen = 0;
        var journal = open(command =>
        {
            if (++seen > covered)
            {
                replay?.Replaying(command);
                engine.Execute(command);
            }
        });
        if (seen < covered)
        {
            journal.Dispose();
            throw new InvalidDataException($"The snapshot covers {covered} commands but the journal holds only {seen}.");
        }
        sink.Target = events;
        return new JournaledExchange(engine, journal, snapshotPath) { Recovered = (journal.Records - covered, journal.TornBytes) };
    }

    /// <summary>
    /// Commits, then writes a snapshot of the engine covering every committed command (to a temporary file, flushed to
    /// disk, then renamed over the last one), so that the next open replays only what comes after.
    /// </summary>
    public void SaveSnapshot()
    {
        if (_snapshotPath is null)
            throw new InvalidOperationException("This exchange was opened without a snapshot path.");
        Commit();
        var temporary = _snapshotPath + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var file = new FileStream(temporary, options))
        {
            using (var writer = new BinaryWriter(file, System.Text.Encoding.UTF8, leaveOpen: true))
                writer.Write(Committed);
            Engine.WriteSnapshot(file);
            file.Flush(flushToDisk: true);
        }
        File.Move(temporary, _snapshotPath, overwrite: true);
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

/// <summary>Sees a journal's replay: each command before the engine runs it, then its events.</summary>
public interface IReplayObserver : IExchangeEvents
{
    void Replaying(in ExchangeCommand command);
}
