using System.CommandLine;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Skymesh.Exchange;
using Skymesh.Exchange.Chains;
using Skymesh.Exchange.Client;
using Skymesh.Exchange.Service;
using Skymesh.Identity;
using Skymesh.Ssmp.Client;

namespace Skymesh.Cli;

/// <summary>
/// <c>skymesh exchange serve</c> runs an exchange on a directory behind an SSMP broker; the other commands are its API's
/// client (docs/exchange-api.md): each one request, printed for a person or, with --json, as the API's answer.
/// </summary>
internal static partial class ExchangeCommands
{
    private static readonly Option<string> Broker = new("--broker")
    {
        Description = "The SSMP broker, HOST:PORT (default: $SKYMESH_BROKER, else 127.0.0.1:8787).",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SKYMESH_BROKER") is { Length: > 0 } env ? env : "127.0.0.1:8787",
        HelpName = "host:port",
    };

    private static readonly Option<string> BrokerName = new("--broker-name")
    {
        Description = "The broker's name, which key logins are signed for (its --name).",
        DefaultValueFactory = _ => Ssmp.Broker.SsmpBrokerOptions.DefaultServerName,
    };

    private static readonly Option<string> ExchangeId = new("--exchange")
    {
        Description = "The exchange's SSMP id, as `skymesh exchange serve` prints it (default: $SKYMESH_EXCHANGE, else 'exchange').",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SKYMESH_EXCHANGE") is { Length: > 0 } env ? env : "exchange",
    };

    private static readonly Option<string> Topics = new("--name")
    {
        Description = "The exchange's topic prefix (its --name).",
        DefaultValueFactory = _ => "exchange",
    };

    private static readonly Option<string> AccountKey = new("--key")
    {
        Description = "The account's key file (made, owner-only, when missing; default: $SKYMESH_ACCOUNT_KEY, else account.key here). Its address is the account.",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SKYMESH_ACCOUNT_KEY") is { Length: > 0 } env ? env : "account.key",
        HelpName = "file",
    };

    private static readonly Option<bool> SignedRequests = new("--signed")
    {
        Description = "Sign every request with the key (through a broker the exchange does not trust) instead of logging in with it.",
    };

    private static Command CreateServe()
    {
        var dir = new Option<string>("--dir") { Description = "The exchange's directory: exchange.json, journal, funds.db, chains.key, the simulated chains. Made when missing.", Required = true };
        var name = new Option<string>("--name") { Description = "Prefix of the exchange's topics (NAME.md.MARKET, NAME.sessions).", DefaultValueFactory = _ => "exchange" };
        var key = new Option<string?>("--exchange-key")
        {
            Description = "The exchange's own key file: it logs into the broker with the key scheme, so nobody can take its id (default: DIR/exchange.key).",
            HelpName = "file",
        };
        var id = new Option<string?>("--id") { Description = "Log in with the open scheme under this id instead of a key (development only: anyone could take the id)." };
        var operators = new Option<string[]>("--operator") { Description = "Account addresses that may approve and reject withdrawals.", AllowMultipleArgumentsPerToken = true };
        var confirmations = new Option<string[]>("--confirmations") { Description = "Confirmations before a deposit is credited, per coin: SKY=2 BTC=3 (the defaults).", AllowMultipleArgumentsPerToken = true };
        var approveAbove = new Option<string[]>("--approve-above") { Description = "Withdrawals above this wait for an operator, per coin: BTC=0.5 SKY=10000 (default: none wait).", AllowMultipleArgumentsPerToken = true };
        var dailyLimit = new Option<string[]>("--daily-limit") { Description = "Most one account may withdraw in 24 hours, per coin: BTC=2 SKY=100000.", AllowMultipleArgumentsPerToken = true };
        var blockInterval = new Option<double>("--block-interval") { Description = "Seconds between blocks of the simulated chains.", DefaultValueFactory = _ => 10 }.Within(0.01, 86_400, "seconds");
        var rate = new Option<int>("--rate-limit") { Description = "Requests a second per account (a burst of twice that).", DefaultValueFactory = _ => 1000 }.Within(1, 100_000_000);
        var untrusted = new Option<bool>("--untrusted-broker") { Description = "Do not take the broker's logins as proof: every request must be signed." };
        var btcRpc = new Option<string?>("--btc-rpc")
        {
            Description = "Serve BTC from a Bitcoin Core node instead of the simulated chain: its JSON-RPC URL, e.g. http://127.0.0.1:8332/ (tested against recorded responses only, not a live node).",
            HelpName = "url",
        };
        var btcCookie = new Option<string?>("--btc-rpc-cookie") { Description = "With --btc-rpc: bitcoind's .cookie file (else $SKYMESH_BTC_RPC_USER and $SKYMESH_BTC_RPC_PASSWORD).", HelpName = "file" };
        var btcWallet = new Option<string>("--btc-wallet") { Description = "With --btc-rpc: the descriptor wallet that holds the exchange's keys (\"\" for the default wallet).", DefaultValueFactory = _ => "exchange" };
        var btcNetwork = new Option<string>("--btc-network") { Description = "With --btc-rpc: main, test, regtest or signet.", DefaultValueFactory = _ => "main" };
        var logLevel = CliSupport.LogLevelOption();
        var command = new Command("serve", "Run an exchange: SKY and BTC on simulated chains, the API and market data over the SSMP broker.")
        {
            dir, Broker, BrokerName, name, key, id, operators, confirmations, approveAbove, dailyLimit, blockInterval, rate, untrusted,
            btcRpc, btcCookie, btcWallet, btcNetwork, logLevel,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var directory = Path.GetFullPath(parse.GetValue(dir)!);
            Directory.CreateDirectory(directory);
            var definition = LoadDefinition(directory);
            var coins = new Dictionary<string, CoinOptions>();
            foreach (var asset in definition.Assets)
            {
                var confirm = PerCoin<int>(parse.GetValue(confirmations), "--confirmations", asset, text => int.TryParse(text, out var n) && n is >= 1 and <= 1000 ? n : null)
                    ?? (asset.Code == "BTC" ? 3 : 2);
                var above = PerCoin(parse.GetValue(approveAbove), "--approve-above", asset, text => AssetAmount.TryParse(text, asset.Scale, out var u) ? u : (long?)null);
                var daily = PerCoin(parse.GetValue(dailyLimit), "--daily-limit", asset, text => AssetAmount.TryParse(text, asset.Scale, out var u) ? u : (long?)null);
                coins[asset.Code] = new CoinOptions
                {
                    Confirmations = confirm,
                    Withdrawals = new WithdrawalLimits { ApprovalThreshold = above ?? long.MaxValue, PerAccountDaily = daily ?? long.MaxValue, Confirmations = confirm },
                };
            }
            foreach (var address in parse.GetValue(operators) ?? [])
            {
                if (!NodeAddress.TryParse(address, out _))
                    throw new UsageException($"--operator: '{address}' is not an account address (64 hex digits).");
            }
            using var loggers = CliSupport.Logging(parse.GetValue(logLevel));
            var time = TimeProvider.System;
            var seed = ChainSeed(directory);
            var chains = new List<SimulatedChain>();
            var adapters = new List<IChainAdapter>();
            if (parse.GetValue(btcRpc) is { } rpc)
                adapters.Add(BitcoinCore(rpc, parse.GetValue(btcCookie), parse.GetValue(btcWallet)!, parse.GetValue(btcNetwork)!, seed));
            foreach (var asset in definition.Assets.Where(a => a.Code is "SKY" || (a.Code is "BTC" && parse.GetValue(btcRpc) is null)))
            {
                var chain = new SimulatedChain(new SimulatedChainOptions(asset.Code)
                {
                    StateFile = Path.Combine(directory, $"simchain-{asset.Code.ToLowerInvariant()}.json"),
                    BlockInterval = TimeSpan.FromSeconds(parse.GetValue(blockInterval)),
                }, time);
                chains.Add(chain);
                adapters.Add(SimulatedChainAdapter.Create(chain, seed));
            }
            var (host, port) = CliSupport.ParseHostPort(parse.GetValue(Broker)!, "--broker");
            var ssmp = new SsmpClientOptions { Host = host, Port = port, ServerName = parse.GetValue(BrokerName)!, LoggerFactory = loggers };
            NodeKey? exchangeKey = null;
            if (parse.GetValue(id) is { } openId)
            {
                ssmp.Id = openId;
            }
            else
            {
                exchangeKey = NodeKeyFile.LoadOrCreate(parse.GetValue(key) ?? Path.Combine(directory, "exchange.key"));
                ssmp.Key = exchangeKey;
                ssmp.Scheme = "key";
            }
            var options = new ExchangeServiceOptions
            {
                Directory = directory,
                Name = parse.GetValue(name)!,
                Coins = coins,
                Operators = [.. parse.GetValue(operators) ?? []],
                RateLimitPerSecond = parse.GetValue(rate),
                RateLimitBurst = parse.GetValue(rate) * 2,
                SessionAuth = !parse.GetValue(untrusted),
            };
            using var signal = CliSupport.UntilSignal(cancellationToken);
            ExchangeService service;
            try
            {
                service = await ExchangeService.StartAsync(options, adapters, ssmp, time, loggers, background: true, signal.Token);
            }
            catch (Exception e) when (e is SsmpException or System.Net.Sockets.SocketException or TimeoutException)
            {
                throw new InvalidOperationException($"cannot log into the SSMP broker at {host}:{port}: {e.Message} (start one with `skymesh broker`)", e);
            }
            await using (service)
            {
                foreach (var chain in chains)
                    chain.Start();
                File.WriteAllText(Path.Combine(directory, "exchange.id"), service.Id + "\n");
                Console.WriteLine($"exchange {service.Id} on {host}:{port}: {string.Join(", ", service.Markets.Select(m => m.Symbol))}; {service.Committed:N0} commands in its journal");
                Console.WriteLine($"  clients: export SKYMESH_EXCHANGE={service.Id}   (market data on {string.Join(", ", service.Markets.Select(m => service.MarketTopic(m.Symbol)))})");
                Console.WriteLine($"  chains: {string.Join(", ", chains.Select(c => $"{c.Asset} simulated, height {c.Height}, a block every {parse.GetValue(blockInterval):0.##} s"))}"
                    + (parse.GetValue(btcRpc) is { } url ? $", BTC from Bitcoin Core at {url} ({parse.GetValue(btcNetwork)})" : ""));
                try
                {
                    await Task.Delay(Timeout.Infinite, signal.Token);
                }
                catch (OperationCanceledException)
                {
                }
                foreach (var chain in chains)
                    chain.Stop();
            }
            foreach (var chain in chains)
                chain.Dispose();
            exchangeKey?.Dispose();
            Console.WriteLine("exchange stopped; everything it acknowledged is in its journal");
            return 0;
        });
        return command;
    }

    /// <summary>The BTC adapter on a Bitcoin Core node; its deposit keys come from the exchange's chain seed.</summary>
    private static BitcoinCoreAdapter BitcoinCore(string url, string? cookie, string wallet, string network, byte[] seed)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri))
            throw new UsageException($"--btc-rpc: '{url}' is not a URL.");
        try
        {
            BitcoinAddressScheme.NetworkFromName(network);
            return new BitcoinCoreAdapter(new BitcoinCoreOptions(uri, Environment.GetEnvironmentVariable("SKYMESH_BTC_RPC_USER"),
                Environment.GetEnvironmentVariable("SKYMESH_BTC_RPC_PASSWORD"), cookie, wallet, network, seed));
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--btc-rpc: {e.Message}");
        }
    }

    private static ExchangeDefinition LoadDefinition(string directory)
    {
        try
        {
            return ExchangeDefinition.LoadOrCreate(directory);
        }
        catch (InvalidDataException e)
        {
            throw new UsageException($"--dir: {e.Message}");
        }
    }

    /// <summary>The seed every deposit address is derived from: 32 random bytes in DIR/chains.key, owner-only, made once.</summary>
    private static byte[] ChainSeed(string directory)
    {
        var path = Path.Combine(directory, "chains.key");
        if (File.Exists(path))
        {
            var bytes = File.ReadAllBytes(path);
            return bytes.Length == 32 ? bytes : throw new UsageException($"{path} is not a chain seed (32 bytes); restore it from a backup — it derives every deposit address.");
        }
        if (File.Exists(Path.Combine(directory, "funds.db")))
        {
            throw new UsageException(
                $"{path} is missing but this exchange has issued deposit addresses from it: restore it from a backup (a new seed would derive other addresses, and deposits to the old ones would never be seen).");
        }
        var seed = RandomNumberGenerator.GetBytes(32);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var file = new FileStream(path, options))
        {
            file.Write(seed);
            file.Flush(flushToDisk: true);
        }
        return seed;
    }

    private static T? PerCoin<T>(string[]? values, string option, AssetSpec asset, Func<string, T?> parse)
        where T : struct
    {
        foreach (var value in values ?? [])
        {
            var eq = value.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
                throw new UsageException($"{option}: '{value}' is not COIN=VALUE.");
            if (value[..eq] != asset.Code)
                continue;
            return parse(value[(eq + 1)..]) ?? throw new UsageException($"{option}: '{value[(eq + 1)..]}' is not a valid value for {asset.Code}.");
        }
        return null;
    }

    // ---- the client commands

    private static Command WithClient(Command command)
    {
        foreach (var option in new Option[] { Broker, BrokerName, ExchangeId, Topics, AccountKey, SignedRequests, Json })
            command.Options.Add(option);
        return command;
    }

    private static async Task<ExchangeClient> ConnectAsync(ParseResult parse, CancellationToken cancellationToken)
    {
        var (host, port) = CliSupport.ParseHostPort(parse.GetValue(Broker)!, "--broker");
        NodeKey key;
        try
        {
            key = NodeKeyFile.LoadOrCreate(parse.GetValue(AccountKey)!);
        }
        catch (NodeKeyFileException e)
        {
            throw new UsageException($"--key: {e.Message}");
        }
        try
        {
            return await ExchangeClient.ConnectAsync(new ExchangeClientOptions
            {
                Broker = new SsmpClientOptions { Host = host, Port = port, ServerName = parse.GetValue(BrokerName)!, Reconnect = false },
                Exchange = parse.GetValue(ExchangeId)!,
                Key = key,
                Signed = parse.GetValue(SignedRequests),
                Name = parse.GetValue(Topics)!,
            }, cancellationToken);
        }
        catch (Exception e) when (e is SsmpException or System.Net.Sockets.SocketException or IOException or TimeoutException)
        {
            throw new InvalidOperationException($"cannot log into the SSMP broker at {host}:{port}: {e.Message}", e);
        }
    }

    /// <summary>A client command: connects, runs <paramref name="run"/>, prints its answer (JSON with --json), and turns an API error into a message and exit 1.</summary>
    private static Command ClientCommand(string name, string description, IEnumerable<Symbol> symbols,
        Func<ParseResult, ExchangeClient, CancellationToken, Task<JsonElement>> run, Action<ParseResult, JsonElement> print)
    {
        var command = new Command(name, description);
        foreach (var symbol in symbols)
        {
            if (symbol is Option option)
                command.Options.Add(option);
            else if (symbol is Argument argument)
                command.Arguments.Add(argument);
        }
        WithClient(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            await using var client = await ConnectAsync(parse, cancellationToken);
            JsonElement answer;
            try
            {
                answer = await run(parse, client, cancellationToken);
            }
            catch (ExchangeApiException e)
            {
                if (parse.GetValue(Json))
                    Console.WriteLine(JsonSerializer.Serialize(new { error = new { code = e.Code, status = e.Status, message = e.Message } }));
                else
                    Console.Error.WriteLine($"skymesh: {name} refused ({e.Code}): {e.Message}");
                return 1;
            }
            if (parse.GetValue(Json))
                Console.WriteLine(answer.GetRawText());
            else
                print(parse, answer);
            return 0;
        });
        return command;
    }

    private static IEnumerable<Command> CreateClientCommands()
    {
        var side = new Argument<string>("side") { Description = "buy or sell." };
        side.AcceptOnlyFromAmong("buy", "sell");
        var quantity = new Argument<string>("quantity") { Description = "How much of the base coin, in decimals (\"1.5\")." };
        var market = new Argument<string>("market") { Description = "The market, e.g. SKY/BTC." };
        var price = new Option<string?>("--price") { Description = "Limit price: quote coin per one base coin, in decimals. Without it, a market order." };
        var tif = new Option<string?>("--tif") { Description = "gtc, ioc or fok (default gtc for limit, ioc for market)." };
        var postOnly = new Option<bool>("--post-only") { Description = "Refuse the order if it would trade at once." };
        var clientId = new Option<string?>("--client-id") { Description = "Your id for the order (1 to 64 characters): the same id again returns the first order instead of placing another. Without it the command makes one (auto-…), so that its own retry never places the order twice." };
        yield return ClientCommand("order", "Place an order.", [side, quantity, market, price, tif, postOnly, clientId],
            async (p, c, t) => await c.CallAsync("order.place", new
            {
                market = p.GetValue(market), side = p.GetValue(side), quantity = p.GetValue(quantity), price = p.GetValue(price),
                type = p.GetValue(price) is null ? "market" : "limit", timeInForce = p.GetValue(tif), postOnly = p.GetValue(postOnly) ? true : (bool?)null,
                clientOrderId = p.GetValue(clientId) ?? ExchangeClient.NewClientOrderId(),
            }, t),
            (_, a) => PrintOrder(a.GetProperty("order")));

        var orderId = new Argument<long?>("order-id") { Description = "The order's id.", Arity = ArgumentArity.ZeroOrOne };
        var all = new Option<bool>("--all") { Description = "Cancel every open order of the account (in --market only, when given)." };
        var marketOption = new Option<string?>("--market") { Description = "Only this market." };
        yield return ClientCommand("cancel", "Cancel an order, or all of them.", [orderId, all, marketOption],
            async (p, c, t) => p.GetValue(all) ? await c.CallAsync("order.cancelAll", new { market = p.GetValue(marketOption) }, t)
                : p.GetValue(orderId) is { } id ? await c.CallAsync("order.cancel", new { orderId = id }, t)
                : throw new UsageException("cancel: give an order id, or --all."),
            (_, a) =>
            {
                if (a.TryGetProperty("canceled", out var ids))
                    Console.WriteLine($"cancelled {ids.GetArrayLength()} order(s){(ids.GetArrayLength() > 0 ? ": " + string.Join(", ", ids.EnumerateArray().Select(i => i.GetInt64())) : "")}");
                else
                    PrintOrder(a.GetProperty("order"));
            });

        var status = new Option<string>("--status") { Description = "open, closed or all.", DefaultValueFactory = _ => "open" }.AcceptOnly("open", "closed", "all");
        yield return ClientCommand("orders", "The account's orders.", [status, marketOption],
            async (p, c, t) => await c.CallAsync("orders", new { status = p.GetValue(status), market = p.GetValue(marketOption) }, t),
            (_, a) =>
            {
                var orders = a.GetProperty("orders");
                if (orders.GetArrayLength() == 0)
                    Console.WriteLine("no orders");
                foreach (var order in orders.EnumerateArray())
                    PrintOrder(order);
            });

        yield return ClientCommand("fills", "The account's trades, newest first.", [marketOption],
            async (p, c, t) => await c.CallAsync("fills", new { market = p.GetValue(marketOption) }, t),
            (_, a) =>
            {
                foreach (var f in a.GetProperty("fills").EnumerateArray())
                    Console.WriteLine($"{f.GetProperty("tradeId").GetString(),-12} {f.GetProperty("market").GetString()} {f.GetProperty("side").GetString(),-4} {f.GetProperty("quantity").GetString()} at {f.GetProperty("price").GetString()}  fee {f.GetProperty("fee").GetString()} ({f.GetProperty("liquidity").GetString()}), order {f.GetProperty("orderId").GetInt64()}");
            });

        var depth = new Option<int>("--depth") { Description = "Levels a side.", DefaultValueFactory = _ => 10 }.Within(1, 100_000);
        yield return ClientCommand("book", "A market's order book (from the exchange's snapshot).", [market, depth],
            async (p, c, t) => await c.CallAsync("book", new { market = p.GetValue(market), depth = p.GetValue(depth) }, t),
            (_, a) =>
            {
                Console.WriteLine($"{a.GetProperty("market").GetString()} at sequence {a.GetProperty("seq").GetInt64()} (checksum {a.GetProperty("checksum").GetUInt32()})");
                var asks = a.GetProperty("asks").EnumerateArray().Reverse().ToList();
                foreach (var level in asks)
                    Console.WriteLine($"  ask {level[0].GetString(),20} {level[1].GetString(),20}");
                Console.WriteLine("  ---");
                foreach (var level in a.GetProperty("bids").EnumerateArray())
                    Console.WriteLine($"  bid {level[0].GetString(),20} {level[1].GetString(),20}");
            });

        yield return ClientCommand("balance", "The account's balances.", [],
            async (_, c, t) => await c.CallAsync("balances", null, t),
            (_, a) =>
            {
                Console.WriteLine($"account {a.GetProperty("account").GetString()}{(a.GetProperty("frozen").GetBoolean() ? "  FROZEN: it owes a reversed deposit" : "")}");
                foreach (var b in a.GetProperty("balances").EnumerateArray())
                    Console.WriteLine($"  {b.GetProperty("asset").GetString(),-4} {b.GetProperty("available").GetString(),22} available {b.GetProperty("held").GetString(),22} held{(b.GetProperty("owed").GetString()!.Trim('0', '.').Length > 0 ? $"  owes {b.GetProperty("owed").GetString()}" : "")}");
            });

        var asset = new Argument<string>("asset") { Description = "SKY or BTC." };
        yield return ClientCommand("deposit-address", "The account's deposit address for a coin.", [asset],
            async (p, c, t) => await c.CallAsync("deposit.address", new { asset = p.GetValue(asset) }, t),
            (_, a) => Console.WriteLine($"{a.GetProperty("address").GetString()}   ({a.GetProperty("asset").GetString()} on {a.GetProperty("network").GetString()}, credited after {a.GetProperty("confirmations").GetInt32()} confirmations)"));

        var amount = new Argument<string>("amount") { Description = "In decimals (\"0.25\")." };
        var address = new Argument<string>("address") { Description = "Where to pay." };
        var idempotency = new Option<string?>("--idempotency-key") { Description = "The same key again returns the same withdrawal (default: a new one, printed)." };
        yield return ClientCommand("withdraw", "Withdraw coins to an address.", [asset, amount, address, idempotency],
            async (p, c, t) => await c.CallAsync("withdraw", new
            {
                asset = p.GetValue(asset), amount = p.GetValue(amount), address = p.GetValue(address),
                key = p.GetValue(idempotency) ?? $"cli-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}",
            }, t),
            (_, a) => PrintWithdrawal(a.GetProperty("withdrawal")));

        var assetOption = new Option<string?>("--asset") { Description = "Only this coin." };
        yield return ClientCommand("deposits", "The account's deposits and where each stands (seen, confirming k/N, credited, reversed).", [assetOption],
            async (p, c, t) => await c.CallAsync("deposits", new { asset = p.GetValue(assetOption) }, t),
            (_, a) =>
            {
                var deposits = a.GetProperty("deposits");
                if (deposits.GetArrayLength() == 0)
                    Console.WriteLine("no deposits");
                foreach (var d in deposits.EnumerateArray())
                {
                    var confirmations = d.GetProperty("confirmations").ValueKind == JsonValueKind.Number ? d.GetProperty("confirmations").GetInt64().ToString(System.Globalization.CultureInfo.InvariantCulture) : "-";
                    Console.WriteLine($"{d.GetProperty("amount").GetString(),18} {d.GetProperty("asset").GetString(),-4} {d.GetProperty("state").GetString(),-10} {confirmations}/{d.GetProperty("required").GetInt32()}  tx {d.GetProperty("txId").GetString()}:{d.GetProperty("index").GetInt32()}");
                }
            });

        yield return ClientCommand("withdrawals", "The account's withdrawals and where each stands.", [assetOption],
            async (p, c, t) => await c.CallAsync("withdrawals", new { asset = p.GetValue(assetOption) }, t),
            (_, a) =>
            {
                var list = a.GetProperty("withdrawals");
                if (list.GetArrayLength() == 0)
                    Console.WriteLine("no withdrawals");
                foreach (var w in list.EnumerateArray())
                    PrintWithdrawal(w);
            });

        var withdrawalId = new Argument<long>("withdrawal-id") { Description = "The withdrawal's id." };
        yield return ClientCommand("approve", "Approve a held withdrawal (an operator).", [withdrawalId],
            async (p, c, t) => await c.CallAsync("admin.approve", new { id = p.GetValue(withdrawalId) }, t),
            (_, a) => PrintWithdrawal(a.GetProperty("withdrawal")));
        var reason = new Option<string>("--reason") { Description = "Why (kept with the withdrawal).", DefaultValueFactory = _ => "refused by the operator" };
        yield return ClientCommand("reject", "Reject a held withdrawal and refund it (an operator).", [withdrawalId, reason],
            async (p, c, t) => await c.CallAsync("admin.reject", new { id = p.GetValue(withdrawalId), reason = p.GetValue(reason) }, t),
            (_, a) => PrintWithdrawal(a.GetProperty("withdrawal")));

        yield return CreateSimChain();
    }

    private static Command CreateSimChain()
    {
        var command = new Command("simchain", "Drive the exchange's simulated chains: pay an address from outside, mine blocks, reorganise, take a chain down.");
        var address = new Argument<string>("address") { Description = "The address to pay (e.g. your deposit address)." };
        var amount = new Argument<string>("amount") { Description = "In decimals." };
        var asset = new Option<string?>("--asset") { Description = "SKY or BTC (default: told by the address's form)." };
        command.Subcommands.Add(ClientCommand("pay", "Pay an address, as a wallet outside the exchange would.", [address, amount, asset],
            async (p, c, t) => await c.CallAsync("simchain", new
            {
                action = "pay", address = p.GetValue(address), amount = p.GetValue(amount),
                asset = p.GetValue(asset) ?? (p.GetValue(address)!.StartsWith("bcrt1", StringComparison.Ordinal) || p.GetValue(address)!.StartsWith("bc1", StringComparison.Ordinal) ? "BTC" : "SKY"),
            }, t),
            (_, a) => Console.WriteLine($"paid: transaction {a.GetProperty("txId").GetString()} in the mempool; the chain is at height {a.GetProperty("height").GetInt64()}")));
        var coin = new Argument<string>("asset") { Description = "SKY or BTC." };
        var blocks = new Option<int>("--blocks") { Description = "How many.", DefaultValueFactory = _ => 1 }.Within(1, 1000);
        command.Subcommands.Add(ClientCommand("mine", "Mine blocks now.", [coin, blocks],
            async (p, c, t) => await c.CallAsync("simchain", new { action = "mine", asset = p.GetValue(coin), blocks = p.GetValue(blocks) }, t),
            (_, a) => Console.WriteLine($"height {a.GetProperty("height").GetInt64()}")));
        var depth = new Option<int>("--depth") { Description = "Blocks replaced.", DefaultValueFactory = _ => 1 }.Within(1, 100);
        var drop = new Option<string[]>("--drop") { Description = "Transactions double-spent away by the reorganisation.", AllowMultipleArgumentsPerToken = true };
        command.Subcommands.Add(ClientCommand("reorg", "Replace the last blocks (a reorganisation).", [coin, depth, drop],
            async (p, c, t) => await c.CallAsync("simchain", new { action = "reorg", asset = p.GetValue(coin), depth = p.GetValue(depth), drop = p.GetValue(drop) ?? [] }, t),
            (_, a) => Console.WriteLine($"reorganised; height {a.GetProperty("height").GetInt64()}")));
        var down = new Option<bool>("--up") { Description = "Bring it back up." };
        command.Subcommands.Add(ClientCommand("down", "Take a chain's node down (or --up again).", [coin, down],
            async (p, c, t) => await c.CallAsync("simchain", new { action = "down", asset = p.GetValue(coin), down = !p.GetValue(down) }, t),
            (_, a) => Console.WriteLine(a.GetProperty("down").GetBoolean() ? "down" : "up")));
        return command;
    }

    private static void PrintOrder(JsonElement o)
    {
        var price = o.GetProperty("price").ValueKind == JsonValueKind.String ? $"at {o.GetProperty("price").GetString()}" : "at market";
        Console.WriteLine($"order {o.GetProperty("id").GetInt64()}{(o.TryGetProperty("duplicate", out var d) && d.GetBoolean() ? " (already placed with this client id)" : "")}: {o.GetProperty("side").GetString()} {o.GetProperty("quantity").GetString()} {o.GetProperty("market").GetString()} {price} — {o.GetProperty("status").GetString()}, filled {o.GetProperty("filled").GetString()} for {o.GetProperty("filledValue").GetString()}, fees {o.GetProperty("fees").GetString()}");
    }

    private static void PrintWithdrawal(JsonElement w)
    {
        var tx = w.GetProperty("txId").ValueKind == JsonValueKind.String ? $", tx {w.GetProperty("txId").GetString()}" : "";
        var why = w.GetProperty("reason").ValueKind == JsonValueKind.String ? $" ({w.GetProperty("reason").GetString()})" : "";
        Console.WriteLine($"withdrawal {w.GetProperty("id").GetInt64()}: {w.GetProperty("amount").GetString()} {w.GetProperty("asset").GetString()} to {w.GetProperty("address").GetString()} — {w.GetProperty("state").GetString()}{why}{tx} (key {w.GetProperty("key").GetString()})");
    }
}
