using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// The VPN and mesh IPv6 (src/Skymesh.Node/Vpn) between `skymesh node` processes, each in a network namespace of its own
/// joined to its neighbours by veth pairs only, with no forwarding: a client node carries its host's packets over a
/// multi-hop mesh path to a VPN server node, whose host forwards them (and masquerades them) to a LAN host the client
/// has no IP route to; and two nodes with <c>"ipv6": {}</c> reach each other by their mesh IPv6 addresses with
/// unmodified programs (ping, curl). Only the broker's namespace reaches the broker; every other node joins the bus
/// through its neighbours (<c>"broker": "via-neighbours"</c>).
/// </summary>
public sealed partial class VpnLabTests : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private const string Api = "127.0.0.1:7300";
    private const int MeshPort = 7400;
    private const int BrokerPort = 8787;
    private const int FilePort = 8000;
    private const string Device = "skyvpn0";

    // Apart from the lab's veth subnets (10.99.N.0/30, N from 1) and from the server's default pool.
    private const string Pool = "10.98.0.0/24";

    private NetnsLab? _lab;
    private readonly Dictionary<string, string> _last = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private NetnsLab Lab => _lab ?? throw new InvalidOperationException("no lab yet");

    public async ValueTask DisposeAsync()
    {
        if (_lab is not null)
            await _lab.DisposeAsync();
    }

    /// <summary>A node: its namespace (one per node), data directory and address.</summary>
    private sealed record Node(string Name, string Ns, string Dir, string Address)
    {
        public Skymesh? Process { get; set; }
    }

    [Fact]
    public async Task A_client_three_hops_from_the_VPN_server_reaches_the_LAN_behind_it_keeps_its_session_when_a_relay_dies_and_leaves_its_routes_as_they_were()
    {
        SkipUnlessLabTools("iperf3", "ping", "curl", "iptables", "ip6tables");

        // The lab: C has two relays, R1 and R3, each linked to R2, which is S's only neighbour; L is on a LAN behind S.
        _lab = await NetnsLab.CreateAsync(["c", "r1", "r2", "r3", "s", "l"], Ct);
        var cr1 = await Lab.LinkAsync("c", "r1", Ct);
        var cr3 = await Lab.LinkAsync("c", "r3", Ct);
        var r1r2 = await Lab.LinkAsync("r1", "r2", Ct);
        var r3r2 = await Lab.LinkAsync("r3", "r2", Ct);
        var r2s = await Lab.LinkAsync("r2", "s", Ct);
        var sl = await Lab.LinkAsync("s", "l", Ct);
        var lan = $"{sl.B[..sl.B.LastIndexOf('.')]}.0/30";
        var host = sl.B;

        // Isolation: nobody forwards, so C has no route to L or to S, and R2 (S's neighbour) none to L.
        foreach (var ns in new[] { "c", "r1", "r2", "r3", "s", "l" })
            Assert.Equal("0", await Lab.ForwardingAsync(ns, Ct));
        Assert.Equal("ENETUNREACH", await ConnectAsync("c", host, 5201));
        Assert.Equal("ENETUNREACH", await ConnectAsync("c", sl.A, 5201));
        Assert.Equal("ENETUNREACH", await ConnectAsync("c", r2s.B, 5201));
        Assert.Equal("ENETUNREACH", await ConnectAsync("r2", host, 5201));
        Assert.Equal("ECONNREFUSED", await ConnectAsync("s", host, 5201));

        var (c, r1, r2, r3, s) = (MakeNode("C", "c"), MakeNode("R1", "r1"), MakeNode("R2", "r2"), MakeNode("R3", "r3"), MakeNode("S", "s"));
        var fingerprint = await StartBrokerAsync("s");
        // S serves the VPN, its exit policy allowing the LAN only; the others reach the bus through their neighbours.
        await WriteConfigAsync(s, $"127.0.0.1:{BrokerPort}", [], $$""", "exits": [ "{{lan}}:*" ], "vpn": { "pool": "{{Pool}}" }""");
        await WriteConfigAsync(r2, "via-neighbours", [(s, r2s.B)]);
        await WriteConfigAsync(r1, "via-neighbours", [(r2, r1r2.B)]);
        await WriteConfigAsync(r3, "via-neighbours", [(r2, r3r2.B)]);
        await WriteConfigAsync(c, "via-neighbours", [(r1, cr1.B), (r3, cr3.B)]);
        await StartAsync(c, r1, r2, r3, s);
        Log("broker and five nodes started; S serves the VPN");

        var status = await UntilStatusAsync(c, st => Control(st) == "connected" && Bus(st, "mode") == "via-neighbours" && Hops(st) == 3,
            "C on the control bus through its neighbours, 3 relays from the broker");
        Assert.Equal(fingerprint, Bus(status, "brokerPin"));
        Log($"C on the bus through {Name(Bus(status, "via"), r1, r3)}, 3 relays from the broker");

        // Only S's host forwards now (the VPN server turned it on), and still no IP way from C to the LAN.
        foreach (var ns in new[] { "c", "r1", "r2", "r3", "l" })
            Assert.Equal("0", await Lab.ForwardingAsync(ns, Ct));
        Assert.Equal("1", await Lab.ForwardingAsync("s", Ct));
        Assert.Equal("ENETUNREACH", await ConnectAsync("c", host, 5201));

        var iperf = Lab.Start("iperf3 server", "l", "iperf3", "-s", "--forceflush");
        await iperf.WaitForTextAsync("Server listening", Bound, Ct);

        // (1) Connect: C's host gets a device, an address from the pool and a route to the LAN, over a path of 3 hops.
        var routesBefore = await RoutesAsync("c");
        var connected = await ConnectVpnAsync(c, s, lan);
        var address = Text(connected, "address")!;
        Assert.Equal("connected", Text(connected, "state"));
        Assert.Equal(Device, Text(connected, "device"));
        Assert.StartsWith("10.98.0.", address, StringComparison.Ordinal);
        Assert.Contains(lan, connected.GetProperty("routes").EnumerateArray().Select(r => r.GetString()));
        Assert.Contains($"inet {address} ", await Lab.IpInAsync("c", Ct, "-o", "addr", "show", "dev", Device), StringComparison.Ordinal);
        Assert.Contains($"{lan} dev {Device}", await Lab.IpInAsync("c", Ct, "-4", "route", "show"), StringComparison.Ordinal);
        var hops = await VpnPathHopsAsync(c);
        Assert.True(hops.Length == 4 && hops[0] == c.Address && (hops[1] == r1.Address || hops[1] == r3.Address) && hops[2] == r2.Address && hops[3] == s.Address,
            $"the VPN's path is not C - R1|R3 - R2 - S: {string.Join(" - ", hops.Select(h => Name(h, c, r1, r2, r3, s)))}\n{Report()}");
        var relay = hops[1] == r1.Address ? r1 : r3;
        var other = relay == r1 ? r3 : r1;
        await UntilAsync("C's session on S", async () => (await ServerSessionsAsync(s)).Any(x => Text(x, "node") == c.Address && Text(x, "address") == address.Split('/')[0]));
        Log($"VPN up: C is {address} on {Device}, path C - {relay.Name} - R2 - S, MTU {connected.GetProperty("mtu").GetInt32()}");

        var (ping, pingOutput) = await Lab.RunAsync("c", Bound, Ct, "ping", "-c", "5", "-i", "0.2", "-W", "2", host);
        Assert.True(ping == 0 && pingOutput.Contains("5 packets transmitted, 5 received", StringComparison.Ordinal), $"ping -c 5 {host} from C exited with {ping}:\n{pingOutput}\n{Report()}");
        Log($"ping C -> L ({host}) through the VPN: 5 of 5 answered, rtt min/avg/max {Rtt(pingOutput)} ms");

        var (code, output) = await Lab.RunAsync("c", Bound, Ct, "iperf3", "-c", host, "-t", "3", "-J");
        var result = Parse(output);
        Assert.True(code == 0 && result.ValueKind == JsonValueKind.Object, $"iperf3 -c {host} from C exited with {code}:\n{output}\n{Report()}");
        var received = result.GetProperty("end").GetProperty("sum_received");
        var mbits = received.GetProperty("bits_per_second").GetDouble() / 1e6;
        Assert.True(mbits > 1, $"iperf3 through the VPN moved {mbits:0.00} Mbit/s, less than 1\n{output}");
        Log($"iperf3 C -> L through the VPN, 3 s: {mbits:0.0} Mbit/s ({received.GetProperty("bytes").GetInt64():N0} bytes received)");

        // (2) The relay the path goes through dies without a word, pings going every 0.2 s: the session stays up with
        // its address and device, the path moves onto the other relay, and pings are answered again.
        using (var pinging = new LabProcess(["netns", "exec", Lab.Namespace("c"), "ping", "-i", "0.2", "-O", "-W", "1", host]))
        {
            await UntilAsync("pings answered before the relay dies", () => Task.FromResult(Replies(pinging.Output).Count >= 5), () => pinging.Output);
            var lastBefore = Replies(pinging.Output).Max();
            await relay.Process!.CrashAsync(Bound);
            var killed = Stopwatch.StartNew();
            Log($"{relay.Name} killed (SIGKILL), the last ping answered before it icmp_seq={lastBefore}");

            JsonElement client = default;
            await UntilAsync($"the VPN connected as {address} on a path through {other.Name}", async () =>
            {
                client = Client(await VpnStatusAsync(c));
                return Text(client, "state") == "connected" && Text(client, "address") == address
                    && (await VpnPathHopsAsync(c)).SequenceEqual([c.Address, other.Address, r2.Address, s.Address]);
            });
            var repairedAfter = killed.ElapsedMilliseconds;
            var sentByThen = Sequences(pinging.Output).DefaultIfEmpty(lastBefore).Max();
            Assert.Contains($"inet {address} ", await Lab.IpInAsync("c", Ct, "-o", "addr", "show", "dev", Device), StringComparison.Ordinal);
            var path = await PathAsync(c, client.GetProperty("path").GetInt32());
            Log($"VPN still connected as {address} on {Device}, its path C - {other.Name} - R2 - S {repairedAfter} ms after the kill "
                + $"(path {path.GetProperty("id").GetInt32()}, {path.GetProperty("repairs").GetInt32()} repairs; {client.GetProperty("reconnects").GetInt32()} session reconnects)");

            await UntilAsync("pings sent after the repair answered", () => Task.FromResult(Replies(pinging.Output).Any(q => q > sentByThen)), () => pinging.Output);
            var replies = Replies(pinging.Output);
            var firstAfter = replies.Where(q => q > lastBefore).Min();
            Log($"pings answered again from icmp_seq={firstAfter}: {firstAfter - lastBefore - 1} unanswered across the kill (about {(firstAfter - lastBefore - 1) * 0.2:0.0} s); "
                + $"{replies.Count(q => q > sentByThen)} answered of those sent after the repair so far");
        }

        // (3) Disconnect: the device goes, and C's routes are exactly what they were before the VPN.
        (code, output) = await CliAsync(c, "vpn", "disconnect");
        Assert.True(code == 0, $"vpn disconnect on C exited with {code}: {output}\n{Report()}");
        var routesAfter = await RoutesAsync("c");
        Assert.Equal(routesBefore.V4, routesAfter.V4);
        Assert.Equal(routesBefore.V6, routesAfter.V6);
        Assert.DoesNotContain(Device, await Lab.IpInAsync("c", Ct, "-o", "link", "show"), StringComparison.Ordinal);
        var after = await VpnStatusAsync(c);
        Assert.True(after.ValueKind == JsonValueKind.Object && Client(after).ValueKind is JsonValueKind.Null or JsonValueKind.Undefined, $"C's VPN status after disconnect: {after}");
        Assert.Equal("ENETUNREACH", await ConnectAsync("c", host, 5201));
        await UntilAsync("S without sessions", async () => (await ServerSessionsAsync(s)).Length == 0);
        Log($"VPN disconnected: {Device} gone, C's {routesAfter.V4.Length} IPv4 and {routesAfter.V6.Length} IPv6 routes as before, S has no session");
    }

    [Fact]
    public async Task Two_nodes_with_mesh_IPv6_reach_each_other_through_a_relay_by_their_mesh_addresses_with_unmodified_ping_and_curl()
    {
        SkipUnlessLabTools("ping", "curl");

        // The lab: C - R - S; C and S have mesh IPv6, R only relays.
        _lab = await NetnsLab.CreateAsync(["c", "r", "s"], Ct);
        var cr = await Lab.LinkAsync("c", "r", Ct);
        var rs = await Lab.LinkAsync("r", "s", Ct);
        Assert.Equal("ENETUNREACH", await ConnectAsync("c", rs.B, FilePort));

        var (c, r, s) = (MakeNode("C", "c"), MakeNode("R", "r"), MakeNode("S", "s"));
        await StartBrokerAsync("s");
        await WriteConfigAsync(s, $"127.0.0.1:{BrokerPort}", [], """, "ipv6": {}""");
        await WriteConfigAsync(r, "via-neighbours", [(s, rs.B)]);
        await WriteConfigAsync(c, "via-neighbours", [(r, cr.B)], """, "ipv6": {}""");
        await StartAsync(c, r, s);
        Log("broker and three nodes started; C and S with mesh IPv6");

        // S's mesh address, from its key alone, is the one its node holds on its device.
        var (code, output) = await Lab.SkymeshAsync("c", "ipv6", s.Address);
        Assert.True(code == 0, $"skymesh ipv6 exited with {code}: {output}");
        var target = output.Trim();
        Assert.StartsWith("fd73:6b79:", target, StringComparison.Ordinal);
        Assert.Equal(target, await MeshIpv6Async(s));
        Assert.Contains($"inet6 {target}/32 ", await Lab.IpInAsync("s", Ct, "-o", "addr", "show", "dev", "skymesh6"), StringComparison.Ordinal);
        var own = await MeshIpv6Async(c);
        await UntilStatusAsync(c, st => Control(st) == "connected" && Hops(st) == 2, "C on the control bus through R, 2 relays from the broker");
        Log($"C is {own}, S is {target}; C on the bus through R");

        var www = Path.Combine(Lab.Directory, "www");
        Directory.CreateDirectory(www);
        var file = RandomNumberGenerator.GetBytes(RandomNumberGenerator.GetInt32(1 << 20, (2 << 20) + 1));
        await File.WriteAllBytesAsync(Path.Combine(www, "blob.bin"), file, Ct);
        var server = Lab.Start("file server", "s", "python3", "-u", "-m", "http.server", "--bind", "::", "--directory", www, FilePort.ToString(CultureInfo.InvariantCulture));
        await server.WaitForTextAsync("Serving HTTP", Bound, Ct);

        // The first packet to S's address opens a path through R; until it is up, curl is tried again.
        var fetched = Path.Combine(Lab.Directory, "fetched.bin");
        var attempts = new StringBuilder();
        var fetching = Stopwatch.StartNew();
        await UntilAsync($"curl http://[{target}]:{FilePort}/blob.bin from C", async () =>
        {
            File.Delete(fetched);
            var (curl, said) = await Lab.RunAsync("c", Bound, Ct, "curl", "-g", "-sS", "--max-time", "20", "-o", fetched, $"http://[{target}]:{FilePort}/blob.bin");
            if (curl != 0)
            {
                attempts.Append("curl exited with ").Append(curl).Append(": ").Append(said.Trim()).Append('\n');
                return false;
            }
            // A whole answer that differs is never retried: that would be the mesh corrupting data.
            var got = await File.ReadAllBytesAsync(fetched, Ct);
            Assert.True(SHA256.HashData(got).AsSpan().SequenceEqual(SHA256.HashData(file)), $"{got.Length:N0} bytes arrived for {file.Length:N0}, and they differ");
            return true;
        }, () => attempts.ToString());
        Log($"{file.Length:N0} bytes fetched by curl from [{target}] in {fetching.ElapsedMilliseconds} ms, byte-identical"
            + (attempts.Length == 0 ? "" : $" (after: {attempts.ToString().Trim().Replace('\n', ';')})"));
        Assert.Equal([c.Address, r.Address, s.Address], await PathHopsToAsync(c, s));

        (code, output) = await Lab.RunAsync("c", Bound, Ct, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", target);
        Assert.True(code == 0 && output.Contains("3 packets transmitted, 3 received", StringComparison.Ordinal), $"ping -6 {target} from C exited with {code}:\n{output}\n{Report()}");
        var counters = (await VpnStatusAsync(c)).GetProperty("ipv6");
        Log($"ping -6 C -> S by mesh address: 3 of 3 answered, rtt min/avg/max {Rtt(output)} ms; C's mesh IPv6 sent {counters.GetProperty("packetsOut").GetInt64():N0} packets, "
            + $"received {counters.GetProperty("packetsIn").GetInt64():N0}");
    }

    [Fact]
    public async Task A_host_sends_everything_through_the_cheapest_VPN_exit_skymesh_services_finds_and_vpn_down_puts_it_back_after_a_crash()
    {
        SkipUnlessLabTools("curl", "iptables");

        // The lab: C - R - S - L, L standing for the Internet beyond the exit S. L has no route back to C's VPN address,
        // so what reaches it from C has been masqueraded by S.
        _lab = await NetnsLab.CreateAsync(["c", "r", "s", "l"], Ct);
        var cr = await Lab.LinkAsync("c", "r", Ct);
        var rs = await Lab.LinkAsync("r", "s", Ct);
        var sl = await Lab.LinkAsync("s", "l", Ct);
        Assert.Equal("ENETUNREACH", await ConnectAsync("c", sl.B, FilePort));

        // C's resolver file: `ip netns exec` puts /etc/netns/NS/resolv.conf in place of /etc/resolv.conf for the node.
        var etc = Path.Combine("/etc/netns", Lab.Namespace("c"));
        Directory.CreateDirectory(etc);
        var resolver = Path.Combine(etc, "resolv.conf");
        const string OwnResolver = "nameserver 192.0.2.53\n";
        await File.WriteAllTextAsync(resolver, OwnResolver, Ct);
        try
        {
            var (c, r, s) = (MakeNode("C", "c"), MakeNode("R", "r"), MakeNode("S", "s"));
            await StartBrokerAsync("s");
            await WriteConfigAsync(s, $"127.0.0.1:{BrokerPort}", [], $$"""
                , "exits": [ "*:*" ], "vpn": { "pool": "{{Pool}}", "dns": [ "{{sl.B}}" ] },
                "services": [ { "kind": "vpn", "price": 150, "region": "lab" } ]
                """);
            await WriteConfigAsync(r, "via-neighbours", [(s, rs.B)]);
            await WriteConfigAsync(c, "via-neighbours", [(r, cr.B)]);
            await StartAsync(c, r, s);
            await UntilStatusAsync(c, st => Control(st) == "connected" && Hops(st) == 2, "C on the control bus through R");
            var www = Path.Combine(Lab.Directory, "www");
            Directory.CreateDirectory(www);
            var file = RandomNumberGenerator.GetBytes(200_000);
            await File.WriteAllBytesAsync(Path.Combine(www, "page.bin"), file, Ct);
            var web = Lab.Start("web server", "l", "python3", "-u", "-m", "http.server", "--bind", sl.B, "--directory", www, FilePort.ToString(CultureInfo.InvariantCulture));
            await web.WaitForTextAsync("Serving HTTP", Bound, Ct);

            // skymesh services finds S's offer, two hops away.
            JsonElement offer = default;
            await UntilAsync("S's vpn offer listed on C", async () =>
            {
                var (listed, json) = await CliAsync(c, "services", "--kind", "vpn", "--json");
                offer = listed == 0 ? Parse(json).EnumerateArray().FirstOrDefault() : default;
                return offer.ValueKind == JsonValueKind.Object && Text(offer, "node") == s.Address;
            });
            Assert.Equal(150u, offer.GetProperty("price").GetUInt32());
            Assert.Equal("lab", Text(offer, "region"));
            Assert.Equal(2, offer.GetProperty("hops").GetInt32());
            Log($"skymesh services on C lists S's vpn at {offer.GetProperty("totalPrice").GetUInt64()} per MiB in all, {offer.GetProperty("hops").GetInt32()} hops");

            // Everything through the cheapest VPN, with its DNS.
            var routesBefore = await RoutesAsync("c");
            JsonElement reply = default;
            await UntilAsync("vpn connect --kind vpn --cheapest --default-route --dns on C", async () =>
            {
                var (code, json) = await CliAsync(c, "vpn", "connect", "--kind", "vpn", "--cheapest", "--default-route", "--dns", "--json");
                reply = code == 0 ? Parse(json) : default;
                return reply.ValueKind == JsonValueKind.Object;
            });
            Assert.Equal(s.Address, Text(reply.GetProperty("chosen"), "node"));
            var client = reply.GetProperty("client");
            Assert.True(client.GetProperty("defaultRoute").GetBoolean());
            Assert.Equal($"nameserver {sl.B}\n", (await File.ReadAllTextAsync(resolver, Ct)).Split('\n', 2)[1]);
            // The Internet goes into the tunnel; the neighbour the mesh itself runs over does not.
            Assert.Contains($"dev {Device}", await Lab.IpInAsync("c", Ct, "route", "get", sl.B), StringComparison.Ordinal);
            Assert.DoesNotContain($"dev {Device}", await Lab.IpInAsync("c", Ct, "route", "get", cr.B), StringComparison.Ordinal);
            Log($"C connected to {Name(Text(reply.GetProperty("chosen"), "node"), s)} as {Text(client, "address")}, everything routed into {Device}, DNS {sl.B}");

            var fetched = Path.Combine(Lab.Directory, "page.out");
            var (curl, said) = await Lab.RunAsync("c", Bound, Ct, "curl", "-sS", "--max-time", "20", "-o", fetched, $"http://{sl.B}:{FilePort}/page.bin");
            Assert.True(curl == 0, $"curl to L from C exited with {curl}: {said}\n{Report()}");
            Assert.Equal(SHA256.HashData(file), SHA256.HashData(await File.ReadAllBytesAsync(fetched, Ct)));
            Assert.Contains($"{sl.A} - -", web.Output, StringComparison.Ordinal);
            // The mesh still runs under its own tunnel: C is on the bus, and S still holds C's session.
            await UntilStatusAsync(c, st => Control(st) == "connected", "C still on the control bus");
            Log($"{file.Length:N0} bytes from L through the exit, byte-identical; L saw them come from S's address {sl.A}");

            // A crash: the node dies without a word. Its device and the routes into it go with the process; the route
            // that kept the neighbour outside the tunnel and the resolver stay until `skymesh vpn down` puts them back.
            await c.Process!.CrashAsync(Bound);
            Assert.NotEqual(routesBefore.V4, (await RoutesAsync("c")).V4);
            Assert.NotEqual(OwnResolver, await File.ReadAllTextAsync(resolver, Ct));
            var (down, downSaid) = await Lab.SkymeshAsync("c", "vpn", "down", "--api", Api, "--data-dir", c.Dir);
            Assert.True(down == 0, $"vpn down exited with {down}: {downSaid}");
            Assert.Contains("removed the route", downSaid, StringComparison.Ordinal);
            Assert.Contains("restored", downSaid, StringComparison.Ordinal);
            Assert.Equal(routesBefore.V4, (await RoutesAsync("c")).V4);
            Assert.Equal(routesBefore.V6, (await RoutesAsync("c")).V6);
            Assert.Equal(OwnResolver, await File.ReadAllTextAsync(resolver, Ct));
            Log($"after SIGKILL of C's node, skymesh vpn down: {downSaid.Trim().Replace('\n', ';')}; routes and resolver as before");
        }
        finally
        {
            Directory.Delete(etc, recursive: true);
        }
    }

    private static void SkipUnlessLabTools(params string[] tools)
    {
        if (!NetnsLab.Available)
            Assert.Skip("needs root and iproute2 (network namespaces)");
        if (!File.Exists("/dev/net/tun"))
            Assert.Skip("needs /dev/net/tun (TUN devices)");
        var missing = tools.Append("python3").Where(t => !OnPath(t)).ToArray();
        if (missing.Length > 0)
            Assert.Skip($"needs {string.Join(", ", missing)} (test.sh installs them)");
    }

    private static bool OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries).Append("/usr/sbin").Append("/sbin")
            .Any(dir => File.Exists(Path.Combine(dir, program)));

    private void Log(string message) =>
        TestContext.Current.TestOutputHelper?.WriteLine($"{_clock.Elapsed.TotalSeconds,6:0.0} s  {message}");

    private void Remember(string what, int code, string output)
    {
        lock (_last)
            _last[what] = $"(exit {code}) {output.Trim()}";
    }

    /// <summary>A node's key, made before any node starts: every address is known for the neighbours' "peers".</summary>
    private Node MakeNode(string name, string ns)
    {
        var dir = Path.Combine(Lab.Directory, name);
        Directory.CreateDirectory(dir);
        using var key = Identity.NodeKeyFile.LoadOrCreate(Path.Combine(dir, "node.key"));
        return new Node(name, ns, dir, key.Address.ToString());
    }

    /// <summary>The broker on <paramref name="ns"/>'s loopback, TLS beside plaintext (nodes that join through neighbours speak TLS to it); its key's fingerprint.</summary>
    private async Task<string> StartBrokerAsync(string ns)
    {
        var broker = Lab.StartSkymesh("broker", ns, "broker", "--listen", $"127.0.0.1:{BrokerPort}", "--tls-self-signed", Path.Combine(Lab.Directory, "broker.pem"));
        var fingerprint = FingerprintPattern().Match(await broker.WaitForLineAsync("tls fingerprint", Bound)).Value;
        Assert.StartsWith("sha256:", fingerprint, StringComparison.Ordinal);
        return fingerprint;
    }

    /// <summary>node.json with short keepalives (a dead neighbour is noticed in 2 s), the neighbours on the broker's side as static peers, and <paramref name="extra"/> members.</summary>
    private async Task WriteConfigAsync(Node node, string broker, (Node Peer, string Endpoint)[] peers, string extra = "")
    {
        var list = string.Join(", ", peers.Select(p => $$"""{ "address": "{{p.Peer.Address}}", "endpoint": "{{p.Endpoint}}:{{MeshPort}}" }"""));
        await File.WriteAllTextAsync(Path.Combine(node.Dir, "node.json"), $$"""
            {
              "broker": "{{broker}}",
              "api": "{{Api}}",
              "keepaliveSeconds": 0.25,
              "deadAfterSeconds": 2,
              "interfaces": [ { "type": "udp", "listen": "0.0.0.0:{{MeshPort}}" } ],
              "peers": [ {{list}} ]{{extra}}
            }
            """, Ct);
    }

    private async Task StartAsync(params Node[] nodes)
    {
        foreach (var node in nodes)
            node.Process = Lab.StartSkymesh(node.Name, node.Ns, "node", "--config", Path.Combine(node.Dir, "node.json"));
        foreach (var node in nodes)
            await node.Process!.WaitForTextAsync("local API:", Bound);
    }

    /// <summary>A skymesh command against <paramref name="node"/>'s API, run inside its namespace.</summary>
    private async Task<(int Code, string Output)> CliAsync(Node node, params string[] arguments)
    {
        var (code, output) = await Lab.SkymeshAsync(node.Ns, [.. arguments, "--api", Api, "--data-dir", node.Dir]);
        Remember($"{node.Name} {string.Join(' ', arguments.Take(2))}", code, output);
        return (code, output);
    }

    /// <summary>
    /// `skymesh vpn connect` on <paramref name="client"/> to <paramref name="server"/>, tried until the route finder
    /// knows a way (it needs both ends' announcements of every link); the client's status (`vpn status`) then.
    /// </summary>
    private async Task<JsonElement> ConnectVpnAsync(Node client, Node server, string route)
    {
        await UntilAsync($"vpn connect from {client.Name} to {server.Name}", async () => (await CliAsync(client, "vpn", "connect", server.Address, "--route", route)).Code == 0);
        return Client(await VpnStatusAsync(client));
    }

    /// <summary>`skymesh vpn status --json`; default when the node did not answer.</summary>
    private async Task<JsonElement> VpnStatusAsync(Node node)
    {
        var (code, output) = await CliAsync(node, "vpn", "status", "--json");
        return code == 0 ? Parse(output) : default;
    }

    /// <summary>The mesh IPv6 address <paramref name="node"/> holds, as its VPN status says once it is on.</summary>
    private async Task<string> MeshIpv6Async(Node node)
    {
        string? address = null;
        await UntilAsync($"{node.Name}'s mesh IPv6 address on", async () =>
        {
            var vpn = await VpnStatusAsync(node);
            address = vpn.ValueKind == JsonValueKind.Object && vpn.TryGetProperty("ipv6", out var ipv6) ? Text(ipv6, "address") : null;
            return address is not null;
        });
        return address!;
    }

    private static JsonElement Client(JsonElement vpn) =>
        vpn.ValueKind == JsonValueKind.Object && vpn.TryGetProperty("client", out var client) ? client : default;

    private async Task<JsonElement[]> ServerSessionsAsync(Node node)
    {
        var vpn = await VpnStatusAsync(node);
        return vpn.ValueKind == JsonValueKind.Object && vpn.TryGetProperty("server", out var server) && server.ValueKind == JsonValueKind.Object
            ? [.. server.GetProperty("sessions").EnumerateArray()]
            : [];
    }

    private static string? Text(JsonElement element, string field) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(field, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    /// <summary>`skymesh path list --json` of <paramref name="node"/>.</summary>
    private async Task<JsonElement[]> PathsAsync(Node node)
    {
        var (code, output) = await CliAsync(node, "path", "list", "--json");
        var paths = code == 0 ? Parse(output) : default;
        return paths.ValueKind == JsonValueKind.Array ? [.. paths.EnumerateArray()] : [];
    }

    /// <summary>The path <paramref name="id"/> of <paramref name="node"/>; fails when it has none such.</summary>
    private async Task<JsonElement> PathAsync(Node node, int id)
    {
        var paths = await PathsAsync(node);
        var path = paths.FirstOrDefault(p => p.GetProperty("id").GetInt32() == id);
        Assert.True(path.ValueKind == JsonValueKind.Object, $"{node.Name} has no path {id}: {string.Join('\n', paths.Select(p => p.GetRawText()))}");
        return path;
    }

    private static string[] Nodes(JsonElement path) =>
        path.ValueKind == JsonValueKind.Object && path.TryGetProperty("state", out var state) && state.GetString() == "up"
        && path.TryGetProperty("hops", out var hops) && hops.ValueKind == JsonValueKind.Array
            ? [.. hops.EnumerateArray().Select(h => h.GetProperty("node").GetString()!)]
            : [];

    /// <summary>The nodes of the path the VPN client of <paramref name="node"/> uses, source first; empty while it has none up.</summary>
    private async Task<string[]> VpnPathHopsAsync(Node node)
    {
        var client = Client(await VpnStatusAsync(node));
        if (client.ValueKind != JsonValueKind.Object || client.GetProperty("path").ValueKind != JsonValueKind.Number)
            return [];
        var id = client.GetProperty("path").GetInt32();
        return Nodes((await PathsAsync(node)).FirstOrDefault(p => p.GetProperty("id").GetInt32() == id));
    }

    /// <summary>The nodes of the path <paramref name="from"/> has up to <paramref name="to"/>, source first; empty while it has none.</summary>
    private async Task<string[]> PathHopsToAsync(Node from, Node to) =>
        (await PathsAsync(from)).Select(Nodes).FirstOrDefault(h => h.Length > 0 && h[^1] == to.Address) ?? [];

    /// <summary>The namespace's IPv4 and IPv6 routes (main table), sorted.</summary>
    private async Task<(string[] V4, string[] V6)> RoutesAsync(string ns)
    {
        static string[] Lines(string output) => [.. output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Order(StringComparer.Ordinal)];
        return (Lines(await Lab.IpInAsync(ns, Ct, "-4", "route", "show")), Lines(await Lab.IpInAsync(ns, Ct, "-6", "route", "show")));
    }

    /// <summary>The icmp_seq of every answer in ping's output.</summary>
    private static List<int> Replies(string output) =>
        [.. output.Split('\n').Where(l => l.Contains(" bytes from ", StringComparison.Ordinal)).Select(SequenceOf).OfType<int>()];

    /// <summary>The icmp_seq of every line in ping's output, answered or not (-O reports those still without an answer).</summary>
    private static IEnumerable<int> Sequences(string output) => output.Split('\n').Select(SequenceOf).OfType<int>();

    private static int? SequenceOf(string line) =>
        SequencePattern().Match(line) is { Success: true } m ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : null;

    /// <summary>min/avg/max from ping's summary.</summary>
    private static string Rtt(string output) =>
        RttPattern().Match(output) is { Success: true } m ? $"{m.Groups[1].Value}/{m.Groups[2].Value}/{m.Groups[3].Value}" : "?";

    private static string Name(string? address, params Node[] nodes) => nodes.FirstOrDefault(n => n.Address == address)?.Name ?? address ?? "nobody";

    private Task<string> ConnectAsync(string ns, string address, int port) => LabPolling.ConnectAsync(Lab, ns, address, port, Ct);

    private static JsonElement Parse(string json) => LabPolling.Parse(json);

    private static string? Control(JsonElement status) => LabPolling.Control(status);

    private static string? Bus(JsonElement status, string field) => LabPolling.Bus(status, field);

    private static int? Hops(JsonElement status) => LabPolling.Hops(status);

    private async Task<JsonElement> UntilStatusAsync(Node node, Func<JsonElement, bool> condition, string what)
    {
        JsonElement status = default;
        await UntilAsync(what, async () =>
        {
            var (code, output) = await CliAsync(node, "status", "--json");
            return condition(status = code == 0 ? Parse(output) : default);
        });
        return status;
    }

    /// <summary>Polls <paramref name="condition"/> until it holds; fails after <see cref="Bound"/> with what the nodes last said and every process's last lines.</summary>
    private Task UntilAsync(string what, Func<Task<bool>> condition, Func<string>? detail = null) =>
        LabPolling.UntilAsync(what, condition, Bound, Report, detail, Ct);

    private string Report()
    {
        var report = new StringBuilder("last answers:\n");
        lock (_last)
        {
            foreach (var (name, answer) in _last.OrderBy(s => s.Key, StringComparer.Ordinal))
                report.Append("  ").Append(name).Append(": ").Append(answer).Append('\n');
        }
        return report.Append(Lab.Tails(40)).ToString();
    }

    [GeneratedRegex("sha256:[0-9a-f]{64}")]
    private static partial Regex FingerprintPattern();

    [GeneratedRegex(@"icmp_seq=(\d+)")]
    private static partial Regex SequencePattern();

    [GeneratedRegex(@"= ([0-9.]+)/([0-9.]+)/([0-9.]+)/")]
    private static partial Regex RttPattern();
}
