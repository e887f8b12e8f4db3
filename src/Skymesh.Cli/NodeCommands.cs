using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Skymesh.Node;
using Skymesh.Node.Hosting;

namespace Skymesh.Cli;

/// <summary><c>skymesh node</c> and the commands that steer a running node through its local API.</summary>
internal static partial class NodeCommands
{
    private static readonly Option<string> Api = new("--api")
    {
        Description = "The node's local API address (default: $SKYMESH_API, else 127.0.0.1:7300).",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SKYMESH_API") is { Length: > 0 } env ? env : $"127.0.0.1:{NodeOptions.DefaultApiPort}",
    };

    private static readonly Option<string?> Token = new("--token")
    {
        Description = "The node's API token (default: $SKYMESH_TOKEN, else api.token in --data-dir, else the one the node on --api published for this user).",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SKYMESH_TOKEN") is { Length: > 0 } env ? env : null,
    };

    private static readonly Option<string?> DataDir = new("--data-dir") { Description = "The node's data directory, to read its API token from." };

    private static readonly Option<bool> Json = new("--json") { Description = "Print the API's JSON instead of a table." };

    public static IEnumerable<Command> Create() =>
        [CreateNode(), CreateStatus(), CreateNodes(), CreateTraceroute(), CreateBalance(), CreateEvents(), CreateLinks(), CreateLabels(), CreatePath(), CreatePing(), CreateForward(), CreateSocks(),
         CreateDashboard(), CreateDecisions(), CreateNeighbours(), CreateBlock(), CreateUnblock(), CreateInterface(), CreateSettings(), CreateApps(), CreateVpn(), CreateIpv6()];

    private static Command CreateBalance()
    {
        var command = new Command("balance", "Show this node's ledger balance and its books with each neighbour: what they owe, their receipts, their credit.") { Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var balance = await client.BalanceAsync(cancellationToken);
            if (Print(parse, balance))
                return 0;
            var earned = balance.Neighbours.Sum(n => n.ReceiptedAmount);
            var owed = balance.Neighbours.Sum(n => n.ReceiptedByUs);
            Console.WriteLine($"node {balance.Node}: ledger balance {balance.Balance:N0} µ (settled); receipted to it {earned:N0} µ, by it {owed:N0} µ, net {earned - owed:N0} µ");
            Console.WriteLine($"receipts from neighbours accepted {balance.ReceiptsAccepted:N0}, refused {balance.ReceiptsRefused:N0}; settled on {balance.Ledger}"
                + (balance.SettlementsRefused > 0 ? $", which would not pay {balance.SettlementsRefused:N0} of them (the payer's account short)" : ""));
            Table(["NEIGHBOUR", "FORWARDED FOR IT", "IT OWES (NO RECEIPT YET)", "IT RECEIPTED", "PAID TO US", "HANDED TO IT", "WE RECEIPTED", "PAID BY US", "CREDIT", "DROPS"],
                balance.Neighbours.Select(n => new[]
                {
                    Short(n.Neighbour), $"{n.ForwardedForThem:N0} B", $"{n.OwedToUs:N0} µ", $"{n.ReceiptedAmount:N0} µ", $"{n.SettledToUs:N0} µ",
                    $"{n.HandedToThem:N0} B", $"{n.ReceiptedByUs:N0} µ ({n.ReceiptsWeSigned:N0} receipts)", $"{n.SettledByUs:N0} µ",
                    n.AllowedBytesPerSecond is { } rate ? $"{n.Credit} ({rate:N0} B/s)" : n.Credit, $"{n.CreditDrops:N0}",
                }));
            return 0;
        });
        return command;
    }

    private static Command CreateEvents()
    {
        var after = new Option<long>("--after") { Description = "Start after this event number (what the last run printed); default: every event the node still holds." }.Within(0, long.MaxValue);
        var noFollow = new Option<bool>("--no-follow") { Description = "Print what the node holds and stop, instead of following new events." };
        var command = new Command("events", "Follow what the node does: links up and down, paths set up, repaired, broken, announcements, receipts, credit, apps, the control bus.") { Api, Token, DataDir, after, noFollow, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var json = parse.GetValue(Json);
            try
            {
                await foreach (var item in client.EventsAsync(parse.GetValue(after), !parse.GetValue(noFollow), cancellationToken))
                {
                    if (json)
                        Console.WriteLine(item.Event is { } e ? JsonSerializer.Serialize(e, NodeApi.Json) : $"{{\"missed\":{item.Missed}}}");
                    else if (item.Event is { } e)
                        Console.WriteLine($"{e.Sequence,6}  {e.At.ToLocalTime():HH:mm:ss.fff}  {e.Kind,-20}  {e.Detail}");
                    else
                        Console.WriteLine($"        ({item.Missed:N0} events had already left the node's memory)");
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
            }
            return 0;
        });
        return command;
    }

    private static Command CreateTraceroute()
    {
        var node = new Argument<string>("node") { Description = "The destination node's address." };
        var probes = new Option<int>("--probes", "-q") { Description = "Pings per hop (1 to 10).", DefaultValueFactory = _ => 3 }.Within(1, 10);
        var command = new Command("traceroute", "Show each hop of the path the control plane would take to a node, with measured round trips to each.") { node, Api, Token, DataDir, probes, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var hops = await client.TraceAsync(parse.GetValue(node)!, parse.GetValue(probes), cancellationToken);
            if (Print(parse, hops))
                return 0;
            foreach (var hop in hops)
            {
                var times = string.Join("  ", hop.RoundTripsMicroseconds.Select(t => $"{t / 1000:0.000} ms"));
                Console.WriteLine($"{hop.Hop,2}  {hop.Node}  {times}{(hop.Error is null ? "" : $"  ({hop.Error})")}   link {hop.AnnouncedLinkRttMicroseconds / 1000.0:0.00} ms announced");
            }
            return hops.All(h => h.RoundTripsMicroseconds.Count > 0) ? 0 : 1;
        });
        return command;
    }

    private static Command CreateNodes()
    {
        var command = new Command("nodes", "List the nodes of the mesh as this node's control plane knows them.") { Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var nodes = await client.MeshAsync(cancellationToken);
            if (Print(parse, nodes))
                return 0;
            Table(["NODE", "LINKS", "NEIGHBOURS", "SEQUENCE", "EXPIRES"],
                nodes.Select(n => new[]
                {
                    n.Address, n.Links.Count(l => l.State == "up").ToString(CultureInfo.InvariantCulture),
                    string.Join(" ", n.Links.Select(l => $"{Short(l.Peer)}({l.RttMicroseconds / 1000.0:0.0}ms)")),
                    n.Sequence.ToString(CultureInfo.InvariantCulture), $"{n.Expires:HH:mm:ss}",
                }));
            return 0;
        });
        return command;
    }

    private static NodeApiClient Client(ParseResult parse, TimeSpan? timeout = null)
    {
        var api = parse.GetValue(Api)!;
        CliSupport.ParseHostPort(api, Environment.GetEnvironmentVariable("SKYMESH_API") == api ? "SKYMESH_API" : "--api");
        var token = parse.GetValue(Token) ?? (parse.GetValue(DataDir) is { } dir ? ApiToken.Find(api, dir) ?? throw new UsageException($"--data-dir: no {ApiToken.FileName} in {dir}") : null);
        return new(api, token: token, timeout: timeout);
    }

    private static Command CreateNode()
    {
        var config = new Option<string>("--config") { Description = "The node's configuration (docs/node.md).", DefaultValueFactory = _ => "node.json" };
        var command = new Command("node", "Run a mesh node until SIGINT or SIGTERM: its interfaces, links to its peers, label table, paths, apps and local API.") { config };
        LogSettings.AddOptionsTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            NodeOptions options;
            try
            {
                options = NodeOptions.Load(parse.GetValue(config)!);
            }
            catch (NodeConfigException e)
            {
                throw new UsageException($"{parse.GetValue(config)}: {e.Message}");
            }
            using var logging = LogSettings.From(parse).CreateFactory();
            await ServiceHosting.RunAsync(new NodeService(options, logging), "skymesh", cancellationToken);
            return 0;
        });
        return command;
    }

    /// <summary>A node as a service: started (and its banner printed) when it is up, stopped by disposing it.</summary>
    private sealed class NodeService(NodeOptions options, ILoggerFactory logging) : ServiceHosting.IService
    {
        private NodeHost? _host;

        public async Task StartAsync(CancellationToken cancellationToken)
        {
            try
            {
                // The control plane connects in the background: a broker that is away never stops the data plane.
                _host = await new NodeHostBuilder(options).UseLogging(logging).StartAsync(cancellationToken);
            }
            catch (Exception e) when (e is InvalidOperationException or System.Net.Sockets.SocketException)
            {
                // An interface or API that cannot have its address (a port in use) is a configuration error: one line, exit 2.
                throw new UsageException(CliSupport.Reason(e));
            }
            var node = _host.Node;
            var api = _host.Api!;
            Console.WriteLine($"node {node.Address}");
            Console.WriteLine($"  interfaces: {string.Join(", ", node.Interfaces.Values.Select(i => $"{i.Name} {i.LocalEndPoint}"))}");
            Console.WriteLine($"  local API:  http://{api.EndPoint}/api/node   metrics: http://{api.EndPoint}/metrics");
            Console.WriteLine($"  exits:      {(options.Exits.Rules.Count == 0 ? "none" : string.Join(", ", options.Exits.Rules))}");
            var bus = options.BusViaNeighbours ? "the control bus through this node's neighbours"
                : options.Broker is { } broker && NodeOptions.NatsServers(broker) is not null ? $"NATS cluster {broker}"
                : $"SSMP broker {options.Broker}";
            Console.WriteLine($"  control:    {(_host.Control is null ? "none (no broker in the configuration: paths by hand only)" : $"{bus}, announcing on {Node.Control.ControlAgent.Topic} once logged in")}");
            if (options.LeafnodeListen is { } leafnodes)
                Console.WriteLine($"  leafnodes:  {leafnodes} (a NATS server's leaf connection, carried through the neighbours)");
        }

        public async Task StopAsync()
        {
            if (_host is not null)
                await _host.DisposeAsync();
        }
    }

    private static Command CreateStatus()
    {
        var command = new Command("status", "Show the node's address, interfaces and counters.") { Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var status = await client.StatusAsync(cancellationToken);
            if (Print(parse, status))
                return 0;
            Console.WriteLine($"node        {status.Address}");
            Console.WriteLine($"started     {status.Started:u}");
            Console.WriteLine($"interfaces  {string.Join(", ", status.Interfaces)}");
            Console.WriteLine($"links up    {status.Links}");
            Console.WriteLine($"paths       {status.Paths}");
            Console.WriteLine($"labels      {status.Labels}");
            Console.WriteLine($"forwarded   {status.Forwarded:N0} messages, delivered {status.Delivered:N0}, dropped {status.ForwardDrops:N0}, bad frames {status.BadFrames:N0}, unknown labels {status.UnknownLabels:N0}");
            Console.WriteLine($"exits       {(status.Exits.Count == 0 ? "none" : string.Join(", ", status.Exits))}");
            Console.WriteLine($"control     {(status.Broker is null ? "none" : $"{status.Control}, broker {status.Broker}{(status.ControlError is { } error ? $" (last error: {error})" : "")}")}");
            if (status.Bus is { Mode: "via-neighbours" } bus)
                Console.WriteLine($"bus route   {(bus.Via is null ? "no neighbour found yet" + (bus.Problem is { } problem ? $" ({problem})" : "") : $"through neighbour {bus.Via}, {bus.Hops} relay{(bus.Hops == 1 ? "" : "s")} from the broker")}; {(bus.Kind == "nats" ? "a NATS cluster, every message signed by its node" : $"broker key {bus.BrokerPin ?? "not pinned yet"}")}");
            else if (status.Bus is not null)
                Console.WriteLine("bus route   direct");
            if (status.Nat is { Reflexive: { } reflexive } nat)
                Console.WriteLine($"nat         seen at {reflexive} by {nat.Observers} neighbour{(nat.Observers == 1 ? "" : "s")}: {nat.Type switch
                {
                    "none" => "no NAT",
                    "endpoint-independent" => "a NAT that keeps one mapping for every destination (hole punching works)",
                    "symmetric" => "a symmetric NAT (a new mapping per destination: links to others behind NATs go through relays)",
                    _ => "NAT type not known yet (it takes two neighbours at different addresses)",
                }}");
            if (status.LinkRelay is { Opened: > 0 } linkRelay)
                Console.WriteLine($"link relay  {linkRelay.Open} link{(linkRelay.Open == 1 ? "" : "s")} relayed between others now ({linkRelay.Opened} opened, {linkRelay.Refused} refused), {linkRelay.Bytes:N0} bytes carried, {linkRelay.Dropped:N0} datagrams dropped");
            if (status.Services is { } services && (services.Offered.Count > 0 || services.Known > 0))
                Console.WriteLine($"services    offering {(services.Offered.Count == 0 ? "nothing" : string.Join(", ", services.Offered.Select(o => (o.Name is { } app ? $"app {app}:{o.Port}" : o.Kind) + $" ({o.Price ?? 0:N0}/MiB)")))}"
                    + (services.Known is { } known ? $"; {known} offer{(known == 1 ? "" : "s")} of {services.Nodes} other node{(services.Nodes == 1 ? "" : "s")} known (skymesh services)" : ""));
            if (status.Relay is { TunnelsOpened: > 0 } relay)
                Console.WriteLine($"bus relay   {relay.TunnelsOpen} tunnel{(relay.TunnelsOpen == 1 ? "" : "s")} open for neighbours ({relay.TunnelsOpened} opened, {relay.TunnelsRefused} refused), {relay.BytesUp:N0} bytes up, {relay.BytesDown:N0} down");
            return 0;
        });
        return command;
    }

    private static Command CreateLinks()
    {
        var command = new Command("links", "List the node's links to its neighbours.") { Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var links = await client.LinksAsync(cancellationToken);
            if (Print(parse, links))
                return 0;
            Table(["LINK", "PEER", "REMOTE", "STATE", "HOW", "ENC", "RTT", "LOSS", "FRAMES OUT/IN", "BYTES OUT/IN"],
                links.Select(l => new[]
                {
                    l.Id.ToString(CultureInfo.InvariantCulture), Short(l.Peer), l.Remote, l.State.ToString().ToLowerInvariant(), l.How is "relayed" && l.Via is { } via ? $"relayed via {Short(via)}" : l.How ?? "-", l.Encrypted ? "yes" : "no",
                    l.Rtt is { } rtt ? $"{rtt.TotalMilliseconds:0.00} ms" : "-", $"{l.Loss:P1}", $"{l.FramesSent:N0}/{l.FramesReceived:N0}", $"{l.BytesSent:N0}/{l.BytesReceived:N0}",
                }));
            return 0;
        });

        var endpoint = new Argument<string>("endpoint") { Description = "The neighbour's interface address, host:port; or its node address alone, to link through NATs by hole punching (the control bus is the rendezvous; when no punch gets through, a neighbour of both relays the link)." };
        var via = new Option<string?>("--via") { Description = "With a node address: link through this relay (a neighbour of both) without trying to punch first." };
        var peer = new Option<string?>("--peer") { Description = "The neighbour's node address: the link is refused if another node answers." };
        var nic = new Option<string?>("--interface") { Description = "Which of this node's interfaces to use (default: the first)." };
        var add = new Command("add", "Make a link to a neighbour now (static peers in node.json are linked, and relinked, by the node itself).") { Api, Token, DataDir, endpoint, peer, nic, via, Json };
        add.SetAction(async (parse, cancellationToken) =>
        {
            // Punching takes up to a handshake timeout, and a relay after it as long again.
            using var client = Client(parse, TimeSpan.FromSeconds(90));
            var target = parse.GetValue(endpoint)!;
            var relay = parse.GetValue(via);
            if (relay is not null && !Skymesh.Identity.NodeAddress.TryParse(target, out _))
                throw new UsageException("--via: a link through a relay names the other node by its node address, not host:port");
            var link = Skymesh.Identity.NodeAddress.TryParse(target, out _)
                ? await client.ConnectAsync(parse.GetValue(nic), null, target, cancellationToken, relay)
                : await client.ConnectAsync(parse.GetValue(nic), target, parse.GetValue(peer), cancellationToken);
            if (Print(parse, link))
                return 0;
            var how = link.How switch
            {
                "punched" => ", through NATs by hole punching",
                "relayed" => $", relayed by {link.Via} (no direct way through the NATs)",
                _ => "",
            };
            Console.WriteLine($"link {link.Id} up to {link.Peer} at {link.Remote}{how} (encrypted: {(link.Encrypted ? "yes" : "no")})");
            return 0;
        });
        command.Subcommands.Add(add);

        var linkId = new Argument<int>("id") { Description = "The link id (skymesh links)." };
        var drop = new Command("drop", "Take a link down now (a static peer is linked again by the node; block it to keep it away).") { Api, Token, DataDir, linkId };
        drop.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            await client.DropLinkAsync(parse.GetValue(linkId), cancellationToken);
            Console.WriteLine("dropped");
            return 0;
        });
        command.Subcommands.Add(drop);
        return command;
    }

    private static Command CreateLabels()
    {
        var command = new Command("labels", "List the node's label table; add, reserve or remove entries by hand.") { Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var labels = await client.LabelsAsync(cancellationToken);
            if (Print(parse, labels))
                return 0;
            Table(["IN LINK", "FROM", "LABEL", "ACTION", "OUT LINK", "TO", "OUT LABEL", "PATH", "IDLE"],
                labels.Select(e => new[]
                {
                    e.InLink.ToString(CultureInfo.InvariantCulture), Short(e.InPeer), e.InLabel.ToString(CultureInfo.InvariantCulture), e.Action,
                    e.OutLink?.ToString(CultureInfo.InvariantCulture) ?? "-", Short(e.OutPeer), e.OutLabel?.ToString(CultureInfo.InvariantCulture) ?? "-",
                    e.Path?.ToString(CultureInfo.InvariantCulture) ?? "-", $"{e.IdleSeconds:0.0} s",
                }));
            return 0;
        });

        var link = new Option<string>("--link") { Description = "The incoming link: its id or its neighbour's address.", Required = true };
        var reserve = new Command("reserve", "Reserve a free label on a link (it expires unless an entry is installed on it).") { Api, Token, DataDir, link, Json };
        reserve.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var reply = await client.ReserveLabelAsync(parse.GetValue(link)!, cancellationToken);
            if (!Print(parse, reply))
                Console.WriteLine(reply.Label);
            return 0;
        });

        var label = new Option<uint?>("--label") { Description = "The incoming label (default: a free one is reserved)." };
        var toLink = new Option<string>("--to-link") { Description = "The outgoing link: its id or its neighbour's address.", Required = true };
        var toLabel = new Option<uint>("--to-label") { Description = "The label the next hop reads.", Required = true };
        var add = new Command("add", "Forward messages arriving on --link with --label to --to-link with --to-label.") { Api, Token, DataDir, link, label, toLink, toLabel, Json };
        add.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var reply = await client.ForwardLabelAsync(parse.GetValue(link)!, parse.GetValue(label), parse.GetValue(toLink)!, parse.GetValue(toLabel), cancellationToken);
            if (!Print(parse, reply))
                Console.WriteLine($"link {reply.Link} label {reply.Label}: {reply.Action}");
            return 0;
        });

        var linkId = new Argument<int>("link") { Description = "The incoming link id." };
        var labelValue = new Argument<uint>("label") { Description = "The incoming label." };
        var remove = new Command("remove", "Remove a label entry.") { Api, Token, DataDir, linkId, labelValue };
        remove.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            await client.RemoveLabelAsync(parse.GetValue(linkId), parse.GetValue(labelValue), cancellationToken);
            Console.WriteLine("removed");
            return 0;
        });
        command.Subcommands.Add(reserve);
        command.Subcommands.Add(add);
        command.Subcommands.Add(remove);
        return command;
    }

    private static Command CreatePath()
    {
        var command = new Command("path", "Paths from this node: list them, install one by hand along a chain of nodes, remove one.");

        var list = new Command("list", "List the path ends on this node.") { Api, Token, DataDir, Json };
        list.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var paths = await client.PathsAsync(cancellationToken);
            if (Print(parse, paths))
                return 0;
            Table(["PATH", "PEER", "VIA", "ROLE", "STATE", "OUT/IN LABEL", "STREAMS", "MSGS OUT/IN", "ERROR"],
                paths.Select(p => new[]
                {
                    p.Id.ToString(CultureInfo.InvariantCulture), Short(p.Peer), Short(p.Via), p.Initiator ? "source" : "destination", p.State,
                    $"{p.OutLabel}/{p.InLabel}", p.OpenStreams.ToString(CultureInfo.InvariantCulture), $"{p.MessagesSent:N0}/{p.MessagesReceived:N0}", p.Error ?? "",
                }));
            // Every hop of each path with the labels it takes the path in on (forward/back).
            foreach (var p in paths)
                Console.WriteLine($"path {p.Id}: {Hops(p)}");
            return 0;
        });

        var apis = new Argument<string[]>("node-api") { Description = "The local API addresses of the nodes along the path, source first, destination last (each linked to the next).", Arity = new ArgumentArity(2, 64) };
        var install = new Command("static", "Install a path by hand along a chain of nodes whose local APIs this machine reaches (until the control plane sets paths up).") { apis, Json };
        install.SetAction(async (parse, cancellationToken) =>
        {
            var clients = parse.GetValue(apis)!.Select(a => new NodeApiClient(a)).ToList();
            try
            {
                var result = await StaticPath.InstallAsync(clients, cancellationToken);
                if (!Print(parse, result))
                    Console.WriteLine($"path {result.Source.Id} on {Short(result.Nodes[0])} to {Short(result.Nodes[^1])} via {result.Nodes.Count - 2} relay(s): {string.Join(" -> ", result.Nodes.Select(Short))}");
            }
            finally
            {
                clients.ForEach(c => c.Dispose());
            }
            return 0;
        });

        var id = new Argument<int>("id") { Description = "The path id (skymesh path list)." };
        var remove = new Command("remove", "Remove a path end from this node.") { Api, Token, DataDir, id };
        remove.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            await client.RemovePathAsync(parse.GetValue(id), cancellationToken);
            Console.WriteLine("removed");
            return 0;
        });
        var to = new Argument<string>("node") { Description = "The destination node's address." };
        var policy = new Option<string>("--policy") { Description = "latency, price or bandwidth.", DefaultValueFactory = _ => "latency" };
        policy.AcceptOnlyFromAmong("latency", "price", "bandwidth");
        var via = new Option<string?>("--via") { Description = "The exact relays, comma-separated addresses." };
        var avoid = new Option<string?>("--avoid") { Description = "Nodes the path must not pass, comma-separated addresses." };
        var minHops = new Option<int?>("--min-hops") { Description = "Fewest hops (links) the path may have (1 to 16)." }.Within(1, 16);
        var maxHops = new Option<int?>("--max-hops") { Description = "Most hops (links) the path may have (1 to 16; default 10)." }.Within(1, 16);
        var maxPrice = new Option<ulong?>("--max-price") { Description = "Most the relays together may charge per MiB." };
        var open = new Command("open", "Find a path to a node and set it up through the control plane.") { to, Api, Token, DataDir, policy, via, avoid, minHops, maxHops, maxPrice, Json };
        open.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            static IReadOnlyList<string>? List(string? text) => text?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var path = await client.OpenPathAsync(parse.GetValue(to)!, parse.GetValue(policy), parse.GetValue(minHops), parse.GetValue(maxHops), parse.GetValue(maxPrice),
                List(parse.GetValue(avoid)), List(parse.GetValue(via)), cancellationToken);
            if (Print(parse, path))
                return 0;
            Console.WriteLine($"path {path.Id} to {path.Peer}: {path.State}");
            Console.WriteLine($"  {Hops(path)}");
            return 0;
        });
        var closeId = new Argument<int>("id") { Description = "The path id (skymesh path list)." };
        var close = new Command("close", "Close a path: every hop releases it.") { Api, Token, DataDir, closeId };
        close.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            await client.RemovePathAsync(parse.GetValue(closeId), cancellationToken);
            Console.WriteLine("closed");
            return 0;
        });
        command.Subcommands.Add(list);
        command.Subcommands.Add(open);
        command.Subcommands.Add(close);
        command.Subcommands.Add(install);
        command.Subcommands.Add(remove);
        return command;
    }

    private static Command CreatePing()
    {
        var node = new Argument<string>("node") { Description = "The node address to ping (this node needs a path to it)." };
        var count = new Option<int>("--count", "-c") { Description = "Pings to send; 0 until Ctrl+C.", DefaultValueFactory = _ => 4 }.Within(0, int.MaxValue);
        var interval = new Option<double>("--interval", "-i") { Description = "Seconds between pings (0.01 to 3600).", DefaultValueFactory = _ => 1 }.Within(0.01, 3600, "seconds");
        var size = new Option<int>("--size", "-s") { Description = "Bytes per ping datagram (9 up to what the path carries).", DefaultValueFactory = _ => 64 }.Within(9, 65_535);
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for each answer (0.001 to 60).", DefaultValueFactory = _ => 2 }.Within(0.001, 60, "seconds");
        var command = new Command("ping", "Send datagrams over the path to a node and time its answers; opens a path by the node's policy when there is none.") { node, Api, Token, DataDir, count, interval, size, timeout, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var target = parse.GetValue(node)!;
            var json = parse.GetValue(Json);
            var total = parse.GetValue(count);
            var every = parse.GetValue(interval);
            using var client = Client(parse);
            using var signals = CliSupport.UntilSignal(cancellationToken);
            var times = new List<double>();
            var sent = 0;
            while ((total == 0 || sent < total) && !signals.Token.IsCancellationRequested)
            {
                sent++;
                try
                {
                    var reply = await client.PingAsync(target, parse.GetValue(size), (int)Math.Ceiling(parse.GetValue(timeout) * 1000), signals.Token);
                    times.Add(reply.RttMicroseconds / 1000);
                    if (json)
                        Console.WriteLine(JsonSerializer.Serialize(new { seq = sent, size = reply.Size, rttMs = reply.RttMicroseconds / 1000, opened = reply.Opened }, NodeApi.Json));
                    else
                    {
                        if (reply.Opened is { } opened)
                            Console.WriteLine($"opened path {opened.Id} to {Short(target)} (lowest latency): {Hops(opened)}");
                        Console.WriteLine($"{reply.Size} bytes from {Short(target)}: seq={sent} time={reply.RttMicroseconds / 1000:0.000} ms");
                    }
                }
                catch (NodeApiException e) when (e.Status is System.Net.HttpStatusCode.GatewayTimeout or System.Net.HttpStatusCode.NotFound or System.Net.HttpStatusCode.BadGateway
                    && (sent > 1 || total != 1))
                {
                    // Unanswered, or no working path for now (a repair under way): counted as lost, and pinging goes on.
                    Console.WriteLine(json ? JsonSerializer.Serialize(new { seq = sent, error = e.Message }, NodeApi.Json) : $"seq={sent}: {e.Message}");
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                if (total == 0 || sent < total)
                {
                    try
                    {
                        await Task.Delay(TimeSpan.FromSeconds(every), signals.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        break;
                    }
                }
            }
            if (json)
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    to = target, sent, answered = times.Count, lossPercent = (sent - times.Count) * 100.0 / Math.Max(1, sent),
                    minMs = times.Count > 0 ? times.Min() : (double?)null, avgMs = times.Count > 0 ? times.Average() : (double?)null, maxMs = times.Count > 0 ? times.Max() : (double?)null,
                }, NodeApi.Json));
            else
                Console.WriteLine($"--- {Short(target)}: {sent} sent, {times.Count} answered, {(sent - times.Count) * 100.0 / Math.Max(1, sent):0}% lost"
                + (times.Count > 0 ? $", rtt min/avg/max = {times.Min():0.000}/{times.Average():0.000}/{times.Max():0.000} ms" : ""));
            return times.Count > 0 ? 0 : 1;
        });
        return command;
    }

    private static Command CreateForward()
    {
        var listen = new Option<string>("--listen") { Description = "Local address:port to accept connections on.", Required = true };
        var to = new Option<string>("--to") { Description = "The destination node's address.", Required = true };
        var target = new Option<string>("--target") { Description = "host:port the destination node connects to (its exit policy must allow it).", Required = true };
        var command = new Command("forward", "Forward a local TCP port through the mesh to host:port as reached from the destination node; runs until Ctrl+C.") { listen, to, target, Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
            await RunApp(parse, "forwards", new ForwardRequest(parse.GetValue(listen), parse.GetValue(to), parse.GetValue(target), false),
                $"forwarding {{0}} -> {parse.GetValue(target)} via node {Short(parse.GetValue(to))}", cancellationToken));
        return command;
    }

    private static Command CreateSocks()
    {
        var listen = new Option<string>("--listen") { Description = "Local address:port of the SOCKS5 server.", DefaultValueFactory = _ => "127.0.0.1:1080" };
        var exit = new Option<string?>("--exit") { Description = "The node whose network the connections leave from, or auto for the cheapest exit the mesh offers (skymesh services); default: the one node this node has a path to." };
        var maxPrice = new Option<ulong?>("--max-price") { Description = "With --exit auto: the most the exit may cost per MiB in all, its price and the relays', in micro-units." };
        var command = new Command("socks", "Run a SOCKS5 server whose connections leave the mesh at an exit node; runs until Ctrl+C.") { listen, exit, maxPrice, Api, Token, DataDir, Json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var auto = string.Equals(parse.GetValue(exit), "auto", StringComparison.OrdinalIgnoreCase);
            if (parse.GetValue(maxPrice) is not null && !auto)
                throw new UsageException("--max-price: caps what --exit auto may pick; give --exit auto, or leave --max-price out");
            return await RunApp(parse, "socks", new SocksRequest(parse.GetValue(listen), parse.GetValue(exit), false, parse.GetValue(maxPrice)),
                "SOCKS5 on {0}, leaving the mesh at " + (auto ? "the node picked" : parse.GetValue(exit) is { } e ? Short(e) : "the path's destination"), cancellationToken);
        });
        return command;
    }

    private static async Task<int> RunApp(ParseResult parse, string kind, object request, string banner, CancellationToken cancellationToken)
    {
        using var client = Client(parse);
        using var signals = CliSupport.UntilSignal(cancellationToken);
        try
        {
            await foreach (var e in client.RunAppAsync(kind, request, signals.Token))
            {
                if (Print(parse, e))
                    continue;
                if (e.Event == "listening")
                {
                    if (e.Picked is { } picked)
                        Console.WriteLine($"picked {picked.Kind} node {picked.Node} at {picked.TotalPrice:N0} per MiB in all ({picked.Price:N0} its price, {picked.PathPrice:N0} the relays'), "
                            + $"{picked.Hops} hop{(picked.Hops == 1 ? "" : "s")}, {picked.RttMicroseconds / 1000.0:0.0} ms{(picked.Region is { } region ? $", region {region}" : "")}");
                    if (e.Opened is { } opened)
                        Console.WriteLine($"opened path {opened.Id} to {Short(opened.Peer)} (lowest latency): {Hops(opened)}");
                    Console.WriteLine(string.Format(CultureInfo.InvariantCulture, banner, e.Listen) + " (Ctrl+C to stop)");
                }
                else if (e.Error is { } error)
                    Console.WriteLine($"{e.Client} -> {e.Target}: failed after {e.BytesUp:N0} bytes out, {e.BytesDown:N0} back: {error}");
                else
                    Console.WriteLine($"{e.Client} -> {e.Target}: {e.BytesUp:N0} bytes out, {e.BytesDown:N0} back");
            }
        }
        catch (OperationCanceledException) when (signals.Token.IsCancellationRequested)
        {
            return 0;
        }
        Console.Error.WriteLine("skymesh: the node stopped the app (is the node still running?)");
        return 1;
    }

    /// <summary>
    /// A path hop by hop: for one the control plane set up (this node its source), every node with the labels it takes
    /// the path in on, forward/back; for any other path end, what this node knows of it — its next hop and labels.
    /// </summary>
    internal static string Hops(PathInfo path)
    {
        static string Label(uint label) => label == 0 ? "-" : label.ToString(CultureInfo.InvariantCulture);
        if (path.Hops is { Count: > 0 } hops)
            return "this node (-/" + Label(path.InLabel) + ") -> " + string.Join(" -> ", hops.Select(h => $"{Short(h.Node)} ({Label(h.ForwardIn)}/{Label(h.BackIn)})"));
        return $"this node (out label {path.OutLabel} on link {path.OutLink}, in label {path.InLabel}) -> {Short(path.Via)}"
            + (path.Via == path.Peer ? "" : $" -> … -> {Short(path.Peer)} (hops beyond the next are known to the {(path.Initiator ? "control plane" : "path's source")})");
    }

    private static bool Print<T>(ParseResult parse, T value)
    {
        if (!parse.GetValue(Json))
            return false;
        Console.WriteLine(JsonSerializer.Serialize(value, NodeApi.Json));
        return true;
    }

    /// <summary>A node address shortened for tables: the first 8 and last 4 hex digits.</summary>
    private static string Short(string? address) => address is { Length: 64 } ? $"{address[..8]}…{address[^4..]}" : address ?? "-";

    private static void Table(string[] header, IEnumerable<string[]> rows)
    {
        var all = new List<string[]> { header };
        all.AddRange(rows);
        var widths = header.Select((_, i) => all.Max(r => r[i].Length)).ToArray();
        foreach (var row in all)
            Console.WriteLine(string.Join("  ", row.Select((cell, i) => i == row.Length - 1 ? cell : cell.PadRight(widths[i]))).TrimEnd());
        if (all.Count == 1)
            Console.WriteLine("(none)");
    }
}
