using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Settlement;
using Skymesh.Identity;

namespace Skymesh.Control.Tests;

public sealed class SettlementReceiptTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);
    private readonly FakeTimeProvider _time = new(Start);
    private readonly NodeKey _payer = NodeKey.Generate();
    private readonly NodeKey _payee = NodeKey.Generate();
    private readonly NodeKey _other = NodeKey.Generate();

    public void Dispose()
    {
        _payer.Dispose();
        _payee.Dispose();
        _other.Dispose();
    }

    private Receipt Signed(ulong sequence, long bytes, long amount, DateTimeOffset? issued = null) =>
        Receipt.Create(_payer, _payee.Address, sequence, bytes, amount, issued ?? _time.GetUtcNow());

    private ReceiptBook Book(ReceiptBookOptions? options = null)
    {
        var book = new ReceiptBook(_payee.Address, _time, options);
        book.AddNeighbour(_payer.Address);
        return book;
    }

    [Fact]
    public void A_receipt_round_trips_and_verifies()
    {
        var receipt = Signed(7, 3 * Receipt.BytesPerMiB, 30);
        Assert.Equal(Receipt.Length, receipt.Bytes.Length);
        Assert.Equal(164, Receipt.Length);
        Assert.True(receipt.Bytes.AsSpan(0, 4).SequenceEqual("SKR1"u8));
        Assert.Equal(ReceiptError.None, Receipt.TryParse(receipt.Bytes, out var parsed));
        Assert.True(parsed!.Verify());
        Assert.Equal(_payer.Address, parsed.Payer);
        Assert.Equal(_payee.Address, parsed.Payee);
        Assert.Equal(7ul, parsed.Sequence);
        Assert.Equal(3 * Receipt.BytesPerMiB, parsed.ForwardedBytes);
        Assert.Equal(30, parsed.Amount);
        Assert.Equal(Start, parsed.Issued);
        Assert.Equal(receipt.Bytes, parsed.Bytes);
    }

    [Fact]
    public void Amounts_are_bytes_times_price_per_MiB_rounded_down()
    {
        Assert.Equal(10, Receipt.AmountFor(Receipt.BytesPerMiB, 10));
        Assert.Equal(9, Receipt.AmountFor(Receipt.BytesPerMiB - 1, 10));
        Assert.Equal(0, Receipt.AmountFor(1000, 1000));
        Assert.Equal(1, Receipt.AmountFor(1049, 1000));
        Assert.Equal((long)uint.MaxValue << 12, Receipt.AmountFor(1L << 32, uint.MaxValue));
    }

    [Fact]
    public void Every_flipped_byte_is_refused()
    {
        var receipt = Signed(1, 1000, 5);
        for (var i = 0; i < receipt.Bytes.Length; i++)
        {
            var tampered = (byte[])receipt.Bytes.Clone();
            tampered[i] ^= 0x01;
            Assert.NotEqual(ReceiptError.None, Book().Offer(tampered));
            var parsed = Receipt.TryParse(tampered, out var record) == ReceiptError.None && record!.Verify();
            Assert.False(parsed, $"byte {i}");
        }
    }

    [Fact]
    public void A_receipt_signed_by_another_key_is_refused()
    {
        var forged = Receipt.Create(_other, _payee.Address, 1, 1000, 5, Start).Bytes;
        _payer.Address.WriteTo(forged.AsSpan(4));
        var book = Book();
        Assert.Equal(ReceiptError.BadSignature, book.Offer(forged));
        Assert.Equal(1, book.Refused(ReceiptError.BadSignature));
        Assert.Null(book.LatestReceipt(_payer.Address));
        Assert.Equal(0, book.Accepted);
    }

    [Fact]
    public void A_replayed_receipt_is_refused()
    {
        var book = Book();
        var receipt = Signed(1, 1000, 5);
        Assert.Equal(ReceiptError.None, book.Offer(receipt.Bytes));
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(ReceiptError.Replayed, book.Offer(receipt.Bytes));
        // Also a second receipt the payer signed with the same number.
        Assert.Equal(ReceiptError.Replayed, book.Offer(Signed(1, 2000, 10).Bytes));
        Assert.Equal(2, book.Refused(ReceiptError.Replayed));
        Assert.Equal(1, book.Accepted);
        Assert.Equal(receipt.Bytes, book.LatestReceipt(_payer.Address)!.Bytes);
    }

    [Fact]
    public void Stale_and_non_monotonic_receipts_are_refused()
    {
        var book = Book();
        Assert.Equal(ReceiptError.None, book.Offer(Signed(5, 5000, 50).Bytes));
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(ReceiptError.Stale, book.Offer(Signed(4, 6000, 60).Bytes));
        Assert.Equal(ReceiptError.NonMonotonic, book.Offer(Signed(6, 4999, 60).Bytes));
        Assert.Equal(ReceiptError.NonMonotonic, book.Offer(Signed(6, 6000, 49).Bytes));
        Assert.Equal(ReceiptError.None, book.Offer(Signed(6, 5000, 50).Bytes));
        Assert.Equal(1, book.Refused(ReceiptError.Stale));
        Assert.Equal(2, book.Refused(ReceiptError.NonMonotonic));
        Assert.Equal(6ul, book.AccountOf(_payer.Address)!.Value.Sequence);
    }

    [Fact]
    public void A_receipt_to_another_payee_is_refused()
    {
        var book = Book();
        var elsewhere = Receipt.Create(_payer, _other.Address, 1, 1000, 5, Start);
        Assert.Equal(ReceiptError.WrongPayee, book.Offer(elsewhere.Bytes));
        Assert.Equal(ReceiptError.WrongPayee, book.Offer(elsewhere));
        Assert.Equal(2, book.Refused(ReceiptError.WrongPayee));
    }

    [Fact]
    public void Receipts_from_the_future_or_too_old_are_refused()
    {
        var book = Book(new ReceiptBookOptions { ClockTolerance = TimeSpan.FromSeconds(30), MaxAge = TimeSpan.FromMinutes(5) });
        Assert.Equal(ReceiptError.FromTheFuture, book.Offer(Signed(1, 1000, 5, Start.AddSeconds(31)).Bytes));
        Assert.Equal(ReceiptError.TooOld, book.Offer(Signed(2, 1000, 5, Start.AddMinutes(-5).AddMilliseconds(-1)).Bytes));
        Assert.Equal(ReceiptError.None, book.Offer(Signed(3, 1000, 5, Start.AddSeconds(30)).Bytes));
        Assert.Equal(1, book.Refused(ReceiptError.FromTheFuture));
        Assert.Equal(1, book.Refused(ReceiptError.TooOld));
    }

    [Fact]
    public void A_receipt_from_a_stranger_is_refused_without_a_signature_check()
    {
        var book = new ReceiptBook(_payee.Address, _time);
        Assert.Equal(ReceiptError.UnknownPayer, book.Offer(Signed(1, 1000, 5).Bytes));
        Assert.Empty(book.Accounts);
        book.Count(_payer.Address, 1000, 5);
        Assert.Equal(ReceiptError.None, book.Offer(Signed(1, 1000, 5).Bytes));
    }

    [Fact]
    public void A_payer_gets_at_most_one_signature_check_per_interval()
    {
        var book = Book(new ReceiptBookOptions { MinInterval = TimeSpan.FromMilliseconds(50) });
        var forged = Receipt.Create(_other, _payee.Address, 1, 1000, 5, Start).Bytes;
        _payer.Address.WriteTo(forged.AsSpan(4));
        Assert.Equal(ReceiptError.BadSignature, book.Offer(forged));
        Assert.Equal(ReceiptError.TooFrequent, book.Offer(Signed(1, 1000, 5).Bytes));
        _time.Advance(TimeSpan.FromMilliseconds(49));
        Assert.Equal(ReceiptError.TooFrequent, book.Offer(Signed(1, 1000, 5).Bytes));
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal(ReceiptError.None, book.Offer(Signed(1, 1000, 5).Bytes));
        Assert.Equal(2, book.Refused(ReceiptError.TooFrequent));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(100)]
    [InlineData(163)]
    [InlineData(165)]
    public void Records_of_another_length_are_malformed(int length)
    {
        var bytes = Signed(1, 1000, 5).Bytes;
        var record = new byte[length];
        bytes.AsSpan(0, Math.Min(length, bytes.Length)).CopyTo(record);
        Assert.Equal(ReceiptError.Malformed, Receipt.TryParse(record, out _));
        Assert.Equal(ReceiptError.Malformed, Book().Offer(record));
    }

    [Fact]
    public void Every_refusal_is_counted_by_reason_and_reported()
    {
        var book = Book();
        var reported = new List<ReceiptRefusal>();
        book.ReceiptRefused += reported.Add;
        var accepted = new List<Receipt>();
        book.ReceiptAccepted += accepted.Add;

        var first = Signed(2, 2000, 20);
        var forged = Receipt.Create(_other, _payee.Address, 9, 9000, 90, Start).Bytes;
        _payer.Address.WriteTo(forged.AsSpan(4));
        var offers = new (byte[] Bytes, ReceiptError Expected)[]
        {
            (first.Bytes, ReceiptError.None),
            (first.Bytes, ReceiptError.Replayed),
            (Signed(1, 1000, 10).Bytes, ReceiptError.Stale),
            (Signed(3, 1999, 30).Bytes, ReceiptError.NonMonotonic),
            (Receipt.Create(_payer, _other.Address, 3, 3000, 30, Start).Bytes, ReceiptError.WrongPayee),
            (Receipt.Create(_other, _payee.Address, 1, 1000, 10, Start).Bytes, ReceiptError.UnknownPayer),
            (Signed(3, 3000, 30, Start.AddHours(1)).Bytes, ReceiptError.FromTheFuture),
            (Signed(3, 3000, 30, Start.AddHours(-1)).Bytes, ReceiptError.TooOld),
            // The forged receipt passes every cheap check, so its signature is checked; a payer's next receipt within
            // the minimum interval is not.
            (forged, ReceiptError.BadSignature),
            (Signed(3, 3000, 30).Bytes, ReceiptError.TooFrequent),
            (new byte[12], ReceiptError.Malformed),
        };
        foreach (var (bytes, expected) in offers)
        {
            Assert.Equal(expected, book.Offer(bytes));
            if (expected == ReceiptError.None)
                _time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Equal(1, book.Accepted);
        Assert.Equal([first.Bytes], accepted.Select(r => r.Bytes));
        Assert.Equal(offers.Skip(1).Select(o => o.Expected), reported.Select(r => r.Reason));
        foreach (var reason in Enum.GetValues<ReceiptError>().Where(r => r != ReceiptError.None))
            Assert.Equal(1, book.Refused(reason));
        Assert.Equal(_payer.Address, reported.Single(r => r.Reason == ReceiptError.Stale).Payer);
        Assert.Equal(1ul, reported.Single(r => r.Reason == ReceiptError.Stale).Sequence);
        Assert.True(reported.Single(r => r.Reason == ReceiptError.UnknownPayer).Payer.IsEmpty);
        Assert.All(reported, r => Assert.Equal(Start.AddSeconds(1), r.At));
    }

    [Fact]
    public void Unacknowledged_is_what_the_node_counted_less_what_the_receipts_acknowledge()
    {
        var book = Book();
        book.Count(_payer.Address, Receipt.BytesPerMiB, 100);
        book.Count(_payer.Address, Receipt.BytesPerMiB / 2, 300);
        var account = book.AccountOf(_payer.Address)!.Value;
        Assert.Equal(3 * Receipt.BytesPerMiB / 2, account.CountedBytes);
        Assert.Equal(250, account.CountedAmount);
        Assert.Equal(250, account.UnacknowledgedAmount);

        Assert.Equal(ReceiptError.None, book.Offer(Signed(1, Receipt.BytesPerMiB, 100).Bytes));
        account = book.AccountOf(_payer.Address)!.Value;
        Assert.Equal(Receipt.BytesPerMiB / 2, account.UnacknowledgedBytes);
        Assert.Equal(150, account.UnacknowledgedAmount);
        Assert.Equal(Start, account.LastReceiptAt);

        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(ReceiptError.None, book.Offer(Signed(2, 3 * Receipt.BytesPerMiB / 2, 250).Bytes));
        account = book.AccountOf(_payer.Address)!.Value;
        Assert.Equal(0, account.UnacknowledgedBytes);
        Assert.Equal(0, account.UnacknowledgedAmount);

        // A payer that counted more than arrived acknowledges more than counted: nothing is unacknowledged, never less.
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(ReceiptError.None, book.Offer(Signed(3, 2 * Receipt.BytesPerMiB, 300).Bytes));
        Assert.Equal(0, book.AccountOf(_payer.Address)!.Value.UnacknowledgedAmount);
    }

    [Fact]
    public void A_first_receipt_with_a_longer_history_cannot_hide_later_traffic()
    {
        // The payer has paid for a terabyte before this book started; what the node forwards from now on must still show.
        var book = Book();
        book.Count(_payer.Address, 1000, 10);
        Assert.Equal(ReceiptError.None, book.Offer(Signed(900, 1L << 40, 10L << 20).Bytes));
        Assert.Equal(0, book.AccountOf(_payer.Address)!.Value.UnacknowledgedAmount);
        book.Count(_payer.Address, Receipt.BytesPerMiB, 10);
        Assert.Equal(10, book.AccountOf(_payer.Address)!.Value.UnacknowledgedAmount);
    }

    [Fact]
    public void A_restored_receipt_refuses_older_ones_after_a_restart()
    {
        var latest = Signed(40, 40_000, 400);
        var book = new ReceiptBook(_payee.Address, _time);
        book.Restore(latest);
        Assert.Equal(ReceiptError.Stale, book.Offer(Signed(39, 39_000, 390).Bytes));
        Assert.Equal(ReceiptError.Replayed, book.Offer(latest.Bytes));
        Assert.Equal(ReceiptError.None, book.Offer(Signed(41, 41_000, 410).Bytes));
        Assert.Throws<ArgumentException>(() => book.Restore(Receipt.Create(_payer, _other.Address, 50, 1, 1, Start)));
    }
}
