namespace Skymesh.Exchange.Chains;

/// <summary>The chain (its node) cannot be reached or failed; the caller retries later. Never means "refused".</summary>
public sealed class ChainUnavailableException : Exception
{
    public ChainUnavailableException()
    {
    }

    public ChainUnavailableException(string message) : base(message)
    {
    }

    public ChainUnavailableException(string message, Exception innerException) : base(message, innerException)
    {
    }
}

/// <summary>
/// The chain refused a transaction (bad address, the hot wallet lacks the funds, ...); retrying the same transaction
/// will not help.
/// </summary>
public sealed class ChainRejectedException : Exception
{
    public ChainRejectedException()
    {
    }

    public ChainRejectedException(string message) : base(message)
    {
    }

    public ChainRejectedException(string message, Exception innerException) : base(message, innerException)
    {
    }
}

/// <summary>An output paying one of the exchange's deposit addresses. <paramref name="Height"/> null: in the mempool (unconfirmed).</summary>
public sealed record ChainOutput(string TxId, int Index, string Address, long Amount, long? Height);

/// <summary>
/// The chain's tip and every output paying any address the adapter issued, in blocks at or above the height scanned
/// from and in the mempool.
/// </summary>
public sealed record ChainScan(long TipHeight, string TipHash, IReadOnlyList<ChainOutput> Outputs);

/// <summary>
/// A signed withdrawal transaction, ready to broadcast; <paramref name="Raw"/> is its serialized bytes in hex.
/// Broadcasting the same transaction again can never pay twice (same txid).
/// </summary>
public sealed record ChainTransaction(string TxId, string Raw);

/// <summary>
/// One coin's chain as the exchange sees it: deposit addresses derived from the exchange's seed, scans for what paid
/// them, and withdrawals from the hot wallet. Every asynchronous method throws <see cref="ChainUnavailableException"/>
/// while the chain cannot be reached.
/// </summary>
public interface IChainAdapter : IDisposable
{
    /// <summary>"BTC" or "SKY".</summary>
    string Asset { get; }

    /// <summary>Decimal places of the asset: amounts are whole numbers of its smallest unit (8 for BTC, 6 for SKY).</summary>
    int Scale { get; }

    /// <summary>The chain's network: "main", "test", "regtest", "signet" or "simulated".</summary>
    string Network { get; }

    /// <summary>
    /// The deposit address number <paramref name="index"/> (0, 1, 2, ...): deterministic from the adapter's seed, so
    /// the same index always gives the same address, across restarts. Issuing it makes the adapter watch it
    /// (<see cref="ScanAsync"/> reports outputs to it).
    /// </summary>
    string DepositAddress(long index);

    /// <summary>Whether this chain accepts <paramref name="address"/> as a withdrawal destination.</summary>
    bool IsValidAddress(string address);

    /// <summary>The tip and every output paying an issued address in blocks at or above <paramref name="fromHeight"/> and in the mempool.</summary>
    Task<ChainScan> ScanAsync(long fromHeight, CancellationToken cancellationToken);

    /// <summary>
    /// Builds and signs a withdrawal paying <paramref name="amount"/> to <paramref name="address"/> from the exchange's
    /// hot wallet. Throws <see cref="ChainRejectedException"/> when the chain would refuse it.
    /// </summary>
    Task<ChainTransaction> BuildWithdrawalAsync(string address, long amount, CancellationToken cancellationToken);

    /// <summary>
    /// True: accepted now; false: the chain already had this transaction (in the mempool or a block), nothing new
    /// happened. Throws <see cref="ChainRejectedException"/> when refused.
    /// </summary>
    Task<bool> BroadcastAsync(ChainTransaction transaction, CancellationToken cancellationToken);

    /// <summary>
    /// Null: the chain knows no such transaction (neither mempool nor block: never broadcast, or dropped by a
    /// reorganisation and not included again); 0: in the mempool; k &gt;= 1: confirmations.
    /// </summary>
    Task<long?> GetConfirmationsAsync(string txId, CancellationToken cancellationToken);
}
