using Skymesh.Control.Settlement;
using Skymesh.Exchange.Service;
using Skymesh.Identity;

namespace Skymesh.Exchange.Tests.Service;

/// <summary>A relay hands its neighbours' signed receipts to the running exchange and is paid on its account there.</summary>
public sealed class SettlementTests
{
    private static CancellationToken Token => TestContext.Current.CancellationToken;

    private static string[] Hex(params Receipt[] receipts) => [.. receipts.Select(r => Convert.ToHexStringLower(r.Bytes))];

    [Fact]
    public async Task A_receipt_pays_the_relay_from_the_payers_account_once_and_a_forged_or_foreign_one_moves_nothing()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var payerKey = NodeKey.Generate();
        using var relayKey = NodeKey.Generate();
        using var mallory = NodeKey.Generate();
        var payer = await world.TraderAsync(payerKey);
        var relay = await world.TraderAsync(relayKey);
        await world.FundAsync(payer, "SKY", 2_000_000);   // 2 SKY: 2,000,000 micro-units

        var issued = ExchangeWorld.T0;
        var first = Receipt.Create(payerKey, relayKey.Address, 1, 10 << 20, 300_000, issued);
        var second = Receipt.Create(payerKey, relayKey.Address, 2, 30 << 20, 900_000, issued);
        var answer = await relay.CallAsync("settle", new { receipts = Hex(first, second) }, Token);
        var results = answer.GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(["settled", "settled"], results.Select(r => r.GetProperty("outcome").GetString()));
        Assert.Equal([300_000L, 600_000L], results.Select(r => r.GetProperty("moved").GetInt64()));
        Assert.Equal("0.900000", (await relay.BalancesAsync(Token))["SKY"].Available);
        Assert.Equal("1.100000", (await payer.BalancesAsync(Token))["SKY"].Available);

        // Again, and after a restart: nothing more moves.
        await world.RestartAsync();
        relay = await world.TraderAsync(relayKey);
        var again = (await relay.CallAsync("settle", new { receipts = Hex(second) }, Token)).GetProperty("results")[0];
        Assert.Equal(("alreadysettled", 0L), (again.GetProperty("outcome").GetString(), again.GetProperty("moved").GetInt64()));
        var position = await relay.CallAsync("settled", new { payer = payerKey.Address.ToString(), payee = relayKey.Address.ToString() }, Token);
        Assert.Equal((2UL, 900_000L), (position.GetProperty("sequence").GetUInt64(), position.GetProperty("amount").GetInt64()));
        Assert.Equal(Convert.ToHexStringLower(second.Bytes), position.GetProperty("receipt").GetString());

        // Mallory signs a receipt in the payer's name: the signature does not verify, nothing moves.
        var forged = Receipt.Create(mallory, relayKey.Address, 3, 90 << 20, 1_900_000, issued);
        var tampered = forged.Bytes.ToArray();
        payerKey.Address.WriteTo(tampered.AsSpan(4, 32));   // the payer field follows a 4-byte header
        Assert.Equal(ReceiptError.None, Receipt.TryParse(tampered, out _));
        var invalid = (await relay.CallAsync("settle", new { receipts = new[] { Convert.ToHexStringLower(tampered) } }, Token)).GetProperty("results")[0];
        Assert.Equal("invalid", invalid.GetProperty("outcome").GetString());
        Assert.Equal("0.900000", (await relay.BalancesAsync(Token))["SKY"].Available);

        // A receipt paying someone else cannot be handed in by the relay.
        var foreign = await Assert.ThrowsAsync<ExchangeApiException>(() => payer.CallAsync("settle", new { receipts = Hex(second) }, Token));
        Assert.Equal("not_payee", foreign.Code);

        // More than the payer holds is refused, and nothing moves.
        var tooMuch = Receipt.Create(payerKey, relayKey.Address, 4, 100 << 20, 5_000_000, issued);
        var refused = (await relay.CallAsync("settle", new { receipts = Hex(tooMuch) }, Token)).GetProperty("results")[0];
        Assert.Equal("refused", refused.GetProperty("outcome").GetString());
        Assert.Equal("1.100000", (await payer.BalancesAsync(Token))["SKY"].Available);
    }
}
