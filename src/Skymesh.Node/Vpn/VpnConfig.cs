using System.Net;
using System.Net.Sockets;
using Skymesh.Identity;
using Skymesh.Mesh.Apps;

namespace Skymesh.Node.Vpn;

/// <summary>node.json <c>vpn</c>: the VPN this node serves (docs/vpn.md).</summary>
public sealed class VpnConfig
{
    /// <summary>Serve from the node's start (default true when the section is there).</summary>
    public bool? Serve { get; set; }

    public string? Device { get; set; }

    public string? Pool { get; set; }

    /// <summary>An IPv6 prefix for clients, or "none".</summary>
    public string? Pool6 { get; set; }

    public bool? Nat { get; set; }

    public List<string>? Dns { get; set; }

    public int? Mtu { get; set; }

    public int? MaxSessions { get; set; }

    /// <summary>Client node address → the networks behind it the server routes to it.</summary>
    public Dictionary<string, List<string>>? Sites { get; set; }

    /// <summary>The options node.json asks for; null when <c>serve</c> is false. Every problem names its field.</summary>
    public static VpnServeOptions? Parse(VpnConfig config, ExitPolicy exits)
    {
        var options = ParseOptions(config);
        if (config.Serve == false)
            return null;
        if (exits.Rules.Count == 0 && options.Sites.Count == 0)
            throw new NodeConfigException("$.vpn", "a VPN server forwards only where the exit policy allows: add rules to \"exits\" (e.g. \"*:*\" for a full exit, \"10.0.0.0/8:*\" for a network)");
        return options;
    }

    /// <summary>Checks and converts the section (also for <c>skymesh vpn serve</c>, whose flags fill the same fields).</summary>
    public static VpnServeOptions ParseOptions(VpnConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var defaults = new VpnServeOptions();
        var device = config.Device ?? defaults.Device;
        if (!TunDevice.IsValidName(device))
            throw new NodeConfigException("$.vpn.device", $"\"{device}\" is not an interface name (1 to 15 characters, no '/', ':' or space)");
        var pool = config.Pool is { } p ? Network(p, "$.vpn.pool", AddressFamily.InterNetwork, 30) : defaults.Pool;
        var pool6 = config.Pool6 is null ? defaults.Pool6 : config.Pool6 == "none" ? null : Network(config.Pool6, "$.vpn.pool6", AddressFamily.InterNetworkV6, 126);
        var dns = new List<IPAddress>();
        foreach (var text in config.Dns ?? [])
            dns.Add(IPAddress.TryParse(text, out var address) ? address : throw new NodeConfigException("$.vpn.dns", $"\"{text}\" is not an IP address"));
        var mtu = config.Mtu ?? defaults.Mtu;
        if (mtu is < 576 or > 65_535)
            throw new NodeConfigException("$.vpn.mtu", $"{mtu} is not an MTU from 576 to 65535");
        var maxSessions = config.MaxSessions ?? defaults.MaxSessions;
        if (maxSessions is < 1 or > 65_536)
            throw new NodeConfigException("$.vpn.maxSessions", $"{maxSessions} is not a number of clients from 1 to 65536");
        var sites = new Dictionary<NodeAddress, IReadOnlyList<IPNetwork>>();
        foreach (var (node, networks) in config.Sites ?? [])
        {
            if (!NodeAddress.TryParse(node, out var address))
                throw new NodeConfigException($"$.vpn.sites.{node}", "is not a node address (64 hex digits)");
            sites[address] = [.. networks.Select(n => IPNetwork.TryParse(n, out var network) ? network : throw new NodeConfigException($"$.vpn.sites.{node}", $"\"{n}\" is not a network in CIDR form"))];
        }
        return new VpnServeOptions
        {
            Device = device, Pool = pool, Pool6 = pool6, Nat = config.Nat ?? defaults.Nat, Dns = dns, Mtu = mtu, MaxSessions = maxSessions, Sites = sites,
        };
    }

    private static IPNetwork Network(string text, string field, AddressFamily family, int longest)
    {
        if (!IPNetwork.TryParse(text, out var network) || network.BaseAddress.AddressFamily != family)
            throw new NodeConfigException(field, $"\"{text}\" is not an {(family == AddressFamily.InterNetwork ? "IPv4" : "IPv6")} network in CIDR form");
        if (network.PrefixLength > longest)
            throw new NodeConfigException(field, $"{text} is too small for a server and clients (at most /{longest})");
        return network;
    }
}

/// <summary>node.json <c>ipv6</c>: the node's mesh IPv6 address.</summary>
public sealed class Ipv6Config
{
    public bool? Enabled { get; set; }

    public string? Device { get; set; }

    public int? Mtu { get; set; }

    public static MeshIpv6Options? Parse(Ipv6Config config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.Enabled == false)
            return null;
        var device = config.Device ?? new MeshIpv6Options().Device;
        if (!TunDevice.IsValidName(device))
            throw new NodeConfigException("$.ipv6.device", $"\"{device}\" is not an interface name (1 to 15 characters, no '/', ':' or space)");
        if (config.Mtu is { } mtu && mtu is < IpPacket.MinIpv6Mtu or > 65_535)
            throw new NodeConfigException("$.ipv6.mtu", $"{mtu} is not an IPv6 MTU (1280 to 65535)");
        return new MeshIpv6Options { Device = device, Mtu = config.Mtu };
    }
}
