using System.Text.Json;
using System.Text.Json.Serialization;
using Skymesh.Exchange.Journal;
using Skymesh.Exchange.Matching;
using Skymesh.Ledger;

namespace Skymesh.Exchange;

/// <summary>What an exchange directory trades: written once when the directory is made, read on every open.</summary>
public sealed record ExchangeDefinition(IReadOnlyList<AssetSpec> Assets, IReadOnlyList<MarketSpec> Markets)
{
    /// <summary>
    /// SKY (6 decimal places) and BTC (8); SKY/BTC in lots of 0.001 SKY, prices in satoshis per lot (a tick of 1), at
    /// least 1,000 satoshis an order, maker 0.1 %, taker 0.2 %.
    /// </summary>
    public static ExchangeDefinition Default { get; } = new(
        [new AssetSpec("SKY", 6), new AssetSpec("BTC", 8)],
        [new MarketSpec("SKY/BTC", "SKY", "BTC", LotSize: 1_000, TickSize: 1, MinNotional: 1_000, MakerFeePpm: 1_000, TakerFeePpm: 2_000)]);

    public void Validate()
    {
        _ = new MatchingEngine(new Accounts.ExchangeLedger(Assets), Markets);
    }

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>
    /// The definition kept in <paramref name="directory"/>'s exchange.json, or <paramref name="definition"/> (by default
    /// <see cref="Default"/>) written there when it has none. Asking for other assets or markets than it holds is refused.
    /// </summary>
    /// <exception cref="InvalidDataException">exchange.json is not a definition, or not the one asked for.</exception>
    public static ExchangeDefinition LoadOrCreate(string directory, ExchangeDefinition? definition = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        System.IO.Directory.CreateDirectory(directory);
        var definitionPath = Path.Combine(directory, ExchangeStore.DefinitionFile);
        ExchangeDefinition stored;
        if (File.Exists(definitionPath))
        {
            try
            {
                stored = JsonSerializer.Deserialize<ExchangeDefinition>(File.ReadAllText(definitionPath), Json)
                    ?? throw new InvalidDataException($"{definitionPath} is empty.");
                stored.Validate();
            }
            catch (Exception e) when (e is JsonException or ArgumentException or NotSupportedException)
            {
                throw new InvalidDataException($"{definitionPath} does not describe an exchange: {e.Message}", e);
            }
            if (definition is not null && !Same(definition, stored))
                throw new InvalidDataException($"{directory} holds an exchange of other assets or markets than asked for.");
        }
        else
        {
            stored = definition ?? ExchangeDefinition.Default;
            stored.Validate();
            var temporary = definitionPath + ".tmp";
            File.WriteAllText(temporary, JsonSerializer.Serialize(stored, Json));
            File.Move(temporary, definitionPath);
        }
        return stored;
    }

    private static bool Same(ExchangeDefinition a, ExchangeDefinition b) =>
        a.Assets.SequenceEqual(b.Assets) && a.Markets.SequenceEqual(b.Markets);
}

/// <summary>One command's outcome: its number and the events it caused, once it is durable.</summary>
public readonly record struct CommandOutcome(long Sequence, IReadOnlyList<ExchangeEvent> Events)
{
    /// <summary>Why the command was refused, or <see cref="RejectReason.None"/>.</summary>
    public RejectReason Rejected => Events.Count > 0 && Events[0].Kind == EventKind.Rejected ? Events[0].Reason : RejectReason.None;
}

/// <summary>
/// An exchange kept in a directory (docs/exchange.md, "Exchange directory"): <c>exchange.json</c> (its assets and
/// markets), <c>journal</c> (every command, group-committed with fsync) and <c>snapshot</c>. One process at a time
/// opens it (the journal is locked). Every call is serialised and returns only once the commands it ran are durable,
/// so whatever it reports survives a crash. It is also an <see cref="ITransferLedger"/>: mesh settlement can pay
/// receipts on it, between accounts named by node addresses.
/// </summary>
public sealed class ExchangeStore : ITransferLedger, IDisposable
{
    public const string DefinitionFile = "exchange.json";


    private readonly JournaledExchange _exchange;
    private readonly Collector _events;
    private readonly Lock _lock = new();

    private ExchangeStore(JournaledExchange exchange, Collector events, string directory, ExchangeDefinition definition)
    {
        _exchange = exchange;
        _events = events;
        Directory = directory;
        Definition = definition;
    }

    public string Directory { get; }

    public ExchangeDefinition Definition { get; }

    /// <summary>Commands taken since the directory was made.</summary>
    public long Committed
    {
        get
        {
            lock (_lock)
                return _exchange.Committed;
        }
    }

    /// <summary>
    /// Opens the exchange in <paramref name="directory"/>, making it (with <paramref name="definition"/>, by default
    /// <see cref="ExchangeDefinition.Default"/>) when it holds none, and replays its journal.
    /// </summary>
    /// <exception cref="InvalidDataException">exchange.json or the journal is not what it should be.</exception>
    /// <exception cref="IOException">Another process has the exchange open, or the disk failed.</exception>
    public static ExchangeStore Open(string directory, ExchangeDefinition? definition = null)
    {
        var stored = ExchangeDefinition.LoadOrCreate(directory, definition);
        var events = new Collector();
        var exchange = JournaledExchange.Open(Path.Combine(directory, "journal"), stored.Assets, stored.Markets, events,
            Path.Combine(directory, "snapshot"));
        return new ExchangeStore(exchange, events, directory, stored);
    }

    /// <summary>Credits a deposit to <paramref name="owner"/> (its account opened if new); idempotent by <paramref name="key"/>.</summary>
    public CommandOutcome Deposit(string owner, string asset, long amount, string key) =>
        RunDurable(() => ExchangeCommand.Deposit(Owner(owner), AssetIndex(asset), amount, key));

    /// <summary>Debits a withdrawal from <paramref name="owner"/>'s available balance; idempotent by <paramref name="key"/>.</summary>
    public CommandOutcome Withdraw(string owner, string asset, long amount, string key) =>
        RunDurable(() => ExchangeCommand.Withdraw(Owner(owner), AssetIndex(asset), amount, key));

    /// <summary>Makes the command (under the lock: it may open an account) and runs it; returns once it is durable.</summary>
    private CommandOutcome RunDurable(Func<ExchangeCommand> make)
    {
        lock (_lock)
        {
            var outcome = Run(make());
            _exchange.Commit();
            return outcome;
        }
    }

    /// <summary>Every owner's available and held balance of every asset, in the order the owners were first seen.</summary>
    public IReadOnlyList<(string Owner, string Asset, long Available, long Held)> Balances()
    {
        lock (_lock)
        {
            var ledger = _exchange.Engine.Ledger;
            var rows = new List<(string, string, long, long)>();
            for (var owner = 0; owner < ledger.OwnerCount; owner++)
            {
                for (var asset = 0; asset < ledger.Assets.Count; asset++)
                    rows.Add((ledger.OwnerKey(owner), ledger.Assets[asset].Code, ledger.Available(owner, asset), ledger.Held(owner, asset)));
            }
            return rows;
        }
    }

    /// <summary>What <paramref name="owner"/> has available of <paramref name="asset"/> (0 when unknown).</summary>
    public long Available(string owner, string asset)
    {
        lock (_lock)
        {
            var ledger = _exchange.Engine.Ledger;
            return ledger.TryGetOwner(owner, out var number) && TryAsset(asset, out var index) ? ledger.Available(number, index) : 0;
        }
    }

    /// <summary>Checks that every asset is conserved (see <see cref="Accounts.ExchangeLedger.CheckConservation"/>).</summary>
    public void CheckConservation()
    {
        lock (_lock)
            _exchange.Engine.Ledger.CheckConservation();
    }

    public ValueTask<int?> GetScaleAsync(string asset, CancellationToken cancellationToken = default)
    {
        lock (_lock)
            return ValueTask.FromResult(TryAsset(asset, out var index) ? Definition.Assets[index].Scale : (int?)null);
    }

    public ValueTask<long> GetBalanceAsync(string owner, string asset, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Available(owner, asset));

    public ValueTask<IReadOnlyList<TransferResult>> TransferAsync(IReadOnlyList<LedgerTransfer> transfers, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transfers);
        cancellationToken.ThrowIfCancellationRequested();
        var results = new TransferResult[transfers.Count];
        lock (_lock)
        {
            for (var i = 0; i < transfers.Count; i++)
                results[i] = Transfer(transfers[i]);
            // One fsync for the batch: nothing is reported before it is durable.
            _exchange.Commit();
        }
        return ValueTask.FromResult<IReadOnlyList<TransferResult>>(results);
    }

    private TransferResult Transfer(in LedgerTransfer t) =>
        LedgerTransfers.Run(_exchange.Engine.Ledger, t, Owner, command => Run(command).Rejected);

    public void Dispose()
    {
        lock (_lock)
            _exchange.Dispose();
    }

    private int Owner(string key)
    {
        var ledger = _exchange.Engine.Ledger;
        if (ledger.TryGetOwner(key, out var owner))
            return owner;
        var opened = Run(ExchangeCommand.OpenAccount(key));
        return opened.Rejected == RejectReason.None ? opened.Events[0].Owner
            : throw new ArgumentException($"'{key}' cannot name an account (1 to 256 characters).", nameof(key));
    }

    private int AssetIndex(string code) =>
        TryAsset(code, out var index) ? index : throw new ArgumentException($"No asset {code}; this exchange has {string.Join(", ", Definition.Assets.Select(a => a.Code))}.");

    private bool TryAsset(string code, out int index)
    {
        for (index = 0; index < Definition.Assets.Count; index++)
        {
            if (Definition.Assets[index].Code == code)
                return true;
        }
        return false;
    }

    private CommandOutcome Run(in ExchangeCommand command)
    {
        _events.Events.Clear();
        var sequence = _exchange.Submit(command);
        return new CommandOutcome(sequence, [.. _events.Events]);
    }

    private sealed class Collector : IExchangeEvents
    {
        public List<ExchangeEvent> Events { get; } = [];

        public void On(in ExchangeEvent e) => Events.Add(e);
    }
}
