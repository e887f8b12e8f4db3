using Microsoft.Extensions.Time.Testing;
using Skymesh.Exchange.Chains;

namespace Skymesh.Exchange.Tests.Chains;

/// <summary>The simulated chain behaves as the exchange must expect a real one to: confirmations, reorganisations, outages, a hot wallet.</summary>
public sealed class SimulatedChainTests : IDisposable
{
    private static readonly byte[] Seed = Enumerable.Range(0, 32).Select(i => (byte)(i * 7)).ToArray();
    private readonly string _dir = Directory.CreateTempSubdirectory("skymesh-chain-").FullName;
    private readonly FakeTimeProvider _time = new();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private string StateFile => Path.Combine(_dir, "chain.json");

    private SimulatedChain NewChain(string asset = "BTC", bool persisted = false) =>
        new(new SimulatedChainOptions(asset) { StateFile = persisted ? StateFile : null, BlockInterval = TimeSpan.FromSeconds(10) }, _time);

    /// <summary>A second address nobody at the exchange issued: a person's own wallet.</summary>
    private static string Outsider(string asset) => SimulatedChainAdapter.SchemeFor(asset, new byte[16]).DepositAddress(0);

    [Fact]
    public async Task A_payment_waits_in_the_mempool_then_gains_a_confirmation_per_block()
    {
        using var chain = NewChain();
        using var adapter = SimulatedChainAdapter.Create(chain, Seed);
        var address = adapter.DepositAddress(0);
        var txId = chain.Pay(address, 12_345);

        var scan = await adapter.ScanAsync(0, Cancel);
        Assert.Equal(0, scan.TipHeight);
        Assert.Equal([new ChainOutput(txId, 0, address, 12_345, null)], scan.Outputs);
        Assert.Equal(0, await adapter.GetConfirmationsAsync(txId, Cancel));

        chain.MineBlocks(1);
        Assert.Equal(1, await adapter.GetConfirmationsAsync(txId, Cancel));
        scan = await adapter.ScanAsync(1, Cancel);
        Assert.Equal(1, scan.TipHeight);
        Assert.Equal(chain.TipHash, scan.TipHash);
        Assert.Equal([new ChainOutput(txId, 0, address, 12_345, 1)], scan.Outputs);

        chain.MineBlocks(5);
        Assert.Equal(6, await adapter.GetConfirmationsAsync(txId, Cancel));
        Assert.Empty((await adapter.ScanAsync(2, Cancel)).Outputs); // its block is below the height scanned from
        Assert.Null(await adapter.GetConfirmationsAsync("00" + txId[2..], Cancel));
    }

    [Fact]
    public async Task Scans_report_only_addresses_the_adapter_issued()
    {
        using var chain = NewChain("SKY");
        using var adapter = SimulatedChainAdapter.Create(chain, Seed);
        Assert.Equal("SKY", adapter.Asset);
        Assert.Equal(6, adapter.Scale);
        Assert.Equal("simulated", adapter.Network);
        var ours = adapter.DepositAddress(3);
        Assert.True(SkycoinAddress.IsValid(ours));
        chain.Pay(Outsider("SKY"), 500);
        var paid = chain.Pay(ours, 700);
        chain.MineBlocks(1);
        Assert.Equal([new ChainOutput(paid, 0, ours, 700, 1)], (await adapter.ScanAsync(0, Cancel)).Outputs);
        Assert.Equal(700, chain.HotWallet);
    }

    [Fact]
    public async Task A_reorganisation_that_drops_a_transaction_makes_it_vanish()
    {
        using var chain = NewChain();
        using var adapter = SimulatedChainAdapter.Create(chain, Seed);
        var address = adapter.DepositAddress(0);
        var kept = chain.Pay(address, 1_000);
        var doubleSpent = chain.Pay(address, 2_000);
        chain.MineBlocks(3);
        Assert.Equal(3, await adapter.GetConfirmationsAsync(doubleSpent, Cancel));
        Assert.Equal(3_000, chain.HotWallet);
        var oldTip = chain.TipHash;

        chain.Reorganise(3, [doubleSpent]);

        Assert.Equal(4, chain.Height);
        Assert.NotEqual(oldTip, chain.TipHash);
        Assert.Null(await adapter.GetConfirmationsAsync(doubleSpent, Cancel));
        Assert.Equal(4, await adapter.GetConfirmationsAsync(kept, Cancel)); // in the first replacement block, height 1
        Assert.Equal([new ChainOutput(kept, 0, address, 1_000, 1)], (await adapter.ScanAsync(0, Cancel)).Outputs);
        Assert.Equal(1_000, chain.HotWallet);
    }

    [Fact]
    public async Task A_reorganisation_without_a_drop_keeps_the_transaction_at_a_new_height()
    {
        using var chain = NewChain();
        using var adapter = SimulatedChainAdapter.Create(chain, Seed);
        var address = adapter.DepositAddress(0);
        chain.MineBlocks(2);
        var txId = chain.Pay(address, 5_000);
        chain.MineBlocks(1); // height 3
        var waiting = chain.Pay(address, 6_000);
        chain.MineBlocks(1); // height 4
        var before = await adapter.ScanAsync(0, Cancel);

        chain.Reorganise(2);

        var after = await adapter.ScanAsync(0, Cancel);
        Assert.Equal(5, after.TipHeight);
        Assert.NotEqual(before.TipHash, after.TipHash);
        // Both orphaned transactions go into the first replacement block, at height 3.
        Assert.Equal([new ChainOutput(txId, 0, address, 5_000, 3), new ChainOutput(waiting, 0, address, 6_000, 3)], after.Outputs);
        Assert.Equal(3, await adapter.GetConfirmationsAsync(waiting, Cancel));
        Assert.Throws<ArgumentOutOfRangeException>(() => chain.Reorganise(6)); // never the genesis block
    }

    [Fact]
    public async Task A_node_that_is_down_answers_every_call_with_unavailable_and_mines_nothing()
    {
        using var chain = NewChain();
        using var adapter = SimulatedChainAdapter.Create(chain, Seed);
        var address = adapter.DepositAddress(0);
        chain.Pay(address, 10_000);
        chain.MineBlocks(1);
        var withdrawal = await adapter.BuildWithdrawalAsync(Outsider("BTC"), 100, Cancel);
        chain.Start();

        chain.Down = true;
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.ScanAsync(0, Cancel));
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.BuildWithdrawalAsync(Outsider("BTC"), 100, Cancel));
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.BroadcastAsync(withdrawal, Cancel));
        await Assert.ThrowsAsync<ChainUnavailableException>(() => adapter.GetConfirmationsAsync(withdrawal.TxId, Cancel));
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(1, chain.Height);
        Assert.Equal(0, chain.BroadcastCount(withdrawal.TxId)); // never reached the chain

        chain.Down = false;
        Assert.True(await adapter.BroadcastAsync(withdrawal, Cancel));
        _time.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(2, chain.Height);
        Assert.Equal(1, await adapter.GetConfirmationsAsync(withdrawal.TxId, Cancel));
    }

    [Fact]
    public async Task A_withdrawal_beyond_the_hot_wallet_is_rejected_and_one_within_it_is_spent_from_it()
    {
        using var chain = NewChain();
        using var adapter = SimulatedChainAdapter.Create(chain, Seed);
        chain.Pay(adapter.DepositAddress(0), 3_000);
        var second = chain.Pay(adapter.DepositAddress(1), 50_000);
        Assert.Equal(0, chain.HotWallet); // nothing confirmed yet
        chain.MineBlocks(1);
        chain.Pay(adapter.DepositAddress(2), 1_000_000); // in the mempool: not spendable yet
        Assert.Equal(53_000, chain.HotWallet);

        var tooMuch = await adapter.BuildWithdrawalAsync(Outsider("BTC"), 53_001, Cancel);
        await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BroadcastAsync(tooMuch, Cancel));
        Assert.Null(await adapter.GetConfirmationsAsync(tooMuch.TxId, Cancel));

        var withdrawal = await adapter.BuildWithdrawalAsync(Outsider("BTC"), 40_000, Cancel);
        Assert.True(await adapter.BroadcastAsync(withdrawal, Cancel));
        Assert.Equal(13_000, chain.HotWallet);
        Assert.Equal(1, await adapter.GetConfirmationsAsync(second, Cancel));

        await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BuildWithdrawalAsync("not-an-address", 1, Cancel));
        await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BuildWithdrawalAsync(Outsider("BTC"), 0, Cancel));
        await Assert.ThrowsAsync<ChainRejectedException>(() => adapter.BroadcastAsync(withdrawal with { Raw = "00" + withdrawal.Raw }, Cancel));
    }

    [Fact]
    public async Task Broadcasting_the_same_withdrawal_twice_pays_once_and_answers_false_the_second_time()
    {
        using var chain = NewChain();
        using var adapter = SimulatedChainAdapter.Create(chain, Seed);
        chain.Pay(adapter.DepositAddress(0), 10_000);
        chain.MineBlocks(1);
        var destination = Outsider("BTC");
        var withdrawal = await adapter.BuildWithdrawalAsync(destination, 4_000, Cancel);

        Assert.True(await adapter.BroadcastAsync(withdrawal, Cancel));
        Assert.False(await adapter.BroadcastAsync(withdrawal, Cancel));
        Assert.Equal(2, chain.BroadcastCount(withdrawal.TxId));
        Assert.Equal(6_000, chain.HotWallet);
        chain.MineBlocks(2);
        Assert.False(await adapter.BroadcastAsync(withdrawal, Cancel)); // mined: still known
        Assert.Equal(3, chain.BroadcastCount(withdrawal.TxId));
        Assert.Equal(2, await adapter.GetConfirmationsAsync(withdrawal.TxId, Cancel));
        Assert.Equal(6_000, chain.HotWallet);

        // Two withdrawals alike are two transactions.
        Assert.NotEqual(withdrawal.TxId, (await adapter.BuildWithdrawalAsync(destination, 4_000, Cancel)).TxId);
    }

    [Fact]
    public async Task A_withdrawal_to_a_deposit_address_is_reported_by_the_scan()
    {
        using var chain = NewChain("SKY");
        using var adapter = SimulatedChainAdapter.Create(chain, Seed);
        chain.Pay(adapter.DepositAddress(0), 9_000);
        chain.MineBlocks(1);
        var internalAddress = adapter.DepositAddress(1);
        var withdrawal = await adapter.BuildWithdrawalAsync(internalAddress, 2_500, Cancel);
        Assert.True(await adapter.BroadcastAsync(withdrawal, Cancel));
        var scan = await adapter.ScanAsync(2, Cancel);
        Assert.Equal([new ChainOutput(withdrawal.TxId, 0, internalAddress, 2_500, null)], scan.Outputs);
        chain.MineBlocks(1);
        Assert.Equal(9_000, chain.HotWallet); // spent 2,500 and received it back
    }

    [Fact]
    public async Task The_chain_survives_a_restart_from_its_state_file()
    {
        string deposit, payment, mempool, tipHash;
        ChainTransaction withdrawal;
        using (var chain = NewChain("SKY", persisted: true))
        using (var adapter = SimulatedChainAdapter.Create(chain, Seed))
        {
            deposit = adapter.DepositAddress(4);
            payment = chain.Pay(deposit, 80_000);
            chain.MineBlocks(3);
            withdrawal = await adapter.BuildWithdrawalAsync(Outsider("SKY"), 30_000, Cancel);
            Assert.True(await adapter.BroadcastAsync(withdrawal, Cancel));
            mempool = chain.Pay(deposit, 1);
            tipHash = chain.TipHash;
        }
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(StateFile));

        using var restarted = NewChain("SKY", persisted: true);
        // A new adapter that has issued nothing yet: the chain remembers the deposit address.
        using var again = SimulatedChainAdapter.Create(restarted, Seed);
        Assert.Equal(3, restarted.Height);
        Assert.Equal(tipHash, restarted.TipHash);
        Assert.Equal(50_000, restarted.HotWallet);
        Assert.Equal(1, restarted.BroadcastCount(withdrawal.TxId));
        Assert.False(await again.BroadcastAsync(withdrawal, Cancel));
        Assert.Equal(
            [new ChainOutput(payment, 0, deposit, 80_000, 1), new ChainOutput(mempool, 0, deposit, 1, null)],
            (await again.ScanAsync(0, Cancel)).Outputs);
        Assert.Equal(0, await again.GetConfirmationsAsync(withdrawal.TxId, Cancel));
        restarted.MineBlocks(1);
        Assert.Equal(1, await again.GetConfirmationsAsync(withdrawal.TxId, Cancel));
        Assert.NotEqual(withdrawal.TxId, (await again.BuildWithdrawalAsync(Outsider("SKY"), 30_000, Cancel)).TxId);
        Assert.Equal(deposit, again.DepositAddress(4));
    }

    [Fact]
    public void A_corrupt_or_foreign_state_file_is_refused_with_a_clear_message()
    {
        File.WriteAllText(StateFile, "{\"version\": 1, \"asset\": \"BTC\", \"blocks\": [");
        var error = Assert.Throws<InvalidDataException>(() => NewChain(persisted: true));
        Assert.Contains(StateFile, error.Message);
        Assert.Contains("corrupt", error.Message);

        File.Delete(StateFile);
        NewChain("SKY", persisted: true).Dispose();
        Assert.Contains("SKY chain, not BTC", Assert.Throws<InvalidDataException>(() => NewChain("BTC", persisted: true)).Message);

        File.WriteAllText(StateFile, File.ReadAllText(StateFile).Replace("\"mempool\":[]", "\"mempool\":[\"ab\"]", StringComparison.Ordinal));
        Assert.Contains("unknown or repeated transaction ab", Assert.Throws<InvalidDataException>(() => NewChain("SKY", persisted: true)).Message);
    }

    [Fact]
    public async Task The_timer_mines_a_block_per_interval_until_stopped()
    {
        using var chain = NewChain();
        var txId = chain.Pay(Outsider("BTC"), 1);
        chain.Start();
        _time.Advance(TimeSpan.FromSeconds(9));
        Assert.Equal(0, chain.Height);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(1, chain.Height);
        _time.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(4, chain.Height);
        chain.Stop();
        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(4, chain.Height);
        using var adapter = SimulatedChainAdapter.Create(chain, Seed);
        Assert.Equal(4, await adapter.GetConfirmationsAsync(txId, Cancel));
    }

    [Fact]
    public async Task Disposing_an_adapter_leaves_its_chain_running()
    {
        using var chain = NewChain();
        var adapter = SimulatedChainAdapter.Create(chain, Seed);
        var address = adapter.DepositAddress(0);
        Assert.StartsWith("bcrt1q", address);
        adapter.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => adapter.ScanAsync(0, Cancel));
        chain.Pay(address, 10);
        chain.MineBlocks(1);
        using var next = SimulatedChainAdapter.Create(chain, Seed);
        Assert.Single((await next.ScanAsync(0, Cancel)).Outputs);
    }
}
