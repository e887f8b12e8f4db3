using Skymesh.Node.Vpn;

namespace Skymesh.Node;

/// <summary>The VPN's and mesh IPv6's counters (docs/vpn.md, "What is counted").</summary>
public static partial class NodeMetrics
{
    private static void RenderVpn(Writer w, MeshNode node)
    {
        var roles = new List<(string Role, VpnCounters Counters)>();
        if (node.Vpn.Client is { } client)
            roles.Add(("client", client.Counters));
        if (node.Vpn.Server is { } server)
            roles.Add(("server", server.Counters));
        if (node.Vpn.Ipv6 is { } ipv6)
            roles.Add(("ipv6", ipv6.Counters));
        w.Family("skymesh_vpn_sessions", "gauge", "VPN sessions: this node's own as a client (0 or 1), and its clients' as a server.");
        w.Sample("skymesh_vpn_sessions", "role=\"client\"", node.Vpn.Client is null ? 0 : 1);
        w.Sample("skymesh_vpn_sessions", "role=\"server\"", node.Vpn.Server?.Sessions.Count ?? 0);
        if (roles.Count == 0)
            return;
        w.Family("skymesh_vpn_packets_total", "counter", "IP packets carried, by role and direction (to_mesh: from the TUN device onto a path).");
        foreach (var (role, counters) in roles)
        {
            w.Sample("skymesh_vpn_packets_total", $"role=\"{role}\",direction=\"to_mesh\"", counters.PacketsToMesh);
            w.Sample("skymesh_vpn_packets_total", $"role=\"{role}\",direction=\"from_mesh\"", counters.PacketsFromMesh);
        }
        w.Family("skymesh_vpn_bytes_total", "counter", "Bytes of IP packets carried, by role and direction.");
        foreach (var (role, counters) in roles)
        {
            w.Sample("skymesh_vpn_bytes_total", $"role=\"{role}\",direction=\"to_mesh\"", counters.BytesToMesh);
            w.Sample("skymesh_vpn_bytes_total", $"role=\"{role}\",direction=\"from_mesh\"", counters.BytesFromMesh);
        }
        w.Family("skymesh_vpn_dropped_total", "counter", "IP packets not carried, by role and reason.");
        foreach (var (role, counters) in roles)
        {
            foreach (var reason in Enum.GetValues<VpnDrop>())
                w.Sample("skymesh_vpn_dropped_total", $"role=\"{role}\",reason=\"{DropLabel(reason)}\"", counters.Dropped(reason));
        }
    }

    private static string DropLabel(VpnDrop reason) => reason switch
    {
        VpnDrop.Malformed => "malformed",
        VpnDrop.NoSession => "no_session",
        VpnDrop.Spoofed => "spoofed",
        VpnDrop.NotAllowed => "not_allowed",
        VpnDrop.TooBig => "too_big",
        VpnDrop.NoRoute => "no_route",
        VpnDrop.PathRefused => "path_refused",
        _ => "host_refused",
    };
}
