using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Skymesh.Identity;
using Skymesh.Mesh.Apps;
using Skymesh.Node.Vpn;

namespace Skymesh.Node.Tests;

/// <summary>
/// The VPN's packet work and its two ends over a real path between two nodes on loopback. The kernel's side — the TUN
/// device and the host's routes — is played by an in-memory device and a host that records what it is told; the
/// network-namespace lab (EndToEnd VpnLabTests) runs the real ones.
/// </summary>
public sealed class VpnTests
{
    private static readonly IPAddress Lan = IPAddress.Parse("10.0.9.2");

    // ---- Packets -------------------------------------------------------------------------------------------

    [Fact]
    public void A_SYN_announcing_more_than_the_tunnel_carries_is_clamped_and_its_checksum_still_holds()
    {
        var syn = Packets.TcpSyn(IPAddress.Parse("10.99.0.2"), Lan, mss: 1460);
        Assert.True(Packets.TcpChecksumHolds(syn));
        Assert.True(IpPacket.ClampMss(syn, 4, 1300));
        Assert.Equal(1260, Packets.Mss(syn));
        Assert.True(Packets.TcpChecksumHolds(syn));

        var syn6 = Packets.TcpSyn(IPAddress.Parse("fd00::2"), IPAddress.Parse("fd00::1"), mss: 1440);
        Assert.True(IpPacket.ClampMss(syn6, 6, 1300));
        Assert.Equal(1240, Packets.Mss(syn6));
        Assert.True(Packets.TcpChecksumHolds(syn6));

        // Small enough already: untouched.
        var small = Packets.TcpSyn(IPAddress.Parse("10.99.0.2"), Lan, mss: 1200);
        var copy = small.ToArray();
        Assert.False(IpPacket.ClampMss(small, 4, 1300));
        Assert.Equal(copy, small);
    }

    [Fact]
    public void A_packet_too_big_for_the_path_is_answered_as_a_router_would_and_only_when_it_should_be()
    {
        var packet = Packets.Udp(IPAddress.Parse("10.99.0.2"), Lan, 5000, new byte[1400], dontFragment: true);
        var answer = new byte[1500];
        var length = IpPacket.WriteTooBig(packet, 4, 1300, answer);
        Assert.Equal(20 + 8 + 20 + 8, length);
        var icmp = answer.AsSpan(20, length - 20);
        Assert.Equal(3, icmp[0]);
        Assert.Equal(4, icmp[1]);
        Assert.Equal(1300, BinaryPrimitives.ReadUInt16BigEndian(icmp[6..]));
        Assert.Equal(0, Packets.Sum(icmp, 0));
        Assert.Equal(0, Packets.Sum(answer.AsSpan(0, 20), 0));
        Assert.Equal(Lan, new IPAddress(answer.AsSpan(12, 4)));
        Assert.Equal(IPAddress.Parse("10.99.0.2"), new IPAddress(answer.AsSpan(16, 4)));
        Assert.True(icmp[8..28].SequenceEqual(packet.AsSpan(0, 20)));

        // May be fragmented: no answer (and it is dropped). An ICMP error itself: never answered.
        Assert.Equal(0, IpPacket.WriteTooBig(Packets.Udp(IPAddress.Parse("10.99.0.2"), Lan, 5000, new byte[1400], dontFragment: false), 4, 1300, answer));
        Assert.Equal(0, IpPacket.WriteTooBig(answer.AsSpan(0, length).ToArray(), 4, 576, new byte[1500]));

        var packet6 = Packets.Udp(IPAddress.Parse("fd00::2"), IPAddress.Parse("fd00::9"), 5000, new byte[1400], dontFragment: true);
        var answer6 = new byte[1500];
        var length6 = IpPacket.WriteTooBig(packet6, 6, 1300, answer6);
        Assert.Equal(IpPacket.MinIpv6Mtu, length6);
        Assert.Equal(2, answer6[40]);
        Assert.Equal(1300u, BinaryPrimitives.ReadUInt32BigEndian(answer6.AsSpan(44)));
        Assert.Equal(0, Packets.Sum(answer6.AsSpan(40, length6 - 40), Packets.Pseudo6(answer6.AsSpan(8, 16), answer6.AsSpan(24, 16), length6 - 40, 58)));
    }

    [Fact]
    public void Headers_that_lie_about_their_length_or_version_are_not_packets()
    {
        var packet = Packets.Udp(IPAddress.Parse("10.99.0.2"), Lan, 53, new byte[20], dontFragment: false);
        Assert.Equal(4, IpPacket.Version(packet));
        Assert.Equal(53, IpPacket.DestinationPort(packet, 4));
        Assert.Equal(0, IpPacket.Version(packet.AsSpan(0, 30)));
        var wrongVersion = packet.ToArray();
        wrongVersion[0] = 0x55;
        Assert.Equal(0, IpPacket.Version(wrongVersion));
        Assert.Equal(0, IpPacket.Version(new byte[10]));
    }

    [Fact]
    public void A_nodes_mesh_address_is_in_the_mesh_prefix_and_follows_from_its_key_alone()
    {
        using var a = NodeKey.Generate();
        using var b = NodeKey.Generate();
        var address = MeshIpv6.AddressOf(a.Address);
        Assert.True(MeshIpv6.Prefix.Contains(address));
        Assert.Equal(address, MeshIpv6.AddressOf(NodeAddress.Parse(a.Address.ToString())));
        Assert.NotEqual(address, MeshIpv6.AddressOf(b.Address));
        // docs/vpn.md: fd73:6b79 then the first 96 bits of SHA-256("skymesh ipv6 v1" ‖ key).
        var hash = SHA256.HashData([.. Encoding.ASCII.GetBytes("skymesh ipv6 v1"), .. a.Address.ToBytes()]);
        Assert.Equal(hash.AsSpan(0, 12).ToArray(), address.GetAddressBytes()[4..]);
    }

    [Fact]
    public void Exit_rules_decide_for_packets_without_ports_by_address_alone()
    {
        var policy = ExitPolicy.Parse(["10.0.9.0/24:80", "example.org:*"]);
        Assert.True(policy.AllowsAnyPort(IPAddress.Parse("10.0.9.7")));
        Assert.False(policy.AllowsAnyPort(IPAddress.Parse("10.0.8.7")));
        Assert.True(ExitPolicy.Parse(["*:443"]).AllowsAnyPort(IPAddress.Parse("192.0.2.1")));
        Assert.False(ExitPolicy.None.AllowsAnyPort(IPAddress.Parse("192.0.2.1")));
    }

    // ---- Configuration ------------------------------------------------------------------------------------

    [Fact]
    public void Node_json_vpn_and_ipv6_sections_are_read_and_their_mistakes_named()
    {
        var options = NodeOptions.Parse("""{ "interfaces": [ { "type": "udp", "listen": "0.0.0.0:7400" } ], "exits": ["10.0.9.0/24:*"], "vpn": { "pool": "10.50.0.0/16", "pool6": "none", "dns": ["10.0.9.2"], "nat": false }, "ipv6": {} }""", "/srv");
        Assert.Equal(IPNetwork.Parse("10.50.0.0/16"), options.VpnServe!.Pool);
        Assert.Null(options.VpnServe.Pool6);
        Assert.False(options.VpnServe.Nat);
        Assert.Equal([Lan], options.VpnServe.Dns);
        Assert.Equal("skymesh6", options.Ipv6!.Device);

        const string Nic = """ "interfaces": [ { "type": "udp", "listen": "0.0.0.0:7400" } ], """;
        static NodeConfigException Bad(string json) => Assert.Throws<NodeConfigException>(() => NodeOptions.Parse("{" + Nic + json.TrimStart()[1..], "/srv"));
        Assert.Equal("$.vpn", Bad("""{ "vpn": {} }""").Field);
        Assert.Equal("$.vpn.pool", Bad("""{ "exits": ["*:*"], "vpn": { "pool": "fd00::/64" } }""").Field);
        Assert.Equal("$.vpn.pool", Bad("""{ "exits": ["*:*"], "vpn": { "pool": "10.0.0.0/31" } }""").Field);
        Assert.Equal("$.vpn.pool6", Bad("""{ "exits": ["*:*"], "vpn": { "pool6": "10.0.0.0/8" } }""").Field);
        Assert.Equal("$.vpn.dns", Bad("""{ "exits": ["*:*"], "vpn": { "dns": ["resolver"] } }""").Field);
        Assert.Equal("$.vpn.device", Bad("""{ "exits": ["*:*"], "vpn": { "device": "a/b" } }""").Field);
        Assert.Equal("$.vpn.mtu", Bad("""{ "exits": ["*:*"], "vpn": { "mtu": 100 } }""").Field);
        Assert.StartsWith("$.vpn.sites", Bad("""{ "exits": ["*:*"], "vpn": { "sites": { "not-a-node": ["10.1.0.0/16"] } } }""").Field, StringComparison.Ordinal);
        Assert.Equal("$.ipv6.mtu", Bad("""{ "ipv6": { "mtu": 1000 } }""").Field);
        Assert.Equal("$.ipv6.device", Bad("""{ "ipv6": { "device": "much-too-long-a-name" } }""").Field);
        var later = NodeOptions.Parse("{" + Nic + """ "vpn": { "serve": false, "pool": "10.50.0.0/16" } }""", "/srv");
        Assert.Null(later.VpnServe);
        Assert.Equal(IPNetwork.Parse("10.50.0.0/16"), later.VpnSection!.Pool);
    }

    [Fact]
    public void The_servers_answer_is_read_back_and_a_session_request_names_its_networks()
    {
        var lease = VpnLease.Parse("addr=10.99.0.2/24 gw=10.99.0.1 mtu=1339 addr6=fd00::2/64 gw6=fd00::1 dns=10.0.9.2,10.0.9.3");
        Assert.Equal(IPAddress.Parse("10.99.0.2"), lease.Address);
        Assert.Equal(24, lease.PrefixLength);
        Assert.Equal(1339, lease.Mtu);
        Assert.Equal(IPAddress.Parse("fd00::2"), lease.Address6);
        Assert.Equal(2, lease.Dns.Count);
        Assert.Throws<InvalidDataException>(() => VpnLease.Parse("gw=10.99.0.1 mtu=1339"));
        // A broken or hostile server's answer is a clear error, never an exception of another kind.
        foreach (var bad in new[] { "addr=10.99.0.2 gw=10.99.0.1 mtu=1339", "addr=nonsense/24 gw=10.99.0.1 mtu=1339", "addr=10.99.0.2/24 gw=x mtu=1339",
            "addr=10.99.0.2/24 gw=10.99.0.1 mtu=99999999999", "addr=10.99.0.2/24 gw=10.99.0.1 mtu=1339 dns=,x" })
            Assert.Contains("VPN server's answer", Assert.Throws<InvalidDataException>(() => VpnLease.Parse(bad)).Message, StringComparison.Ordinal);

        Assert.True(VpnServer.TryParseRequest("vpn1 net=192.168.5.0/24,192.168.6.0/24", out var networks, out _));
        Assert.Equal(2, networks.Count);
        Assert.False(VpnServer.TryParseRequest("vpn9", out _, out var error));
        Assert.Contains("vpn1", error, StringComparison.Ordinal);
        Assert.False(VpnServer.TryParseRequest("vpn1 net=nonsense", out _, out error));
        Assert.Contains("nonsense", error, StringComparison.Ordinal);
    }

    // ---- Both ends over a path -----------------------------------------------------------------------------

    [Fact]
    public async Task Packets_cross_the_path_both_ways_and_the_server_drops_what_a_client_may_not_send()
    {
        await using var lab = await VpnPair.StartAsync();
        var client = lab.Client.Node.Vpn.Client!;
        var server = lab.Server.Node.Vpn.Server!;
        // An address of the pool, where the client's node address points (the same after a server restart).
        var me = IPAddress.Parse(client.Status().Address.Split('/')[0]);
        Assert.True(IPNetwork.Parse("10.99.0.0/24").Contains(me) && !me.Equals(IPAddress.Parse("10.99.0.1")), $"{me} is not a client address of 10.99.0.0/24");
        Assert.EndsWith("/24", client.Status().Address, StringComparison.Ordinal);
        Assert.Contains(lab.ClientHost.Calls, c => c == "route 10.0.9.0/24 dev skyvpn0");

        // Client to the LAN the exit policy allows: arrives whole at the server's device.
        var packet = Packets.Udp(me, Lan, 5000, Encoding.ASCII.GetBytes("through the mesh"), dontFragment: true);
        lab.ClientTun.FromHost(packet);
        Assert.Equal(packet, await lab.ServerTun.ToHostAsync());

        // A source that is not the client's, a destination the policy does not allow: dropped and counted.
        lab.ClientTun.FromHost(Packets.Udp(IPAddress.Parse(me.Equals(IPAddress.Parse("10.99.0.77")) ? "10.99.0.78" : "10.99.0.77"), Lan, 5000, new byte[8], dontFragment: false));
        lab.ClientTun.FromHost(Packets.Udp(me, IPAddress.Parse("192.0.2.1"), 5000, new byte[8], dontFragment: false));
        // A SYN: clamped on the way to what the tunnel carries.
        lab.ClientTun.FromHost(Packets.TcpSyn(me, Lan, mss: 8960));
        var syn = await lab.ServerTun.ToHostAsync();
        Assert.Equal(client.Status().Mtu - 40, Packets.Mss(syn));
        Assert.True(Packets.TcpChecksumHolds(syn));
        Assert.Equal(1, server.Counters.Dropped(VpnDrop.Spoofed));
        Assert.Equal(1, server.Counters.Dropped(VpnDrop.NotAllowed));
        var metrics = NodeMetrics.Render(lab.Server.Node);
        Assert.Contains("skymesh_vpn_dropped_total{role=\"server\",reason=\"spoofed\"} 1\n", metrics, StringComparison.Ordinal);
        Assert.Contains("skymesh_vpn_sessions{role=\"server\"} 1\n", metrics, StringComparison.Ordinal);

        // Back: to the client's address, from the LAN.
        var answer = Packets.Udp(Lan, me, 6000, Encoding.ASCII.GetBytes("and back"), dontFragment: true);
        lab.ServerTun.FromHost(answer);
        Assert.Equal(answer, await lab.ClientTun.ToHostAsync());

        // Too big for the tunnel: the server's host hears "fragmentation needed" with the tunnel's MTU.
        var session = Assert.Single(server.Sessions);
        lab.ServerTun.FromHost(Packets.Udp(Lan, me, 6000, new byte[session.Mtu], dontFragment: true));
        var tooBig = await lab.ServerTun.ToHostAsync();
        Assert.Equal(IpPacket.Icmp, tooBig[9]);
        Assert.Equal(session.Mtu, BinaryPrimitives.ReadUInt16BigEndian(tooBig.AsSpan(26)));
        Assert.Equal(1, server.Counters.Dropped(VpnDrop.TooBig));
    }

    [Fact]
    public async Task A_client_whose_server_restarts_begins_its_session_again_with_the_same_address()
    {
        await using var lab = await VpnPair.StartAsync();
        var client = lab.Client.Node.Vpn.Client!;
        var address = client.Status().Address;
        await lab.Server.Node.Vpn.StopServingAsync();
        var restarted = new MemoryTun();
        lab.Server.Node.Vpn.OpenTun = _ => restarted;
        await lab.Server.Node.Vpn.ServeAsync(new VpnServeOptions { Mtu = 1400 }, CancellationToken.None);

        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (client.Status() is not { State: "connected", Reconnects: >= 1 })
            await timer.WaitForNextTickAsync(deadline.Token);
        Assert.Equal(address, client.Status().Address);
        var packet = Packets.Udp(IPAddress.Parse(address.Split('/')[0]), Lan, 5000, Encoding.ASCII.GetBytes("after the restart"), dontFragment: true);
        lab.ClientTun.FromHost(packet);
        Assert.Equal(packet, await restarted.ToHostAsync());
    }

    [Fact]
    public async Task Disconnecting_ends_the_session_at_the_server_and_undoes_every_route_it_added()
    {
        await using var lab = await VpnPair.StartAsync();
        var server = lab.Server.Node.Vpn.Server!;
        Assert.Single(server.Sessions);
        var conflict = await Assert.ThrowsAsync<NodeRequestException>(() =>
            lab.Client.Node.Vpn.ConnectAsync(lab.Server.Node.Address, new VpnConnectOptions { Routes = [IPNetwork.Parse("10.0.9.0/24")] }, CancellationToken.None));
        Assert.Equal(NodeError.Conflict, conflict.Error);

        Assert.True(await lab.Client.Node.Vpn.DisconnectAsync());
        Assert.True(lab.ClientTun.Disposed);
        Assert.False(File.Exists(VpnClient.StateFile(lab.Client.DataDirectory)));
        // The server hears the session's stream end a round trip later.
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (server.Sessions.Count > 0)
            await timer.WaitForNextTickAsync(deadline.Token);
        Assert.Contains(lab.ClientHost.Calls, c => c.StartsWith("device skyvpn0", StringComparison.Ordinal));
        Assert.False(await lab.Client.Node.Vpn.DisconnectAsync());
    }

    [Fact]
    public async Task The_servers_DNS_replaces_the_resolver_while_connected_and_the_old_one_comes_back_on_disconnect_or_after_a_crash()
    {
        await using var chain = await Chain.StartAsync(2);
        chain.Destination.Node.Operator.SetSettings(null, null, ["10.0.9.0/24:*"]);
        chain.Destination.Node.Vpn.OpenTun = _ => new MemoryTun();
        chain.Destination.Node.Vpn.Host = new RecordingHost();
        await chain.Destination.Node.Vpn.ServeAsync(new VpnServeOptions { Dns = [Lan] }, CancellationToken.None);
        var host = new RecordingHost();
        const string Before = "nameserver 192.0.2.53\nsearch example.org\n";
        await File.WriteAllTextAsync(host.ResolverFile, Before, TestContext.Current.CancellationToken);
        try
        {
            chain.Source.Node.Vpn.OpenTun = _ => new MemoryTun();
            chain.Source.Node.Vpn.Host = host;
            var options = new VpnConnectOptions { DefaultRoute = true, Dns = true };
            var client = await chain.Source.Node.Vpn.ConnectAsync(chain.Destination.Node.Address, options, CancellationToken.None);
            Assert.Contains("nameserver 10.0.9.2\n", await File.ReadAllTextAsync(host.ResolverFile, TestContext.Current.CancellationToken), StringComparison.Ordinal);
            Assert.Equal(["10.0.9.2"], client.Status().Dns);
            Assert.Equal(["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"], client.Status().Routes);
            await chain.Source.Node.Vpn.DisconnectAsync();
            Assert.Equal(Before, await File.ReadAllTextAsync(host.ResolverFile, TestContext.Current.CancellationToken));

            // A crash: the node is gone without disconnecting; what it recorded is undone from its data directory.
            await chain.Source.Node.Vpn.ConnectAsync(chain.Destination.Node.Address, options, CancellationToken.None);
            var state = VpnClient.StateFile(chain.Source.DataDirectory);
            var saved = await File.ReadAllTextAsync(state, TestContext.Current.CancellationToken);
            await chain.Source.Node.Vpn.DisconnectAsync();
            await File.WriteAllTextAsync(state, saved, TestContext.Current.CancellationToken);
            await File.WriteAllTextAsync(host.ResolverFile, "nameserver 10.0.9.2\n", TestContext.Current.CancellationToken);
            var undone = VpnHostState.CleanUp(state, host);
            Assert.Contains($"restored {host.ResolverFile}", undone);
            Assert.Equal(Before, await File.ReadAllTextAsync(host.ResolverFile, TestContext.Current.CancellationToken));
            Assert.False(File.Exists(state));
        }
        finally
        {
            File.Delete(host.ResolverFile);
        }
    }

    [Fact]
    public async Task Site_to_site_the_server_routes_the_clients_network_to_it_and_takes_packets_from_that_network()
    {
        await using var chain = await Chain.StartAsync(2);
        var site = IPNetwork.Parse("192.168.5.0/24");
        var serverTun = new MemoryTun();
        var serverHost = new RecordingHost();
        chain.Destination.Node.Operator.SetSettings(null, null, ["10.0.9.0/24:*"]);
        chain.Destination.Node.Vpn.OpenTun = _ => serverTun;
        chain.Destination.Node.Vpn.Host = serverHost;
        await chain.Destination.Node.Vpn.ServeAsync(new VpnServeOptions
        {
            Sites = new Dictionary<NodeAddress, IReadOnlyList<IPNetwork>> { [chain.Source.Node.Address] = [IPNetwork.Parse("192.168.0.0/16")] },
        }, CancellationToken.None);
        var clientTun = new MemoryTun();
        chain.Source.Node.Vpn.OpenTun = _ => clientTun;
        chain.Source.Node.Vpn.Host = new RecordingHost();
        await chain.Source.Node.Vpn.ConnectAsync(chain.Destination.Node.Address,
            new VpnConnectOptions { Routes = [IPNetwork.Parse("10.0.9.0/24")], Networks = [site] }, CancellationToken.None);
        Assert.Contains(serverHost.Calls, c => c == $"route {site} dev skyvpn0");

        // A host on the client's site reaches the server's side, and the server's side reaches it.
        var fromSite = Packets.Udp(IPAddress.Parse("192.168.5.7"), Lan, 5000, Encoding.ASCII.GetBytes("from the site"), dontFragment: true);
        clientTun.FromHost(fromSite);
        Assert.Equal(fromSite, await serverTun.ToHostAsync());
        var toSite = Packets.Udp(Lan, IPAddress.Parse("192.168.5.7"), 6000, Encoding.ASCII.GetBytes("to the site"), dontFragment: true);
        serverTun.FromHost(toSite);
        Assert.Equal(toSite, await clientTun.ToHostAsync());
        Assert.Equal(0, chain.Destination.Node.Vpn.Server!.Counters.Dropped(VpnDrop.Spoofed));

        await chain.Source.Node.Vpn.DisconnectAsync();
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (!serverHost.Calls.Contains($"delete {site}"))
            await timer.WaitForNextTickAsync(deadline.Token);
    }

    [Fact]
    public async Task A_node_that_does_not_serve_or_a_site_it_does_not_route_is_refused_with_the_reason()
    {
        await using var chain = await Chain.StartAsync(2);
        var opened = 0;
        chain.Source.Node.Vpn.OpenTun = _ =>
        {
            opened++;
            return new MemoryTun();
        };
        chain.Source.Node.Vpn.Host = new RecordingHost();
        var refused = await Assert.ThrowsAsync<NodeRequestException>(() => chain.Source.Node.Vpn.ConnectAsync(chain.Destination.Node.Address,
            new VpnConnectOptions { Routes = [IPNetwork.Parse("10.0.9.0/24")] }, CancellationToken.None));
        Assert.Equal(NodeError.Refused, refused.Error);
        Assert.Contains("does not serve the VPN", refused.Message, StringComparison.Ordinal);

        chain.Destination.Node.Vpn.OpenTun = _ => new MemoryTun();
        chain.Destination.Node.Vpn.Host = new RecordingHost();
        await chain.Destination.Node.Vpn.ServeAsync(new VpnServeOptions(), CancellationToken.None);
        refused = await Assert.ThrowsAsync<NodeRequestException>(() => chain.Source.Node.Vpn.ConnectAsync(chain.Destination.Node.Address,
            new VpnConnectOptions { Routes = [IPNetwork.Parse("10.0.9.0/24")], Networks = [IPNetwork.Parse("192.168.5.0/24")] }, CancellationToken.None));
        Assert.Contains("vpn.sites", refused.Message, StringComparison.Ordinal);
        Assert.Null(chain.Source.Node.Vpn.Client);
        Assert.Equal(0, opened);
    }

    /// <summary>Two nodes with a path: the destination serves the VPN (exits: the LAN), the source is connected to it.</summary>
    private sealed class VpnPair : IAsyncDisposable
    {
        private readonly Chain _chain;

        private VpnPair(Chain chain)
        {
            _chain = chain;
        }

        public TestNode Client => _chain.Source;

        public TestNode Server => _chain.Destination;

        public MemoryTun ClientTun { get; } = new();

        public MemoryTun ServerTun { get; } = new();

        public RecordingHost ClientHost { get; } = new();

        public static async Task<VpnPair> StartAsync()
        {
            var pair = new VpnPair(await Chain.StartAsync(2));
            try
            {
                pair.Server.Node.Operator.SetSettings(null, null, ["10.0.9.0/24:*"]);
                pair.Server.Node.Vpn.OpenTun = _ => pair.ServerTun;
                pair.Server.Node.Vpn.Host = new RecordingHost();
                await pair.Server.Node.Vpn.ServeAsync(new VpnServeOptions { Mtu = 1400 }, CancellationToken.None);
                pair.Client.Node.Vpn.OpenTun = _ => pair.ClientTun;
                pair.Client.Node.Vpn.Host = pair.ClientHost;
                await pair.Client.Node.Vpn.ConnectAsync(pair.Server.Node.Address, new VpnConnectOptions { Routes = [IPNetwork.Parse("10.0.9.0/24")] }, CancellationToken.None);
                return pair;
            }
            catch
            {
                await pair.DisposeAsync();
                throw;
            }
        }

        public ValueTask DisposeAsync() => _chain.DisposeAsync();
    }

    /// <summary>A TUN device in memory: what the "host" hands it is read by the VPN; what the VPN writes waits for the test.</summary>
    private sealed class MemoryTun : ITunDevice
    {
        private readonly BlockingCollection<byte[]> _fromHost = [];
        private readonly System.Threading.Channels.Channel<byte[]> _toHost = System.Threading.Channels.Channel.CreateUnbounded<byte[]>();
        private readonly CancellationTokenSource _closed = new();

        public string Name => "skyvpn0";

        public bool Disposed => _closed.IsCancellationRequested;

        public void FromHost(byte[] packet) => _fromHost.Add(packet);

        public async Task<byte[]> ToHostAsync()
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            return await _toHost.Reader.ReadAsync(timeout.Token);
        }

        public int Read(Span<byte> buffer)
        {
            try
            {
                var packet = _fromHost.Take(_closed.Token);
                packet.CopyTo(buffer);
                return packet.Length;
            }
            catch (OperationCanceledException)
            {
                return 0;
            }
        }

        public bool Write(ReadOnlySpan<byte> packet) => _toHost.Writer.TryWrite(packet.ToArray());

        public void Dispose() => _closed.Cancel();
    }

    /// <summary>A host that says yes to everything and writes down what it was told, one line per change.</summary>
    private sealed class RecordingHost : IHostNetwork
    {
        public ConcurrentQueue<string> Calls { get; } = new();

        public string ResolverFile { get; init; } = Path.Combine(Path.GetTempPath(), $"skymesh-test-resolv-{Guid.NewGuid():N}.conf");

        public void ConfigureDevice(string device, int mtu, IEnumerable<string> addresses) => Calls.Enqueue($"device {device} mtu {mtu} {string.Join(' ', addresses)}");

        public void AddRoute(string prefix, string device) => Calls.Enqueue($"route {prefix} dev {device}");

        public void AddRouteVia(string prefix, string? gateway, string device) => Calls.Enqueue($"route {prefix} via {gateway} dev {device}");

        public bool DeleteRoute(string prefix, string? gateway, string? device)
        {
            Calls.Enqueue($"delete {prefix}");
            return true;
        }

        public (string? Gateway, string Device)? RouteTo(IPAddress address) => (null, "eth0");

        public void EnableForwarding(bool ipv6) => Calls.Enqueue("forwarding");

        public void AddMasquerade(string pool, string device) => Calls.Enqueue($"masquerade {pool}");

        public bool DeleteMasquerade(string pool, string device)
        {
            Calls.Enqueue($"unmasquerade {pool}");
            return true;
        }
    }

    /// <summary>IP packets built by hand, with their checksums computed here (RFC 791, 793, 768, 8200).</summary>
    private static class Packets
    {
        public static byte[] TcpSyn(IPAddress source, IPAddress destination, int mss)
        {
            var tcp = new byte[24];
            BinaryPrimitives.WriteUInt16BigEndian(tcp, 40000);
            BinaryPrimitives.WriteUInt16BigEndian(tcp.AsSpan(2), 80);
            BinaryPrimitives.WriteUInt32BigEndian(tcp.AsSpan(4), 12345);
            tcp[12] = 6 << 4;
            tcp[13] = 0x02;
            BinaryPrimitives.WriteUInt16BigEndian(tcp.AsSpan(14), 65535);
            tcp[20] = 2;
            tcp[21] = 4;
            BinaryPrimitives.WriteUInt16BigEndian(tcp.AsSpan(22), (ushort)mss);
            return Wrap(source, destination, 6, tcp, checksumAt: 16, dontFragment: true);
        }

        public static byte[] Udp(IPAddress source, IPAddress destination, int port, byte[] payload, bool dontFragment)
        {
            var udp = new byte[8 + payload.Length];
            BinaryPrimitives.WriteUInt16BigEndian(udp, 33333);
            BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(2), (ushort)port);
            BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(4), (ushort)udp.Length);
            payload.CopyTo(udp, 8);
            return Wrap(source, destination, 17, udp, checksumAt: 6, dontFragment);
        }

        private static byte[] Wrap(IPAddress source, IPAddress destination, byte protocol, byte[] transport, int checksumAt, bool dontFragment)
        {
            var v6 = source.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
            var header = v6 ? 40 : 20;
            var packet = new byte[header + transport.Length];
            if (v6)
            {
                packet[0] = 0x60;
                BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(4), (ushort)transport.Length);
                packet[6] = protocol;
                packet[7] = 64;
                source.GetAddressBytes().CopyTo(packet, 8);
                destination.GetAddressBytes().CopyTo(packet, 24);
            }
            else
            {
                packet[0] = 0x45;
                BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), (ushort)packet.Length);
                packet[6] = dontFragment ? (byte)0x40 : (byte)0;
                packet[8] = 64;
                packet[9] = protocol;
                source.GetAddressBytes().CopyTo(packet, 12);
                destination.GetAddressBytes().CopyTo(packet, 16);
                BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(10), Sum(packet.AsSpan(0, 20), 0));
            }
            transport.CopyTo(packet, header);
            var pseudo = v6 ? Pseudo6(packet.AsSpan(8, 16), packet.AsSpan(24, 16), transport.Length, protocol) : Pseudo4(packet, transport.Length, protocol);
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(header + checksumAt), Sum(packet.AsSpan(header), pseudo));
            return packet;
        }

        public static int Mss(byte[] packet)
        {
            var tcp = packet[0] >> 4 == 4 ? 20 : 40;
            return BinaryPrimitives.ReadUInt16BigEndian(packet.AsSpan(tcp + 22));
        }

        public static bool TcpChecksumHolds(byte[] packet)
        {
            var v6 = packet[0] >> 4 == 6;
            var header = v6 ? 40 : 20;
            var length = packet.Length - header;
            var pseudo = v6 ? Pseudo6(packet.AsSpan(8, 16), packet.AsSpan(24, 16), length, 6) : Pseudo4(packet, length, 6);
            return Sum(packet.AsSpan(header), pseudo) == 0;
        }

        private static uint Pseudo4(byte[] packet, int length, byte protocol) =>
            Words(packet.AsSpan(12, 8)) + (uint)length + protocol;

        public static uint Pseudo6(ReadOnlySpan<byte> source, ReadOnlySpan<byte> destination, int length, byte protocol) =>
            Words(source) + Words(destination) + (uint)length + protocol;

        private static uint Words(ReadOnlySpan<byte> bytes)
        {
            uint sum = 0;
            for (var i = 0; i < bytes.Length; i += 2)
                sum += BinaryPrimitives.ReadUInt16BigEndian(bytes[i..]);
            return sum;
        }

        /// <summary>The ones' complement of the ones' complement sum: 0 over data that includes a correct checksum.</summary>
        public static ushort Sum(ReadOnlySpan<byte> data, uint initial)
        {
            ulong sum = initial;
            for (var i = 0; i < data.Length; i += 2)
                sum += i + 1 < data.Length ? BinaryPrimitives.ReadUInt16BigEndian(data[i..]) : (uint)data[i] << 8;
            while (sum > 0xffff)
                sum = (sum & 0xffff) + (sum >> 16);
            return (ushort)~sum;
        }
    }
}

/// <summary><c>skymesh vpn connect --kind vpn --cheapest</c>: the server is chosen from the offers other nodes announce on a real broker.</summary>
public sealed class VpnChoiceTests : MeshWithBroker
{
    private static string Offer(uint price) =>
        $$""", "exits": ["10.0.9.0/24:*"], "vpn": { "serve": false }, "services": [ { "kind": "vpn", "price": {{price}} } ]""";

    private async Task<TestNode> ServerAsync(uint price)
    {
        var node = await TestNode.StartAsync(Offer(price), broker: Broker.LocalEndPoint);
        Nodes.Add(node);
        node.Node.Vpn.OpenTun = _ => new Skymesh.Tests.SilentTun();
        node.Node.Vpn.Host = new Skymesh.Tests.AcceptingHost();
        await node.Node.Vpn.ServeAsync(new VpnServeOptions(), Ct);
        return node;
    }

    [Fact]
    public async Task Asked_for_the_cheapest_vpn_the_client_connects_to_the_cheaper_offer_and_says_which_it_chose()
    {
        var client = await TestNode.StartAsync(broker: Broker.LocalEndPoint);
        Nodes.Add(client);
        client.Node.Vpn.OpenTun = _ => new Skymesh.Tests.SilentTun();
        client.Node.Vpn.Host = new Skymesh.Tests.AcceptingHost();
        var dear = await ServerAsync(300);
        var cheap = await ServerAsync(120);
        await client.LinkToAsync(dear).WaitAsync(Bound, Ct);
        await client.LinkToAsync(cheap).WaitAsync(Bound, Ct);
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(25));
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        bounded.CancelAfter(Bound);
        while ((await client.Client.ServicesAsync("vpn", cancellationToken: Ct)).Count < 2)
            await timer.WaitForNextTickAsync(bounded.Token);

        var tooCheap = await Assert.ThrowsAsync<NodeApiException>(() =>
            client.Client.VpnConnectAsync(new VpnConnectRequest(null, ["10.0.9.0/24"], false, false, null, null, "vpn", true, MaxPrice: 100), Ct));
        Assert.Equal(HttpStatusCode.NotFound, tooCheap.Status);
        Assert.Contains("within 100", tooCheap.Message, StringComparison.Ordinal);

        var reply = await client.Client.VpnConnectAsync(new VpnConnectRequest(null, ["10.0.9.0/24"], false, false, null, null, "vpn", true), Ct);
        Assert.Equal(cheap.Address, reply.Chosen!.Node);
        Assert.Equal(120ul, reply.Chosen.TotalPrice);
        Assert.Equal(cheap.Address, reply.Client.Server);
        Assert.Equal("connected", reply.Client.State);
        Assert.Single(cheap.Node.Vpn.Server!.Sessions);
        Assert.Empty(dear.Node.Vpn.Server!.Sessions);
        await client.Client.VpnDisconnectAsync(Ct);
    }
}
