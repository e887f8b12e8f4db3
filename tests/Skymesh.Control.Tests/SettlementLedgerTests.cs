using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Settlement;
using Skymesh.Identity;

namespace Skymesh.Control.Tests;

public sealed class SettlementLedgerTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);
    private readonly FakeTimeProvider _time = new(Start);
    private readonly NodeKey _payer = NodeKey.Generate();
    private readonly NodeKey _payee = NodeKey.Generate();
    private readonly NodeKey _third = NodeKey.Generate();
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"skymesh-ledger-{Guid.NewGuid():N}.db");

    public void Dispose()
    {
        _payer.Dispose();
        _payee.Dispose();
        _third.Dispose();
        foreach (var suffix in new[] { "", "-wal", "-shm" })
            File.Delete(_path + suffix);
    }

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    /// <summary>The SQLite file the node uses, or the in-memory ledger of tests and simulations: the same rules either way.</summary>
    private EmbeddedLedger Open(string kind) => kind == "file" ? EmbeddedLedger.Open(_path, _time) : EmbeddedLedger.OpenInMemory(_time);

    private Receipt Signed(ulong sequence, long amount, NodeKey? payer = null, NodeAddress? payee = null) =>
        Receipt.Create(payer ?? _payer, payee ?? _payee.Address, sequence, amount * 1000, amount, _time.GetUtcNow());

    [Theory]
    [InlineData("file")]
    [InlineData("memory")]
    public async Task Settling_moves_balances_exactly_once_per_receipt(string kind)
    {
        using var ledger = Open(kind);
        var first = Signed(1, 300);
        Assert.Equal(new SettlementResult(SettlementOutcome.Settled, 300, new SettledPosition(1, 300)), await ledger.SettleAsync(first, Cancel));
        Assert.Equal(new SettlementResult(SettlementOutcome.AlreadySettled, 0, new SettledPosition(1, 300)), await ledger.SettleAsync(first, Cancel));
        Assert.Equal(-300, await ledger.GetBalanceAsync(_payer.Address, Cancel));
        Assert.Equal(300, await ledger.GetBalanceAsync(_payee.Address, Cancel));

        // A later receipt moves only what it adds.
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(new SettlementResult(SettlementOutcome.Settled, 200, new SettledPosition(2, 500)), await ledger.SettleAsync(Signed(2, 500), Cancel));
        Assert.Equal(-500, await ledger.GetBalanceAsync(_payer.Address, Cancel));
        Assert.Equal(500, await ledger.GetBalanceAsync(_payee.Address, Cancel));
        Assert.Equal(0, await ledger.GetBalanceAsync(_third.Address, Cancel));
        Assert.Equal(new SettledPosition(2, 500), await ledger.GetSettledAsync(_payer.Address, _payee.Address, Cancel));
        Assert.Equal(default, await ledger.GetSettledAsync(_payee.Address, _payer.Address, Cancel));

        Assert.Equal(
            [
                new JournalEntry(1, _payer.Address, _payee.Address, 1, 300, 300, Start),
                new JournalEntry(2, _payer.Address, _payee.Address, 2, 500, 200, Start.AddSeconds(1)),
            ],
            ledger.ReadJournal());
    }

    [Fact]
    public async Task Settling_out_of_order_is_safe()
    {
        using var ledger = EmbeddedLedger.Open(_path, _time);
        var receipts = Enumerable.Range(1, 5).Select(i => Signed((ulong)i, i * 100L)).ToArray();
        Assert.Equal(SettlementOutcome.Settled, (await ledger.SettleAsync(receipts[3], Cancel)).Outcome);
        foreach (var receipt in receipts[..3])
            Assert.Equal(new SettlementResult(SettlementOutcome.AlreadySettled, 0, new SettledPosition(4, 400)), await ledger.SettleAsync(receipt, Cancel));
        Assert.Equal(new SettlementResult(SettlementOutcome.Settled, 100, new SettledPosition(5, 500)), await ledger.SettleAsync(receipts[4], Cancel));
        Assert.Equal(500, ledger.BalanceOf(_payee.Address));

        // A batch holding the same pair's receipts in any order, twice over, moves the same in total.
        using var other = EmbeddedLedger.Open(_path + ".batch", _time);
        try
        {
            var results = await other.SettleAsync([receipts[1], receipts[4], receipts[0], receipts[4], receipts[2]], Cancel);
            Assert.Equal(
                [SettlementOutcome.Settled, SettlementOutcome.Settled, SettlementOutcome.AlreadySettled, SettlementOutcome.AlreadySettled, SettlementOutcome.AlreadySettled],
                results.Select(r => r.Outcome));
            Assert.Equal([200L, 300, 0, 0, 0], results.Select(r => r.Moved));
            Assert.Equal(500, other.BalanceOf(_payee.Address));
            Assert.Equal(-500, other.BalanceOf(_payer.Address));
        }
        finally
        {
            other.Dispose();
            foreach (var suffix in new[] { "", "-wal", "-shm" })
                File.Delete(_path + ".batch" + suffix);
        }
    }

    [Fact]
    public async Task The_ledger_survives_reopening_its_file()
    {
        var latest = Signed(3, 900);
        using (var ledger = EmbeddedLedger.Open(_path, _time))
        {
            await ledger.SettleAsync([Signed(1, 100), Signed(2, 400, _third, _payee.Address), latest], Cancel);
            await ledger.SettleAsync(Signed(1, 50, _payee, _third.Address), Cancel);
        }

        using (var reopened = EmbeddedLedger.Open(_path, _time))
        {
            Assert.Equal(-900, reopened.BalanceOf(_payer.Address));
            Assert.Equal(1300 - 50, reopened.BalanceOf(_payee.Address));
            Assert.Equal(-400 + 50, reopened.BalanceOf(_third.Address));
            Assert.Equal(new SettledPosition(3, 900), reopened.SettledOf(_payer.Address, _payee.Address));
            Assert.Equal(latest.Bytes, reopened.LatestSettled(_payer.Address, _payee.Address)!.Bytes);
            Assert.Equal(4, reopened.ReadJournal().Count);

            // Idempotency survives too: what was settled before the restart moves nothing after it.
            Assert.Equal(SettlementOutcome.AlreadySettled, (await reopened.SettleAsync(latest, Cancel)).Outcome);
            Assert.Equal(SettlementOutcome.AlreadySettled, (await reopened.SettleAsync(Signed(2, 500), Cancel)).Outcome);
            Assert.Equal(new SettlementResult(SettlementOutcome.Settled, 100, new SettledPosition(4, 1000)), await reopened.SettleAsync(Signed(4, 1000), Cancel));
        }

        using var third = EmbeddedLedger.Open(_path, _time);
        Assert.Equal(-1000, third.BalanceOf(_payer.Address));
        Assert.Equal(5, third.ReadJournal().Count);
    }

    [Theory]
    [InlineData("file")]
    [InlineData("memory")]
    public async Task A_receipt_with_a_bad_signature_or_a_smaller_amount_moves_nothing(string kind)
    {
        using var ledger = Open(kind);
        Assert.Equal(SettlementOutcome.Settled, (await ledger.SettleAsync(Signed(2, 500), Cancel)).Outcome);

        var forged = Signed(3, 5000).Bytes;
        forged[^1] ^= 0x01;
        Assert.Equal(ReceiptError.None, Receipt.TryParse(forged, out var tampered));
        Assert.Equal(new SettlementResult(SettlementOutcome.Invalid, 0, new SettledPosition(2, 500)), await ledger.SettleAsync(tampered!, Cancel));
        Assert.Equal(new SettlementResult(SettlementOutcome.NonMonotonic, 0, new SettledPosition(2, 500)), await ledger.SettleAsync(Signed(3, 499), Cancel));
        Assert.Equal(500, ledger.BalanceOf(_payee.Address));
        Assert.Single(ledger.ReadJournal());
    }

    [Fact]
    public async Task A_restarted_payee_restores_its_book_from_the_ledger()
    {
        var receipt = Signed(7, 700);
        using (var ledger = EmbeddedLedger.Open(_path, _time))
            await ledger.SettleAsync(receipt, Cancel);
        using var reopened = EmbeddedLedger.Open(_path, _time);
        var book = new ReceiptBook(_payee.Address, _time);
        book.Restore(reopened.LatestSettled(_payer.Address, _payee.Address)!);
        Assert.Equal(ReceiptError.Replayed, book.Offer(receipt.Bytes));
        Assert.Equal(700, book.AccountOf(_payer.Address)!.Value.CountedAmount);
    }

    [Theory]
    [InlineData("file")]
    [InlineData("memory")]
    public async Task A_disposed_ledger_says_so(string kind)
    {
        var ledger = Open(kind);
        ledger.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await ledger.SettleAsync(Signed(1, 1), Cancel));
    }
}
