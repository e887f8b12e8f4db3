using Microsoft.Data.Sqlite;
using Skymesh.Identity;

namespace Skymesh.Control.Settlement;

/// <summary>One settlement as the journal keeps it.</summary>
/// <param name="Amount">The receipt's cumulative amount.</param>
/// <param name="Moved">What this settlement moved from payer to payee.</param>
public readonly record struct JournalEntry(long Id, NodeAddress Payer, NodeAddress Payee, ulong Sequence, long Amount, long Moved, DateTimeOffset SettledAt);

/// <summary>
/// The node's own ledger (docs/control-plane.md, "Settlement"): balances per node and a journal of every settlement,
/// in one SQLite file. Each settlement is one transaction (journal row + the pair's position, with the receipt that
/// proves it) committed with a full sync of the write-ahead log, so what a call reported settled survives a crash and
/// a restart; a batch shares one transaction. Balances are the sums of the positions, so they cannot disagree with them.
/// Every receipt's signature is checked before anything moves. Balances may go negative: this ledger records who owes
/// whom; it holds no funds. Reads come from memory. Safe to use from several threads.
/// </summary>
public sealed class EmbeddedLedger : ILedger, IDisposable
{
    private readonly TimeProvider _time;
    private readonly SettledPositions _positions = new();
    private readonly Dictionary<NodeAddress, long> _balances = [];
    private readonly Lock _lock = new();
    private SqliteConnection? _connection;

    // In memory only: the journal is this list and nothing is written anywhere.
    private readonly List<JournalEntry>? _memoryJournal;
    private bool _disposed;

    private EmbeddedLedger(SqliteConnection? connection, TimeProvider time)
    {
        _connection = connection;
        _time = time;
        if (connection is null)
            _memoryJournal = [];
    }

    /// <summary>The file the ledger lives in.</summary>
    public string Path { get; private init; } = "";

    /// <summary>
    /// A ledger held in memory only (tests, simulations): the same rules and answers, no database at all — a
    /// simulation of thousands of nodes has one each — and nothing survives its disposal.
    /// </summary>
    public static EmbeddedLedger OpenInMemory(TimeProvider? time = null) => new(null, time ?? TimeProvider.System) { Path = ":memory:" };

    /// <summary>Opens the ledger in <paramref name="path"/>, creating the file if it does not exist.</summary>
    /// <exception cref="InvalidDataException">A position in the file holds a receipt that does not parse.</exception>
    public static EmbeddedLedger Open(string path, TimeProvider? time = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var connection = SettledPositions.OpenFile(path, """
            CREATE TABLE IF NOT EXISTS journal (
                id INTEGER PRIMARY KEY,
                payer BLOB NOT NULL,
                payee BLOB NOT NULL,
                sequence INTEGER NOT NULL,
                amount INTEGER NOT NULL,
                moved INTEGER NOT NULL,
                settled_ms INTEGER NOT NULL,
                UNIQUE (payer, payee, sequence));
            """);
        try
        {
            var ledger = new EmbeddedLedger(connection, time ?? TimeProvider.System) { Path = path };
            ledger.Load();
            return ledger;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    public ValueTask<SettlementResult> SettleAsync(Receipt receipt, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(Settle([receipt])[0]);
    }

    public ValueTask<IReadOnlyList<SettlementResult>> SettleAsync(IReadOnlyList<Receipt> receipts, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(receipts);
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult<IReadOnlyList<SettlementResult>>(Settle(receipts));
    }

    public ValueTask<long> GetBalanceAsync(NodeAddress node, CancellationToken cancellationToken = default) => ValueTask.FromResult(BalanceOf(node));

    public ValueTask<SettledPosition> GetSettledAsync(NodeAddress payer, NodeAddress payee, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(SettledOf(payer, payee));

    public long BalanceOf(NodeAddress node)
    {
        lock (_lock)
            return _balances.GetValueOrDefault(node);
    }

    public SettledPosition SettledOf(NodeAddress payer, NodeAddress payee) => _positions.Of(payer, payee);

    public Receipt? LatestSettled(NodeAddress payer, NodeAddress payee) => _positions.Latest(payer, payee);

    public IReadOnlyList<NodeAddress> PayersOf(NodeAddress payee) => _positions.PayersOf(payee);

    public string Description => _memoryJournal is null ? $"embedded {Path}" : "embedded, in memory";

    /// <summary>Every settlement in the order it was made.</summary>
    public IReadOnlyList<JournalEntry> ReadJournal()
    {
        lock (_lock)
        {
            if (_memoryJournal is not null)
                return _disposed ? throw new ObjectDisposedException(nameof(EmbeddedLedger)) : [.. _memoryJournal];
            using var command = Connection.CreateCommand();
            command.CommandText = "SELECT id, payer, payee, sequence, amount, moved, settled_ms FROM journal ORDER BY id";
            using var reader = command.ExecuteReader();
            var entries = new List<JournalEntry>();
            while (reader.Read())
            {
                entries.Add(new JournalEntry(reader.GetInt64(0), NodeAddress.FromBytes((byte[])reader[1]), NodeAddress.FromBytes((byte[])reader[2]),
                    unchecked((ulong)reader.GetInt64(3)), reader.GetInt64(4), reader.GetInt64(5), DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(6))));
            }
            return entries;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            _connection?.Dispose();
            _connection = null;
        }
    }

    private SqliteConnection Connection => _connection ?? throw new ObjectDisposedException(nameof(EmbeddedLedger));

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private SettlementResult[] Settle(IReadOnlyList<Receipt> receipts)
    {
        var valid = SettlementRules.Verify(receipts);
        lock (_lock)
        {
            ThrowIfDisposed();
            var staged = new Dictionary<(NodeAddress, NodeAddress), Receipt>();
            var moves = new List<(Receipt Receipt, long Moved)>();
            var results = new SettlementResult[receipts.Count];
            for (var i = 0; i < receipts.Count; i++)
            {
                var receipt = receipts[i];
                var pair = (receipt.Payer, receipt.Payee);
                var position = staged.GetValueOrDefault(pair) ?? _positions.Latest(receipt.Payer, receipt.Payee);
                results[i] = SettlementRules.Decide(receipt, valid[i], position is null ? default : new SettledPosition(position.Sequence, position.Amount));
                if (results[i].Outcome == SettlementOutcome.Settled)
                {
                    staged[pair] = receipt;
                    moves.Add((receipt, results[i].Moved));
                }
            }
            if (moves.Count == 0)
                return results;
            var nowMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
            if (_memoryJournal is null)
                Write(Connection, moves, staged.Values, nowMs);
            else
            {
                foreach (var (receipt, moved) in moves)
                {
                    _memoryJournal.Add(new JournalEntry(_memoryJournal.Count + 1, receipt.Payer, receipt.Payee, receipt.Sequence, receipt.Amount, moved,
                        DateTimeOffset.FromUnixTimeMilliseconds(nowMs)));
                }
            }
            // Only once the transaction is committed does memory change.
            _positions.Set(staged.Values);
            foreach (var (receipt, moved) in moves)
            {
                _balances[receipt.Payer] = _balances.GetValueOrDefault(receipt.Payer) - moved;
                _balances[receipt.Payee] = _balances.GetValueOrDefault(receipt.Payee) + moved;
            }
            return results;
        }
    }

    private static void Write(SqliteConnection connection, List<(Receipt Receipt, long Moved)> moves, IEnumerable<Receipt> positions, long nowMs)
    {
        using var transaction = connection.BeginTransaction();
        using (var journal = connection.CreateCommand())
        {
            journal.Transaction = transaction;
            journal.CommandText = "INSERT INTO journal (payer, payee, sequence, amount, moved, settled_ms) VALUES ($payer, $payee, $sequence, $amount, $moved, $ms)";
            var payer = journal.Parameters.Add("$payer", SqliteType.Blob);
            var payee = journal.Parameters.Add("$payee", SqliteType.Blob);
            var sequence = journal.Parameters.Add("$sequence", SqliteType.Integer);
            var amount = journal.Parameters.Add("$amount", SqliteType.Integer);
            var moved = journal.Parameters.Add("$moved", SqliteType.Integer);
            journal.Parameters.AddWithValue("$ms", nowMs);
            foreach (var move in moves)
            {
                payer.Value = move.Receipt.Payer.ToBytes();
                payee.Value = move.Receipt.Payee.ToBytes();
                sequence.Value = unchecked((long)move.Receipt.Sequence);
                amount.Value = move.Receipt.Amount;
                moved.Value = move.Moved;
                journal.ExecuteNonQuery();
            }
        }
        SettledPositions.Write(transaction, positions);
        transaction.Commit();
    }

    private void Load()
    {
        using var command = Connection.CreateCommand();
        command.CommandText = "SELECT receipt FROM positions";
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            var bytes = (byte[])reader[0];
            if (Receipt.TryParse(bytes, out var receipt) != ReceiptError.None || receipt is null)
                throw new InvalidDataException($"The ledger {Path} holds a settled position whose receipt does not parse.");
            _positions.Set([receipt]);
            _balances[receipt.Payer] = _balances.GetValueOrDefault(receipt.Payer) - receipt.Amount;
            _balances[receipt.Payee] = _balances.GetValueOrDefault(receipt.Payee) + receipt.Amount;
        }
    }
}
