using System.Globalization;
using Microsoft.Data.Sqlite;
using Skymesh.Identity;
using Skymesh.Ledger;

namespace Skymesh.Control.Settlement;

/// <summary>
/// Settles receipts as transfers on a ledger with real accounts (docs/control-plane.md, "Settling on the exchange"): the
/// part of a receipt not settled yet moves from the payer's account to the payee's — accounts named by node addresses,
/// in one asset — under the idempotency key <c>skymesh-settlement/PAYER/PAYEE/SEQUENCE</c>. The ledger knows nothing of
/// receipts; this class keeps, per pair, the latest receipt paid (the signed proof) in a small SQLite file.
/// <para>
/// Exactly once, across crashes and lost answers: before a transfer is asked for, it is written down as pending (with
/// its amount); only when the ledger says it is made (now or before) does the pair's position move on and the pending
/// row go. A pending transfer is asked for again, under the same key and amount, before anything else of the pair — at
/// open and at the start of every settlement — so a transfer the ledger made but whose answer was lost is found made,
/// and one it never got is made once. A transfer the ledger refuses (the payer cannot pay) leaves the position where it
/// was: the next receipt tries again for everything owed, and the credit policy's settlement limit throttles a payer
/// that cannot pay.
/// </para>
/// Receipts count micro-units; an asset with <c>s</c> decimal places (s ≥ 6) gets 10^(s−6) of its units per micro-unit.
/// </summary>
public sealed class TransferSettlement : ILedger
{
    private sealed record Pending(Receipt Receipt, long Moved);

    private readonly ITransferLedger _ledger;
    private readonly bool _ownsLedger;
    private readonly string _asset;
    private readonly long _unitsPerMicro;
    private readonly NodeAddress? _owner;
    private readonly SqliteConnection? _connection;
    private readonly SettledPositions _positions = new();
    private readonly Dictionary<(NodeAddress Payer, NodeAddress Payee), Pending> _pending = [];
    private readonly Dictionary<NodeAddress, long> _balances = [];
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _gate = new(1, 1);
    private bool _disposed;

    private TransferSettlement(ITransferLedger ledger, bool ownsLedger, string asset, long unitsPerMicro, NodeAddress? owner, SqliteConnection? connection, string description)
    {
        _ledger = ledger;
        _ownsLedger = ownsLedger;
        _asset = asset;
        _unitsPerMicro = unitsPerMicro;
        _owner = owner;
        _connection = connection;
        Description = description;
    }

    public string Description { get; }

    /// <summary>The asset receipts are paid in.</summary>
    public string Asset => _asset;

    /// <summary>Transfers written down and not yet known to be made or refused (a lost answer, a ledger away).</summary>
    public int PendingTransfers
    {
        get
        {
            lock (_lock)
                return _pending.Count;
        }
    }

    /// <summary>
    /// Opens the settlement of receipts on <paramref name="ledger"/> in <paramref name="asset"/>, its positions kept in the
    /// SQLite file <paramref name="positionsPath"/> (null: in memory, nothing survives), and asks again for any transfer
    /// left pending by the last run.
    /// </summary>
    /// <param name="owner">The node that settles here: its balance is read at once, so it is known before the first settlement.</param>
    /// <param name="ownsLedger">Dispose <paramref name="ledger"/> with this (when it was opened for it).</param>
    /// <exception cref="ArgumentException">The ledger has no such asset, or one with fewer than 6 decimal places.</exception>
    public static async Task<TransferSettlement> OpenAsync(ITransferLedger ledger, string asset, string? positionsPath, NodeAddress? owner = null,
        bool ownsLedger = false, string? description = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ledger);
        ArgumentException.ThrowIfNullOrEmpty(asset);
        var scale = await ledger.GetScaleAsync(asset, cancellationToken) ?? throw new ArgumentException($"the ledger has no asset {asset}", nameof(asset));
        if (scale is < 6 or > 18)
            throw new ArgumentException($"{asset} has {scale} decimal places; receipts count millionths of a coin, so it needs 6 to 18", nameof(asset));
        var connection = positionsPath is null ? null : OpenFile(positionsPath);
        var settlement = new TransferSettlement(ledger, ownsLedger, asset, (long)Math.Pow(10, scale - 6), owner, connection,
            description ?? $"transfers in {asset}");
        try
        {
            if (connection is not null)
                settlement.Load();
            await settlement.SettlePendingAsync(cancellationToken);
            await settlement.RefreshBalancesAsync([], cancellationToken);
            return settlement;
        }
        catch
        {
            settlement.Dispose(disposeLedger: false);
            throw;
        }
    }

    /// <summary>The transfer key of a receipt: one per (payer, payee, sequence).</summary>
    public static string KeyOf(Receipt receipt)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        return string.Create(CultureInfo.InvariantCulture, $"skymesh-settlement/{receipt.Payer}/{receipt.Payee}/{receipt.Sequence}");
    }

    public async ValueTask<SettlementResult> SettleAsync(Receipt receipt, CancellationToken cancellationToken = default) =>
        (await SettleAsync([receipt], cancellationToken))[0];

    public async ValueTask<IReadOnlyList<SettlementResult>> SettleAsync(IReadOnlyList<Receipt> receipts, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(receipts);
        var valid = SettlementRules.Verify(receipts);
        var results = new SettlementResult[receipts.Count];
        await _gate.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            await SettlePendingAsync(cancellationToken);
            // A pair's transfer is computed from where the one before it left the pair, so each round holds a pair once.
            var remaining = Enumerable.Range(0, receipts.Count).ToList();
            while (remaining.Count > 0)
            {
                var round = new List<int>();
                var later = new List<int>();
                var pairs = new HashSet<(NodeAddress, NodeAddress)>();
                foreach (var i in remaining)
                    (pairs.Add((receipts[i].Payer, receipts[i].Payee)) ? round : later).Add(i);
                await SettleRoundAsync(receipts, valid, round, results, cancellationToken);
                remaining = later;
            }
        }
        finally
        {
            _gate.Release();
        }
        await RefreshBalancesAsync(receipts, cancellationToken);
        return results;
    }

    private async Task SettleRoundAsync(IReadOnlyList<Receipt> receipts, bool[] valid, List<int> round, SettlementResult[] results, CancellationToken cancellationToken)
    {
        var moves = new List<(int Index, Pending Pending)>();
        var advanced = new List<Receipt>();
        foreach (var i in round)
        {
            var receipt = receipts[i];
            results[i] = SettlementRules.Decide(receipt, valid[i], SettledOf(receipt.Payer, receipt.Payee));
            if (results[i].Outcome != SettlementOutcome.Settled)
                continue;
            if (results[i].Moved == 0)
                advanced.Add(receipt); // a later receipt for no more money: nothing to transfer
            else
                moves.Add((i, new Pending(receipt, results[i].Moved)));
        }
        if (moves.Count == 0)
        {
            Finish(advanced, []);
            return;
        }
        Begin([.. moves.Select(m => m.Pending)]);
        var answers = await AskAsync([.. moves.Select(m => m.Pending)], cancellationToken);
        for (var k = 0; k < moves.Count; k++)
        {
            var (i, pending) = moves[k];
            if (answers[k].Made)
                advanced.Add(pending.Receipt);
            else
                results[i] = new SettlementResult(SettlementOutcome.Refused, 0, SettledOf(pending.Receipt.Payer, pending.Receipt.Payee));
        }
        Finish(advanced, [.. moves.Select(m => m.Pending.Receipt)]);
    }

    /// <summary>Asks again for every transfer left pending, each under its own key and amount; afterwards none is.</summary>
    private async Task SettlePendingAsync(CancellationToken cancellationToken)
    {
        List<Pending> pending;
        lock (_lock)
            pending = [.. _pending.Values];
        if (pending.Count == 0)
            return;
        var answers = await AskAsync(pending, cancellationToken);
        Finish([.. pending.Where((_, k) => answers[k].Made).Select(p => p.Receipt)], [.. pending.Select(p => p.Receipt)]);
    }

    /// <summary>Asks the ledger for the transfers of <paramref name="pending"/>; one answer each, in order.</summary>
    private async Task<IReadOnlyList<TransferResult>> AskAsync(IReadOnlyList<Pending> pending, CancellationToken cancellationToken)
    {
        var answers = await _ledger.TransferAsync([.. pending.Select(ToTransfer)], cancellationToken);
        return answers.Count == pending.Count ? answers
            : throw new InvalidOperationException($"the ledger answered {answers.Count} of {pending.Count} transfers");
    }

    private LedgerTransfer ToTransfer(Pending pending) =>
        new(pending.Receipt.Payer.ToString(), pending.Receipt.Payee.ToString(), _asset, checked(pending.Moved * _unitsPerMicro), KeyOf(pending.Receipt));

    /// <summary>Writes the transfers down as pending (durably) before the ledger is asked for them.</summary>
    private void Begin(IReadOnlyList<Pending> moves)
    {
        lock (_lock)
        {
            if (_connection is not null)
            {
                using var transaction = _connection.BeginTransaction();
                using var insert = _connection.CreateCommand();
                insert.Transaction = transaction;
                insert.CommandText = "INSERT OR REPLACE INTO pending (payer, payee, receipt, moved) VALUES ($payer, $payee, $receipt, $moved)";
                var (payer, payee, receipt, moved) = (insert.Parameters.Add("$payer", SqliteType.Blob), insert.Parameters.Add("$payee", SqliteType.Blob),
                    insert.Parameters.Add("$receipt", SqliteType.Blob), insert.Parameters.Add("$moved", SqliteType.Integer));
                foreach (var move in moves)
                {
                    payer.Value = move.Receipt.Payer.ToBytes();
                    payee.Value = move.Receipt.Payee.ToBytes();
                    receipt.Value = move.Receipt.Bytes;
                    moved.Value = move.Moved;
                    insert.ExecuteNonQuery();
                }
                transaction.Commit();
            }
            foreach (var move in moves)
                _pending[(move.Receipt.Payer, move.Receipt.Payee)] = move;
        }
    }

    /// <summary>Moves the pairs of <paramref name="made"/> on to those receipts and clears the pending rows of <paramref name="settled"/>, in one transaction.</summary>
    private void Finish(IReadOnlyList<Receipt> made, IReadOnlyList<Receipt> settled)
    {
        if (made.Count == 0 && settled.Count == 0)
            return;
        lock (_lock)
        {
            if (_connection is not null)
            {
                using var transaction = _connection.BeginTransaction();
                SettledPositions.Write(transaction, made);
                using (var delete = _connection.CreateCommand())
                {
                    delete.Transaction = transaction;
                    delete.CommandText = "DELETE FROM pending WHERE payer = $payer AND payee = $payee";
                    var (payer, payee) = (delete.Parameters.Add("$payer", SqliteType.Blob), delete.Parameters.Add("$payee", SqliteType.Blob));
                    foreach (var r in settled)
                    {
                        payer.Value = r.Payer.ToBytes();
                        payee.Value = r.Payee.ToBytes();
                        delete.ExecuteNonQuery();
                    }
                }
                transaction.Commit();
            }
            _positions.Set(made);
            foreach (var r in settled)
                _pending.Remove((r.Payer, r.Payee));
        }
    }

    /// <summary>Reads the balances of the owner and of every node the receipts name, for <see cref="BalanceOf"/>.</summary>
    private async Task RefreshBalancesAsync(IReadOnlyList<Receipt> receipts, CancellationToken cancellationToken)
    {
        var nodes = receipts.SelectMany(r => new[] { r.Payer, r.Payee }).ToHashSet();
        if (_owner is { } owner)
            nodes.Add(owner);
        foreach (var node in nodes)
        {
            var balance = await GetBalanceAsync(node, cancellationToken);
            lock (_lock)
                _balances[node] = balance;
        }
    }

    public async ValueTask<long> GetBalanceAsync(NodeAddress node, CancellationToken cancellationToken = default) =>
        await _ledger.GetBalanceAsync(node.ToString(), _asset, cancellationToken) / _unitsPerMicro;

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

    public void Dispose() => Dispose(_ownsLedger);

    private void Dispose(bool disposeLedger)
    {
        lock (_lock)
        {
            if (_disposed)
                return;
            _disposed = true;
            _connection?.Dispose();
        }
        if (disposeLedger && _ledger is IDisposable disposable)
            disposable.Dispose();
    }

    private static SqliteConnection OpenFile(string path) => SettledPositions.OpenFile(path, """
        CREATE TABLE IF NOT EXISTS pending (
            payer BLOB NOT NULL,
            payee BLOB NOT NULL,
            receipt BLOB NOT NULL,
            moved INTEGER NOT NULL,
            PRIMARY KEY (payer, payee)) WITHOUT ROWID;
        """);

    private void Load()
    {
        using var command = _connection!.CreateCommand();
        command.CommandText = "SELECT receipt, NULL FROM positions UNION ALL SELECT receipt, moved FROM pending";
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            if (Receipt.TryParse((byte[])reader[0], out var receipt) != ReceiptError.None)
                throw new InvalidDataException("The settlement file holds a receipt that does not parse.");
            if (reader.IsDBNull(1))
                _positions.Set([receipt!]);
            else
                _pending[(receipt!.Payer, receipt.Payee)] = new Pending(receipt, reader.GetInt64(1));
        }
    }
}
