using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Skymesh.Control.Discovery;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Node.Vpn;

namespace Skymesh.Node;

/// <summary>The VPN and mesh IPv6 (docs/vpn.md): what the node's IP roles are doing, and connecting, serving, stopping.</summary>
public sealed partial class NodeApi
{
    private void MapVpn()
    {
        _app.MapGet("/api/vpn", () => Results.Json(VpnView(Node), Json));
        _app.MapPost("/api/vpn/connect", async (HttpContext context) =>
        {
            var request = await Read<VpnConnectRequest>(context);
            var server = await ChooseVpnServerAsync(request, context.RequestAborted);
            var options = new VpnConnectOptions
            {
                Device = request.Device ?? new VpnConnectOptions().Device,
                Routes = [.. (request.Routes ?? []).Select(r => Network(r, "routes"))],
                DefaultRoute = request.DefaultRoute == true,
                Dns = request.Dns == true,
                Networks = [.. (request.Networks ?? []).Select(r => Network(r, "networks"))],
            };
            if (!TunDevice.IsValidName(options.Device))
                throw new NodeRequestException(NodeError.Invalid, $"\"device\": \"{options.Device}\" is not an interface name");
            if (!options.DefaultRoute && options.Routes.Count == 0)
                throw new NodeRequestException(NodeError.Invalid, "say what goes through the VPN: \"routes\" (networks) or \"defaultRoute\": true (everything)");
            var client = await Node.Vpn.ConnectAsync(server.Node, options, context.RequestAborted);
            return Results.Json(new VpnConnectReply(client.Status(), server.Chosen), Json);
        });
        _app.MapDelete("/api/vpn/connect", async () =>
            await Node.Vpn.DisconnectAsync() ? Results.NoContent() : throw new NodeRequestException(NodeError.NotFound, "this node is not connected to a VPN"));
        _app.MapPost("/api/vpn/serve", async (HttpContext context) =>
        {
            var request = await Read<VpnConfig>(context);
            VpnServeOptions options;
            try
            {
                // Told nothing: as node.json's vpn section says (or the defaults without one).
                var empty = request is { Device: null, Pool: null, Pool6: null, Nat: null, Dns: null, Mtu: null, MaxSessions: null, Sites: null };
                options = empty && Node.Options.VpnSection is { } section ? section : VpnConfig.ParseOptions(request);
            }
            catch (NodeConfigException e)
            {
                throw new NodeRequestException(NodeError.Invalid, e.Message);
            }
            if (Node.Operator.Exits.Rules.Count == 0 && options.Sites.Count == 0)
                throw new NodeRequestException(NodeError.Invalid, "a VPN server forwards only where the exit policy allows, and this node's allows nothing: add exit rules first (`skymesh settings --exits`, or \"exits\" in node.json)");
            var server = await Node.Vpn.ServeAsync(options, context.RequestAborted);
            return Results.Json(ServerView(server), Json);
        });
        _app.MapDelete("/api/vpn/serve", async () =>
            await Node.Vpn.StopServingAsync() ? Results.NoContent() : throw new NodeRequestException(NodeError.NotFound, "this node does not serve the VPN"));
        _app.MapGet("/api/ipv6/{node}", (string node) =>
        {
            var address = ParseAddress(node, "node");
            return Results.Json(new { node = address.ToString(), ipv6 = MeshIpv6.AddressOf(address).ToString() }, Json);
        });
    }

    /// <summary>
    /// The server a connect request names, or the one it asks to be chosen among the offers of <c>kind</c> (vpn): the
    /// cheapest in all (its price and the relays') with <c>cheapest</c>, else the nearest; within <c>maxPrice</c>. A
    /// path to it is opened here (the cheapest one for a cheapest pick), and when that fails the next offer is tried.
    /// </summary>
    private async Task<(NodeAddress Node, ServiceInfo? Chosen)> ChooseVpnServerAsync(VpnConnectRequest request, CancellationToken cancellationToken)
    {
        if (request.Node is { } named)
        {
            if (request.Kind is not null || request.Cheapest is not null || request.MaxPrice is not null)
                throw new NodeRequestException(NodeError.Invalid, "name the server (\"node\") or ask for one to be chosen (\"kind\", \"cheapest\", \"maxPrice\"), not both");
            return (ParseAddress(named, "node"), null);
        }
        if (request.Kind is null)
            throw new NodeRequestException(NodeError.Invalid, "name the server (\"node\"), or ask for one from the services offered: \"kind\": \"vpn\" (with \"cheapest\": true for the cheapest)");
        if (!string.Equals(request.Kind, "vpn", StringComparison.OrdinalIgnoreCase))
            throw new NodeRequestException(NodeError.Invalid, $"\"kind\": a VPN connects to an offer of kind vpn, not {request.Kind}");
        if (Control is null)
            throw new NodeRequestException(NodeError.Conflict, "choosing a VPN server needs the services other nodes offer, and this node has no control plane to hear them (set \"broker\" in node.json)");
        var agent = RequireAgent();
        var offers = await agent.FindServicesAsync(new ServiceQuery { Kind = Skymesh.Control.Discovery.ServiceKind.Vpn, MaxPrice = request.MaxPrice }, cancellationToken);
        var cheapest = request.Cheapest == true;
        var candidates = (cheapest
                ? offers.OrderBy(o => o.TotalPrice).ThenBy(o => o.RttMicroseconds)
                : offers.OrderBy(o => o.RttMicroseconds).ThenBy(o => o.TotalPrice))
            .DistinctBy(o => o.Node).Take(3).ToList();
        if (candidates.Count == 0)
            throw new NodeRequestException(NodeError.NotFound, "no node this one reaches offers a VPN" + (request.MaxPrice is { } cap ? $" within {cap:N0} per MiB" : "")
                + " (skymesh services --kind vpn lists what is offered)");
        var (chosen, _) = await ReachOneAsync(candidates, cheapest ? PathPolicy.LowestPrice : PathPolicy.LowestLatency, "VPN", "best VPN offer(s)", cancellationToken);
        return (chosen.Node, ServiceInfo.Of(chosen));
    }

    private static IPNetwork Network(string text, string field) =>
        IPNetwork.TryParse(text, out var network) ? network : throw new NodeRequestException(NodeError.Invalid, $"\"{field}\": \"{text}\" is not a network in CIDR form");

    internal static VpnView VpnView(MeshNode node) => new(
        node.Vpn.Client?.Status(),
        node.Vpn.Server is { } server ? ServerView(server) : null,
        node.Vpn.Ipv6 is { } ipv6
            ? new MeshIpv6View(ipv6.Address.ToString(), ipv6.Device, ipv6.Mtu, ipv6.Counters.PacketsToMesh, ipv6.Counters.BytesToMesh, ipv6.Counters.PacketsFromMesh,
                ipv6.Counters.BytesFromMesh, ipv6.Counters.Drops())
            : null,
        MeshIpv6.AddressOf(node.Address).ToString());

    private static VpnServerView ServerView(VpnServer server) => new(
        server.Device, server.Options.Pool.ToString(), server.Options.Pool6?.ToString(), server.Options.Nat, server.Options.Mtu, server.Options.MaxSessions,
        [.. server.Options.Dns.Select(d => d.ToString())],
        server.Options.Sites.ToDictionary(site => site.Key.ToString(), site => (IReadOnlyList<string>)[.. site.Value.Select(n => n.ToString())]),
        [.. server.Sessions.OrderBy(s => s.Since).Select(s => new VpnSessionView(s.Peer.ToString(), s.Address.ToString(), s.Address6?.ToString(),
            [.. s.Networks.Select(n => n.ToString())], s.Mtu, s.Since, s.Counters.PacketsFromMesh, s.Counters.BytesFromMesh, s.Counters.PacketsToMesh, s.Counters.BytesToMesh))],
        server.Counters.PacketsFromMesh, server.Counters.BytesFromMesh, server.Counters.PacketsToMesh, server.Counters.BytesToMesh, server.Counters.Drops());
}

/// <summary>POST /api/vpn/connect: the server (or how to choose one), what to route through it, and the device.</summary>
public sealed record VpnConnectRequest(
    string? Node, IReadOnlyList<string>? Routes, bool? DefaultRoute, bool? Dns, IReadOnlyList<string>? Networks, string? Device,
    string? Kind = null, bool? Cheapest = null, ulong? MaxPrice = null);

/// <summary>POST /api/vpn/connect's answer: the session, and the offer chosen when the request asked for one to be.</summary>
public sealed record VpnConnectReply(VpnClientStatus Client, ServiceInfo? Chosen);

/// <summary>GET /api/vpn: the node's VPN client and server, its mesh IPv6 role, and its mesh IPv6 address (whether or not it is on).</summary>
public sealed record VpnView(VpnClientStatus? Client, VpnServerView? Server, MeshIpv6View? Ipv6, string MeshAddress);

/// <param name="Dns">The DNS servers offered to clients.</param>
/// <param name="Sites">Site-to-site: the networks routed to each client node that may bring them.</param>
public sealed record VpnServerView(
    string Device, string Pool, string? Pool6, bool Nat, int Mtu, int MaxSessions, IReadOnlyList<string> Dns, IReadOnlyDictionary<string, IReadOnlyList<string>> Sites,
    IReadOnlyList<VpnSessionView> Sessions,
    long PacketsIn, long BytesIn, long PacketsOut, long BytesOut, IReadOnlyDictionary<string, long> Dropped);

/// <summary>One client of the server; "in" is from the client, "out" to it.</summary>
public sealed record VpnSessionView(
    string Node, string Address, string? Address6, IReadOnlyList<string> Networks, int Mtu, DateTimeOffset Since,
    long PacketsIn, long BytesIn, long PacketsOut, long BytesOut);

public sealed record MeshIpv6View(
    string Address, string Device, int Mtu, long PacketsOut, long BytesOut, long PacketsIn, long BytesIn, IReadOnlyDictionary<string, long> Dropped);
