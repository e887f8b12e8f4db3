namespace Skymesh.Ledger;

/// <summary>
/// One movement of <see cref="Amount"/> (the asset's smallest units, more than 0) of <see cref="Asset"/> from the
/// account of <see cref="From"/> to the account of <see cref="To"/>. Owners are keys (a node address, an exchange
/// user's key). <see cref="Key"/> names the transfer: a ledger makes at most one transfer under a key, so a caller that
/// does not know whether its transfer was made (a crash, a lost answer) sends the same one again and nothing moves twice.
/// </summary>
public readonly record struct LedgerTransfer(string From, string To, string Asset, long Amount, string Key);

public enum TransferOutcome
{
    /// <summary>The amount moved.</summary>
    Done,

    /// <summary>A transfer under this key was made before: nothing moved now (whatever this one says).</summary>
    AlreadyDone,

    /// <summary>The payer's account cannot cover the amount: nothing moved.</summary>
    InsufficientFunds,

    /// <summary>The ledger refused the transfer as it stands (unknown asset, a bad amount, an owner paying itself): nothing moved.</summary>
    Rejected,
}

/// <summary>What a transfer did; <see cref="Detail"/> says why when it was refused.</summary>
public readonly record struct TransferResult(TransferOutcome Outcome, string? Detail = null)
{
    /// <summary>The transfer is on the ledger: made now or before.</summary>
    public bool Made => Outcome is TransferOutcome.Done or TransferOutcome.AlreadyDone;
}

/// <summary>
/// A ledger of accounts per (owner, asset) that moves amounts between them, each movement exactly once by its
/// idempotency key. This is all that mesh settlement needs of a ledger and all it knows: settlement turns receipts
/// into transfers, and any ledger that implements this — the exchange's account ledger, one across SSMP — can carry
/// them. A transfer is durable when the call that made it returns.
/// </summary>
public interface ITransferLedger
{
    /// <summary>
    /// The decimal places of one whole <paramref name="asset"/> (6 when its smallest unit is a millionth), or null when
    /// the ledger has no such asset.
    /// </summary>
    ValueTask<int?> GetScaleAsync(string asset, CancellationToken cancellationToken = default);

    /// <summary>Makes the transfers in order (each independently: one refused does not stop the rest); one result each.</summary>
    ValueTask<IReadOnlyList<TransferResult>> TransferAsync(IReadOnlyList<LedgerTransfer> transfers, CancellationToken cancellationToken = default);

    /// <summary>What <paramref name="owner"/> can spend of <paramref name="asset"/> (0 for an owner the ledger has not seen).</summary>
    ValueTask<long> GetBalanceAsync(string owner, string asset, CancellationToken cancellationToken = default);
}
