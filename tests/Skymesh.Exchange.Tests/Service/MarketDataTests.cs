using Skymesh.Exchange.Service;
using Skymesh.Identity;

namespace Skymesh.Exchange.Tests.Service;

/// <summary>The market-data feed over the real broker, as a client keeping a book from it sees it.</summary>
public sealed class MarketDataTests
{
    private static CancellationToken Token => TestContext.Current.CancellationToken;

    [Fact]
    public async Task A_client_that_loses_market_data_finds_the_gap_and_resynchronises_to_the_servers_book()
    {
        await using var world = await ExchangeWorld.StartAsync();
        using var alice = NodeKey.Generate();
        using var bob = NodeKey.Generate();
        var maker = await world.TraderAsync(alice);
        var taker = await world.TraderAsync(bob);
        await world.FundAsync(maker, "SKY", 1_000_000_000);
        await world.FundAsync(taker, "BTC", 1_000_000_000);
        var reader = await world.TraderAsync(id: "reader");
        var lossless = await world.TraderAsync(id: "lossless");
        var book = await reader.SubscribeBookAsync("SKY/BTC", Token);
        var reference = await lossless.SubscribeBookAsync("SKY/BTC", Token);
        // A lossy link: every seventh diff never arrives.
        var seen = 0;
        book.DropFilter = m => m.GetProperty("type").GetString() == "diff" && ++seen % 7 == 0;

        var random = new Random(5);
        var resting = new List<long>();
        for (var i = 0; i < 60; i++)
        {
            var price = $"0.0{random.Next(10, 30)}";
            if (i % 5 == 4 && resting.Count > 0)
            {
                // The order may have traded away since: then there is nothing to cancel.
                var id = resting[^1];
                resting.RemoveAt(resting.Count - 1);
                var open = await maker.OrdersAsync(cancellationToken: Token);
                if (open.Any(o => o.GetProperty("id").GetInt64() == id))
                    await maker.CancelAsync(id, Token);
            }
            else if (i % 3 == 2)
            {
                await taker.PlaceAsync("SKY/BTC", "buy", $"{random.Next(1, 4)}", price, timeInForce: "ioc", cancellationToken: Token);
            }
            else
            {
                var order = await maker.PlaceAsync("SKY/BTC", "sell", $"{random.Next(1, 5)}.5", price, cancellationToken: Token);
                if (order.GetProperty("status").GetString() == "open")
                    resting.Add(order.GetProperty("id").GetInt64());
            }
        }
        var server = await lossless.CallAsync("book", new { market = "SKY/BTC" }, Token);
        var last = server.GetProperty("seq").GetInt64();
        // A heartbeat tells the lossy reader the last number, in case the last diff was the one it lost.
        await world.Service.HeartbeatAsync();
        await book.WaitForSequenceAsync(last, Token);
        await reference.WaitForSequenceAsync(last, Token);

        Assert.True(book.Gaps > 0);
        Assert.True(book.Resyncs > 1);
        Assert.Equal(0, reference.Gaps);
        var asks = server.GetProperty("asks").EnumerateArray().Select(l => new BookLevel(l[0].GetString()!, l[1].GetString()!)).ToList();
        var bids = server.GetProperty("bids").EnumerateArray().Select(l => new BookLevel(l[0].GetString()!, l[1].GetString()!)).ToList();
        Assert.NotEmpty(asks);
        Assert.Equal(asks, book.Asks);
        Assert.Equal(bids, book.Bids);
        Assert.Equal(asks, reference.Asks);
        Assert.Equal(server.GetProperty("checksum").GetUInt32(), MarketData.BookChecksum(book.Bids, book.Asks));
    }
}
