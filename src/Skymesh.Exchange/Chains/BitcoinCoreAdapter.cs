using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using NBitcoin;

namespace Skymesh.Exchange.Chains;

/// <summary>How to reach a Bitcoin Core node and its wallet, and the seed of the exchange's BTC keys.</summary>
/// <param name="Url">The node's RPC address, e.g. http://127.0.0.1:8332/.</param>
/// <param name="User">With <paramref name="Password"/>: RPC credentials (rpcuser/rpcpassword or rpcauth).</param>
/// <param name="CookieFile">Instead of a user and password: bitcoind's <c>.cookie</c> file, read for every call.</param>
/// <param name="Wallet">The descriptor wallet the deposit keys are imported into (its URL is <c>/wallet/NAME</c>); empty for the node's default wallet.</param>
/// <param name="Network">"main", "test", "regtest" or "signet".</param>
/// <param name="Seed">16 to 64 bytes: the BIP32 seed of every deposit key. Never logged.</param>
public sealed record BitcoinCoreOptions(Uri Url, string? User, string? Password, string? CookieFile, string Wallet, string Network, byte[] Seed)
{
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Url);
        if (!Url.IsAbsoluteUri || Url.Scheme is not ("http" or "https"))
            throw new ArgumentException($"Bitcoin Core's RPC URL must be an absolute http(s) URL, not '{Url}'.", nameof(Url));
        if (CookieFile is null && (string.IsNullOrEmpty(User) || Password is null))
            throw new ArgumentException("Bitcoin Core needs a user and password or a cookie file.", nameof(User));
        ArgumentNullException.ThrowIfNull(Wallet);
        _ = BitcoinAddressScheme.NetworkFromName(Network);
        ArgumentNullException.ThrowIfNull(Seed);
        ChainSeed.Check(Seed);
    }

    // The record's own ToString would print the password; the seed it would only name.
    public override string ToString() =>
        $"BitcoinCoreOptions {{ Url = {Url}, User = {User}, Password = {(Password is null ? "" : "(hidden)")}, CookieFile = {CookieFile}, Wallet = {Wallet}, Network = {Network} }}";
}

/// <summary>
/// BTC on a Bitcoin Core node, through its JSON-RPC and a descriptor wallet. Tested only against a recorded-response
/// fake (responses shaped as Bitcoin Core 27 documents them), not against a live bitcoind.
/// <para>
/// Before its first scan or withdrawal it imports the deposit descriptor <c>wpkh(xprv/84h/coinh/0h/0/*)</c> (private,
/// so the wallet both watches the deposit addresses and signs withdrawals from them) with a range reaching well past
/// the highest index issued, and imports it again with a larger range as more are issued; it first asks the wallet
/// (<c>listdescriptors</c>) what range it already holds, so a restart neither shrinks the range nor imports again for
/// nothing. Scans report receipts to any address of the imported range. Withdrawals are funded by the wallet (fee on
/// top, change to the wallet's own change descriptor), signed and finalised by it, then broadcast with
/// <c>sendrawtransaction</c>.
/// </para>
/// </summary>
public sealed class BitcoinCoreAdapter : IChainAdapter
{
    // Keep at least this many addresses imported beyond the highest issued, so a payment to a fresh address is seen
    // even if it reaches a block before the next import; ranges grow in whole chunks.
    private const long MinimumAhead = 500;
    private const long Chunk = 1_000;
    private const long SatoshisPerBitcoin = 100_000_000;
    // BIP32 numbers unhardened children below 2^31.
    private const long IndexLimit = 1L << 31;

    private readonly BitcoinCoreOptions _options;
    private readonly BitcoinAddressScheme _scheme;
    private readonly BitcoinRpcClient _rpc;
    private readonly string _privateDescriptor;
    private readonly string _xprv;
    private readonly string _publicMarker;
    private readonly SemaphoreSlim _importGate = new(1, 1);
    private readonly Lock _gate = new();
    private readonly Dictionary<string, long> _watched = new(StringComparer.Ordinal);
    private long _issuedEnd;
    // The end (exclusive) of the range the wallet holds; -1 until listdescriptors said.
    private long _importedEnd = -1;
    // Addresses below this index are in _watched.
    private long _derivedEnd;
    private bool _disposed;

    public BitcoinCoreAdapter(BitcoinCoreOptions options, HttpMessageHandler? handler = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _scheme = new BitcoinAddressScheme(options.Seed, BitcoinAddressScheme.NetworkFromName(options.Network));
        _xprv = _scheme.Master.ToString(_scheme.Network);
        _privateDescriptor = DescriptorChecksum.Append($"wpkh({_xprv}/84h/{_scheme.CoinType}h/0h/0/*)");
        // How the wallet shows the descriptor without its secret: the account's xpub, then the receiving chain.
        _publicMarker = $"]{_scheme.Account.ToString(_scheme.Network)}/0/*)";
        _rpc = new BitcoinRpcClient(options.Url, options.Wallet, options.User, options.Password, options.CookieFile, handler);
    }

    public string Asset => BitcoinAddressScheme.AssetCode;

    public int Scale => BitcoinAddressScheme.AssetScale;

    public string Network => _options.Network;

    public string DepositAddress(long index)
    {
        var address = _scheme.DepositAddress(index);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _watched[address] = index;
            _issuedEnd = Math.Max(_issuedEnd, index + 1);
        }
        return address;
    }

    public bool IsValidAddress(string address) => _scheme.IsValidAddress(address);

    public async Task<ChainScan> ScanAsync(long fromHeight, CancellationToken cancellationToken)
    {
        await EnsureImportedAsync(cancellationToken).ConfigureAwait(false);
        var info = await CallAsync("getblockchaininfo", [], cancellationToken).ConfigureAwait(false);
        var tip = info.GetProperty("blocks").GetInt64();
        var tipHash = info.GetProperty("bestblockhash").GetString()!;
        // listsinceblock lists what is in blocks after the one named (and the mempool): name the block below fromHeight.
        string since;
        if (fromHeight <= 0)
            since = "";
        else if (fromHeight - 1 <= tip)
            since = (await CallAsync("getblockhash", [fromHeight - 1], cancellationToken).ConfigureAwait(false)).GetString()!;
        else
            since = tipHash;
        var listed = await CallAsync("listsinceblock", [since, 1, true, false], cancellationToken).ConfigureAwait(false);
        var outputs = new List<ChainOutput>();
        foreach (var entry in listed.GetProperty("transactions").EnumerateArray())
        {
            if (entry.GetProperty("category").GetString() != "receive"
                || !entry.TryGetProperty("address", out var addressElement)
                || addressElement.GetString() is not { } address)
                continue;
            lock (_gate)
            {
                if (!_watched.ContainsKey(address))
                    continue;
            }
            var confirmations = entry.GetProperty("confirmations").GetInt64();
            if (confirmations < 0)
                continue; // conflicted: a double-spend won, it pays nothing
            long? height = confirmations == 0 ? null : entry.GetProperty("blockheight").GetInt64();
            if (height > tip)
                continue; // a block that came after getblockchaininfo answered: the next scan reports it
            outputs.Add(new ChainOutput(
                entry.GetProperty("txid").GetString()!,
                entry.GetProperty("vout").GetInt32(),
                address,
                ToSatoshis(entry.GetProperty("amount")),
                height));
        }
        return new ChainScan(tip, tipHash, outputs);
    }

    public async Task<ChainTransaction> BuildWithdrawalAsync(string address, long amount, CancellationToken cancellationToken)
    {
        if (!IsValidAddress(address))
            throw new ChainRejectedException($"'{address}' is not a Bitcoin address of the {Network} network.");
        if (amount <= 0)
            throw new ChainRejectedException($"A withdrawal pays a positive amount, not {amount}.");
        await EnsureImportedAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // The wallet picks the coins (locking them, so a second withdrawal built before this one is broadcast
            // does not pick them too; a withdrawal never broadcast keeps them locked until bitcoind restarts), pays
            // the fee on top and sends the change to itself.
            var funded = await _rpc.CallAsync("walletcreatefundedpsbt",
                [new JsonArray(), new JsonArray(new JsonObject { [address] = ToBitcoins(amount) }), 0, new JsonObject { ["lockUnspents"] = true }],
                cancellationToken).ConfigureAwait(false);
            var processed = await _rpc.CallAsync("walletprocesspsbt",
                [funded.GetProperty("psbt").GetString(), true, "ALL", true, true], cancellationToken).ConfigureAwait(false);
            var finalized = await _rpc.CallAsync("finalizepsbt",
                [processed.GetProperty("psbt").GetString(), true], cancellationToken).ConfigureAwait(false);
            if (!finalized.GetProperty("complete").GetBoolean() || !finalized.TryGetProperty("hex", out var hex))
                throw new ChainRejectedException("The wallet could not sign the withdrawal: does it hold the deposit keys, unlocked?");
            var raw = hex.GetString()!;
            return new ChainTransaction(ParseTransaction(raw).GetHash().ToString(), raw);
        }
        catch (BitcoinRpcException e)
        {
            // Funding refusals: a bad address or amount, too little money, an amount too small to send.
            if (e.Code is -3 or -5 or -6 or -8 || (e.Code == -4 && !e.Message.Contains("rescan", StringComparison.OrdinalIgnoreCase)))
                throw new ChainRejectedException($"Bitcoin Core refused the withdrawal: {e.Message} ({e.Code}).", e);
            throw Unavailable("the withdrawal", e);
        }
    }

    public async Task<bool> BroadcastAsync(ChainTransaction transaction, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        var parsed = ParseTransaction(transaction.Raw);
        if (parsed.GetHash().ToString() != transaction.TxId)
            throw new ChainRejectedException($"The transaction's id is {parsed.GetHash()}, not {transaction.TxId}.");
        // sendrawtransaction answers a transaction already in the mempool as if it were new, and one already mined
        // whose outputs were spent as missing its inputs: ask first.
        if (await InMempoolAsync(transaction.TxId, cancellationToken).ConfigureAwait(false)
            || await WalletConfirmationsAsync(transaction.TxId, cancellationToken).ConfigureAwait(false) >= 1)
            return false;
        try
        {
            await _rpc.CallAsync("sendrawtransaction", [transaction.Raw], cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (BitcoinRpcException e) when (e.Code == -27
            || e.Message.Contains("txn-already-in-mempool", StringComparison.Ordinal)
            || e.Message.Contains("txn-already-known", StringComparison.Ordinal))
        {
            return false;
        }
        catch (BitcoinRpcException e) when (e.Code is -22 or -25 or -26)
        {
            throw new ChainRejectedException($"Bitcoin Core refused the transaction: {e.Message} ({e.Code}).", e);
        }
        catch (BitcoinRpcException e)
        {
            throw Unavailable("the broadcast", e);
        }
    }

    public async Task<long?> GetConfirmationsAsync(string txId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(txId);
        var confirmations = await WalletConfirmationsAsync(txId, cancellationToken).ConfigureAwait(false);
        if (confirmations is null or < 0)
            return null; // unknown, or conflicted: a double-spend took its inputs
        if (confirmations > 0)
            return confirmations;
        // The wallet keeps an unconfirmed transaction the mempool may have dropped.
        return await InMempoolAsync(txId, cancellationToken).ConfigureAwait(false) ? 0 : null;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
        }
        _rpc.Dispose();
        _importGate.Dispose();
    }

    private async Task EnsureImportedAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        await _importGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_importedEnd < 0)
                _importedEnd = await ImportedRangeEndAsync(cancellationToken).ConfigureAwait(false);
            long issued;
            lock (_gate)
                issued = _issuedEnd;
            if (_importedEnd - issued < MinimumAhead && _importedEnd < IndexLimit)
            {
                var end = Math.Min((issued + MinimumAhead + Chunk - 1) / Chunk * Chunk, IndexLimit);
                await ImportAsync(end, cancellationToken).ConfigureAwait(false);
                _importedEnd = end;
            }
            // Watch every address of the range: after a restart, those issued before it are among them.
            for (; _derivedEnd < _importedEnd; _derivedEnd++)
            {
                var address = _scheme.DepositAddress(_derivedEnd);
                lock (_gate)
                    _watched.TryAdd(address, _derivedEnd);
            }
        }
        finally
        {
            _importGate.Release();
        }
    }

    private async Task<long> ImportedRangeEndAsync(CancellationToken cancellationToken)
    {
        var listed = await CallAsync("listdescriptors", [], cancellationToken).ConfigureAwait(false);
        foreach (var descriptor in listed.GetProperty("descriptors").EnumerateArray())
        {
            if (descriptor.GetProperty("desc").GetString() is { } desc && desc.Contains(_publicMarker, StringComparison.Ordinal)
                && descriptor.TryGetProperty("range", out var range))
                return range[1].GetInt64() + 1;
        }
        return 0;
    }

    private async Task ImportAsync(long end, CancellationToken cancellationToken)
    {
        // Rescan from the tip's median time (bitcoind goes back two hours more): the addresses are new, and a payment
        // to one that reached a block before this import is still found.
        var info = await CallAsync("getblockchaininfo", [], cancellationToken).ConfigureAwait(false);
        var request = new JsonObject
        {
            ["desc"] = _privateDescriptor,
            ["range"] = new JsonArray(0, end - 1),
            ["timestamp"] = info.GetProperty("mediantime").GetInt64(),
            ["active"] = false,
        };
        JsonElement results;
        try
        {
            results = await _rpc.CallAsync("importdescriptors", [new JsonArray(request)], cancellationToken).ConfigureAwait(false);
        }
        catch (BitcoinRpcException e)
        {
            throw new ChainUnavailableException($"Bitcoin Core could not import the deposit keys: {Scrub(e.Message)} ({e.Code}).");
        }
        var result = results[0];
        if (!result.GetProperty("success").GetBoolean())
        {
            var message = result.TryGetProperty("error", out var error) && error.TryGetProperty("message", out var m) ? m.GetString() : null;
            // A configuration problem (not a descriptor wallet, private keys disabled, ...): retried until it is fixed.
            throw new ChainUnavailableException($"Bitcoin Core could not import the deposit keys into wallet '{_options.Wallet}': {Scrub(message ?? "no reason given")}.");
        }
    }

    private async Task<bool> InMempoolAsync(string txId, CancellationToken cancellationToken)
    {
        try
        {
            await _rpc.CallAsync("getmempoolentry", [txId], cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (BitcoinRpcException e) when (e.Code == -5)
        {
            return false;
        }
        catch (BitcoinRpcException e)
        {
            throw Unavailable("getmempoolentry", e);
        }
    }

    /// <summary>The wallet's confirmations of a transaction (negative: conflicted), or null when it does not know it.</summary>
    private async Task<long?> WalletConfirmationsAsync(string txId, CancellationToken cancellationToken)
    {
        try
        {
            var tx = await _rpc.CallAsync("gettransaction", [txId, true], cancellationToken).ConfigureAwait(false);
            return tx.GetProperty("confirmations").GetInt64();
        }
        catch (BitcoinRpcException e) when (e.Code == -5)
        {
            return null;
        }
        catch (BitcoinRpcException e)
        {
            throw Unavailable("gettransaction", e);
        }
    }

    private async Task<JsonElement> CallAsync(string method, JsonArray parameters, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        try
        {
            return await _rpc.CallAsync(method, parameters, cancellationToken).ConfigureAwait(false);
        }
        catch (BitcoinRpcException e)
        {
            throw Unavailable(method, e);
        }
    }

    private Transaction ParseTransaction(string hex)
    {
        try
        {
            return Transaction.Parse(hex, _scheme.Network);
        }
        catch (Exception e) when (e is FormatException or ArgumentException or EndOfStreamException)
        {
            throw new ChainRejectedException("The transaction is not a serialized Bitcoin transaction.", e);
        }
    }

    private string Scrub(string message) => message.Replace(_xprv, "(private key)", StringComparison.Ordinal);

    private ChainUnavailableException Unavailable(string what, BitcoinRpcException e) => e.Code == -28
        ? new ChainUnavailableException($"Bitcoin Core is starting ({Scrub(e.Message)}); {what} is retried later.", e)
        : new ChainUnavailableException($"Bitcoin Core failed {what}: {Scrub(e.Message)} ({e.Code}).", e);

    /// <summary>A JSON number of bitcoins as satoshis, exactly (decimal, never binary floating point).</summary>
    internal static long ToSatoshis(JsonElement amount)
    {
        var bitcoins = amount.GetDecimal() * SatoshisPerBitcoin;
        if (bitcoins != decimal.Truncate(bitcoins))
            throw new ChainUnavailableException($"Bitcoin Core reported an amount finer than a satoshi: {amount.GetRawText()}.");
        return decimal.ToInt64(bitcoins);
    }

    internal static decimal ToBitcoins(long satoshis) => satoshis / (decimal)SatoshisPerBitcoin;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"BitcoinCoreAdapter {{ {_options.Url}, wallet '{_options.Wallet}', {Network} }}");
}
