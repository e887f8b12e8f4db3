using Microsoft.Data.Sqlite;

namespace Skymesh.Exchange.Service;

/// <summary>Where a deposit stands (docs/exchange-api.md, "Deposits").</summary>
public enum DepositState : byte
{
    /// <summary>In the mempool: no confirmation yet.</summary>
    Seen,

    /// <summary>In a block, fewer confirmations than the coin needs.</summary>
    Confirming,

    /// <summary>On the account.</summary>
    Credited,

    /// <summary>Was credited, then the chain stopped confirming it (a reorganisation): taken back; credited again if it comes back.</summary>
    Reversed,

    /// <summary>Vanished from the chain before it was credited.</summary>
    Dropped,
}

/// <summary>Where a withdrawal stands: requested → held → approved → broadcast → confirmed, or failed or rejected.</summary>
public enum WithdrawalState : byte
{
    Requested,
    Held,
    Approved,
    Broadcast,
    Confirmed,
    Failed,
    Rejected,
}

public sealed record DepositRecord(string Asset, string TxId, int Index, string Address, string Owner, long Amount, long? Height,
    long? Confirmations, DepositState State, int Credits, long Seen, long Updated);

public sealed record WithdrawalRecord(long Id, string Owner, string Key, string Asset, string Address, long Amount, WithdrawalState State,
    string? TxId, string? Raw, string? Reason, long? Confirmations, long Created, long Updated, string? ApprovedBy);

/// <summary>
/// The exchange's deposit addresses, deposits and withdrawals in one SQLite file (<c>funds.db</c>, owner-only, WAL,
/// synchronous=FULL): every change is durable before the step that follows it runs. Thread-safe (one lock).
/// </summary>
public sealed class FundsStore : IDisposable
{
    private const string Schema = """
        CREATE TABLE IF NOT EXISTS addresses(asset TEXT NOT NULL, idx INTEGER NOT NULL, address TEXT NOT NULL, owner TEXT NOT NULL,
            PRIMARY KEY(asset, idx));
        CREATE UNIQUE INDEX IF NOT EXISTS addresses_owner ON addresses(asset, owner);
        CREATE UNIQUE INDEX IF NOT EXISTS addresses_address ON addresses(asset, address);
        CREATE TABLE IF NOT EXISTS deposits(asset TEXT NOT NULL, txid TEXT NOT NULL, vout INTEGER NOT NULL, address TEXT NOT NULL,
            owner TEXT NOT NULL, amount INTEGER NOT NULL, height INTEGER, confirmations INTEGER, state INTEGER NOT NULL,
            credits INTEGER NOT NULL, seen INTEGER NOT NULL, updated INTEGER NOT NULL, PRIMARY KEY(asset, txid, vout));
        CREATE INDEX IF NOT EXISTS deposits_owner ON deposits(owner);
        CREATE TABLE IF NOT EXISTS scans(asset TEXT PRIMARY KEY, tip INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS withdrawals(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, key TEXT NOT NULL, asset TEXT NOT NULL,
            address TEXT NOT NULL, amount INTEGER NOT NULL, state INTEGER NOT NULL, txid TEXT, raw TEXT, reason TEXT,
            confirmations INTEGER, created INTEGER NOT NULL, updated INTEGER NOT NULL, approved_by TEXT, refund_due INTEGER NOT NULL DEFAULT 0,
            UNIQUE(owner, key));
        """;

    private readonly SqliteConnection _db;
    private readonly Lock _lock = new();

    private FundsStore(SqliteConnection db) => _db = db;

    public static FundsStore Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path) && !OperatingSystem.IsWindows())
        {
            // Created owner-only before SQLite opens it: it names every account's addresses and withdrawals.
            using (new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
            {
            }
        }
        var db = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        try
        {
            db.Open();
            using var command = db.CreateCommand();
            command.CommandText = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;" + Schema;
            command.ExecuteNonQuery();
            return new FundsStore(db);
        }
        catch (SqliteException e)
        {
            db.Dispose();
            throw new InvalidDataException($"{path} is not the exchange's funds database: {e.Message}", e);
        }
    }

    // ---- addresses

    /// <summary>The owner's deposit address number for the asset, or a new one (the next index) from <paramref name="derive"/>.</summary>
    public (long Index, string Address) DepositAddress(string asset, string owner, Func<long, string> derive)
    {
        lock (_lock)
        {
            using (var find = Command("SELECT idx, address FROM addresses WHERE asset = $a AND owner = $o", ("$a", asset), ("$o", owner)))
            using (var reader = find.ExecuteReader())
            {
                if (reader.Read())
                    return (reader.GetInt64(0), reader.GetString(1));
            }
            long next;
            using (var max = Command("SELECT COALESCE(MAX(idx) + 1, 0) FROM addresses WHERE asset = $a", ("$a", asset)))
                next = (long)max.ExecuteScalar()!;
            var address = derive(next);
            using var insert = Command("INSERT INTO addresses(asset, idx, address, owner) VALUES($a, $i, $ad, $o)", ("$a", asset), ("$i", next), ("$ad", address), ("$o", owner));
            insert.ExecuteNonQuery();
            return (next, address);
        }
    }

    /// <summary>Every deposit address of the asset, by address: whose it is.</summary>
    public Dictionary<string, string> AddressOwners(string asset)
    {
        lock (_lock)
        {
            var owners = new Dictionary<string, string>(StringComparer.Ordinal);
            using var find = Command("SELECT address, owner FROM addresses WHERE asset = $a", ("$a", asset));
            using var reader = find.ExecuteReader();
            while (reader.Read())
                owners[reader.GetString(0)] = reader.GetString(1);
            return owners;
        }
    }

    public IReadOnlyList<(long Index, string Address)> Addresses(string asset)
    {
        lock (_lock)
        {
            var list = new List<(long, string)>();
            using var find = Command("SELECT idx, address FROM addresses WHERE asset = $a ORDER BY idx", ("$a", asset));
            using var reader = find.ExecuteReader();
            while (reader.Read())
                list.Add((reader.GetInt64(0), reader.GetString(1)));
            return list;
        }
    }

    // ---- deposits

    public long? ScannedTip(string asset)
    {
        lock (_lock)
        {
            using var find = Command("SELECT tip FROM scans WHERE asset = $a", ("$a", asset));
            return find.ExecuteScalar() is long tip ? tip : null;
        }
    }

    public void SetScannedTip(string asset, long tip)
    {
        lock (_lock)
        {
            using var upsert = Command("INSERT INTO scans(asset, tip) VALUES($a, $t) ON CONFLICT(asset) DO UPDATE SET tip = $t", ("$a", asset), ("$t", tip));
            upsert.ExecuteNonQuery();
        }
    }

    public DepositRecord? FindDeposit(string asset, string txId, int index)
    {
        lock (_lock)
        {
            using var find = Command("SELECT * FROM deposits WHERE asset = $a AND txid = $t AND vout = $v", ("$a", asset), ("$t", txId), ("$v", index));
            return ReadDeposits(find).FirstOrDefault();
        }
    }

    /// <summary>Deposits of the asset the chain may still change: not dropped, and either not final or at or above <paramref name="fromHeight"/>.</summary>
    public IReadOnlyList<DepositRecord> WatchedDeposits(string asset, long fromHeight)
    {
        lock (_lock)
        {
            using var find = Command("""
                SELECT * FROM deposits WHERE asset = $a AND state <> $dropped AND (height IS NULL OR height >= $h OR state <> $credited)
                """, ("$a", asset), ("$h", fromHeight), ("$dropped", (int)DepositState.Dropped), ("$credited", (int)DepositState.Credited));
            return ReadDeposits(find);
        }
    }

    public void SaveDeposit(DepositRecord d)
    {
        lock (_lock)
        {
            using var upsert = Command("""
                INSERT INTO deposits(asset, txid, vout, address, owner, amount, height, confirmations, state, credits, seen, updated)
                VALUES($a, $t, $v, $ad, $o, $am, $h, $c, $s, $cr, $seen, $u)
                ON CONFLICT(asset, txid, vout) DO UPDATE SET height = $h, confirmations = $c, state = $s, credits = $cr, updated = $u
                """, ("$a", d.Asset), ("$t", d.TxId), ("$v", d.Index), ("$ad", d.Address), ("$o", d.Owner), ("$am", d.Amount),
                ("$h", d.Height), ("$c", d.Confirmations), ("$s", (int)d.State), ("$cr", d.Credits), ("$seen", d.Seen), ("$u", d.Updated));
            upsert.ExecuteNonQuery();
        }
    }

    public IReadOnlyList<DepositRecord> Deposits(string? owner, string? asset, int limit)
    {
        lock (_lock)
        {
            using var find = Command("""
                SELECT * FROM deposits WHERE ($o IS NULL OR owner = $o) AND ($a IS NULL OR asset = $a) ORDER BY seen DESC, txid LIMIT $l
                """, ("$o", owner), ("$a", asset), ("$l", limit));
            return ReadDeposits(find);
        }
    }

    private static List<DepositRecord> ReadDeposits(SqliteCommand command)
    {
        var list = new List<DepositRecord>();
        using var r = command.ExecuteReader();
        while (r.Read())
        {
            list.Add(new DepositRecord(r.GetString(0), r.GetString(1), r.GetInt32(2), r.GetString(3), r.GetString(4), r.GetInt64(5),
                r.IsDBNull(6) ? null : r.GetInt64(6), r.IsDBNull(7) ? null : r.GetInt64(7), (DepositState)r.GetInt32(8), r.GetInt32(9),
                r.GetInt64(10), r.GetInt64(11)));
        }
        return list;
    }

    // ---- withdrawals

    /// <summary>Adds a requested withdrawal, or returns the one this owner already made with this key (and false).</summary>
    public (WithdrawalRecord Record, bool Created) AddWithdrawal(string owner, string key, string asset, string address, long amount, long now)
    {
        lock (_lock)
        {
            if (FindWithdrawal(owner, key) is { } existing)
                return (existing, false);
            using var insert = Command("""
                INSERT INTO withdrawals(owner, key, asset, address, amount, state, created, updated) VALUES($o, $k, $a, $ad, $am, $s, $n, $n)
                RETURNING id
                """, ("$o", owner), ("$k", key), ("$a", asset), ("$ad", address), ("$am", amount), ("$s", (int)WithdrawalState.Requested), ("$n", now));
            var id = (long)insert.ExecuteScalar()!;
            return (Withdrawal(id)!, true);
        }
    }

    public WithdrawalRecord? FindWithdrawal(string owner, string key)
    {
        lock (_lock)
        {
            using var find = Command("SELECT * FROM withdrawals WHERE owner = $o AND key = $k", ("$o", owner), ("$k", key));
            return ReadWithdrawals(find).FirstOrDefault();
        }
    }

    public WithdrawalRecord? Withdrawal(long id)
    {
        lock (_lock)
        {
            using var find = Command("SELECT * FROM withdrawals WHERE id = $i", ("$i", id));
            return ReadWithdrawals(find).FirstOrDefault();
        }
    }

    /// <summary>Moves a withdrawal on; the transaction, reason, confirmations and approver are kept when given as null.</summary>
    public WithdrawalRecord Update(long id, WithdrawalState state, long now, string? txId = null, string? raw = null, string? reason = null,
        long? confirmations = null, string? approvedBy = null, bool? refundDue = null)
    {
        lock (_lock)
        {
            using var update = Command("""
                UPDATE withdrawals SET state = $s, updated = $n, txid = COALESCE($t, txid), raw = COALESCE($r, raw),
                    reason = COALESCE($re, reason), confirmations = COALESCE($c, confirmations), approved_by = COALESCE($ab, approved_by),
                    refund_due = COALESCE($rd, refund_due)
                WHERE id = $i
                """, ("$i", id), ("$s", (int)state), ("$n", now), ("$t", txId), ("$r", raw), ("$re", reason), ("$c", confirmations), ("$ab", approvedBy),
                ("$rd", refundDue is { } due ? (due ? 1 : 0) : null));
            update.ExecuteNonQuery();
            return Withdrawal(id)!;
        }
    }

    public IReadOnlyList<WithdrawalRecord> Withdrawals(string? owner, string? asset, IReadOnlyCollection<WithdrawalState>? states, int limit)
    {
        lock (_lock)
        {
            var stateList = states is null || states.Count == 0 ? null : string.Join(',', states.Select(s => (int)s));
            using var find = Command($"""
                SELECT * FROM withdrawals WHERE ($o IS NULL OR owner = $o) AND ($a IS NULL OR asset = $a)
                {(stateList is null ? "" : $"AND state IN ({stateList})")} ORDER BY id DESC LIMIT $l
                """, ("$o", owner), ("$a", asset), ("$l", limit));
            return ReadWithdrawals(find);
        }
    }

    /// <summary>Withdrawals of the asset that were refused or failed after their amount was taken, and are not yet refunded.</summary>
    public IReadOnlyList<WithdrawalRecord> RefundsDue(string asset)
    {
        lock (_lock)
        {
            using var find = Command("SELECT * FROM withdrawals WHERE asset = $a AND refund_due = 1 ORDER BY id", ("$a", asset));
            return ReadWithdrawals(find);
        }
    }

    /// <summary>What was asked to be withdrawn since <paramref name="since"/> and not refused or failed: by the owner, or by everyone (owner null).</summary>
    public long WithdrawnSince(string? owner, string asset, long since)
    {
        lock (_lock)
        {
            using var sum = Command("""
                SELECT COALESCE(SUM(amount), 0) FROM withdrawals WHERE ($o IS NULL OR owner = $o) AND asset = $a AND created >= $since
                AND state NOT IN ($failed, $rejected)
                """, ("$o", owner), ("$a", asset), ("$since", since), ("$failed", (int)WithdrawalState.Failed), ("$rejected", (int)WithdrawalState.Rejected));
            return (long)sum.ExecuteScalar()!;
        }
    }

    private static List<WithdrawalRecord> ReadWithdrawals(SqliteCommand command)
    {
        var list = new List<WithdrawalRecord>();
        using var r = command.ExecuteReader();
        while (r.Read())
        {
            list.Add(new WithdrawalRecord(r.GetInt64(0), r.GetString(1), r.GetString(2), r.GetString(3), r.GetString(4), r.GetInt64(5),
                (WithdrawalState)r.GetInt32(6), r.IsDBNull(7) ? null : r.GetString(7), r.IsDBNull(8) ? null : r.GetString(8),
                r.IsDBNull(9) ? null : r.GetString(9), r.IsDBNull(10) ? null : r.GetInt64(10), r.GetInt64(11), r.GetInt64(12),
                r.IsDBNull(13) ? null : r.GetString(13)));
        }
        return list;
    }

    private SqliteCommand Command(string sql, params (string Name, object? Value)[] parameters)
    {
        var command = _db.CreateCommand();
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
            command.Parameters.AddWithValue(name, value ?? DBNull.Value);
        return command;
    }

    public void Dispose()
    {
        lock (_lock)
            _db.Dispose();
    }
}
