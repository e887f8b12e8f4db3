using System.Text.Json;
using System.Text.Json.Nodes;
using NBitcoin;
using Skymesh.Exchange.Chains;

namespace Skymesh.Exchange.Tests.Chains;

/// <summary>
/// The Bitcoin Core adapter against a recorded-response fake of bitcoind's JSON-RPC (Bitcoin Core 27's reply shapes):
/// what it asks, how it reads the answers, and how it tells "refused" from "unreachable".
/// </summary>
public sealed class BitcoinCoreAdapterTests : IAsyncDisposable
{
    private const string TipHash = "3c2a1f0b6f1a0e3c4b5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80910001";
    private const long Tip = 205;
    private const long MedianTime = 1_717_000_000;
    private static readonly byte[] Seed = Enumerable.Range(100, 32).Select(i => (byte)i).ToArray();
    private static readonly BitcoinAddressScheme Scheme = new(Seed, Network.RegTest);
    private readonly FakeBitcoinCore _node = new("exchange", "skymesh", "s3cret pass");
    private long[]? _importedRange;

    public BitcoinCoreAdapterTests()
    {
        _node.Answer("getblockchaininfo", $$"""
            {"chain": "regtest", "blocks": {{Tip}}, "headers": {{Tip}}, "bestblockhash": "{{TipHash}}", "difficulty": 4.656542373906925e-10,
             "time": {{MedianTime + 600}}, "mediantime": {{MedianTime}}, "verificationprogress": 1, "initialblockdownload": false,
             "chainwork": "000000000000000000000000000000000000000000000000000000000000019c", "size_on_disk": 63417,
             "pruned": false, "warnings": ""}
            """);
        _node.Methods["getblockhash"] = p => JsonValue.Create(BlockHash(p[0].GetInt64()));
        _node.Methods["listdescriptors"] = _ => ListDescriptors();
        _node.Methods["importdescriptors"] = p =>
        {
            var range = p[0][0].GetProperty("range");
            _importedRange = [range[0].GetInt64(), range[1].GetInt64()];
            return JsonNode.Parse("""[{"success": true}]""");
        };
        _node.Answer("listsinceblock", $$"""{"transactions": [], "removed": [], "lastblock": "{{TipHash}}"}""");
    }

    public async ValueTask DisposeAsync() => await _node.DisposeAsync();

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private BitcoinCoreAdapter NewAdapter(Uri? url = null, string password = "s3cret pass") =>
        new(new BitcoinCoreOptions(url ?? _node.Url, "skymesh", password, null, "exchange", "regtest", Seed));

    private static string BlockHash(long height) => height.ToString("x64", System.Globalization.CultureInfo.InvariantCulture);

    private static string PublicDescriptor()
    {
        var fingerprint = ExtKey.CreateFromSeed(Seed).GetPublicKey().GetHDFingerPrint();
        var desc = $"wpkh([{fingerprint}/84h/1h/0h]{Scheme.Account.ToString(Network.RegTest)}/0/*)";
        return DescriptorChecksum.Append(desc);
    }

    /// <summary>A fresh descriptor wallet's own descriptors, and the deposit descriptor once it was imported.</summary>
    private JsonNode ListDescriptors()
    {
        var descriptors = new JsonArray(JsonNode.Parse("""
            {"desc": "wpkh([5a2d7c1e/84h/1h/0h]tpubDCyvczNnKRM37BjWXVX8NWMpuEYFAm4qTrJa4ud8hdCNkBeWoeL9wbFWiv3EkkqwdmMpjNhHbcRtLpu6T7PSkPAfK4dEbWgmbAR8ZzDkiJE/0/*)#8ch6zuxa",
             "timestamp": 1716990000, "active": true, "internal": false, "range": [0, 999], "next": 0, "next_index": 0}
            """));
        if (_importedRange is { } range)
        {
            descriptors.Add(new JsonObject
            {
                ["desc"] = PublicDescriptor(),
                ["timestamp"] = MedianTime,
                ["active"] = false,
                ["range"] = new JsonArray(range[0], range[1]),
                ["next"] = 0,
                ["next_index"] = 0,
            });
        }
        return new JsonObject { ["wallet_name"] = "exchange", ["descriptors"] = descriptors };
    }

    private static Transaction SampleTransaction()
    {
        var tx = Network.RegTest.CreateTransaction();
        tx.Inputs.Add(new OutPoint(uint256.Parse("6c1f8a2b9d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8"), 1));
        tx.Outputs.Add(Money.Satoshis(12_345), BitcoinAddress.Create(Scheme.DepositAddress(900), Network.RegTest));
        return tx;
    }

    [Fact]
    public async Task A_scan_reports_receipts_to_deposit_addresses_in_exact_satoshis_with_their_heights()
    {
        using var adapter = NewAdapter();
        var first = adapter.DepositAddress(0);
        var second = adapter.DepositAddress(1);
        var stranger = new BitcoinAddressScheme(new byte[16], Network.RegTest).DepositAddress(0);
        _node.Answer("listsinceblock", $$"""
            {"transactions": [
              {"address": "{{first}}", "parent_descs": ["{{PublicDescriptor()}}"], "category": "receive", "amount": 0.00012345,
               "label": "", "vout": 1, "confirmations": 3, "blockhash": "{{BlockHash(203)}}", "blockheight": 203, "blockindex": 1,
               "blocktime": 1717000100, "txid": "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
               "wtxid": "b1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", "walletconflicts": [],
               "time": 1717000050, "timereceived": 1717000050, "bip125-replaceable": "no"},
              {"address": "{{second}}", "parent_descs": ["{{PublicDescriptor()}}"], "category": "receive", "amount": 20999999.97690000,
               "label": "", "vout": 0, "confirmations": 0, "trusted": false,
               "txid": "c1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
               "wtxid": "c1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", "walletconflicts": [],
               "time": 1717000700, "timereceived": 1717000700, "bip125-replaceable": "yes"},
              {"address": "{{stranger}}", "category": "send", "amount": -0.50000000, "vout": 0, "fee": -0.00000141,
               "confirmations": 2, "blockhash": "{{BlockHash(204)}}", "blockheight": 204, "blockindex": 1, "blocktime": 1717000200,
               "txid": "d1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
               "wtxid": "d1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", "walletconflicts": [],
               "time": 1717000150, "timereceived": 1717000150, "bip125-replaceable": "no", "abandoned": false},
              {"address": "{{stranger}}", "category": "receive", "amount": 7.0, "label": "", "vout": 0, "confirmations": 1,
               "blockhash": "{{TipHash}}", "blockheight": 205, "blockindex": 2, "blocktime": 1717000600,
               "txid": "e1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
               "wtxid": "e1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", "walletconflicts": [],
               "time": 1717000600, "timereceived": 1717000600, "bip125-replaceable": "no"},
              {"address": "{{first}}", "category": "receive", "amount": 0.1, "label": "", "vout": 0, "confirmations": -2, "trusted": false,
               "txid": "f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
               "wtxid": "f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
               "walletconflicts": ["a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"],
               "time": 1717000000, "timereceived": 1717000000, "bip125-replaceable": "no"}
            ], "removed": [], "lastblock": "{{TipHash}}"}
            """);

        var scan = await adapter.ScanAsync(200, Cancel);

        Assert.Equal(Tip, scan.TipHeight);
        Assert.Equal(TipHash, scan.TipHash);
        Assert.Equal(
        [
            new ChainOutput("a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", 1, first, 12_345, 203),
            new ChainOutput("c1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", 0, second, 2_099_999_997_690_000, null),
        ], scan.Outputs);
        // The block below the first height scanned, since listsinceblock lists the blocks after the one it is given.
        Assert.Equal(199, Assert.Single(_node.CallsOf("getblockhash"))[0].GetInt64());
        var listed = Assert.Single(_node.CallsOf("listsinceblock"));
        Assert.Equal(BlockHash(199), listed[0].GetString());
        Assert.Equal(1, listed[1].GetInt32());
        Assert.True(listed[2].GetBoolean());
    }

    [Fact]
    public async Task A_scan_from_above_the_tip_lists_only_the_mempool_and_one_from_zero_lists_everything()
    {
        using var adapter = NewAdapter();
        await adapter.ScanAsync(Tip + 10, Cancel);
        Assert.Empty(_node.CallsOf("getblockhash"));
        Assert.Equal(TipHash, _node.CallsOf("listsinceblock").Last()[0].GetString());
        await adapter.ScanAsync(0, Cancel);
        Assert.Equal("", _node.CallsOf("listsinceblock").Last()[0].GetString());
        Assert.Empty(_node.CallsOf("getblockhash"));
    }

    [Fact]
    public async Task The_deposit_descriptor_is_imported_once_per_range_and_not_again_after_a_restart()
    {
        using (var adapter = NewAdapter())
        {
            adapter.DepositAddress(0);
            await adapter.ScanAsync(Tip, Cancel);
            await adapter.ScanAsync(Tip, Cancel);

            var import = Assert.Single(_node.CallsOf("importdescriptors"))[0][0];
            var desc = import.GetProperty("desc").GetString()!;
            var xprv = Scheme.Master.ToString(Network.RegTest);
            Assert.Equal(DescriptorChecksum.Append($"wpkh({xprv}/84h/1h/0h/0/*)"), desc);
            Assert.Equal(new long[] { 0, 999 }, import.GetProperty("range").EnumerateArray().Select(e => e.GetInt64()));
            Assert.Equal(MedianTime, import.GetProperty("timestamp").GetInt64());
            Assert.False(import.GetProperty("active").GetBoolean());

            adapter.DepositAddress(499);
            await adapter.ScanAsync(Tip, Cancel);
            Assert.Single(_node.CallsOf("importdescriptors"));
            adapter.DepositAddress(600); // fewer than 500 imported beyond it: the range grows
            await adapter.ScanAsync(Tip, Cancel);
            await adapter.ScanAsync(Tip, Cancel);
            Assert.Equal(2, _node.CallsOf("importdescriptors").Count());
            Assert.Equal(new long[] { 0, 1_999 }, _importedRange);
        }

        // A restarted exchange finds the range in the wallet: no import, and a receipt to an address issued before
        // the restart is reported though this process has not issued it again.
        var earlier = Scheme.DepositAddress(1_234);
        _node.Answer("listsinceblock", $$"""
            {"transactions": [
              {"address": "{{earlier}}", "parent_descs": ["{{PublicDescriptor()}}"], "category": "receive", "amount": 1.00000001,
               "label": "", "vout": 0, "confirmations": 1, "blockhash": "{{TipHash}}", "blockheight": {{Tip}}, "blockindex": 1,
               "blocktime": 1717000600, "txid": "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
               "wtxid": "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", "walletconflicts": [],
               "time": 1717000600, "timereceived": 1717000600, "bip125-replaceable": "no"}
            ], "removed": [], "lastblock": "{{TipHash}}"}
            """);
        using var restarted = NewAdapter();
        var scan = await restarted.ScanAsync(Tip, Cancel);
        Assert.Equal(2, _node.CallsOf("importdescriptors").Count());
        Assert.Equal([new ChainOutput("a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90", 0, earlier, 100_000_001, Tip)], scan.Outputs);
    }

    [Fact]
    public async Task The_private_key_and_password_never_appear_in_errors_or_descriptions()
    {
        // A node that echoes the descriptor in its refusal.
        _node.Methods["importdescriptors"] = p => new JsonArray(new JsonObject
        {
            ["success"] = false,
            ["error"] = new JsonObject
            {
                ["code"] = -4,
                ["message"] = $"Cannot import descriptor {p[0][0].GetProperty("desc").GetString()} without private keys enabled",
            },
        });
        using var adapter = NewAdapter();
        var error = await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.ScanAsync(0, Cancel));
        var xprv = Scheme.Master.ToString(Network.RegTest);
        Assert.Contains("could not import the deposit keys", error.Message);
        Assert.DoesNotContain(xprv, error.ToString());
        Assert.DoesNotContain("tprv", error.ToString());

        _node.Fail("importdescriptors", -8, "new range must include current range: wpkh(" + xprv + "/84h/1h/0h/0/*)");
        error = await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.ScanAsync(0, Cancel));
        Assert.DoesNotContain("tprv", error.ToString());

        var options = new BitcoinCoreOptions(_node.Url, "skymesh", "s3cret pass", null, "exchange", "regtest", Seed);
        Assert.DoesNotContain("s3cret", options.ToString());
        Assert.DoesNotContain("tprv", adapter.ToString());
    }

    [Fact]
    public async Task A_broadcast_is_accepted_once_and_answered_false_when_the_node_already_has_the_transaction()
    {
        using var adapter = NewAdapter();
        var tx = SampleTransaction();
        var transaction = new ChainTransaction(tx.GetHash().ToString(), tx.ToHex());
        _node.Fail("getmempoolentry", -5, "Transaction not in mempool");
        _node.Fail("gettransaction", -5, "Invalid or non-wallet transaction id");
        _node.Methods["sendrawtransaction"] = p =>
        {
            Assert.Equal(transaction.Raw, p[0].GetString());
            return JsonValue.Create(transaction.TxId);
        };
        Assert.True(await adapter.BroadcastAsync(transaction, Cancel));

        // In the mempool now: sendrawtransaction would answer it as new, so it is not asked.
        _node.Answer("getmempoolentry", """
            {"vsize": 110, "weight": 440, "time": 1717000700, "height": 205, "descendantcount": 1, "descendantsize": 110,
             "ancestorcount": 1, "ancestorsize": 110, "wtxid": "00aa", "fees": {"base": 0.00000141, "modified": 0.00000141,
             "ancestor": 0.00000141, "descendant": 0.00000141}, "depends": [], "spentby": [], "bip125-replaceable": false, "unbroadcast": true}
            """);
        Assert.False(await adapter.BroadcastAsync(transaction, Cancel));
        Assert.Single(_node.CallsOf("sendrawtransaction"));

        // Mined, its outputs perhaps spent: the wallet says so before sendrawtransaction could call its inputs missing.
        _node.Fail("getmempoolentry", -5, "Transaction not in mempool");
        _node.Answer("gettransaction", $$"""{"amount": 0.0, "fee": -0.00000141, "confirmations": 3, "blockhash": "{{BlockHash(203)}}", "blockheight": 203, "blockindex": 1, "blocktime": 1717000100, "txid": "{{transaction.TxId}}", "wtxid": "{{transaction.TxId}}", "walletconflicts": [], "time": 1717000050, "timereceived": 1717000050, "bip125-replaceable": "no", "details": [], "hex": "{{transaction.Raw}}"}""");
        Assert.False(await adapter.BroadcastAsync(transaction, Cancel));
        Assert.Single(_node.CallsOf("sendrawtransaction"));
    }

    [Fact]
    public async Task A_broadcast_refused_by_the_node_is_rejected_and_one_it_already_holds_is_false()
    {
        using var adapter = NewAdapter();
        var tx = SampleTransaction();
        var transaction = new ChainTransaction(tx.GetHash().ToString(), tx.ToHex());
        _node.Fail("getmempoolentry", -5, "Transaction not in mempool");
        _node.Fail("gettransaction", -5, "Invalid or non-wallet transaction id");

        _node.Fail("sendrawtransaction", -27, "Transaction outputs already in utxo set");
        Assert.False(await adapter.BroadcastAsync(transaction, Cancel));
        _node.Fail("sendrawtransaction", -26, "txn-already-known");
        Assert.False(await adapter.BroadcastAsync(transaction, Cancel));
        _node.Fail("sendrawtransaction", -26, "txn-already-in-mempool");
        Assert.False(await adapter.BroadcastAsync(transaction, Cancel));

        _node.Fail("sendrawtransaction", -25, "bad-txns-inputs-missingorspent");
        Assert.Contains("bad-txns-inputs-missingorspent", (await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BroadcastAsync(transaction, Cancel))).Message);
        _node.Fail("sendrawtransaction", -26, "min relay fee not met, 100 < 110");
        await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BroadcastAsync(transaction, Cancel));
        _node.Fail("sendrawtransaction", -28, "Loading block index…");
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.BroadcastAsync(transaction, Cancel));

        // Not a transaction, or not the one named: refused before the node is asked.
        var calls = _node.Calls.Count;
        await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BroadcastAsync(transaction with { Raw = "zz" }, Cancel));
        await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BroadcastAsync(transaction with { TxId = new string('1', 64) }, Cancel));
        Assert.Equal(calls, _node.Calls.Count);
    }

    [Fact]
    public async Task A_withdrawal_is_funded_signed_and_finalised_by_the_wallet()
    {
        using var adapter = NewAdapter();
        var destination = new BitcoinAddressScheme(new byte[16], Network.RegTest).DepositAddress(5);
        var signed = SampleTransaction().ToHex();
        _node.Methods["walletcreatefundedpsbt"] = p =>
        {
            Assert.Equal(0, p[0].GetArrayLength());
            Assert.Equal("0.00012345", p[1][0].GetProperty(destination).GetRawText());
            return JsonNode.Parse("""{"psbt": "cHNidP8BAHECAAAAAf8=", "fee": 0.00000141, "changepos": 1}""");
        };
        _node.Methods["walletprocesspsbt"] = p =>
        {
            Assert.Equal("cHNidP8BAHECAAAAAf8=", p[0].GetString());
            return JsonNode.Parse($$"""{"psbt": "cHNidP8BAHECAAAAAf9=", "complete": true, "hex": "{{signed}}"}""");
        };
        _node.Methods["finalizepsbt"] = p =>
        {
            Assert.Equal("cHNidP8BAHECAAAAAf9=", p[0].GetString());
            return JsonNode.Parse($$"""{"hex": "{{signed}}", "complete": true}""");
        };

        var withdrawal = await adapter.BuildWithdrawalAsync(destination, 12_345, Cancel);

        Assert.Equal(signed, withdrawal.Raw);
        Assert.Equal(Transaction.Parse(signed, Network.RegTest).GetHash().ToString(), withdrawal.TxId);
        Assert.Single(_node.CallsOf("importdescriptors")); // the wallet holds the keys before it spends
    }

    [Fact]
    public async Task A_withdrawal_the_wallet_cannot_fund_or_to_a_bad_address_is_rejected()
    {
        using var adapter = NewAdapter();
        _node.Fail("walletcreatefundedpsbt", -4, "Insufficient funds");
        var destination = new BitcoinAddressScheme(new byte[16], Network.RegTest).DepositAddress(5);
        Assert.Contains("Insufficient funds", (await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BuildWithdrawalAsync(destination, 10, Cancel))).Message);

        var calls = _node.Calls.Count;
        await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BuildWithdrawalAsync("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", 10, Cancel)); // a main-network address
        await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BuildWithdrawalAsync(destination, 0, Cancel));
        Assert.Equal(calls, _node.Calls.Count);

        _node.Fail("walletcreatefundedpsbt", -4, "Wallet is currently rescanning. Abort existing rescan or wait.");
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.BuildWithdrawalAsync(destination, 10, Cancel));
    }

    [Fact]
    public async Task Confirmations_come_from_the_wallet_and_the_mempool()
    {
        using var adapter = NewAdapter();
        var txId = new string('a', 64);
        string Wallet(int confirmations) => $$"""{"amount": 0.0, "fee": -0.00000141, "confirmations": {{confirmations}}, "txid": "{{txId}}", "wtxid": "{{txId}}", "walletconflicts": [], "time": 1717000050, "timereceived": 1717000050, "bip125-replaceable": "no", "details": [], "hex": "00"}""";

        _node.Answer("gettransaction", Wallet(4));
        Assert.Equal(4, await adapter.GetConfirmationsAsync(txId, Cancel));
        _node.Answer("gettransaction", Wallet(0));
        _node.Answer("getmempoolentry", """{"vsize": 110, "weight": 440, "time": 1717000700, "height": 205, "descendantcount": 1, "descendantsize": 110, "ancestorcount": 1, "ancestorsize": 110, "wtxid": "00aa", "fees": {"base": 0.00000141, "modified": 0.00000141, "ancestor": 0.00000141, "descendant": 0.00000141}, "depends": [], "spentby": [], "bip125-replaceable": false, "unbroadcast": false}""");
        Assert.Equal(0, await adapter.GetConfirmationsAsync(txId, Cancel));
        _node.Fail("getmempoolentry", -5, "Transaction not in mempool");
        Assert.Null(await adapter.GetConfirmationsAsync(txId, Cancel)); // the wallet remembers it, the mempool dropped it
        _node.Answer("gettransaction", Wallet(-1));
        Assert.Null(await adapter.GetConfirmationsAsync(txId, Cancel)); // conflicted: a double-spend won
        _node.Fail("gettransaction", -5, "Invalid or non-wallet transaction id");
        Assert.Null(await adapter.GetConfirmationsAsync(txId, Cancel));
        Assert.Equal(txId, _node.CallsOf("gettransaction").Last()[0].GetString());
    }

    [Fact]
    public async Task An_unreachable_failing_or_starting_node_is_unavailable_never_rejected()
    {
        var tx = SampleTransaction();
        var transaction = new ChainTransaction(tx.GetHash().ToString(), tx.ToHex());
        var destination = Scheme.DepositAddress(3);

        using (var nowhere = NewAdapter(new Uri($"http://127.0.0.1:{FakeBitcoinCore.FreePort()}/")))
        {
            await Assert.ThrowsAsync<ChainUnavailableException>(() => nowhere.ScanAsync(0, Cancel));
            await Assert.ThrowsAsync<ChainUnavailableException>(() => nowhere.BroadcastAsync(transaction, Cancel));
            await Assert.ThrowsAsync<ChainUnavailableException>(() => nowhere.GetConfirmationsAsync(transaction.TxId, Cancel));
            await Assert.ThrowsAsync<ChainUnavailableException>(() => nowhere.BuildWithdrawalAsync(destination, 1, Cancel));
        }

        using var adapter = NewAdapter();
        _node.Failure = FakeBitcoinCore.FailureMode.Http500;
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.ScanAsync(0, Cancel));
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.BroadcastAsync(transaction, Cancel));
        _node.Failure = FakeBitcoinCore.FailureMode.WarmingUp;
        Assert.Contains("starting", (await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.ScanAsync(0, Cancel))).Message);
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.BroadcastAsync(transaction, Cancel));
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.GetConfirmationsAsync(transaction.TxId, Cancel));
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.BuildWithdrawalAsync(destination, 1, Cancel));
        _node.Failure = FakeBitcoinCore.FailureMode.None;

        using var wrongPassword = NewAdapter(password: "guess");
        Assert.Contains("credentials", (await Assert.ThrowsAsync<ChainUnavailableException>(() => wrongPassword.ScanAsync(0, Cancel))).Message);
        await adapter.ScanAsync(0, Cancel); // and back up
    }

    [Fact]
    public async Task A_cookie_file_authenticates_instead_of_a_password()
    {
        var cookie = Path.GetTempFileName();
        try
        {
            // bitcoind writes "__cookie__:<random>" and the client sends it as the basic-auth user and password.
            await File.WriteAllTextAsync(cookie, "__cookie__:9f86d081884c7d659a2feaa0c55ad015", Cancel);
            await using var node = new FakeBitcoinCore("", "__cookie__", "9f86d081884c7d659a2feaa0c55ad015");
            foreach (var (method, handler) in _node.Methods)
                node.Methods[method] = handler;
            using var adapter = new BitcoinCoreAdapter(new BitcoinCoreOptions(node.Url, null, null, cookie, "", "regtest", Seed));
            Assert.Equal(Tip, (await adapter.ScanAsync(Tip, Cancel)).TipHeight);
            Assert.Equal("regtest", adapter.Network);
        }
        finally
        {
            File.Delete(cookie);
        }
    }
}
