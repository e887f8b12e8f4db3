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
/// an older receipt settled again moves nothing, so receipts may be settled late, twice, or out of order. Today
/// <see cref="EmbeddedLedger"/> (a file on the node); the exchange's account ledger will implement the same interface.
/// </summary>
public interface ILedger
{
    ValueTask<SettlementResult> SettleAsync(Receipt receipt, CancellationToken cancellationToken = default);

    /// <summary>Settles several receipts at once (the embedded ledger: in one transaction, one disk flush), in order.</summary>
    ValueTask<IReadOnlyList<SettlementResult>> SettleAsync(IReadOnlyList<Receipt> receipts, CancellationToken cancellationToken = default);

    /// <summary>What <paramref name="node"/> has received minus what it has paid, in micro-units.</summary>
    ValueTask<long> GetBalanceAsync(NodeAddress node, CancellationToken cancellationToken = default);

    ValueTask<SettledPosition> GetSettledAsync(NodeAddress payer, NodeAddress payee, CancellationToken cancellationToken = default);
}
