using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Skymesh.Exchange.Chains;

/// <summary>What a <see cref="SimulatedChain"/> simulates and where it keeps its state.</summary>
/// <param name="Asset">"BTC" (regtest bech32 addresses, so nobody mistakes them for real coins) or "SKY" (Skycoin addresses).</param>
public sealed record SimulatedChainOptions(string Asset)
{
    /// <summary>
    /// The file the whole chain is written to after every change (owner-only, replaced atomically) and read from when
    /// it is made again; null keeps it in memory only.
    /// </summary>
    public string? StateFile { get; init; }

    /// <summary>How often <see cref="SimulatedChain.Start"/> mines a block.</summary>
    public TimeSpan BlockInterval { get; init; } = TimeSpan.FromSeconds(10);

    internal void Validate()
    {
        if (Asset is not (BitcoinAddressScheme.AssetCode or SkycoinAddressScheme.AssetCode))
            throw new ArgumentException($"A simulated chain is of BTC or SKY, not '{Asset}'.", nameof(Asset));
        if (BlockInterval <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(BlockInterval), BlockInterval, "The block interval must be positive.");
    }
}

/// <summary>
/// A blockchain of one asset, in the process, for trying the exchange and for tests: blocks (genesis at height 0) mined
/// on a timer or on demand, each holding what the mempool held; payments from the outside world
/// (<see cref="Pay"/>); the exchange's hot wallet, which withdrawals spend; reorganisations, double-spends and a node
/// that goes down. Its <see cref="SimulatedChainAdapter"/> is the exchange's view of it. One lock guards it all, and
/// with <see cref="SimulatedChainOptions.StateFile"/> every change is written before the call returns, so a restarted
/// exchange finds the same chain.
/// </summary>
public sealed partial class SimulatedChain : IDisposable
{
    private const string WithdrawalMagic = "skymesh-simulated-withdrawal";
    private const string PaymentMagic = "skymesh-simulated-payment";

    private readonly Lock _gate = new();
    private readonly SimulatedChainOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly List<Block> _blocks = [];
    private readonly Dictionary<string, Tx> _txs = new(StringComparer.Ordinal);
    // In the order the next block takes them.
    private readonly List<string> _mempool = [];
    // Every deposit address an adapter issued, with its index: what scans report and what the hot wallet holds.
    private readonly Dictionary<string, long> _issued = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _broadcasts = new(StringComparer.Ordinal);
    // Blocks ever made (orphans too): in every block's hash, so a replacement block never has its orphan's hash.
    private long _serial;
    // Payments and withdrawals ever made: in every txid, so two alike are still two.
    private long _nonce;
    private ITimer? _timer;
    private bool _down;
    private bool _disposed;

    public SimulatedChain(SimulatedChainOptions options, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        options.Validate();
        _options = options;
        _timeProvider = timeProvider;
        if (options.StateFile is { } path && File.Exists(path))
            Load(path);
        else
        {
            _blocks.Add(new Block(Hash($"skymesh-simulated-chain\n{options.Asset}\ngenesis"), _serial++, []));
            Save();
        }
    }

    public string Asset => _options.Asset;

    /// <summary>Decimal places of <see cref="Asset"/>.</summary>
    public int Scale => Asset == BitcoinAddressScheme.AssetCode ? BitcoinAddressScheme.AssetScale : SkycoinAddressScheme.AssetScale;

    /// <summary>The tip's height (0: only the genesis block).</summary>
    public long Height
    {
        get
        {
            lock (_gate)
                return _blocks.Count - 1;
        }
    }

    public string TipHash
    {
        get
        {
            lock (_gate)
                return _blocks[^1].Hash;
        }
    }

    /// <summary>
    /// While true the node is down: every call of an adapter that reaches the chain throws
    /// <see cref="ChainUnavailableException"/>, and the timer mines nothing. The world goes on: <see cref="Pay"/> and
    /// <see cref="MineBlocks"/> still work. Not kept in the state file.
    /// </summary>
    public bool Down
    {
        get
        {
            lock (_gate)
                return _down;
        }
        set
        {
            lock (_gate)
                _down = value;
        }
    }

    /// <summary>
    /// What the exchange can withdraw: every confirmed output paying an issued deposit address, less every withdrawal
    /// broadcast (in the mempool or a block). A double-spent deposit dropped by a reorganisation no longer counts.
    /// </summary>
    public long HotWallet
    {
        get
        {
            lock (_gate)
                return HotWalletLocked();
        }
    }

    /// <summary>Mines a block every <see cref="SimulatedChainOptions.BlockInterval"/> (on the time provider) until <see cref="Stop"/>.</summary>
    public void Start()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _timer ??= _timeProvider.CreateTimer(_ => OnTimer(), null, _options.BlockInterval, _options.BlockInterval);
        }
    }

    public void Stop()
    {
        lock (_gate)
        {
            _timer?.Dispose();
            _timer = null;
        }
    }

    /// <summary>Mines <paramref name="count"/> blocks now; the first takes everything in the mempool.</summary>
    public void MineBlocks(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            MineLocked(count);
            Save();
        }
    }

    /// <summary>
    /// A payment from the outside world (a person's wallet) of <paramref name="amount"/> to any valid address: a
    /// transaction with one output (index 0), in the mempool until the next block. Returns its txid.
    /// </summary>
    public string Pay(string address, long amount)
    {
        if (!IsValidAddress(address))
            throw new ArgumentException($"'{address}' is not a {Asset} address of this chain.", nameof(address));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(amount);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var id = Hash($"{PaymentMagic}\n{Asset}\n{address}\n{amount.ToString(CultureInfo.InvariantCulture)}\n{(_nonce++).ToString(CultureInfo.InvariantCulture)}");
            _txs.Add(id, new Tx(id, TxKind.Payment, address, amount));
            _mempool.Add(id);
            Save();
            return id;
        }
    }

    /// <summary>
    /// Replaces the last <paramref name="depth"/> blocks with <paramref name="depth"/> + 1 new ones. The transactions of
    /// the replaced blocks go into the first new block (with what the mempool held), except those in
    /// <paramref name="drop"/>: double-spent, they vanish entirely (from the mempool too), as if never made.
    /// </summary>
    public void Reorganise(int depth, IReadOnlyCollection<string>? drop = null)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (depth < 1 || depth > _blocks.Count - 1)
                throw new ArgumentOutOfRangeException(nameof(depth), depth, $"A reorganisation replaces 1 to {_blocks.Count - 1} blocks (never the genesis block).");
            var fork = _blocks.Count - depth;
            var dropped = new HashSet<string>(drop ?? [], StringComparer.Ordinal);
            foreach (var id in dropped)
            {
                if (!_txs.TryGetValue(id, out var tx))
                    throw new ArgumentException($"The chain has no transaction {id} to drop.", nameof(drop));
                if (tx.Height < fork)
                    throw new ArgumentException($"Transaction {id} is at height {tx.Height}, below the blocks replaced.", nameof(drop));
            }
            var orphaned = new List<string>();
            for (var height = fork; height < _blocks.Count; height++)
                orphaned.AddRange(_blocks[height].TxIds);
            _blocks.RemoveRange(fork, depth);
            var mempool = orphaned.Concat(_mempool).Where(id => !dropped.Contains(id)).ToList();
            foreach (var id in dropped)
                _txs.Remove(id);
            foreach (var id in mempool)
                _txs[id].Height = null;
            _mempool.Clear();
            _mempool.AddRange(mempool);
            MineLocked(depth + 1);
            Save();
        }
    }

    /// <summary>How many times an adapter's BroadcastAsync brought this transaction to the chain (answered true, false or refused).</summary>
    public int BroadcastCount(string txId)
    {
        lock (_gate)
            return _broadcasts.GetValueOrDefault(txId);
    }

    /// <summary>Whether <paramref name="address"/> is an address of this chain's kind (regtest for BTC, Skycoin for SKY).</summary>
    public bool IsValidAddress(string address) => Asset == BitcoinAddressScheme.AssetCode
        ? BitcoinAddressScheme.IsValid(address, NBitcoin.Network.RegTest)
        : SkycoinAddress.IsValid(address);

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
            _timer?.Dispose();
            _timer = null;
        }
    }

    /// <summary>Remembers a deposit address an adapter issued (kept in the state file).</summary>
    internal void Watch(string address, long index)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_issued.TryAdd(address, index))
                Save();
        }
    }

    internal ChainScan Scan(long fromHeight)
    {
        lock (_gate)
        {
            ThrowIfUnavailable();
            var outputs = new List<ChainOutput>();
            for (var height = (int)Math.Clamp(fromHeight, 0, _blocks.Count); height < _blocks.Count; height++)
            {
                foreach (var id in _blocks[height].TxIds)
                    AddIfIssued(outputs, _txs[id]);
            }
            foreach (var id in _mempool)
                AddIfIssued(outputs, _txs[id]);
            return new ChainScan(_blocks.Count - 1, _blocks[^1].Hash, outputs);
        }
    }

    internal ChainTransaction BuildWithdrawal(string address, long amount)
    {
        lock (_gate)
        {
            ThrowIfUnavailable();
            if (!IsValidAddress(address))
                throw new ChainRejectedException($"'{address}' is not a {Asset} address of this chain.");
            if (amount <= 0)
                throw new ChainRejectedException($"A withdrawal pays a positive amount, not {amount}.");
            // The nonce is kept in the state file: after a restart a new withdrawal never repeats an earlier txid.
            var raw = Encoding.UTF8.GetBytes($"{WithdrawalMagic}\n{Asset}\n{address}\n{amount.ToString(CultureInfo.InvariantCulture)}\n{(_nonce++).ToString(CultureInfo.InvariantCulture)}");
            Save();
            return new ChainTransaction(Convert.ToHexStringLower(SHA256.HashData(raw)), Convert.ToHexStringLower(raw));
        }
    }

    internal bool Broadcast(ChainTransaction transaction)
    {
        lock (_gate)
        {
            ThrowIfUnavailable();
            _broadcasts[transaction.TxId] = _broadcasts.GetValueOrDefault(transaction.TxId) + 1;
            try
            {
                var (address, amount) = ParseWithdrawal(transaction);
                if (_txs.ContainsKey(transaction.TxId))
                    return false;
                var funds = HotWalletLocked();
                if (amount > funds)
                    throw new ChainRejectedException($"The hot wallet holds {funds}, less than the {amount} withdrawn.");
                _txs.Add(transaction.TxId, new Tx(transaction.TxId, TxKind.Withdrawal, address, amount));
                _mempool.Add(transaction.TxId);
                return true;
            }
            finally
            {
                Save();
            }
        }
    }

    internal long? Confirmations(string txId)
    {
        lock (_gate)
        {
            ThrowIfUnavailable();
            if (!_txs.TryGetValue(txId, out var tx))
                return null;
            return tx.Height is { } height ? _blocks.Count - height : 0;
        }
    }

    private (string Address, long Amount) ParseWithdrawal(ChainTransaction transaction)
    {
        byte[] raw;
        try
        {
            raw = Convert.FromHexString(transaction.Raw);
        }
        catch (FormatException)
        {
            throw new ChainRejectedException("The transaction is not hex.");
        }
        if (!string.Equals(Convert.ToHexStringLower(SHA256.HashData(raw)), transaction.TxId, StringComparison.OrdinalIgnoreCase))
            throw new ChainRejectedException("The transaction's id is not the hash of its bytes.");
        var fields = Encoding.UTF8.GetString(raw).Split('\n');
        if (fields.Length != 5 || fields[0] != WithdrawalMagic || fields[1] != Asset || !IsValidAddress(fields[2])
            || !long.TryParse(fields[3], NumberStyles.None, CultureInfo.InvariantCulture, out var amount) || amount <= 0)
            throw new ChainRejectedException($"The transaction is not a {Asset} withdrawal of this chain.");
        return (fields[2], amount);
    }

    private void AddIfIssued(List<ChainOutput> outputs, Tx tx)
    {
        if (_issued.ContainsKey(tx.Address))
            outputs.Add(new ChainOutput(tx.Id, 0, tx.Address, tx.Amount, tx.Height));
    }

    private long HotWalletLocked()
    {
        long funds = 0;
        foreach (var tx in _txs.Values)
        {
            if (tx.Kind == TxKind.Withdrawal)
                funds -= tx.Amount;
            if (tx.Height is not null && _issued.ContainsKey(tx.Address))
                funds += tx.Amount;
        }
        return funds;
    }

    private void MineLocked(int count)
    {
        for (var i = 0; i < count; i++)
        {
            var height = _blocks.Count;
            var ids = _mempool.ToList();
            _mempool.Clear();
            var hash = Hash($"{_blocks[^1].Hash}\n{height.ToString(CultureInfo.InvariantCulture)}\n{_serial.ToString(CultureInfo.InvariantCulture)}\n{string.Join('\n', ids)}");
            _blocks.Add(new Block(hash, _serial++, ids));
            foreach (var id in ids)
                _txs[id].Height = height;
        }
    }

    private void OnTimer()
    {
        lock (_gate)
        {
            if (_disposed || _down)
                return;
            MineLocked(1);
            try
            {
                Save();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Nobody to tell on a timer: the block stands in memory, and the next change writes the whole state again.
            }
        }
    }

    private void ThrowIfUnavailable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_down)
            throw new ChainUnavailableException($"The simulated {Asset} node is down.");
    }

    private static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    private enum TxKind
    {
        Payment,
        Withdrawal,
    }

    private sealed class Tx(string id, TxKind kind, string address, long amount)
    {
        public string Id { get; } = id;
        public TxKind Kind { get; } = kind;
        public string Address { get; } = address;
        public long Amount { get; } = amount;

        /// <summary>The block's height, or null in the mempool.</summary>
        public long? Height { get; set; }
    }

    private sealed record Block(string Hash, long Serial, List<string> TxIds);
}
