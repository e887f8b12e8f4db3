using Skymesh.Identity;

namespace Skymesh.Control.Settlement;

/// <summary>What settling one receipt did.</summary>
public enum SettlementOutcome
{
    /// <summary>The part of the receipt's amount not settled before moved from payer to payee (possibly 0).</summary>
    Settled,

    /// <summary>This receipt or a later one of the pair was settled already: nothing moved.</summary>
    AlreadySettled,

    /// <summary>The signature does not verify: nothing moved.</summary>
    Invalid,

    /// <summary>A later sequence number than the one settled, but a smaller amount (the payer signed both): nothing moved.</summary>
    NonMonotonic,

    /// <summary>The ledger would not move the amount (a ledger with real accounts, when the payer's cannot cover it). The embedded ledger never refuses.</summary>
    Refused,
}

/// <summary>How far a payer → payee pair is settled: the latest receipt settled and its cumulative amount (everything moved so far).</summary>
public readonly record struct SettledPosition(ulong Sequence, long Amount);

/// <summary>The outcome, what moved, and where the pair stands after it.</summary>
public readonly record struct SettlementResult(SettlementOutcome Outcome, long Moved, SettledPosition Position);

/// <summary>
/// Where receipts become transfers (docs/control-plane.md, "Settlement"). Settling a receipt moves, from its payer to its
/// payee, the part of its cumulative amount not settled yet; it is idempotent by (payer, payee, sequence): the same or
/// an older receipt settled again moves nothing, so receipts may be settled late, twice, or out of order. Two
/// implementations: <see cref="EmbeddedLedger"/> (the node's own file, which records who owes whom and never refuses),
/// and <see cref="TransferSettlement"/>, which pays receipts as transfers on any <see cref="Skymesh.Ledger.ITransferLedger"/>
/// with real accounts — the exchange's.
/// </summary>
public interface ILedger : IDisposable
{
    /// <summary>What the ledger is, for people: "embedded ledger.db", "exchange /var/lib/… (SKY)".</summary>
    string Description { get; }

    ValueTask<SettlementResult> SettleAsync(Receipt receipt, CancellationToken cancellationToken = default);

    /// <summary>Settles several receipts at once (the embedded ledger: in one transaction, one disk flush), in order.</summary>
    ValueTask<IReadOnlyList<SettlementResult>> SettleAsync(IReadOnlyList<Receipt> receipts, CancellationToken cancellationToken = default);

    /// <summary>What <paramref name="node"/> has received minus what it has paid, in micro-units.</summary>
    ValueTask<long> GetBalanceAsync(NodeAddress node, CancellationToken cancellationToken = default);

    ValueTask<SettledPosition> GetSettledAsync(NodeAddress payer, NodeAddress payee, CancellationToken cancellationToken = default);

    /// <summary>
    /// <paramref name="node"/>'s balance as last known, without waiting (a ledger across a network answers from what its
    /// last settlement told it), in micro-units.
    /// </summary>
    long BalanceOf(NodeAddress node);

    /// <summary>How far the pair is settled, from memory.</summary>
    SettledPosition SettledOf(NodeAddress payer, NodeAddress payee);

    /// <summary>The latest receipt settled for the pair: what a restarted node gives back to its <see cref="ReceiptBook"/> (payee) or <see cref="ReceiptSigner"/> (payer).</summary>
    Receipt? LatestSettled(NodeAddress payer, NodeAddress payee);

    /// <summary>Every payer with a receipt to <paramref name="payee"/> settled.</summary>
    IReadOnlyList<NodeAddress> PayersOf(NodeAddress payee);
}

/// <summary>The rules every ledger applies to a receipt before anything moves.</summary>
internal static class SettlementRules
{
    /// <summary>What settling <paramref name="receipt"/> does when the pair stands at <paramref name="settled"/>: the outcome, and for <see cref="SettlementOutcome.Settled"/> what moves and the new position.</summary>
    public static SettlementResult Decide(Receipt receipt, bool signatureValid, SettledPosition settled)
    {
        if (!signatureValid)
            return new SettlementResult(SettlementOutcome.Invalid, 0, settled);
        if (receipt.Sequence <= settled.Sequence)
            return new SettlementResult(SettlementOutcome.AlreadySettled, 0, settled);
        if (receipt.Amount < settled.Amount)
            return new SettlementResult(SettlementOutcome.NonMonotonic, 0, settled);
        return new SettlementResult(SettlementOutcome.Settled, receipt.Amount - settled.Amount, new SettledPosition(receipt.Sequence, receipt.Amount));
    }

    /// <summary>Checks every receipt's signature (0.23 ms each), before any lock is taken.</summary>
    public static bool[] Verify(IReadOnlyList<Receipt> receipts)
    {
        var valid = new bool[receipts.Count];
        for (var i = 0; i < receipts.Count; i++)
            valid[i] = (receipts[i] ?? throw new ArgumentException("A receipt is missing.", nameof(receipts))).Verify();
        return valid;
    }
}
