using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// The exchange as a person runs it: `skymesh broker`, `skymesh exchange serve` and the client commands as separate
/// processes, with the simulated chains driven from the command line; the exchange killed with SIGKILL and started again.
/// </summary>
public sealed class ExchangeServeTests : IAsyncDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("skymesh-exchange-e2e-").FullName;
    private readonly List<Skymesh> _processes = [];
    private string _broker = "";
    private string _exchange = "";

    private static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    private async Task<Skymesh> ServeAsync()
    {
        var serve = Skymesh.Start("exchange", "serve", "--dir", Path.Combine(_dir, "ex"), "--broker", _broker, "--block-interval", "0.2",
            "--approve-above", "BTC=0.5");
        _processes.Add(serve);
        var line = await serve.WaitForLineAsync("clients: export SKYMESH_EXCHANGE=", TimeSpan.FromSeconds(60));
        _exchange = line.Split("SKYMESH_EXCHANGE=")[1].Split(' ')[0];
        return serve;
    }

    /// <summary>One client command with --json; its answer.</summary>
    private async Task<JsonElement> RunAsync(string key, params string[] arguments)
    {
        var (code, output) = await Skymesh.RunAsync([.. arguments, "--broker", _broker, "--exchange", _exchange, "--key", Path.Combine(_dir, key), "--json"]);
        Assert.True(code == 0, $"skymesh {string.Join(' ', arguments)} exited with {code}:\n{output}");
        return JsonDocument.Parse(output.Trim().Split('\n')[^1]).RootElement.Clone();
    }

    /// <summary>Asks until <paramref name="done"/> holds: the chain mines a block every 0.2 s and the exchange scans every second.</summary>
    private async Task<JsonElement> UntilAsync(string key, Func<JsonElement, bool> done, params string[] arguments)
    {
        for (var attempt = 0; ; attempt++)
        {
            var answer = await RunAsync(key, arguments);
            if (done(answer))
                return answer;
            Assert.True(attempt < 60, $"still not there after {attempt} tries: {answer}");
        }
    }

    [Fact]
    public async Task A_person_deposits_trades_withdraws_and_loses_nothing_when_the_exchange_is_killed()
    {
        _broker = $"127.0.0.1:{FreePort()}";
        var broker = Skymesh.Start("broker", "--listen", _broker);
        _processes.Add(broker);
        await broker.WaitForTextAsync("listening on", TimeSpan.FromSeconds(30));
        var serve = await ServeAsync();

        // Alice deposits SKY, Bob BTC, each to the address the exchange gives them, paid on the simulated chains.
        var aliceSky = (await RunAsync("alice.key", "exchange", "deposit-address", "SKY")).GetProperty("address").GetString()!;
        var bobBtc = (await RunAsync("bob.key", "exchange", "deposit-address", "BTC")).GetProperty("address").GetString()!;
        await RunAsync("alice.key", "exchange", "simchain", "pay", aliceSky, "100");
        await RunAsync("bob.key", "exchange", "simchain", "pay", bobBtc, "2");
        await UntilAsync("alice.key", a => a.GetProperty("deposits").EnumerateArray().Any(d => d.GetProperty("state").GetString() == "credited"), "exchange", "deposits");
        await UntilAsync("bob.key", a => a.GetProperty("deposits").EnumerateArray().Any(d => d.GetProperty("state").GetString() == "credited"), "exchange", "deposits");

        // They trade: Alice offers 40 SKY, Bob buys 10 of them.
        var offer = (await RunAsync("alice.key", "exchange", "order", "sell", "40", "SKY/BTC", "--price", "0.001", "--client-id", "offer-1")).GetProperty("order");
        var bought = (await RunAsync("bob.key", "exchange", "order", "buy", "10", "SKY/BTC", "--price", "0.001")).GetProperty("order");
        Assert.Equal("filled", bought.GetProperty("status").GetString());
        var book = await RunAsync("bob.key", "exchange", "book", "SKY/BTC");
        Assert.Equal("30.000000", book.GetProperty("asks")[0][1].GetString());

        // The exchange is killed outright, then started again: the order, the balances and the deposits are all there.
        var balancesBefore = (await RunAsync("alice.key", "exchange", "balance")).GetProperty("balances").GetRawText();
        await serve.CrashAsync(TimeSpan.FromSeconds(30));
        await ServeAsync();
        Assert.Equal(balancesBefore, (await RunAsync("alice.key", "exchange", "balance")).GetProperty("balances").GetRawText());
        var open = (await RunAsync("alice.key", "exchange", "orders")).GetProperty("orders");
        Assert.Equal(offer.GetProperty("id").GetInt64(), Assert.Single(open.EnumerateArray()).GetProperty("id").GetInt64());
        var again = (await RunAsync("alice.key", "exchange", "order", "sell", "40", "SKY/BTC", "--price", "0.001", "--client-id", "offer-1")).GetProperty("order");
        Assert.True(again.GetProperty("duplicate").GetBoolean());

        // Bob withdraws the SKY he bought to an address of his own wallet; it is broadcast once and confirmed.
        var wallet = (await RunAsync("carol.key", "exchange", "deposit-address", "SKY")).GetProperty("address").GetString()!;
        var withdrawal = (await RunAsync("bob.key", "exchange", "withdraw", "SKY", "10", wallet, "--idempotency-key", "w-1")).GetProperty("withdrawal");
        Assert.Contains(withdrawal.GetProperty("state").GetString(), new[] { "approved", "broadcast", "confirmed" });
        await UntilAsync("bob.key", a => a.GetProperty("withdrawals")[0].GetProperty("state").GetString() == "confirmed", "exchange", "withdrawals");
        var bob = (await RunAsync("bob.key", "exchange", "balance")).GetProperty("balances").EnumerateArray().ToDictionary(b => b.GetProperty("asset").GetString()!, b => b.GetProperty("available").GetString());
        Assert.Equal("0.000000", bob["SKY"]);
        // Carol, paid from the exchange to her deposit address, is credited once it confirms.
        await UntilAsync("carol.key", a => a.GetProperty("deposits").EnumerateArray().Any(d => d.GetProperty("state").GetString() == "credited"), "exchange", "deposits");

        // A withdrawal beyond the balance is refused with its code and exit 1.
        var (code, output) = await Skymesh.RunAsync("exchange", "withdraw", "BTC", "5", bobBtc, "--broker", _broker, "--exchange", _exchange, "--key", Path.Combine(_dir, "bob.key"));
        Assert.Equal(1, code);
        Assert.Contains("insufficient_funds", output, StringComparison.Ordinal);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var process in _processes)
            await process.DisposeAsync();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
