using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// Two nodes behind home routers (<see cref="NatTopology"/>), run as `skymesh node` processes: A in hA behind natA, B in
/// hB behind natB, each reaching a broker and two public nodes in <c>pub</c> (P1 on 198.51.100.1, P2 on 198.51.100.2)
/// only through its NAT. The public nodes tell each of them where they see it from, so each knows its reflexive address
/// and its kind of NAT; `skymesh links add NODE-ADDRESS` then punches a direct link through two plain (endpoint-
/// independent) routers; through a symmetric one it finds no way, and a public node both have as neighbour relays the link.
/// </summary>
public sealed partial class HolePunchThroughNatTests : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private const string Api = "127.0.0.1:7300";
    private const int NodePort = 7400;
    private const int BrokerPort = 8787;
    private const int FilePort = 8000;
    private const int ForwardPort = 9000;
    private static readonly string Broker = $"{NatTopology.PublicAddress}:{BrokerPort}";

    private NetnsLab? _lab;
    private NatTopology? _nat;
    private readonly List<Node> _nodes = [];
    private readonly Dictionary<string, Skymesh> _processes = [];
    private readonly Dictionary<string, string> _last = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private NatTopology Nat => _nat ?? throw new InvalidOperationException("no topology yet");

    private NetnsLab Lab => Nat.Lab;

    public async ValueTask DisposeAsync()
    {
        if (_lab is not null)
            await _lab.DisposeAsync();
    }

    /// <summary>A node: its namespace, data directory, address and local API (each namespace has its own loopback).</summary>
    private sealed record Node(string Name, string Ns, string Dir, string Address, string Api);

    /// <summary>The four nodes of a test: the two public ones and the two behind NATs.</summary>
    private sealed record Mesh(Node P1, Node P2, Node A, Node B);

    [Fact]
    public async Task Two_nodes_behind_endpoint_independent_NATs_link_directly_by_hole_punching_and_carry_a_file_over_that_link()
    {
        var mesh = await StartAsync(new NatRouterOptions());
        await CheckedAsync(async () =>
        {
            var (p1, p2, a, b) = mesh;
            var wanA = $"{Nat.A.WanAddress}:{NodePort}";
            var wanB = $"{Nat.B.WanAddress}:{NodePort}";
            foreach (var (node, wan) in new[] { (a, wanA), (b, wanB) })
            {
                await UntilStatusAsync(node, s => Control(s) == "connected" && NatField(s, "type") == "endpoint-independent" && NatField(s, "reflexive") == wan,
                    $"{node.Name} on the bus, seen at {wan} by P1 and P2 (an endpoint-independent NAT)");
            }
            Log("A and B on the bus; each sees an endpoint-independent NAT at its router's WAN address, port kept");

            var punching = Stopwatch.StartNew();
            var dropped = (await Nat.DroppedAsync(Nat.A, Ct), await Nat.DroppedAsync(Nat.B, Ct));
            var asked = DateTimeOffset.UtcNow;
            var (code, output) = await CliAsync(a, "links", "add", b.Address, "--json");
            Assert.True(code == 0, $"links add {b.Address} on A exited with {code}: {output}");
            var added = JsonDocument.Parse(output).RootElement;
            Assert.Equal(b.Address, added.GetProperty("peer").GetString());
            Assert.Equal(wanB, added.GetProperty("remote").GetString());
            Assert.Equal("punched", added.GetProperty("how").GetString());
            Log($"A punched a link to B at {wanB} in {punching.ElapsedMilliseconds} ms ({(string.CompareOrdinal(a.Address, b.Address) < 0 ? "A" : "B")} dialled); "
                + $"the nodes logged it {LoggedAfter(a, "by hole punching", asked)} (A) and {LoggedAfter(b, "by hole punching", asked)} (B) after the command started; "
                + $"meanwhile natA's firewall dropped {await Nat.DroppedAsync(Nat.A, Ct) - dropped.Item1} packets, natB's {await Nat.DroppedAsync(Nat.B, Ct) - dropped.Item2}");

            // Both ends list it as punched, up, at the other's router's WAN address.
            await UntilAsync("A's link to B up and punched, at natB's WAN address", async () => LinkTo(await LinksAsync(a), b) is { } l
                && Field(l, "state") == "up" && Field(l, "remote") == wanB && Field(l, "how") == "punched");
            await UntilAsync("B's link to A up and punched, at natA's WAN address", async () => LinkTo(await LinksAsync(b), a) is { } l
                && Field(l, "state") == "up" && Field(l, "remote") == wanA && Field(l, "how") == "punched");
            Log("the link is up and punched on both ends");

            var file = await FileOverOneHopAsync(a, b, "the punched link");
            Assert.Equal([a.Address, b.Address], await PathHopsAsync(a, b));

            // The bytes went over the punched link, not through a public node.
            var link = LinkTo(await LinksAsync(a), b)!.Value;
            Assert.True(link.GetProperty("bytesReceived").GetInt64() >= file.Length, $"A's link to B carried {link.GetProperty("bytesReceived").GetInt64():N0} bytes in, fewer than the file's {file.Length:N0}: {link}");
            Assert.Equal(0, await NodeMetricAsync(p1, "skymesh_forwarded_messages_total"));
            Assert.Equal(0, await NodeMetricAsync(p2, "skymesh_forwarded_messages_total"));
            // And each router holds the flow between the two hosts, mapped to the host's own port both ways.
            foreach (var (site, other) in new[] { (Nat.A, Nat.B), (Nat.B, Nat.A) })
                Assert.Equal(NodePort, await MappedPortAsync(site, other.WanAddress));
        });
    }

    [Fact]
    public async Task Behind_a_symmetric_NAT_hole_punching_finds_no_way_through_and_the_link_goes_through_a_public_node_as_relay()
    {
        // B dials (the lower address): A, which asked, probes, and its request waits for the link B has relayed.
        var mesh = await StartAsync(new NatRouterOptions(Symmetric: true), aDials: false);
        await CheckedAsync(async () =>
        {
            var (p1, p2, a, b) = mesh;
            var wanB = $"{Nat.B.WanAddress}:{NodePort}";
            var statusA = await UntilStatusAsync(a, s => Control(s) == "connected" && NatField(s, "type") == "symmetric" && Observers(s) >= 2,
                "A on the bus, seen from two ports by P1 and P2 (a symmetric NAT)");
            Assert.StartsWith(Nat.A.WanAddress + ":", NatField(statusA, "reflexive"), StringComparison.Ordinal);
            // As natA's conntrack table has it: hA's flows to P1 and P2 leave from two external ports, one of them the
            // reflexive address A reports. (Both drawn alike by chance: about 1 in 64,000.)
            var (toP1, toP2) = (await MappedPortAsync(Nat.A, NatTopology.PublicAddress), await MappedPortAsync(Nat.A, NatTopology.PublicAddress2));
            Assert.NotEqual(toP1, toP2);
            Assert.Contains(NatField(statusA, "reflexive"), new[] { $"{Nat.A.WanAddress}:{toP1}", $"{Nat.A.WanAddress}:{toP2}" });
            await UntilStatusAsync(b, s => Control(s) == "connected" && NatField(s, "type") == "endpoint-independent" && NatField(s, "reflexive") == wanB,
                $"B on the bus, seen at {wanB} by P1 and P2 (an endpoint-independent NAT)");
            Log($"A on the bus behind a symmetric NAT (seen at {NatField(statusA, "reflexive")} and another port); B behind an endpoint-independent one");

            // The punch finds no way through natA; a public node both have as a neighbour relays the link instead.
            var punching = Stopwatch.StartNew();
            var (code, output) = await CliAsync(a, "links", "add", b.Address, "--json");
            Assert.True(code == 0, $"links add {b.Address} on A exited with {code}: {output}");
            var added = JsonDocument.Parse(output).RootElement;
            Assert.Equal(b.Address, added.GetProperty("peer").GetString());
            Assert.Equal("relayed", added.GetProperty("how").GetString());
            var via = added.GetProperty("via").GetString();
            Assert.Contains(via, new[] { p1.Address, p2.Address });
            var relay = via == p1.Address ? p1 : p2;
            var relayAddress = relay == p1 ? NatTopology.PublicAddress : NatTopology.PublicAddress2;
            // The link's far end is a port of the relay's, not its mesh port and not B's router.
            var remote = added.GetProperty("remote").GetString()!;
            Assert.StartsWith(relayAddress + ":", remote, StringComparison.Ordinal);
            Assert.NotEqual($"{relayAddress}:{NodePort}", remote);
            Log($"links add: no punch through natA, so a link through {relay.Name} at {remote}, in {punching.ElapsedMilliseconds} ms "
                + $"({(string.CompareOrdinal(a.Address, b.Address) < 0 ? "A" : "B")} dialled); the punch failure logged on A: {LoggedAfter(a, "found no way through", DateTimeOffset.UtcNow - punching.Elapsed)}");
            await UntilAsync("B's link to A up and relayed by the same node", async () => LinkTo(await LinksAsync(b), a) is { } l
                && Field(l, "state") == "up" && Field(l, "how") == "relayed" && Field(l, "via") == relay.Address);
            var (shown, table) = await CliAsync(a, "links");
            Assert.True(shown == 0 && table.Contains($"relayed via {relay.Address[..8]}", StringComparison.Ordinal), $"skymesh links on A does not say the link is relayed: {table}");

            // Through the relay's port, not a path through the relay.
            var file = await FileOverOneHopAsync(a, b, $"the link {relay.Name} relays");
            Assert.True(await NodeMetricAsync(relay, "skymesh_link_relay_bytes_total") >= file.Length, $"{relay.Name} relayed fewer bytes than the file's {file.Length:N0}");
            Assert.Equal(1, await NodeMetricAsync(relay, "skymesh_link_relay_open"));
            Assert.Equal(0, await NodeMetricAsync(p1, "skymesh_forwarded_messages_total"));
            Assert.Equal(0, await NodeMetricAsync(p2, "skymesh_forwarded_messages_total"));
            // A's NAT is still known for what it is: what B sees of A through the relay is the relay's port, not A's.
            Assert.Equal("symmetric", NatField(await StatusAsync(a), "type"));
        });
    }

    /// <summary>
    /// A path of one hop from <paramref name="a"/> to <paramref name="b"/> (the route finder needs both ends'
    /// announcements of the link first), a port forward on it (the forward takes the path that is there), and a file
    /// fetched over it byte-identical; the file.
    /// </summary>
    private async Task<byte[]> FileOverOneHopAsync(Node a, Node b, string over)
    {
        await UntilAsync($"a path A -> B of one hop, over {over}", async () =>
        {
            var (opened, text) = await CliAsync(a, "path", "open", b.Address, "--max-hops", "1", "--json");
            Remember("A path open", opened, text);
            return opened == 0;
        });
        Assert.Equal([a.Address, b.Address], await PathHopsAsync(a, b));
        var file = await StartFileServerAsync(b);
        var forward = await StartForwardAsync(a, b);
        Assert.DoesNotContain("opened path", forward.Output, StringComparison.Ordinal);
        var fetching = Stopwatch.StartNew();
        await FetchAsync(a, file);
        Log($"{file.Length:N0} bytes fetched A -> B over {over} in {fetching.ElapsedMilliseconds} ms, byte-identical");
        return file;
    }

    /// <summary>
    /// The topology (natB plain, natA as given, both with a firewall), a broker and P1 and P2 in pub, A in hA and B in
    /// hB, each listing P1 and P2 as peers; all started.
    /// </summary>
    /// <param name="aDials">Given, A's key is drawn until A has the lower address (it dials) or the higher (B dials).</param>
    private async Task<Mesh> StartAsync(NatRouterOptions natA, bool? aDials = null)
    {
        if (!NatTopology.Available)
            Assert.Skip("needs root, iproute2 and iptables (Debian's iptables package)");
        if (!File.Exists("/usr/bin/curl") || !HasPython())
            Assert.Skip("needs curl and python3 (test.sh installs them)");
        _lab = await NetnsLab.CreateAsync([], Ct);
        _nat = await NatTopology.CreateAsync(_lab, natA, new NatRouterOptions(), Ct);
        Log($"topology up (natA {natA})");

        Node Make(string name, string ns, string api, Func<string, bool>? accept = null)
        {
            var dir = Path.Combine(Lab.Directory, name);
            Directory.CreateDirectory(dir);
            var file = Path.Combine(dir, "node.key");
            while (true)
            {
                using var key = Identity.NodeKeyFile.LoadOrCreate(file);
                if (accept is null || accept(key.Address.ToString()))
                {
                    var node = new Node(name, ns, dir, key.Address.ToString(), api);
                    _nodes.Add(node);
                    return node;
                }
                File.Delete(file);
            }
        }
        var p1 = Make("P1", NatTopology.Public, "127.0.0.1:7300");
        var p2 = Make("P2", NatTopology.Public, "127.0.0.1:7301");
        var b = Make("B", Nat.B.Host, Api);
        var a = Make("A", Nat.A.Host, Api, aDials is { } dials ? address => string.CompareOrdinal(address, b.Address) < 0 == dials : null);
        var mesh = new Mesh(p1, p2, a, b);

        var broker = Lab.StartSkymesh("broker", NatTopology.Public, "broker", "--listen", Broker);
        await WriteConfigAsync(mesh.P1, $"{NatTopology.PublicAddress}:{NodePort}", []);
        await WriteConfigAsync(mesh.P2, $"{NatTopology.PublicAddress2}:{NodePort}", []);
        await WriteConfigAsync(mesh.A, $"0.0.0.0:{NodePort}", [mesh.P1, mesh.P2]);
        await WriteConfigAsync(mesh.B, $"0.0.0.0:{NodePort}", [mesh.P1, mesh.P2], "\"127.0.0.1:*\"");
        await broker.WaitForLineAsync("listening on", Bound);
        foreach (var node in _nodes)
            _processes[node.Name] = Lab.StartSkymesh(node.Name, node.Ns, "node", "--config", Path.Combine(node.Dir, "node.json"));
        foreach (var process in _processes.Values)
            await process.WaitForTextAsync("local API:", Bound);
        Log("broker, P1, P2, A and B started");
        return mesh;
    }

    private async Task WriteConfigAsync(Node node, string listen, Node[] peers, string exits = "")
    {
        var list = string.Join(", ", peers.Select(p => $$"""{ "address": "{{p.Address}}", "endpoint": "{{(p.Name == "P1" ? NatTopology.PublicAddress : NatTopology.PublicAddress2)}}:{{NodePort}}" }"""));
        await File.WriteAllTextAsync(Path.Combine(node.Dir, "node.json"), $$"""
            {
              "broker": "{{Broker}}",
              "api": "{{node.Api}}",
              "keepaliveSeconds": 0.5,
              "deadAfterSeconds": 3,
              "announceSeconds": 2,
              "interfaces": [ { "type": "udp", "listen": "{{listen}}" } ],
              "peers": [ {{list}} ],
              "exits": [ {{exits}} ]
            }
            """, Ct);
    }

    /// <summary>Runs the test's body; a failure comes with every node's status and links, every process's last lines, and both routers' tables and conntrack.</summary>
    private async Task CheckedAsync(Func<Task> body)
    {
        try
        {
            await body();
            Log("done");
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"{e.Message}\n{await ReportAsync()}", e);
        }
    }

    private async Task<string> ReportAsync()
    {
        var report = new StringBuilder();
        foreach (var node in _nodes)
        {
            foreach (var what in new[] { "status", "links" })
            {
                try
                {
                    var (code, output) = await CliAsync(node, what, "--json");
                    report.Append("---- ").Append(node.Name).Append(' ').Append(what).Append(" (exit ").Append(code).Append(") ----\n").Append(output.Trim()).Append('\n');
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    report.Append("---- ").Append(node.Name).Append(' ').Append(what).Append(": ").Append(e.Message).Append('\n');
                }
            }
        }
        lock (_last)
        {
            foreach (var (name, text) in _last.OrderBy(l => l.Key, StringComparer.Ordinal))
                report.Append("---- last ").Append(name).Append(" ----\n").Append(text).Append('\n');
        }
        foreach (var site in Nat.Sites)
            report.Append("---- ").Append(site.Router).Append(" firewall drops: ").Append(await Nat.DroppedAsync(site, CancellationToken.None)).Append(" ----\n");
        return report.Append(await Nat.DiagnosticsAsync(CancellationToken.None)).Append(Lab.Tails(60)).ToString();
    }

    /// <summary>A skymesh command against a node's API, run inside its namespace.</summary>
    private Task<(int Code, string Output)> CliAsync(Node node, params string[] arguments) =>
        Lab.SkymeshAsync(node.Ns, [.. arguments, "--api", node.Api, "--data-dir", node.Dir]);

    private void Remember(string what, int code, string output)
    {
        lock (_last)
            _last[what] = $"(exit {code}) {output.Trim()}";
    }

    private async Task<JsonElement> StatusAsync(Node node)
    {
        var (code, output) = await CliAsync(node, "status", "--json");
        Remember($"{node.Name} status", code, output);
        return code == 0 ? Parse(output) : default;
    }

    private async Task<JsonElement> LinksAsync(Node node)
    {
        var (code, output) = await CliAsync(node, "links", "--json");
        Remember($"{node.Name} links", code, output);
        return code == 0 ? Parse(output) : default;
    }

    private static JsonElement Parse(string json) => LabPolling.Parse(json);

    /// <summary>The link to <paramref name="peer"/> in a `links --json` answer; null when there is none.</summary>
    private static JsonElement? LinkTo(JsonElement links, Node peer) =>
        links.ValueKind == JsonValueKind.Array ? links.EnumerateArray().Where(l => Field(l, "peer") == peer.Address).Cast<JsonElement?>().FirstOrDefault() : null;

    private static string? Field(JsonElement element, string name) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static string? Control(JsonElement status) => Field(status, "control");

    private static string? NatField(JsonElement status, string name) =>
        status.ValueKind == JsonValueKind.Object && status.TryGetProperty("nat", out var nat) ? Field(nat, name) : null;

    private static int Observers(JsonElement status) =>
        status.ValueKind == JsonValueKind.Object && status.TryGetProperty("nat", out var nat) && nat.ValueKind == JsonValueKind.Object
        && nat.TryGetProperty("observers", out var observers) && observers.ValueKind == JsonValueKind.Number ? observers.GetInt32() : 0;

    private async Task<JsonElement> UntilStatusAsync(Node node, Func<JsonElement, bool> condition, string what)
    {
        JsonElement status = default;
        await UntilAsync(what, async () => condition(status = await StatusAsync(node)));
        return status;
    }

    /// <summary>Polls <paramref name="condition"/> until it holds; fails after <see cref="Bound"/>.</summary>
    private static async Task UntilAsync(string what, Func<Task<bool>> condition)
    {
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(200));
        var waited = Stopwatch.StartNew();
        while (!await condition())
        {
            if (waited.Elapsed > Bound)
                throw new Xunit.Sdk.XunitException($"{what}: not within {Bound.TotalSeconds} s");
            await poll.WaitForNextTickAsync(Ct);
        }
    }

    /// <summary>A random file of 1 to 2 MiB served by python3 on <paramref name="node"/>'s loopback; its bytes.</summary>
    private async Task<byte[]> StartFileServerAsync(Node node)
    {
        var www = Path.Combine(Lab.Directory, "www");
        Directory.CreateDirectory(www);
        var file = RandomNumberGenerator.GetBytes(RandomNumberGenerator.GetInt32(1 << 20, (2 << 20) + 1));
        await File.WriteAllBytesAsync(Path.Combine(www, "blob.bin"), file, Ct);
        var server = Lab.Start($"file server on {node.Name}", node.Ns, "python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", www, FilePort.ToString(CultureInfo.InvariantCulture));
        await server.WaitForTextAsync("Serving HTTP", Bound, Ct);
        return file;
    }

    /// <summary>`skymesh forward` on <paramref name="from"/> to the file server on <paramref name="to"/>'s loopback: tried until it forwards.</summary>
    private async Task<Skymesh> StartForwardAsync(Node from, Node to)
    {
        Skymesh? forward = null;
        var attempt = 0;
        await UntilAsync($"a port forward from {from.Name} to {to.Name}", async () =>
        {
            forward = Lab.StartSkymesh($"forward {from.Name} -> {to.Name} ({++attempt})", from.Ns, "forward", "--listen", $"127.0.0.1:{ForwardPort}", "--to", to.Address,
                "--target", $"127.0.0.1:{FilePort}", "--api", from.Api, "--data-dir", from.Dir);
            using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
            var waited = Stopwatch.StartNew();
            while (!forward.Output.Contains("forwarding ", StringComparison.Ordinal))
            {
                if (forward.HasExited)
                    return false; // No path could be opened yet: ask again.
                if (waited.Elapsed > Bound)
                    throw new Xunit.Sdk.XunitException($"skymesh forward neither forwarded nor ended within {Bound.TotalSeconds} s: {forward.Output}");
                await poll.WaitForNextTickAsync(Ct);
            }
            return true;
        });
        return forward!;
    }

    /// <summary>The nodes of the path <paramref name="from"/> set up to <paramref name="to"/>, source first; empty while it has none up.</summary>
    private async Task<string[]> PathHopsAsync(Node from, Node to)
    {
        var (code, output) = await CliAsync(from, "path", "list", "--json");
        Remember($"{from.Name} paths", code, output);
        Assert.True(code == 0, $"path list on {from.Name} exited with {code}: {output}");
        foreach (var path in JsonDocument.Parse(output).RootElement.EnumerateArray())
        {
            if (Field(path, "peer") == to.Address && Field(path, "state") == "up" && path.TryGetProperty("hops", out var hops) && hops.ValueKind == JsonValueKind.Array)
                return [.. hops.EnumerateArray().Select(h => h.GetProperty("node").GetString()!)];
        }
        return [];
    }

    /// <summary>Fetches the file with curl inside <paramref name="node"/>'s namespace through the forward and checks it byte for byte (SHA-256).</summary>
    private async Task FetchAsync(Node node, byte[] expected)
    {
        var target = Path.Combine(Lab.Directory, "fetched.bin");
        File.Delete(target);
        var (code, output) = await Lab.RunAsync(node.Ns, Bound, Ct, "curl", "-sS", "--max-time", "30", "-o", target, $"http://127.0.0.1:{ForwardPort}/blob.bin");
        Assert.True(code == 0, $"curl through the forward exited with {code}: {output}");
        var got = await File.ReadAllBytesAsync(target, Ct);
        Assert.True(SHA256.HashData(got).AsSpan().SequenceEqual(SHA256.HashData(expected)), $"{got.Length:N0} bytes arrived for {expected.Length:N0}, and they differ");
    }

    /// <summary>A counter of a node's /metrics, read with curl inside its namespace.</summary>
    private async Task<long> NodeMetricAsync(Node node, string metric)
    {
        var (code, output) = await Lab.RunAsync(node.Ns, TimeSpan.FromSeconds(20), Ct, "curl", "-sS", "--max-time", "5", $"http://{node.Api}/metrics");
        Assert.True(code == 0, $"curl {node.Name}'s /metrics exited with {code}: {output}");
        var line = output.Split('\n').FirstOrDefault(l => l.StartsWith(metric + " ", StringComparison.Ordinal));
        Assert.True(line is not null, $"no {metric} in {node.Name}'s /metrics");
        return (long)double.Parse(line[(metric.Length + 1)..], CultureInfo.InvariantCulture);
    }

    /// <summary>How long after <paramref name="since"/> the node logged its first line containing <paramref name="text"/> (each line starts with its UTC time).</summary>
    private string LoggedAfter(Node node, string text, DateTimeOffset since)
    {
        var line = _processes[node.Name].Output.Split('\n').FirstOrDefault(l => l.Contains(text, StringComparison.Ordinal));
        return line is not null && line.Split(' ')[0] is var stamp && DateTimeOffset.TryParse(stamp, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var at)
            ? $"{(at - since).TotalMilliseconds:0} ms"
            : "(not yet)";
    }

    /// <summary>
    /// The external port <paramref name="site"/>'s router maps its host's UDP flow from port 7400 to
    /// <paramref name="destination"/>:7400 to (the destination port of the entry's reply direction).
    /// </summary>
    private async Task<int> MappedPortAsync(NatSite site, string destination)
    {
        var table = await Nat.ConntrackAsync(site, Ct);
        var entry = table.Split('\n').FirstOrDefault(l => l.Contains(" udp ", StringComparison.Ordinal)
            && l.Contains($"src={site.HostAddress} dst={destination} sport={NodePort} dport={NodePort} ", StringComparison.Ordinal)) ?? "";
        var mapped = MappedPort().Match(entry);
        Assert.True(mapped.Success, $"no entry for {site.Host}:{NodePort} -> {destination}:{NodePort} in {site.Router}'s conntrack table:\n{table}");
        return int.Parse(mapped.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    /// <summary>In a conntrack entry of a masqueraded flow, the external port: the destination port of its reply direction.</summary>
    [GeneratedRegex(@"src=\S+ dst=\S+ sport=\d+ dport=\d+ .*src=\S+ dst=\S+ sport=\d+ dport=(\d+)")]
    private static partial Regex MappedPort();

    private static bool HasPython() => LabPolling.HasPython();

    private void Log(string message) =>
        TestContext.Current.TestOutputHelper?.WriteLine($"{_clock.Elapsed.TotalSeconds,6:0.0} s  {message}");
}
