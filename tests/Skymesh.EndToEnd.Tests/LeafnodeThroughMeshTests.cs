using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// Two neighbourhoods, each with a NATS server of its own and no IP route to the other — a line of network namespaces
/// ns1 - ns2 - ns3 - ns4 joined by veth pairs only, with no forwarding — are one control bus through the mesh, run as
/// real <c>nats-server</c> and `skymesh node` processes: the hub server in ns1 with node 1 on it directly, node 2 a plain
/// relay (<c>"broker": "via-neighbours"</c>), node 3 on the bus through nodes 2 and 1 and carrying the leaf connection of
/// the neighbourhood's server beside it (<c>"leafnodeListen"</c>) to the hub's leafnode port, where node 1 splices it
/// (<c>busRelay.leafnodes</c>), and node 4 on the neighbourhood's server only (docs/control-plane.md, "Several brokers").
/// </summary>
public sealed class LeafnodeThroughMeshTests : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private const string Api = "127.0.0.1:7300";
    private const int MeshPort = 7400;
    private const int ClientPort = 4222;
    private const int LeafnodePort = 7422;

    private static readonly string? NatsServer = new[] { "/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server" }.FirstOrDefault(File.Exists);

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
    private sealed record Node(string Name, string Ns, string Dir, string Address);

    [Fact]
    public async Task Two_neighbourhoods_with_their_own_NATS_servers_and_no_IP_between_them_are_one_bus_through_the_mesh()
    {
        if (!NetnsLab.Available)
            Assert.Skip("needs root and iproute2 (network namespaces)");
        if (NatsServer is null || !File.Exists("/usr/bin/curl") || !HasPython())
            Assert.Skip("needs nats-server, curl and python3 (test.sh installs them)");

        // The lab: ns1 - ns2 - ns3 - ns4, nothing else.
        _lab = await NetnsLab.CreateAsync(["1", "2", "3", "4"], Ct);
        var l12 = await Lab.LinkAsync("1", "2", Ct);
        var l23 = await Lab.LinkAsync("2", "3", Ct);
        var l34 = await Lab.LinkAsync("3", "4", Ct);

        // The hub server in ns1, on its address towards ns2; the neighbourhood's server in ns3, on its address towards
        // ns4, its only leafnode remote the port node 3 will listen on in ns3.
        var hubConfig = Path.Combine(Lab.Directory, "hub.conf");
        await File.WriteAllTextAsync(hubConfig, $$"""
            server_name: hub
            listen: "{{l12.A}}:{{ClientPort}}"
            leafnodes { listen: "{{l12.A}}:{{LeafnodePort}}" }
            """, Ct);
        var neighbourhoodConfig = Path.Combine(Lab.Directory, "neighbourhood.conf");
        await File.WriteAllTextAsync(neighbourhoodConfig, $$"""
            server_name: neighbourhood
            listen: "{{l34.A}}:{{ClientPort}}"
            leafnodes { remotes: [ { url: "nats-leaf://127.0.0.1:{{LeafnodePort}}" } ] }
            """, Ct);
        var hub = Lab.Start("hub nats-server", "1", NatsServer, "-c", hubConfig);
        var neighbourhood = Lab.Start("neighbourhood nats-server", "3", NatsServer, "-c", neighbourhoodConfig);
        await hub.WaitForTextAsync("Server is ready", Bound, Ct);
        await neighbourhood.WaitForTextAsync("Server is ready", Bound, Ct);

        // Isolation: no namespace forwards; ns2 reaches the hub's ports, ns3 (the neighbourhood's server) and ns4 do not;
        // ns4 reaches the neighbourhood's server.
        foreach (var ns in new[] { "1", "2", "3", "4" })
            Assert.Equal("0", await Lab.ForwardingAsync(ns, Ct));
        foreach (var port in new[] { ClientPort, LeafnodePort })
        {
            Assert.Equal("OK", await ConnectAsync("2", l12.A, port));
            Assert.Equal("ENETUNREACH", await ConnectAsync("3", l12.A, port));
            Assert.Equal("ENETUNREACH", await ConnectAsync("4", l12.A, port));
        }
        Assert.Equal("OK", await ConnectAsync("4", l34.A, ClientPort));
        Log("hub server in ns1 and the neighbourhood's server in ns3 up, with no IP route between them");

        // Keys first: every node's address is known before any node starts, for its neighbours' "peers".
        var nodes = Enumerable.Range(1, 4).Select(i =>
        {
            var dir = Path.Combine(Lab.Directory, $"node{i}");
            Directory.CreateDirectory(dir);
            using var key = Identity.NodeKeyFile.LoadOrCreate(Path.Combine(dir, "node.key"));
            return new Node($"node{i}", i.ToString(CultureInfo.InvariantCulture), dir, key.Address.ToString());
        }).ToArray();
        var (n1, n2, n3, n4) = (nodes[0], nodes[1], nodes[2], nodes[3]);

        // Each node lists its neighbour on the hub's side as its static peer (one side dials; the other accepts).
        await WriteConfigAsync(n1, $"nats://{l12.A}:{ClientPort}", null, null, $$""", "busRelay": { "leafnodes": "{{l12.A}}:{{LeafnodePort}}" }""");
        await WriteConfigAsync(n2, "via-neighbours", n1, l12.A);
        await WriteConfigAsync(n3, "via-neighbours", n2, l23.A, $$""", "leafnodeListen": "127.0.0.1:{{LeafnodePort}}" """);
        await WriteConfigAsync(n4, $"nats://{l34.A}:{ClientPort}", n3, l34.A);
        // Nodes 1 to 3 first. (Node 4, on the neighbourhood's server directly, would be the nearest way in for node 3,
        // one relay from a server rather than two: started later, it joins a neighbourhood already on the hub.)
        foreach (var process in new[] { n1, n2, n3 }.Select(Start).ToArray())
            await process.WaitForLineAsync("local API:", Bound);
        Log("nodes 1, 2 and 3 started in their namespaces");

        // (1) Nodes 2 and 3 are on the NATS bus through their neighbours, node 3 two relays from the hub.
        await UntilStatusAsync(n1, s => Control(s) == "connected" && Bus(s, "mode") == "direct" && Bus(s, "kind") == "nats", "node 1 on the hub directly");
        await UntilStatusAsync(n2, s => Control(s) == "connected" && Bus(s, "mode") == "via-neighbours" && Bus(s, "kind") == "nats" && Bus(s, "via") == n1.Address && Hops(s) == 1,
            "node 2 on the NATS bus through node 1");
        await UntilStatusAsync(n3, s => Control(s) == "connected" && Bus(s, "mode") == "via-neighbours" && Bus(s, "kind") == "nats" && Bus(s, "via") == n2.Address && Hops(s) == 2,
            "node 3 on the NATS bus through node 2, 2 relays from the hub");
        Log("nodes 2 and 3 on the NATS bus through their neighbours");

        // (2) Node 3 carries its server's leaf connection, and the hub has it from node 1's address (node 1 splices it):
        // node 1 relays node 2's session, node 3's and the leaf connection, node 2 the last two.
        await UntilMetricAsync(n3, "skymesh_leafnode_connections", 1);
        await UntilAsync("the hub's leaf connection, from node 1's address", () => Task.FromResult(hub.Output.Split('\n')
            .Any(l => l.Contains($"] {l12.A}:", StringComparison.Ordinal) && l.Contains("Leafnode connection created", StringComparison.Ordinal))));
        await UntilMetricAsync(n1, "skymesh_bus_relay_tunnels", 3);
        await UntilMetricAsync(n2, "skymesh_bus_relay_tunnels", 2);
        Log("the neighbourhood's server is a leaf node of the hub, its connection carried by nodes 3, 2 and 1");

        // Node 4 joins the neighbourhood's server, the only one it can reach.
        await Start(n4).WaitForLineAsync("local API:", Bound);
        await UntilStatusAsync(n4, s => Control(s) == "connected" && Bus(s, "mode") == "direct" && Bus(s, "kind") == "nats", "node 4 on the neighbourhood's server directly");
        Log("node 4 on the neighbourhood's server");

        // (3) One bus: node 1, on the hub, knows node 4's link to node 3, which node 4 announced on the neighbourhood's
        // server only; node 4 knows node 1's link to node 2, announced on the hub only. Each knows the whole line.
        await UntilAsync("node 1 (on the hub) knowing the whole line, node 4's link too", () => KnowsLineAsync(n1, nodes));
        await UntilAsync("node 4 (on the neighbourhood's server) knowing the whole line, node 1's link too", () => KnowsLineAsync(n4, nodes));
        Log("nodes 1 and 4 each know every link of the line");

        // (4) A path from node 1 to node 4 (its setup crosses the leaf connection) carries pings; so does one node 4
        // opens the other way.
        Assert.Equal([n1.Address, n2.Address, n3.Address, n4.Address], await OpenPathAsync(n1, n4));
        Assert.Equal([n1.Address, n2.Address, n3.Address, n4.Address], await PathHopsAsync(n1, n4));
        var ping = await PingAsync(n1, n4);
        Assert.True(ping.Contains("3 sent, 3 answered, 0% lost", StringComparison.Ordinal), $"ping from node 1 to node 4:\n{ping}\n{Report()}");
        Log("path 1 -> 4 open through 2 and 3; 3 pings answered");
        Assert.Equal([n4.Address, n3.Address, n2.Address, n1.Address], await OpenPathAsync(n4, n1));
        ping = await PingAsync(n4, n1);
        Assert.True(ping.Contains("3 sent, 3 answered, 0% lost", StringComparison.Ordinal), $"ping from node 4 to node 1:\n{ping}\n{Report()}");
        Log("path 4 -> 1 open through 3 and 2; 3 pings answered");
    }

    private Skymesh Start(Node node) => Lab.StartSkymesh(node.Name, node.Ns, "node", "--config", Path.Combine(node.Dir, "node.json"));

    private static bool HasPython() => LabPolling.HasPython();

    private void Log(string message) =>
        TestContext.Current.TestOutputHelper?.WriteLine($"{_clock.Elapsed.TotalSeconds,6:0.0} s  {message}");

    private void Remember(string what, int code, string output)
    {
        lock (_last)
            _last[what] = $"(exit {code}) {output.Trim()}";
    }

    private async Task WriteConfigAsync(Node node, string broker, Node? peer, string? peerAddress, string extra = "")
    {
        var peers = peer is null ? "" : $$"""{ "address": "{{peer.Address}}", "endpoint": "{{peerAddress}}:{{MeshPort}}" }""";
        await File.WriteAllTextAsync(Path.Combine(node.Dir, "node.json"), $$"""
            {
              "broker": "{{broker}}",
              "api": "{{Api}}",
              "keepaliveSeconds": 0.25,
              "deadAfterSeconds": 2,
              "interfaces": [ { "type": "udp", "listen": "0.0.0.0:{{MeshPort}}" } ],
              "peers": [ {{peers}} ]{{extra}}
            }
            """, Ct);
    }

    /// <summary>A TCP connect from inside namespace <paramref name="ns"/>: "OK" or the errno's name.</summary>
    private Task<string> ConnectAsync(string ns, string address, int port) => LabPolling.ConnectAsync(Lab, ns, address, port, Ct);

    /// <summary>`skymesh status --json` of a node, run inside its namespace; default when it did not answer.</summary>
    private async Task<JsonElement> StatusAsync(Node node)
    {
        var (code, output) = await Lab.SkymeshAsync(node.Ns, "status", "--json", "--api", Api, "--data-dir", node.Dir);
        Remember(node.Name, code, output);
        return code == 0 ? Parse(output) : default;
    }

    private static JsonElement Parse(string json) => LabPolling.Parse(json);

    private static string? Control(JsonElement status) => LabPolling.Control(status);

    private static string? Bus(JsonElement status, string field) => LabPolling.Bus(status, field);

    private static int? Hops(JsonElement status) => LabPolling.Hops(status);

    private async Task UntilStatusAsync(Node node, Func<JsonElement, bool> condition, string what) =>
        await UntilAsync(what, async () => condition(await StatusAsync(node)));

    private async Task UntilMetricAsync(Node node, string metric, long expected)
    {
        var last = "";
        await UntilAsync($"{node.Name}'s {metric} at {expected}", async () =>
        {
            last = await LabPolling.MetricLineAsync(Lab, node.Ns, Api, metric, Ct);
            return last == $"{metric} {expected}";
        }, () => $"last seen: {last}");
    }

    /// <summary>
    /// Whether <paramref name="viewer"/>'s control plane (`skymesh nodes --json`) knows every link of the line
    /// <paramref name="line"/> up, from both its ends' announcements.
    /// </summary>
    private async Task<bool> KnowsLineAsync(Node viewer, IReadOnlyList<Node> line)
    {
        var (code, output) = await Lab.SkymeshAsync(viewer.Ns, "nodes", "--json", "--api", Api, "--data-dir", viewer.Dir);
        Remember($"{viewer.Name} nodes", code, output);
        var known = code == 0 ? Parse(output) : default;
        if (known.ValueKind != JsonValueKind.Array)
            return false;
        var links = new HashSet<(string, string)>();
        foreach (var node in known.EnumerateArray())
        {
            foreach (var link in node.GetProperty("links").EnumerateArray())
            {
                if (link.GetProperty("state").GetString() == "up")
                    links.Add((node.GetProperty("address").GetString()!, link.GetProperty("peer").GetString()!));
            }
        }
        return line.Zip(line.Skip(1)).All(p => links.Contains((p.First.Address, p.Second.Address)) && links.Contains((p.Second.Address, p.First.Address)));
    }

    /// <summary>The nodes of the path <paramref name="from"/> has to <paramref name="to"/>, source first; empty while it has none up.</summary>
    private async Task<string[]> PathHopsAsync(Node from, Node to)
    {
        var (code, output) = await Lab.SkymeshAsync(from.Ns, "path", "list", "--json", "--api", Api, "--data-dir", from.Dir);
        Remember($"{from.Name} paths", code, output);
        if (code != 0)
            return [];
        foreach (var path in JsonDocument.Parse(output).RootElement.EnumerateArray())
        {
            if (path.GetProperty("peer").GetString() == to.Address && path.GetProperty("state").GetString() == "up" && path.TryGetProperty("hops", out var hops) && hops.ValueKind == JsonValueKind.Array)
                return [.. hops.EnumerateArray().Select(h => h.GetProperty("node").GetString()!)];
        }
        return [];
    }

    /// <summary>
    /// `skymesh path open` on <paramref name="from"/> to <paramref name="to"/>, tried until the route finder knows a way
    /// (it needs both ends' announcements of every link); the path's nodes, source first.
    /// </summary>
    private async Task<string[]> OpenPathAsync(Node from, Node to)
    {
        var path = default(JsonElement);
        await UntilAsync($"a path from {from.Name} to {to.Name}", async () =>
        {
            var (code, output) = await Lab.SkymeshAsync(from.Ns, "path", "open", to.Address, "--json", "--api", Api, "--data-dir", from.Dir);
            Remember($"{from.Name} path open", code, output);
            path = code == 0 ? Parse(output) : default;
            return path.ValueKind == JsonValueKind.Object;
        });
        Assert.Equal("up", path.GetProperty("state").GetString());
        return [.. path.GetProperty("hops").EnumerateArray().Select(h => h.GetProperty("node").GetString()!)];
    }

    /// <summary>Three pings from <paramref name="from"/> to <paramref name="to"/> (`skymesh ping`): everything it printed.</summary>
    private async Task<string> PingAsync(Node from, Node to)
    {
        var (code, output) = await Lab.SkymeshAsync(from.Ns, "ping", to.Address, "-c", "3", "-i", "0.05", "--api", Api, "--data-dir", from.Dir);
        Remember($"{from.Name} ping", code, output);
        return $"(exit {code}) {output}";
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
        return report.Append(Lab.Tails()).ToString();
    }
}
