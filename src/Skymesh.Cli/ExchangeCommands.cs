using System.CommandLine;
using System.Text.Json;
using Skymesh.Exchange;
using Skymesh.Exchange.Matching;
using Skymesh.Node;

namespace Skymesh.Cli;

/// <summary>
/// <c>skymesh exchange serve</c>, the API client commands (ExchangeApiCommands.cs), and <c>skymesh exchange ledger
/// balances|deposit|withdraw</c>: an operator's hands on a stopped exchange's directory — the accounts a node settles its
/// neighbours' receipts on (node.json <c>settlement.exchange</c>). The directory is made on first use.
/// </summary>
internal static partial class ExchangeCommands
{
    private static readonly Option<string> Dir = new("--dir")
    {
        Description = "The exchange's directory (exchange.json, journal, snapshot); made with SKY and BTC when it holds none. A node settling on it holds it open.",
        Required = true,
    };

    private static readonly Option<bool> Json = new("--json") { Description = "Print JSON." };

    public static Command Create()
    {
        var command = new Command("exchange", "Run an exchange (serve), trade and move coins through its API over SSMP, or keep a stopped exchange's accounts (ledger).");
        command.Subcommands.Add(CreateServe());
        foreach (var client in CreateClientCommands())
            command.Subcommands.Add(client);
        var ledger = new Command("ledger", "An exchange directory's accounts while no exchange runs on it: see balances, credit deposits, debit withdrawals (each durable before it is reported).");
        ledger.Subcommands.Add(CreateBalances());
        ledger.Subcommands.Add(CreateMovement(deposit: true));
        ledger.Subcommands.Add(CreateMovement(deposit: false));
        command.Subcommands.Add(ledger);
        return command;
    }

    private static Command CreateBalances()
    {
        var command = new Command("balances", "Every account's available and held balance, and whether every asset is conserved.") { Dir, Json };
        command.SetAction(parse =>
        {
            using var store = Open(parse.GetValue(Dir)!);
            var scales = store.Definition.Assets.ToDictionary(a => a.Code, a => a.Scale);
            var rows = store.Balances();
            string conservation;
            try
            {
                store.CheckConservation();
                conservation = "ok";
            }
            catch (InvalidOperationException e)
            {
                conservation = e.Message;
            }
            if (parse.GetValue(Json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    commands = store.Committed,
                    conservation,
                    accounts = rows.Select(r => new { owner = r.Owner, asset = r.Asset, available = AssetAmount.Format(r.Available, scales[r.Asset]), held = AssetAmount.Format(r.Held, scales[r.Asset]) }),
                }, NodeApi.Json));
                return conservation == "ok" ? 0 : 1;
            }
            Console.WriteLine($"exchange {store.Directory}: {store.Committed:N0} commands, assets {string.Join(", ", store.Definition.Assets.Select(a => $"{a.Code} ({a.Scale} places)"))}");
            if (rows.Count == 0)
                Console.WriteLine("  no accounts yet");
            var width = rows.Count == 0 ? 0 : rows.Max(r => r.Owner.Length);
            foreach (var (owner, asset, available, held) in rows)
                Console.WriteLine($"  {owner.PadRight(width)}  {asset,-4} {AssetAmount.Format(available, scales[asset]),24} available {AssetAmount.Format(held, scales[asset]),24} held");
            Console.WriteLine($"conservation: {conservation}");
            return conservation == "ok" ? 0 : 1;
        });
        return command;
    }

    private static Command CreateMovement(bool deposit)
    {
        var owner = new Option<string>("--owner") { Description = "The account's owner: a node address (what settlement pays) or any key up to 256 characters.", Required = true };
        var asset = new Option<string>("--asset") { Description = "The asset's code.", DefaultValueFactory = _ => "SKY" };
        var amount = new Option<string>("--amount") { Description = "In whole coins, exactly (\"12.5\"); at most the asset's decimal places.", Required = true };
        var key = new Option<string?>("--key")
        {
            Description = "Idempotency key: the same key again changes nothing (default: a new one, printed). Give the chain transaction's id for a deposit.",
        };
        var command = new Command(deposit ? "deposit" : "withdraw",
            deposit ? "Credit a deposit to an account (opened if new)." : "Debit a withdrawal from an account's available balance.")
        {
            Dir, owner, asset, amount, key, Json,
        };
        command.SetAction(parse =>
        {
            var who = parse.GetValue(owner)!;
            if (who.Length is 0 or > 256)
                throw new UsageException("--owner: must be 1 to 256 characters.");
            var idempotency = parse.GetValue(key) ?? $"cli-{Guid.NewGuid():N}";
            if (idempotency.Length is 0 or > 256)
                throw new UsageException("--key: must be 1 to 256 characters.");
            using var store = Open(parse.GetValue(Dir)!);
            var code = parse.GetValue(asset)!;
            var spec = store.Definition.Assets.FirstOrDefault(a => a.Code == code)
                ?? throw new UsageException($"--asset: this exchange has no {code}; it has {string.Join(", ", store.Definition.Assets.Select(a => a.Code))}.");
            if (!AssetAmount.TryParse(parse.GetValue(amount), spec.Scale, out var units) || units == 0)
                throw new UsageException($"--amount: '{parse.GetValue(amount)}' is not a positive amount of {code} with at most {spec.Scale} decimal places.");
            var outcome = deposit ? store.Deposit(who, code, units, idempotency) : store.Withdraw(who, code, units, idempotency);
            var available = store.Available(who, code);
            var refused = outcome.Rejected;
            if (parse.GetValue(Json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    command = outcome.Sequence,
                    done = refused == RejectReason.None,
                    refused = refused == RejectReason.None ? null : refused.ToString(),
                    key = idempotency,
                    available = AssetAmount.Format(available, spec.Scale),
                }, NodeApi.Json));
            }
            else if (refused == RejectReason.DuplicateKey)
            {
                Console.WriteLine($"nothing changed: key {idempotency} was used before; {who} has {AssetAmount.Format(available, spec.Scale)} {code} available");
            }
            else if (refused == RejectReason.None)
            {
                Console.WriteLine($"{(deposit ? "deposited" : "withdrew")} {AssetAmount.Format(units, spec.Scale)} {code} {(deposit ? "to" : "from")} {who} (key {idempotency}); available now {AssetAmount.Format(available, spec.Scale)} {code}");
            }
            if (refused is not (RejectReason.None or RejectReason.DuplicateKey))
            {
                var why = refused == RejectReason.InsufficientFunds ? $"{who} has only {AssetAmount.Format(available, spec.Scale)} {code} available" : refused.ToString();
                if (!parse.GetValue(Json))
                    Console.Error.WriteLine($"skymesh: refused: {why}");
                return 1;
            }
            return 0;
        });
        return command;
    }

    private static ExchangeStore Open(string directory)
    {
        try
        {
            return ExchangeStore.Open(Path.GetFullPath(directory));
        }
        catch (IOException e) when (e is not FileNotFoundException and not DirectoryNotFoundException && e.HResult is 11 or 0x20 or unchecked((int)0x80070020))
        {
            throw new IOException($"the exchange in {directory} is open in another process (a node settling on it holds it open): {e.Message}", e);
        }
        catch (InvalidDataException e)
        {
            throw new UsageException($"--dir: {e.Message}");
        }
    }
}
