namespace Skymesh.Exchange.Chains;

/// <summary>
/// The exchange's view of a <see cref="SimulatedChain"/>: deposit addresses from an <see cref="IAddressScheme"/>,
/// remembered by the chain as they are issued. Disposing the adapter leaves the chain running.
/// </summary>
public sealed class SimulatedChainAdapter : IChainAdapter
{
    private readonly IAddressScheme _scheme;
    private volatile bool _disposed;

    public SimulatedChainAdapter(SimulatedChain chain, IAddressScheme scheme)
    {
        ArgumentNullException.ThrowIfNull(chain);
        ArgumentNullException.ThrowIfNull(scheme);
        if (scheme.Asset != chain.Asset)
            throw new ArgumentException($"A {scheme.Asset} address scheme does not fit a {chain.Asset} chain.", nameof(scheme));
        Chain = chain;
        _scheme = scheme;
    }

    /// <summary>
    /// The adapter of <paramref name="chain"/> with the deposit addresses of <paramref name="seed"/>: BIP84 on regtest
    /// for BTC, Skycoin addresses for SKY (<see cref="SchemeFor"/>).
    /// </summary>
    public static SimulatedChainAdapter Create(SimulatedChain chain, byte[] seed)
    {
        ArgumentNullException.ThrowIfNull(chain);
        return new SimulatedChainAdapter(chain, SchemeFor(chain.Asset, seed));
    }

    /// <summary>The address scheme of a simulated chain of <paramref name="asset"/>.</summary>
    public static IAddressScheme SchemeFor(string asset, ReadOnlySpan<byte> seed) => asset switch
    {
        BitcoinAddressScheme.AssetCode => new BitcoinAddressScheme(seed, NBitcoin.Network.RegTest),
        SkycoinAddressScheme.AssetCode => new SkycoinAddressScheme(seed),
        _ => throw new ArgumentException($"No simulated chain of '{asset}': BTC or SKY.", nameof(asset)),
    };

    public SimulatedChain Chain { get; }

    public string Asset => Chain.Asset;

    public int Scale => _scheme.Scale;

    public string Network => "simulated";

    /// <summary>Derives the address and has the chain watch it; works while the node is down (nothing is asked of it).</summary>
    public string DepositAddress(long index)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var address = _scheme.DepositAddress(index);
        Chain.Watch(address, index);
        return address;
    }

    public bool IsValidAddress(string address) => _scheme.IsValidAddress(address);

    public Task<ChainScan> ScanAsync(long fromHeight, CancellationToken cancellationToken)
    {
        Enter(cancellationToken);
        return Task.FromResult(Chain.Scan(fromHeight));
    }

    public Task<ChainTransaction> BuildWithdrawalAsync(string address, long amount, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(address);
        Enter(cancellationToken);
        return Task.FromResult(Chain.BuildWithdrawal(address, amount));
    }

    public Task<bool> BroadcastAsync(ChainTransaction transaction, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        Enter(cancellationToken);
        return Task.FromResult(Chain.Broadcast(transaction));
    }

    public Task<long?> GetConfirmationsAsync(string txId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(txId);
        Enter(cancellationToken);
        return Task.FromResult(Chain.Confirmations(txId));
    }

    public void Dispose() => _disposed = true;

    private void Enter(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        cancellationToken.ThrowIfCancellationRequested();
    }
}
