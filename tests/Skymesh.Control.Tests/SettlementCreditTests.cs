using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Settlement;
using Skymesh.Identity;

namespace Skymesh.Control.Tests;

public sealed class SettlementCreditTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);
    private const uint Price = 100; // micro-units per MiB
    private readonly FakeTimeProvider _time = new(Start);
    private readonly NodeKey _neighbour = NodeKey.Generate();
    private readonly NodeKey _node = NodeKey.Generate();

    public void Dispose()
    {
        _neighbour.Dispose();
        _node.Dispose();
    }

    private static CreditOptions Options(long receiptLimit = 1000, long? settlementLimit = null) => new()
    {
        DefaultLimits = new CreditLimits(receiptLimit, settlementLimit),
        ThrottleAt = 0.8,
        ResumeAt = 0.5,
        ThrottledBytesPerSecond = 64 * 1024,
    };

    [Fact]
    public void A_node_over_its_credit_limit_is_throttled()
    {
        // The payee forwards for its neighbour, which stops sending receipts: past 80 % of the limit the neighbour is
        // throttled, past the limit suspended, and a receipt brings it back.
        var book = new ReceiptBook(_node.Address, _time);
        var policy = new CreditPolicy(Options(receiptLimit: 1000), _time);
        var changes = new List<(CreditState From, CreditState To, DateTimeOffset At)>();
        policy.StateChanged += (status, previous) => changes.Add((previous, status.State, status.Since));
        CreditStatus Forward(int mebibytes)
        {
            book.Count(_neighbour.Address, mebibytes * Receipt.BytesPerMiB, Price);
            _time.Advance(TimeSpan.FromSeconds(1));
            return policy.Update(_neighbour.Address, Exposure.Of(book.AccountOf(_neighbour.Address)!.Value, 0));
        }

        Assert.Null(policy.AllowedBytesPerSecond(_neighbour.Address));
        var status = Forward(7);
        Assert.Equal(CreditState.Normal, status.State);
        Assert.Null(status.AllowedBytesPerSecond);
        Assert.Equal(0.7, status.Usage, 6);

        status = Forward(1);
        Assert.Equal(CreditState.Throttled, status.State);
        Assert.Equal(64 * 1024, status.AllowedBytesPerSecond);
        Assert.Equal(64 * 1024, policy.AllowedBytesPerSecond(_neighbour.Address));
        Assert.Equal(Start.AddSeconds(2), status.Since);

        status = Forward(1);
        Assert.Equal(CreditState.Throttled, status.State);
        Assert.Equal(Start.AddSeconds(2), status.Since);

        status = Forward(1);
        Assert.Equal(CreditState.Suspended, status.State);
        Assert.Equal(0, policy.AllowedBytesPerSecond(_neighbour.Address));

        // A receipt for 9 of the 10 MiB: 100 unacknowledged of 1,000 is under the resume threshold.
        Assert.Equal(ReceiptError.None, book.Offer(Receipt.Create(_neighbour, _node.Address, 1, 9 * Receipt.BytesPerMiB, 900, _time.GetUtcNow()).Bytes));
        status = policy.Update(_neighbour.Address, Exposure.Of(book.AccountOf(_neighbour.Address)!.Value, 0));
        Assert.Equal(CreditState.Normal, status.State);
        Assert.Null(policy.AllowedBytesPerSecond(_neighbour.Address));

        Assert.Equal(
            [
                (CreditState.Normal, CreditState.Throttled, Start.AddSeconds(2)),
                (CreditState.Throttled, CreditState.Suspended, Start.AddSeconds(4)),
                (CreditState.Suspended, CreditState.Normal, Start.AddSeconds(4)),
            ],
            changes);
    }

    [Fact]
    public void Between_the_resume_and_throttle_thresholds_a_neighbour_keeps_its_state()
    {
        var policy = new CreditPolicy(Options(receiptLimit: 1000), _time);
        var neighbour = _neighbour.Address;
        Assert.Equal(CreditState.Normal, policy.Update(neighbour, new Exposure(700, 0)).State);
        Assert.Equal(CreditState.Suspended, policy.Update(neighbour, new Exposure(1000, 0)).State);
        Assert.Equal(CreditState.Throttled, policy.Update(neighbour, new Exposure(999, 0)).State);
        Assert.Equal(CreditState.Throttled, policy.Update(neighbour, new Exposure(600, 0)).State);
        Assert.Equal(CreditState.Normal, policy.Update(neighbour, new Exposure(500, 0)).State);
        Assert.Equal(CreditState.Normal, policy.Update(neighbour, new Exposure(790, 0)).State);
    }

    [Fact]
    public async Task An_unsettled_debt_suspends_until_the_ledger_settles_it()
    {
        var path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"skymesh-credit-{Guid.NewGuid():N}.db");
        try
        {
            using var ledger = EmbeddedLedger.Open(path, _time);
            var book = new ReceiptBook(_node.Address, _time);
            var policy = new CreditPolicy(Options(receiptLimit: 1000, settlementLimit: 5000), _time);
            CreditStatus Update() => policy.Update(_neighbour.Address,
                Exposure.Of(book.AccountOf(_neighbour.Address)!.Value, ledger.SettledOf(_neighbour.Address, _node.Address).Amount));

            // 50 MiB forwarded and acknowledged, none settled: 5,000 owed, at the settlement limit.
            book.Count(_neighbour.Address, 50 * Receipt.BytesPerMiB, Price);
            var receipt = Receipt.Create(_neighbour, _node.Address, 1, 50 * Receipt.BytesPerMiB, 5000, _time.GetUtcNow());
            Assert.Equal(ReceiptError.None, book.Offer(receipt.Bytes));
            var status = Update();
            Assert.Equal(CreditState.Suspended, status.State);
            Assert.Equal(1.0, status.Usage, 6);

            var settled = await ledger.SettleAsync(book.LatestReceipt(_neighbour.Address)!, TestContext.Current.CancellationToken);
            Assert.Equal(SettlementOutcome.Settled, settled.Outcome);
            status = Update();
            Assert.Equal(CreditState.Normal, status.State);
            Assert.Equal(0, status.Usage);
        }
        finally
        {
            foreach (var suffix in new[] { "", "-wal", "-shm" })
                File.Delete(path + suffix);
        }
    }

    [Fact]
    public void Each_neighbour_has_its_own_limits_and_state()
    {
        using var trusted = NodeKey.Generate();
        var policy = new CreditPolicy(Options(receiptLimit: 1000), _time);
        policy.SetLimits(trusted.Address, new CreditLimits(100_000));
        Assert.Equal(CreditState.Suspended, policy.Update(_neighbour.Address, new Exposure(5000, 0)).State);
        Assert.Equal(CreditState.Normal, policy.Update(trusted.Address, new Exposure(5000, 0)).State);
        Assert.Equal(0, policy.AllowedBytesPerSecond(_neighbour.Address));
        Assert.Null(policy.AllowedBytesPerSecond(trusted.Address));
        Assert.Equal(new CreditLimits(100_000), policy.LimitsOf(trusted.Address));
        Assert.Throws<ArgumentOutOfRangeException>(() => policy.SetLimits(trusted.Address, new CreditLimits(0)));
        Assert.Throws<ArgumentException>(() => new CreditPolicy(new CreditOptions { ThrottleAt = 0.5, ResumeAt = 0.8 }));
    }
}
