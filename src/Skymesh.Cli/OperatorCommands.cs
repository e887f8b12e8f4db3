using System.CommandLine;
using System.Globalization;
using Skymesh.Node;

namespace Skymesh.Cli;

/// <summary>
/// The unit operations of a node's owner, each the same API call the dashboard makes (docs/dashboard.md): the dashboard's
/// address, the decisions that wait for a person and their policies, neighbours' credit, blocking, interfaces, the price
/// and exit rules, and apps.
/// </summary>
internal static partial class NodeCommands
{
    private static Command CreateDashboard()
    {
        var command = new Command("dashboard", "Print the address that opens this node's dashboard in a browser (it carries the node's token: keep it to yourself).") { Api, Token, DataDir };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var status = await client.StatusAsync(cancellationToken);
            Console.WriteLine($"dashboard of node {status.Address}:");
            Console.WriteLine($"  {client.DashboardAddress ?? throw new UsageException("no API token found: give --data-dir or --token")}");
            return 0;
        });

        var list = new Command("nodes", "List the other nodes this dashboard steers, and whether each answers.") { Api, Token, DataDir, Json };
        list.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var nodes = await client.DashboardNodesAsync(cancellationToken);
            if (Print(parse, nodes))
                return 0;
            Table(["NAME", "API", "ANSWERS"], nodes.Select(n => new[] { n.Name, n.Api, n.Reachable ? "yes" : $"no ({n.Error})" }));
            return 0;
        });
        var name = new Argument<string>("name") { Description = "What the dashboard calls the node (letters, digits, '.', '_', '-')." };
        var nodeApi = new Option<string>("--node-api") { Description = "The other node's local API, address:port (it must listen where this node reaches it).", Required = true };
        var nodeToken = new Option<string?>("--node-token") { Description = "The other node's API token (or --node-data-dir)." };
        var nodeDataDir = new Option<string?>("--node-data-dir") { Description = "The other node's data directory, to read its token from." };
        var add = new Command("add", "Add another node to this node's dashboard (its API token is kept in this node's data directory, owner-only).") { name, nodeApi, nodeToken, nodeDataDir, Api, Token, DataDir };
        add.SetAction(async (parse, cancellationToken) =>
        {
            var otherApi = parse.GetValue(nodeApi)!;
            var otherToken = parse.GetValue(nodeToken)
                ?? (parse.GetValue(nodeDataDir) is { } dir ? ApiToken.Find(otherApi, dir) ?? throw new UsageException($"--node-data-dir: no {ApiToken.FileName} in {dir}") : ApiToken.Find(otherApi))
                ?? throw new UsageException("give the other node's token: --node-token, or --node-data-dir with its data directory");
            using var client = Client(parse);
            var added = await client.AddDashboardNodeAsync(parse.GetValue(name)!, otherApi, otherToken, cancellationToken);
            Console.WriteLine($"added {added.Name} ({added.Api}) to the dashboard");
            return 0;
        });
        var removeName = new Argument<string>("name") { Description = "The node's name on the dashboard." };
        var remove = new Command("remove", "Remove a node from this node's dashboard.") { removeName, Api, Token, DataDir };
        remove.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            await client.RemoveDashboardNodeAsync(parse.GetValue(removeName)!, cancellationToken);
            Console.WriteLine("removed");
            return 0;
        });
        command.Subcommands.Add(list);
        command.Subcommands.Add(add);
        command.Subcommands.Add(remove);
        return command;
    }

    private static Command CreateDecisions()
    {
        var command = new Command("decisions", "List the decisions that wait for a person (and those taken lately), and the policies that take them otherwise.") { Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var view = await client.DecisionsAsync(cancellationToken);
            if (Print(parse, view))
                return 0;
            var p = view.Policies;
            Console.WriteLine($"policies: neighbours {p.Neighbours}, credit {p.Credit}, exits {p.Exits}, price {p.Price}{(p.MaxPathPrice is { } cap ? $" (cap {cap:N0} per MiB)" : " (no cap)")}");
            Console.WriteLine();
            Table(["ID", "KIND", "PEER", "WHAT", "ANSWER WITH"], view.Pending.Select(d => new[]
            {
                d.Id.ToString(CultureInfo.InvariantCulture), d.Kind, Short(d.Peer), d.Summary, string.Join(" | ", d.Choices),
            }));
            if (view.Recent.Count > 0)
            {
                Console.WriteLine();
                Console.WriteLine("taken lately:");
                Table(["ID", "KIND", "PEER", "ANSWER", "BY"], view.Recent.Select(d => new[] { d.Id.ToString(CultureInfo.InvariantCulture), d.Kind, Short(d.Peer), d.Choice ?? "", d.By ?? "" }));
            }
            return 0;
        });

        var id = new Argument<long>("id") { Description = "The decision's id (skymesh decisions)." };
        var choice = new Argument<string>("choice") { Description = "accept, refuse or block (a neighbour); raise, keep or suspend (credit); allow-port or refuse (an exit); pay or other (a price)." };
        var value = new Option<long?>("--value") { Description = "For raise: the new credit limit, in micro-units." };
        var decide = new Command("decide", "Answer a decision that waits for a person.") { id, choice, value, Api, Token, DataDir, Json };
        decide.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var taken = await client.DecideAsync(parse.GetValue(id), parse.GetValue(choice)!, parse.GetValue(value), cancellationToken);
            if (Print(parse, taken))
                return 0;
            Console.WriteLine($"decision {taken.Id} ({taken.Kind}, {Short(taken.Peer)}): {taken.Choice}");
            return 0;
        });

        var neighbours = new Option<string?>("--neighbours") { Description = "A node not in peers asks to link: accept, ask or refuse." };
        neighbours.AcceptOnlyFromAmong("accept", "ask", "refuse");
        var credit = new Option<string?>("--credit") { Description = "A neighbour reaches its credit limit: keep or ask." };
        credit.AcceptOnlyFromAmong("keep", "ask");
        var exits = new Option<string?>("--exits") { Description = "A peer asks for a destination the exit rules do not allow: refuse or ask." };
        exits.AcceptOnlyFromAmong("refuse", "ask");
        var price = new Option<string?>("--price") { Description = "A path costs more than the cap: pay, cheaper or ask." };
        price.AcceptOnlyFromAmong("pay", "cheaper", "ask");
        var cap = new Option<long?>("--max-path-price") { Description = "The cap per MiB a path may cost before --price applies; -1 removes it." };
        var policy = new Command("policy", "Set how the node decides by itself (kept across restarts).") { neighbours, credit, exits, price, cap, Api, Token, DataDir, Json };
        policy.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var set = await client.SetPoliciesAsync(new PoliciesRequest(parse.GetValue(neighbours), parse.GetValue(credit), parse.GetValue(exits), parse.GetValue(price), parse.GetValue(cap)), cancellationToken);
            if (Print(parse, set))
                return 0;
            Console.WriteLine($"policies: neighbours {set.Neighbours}, credit {set.Credit}, exits {set.Exits}, price {set.Price}{(set.MaxPathPrice is { } max ? $" (cap {max:N0} per MiB)" : " (no cap)")}");
            return 0;
        });
        command.Subcommands.Add(decide);
        command.Subcommands.Add(policy);
        return command;
    }

    private static Command CreateNeighbours()
    {
        var command = new Command("neighbours", "List the neighbours with their credit limits, suspensions and whether they are accepted or blocked.") { Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var neighbours = await client.NeighboursAsync(cancellationToken);
            if (Print(parse, neighbours))
                return 0;
            Table(["PEER", "LINKED", "CREDIT LIMIT", "SUSPENDED", "ACCEPTED", "BLOCKED"], neighbours.Select(n => new[]
            {
                Short(n.Peer), n.Linked ? "yes" : "no", n.CreditLimit.ToString("N0", CultureInfo.InvariantCulture), n.Suspended ? "held" : "no", n.Accepted ? "yes" : "no", n.Blocked ? "yes" : "no",
            }));
            return 0;
        });
        var peer = new Argument<string>("peer") { Description = "The neighbour's node address." };
        var limit = new Option<long?>("--credit-limit") { Description = "What it may owe beyond its receipts, in micro-units (1,000,000 is one coin)." };
        var suspend = new Option<bool>("--suspend") { Description = "Forward nothing for it, whatever it owes, until --resume." };
        var resume = new Option<bool>("--resume") { Description = "Lift a suspension held by a person." };
        var set = new Command("set", "Set a neighbour's credit limit, or suspend it or lift its suspension.") { peer, limit, suspend, resume, Api, Token, DataDir, Json };
        set.SetAction(async (parse, cancellationToken) =>
        {
            if (parse.GetValue(suspend) && parse.GetValue(resume))
                throw new UsageException("--suspend and --resume together");
            using var client = Client(parse);
            var updated = await client.SetNeighbourAsync(parse.GetValue(peer)!, parse.GetValue(limit),
                parse.GetValue(suspend) ? true : parse.GetValue(resume) ? false : null, cancellationToken);
            if (Print(parse, updated))
                return 0;
            Console.WriteLine($"{Short(updated.Peer)}: credit limit {updated.CreditLimit:N0}{(updated.Suspended ? ", held suspended" : "")}");
            return 0;
        });
        command.Subcommands.Add(set);
        return command;
    }

    private static Command CreateBlock()
    {
        var node = new Argument<string>("node") { Description = "The node's address." };
        var command = new Command("block", "Refuse a node as a neighbour from now on (its links go down; kept across restarts).") { node, Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var blocked = await client.BlockAsync(parse.GetValue(node)!, cancellationToken);
            if (Print(parse, blocked))
                return 0;
            Console.WriteLine($"blocked; {blocked.Count} node(s) blocked in all");
            return 0;
        });
        return command;
    }

    private static Command CreateUnblock()
    {
        var node = new Argument<string>("node") { Description = "The node's address." };
        var command = new Command("unblock", "Take a node off the blocked list.") { node, Api, Token, DataDir };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            await client.UnblockAsync(parse.GetValue(node)!, cancellationToken);
            Console.WriteLine("unblocked");
            return 0;
        });
        return command;
    }

    private static Command CreateInterface()
    {
        var command = new Command("interface", "Take one of the node's interfaces down (its links go down, its port stays the node's) or bring it up.");
        foreach (var up in new[] { true, false })
        {
            var name = new Argument<string>("name") { Description = "The interface's name (skymesh status)." };
            var sub = new Command(up ? "up" : "down", up ? "Bring an interface up." : "Take an interface down.") { name, Api, Token, DataDir, Json };
            sub.SetAction(async (parse, cancellationToken) =>
            {
                using var client = Client(parse);
                var nic = await client.SetInterfaceAsync(parse.GetValue(name)!, up, cancellationToken);
                if (Print(parse, nic))
                    return 0;
                Console.WriteLine($"interface {nic.Name} ({nic.Local}) {(nic.Up ? "up" : "down")}");
                return 0;
            });
            command.Subcommands.Add(sub);
        }
        return command;
    }

    private static Command CreateSettings()
    {
        var price = new Option<uint?>("--price") { Description = "What this node charges per MiB it forwards, in micro-units." };
        var limit = new Option<long?>("--credit-limit") { Description = "The default credit limit of a neighbour, in micro-units." };
        var exits = new Option<string[]?>("--exit") { Description = "An exit rule (host:port, e.g. \"*:443\"); repeat for several; replaces them all.", AllowMultipleArgumentsPerToken = false };
        var noExits = new Option<bool>("--no-exits") { Description = "Let no peer leave the mesh through this node." };
        var services = new Option<string?>("--services") { Description = "What the node offers the mesh, as node.json's \"services\" list in JSON, e.g. '[{\"kind\": \"vpn\", \"price\": 200}]'; replaces every offer." };
        var noServices = new Option<bool>("--no-services") { Description = "Withdraw every service this node offers." };
        var command = new Command("settings", "Show or change the node's price, default credit limit, exit rules and services offered (kept across restarts).") { price, limit, exits, noExits, services, noServices, Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var rules = parse.GetValue(noExits) ? [] : parse.GetValue(exits) is { Length: > 0 } given ? given : null;
            List<ServiceConfig>? offers = null;
            if (parse.GetValue(noServices))
                offers = [];
            else if (parse.GetValue(services) is { } text)
            {
                try
                {
                    offers = System.Text.Json.JsonSerializer.Deserialize<List<ServiceConfig>>(text, NodeApi.Json) ?? throw new UsageException("--services: a JSON list of services, e.g. '[{\"kind\": \"vpn\", \"price\": 200}]'");
                }
                catch (System.Text.Json.JsonException e)
                {
                    throw new UsageException($"--services: not a JSON list of services ({e.Message.Split(" Path:", 2)[0]})");
                }
            }
            var settings = parse.GetValue(price) is null && parse.GetValue(limit) is null && rules is null && offers is null
                ? await client.SettingsAsync(cancellationToken)
                : await client.SetSettingsAsync(new SettingsRequest(parse.GetValue(price), parse.GetValue(limit), rules, offers), cancellationToken);
            if (Print(parse, settings))
                return 0;
            Console.WriteLine($"price         {settings.Price:N0} micro-units per MiB forwarded");
            Console.WriteLine($"credit limit  {settings.CreditLimit:N0} micro-units per neighbour (by default)");
            Console.WriteLine($"exits         {(settings.Exits.Count == 0 ? "none" : string.Join(" ", settings.Exits))}");
            Console.WriteLine($"services      {(settings.Services.Count == 0 ? "none" : string.Join(", ", settings.Services.Select(o =>
                (o.Name is { } app ? $"app {app}:{o.Port}" : o.Kind) + $" at {o.Price ?? 0:N0} per MiB" + (o.Region is { } region ? $" in {region}" : ""))))}");
            return 0;
        });
        return command;
    }

    private static Command CreateApps()
    {
        var command = new Command("apps", "List the port forwards and SOCKS servers the node runs.") { Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var apps = await client.AppsAsync(cancellationToken);
            if (Print(parse, apps))
                return 0;
            Table(["ID", "KIND", "LISTEN", "TO", "TARGET", "ACCEPTED", "ACTIVE", "FAILED"], apps.Select(a => new[]
            {
                a.Id.ToString(CultureInfo.InvariantCulture), a.Kind, a.Listen, Short(a.Destination), a.Target ?? "-",
                a.Accepted.ToString(CultureInfo.InvariantCulture), a.Active.ToString(CultureInfo.InvariantCulture), a.Failed.ToString(CultureInfo.InvariantCulture),
            }));
            return 0;
        });
        var id = new Argument<int>("id") { Description = "The app's id (skymesh apps)." };
        var stop = new Command("stop", "Stop a port forward or SOCKS server.") { id, Api, Token, DataDir };
        stop.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            await client.StopAppAsync(parse.GetValue(id), cancellationToken);
            Console.WriteLine("stopped");
            return 0;
        });
        command.Subcommands.Add(stop);
        return command;
    }
}
