using System.Net;
using Skymesh.Identity;

namespace Skymesh.Node.Vpn;

/// <summary>How a node serves the VPN (node.json <c>vpn</c>, or <c>skymesh vpn serve</c>).</summary>
public sealed record VpnServeOptions
{
    /// <summary>The TUN device the server routes clients' packets through.</summary>
    public string Device { get; init; } = "skyvpns";

    /// <summary>Client addresses are given from here; the first address is the server's own.</summary>
    public IPNetwork Pool { get; init; } = IPNetwork.Parse("10.99.0.0/24");

    /// <summary>IPv6 addresses for clients (a /64 or longer prefix; the first is the server's); null: IPv4 only.</summary>
    public IPNetwork? Pool6 { get; init; } = IPNetwork.Parse("fd00:736b:7670::/64");

    /// <summary>Whether clients' packets leaving by another device are masqueraded to the host's own address.</summary>
    public bool Nat { get; init; } = true;

    /// <summary>DNS servers offered to clients that ask for them.</summary>
    public IReadOnlyList<IPAddress> Dns { get; init; } = [];

    /// <summary>Largest packet the tunnel carries; the path may lower it.</summary>
    public int Mtu { get; init; } = 1420;

    /// <summary>Clients at once; more are refused.</summary>
    public int MaxSessions { get; init; } = 64;

    /// <summary>
    /// Site-to-site: the networks behind each client node that the server routes to it (the client names them when it
    /// connects; a network not listed here for that node is refused).
    /// </summary>
    public IReadOnlyDictionary<NodeAddress, IReadOnlyList<IPNetwork>> Sites { get; init; } = new Dictionary<NodeAddress, IReadOnlyList<IPNetwork>>();
}

/// <summary>What <c>skymesh vpn connect</c> asks for.</summary>
public sealed record VpnConnectOptions
{
    /// <summary>The TUN device on this host.</summary>
    public string Device { get; init; } = "skyvpn0";

    /// <summary>Networks routed into the tunnel.</summary>
    public IReadOnlyList<IPNetwork> Routes { get; init; } = [];

    /// <summary>All traffic into the tunnel (0.0.0.0/1 and 128.0.0.0/1, and ::/1 and 8000::/1 with IPv6), the mesh's own links kept outside.</summary>
    public bool DefaultRoute { get; init; }

    /// <summary>Use the server's DNS servers (replacing /etc/resolv.conf until disconnect).</summary>
    public bool Dns { get; init; }

    /// <summary>Site-to-site: the networks behind this node the server should route here (its <c>sites</c> must allow them).</summary>
    public IReadOnlyList<IPNetwork> Networks { get; init; } = [];
}

/// <summary>The path datagram kinds beside the ping's (1, 2): an IP packet of the VPN, and one between mesh IPv6 addresses.</summary>
public static class IpDatagram
{
    public const byte Vpn = 3;
    public const byte MeshIpv6 = 4;
}
