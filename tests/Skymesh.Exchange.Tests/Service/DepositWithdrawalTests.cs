using Skymesh.Exchange.Client;
using Skymesh.Exchange.Service;
using Skymesh.Identity;

namespace Skymesh.Exchange.Tests.Service;

/// <summary>Coins in and out through the simulated chains, over the real broker, as a trader sees them through the API.</summary>
public sealed class DepositWithdrawalTests
{
    private static CancellationToken Token => TestContext.Current.CancellationToken;

    private static async Task<string> StateOf(ExchangeClient trader, string txId)
    {
        var deposit = (await trader.DepositsAsync(null, Token)).Single(d => d.GetProperty("txId").GetString() == txId);
        return $"{deposit.GetProperty("state").GetString()} {deposit.GetProperty("confirmations")}/{deposit.GetProperty("required").GetInt32()}";
    }

    [Fact]
    public async Task A_deposit_is_seen_confirms_and_is_credited_exactly_once_across_repeated_scans_and_a_restart()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var key = NodeKey.Generate();
        var trader = await world.TraderAsync(key);
        var address = await trader.DepositAddressAsync("SKY", Token);
        Assert.Equal(address, await trader.DepositAddressAsync("SKY", Token));   // one address per account and coin
        Assert.True(world.Sky.IsValidAddress(address));

        var tx = world.Sky.Pay(address, 12_500_000);
        await world.Service.PollChainsAsync(Token);
        Assert.Equal("seen 0/2", await StateOf(trader, tx));
        world.Sky.MineBlocks(1);
        await world.Service.PollChainsAsync(Token);
        Assert.Equal("confirming 1/2", await StateOf(trader, tx));
        Assert.Equal("0.000000", (await trader.BalancesAsync(Token))["SKY"].Available);

        world.Sky.MineBlocks(1);
        await world.Service.PollChainsAsync(Token);
        Assert.Equal("credited 2/2", await StateOf(trader, tx));
        Assert.Equal("12.500000", (await trader.BalancesAsync(Token))["SKY"].Available);

        // The same output reported by every later scan, and after a restart, is never credited again.
        await world.Service.PollChainsAsync(Token);
        world.Sky.MineBlocks(5);
        await world.Service.PollChainsAsync(Token);
        await world.RestartAsync();
        await world.Service.PollChainsAsync(Token);
        trader = await world.TraderAsync(key);
        Assert.Equal("12.500000", (await trader.BalancesAsync(Token))["SKY"].Available);
        Assert.StartsWith("credited 7/2", await StateOf(trader, tx));
    }

    [Fact]
    public async Task A_reorganisation_that_drops_a_credited_deposit_takes_it_back()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var key = NodeKey.Generate();
        var trader = await world.TraderAsync(key);
        var address = await trader.DepositAddressAsync("SKY", Token);
        var kept = world.Sky.Pay(address, 1_000_000);
        var doubleSpent = world.Sky.Pay(address, 4_000_000);
        world.Sky.MineBlocks(2);
        await world.Service.PollChainsAsync(Token);
        Assert.Equal("5.000000", (await trader.BalancesAsync(Token))["SKY"].Available);

        // Both blocks are replaced; the 4 SKY payment was double-spent away.
        world.Sky.Reorganise(2, [doubleSpent]);
        await world.Service.PollChainsAsync(Token);
        Assert.Equal("1.000000", (await trader.BalancesAsync(Token))["SKY"].Available);
        Assert.StartsWith("reversed", await StateOf(trader, doubleSpent));
        Assert.StartsWith("credited", await StateOf(trader, kept));
    }

    [Fact]
    public async Task A_reversal_of_coins_already_sold_leaves_a_debt_that_freezes_the_account_never_a_negative_balance()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var sellerKey = NodeKey.Generate();
        using var buyerKey = NodeKey.Generate();
        var seller = await world.TraderAsync(sellerKey);
        var buyer = await world.TraderAsync(buyerKey);
        var address = await seller.DepositAddressAsync("SKY", Token);
        var tx = world.Sky.Pay(address, 10_000_000);
        world.Sky.MineBlocks(2);
        await world.Service.PollChainsAsync(Token);
        await world.FundAsync(buyer, "BTC", 100_000_000);

        await seller.PlaceAsync("SKY/BTC", "sell", "10", "0.001", cancellationToken: Token);
        var bought = await buyer.PlaceAsync("SKY/BTC", "buy", "10", "0.001", cancellationToken: Token);
        Assert.Equal("filled", bought.GetProperty("status").GetString());

        world.Sky.Reorganise(2, [tx]);
        await world.Service.PollChainsAsync(Token);
        var balances = await seller.BalancesAsync(Token);
        Assert.Equal(("0.000000", "10.000000"), (balances["SKY"].Available, balances["SKY"].Owed));
        var refused = await Assert.ThrowsAsync<ExchangeApiException>(() => seller.PlaceAsync("SKY/BTC", "buy", "1", "0.001", cancellationToken: Token));
        Assert.Equal("account_frozen", refused.Code);
        var to = await PayoutAddress(world);
        var withdrawal = await Assert.ThrowsAsync<ExchangeApiException>(() => seller.WithdrawAsync("BTC", to, "0.001", "w1", Token));
        Assert.Equal("account_frozen", withdrawal.Code);
    }

    /// <summary>An address of the simulated BTC network that is not the exchange's (a person's own wallet).</summary>
    private static Task<string> PayoutAddress(ExchangeWorld world)
    {
        _ = world;
        return Task.FromResult(Skymesh.Exchange.Chains.SimulatedChainAdapter.SchemeFor("BTC", [.. Enumerable.Repeat((byte)7, 32)]).DepositAddress(0));
    }

    [Fact]
    public async Task A_withdrawal_goes_from_held_to_confirmed_and_pays_once_and_one_beyond_the_balance_is_refused()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var key = NodeKey.Generate();
        var trader = await world.TraderAsync(key);
        await world.FundAsync(trader, "BTC", 100_000_000);
        var to = await PayoutAddress(world);

        var beyond = await Assert.ThrowsAsync<ExchangeApiException>(() => trader.WithdrawAsync("BTC", to, "1.00000001", "too-much", Token));
        Assert.Equal("insufficient_funds", beyond.Code);
        var bad = await Assert.ThrowsAsync<ExchangeApiException>(() => trader.WithdrawAsync("BTC", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "0.1", "bad", Token));
        Assert.Equal("bad_address", bad.Code);

        var withdrawal = await trader.WithdrawAsync("BTC", to, "0.25", "first", Token);
        Assert.Equal("broadcast", withdrawal.GetProperty("state").GetString());
        var txId = withdrawal.GetProperty("txId").GetString()!;
        Assert.Equal("0.75000000", (await trader.BalancesAsync(Token))["BTC"].Available);
        // The same key again is the same withdrawal, not a second one.
        var again = await trader.WithdrawAsync("BTC", to, "0.25", "first", Token);
        Assert.Equal(withdrawal.GetProperty("id").GetInt64(), again.GetProperty("id").GetInt64());

        world.Btc.MineBlocks(2);
        await world.Service.PollChainsAsync(Token);
        var done = (await trader.WithdrawalsAsync("BTC", Token)).Single(w => w.GetProperty("key").GetString() == "first");
        Assert.Equal("confirmed", done.GetProperty("state").GetString());
        Assert.Equal(1, world.Btc.BroadcastCount(txId));
        Assert.Equal("0.75000000", (await trader.BalancesAsync(Token))["BTC"].Available);
    }

    [Fact]
    public async Task A_large_withdrawal_waits_for_an_operator_who_can_approve_or_reject_it()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var key = NodeKey.Generate();
        var trader = await world.TraderAsync(key);
        await world.FundAsync(trader, "BTC", 200_000_000);
        var to = await PayoutAddress(world);
        var op = await world.TraderAsync(world.Operator);

        var big = await trader.WithdrawAsync("BTC", to, "0.6", "big", Token);
        var rejectedOne = await trader.WithdrawAsync("BTC", to, "0.7", "big-2", Token);
        Assert.Equal("held", big.GetProperty("state").GetString());
        Assert.Equal("0.70000000", (await trader.BalancesAsync(Token))["BTC"].Available);
        var notOperator = await Assert.ThrowsAsync<ExchangeApiException>(() => trader.CallAsync("admin.approve", new { id = big.GetProperty("id").GetInt64() }, Token));
        Assert.Equal("not_operator", notOperator.Code);

        var approved = (await op.CallAsync("admin.approve", new { id = big.GetProperty("id").GetInt64() }, Token)).GetProperty("withdrawal");
        Assert.Equal("broadcast", approved.GetProperty("state").GetString());
        var rejected = (await op.CallAsync("admin.reject", new { id = rejectedOne.GetProperty("id").GetInt64(), reason = "unusual" }, Token)).GetProperty("withdrawal");
        Assert.Equal("rejected", rejected.GetProperty("state").GetString());
        Assert.Equal("1.40000000", (await trader.BalancesAsync(Token))["BTC"].Available);   // 2 − 0.6, the 0.7 refunded
    }

    public static TheoryData<string> CrashPoints => new() { "requested", "held", "approved", "signed", "sent", "broadcast" };

    [Theory]
    [MemberData(nameof(CrashPoints))]
    public async Task A_crash_at_any_step_of_a_withdrawal_never_broadcasts_it_twice_nor_debits_it_twice(string crashAt)
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var key = NodeKey.Generate();
        var trader = await world.TraderAsync(key);
        await world.FundAsync(trader, "BTC", 100_000_000);
        var to = await PayoutAddress(world);
        var hotWallet = world.Btc.HotWallet;

        world.Service.WithdrawalsOf("BTC").AfterStep = step =>
        {
            if (step == crashAt)
                throw new InvalidOperationException($"crash at {step}");
        };
        var crashed = await Assert.ThrowsAsync<ExchangeApiException>(() => trader.WithdrawAsync("BTC", to, "0.3", "w", Token));
        Assert.Equal("internal", crashed.Code);

        // The process is gone; what it made durable is all there is. It starts again and reconciles with the chain.
        await world.RestartAsync();
        await world.Service.PollChainsAsync(Token);
        world.Btc.MineBlocks(2);
        await world.Service.PollChainsAsync(Token);
        trader = await world.TraderAsync(key);
        var withdrawal = (await trader.WithdrawalsAsync("BTC", Token)).Single();
        Assert.Equal("confirmed", withdrawal.GetProperty("state").GetString());
        Assert.Equal(1, world.Btc.BroadcastCount(withdrawal.GetProperty("txId").GetString()!));
        Assert.Equal(hotWallet - 30_000_000, world.Btc.HotWallet);
        Assert.Equal("0.70000000", (await trader.BalancesAsync(Token))["BTC"].Available);
    }

    [Fact]
    public async Task A_chain_that_is_down_leaves_deposits_and_withdrawals_waiting_and_they_go_on_when_it_is_back()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var key = NodeKey.Generate();
        var trader = await world.TraderAsync(key);
        await world.FundAsync(trader, "BTC", 100_000_000);
        var to = await PayoutAddress(world);
        var address = await trader.DepositAddressAsync("SKY", Token);
        var tx = world.Sky.Pay(address, 3_000_000);
        world.Sky.MineBlocks(2);
        world.Sky.Down = true;
        world.Btc.Down = true;
        await world.Service.PollChainsAsync(Token);
        var waiting = await trader.WithdrawAsync("BTC", to, "0.1", "while-down", Token);
        Assert.Equal("approved", waiting.GetProperty("state").GetString());
        Assert.Empty(await trader.DepositsAsync("SKY", Token));

        world.Sky.Down = false;
        world.Btc.Down = false;
        await world.Service.PollChainsAsync(Token);
        Assert.StartsWith("credited", await StateOf(trader, tx));
        Assert.Equal("broadcast", (await trader.WithdrawalsAsync("BTC", Token)).Single().GetProperty("state").GetString());
        Assert.Equal(1, world.Btc.BroadcastCount((await trader.WithdrawalsAsync("BTC", Token)).Single().GetProperty("txId").GetString()!));
    }
}
