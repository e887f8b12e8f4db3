using System.Globalization;
using System.Text;

namespace Skymesh.EndToEnd.Tests;

/// <summary>How one home router of a <see cref="NatTopology"/> maps and filters.</summary>
/// <param name="Symmetric">
/// Each new destination (address and port) gets a new, random external port (<c>MASQUERADE --random-fully</c>); when
/// false the router keeps the host's source port whenever it is free on its WAN address (plain <c>MASQUERADE</c>), so one
/// local port is seen with one external port by every destination.
/// </param>
/// <param name="Firewall">
/// The router drops whatever comes in on its WAN side that is not part of, or related to, a flow a LAN host started
/// (as home routers do). Without it the router still forwards nothing unsolicited (MASQUERADE has nothing to
/// translate it to), but it takes each such packet for itself, answers ICMP port unreachable and keeps a conntrack entry
/// for it, and that entry keeps its NAT from giving the same port to a host's flow towards that sender: an early hole
/// punching packet makes the late side's router map its host to another port (see NatLabTests).
/// </param>
public sealed record NatRouterOptions(bool Symmetric = false, bool Firewall = true);

/// <summary>One home of a <see cref="NatTopology"/>: its router and its one host, as lab namespace names and addresses.</summary>
/// <param name="Router">The router's namespace (short name, for <see cref="NetnsLab"/>'s methods): <c>natA</c> or <c>natB</c>.</param>
/// <param name="Host">The host's namespace: <c>hA</c> or <c>hB</c>.</param>
/// <param name="WanAddress">The router's address in the public network: the one address the Internet sees the host by.</param>
/// <param name="LanAddress">The router's address on the LAN, the host's default gateway.</param>
/// <param name="HostAddress">The host's address on the LAN, a private one no other namespace has a route to.</param>
public sealed record NatSite(string Router, string Host, string WanAddress, string LanAddress, string HostAddress, NatRouterOptions Options)
{
    /// <summary>The LAN's prefix length.</summary>
    public const int LanPrefixLength = 24;
}

/// <summary>
/// Two homes behind NAT routers on a shared "Internet", in a <see cref="NetnsLab"/>:
/// <code>
///   hA 10.1.0.2 ── 10.1.0.1 natA 198.51.100.11 ──┐
///                                               br0 in pub: 198.51.100.1 and .2 (/24)
///   hB 10.2.0.2 ── 10.2.0.1 natB 198.51.100.12 ──┘
/// </code>
/// <c>pub</c> is the Internet: a bridge with two addresses of its own where public programs (a broker, a rendezvous
/// node, an echo) run, and no route to either LAN; it forwards nothing. Each router forwards between its LAN and its WAN
/// (<c>ip_forward</c> 1 in the two router namespaces only), masquerades what leaves on its WAN, and routes everything
/// else to <c>pub</c> (default via 198.51.100.1). Each host has one interface, <c>eth0</c>, with its default route
/// through its router. So hA and hB reach <c>pub</c> only from their routers' WAN addresses, and each other only through
/// the mappings their NATs hold. The routers' interfaces are <c>wan</c> and <c>lan</c>; the hosts' <c>eth0</c>; the
/// bridge ports in <c>pub</c> are named after the routers. Everything goes when the lab is disposed.
/// </summary>
public sealed class NatTopology
{
    /// <summary>The public network's namespace (short name).</summary>
    public const string Public = "pub";

    /// <summary>The public namespace's first address, the routers' default gateway.</summary>
    public const string PublicAddress = "198.51.100.1";

    /// <summary>The public namespace's second address, for a second public server on another address.</summary>
    public const string PublicAddress2 = "198.51.100.2";

    /// <summary>The public network (TEST-NET-2).</summary>
    public const string PublicNetwork = "198.51.100.0/24";

    private NatTopology(NetnsLab lab, NatSite a, NatSite b)
    {
        Lab = lab;
        A = a;
        B = b;
    }

    public NetnsLab Lab { get; }

    /// <summary>Home A: natA (WAN 198.51.100.11, LAN 10.1.0.1) and hA (10.1.0.2).</summary>
    public NatSite A { get; }

    /// <summary>Home B: natB (WAN 198.51.100.12, LAN 10.2.0.1) and hB (10.2.0.2).</summary>
    public NatSite B { get; }

    public IReadOnlyList<NatSite> Sites => [A, B];

    /// <summary>Every namespace of the topology, short names.</summary>
    public IReadOnlyList<string> Namespaces => [Public, A.Router, B.Router, A.Host, B.Host];

    /// <summary>Whether this machine can build the topology: a <see cref="NetnsLab"/>, and iptables (Debian's package <c>iptables</c>).</summary>
    public static bool Available => NetnsLab.Available && (File.Exists("/usr/sbin/iptables-restore") || File.Exists("/sbin/iptables-restore"));

    /// <summary>Builds the topology in <paramref name="lab"/>, which must not have namespaces of these names yet; both routers with a firewall.</summary>
    public static Task<NatTopology> CreateAsync(NetnsLab lab, bool symmetricA, bool symmetricB, CancellationToken cancellationToken) =>
        CreateAsync(lab, new NatRouterOptions(symmetricA), new NatRouterOptions(symmetricB), cancellationToken);

    /// <summary>Builds the topology in <paramref name="lab"/>, which must not have namespaces of these names yet.</summary>
    public static async Task<NatTopology> CreateAsync(NetnsLab lab, NatRouterOptions a, NatRouterOptions b, CancellationToken cancellationToken)
    {
        var topology = new NatTopology(lab,
            new NatSite("natA", "hA", "198.51.100.11", "10.1.0.1", "10.1.0.2", a),
            new NatSite("natB", "hB", "198.51.100.12", "10.2.0.1", "10.2.0.2", b));
        foreach (var ns in topology.Namespaces)
            await lab.AddNamespaceAsync(ns, cancellationToken);

        // The Internet: one bridge, two addresses of its own, no forwarding (the lab's default), no route to a LAN.
        await lab.IpInAsync(Public, cancellationToken, "link", "add", "br0", "type", "bridge");
        await lab.IpInAsync(Public, cancellationToken, "link", "set", "br0", "up");
        foreach (var address in new[] { PublicAddress, PublicAddress2 })
            await lab.IpInAsync(Public, cancellationToken, "addr", "add", $"{address}/24", "dev", "br0");

        foreach (var site in topology.Sites)
        {
            var host = lab.Namespace(site.Host);
            // Both veth pairs are made directly inside their namespaces: nothing appears in the host's, so the names
            // need to be unique per namespace only.
            await lab.IpInAsync(site.Router, cancellationToken, "link", "add", "wan", "type", "veth", "peer", "name", site.Router, "netns", lab.Namespace(Public));
            await lab.IpInAsync(Public, cancellationToken, "link", "set", site.Router, "master", "br0", "up");
            await lab.IpInAsync(site.Router, cancellationToken, "addr", "add", $"{site.WanAddress}/24", "dev", "wan");
            await lab.IpInAsync(site.Router, cancellationToken, "link", "set", "wan", "up");
            await lab.IpInAsync(site.Router, cancellationToken, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host);
            await lab.IpInAsync(site.Router, cancellationToken, "addr", "add", $"{site.LanAddress}/{NatSite.LanPrefixLength}", "dev", "lan");
            await lab.IpInAsync(site.Router, cancellationToken, "link", "set", "lan", "up");
            await lab.IpInAsync(site.Router, cancellationToken, "route", "add", "default", "via", PublicAddress);
            await lab.IpInAsync(site.Host, cancellationToken, "addr", "add", $"{site.HostAddress}/{NatSite.LanPrefixLength}", "dev", "eth0");
            await lab.IpInAsync(site.Host, cancellationToken, "link", "set", "eth0", "up");
            await lab.IpInAsync(site.Host, cancellationToken, "route", "add", "default", "via", site.LanAddress);

            // All of the router's rules in one go (iptables-restore replaces the tables it names; the namespace is new).
            var rules = Path.Combine(lab.Directory, $"{site.Router}.rules");
            await File.WriteAllTextAsync(rules, Rules(site.Options), cancellationToken);
            await lab.ExecCheckedAsync(site.Router, cancellationToken, "iptables-restore", rules);
            // Forwarding on in this router's namespace only; its sysctl is the namespace's own.
            await lab.ExecCheckedAsync(site.Router, cancellationToken, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
        }
        return topology;
    }

    /// <summary>The router's iptables rules, in iptables-restore's format.</summary>
    public static string Rules(NatRouterOptions options)
    {
        var rules = new StringBuilder();
        rules.Append("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
        // --random-fully: a random port for every new mapping, so every destination sees another one. (--random did the
        // same on the 6.18 kernel this was written on; --random-fully says what is meant.)
        rules.Append("-A POSTROUTING -o wan -j MASQUERADE").Append(options.Symmetric ? " --random-fully" : "").Append('\n');
        rules.Append("COMMIT\n");
        rules.Append("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
        if (options.Firewall)
        {
            // A dropped packet's conntrack entry is never confirmed: an unsolicited packet leaves no trace in the NAT.
            foreach (var chain in new[] { "INPUT", "FORWARD" })
            {
                rules.Append("-A ").Append(chain).Append(" -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
                rules.Append("-A ").Append(chain).Append(" -i wan -j DROP\n");
            }
        }
        rules.Append("COMMIT\n");
        return rules.ToString();
    }

    /// <summary>The router's conntrack table (<c>/proc/net/nf_conntrack</c> of its namespace; no conntrack tool needed).</summary>
    public Task<string> ConntrackAsync(NatSite site, CancellationToken cancellationToken) =>
        Lab.ExecCheckedAsync(site.Router, cancellationToken, "cat", "/proc/net/nf_conntrack");

    /// <summary>How many packets the router's firewall has dropped from its WAN side (its INPUT and FORWARD chains' DROP rules).</summary>
    public async Task<long> DroppedAsync(NatSite site, CancellationToken cancellationToken)
    {
        long dropped = 0;
        foreach (var chain in new[] { "INPUT", "FORWARD" })
        {
            var listing = await Lab.ExecCheckedAsync(site.Router, cancellationToken, "iptables", "-L", chain, "-n", "-v", "-x");
            foreach (var line in listing.Split('\n'))
            {
                // "   pkts   bytes target prot opt in out source destination"
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length > 2 && fields[2] == "DROP")
                    dropped += long.Parse(fields[0], CultureInfo.InvariantCulture);
            }
        }
        return dropped;
    }

    /// <summary>
    /// For a failure message: every namespace's addresses and routes, and each router's forwarding, iptables tables with
    /// their counters and conntrack table.
    /// </summary>
    public async Task<string> DiagnosticsAsync(CancellationToken cancellationToken)
    {
        var report = new StringBuilder();
        async Task Section(string ns, string title, string program, params string[] arguments)
        {
            report.Append("---- ").Append(ns).Append(": ").Append(title).Append(" ----\n");
            try
            {
                var (code, output) = await Lab.RunAsync(ns, TimeSpan.FromSeconds(10), cancellationToken, program, arguments);
                report.Append(output);
                if (code != 0)
                    report.Append("(exit ").Append(code).Append(")\n");
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                report.Append("(failed: ").Append(e.Message).Append(")\n");
            }
        }
        foreach (var ns in Namespaces)
        {
            await Section(ns, "ip -br addr", "ip", "-br", "addr");
            await Section(ns, "ip route", "ip", "route");
        }
        foreach (var site in Sites)
        {
            await Section(site.Router, "ip_forward", "cat", "/proc/sys/net/ipv4/ip_forward");
            await Section(site.Router, "iptables -t nat -L -n -v -x", "iptables", "-t", "nat", "-L", "-n", "-v", "-x");
            await Section(site.Router, "iptables -L -n -v -x", "iptables", "-L", "-n", "-v", "-x");
            await Section(site.Router, "/proc/net/nf_conntrack", "cat", "/proc/net/nf_conntrack");
        }
        return report.ToString();
    }
}
