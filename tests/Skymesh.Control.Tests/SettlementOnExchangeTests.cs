using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Settlement;
using Skymesh.Exchange;
using Skymesh.Identity;
using Skymesh.Ledger;

namespace Skymesh.Control.Tests;

/// <summary>
/// Receipts paid as transfers on the exchange's real account ledger (a journaled exchange in a directory), through the
/// receipt-agnostic <see cref="ITransferLedger"/>: exactly once, in the asset's units, refused when the payer cannot pay,
/// and exactly once still when the ledger's answer is lost and the node restarts.
/// </summary>
public sealed class SettlementOnExchangeTests : IDisposable
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 5, 12, 0, 0, TimeSpan.Zero));
    private readonly NodeKey _payer = NodeKey.Generate();
    private readonly NodeKey _payee = NodeKey.Generate();
    private readonly string _dir = Directory.CreateTempSubdirectory("skymesh-settle-exchange-").FullName;

    public void Dispose()
    {
        _payer.Dispose();
        _payee.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private string ExchangeDir => Path.Combine(_dir, "exchange");

    private string Positions => Path.Combine(_dir, "settlement.db");

    private Receipt Signed(ulong sequence, long amount, NodeKey? payer = null) =>
        Receipt.Create(payer ?? _payer, _payee.Address, sequence, amount * 1000, amount, _time.GetUtcNow());

    private ExchangeStore Fund(long skyUnits, long btcUnits = 0)
    {
        var store = ExchangeStore.Open(ExchangeDir);
        if (skyUnits > 0)
            Assert.Equal(Skymesh.Exchange.Matching.RejectReason.None, store.Deposit(_payer.Address.ToString(), "SKY", skyUnits, "fund-sky").Rejected);
        if (btcUnits > 0)
            Assert.Equal(Skymesh.Exchange.Matching.RejectReason.None, store.Deposit(_payer.Address.ToString(), "BTC", btcUnits, "fund-btc").Rejected);
        return store;
    }

    [Fact]
    public async Task Receipts_move_money_between_exchange_accounts_exactly_once()
    {
        using var store = Fund(1_000_000);
        using (var settlement = await TransferSettlement.OpenAsync(store, "SKY", Positions, _payee.Address, cancellationToken: Cancel))
        {
            Assert.Equal(new SettlementResult(SettlementOutcome.Settled, 300, new SettledPosition(1, 300)), await settlement.SettleAsync(Signed(1, 300), Cancel));
            Assert.Equal(new SettlementResult(SettlementOutcome.AlreadySettled, 0, new SettledPosition(1, 300)), await settlement.SettleAsync(Signed(1, 300), Cancel));
            // A later receipt pays only what it adds; an older one, a forged one and a shrinking one pay nothing.
            Assert.Equal(SettlementOutcome.Settled, (await settlement.SettleAsync(Signed(3, 750), Cancel)).Outcome);
            Assert.Equal(SettlementOutcome.AlreadySettled, (await settlement.SettleAsync(Signed(2, 500), Cancel)).Outcome);
            Assert.Equal(SettlementOutcome.NonMonotonic, (await settlement.SettleAsync(Signed(4, 700), Cancel)).Outcome);
            var forged = Signed(5, 900).Bytes.ToArray();
            forged[^1] ^= 1;
            Assert.Equal(ReceiptError.None, Receipt.TryParse(forged, out var bad));
            Assert.Equal(SettlementOutcome.Invalid, (await settlement.SettleAsync(bad!, Cancel)).Outcome);

            Assert.Equal(1_000_000 - 750, store.Available(_payer.Address.ToString(), "SKY"));
            Assert.Equal(750, store.Available(_payee.Address.ToString(), "SKY"));
            Assert.Equal(750, settlement.BalanceOf(_payee.Address));
            Assert.Equal(750, await settlement.GetBalanceAsync(_payee.Address, Cancel));
            Assert.Equal([_payer.Address], settlement.PayersOf(_payee.Address));
            store.CheckConservation();
        }

        // Reopened: the position is where it was, so nothing is paid twice.
        using var again = await TransferSettlement.OpenAsync(store, "SKY", Positions, _payee.Address, cancellationToken: Cancel);
        Assert.Equal(new SettledPosition(3, 750), again.SettledOf(_payer.Address, _payee.Address));
        Assert.Equal(750, again.LatestSettled(_payer.Address, _payee.Address)!.Amount);
        Assert.Equal(SettlementOutcome.AlreadySettled, (await again.SettleAsync(Signed(3, 750), Cancel)).Outcome);
        Assert.Equal(new SettlementResult(SettlementOutcome.Settled, 250, new SettledPosition(6, 1000)), await again.SettleAsync(Signed(6, 1000), Cancel));
        Assert.Equal(1000, store.Available(_payee.Address.ToString(), "SKY"));
    }

    [Fact]
    public async Task An_asset_with_more_decimal_places_is_paid_in_its_own_units()
    {
        // BTC has 8 places: a micro-unit is 100 satoshis.
        using var store = Fund(0, btcUnits: 100_000_000);
        using var settlement = await TransferSettlement.OpenAsync(store, "BTC", null, _payee.Address, cancellationToken: Cancel);
        await settlement.SettleAsync(Signed(1, 1234), Cancel);
        Assert.Equal(123_400, store.Available(_payee.Address.ToString(), "BTC"));
        Assert.Equal(1234, settlement.BalanceOf(_payee.Address));

        await Assert.ThrowsAsync<ArgumentException>(async () => await TransferSettlement.OpenAsync(store, "DOGE", null, cancellationToken: Cancel));
    }

    [Fact]
    public async Task A_payer_that_cannot_pay_is_refused_and_its_debt_is_paid_in_full_once_it_can()
    {
        using var store = Fund(100);
        using var settlement = await TransferSettlement.OpenAsync(store, "SKY", Positions, _payee.Address, cancellationToken: Cancel);
        var refused = await settlement.SettleAsync(Signed(1, 300), Cancel);
        Assert.Equal(new SettlementResult(SettlementOutcome.Refused, 0, default), refused);
        Assert.Equal(100, store.Available(_payer.Address.ToString(), "SKY"));
        Assert.Equal(0, store.Available(_payee.Address.ToString(), "SKY"));

        // A stranger with no account at all is refused the same way, and gets none opened.
        using var stranger = NodeKey.Generate();
        Assert.Equal(SettlementOutcome.Refused, (await settlement.SettleAsync(Signed(1, 10, stranger), Cancel)).Outcome);
        Assert.DoesNotContain(store.Balances(), b => b.Owner == stranger.Address.ToString());

        Assert.Equal(Skymesh.Exchange.Matching.RejectReason.None, store.Deposit(_payer.Address.ToString(), "SKY", 1000, "top-up").Rejected);
        Assert.Equal(new SettlementResult(SettlementOutcome.Settled, 400, new SettledPosition(2, 400)), await settlement.SettleAsync(Signed(2, 400), Cancel));
        Assert.Equal(700, store.Available(_payer.Address.ToString(), "SKY"));
        Assert.Equal(400, store.Available(_payee.Address.ToString(), "SKY"));
        store.CheckConservation();
    }

    [Fact]
    public async Task A_transfer_whose_answer_was_lost_is_made_once_after_a_restart()
    {
        using var store = Fund(1_000_000);
        var lossy = new AnswerLostLedger(store);
        using (var settlement = await TransferSettlement.OpenAsync(lossy, "SKY", Positions, _payee.Address, cancellationToken: Cancel))
        {
            await settlement.SettleAsync(Signed(1, 100), Cancel);
            // The exchange makes the next transfer, but the answer never comes back (a crash, a lost reply).
            lossy.LoseNextAnswer = true;
            await Assert.ThrowsAsync<IOException>(async () => await settlement.SettleAsync(Signed(2, 350), Cancel));
            Assert.Equal(350, store.Available(_payee.Address.ToString(), "SKY"));
            Assert.Equal(1, settlement.PendingTransfers);
            Assert.Equal(new SettledPosition(1, 100), settlement.SettledOf(_payer.Address, _payee.Address));
        }

        // The node restarts: the pending transfer is asked for again under its key, found made, and the pair moves on.
        using var again = await TransferSettlement.OpenAsync(store, "SKY", Positions, _payee.Address, cancellationToken: Cancel);
        Assert.Equal(0, again.PendingTransfers);
        Assert.Equal(new SettledPosition(2, 350), again.SettledOf(_payer.Address, _payee.Address));
        Assert.Equal(new SettlementResult(SettlementOutcome.Settled, 50, new SettledPosition(3, 400)), await again.SettleAsync(Signed(3, 400), Cancel));
        Assert.Equal(400, store.Available(_payee.Address.ToString(), "SKY"));
        Assert.Equal(1_000_000 - 400, store.Available(_payer.Address.ToString(), "SKY"));
        store.CheckConservation();
    }

    [Fact]
    public async Task A_transfer_the_ledger_never_got_is_made_once_by_the_next_round()
    {
        using var store = Fund(1_000_000);
        var lossy = new AnswerLostLedger(store);
        using var settlement = await TransferSettlement.OpenAsync(lossy, "SKY", null, _payee.Address, cancellationToken: Cancel);
        lossy.FailNextCall = true;
        await Assert.ThrowsAsync<IOException>(async () => await settlement.SettleAsync(Signed(1, 200), Cancel));
        Assert.Equal(0, store.Available(_payee.Address.ToString(), "SKY"));
        // The next round first asks for what was pending (200), then what the new receipt adds (100): 300, once.
        var result = await settlement.SettleAsync(Signed(2, 300), Cancel);
        Assert.Equal(new SettlementResult(SettlementOutcome.Settled, 100, new SettledPosition(2, 300)), result);
        Assert.Equal(300, store.Available(_payee.Address.ToString(), "SKY"));
    }

    /// <summary>The real exchange behind a connection that can lose an answer after the exchange acted, or fail before it did.</summary>
    private sealed class AnswerLostLedger(ExchangeStore store) : ITransferLedger
    {
        public bool LoseNextAnswer { get; set; }

        public bool FailNextCall { get; set; }

        public ValueTask<int?> GetScaleAsync(string asset, CancellationToken cancellationToken = default) => store.GetScaleAsync(asset, cancellationToken);

        public ValueTask<long> GetBalanceAsync(string owner, string asset, CancellationToken cancellationToken = default) => store.GetBalanceAsync(owner, asset, cancellationToken);

        public async ValueTask<IReadOnlyList<TransferResult>> TransferAsync(IReadOnlyList<LedgerTransfer> transfers, CancellationToken cancellationToken = default)
        {
            if (FailNextCall)
            {
                FailNextCall = false;
                throw new IOException("connection refused");
            }
            var results = await store.TransferAsync(transfers, cancellationToken);
            if (LoseNextAnswer)
            {
                LoseNextAnswer = false;
                throw new IOException("connection reset after the request was sent");
            }
            return results;
        }
    }
}
