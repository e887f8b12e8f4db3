using System.CommandLine;
using System.Globalization;
using Skymesh.Identity;
using Skymesh.Node;
using Skymesh.Node.Vpn;

namespace Skymesh.Cli;

/// <summary><c>skymesh vpn …</c> and <c>skymesh ipv6</c> (docs/vpn.md).</summary>
internal static partial class NodeCommands
{
    private static Command CreateVpn()
    {
        var command = new Command("vpn", "Carry this host's IP traffic over a mesh path to a VPN server node, or serve the VPN (Linux; the node needs CAP_NET_ADMIN).");

        var server = new Argument<string?>("node") { Description = "The VPN server's node address (or --kind vpn --cheapest to choose one from `skymesh services`).", Arity = ArgumentArity.ZeroOrOne };
        var routes = new Option<string[]>("--route") { Description = "A network to route through the VPN (CIDR; repeat for more).", AllowMultipleArgumentsPerToken = true };
        var defaultRoute = new Option<bool>("--default-route") { Description = "Route everything through the VPN (the mesh's own links stay outside)." };
        var dns = new Option<bool>("--dns") { Description = "Use the server's DNS servers until disconnect (replaces /etc/resolv.conf, restored after)." };
        var networks = new Option<string[]>("--network") { Description = "Site-to-site: a network behind this host the server should route here (CIDR; repeat).", AllowMultipleArgumentsPerToken = true };
        var device = new Option<string?>("--device") { Description = "The TUN device's name (default skyvpn0)." };
        var kind = new Option<string?>("--kind") { Description = "Choose the server among the offers of this kind (vpn)." };
        var cheapest = new Option<bool>("--cheapest") { Description = "With --kind: the cheapest offer (service price plus the path's)." };
        var maxPrice = new Option<ulong?>("--max-price") { Description = "With --kind: only offers costing at most this per MiB, path included." };
        var connect = new Command("connect", "Connect this host to a VPN server node: a TUN device with the address it gives, and routes into it.")
        {
            server, routes, defaultRoute, dns, networks, device, kind, cheapest, maxPrice, Api, Token, DataDir, Json,
        };
        connect.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse, TimeSpan.FromSeconds(60));
            var status = await client.VpnConnectAsync(new VpnConnectRequest(parse.GetValue(server), parse.GetValue(routes), parse.GetValue(defaultRoute), parse.GetValue(dns),
                parse.GetValue(networks), parse.GetValue(device), parse.GetValue(kind), parse.GetValue(cheapest) ? true : null, parse.GetValue(maxPrice)), cancellationToken);
            if (Print(parse, status))
                return 0;
            if (status.Chosen is { } chosen)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"chose {Short(chosen.Node)}{(chosen.Region is { Length: > 0 } region ? $" ({region})" : "")}: {chosen.Price:N0} per MiB + {chosen.PathPrice:N0} for the path = {chosen.TotalPrice:N0}, {chosen.Hops} hops, {chosen.RttMicroseconds / 1000.0:0.0} ms"));
            PrintClient(status.Client);
            return 0;
        });

        var disconnect = new Command("disconnect", "End the VPN session: the device goes, routes and DNS are put back.") { Api, Token, DataDir };
        disconnect.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            await client.VpnDisconnectAsync(cancellationToken);
            Console.WriteLine("VPN disconnected; routes restored");
            return 0;
        });

        var down = new Command("down", "Disconnect, and put back whatever a VPN client that crashed left on this host (with --data-dir, even when the node is not running).") { Api, Token, DataDir };
        down.SetAction(async (parse, cancellationToken) =>
        {
            try
            {
                using var client = Client(parse);
                await client.VpnDisconnectAsync(cancellationToken);
                Console.WriteLine("VPN disconnected; routes restored");
                return 0;
            }
            catch (NodeApiException e) when (e.Status == System.Net.HttpStatusCode.NotFound)
            {
                Console.WriteLine("the node is not connected to a VPN");
            }
            catch (NodeApiException e) when (e.Status == 0 && parse.GetValue(DataDir) is not null)
            {
                Console.WriteLine($"the node is not running ({e.Message}); cleaning up from its data directory");
            }
            catch (UsageException) when (parse.GetValue(DataDir) is not null)
            {
                Console.WriteLine("the node is not running; cleaning up from its data directory");
            }
            if (parse.GetValue(DataDir) is { } dir)
            {
                var undone = VpnHostState.CleanUp(VpnClient.StateFile(dir), LinuxHostNetwork.Instance);
                foreach (var line in undone)
                    Console.WriteLine(line);
                if (undone.Count == 0)
                    Console.WriteLine("nothing left to clean up");
            }
            return 0;
        });

        var show = new Command("status", "Show the VPN client and server of this node, and its mesh IPv6 address.") { Api, Token, DataDir, Json };
        show.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var view = await client.VpnAsync(cancellationToken);
            if (Print(parse, view))
                return 0;
            if (view.Client is { } c)
                PrintClient(c);
            else
                Console.WriteLine("client: not connected");
            if (view.Server is { } s)
                PrintServer(s);
            else
                Console.WriteLine("server: not serving");
            Console.WriteLine(view.Ipv6 is { } v6
                ? $"mesh IPv6: {v6.Address} on {v6.Device}, MTU {v6.Mtu}; {v6.PacketsOut:N0} packets out, {v6.PacketsIn:N0} in{Drops(v6.Dropped)}"
                : $"mesh IPv6: off (this node's address would be {view.MeshAddress}; \"ipv6\" in node.json)");
            return 0;
        });

        var device2 = new Option<string?>("--device") { Description = "The server's TUN device (default skyvpns)." };
        var pool = new Option<string?>("--pool") { Description = "IPv4 network clients get addresses from (default 10.99.0.0/24)." };
        var pool6 = new Option<string?>("--pool6") { Description = "IPv6 prefix for clients, or none (default fd00:736b:7670::/64)." };
        var noNat = new Option<bool>("--no-nat") { Description = "Route clients' addresses as they are instead of masquerading them to this host's." };
        var serveDns = new Option<string[]>("--dns") { Description = "DNS servers offered to clients (repeat).", AllowMultipleArgumentsPerToken = true };
        var stop = new Option<bool>("--stop") { Description = "Stop serving." };
        var serve = new Command("serve", "Serve the VPN from this node: clients' packets leave by this host's network, under its exit policy.")
        {
            device2, pool, pool6, noNat, serveDns, stop, Api, Token, DataDir, Json,
        };
        serve.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            if (parse.GetValue(stop))
            {
                await client.VpnStopServingAsync(cancellationToken);
                Console.WriteLine("VPN server stopped");
                return 0;
            }
            var view = await client.VpnServeAsync(new VpnConfig
            {
                Device = parse.GetValue(device2), Pool = parse.GetValue(pool), Pool6 = parse.GetValue(pool6), Nat = !parse.GetValue(noNat),
                Dns = parse.GetValue(serveDns) is { Length: > 0 } d ? [.. d] : null,
            }, cancellationToken);
            if (!Print(parse, view))
                PrintServer(view);
            return 0;
        });

        command.Subcommands.Add(connect);
        command.Subcommands.Add(disconnect);
        command.Subcommands.Add(down);
        command.Subcommands.Add(show);
        command.Subcommands.Add(serve);
        return command;
    }

    private static Command CreateIpv6()
    {
        var node = new Argument<string?>("node") { Description = "A node address (default: this node's).", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("ipv6", "Print a node's mesh IPv6 address (derived from its key; reachable when both nodes have \"ipv6\" on).") { node, Api, Token, DataDir };
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (parse.GetValue(node) is { } text)
            {
                if (!NodeAddress.TryParse(text, out var address))
                    throw new UsageException($"\"{text}\" is not a node address (64 hex digits)");
                Console.WriteLine(MeshIpv6.AddressOf(address));
                return 0;
            }
            using var client = Client(parse);
            Console.WriteLine((await client.VpnAsync(cancellationToken)).MeshAddress);
            return 0;
        });
        return command;
    }

    private static void PrintClient(VpnClientStatus c)
    {
        Console.WriteLine($"client: {c.State} to {Short(c.Server)} on {c.Device}: {c.Address}{(c.Address6 is null ? "" : $", {c.Address6}")}, gateway {c.Gateway}, MTU {c.Mtu}"
            + (c.Path is { } path ? $", path {path}" : ""));
        Console.WriteLine($"  routes: {(c.Routes.Count == 0 ? "none" : string.Join(' ', c.Routes))}{(c.DefaultRoute ? " (default route)" : "")}"
            + (c.Dns.Count > 0 ? $"; DNS {string.Join(' ', c.Dns)}" : "") + (c.Networks.Count > 0 ? $"; site networks {string.Join(' ', c.Networks)}" : ""));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {c.PacketsOut:N0} packets ({c.BytesOut:N0} bytes) out, {c.PacketsIn:N0} ({c.BytesIn:N0} bytes) in, {c.Reconnects} reconnects{Drops(c.Dropped)}")
            + (c.Error is { } error ? $"; {error}" : ""));
    }

    private static void PrintServer(VpnServerView s)
    {
        Console.WriteLine($"server: on {s.Device}, pool {s.Pool}{(s.Pool6 is null ? "" : $" and {s.Pool6}")}, NAT {(s.Nat ? "on" : "off")}"
            + (s.Dns.Count > 0 ? $", DNS {string.Join(' ', s.Dns)}" : "") + (s.Sites.Count > 0 ? $", {s.Sites.Count} sites" : "") + $", {s.Sessions.Count} of {s.MaxSessions} clients"
            + string.Create(CultureInfo.InvariantCulture, $"; {s.PacketsIn:N0} packets in, {s.PacketsOut:N0} out{Drops(s.Dropped)}"));
        Table(["client", "address", "address6", "packets in", "packets out", "since"],
            s.Sessions.Select(x => new[]
            {
                Short(x.Node), x.Address, x.Address6 ?? "-", x.PacketsIn.ToString("N0", CultureInfo.InvariantCulture), x.PacketsOut.ToString("N0", CultureInfo.InvariantCulture),
                x.Since.ToString("u", CultureInfo.InvariantCulture),
            }));
    }

    private static string Drops(IReadOnlyDictionary<string, long> dropped) =>
        dropped.Count == 0 ? "" : "; dropped " + string.Join(", ", dropped.Select(d => string.Create(CultureInfo.InvariantCulture, $"{d.Value:N0} {d.Key}")));
}
