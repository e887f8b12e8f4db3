using Microsoft.Data.Sqlite;
using Skymesh.Identity;

namespace Skymesh.Control.Settlement;

/// <summary>
/// Per payer → payee pair, the latest receipt a ledger has settled (the signed proof of everything paid so far), held
/// in memory for the reads a node makes every round. Safe to use from several threads.
/// </summary>
internal sealed class SettledPositions
{
    private readonly Dictionary<(NodeAddress Payer, NodeAddress Payee), Receipt> _latest = [];
    private readonly Lock _lock = new();

    public SettledPosition Of(NodeAddress payer, NodeAddress payee)
    {
        lock (_lock)
            return _latest.TryGetValue((payer, payee), out var r) ? new SettledPosition(r.Sequence, r.Amount) : default;
    }

    public Receipt? Latest(NodeAddress payer, NodeAddress payee)
    {
        lock (_lock)
            return _latest.GetValueOrDefault((payer, payee));
    }

    public IReadOnlyList<NodeAddress> PayersOf(NodeAddress payee)
    {
        lock (_lock)
            return [.. _latest.Keys.Where(p => p.Payee == payee).Select(p => p.Payer)];
    }

    /// <summary>The pairs of <paramref name="receipts"/> are settled up to them.</summary>
    public void Set(IEnumerable<Receipt> receipts)
    {
        lock (_lock)
        {
            foreach (var r in receipts)
                _latest[(r.Payer, r.Payee)] = r;
        }
    }

    /// <summary>The table a ledger file keeps the positions in: per pair, the latest receipt settled.</summary>
    public const string Schema = """
        CREATE TABLE IF NOT EXISTS positions (
            payer BLOB NOT NULL,
            payee BLOB NOT NULL,
            receipt BLOB NOT NULL,
            PRIMARY KEY (payer, payee)) WITHOUT ROWID;
        """;

    /// <summary>Writes each receipt as its pair's position, within <paramref name="transaction"/>.</summary>
    public static void Write(SqliteTransaction transaction, IEnumerable<Receipt> receipts)
    {
        using var upsert = transaction.Connection!.CreateCommand();
        upsert.Transaction = transaction;
        upsert.CommandText = "INSERT INTO positions (payer, payee, receipt) VALUES ($payer, $payee, $receipt) ON CONFLICT (payer, payee) DO UPDATE SET receipt = excluded.receipt";
        var payer = upsert.Parameters.Add("$payer", SqliteType.Blob);
        var payee = upsert.Parameters.Add("$payee", SqliteType.Blob);
        var receipt = upsert.Parameters.Add("$receipt", SqliteType.Blob);
        foreach (var r in receipts)
        {
            payer.Value = r.Payer.ToBytes();
            payee.Value = r.Payee.ToBytes();
            receipt.Value = r.Bytes;
            upsert.ExecuteNonQuery();
        }
    }

    /// <summary>
    /// Opens (or creates) a ledger file: WAL with full sync (a committed transaction is on disk when the call returns),
    /// the positions table and <paramref name="tables"/>.
    /// </summary>
    public static SqliteConnection OpenFile(string path, string tables)
    {
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        try
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;" + Schema + tables;
            command.ExecuteNonQuery();
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }
}
