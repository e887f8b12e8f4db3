using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Settlement;
using Skymesh.Identity;

namespace Skymesh.Control.Tests;

public sealed class SettlementSignerTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);
    private const long MiB = Receipt.BytesPerMiB;
    private readonly FakeTimeProvider _time = new(Start);
    private readonly NodeKey _payer = NodeKey.Generate();
    private readonly NodeKey _payee = NodeKey.Generate();

    public void Dispose()
    {
        _payer.Dispose();
        _payee.Dispose();
    }

    private ReceiptSigner Signer() => new(_payer, _time);

    [Fact]
    public void A_receipt_is_due_one_second_after_the_first_traffic_it_covers()
    {
        var signer = Signer();
        Assert.Null(signer.Poll(_payee.Address));
        Assert.False(signer.Count(_payee.Address, 1000, 10));
        Assert.Equal(TimeSpan.FromSeconds(1), signer.DueIn(_payee.Address));
        _time.Advance(TimeSpan.FromMilliseconds(600));
        Assert.False(signer.Count(_payee.Address, 500, 10));
        Assert.Null(signer.Poll(_payee.Address));
        _time.Advance(TimeSpan.FromMilliseconds(399));
        Assert.Null(signer.Poll(_payee.Address));
        _time.Advance(TimeSpan.FromMilliseconds(1));

        var receipt = signer.Poll(_payee.Address);
        Assert.NotNull(receipt);
        Assert.True(receipt.Verify());
        Assert.Equal((_payer.Address, _payee.Address, 1ul, 1500L, 0L, Start.AddSeconds(1)),
            (receipt.Payer, receipt.Payee, receipt.Sequence, receipt.ForwardedBytes, receipt.Amount, receipt.Issued));
        Assert.Null(signer.Poll(_payee.Address));
        Assert.Null(signer.DueIn(_payee.Address));

        // Nothing new, nothing signed, however long it waits.
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.Empty(signer.PollAll());
        Assert.Equal(1, signer.Signed);
    }

    [Fact]
    public void A_receipt_is_due_at_once_when_a_MiB_is_not_covered()
    {
        var signer = Signer();
        Assert.False(signer.Count(_payee.Address, MiB - 1, 10));
        Assert.True(signer.Count(_payee.Address, 1, 10));
        var receipt = signer.Poll(_payee.Address)!;
        Assert.Equal((1ul, MiB, 10L), (receipt.Sequence, receipt.ForwardedBytes, receipt.Amount));

        // Another MiB right away waits for the minimum interval (100 ms), then goes without waiting for the second.
        Assert.False(signer.Count(_payee.Address, MiB, 10));
        Assert.Null(signer.Poll(_payee.Address));
        _time.Advance(TimeSpan.FromMilliseconds(100));
        receipt = signer.Poll(_payee.Address)!;
        Assert.Equal((2ul, 2 * MiB, 20L), (receipt.Sequence, receipt.ForwardedBytes, receipt.Amount));
    }

    [Fact]
    public void Amounts_round_once_on_the_total_at_each_price()
    {
        var signer = Signer();
        // 1,000 counts of 1,000 bytes at 3 micro-units per MiB: each alone is worth 0.0029, the total 2.86.
        for (var i = 0; i < 1000; i++)
            signer.Count(_payee.Address, 1000, 3);
        signer.Count(_payee.Address, MiB / 2, 7);
        _time.Advance(TimeSpan.FromSeconds(1));
        var receipt = signer.Poll(_payee.Address)!;
        Assert.Equal(1_000_000 + MiB / 2, receipt.ForwardedBytes);
        Assert.Equal((1_000_000 * 3 + MiB / 2 * 7) / MiB, receipt.Amount);
        Assert.Equal(6, receipt.Amount);
    }

    [Fact]
    public void Every_receipt_the_signer_makes_is_accepted_and_none_goes_backwards()
    {
        var signer = Signer();
        var book = new ReceiptBook(_payee.Address, _time);
        var random = new Random(7);
        Receipt? previous = null;
        var sent = 0L;
        for (var tick = 0; tick < 300; tick++)
        {
            var bytes = random.Next(0, 300_000);
            var price = (uint)random.Next(1, 50);
            signer.Count(_payee.Address, bytes, price);
            book.Count(_payer.Address, bytes, price);
            sent += bytes;
            _time.Advance(TimeSpan.FromMilliseconds(100));
            foreach (var receipt in signer.PollAll())
            {
                Assert.Equal(ReceiptError.None, book.Offer(receipt.Bytes));
                if (previous is not null)
                {
                    Assert.Equal(previous.Sequence + 1, receipt.Sequence);
                    Assert.True(receipt.ForwardedBytes >= previous.ForwardedBytes && receipt.Amount >= previous.Amount);
                    Assert.True(receipt.Issued - previous.Issued <= TimeSpan.FromSeconds(1.1));
                }
                previous = receipt;
            }
        }
        Assert.True(previous!.Sequence > 30, $"{previous.Sequence} receipts for 30 s of traffic of ~1.4 MiB/s");
        _time.Advance(TimeSpan.FromSeconds(1));
        foreach (var receipt in signer.PollAll())
            Assert.Equal(ReceiptError.None, book.Offer(receipt.Bytes));
        var account = book.AccountOf(_payer.Address)!.Value;
        Assert.Equal(sent, account.ReceiptedBytes);
        Assert.Equal(0, account.UnacknowledgedAmount);
    }

    [Fact]
    public void After_losing_its_state_a_signer_resumes_from_the_payees_latest_receipt()
    {
        var book = new ReceiptBook(_payee.Address, _time);
        var before = Signer();
        foreach (var mebibytes in new[] { 4, 1 })
        {
            before.Count(_payee.Address, mebibytes * MiB, 10);
            book.Count(_payer.Address, mebibytes * MiB, 10);
            Assert.Equal(ReceiptError.None, book.Offer(before.Poll(_payee.Address)!.Bytes));
            _time.Advance(TimeSpan.FromSeconds(1));
        }
        Assert.Equal(2ul, book.LatestReceipt(_payer.Address)!.Sequence);

        // Restarted: it counts 1 MiB more and signs #1 for it, which the payee refuses as stale.
        var after = Signer();
        after.Count(_payee.Address, MiB, 10);
        book.Count(_payer.Address, MiB, 10);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(ReceiptError.Stale, book.Offer(after.Poll(_payee.Address)!.Bytes));

        // The payee sends back what it holds; the signer continues from it, with the 1 MiB on top.
        after.Resume(book.LatestReceipt(_payer.Address)!);
        _time.Advance(TimeSpan.FromSeconds(1));
        var receipt = after.Poll(_payee.Address)!;
        Assert.Equal((3ul, 6 * MiB, 60L), (receipt.Sequence, receipt.ForwardedBytes, receipt.Amount));
        Assert.Equal(ReceiptError.None, book.Offer(receipt.Bytes));
        Assert.Equal(0, book.AccountOf(_payer.Address)!.Value.UnacknowledgedAmount);

        using var stranger = NodeKey.Generate();
        Assert.Throws<ArgumentException>(() => after.Resume(Receipt.Create(stranger, _payee.Address, 9, 1, 1, Start)));
    }

    [Fact]
    public void A_restarted_signer_whose_first_receipt_reused_the_payees_number_resumes_from_the_payees_receipt()
    {
        var book = new ReceiptBook(_payee.Address, _time);
        var before = Signer();
        before.Count(_payee.Address, 2 * MiB, 10);
        book.Count(_payer.Address, 2 * MiB, 10);
        Assert.Equal(ReceiptError.None, book.Offer(before.Poll(_payee.Address)!.Bytes));
        _time.Advance(TimeSpan.FromSeconds(1));

        // Restarted before the payee's receipt came back: its #1 is another receipt under the number the payee holds.
        var after = Signer();
        after.Count(_payee.Address, MiB, 10);
        book.Count(_payer.Address, MiB, 10);
        var mine = after.Poll(_payee.Address)!;
        Assert.Equal(ReceiptError.Replayed, book.Offer(mine.Bytes));

        // Its own latest receipt teaches it nothing; the payee's #1 does: it numbers on, with its 1 MiB on top.
        after.Resume(mine);
        after.Resume(book.LatestReceipt(_payer.Address)!);
        _time.Advance(TimeSpan.FromSeconds(1));
        after.Count(_payee.Address, 0, 10);
        var receipt = after.Poll(_payee.Address)!;
        Assert.Equal((2ul, 3 * MiB, 30L), (receipt.Sequence, receipt.ForwardedBytes, receipt.Amount));
        Assert.Equal(ReceiptError.None, book.Offer(receipt.Bytes));
        Assert.Equal(0, book.AccountOf(_payer.Address)!.Value.UnacknowledgedAmount);
    }
}
