using Skymesh.Exchange.Matching;
using Skymesh.Ledger;

namespace Skymesh.Exchange.Tests;

/// <summary>An exchange kept in a directory: what it reports is durable, it knows its own assets, and one process holds it.</summary>
public sealed class ExchangeStoreTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("skymesh-store-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Transfers_are_made_once_per_key_and_survive_a_reopen()
    {
        using (var store = ExchangeStore.Open(_dir))
        {
            Assert.Equal(RejectReason.None, store.Deposit("alice", "SKY", 5_000, "d-1").Rejected);
            var results = await store.TransferAsync(
            [
                new LedgerTransfer("alice", "bob", "SKY", 1_200, "t-1"),
                new LedgerTransfer("alice", "bob", "SKY", 1_200, "t-1"),
                new LedgerTransfer("alice", "bob", "SKY", 9_000, "t-2"),
                new LedgerTransfer("alice", "alice", "SKY", 1, "t-3"),
                new LedgerTransfer("alice", "bob", "DOGE", 1, "t-4"),
                new LedgerTransfer("nobody", "bob", "SKY", 1, "t-5"),
            ], Cancel);
            Assert.Equal(
                [TransferOutcome.Done, TransferOutcome.AlreadyDone, TransferOutcome.InsufficientFunds, TransferOutcome.Rejected, TransferOutcome.Rejected, TransferOutcome.InsufficientFunds],
                results.Select(r => r.Outcome));
            Assert.Equal(3_800, await store.GetBalanceAsync("alice", "SKY", Cancel));
            Assert.Equal(1_200, await store.GetBalanceAsync("bob", "SKY", Cancel));
            Assert.Equal(0, await store.GetBalanceAsync("nobody", "SKY", Cancel));
            Assert.Equal(6, await store.GetScaleAsync("SKY", Cancel));
            Assert.Equal(8, await store.GetScaleAsync("BTC", Cancel));
            Assert.Null(await store.GetScaleAsync("DOGE", Cancel));
        }
        using var reopened = ExchangeStore.Open(_dir);
        Assert.Equal(1_200, reopened.Available("bob", "SKY"));
        Assert.Equal(TransferOutcome.AlreadyDone, (await reopened.TransferAsync([new LedgerTransfer("alice", "bob", "SKY", 1_200, "t-1")], Cancel))[0].Outcome);
        Assert.Equal(RejectReason.DuplicateKey, reopened.Deposit("alice", "SKY", 5_000, "d-1").Rejected);
        Assert.Equal(3_800, reopened.Available("alice", "SKY"));
        reopened.CheckConservation();
    }

    [Fact]
    public void A_directory_keeps_the_assets_it_was_made_with_and_refuses_others()
    {
        ExchangeStore.Open(_dir).Dispose();
        var other = new ExchangeDefinition([new AssetSpec("SKY", 6), new AssetSpec("ETH", 18)], []);
        var error = Assert.Throws<InvalidDataException>(() => ExchangeStore.Open(_dir, other));
        Assert.Contains("other assets", error.Message);
        File.WriteAllText(Path.Combine(_dir, ExchangeStore.DefinitionFile), "{\"assets\": [{\"code\": \"SKY\", \"scale\": 40}], \"markets\": []}");
        Assert.Contains("scale", Assert.Throws<InvalidDataException>(() => ExchangeStore.Open(_dir)).Message);
    }

    [Fact]
    public void Only_one_process_holds_an_exchange_open()
    {
        using var first = ExchangeStore.Open(_dir);
        Assert.ThrowsAny<IOException>(() => ExchangeStore.Open(_dir));
        // The first goes on undisturbed.
        Assert.Equal(RejectReason.None, first.Deposit("alice", "BTC", 1, "d").Rejected);
    }

    [Theory]
    [InlineData("12.5", 6, 12_500_000L)]
    [InlineData("0.000001", 6, 1L)]
    [InlineData(".5", 8, 50_000_000L)]
    [InlineData("7", 0, 7L)]
    [InlineData("9223372036854.775807", 6, long.MaxValue)]
    public void Amounts_are_read_exactly(string text, int scale, long units)
    {
        Assert.True(AssetAmount.TryParse(text, scale, out var parsed));
        Assert.Equal(units, parsed);
        Assert.Equal(units, AssetAmount.TryParse(AssetAmount.Format(units, scale), scale, out var again) ? again : -1);
    }

    [Theory]
    [InlineData("1.0000001", 6)]
    [InlineData("-1", 6)]
    [InlineData("1e3", 6)]
    [InlineData("1.2.3", 6)]
    [InlineData(".", 6)]
    [InlineData("", 6)]
    [InlineData("9223372036854.775808", 6)]
    [InlineData("1.5", 0)]
    public void Amounts_that_are_not_exact_are_refused(string text, int scale) => Assert.False(AssetAmount.TryParse(text, scale, out _));

    [Fact]
    public void Amounts_are_written_with_every_decimal_place() =>
        Assert.Equal(["12.500000", "-0.00000001", "0", "0.001000"], new[] { AssetAmount.Format(12_500_000, 6), AssetAmount.Format(-1, 8), AssetAmount.Format(0, 0), AssetAmount.Format(1000, 6) });
}
