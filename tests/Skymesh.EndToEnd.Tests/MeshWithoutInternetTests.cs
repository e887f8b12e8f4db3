using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// Nodes that have no IP route to the broker — each in a network namespace of its own, joined to its neighbours by
/// veth pairs only, with no forwarding — reach the control bus through their neighbours (<c>"broker":
/// "via-neighbours"</c>), run as `skymesh node` processes.
/// </summary>
public sealed partial class MeshWithoutInternetTests : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private const string Api = "127.0.0.1:7300";
    private const int BrokerPort = 8787;
    private const int FilePort = 8000;
    private const int ForwardPort = 9000;

    private NetnsLab? _lab;
    private readonly Dictionary<string, string> _lastStatus = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private NetnsLab Lab => _lab ?? throw new InvalidOperationException("no lab yet");

    public async ValueTask DisposeAsync()
    {
        if (_lab is not null)
            await _lab.DisposeAsync();
    }

    /// <summary>A node: its namespace (one per node), data directory, address and process.</summary>
    private sealed record Node(string Name, string Ns, string Dir, string Address)
    {
        public Skymesh? Process { get; set; }
    }

    [Fact]
    public async Task A_line_of_five_whose_last_node_joins_the_bus_through_the_relays_and_fails_over_to_a_bypass()
    {
        if (!NetnsLab.Available)
            Assert.Skip("needs root and iproute2 (network namespaces)");
        if (!File.Exists("/usr/bin/curl") || !HasPython())
            Assert.Skip("needs curl and python3 (test.sh installs them)");

        // The lab: ns1 - ns2 - ns3 - ns4 - ns5, and a bypass ns2 - ns4 that no node links over until step (c).
        _lab = await NetnsLab.CreateAsync(["1", "2", "3", "4", "5"], Ct);
        var l12 = await Lab.LinkAsync("1", "2", Ct);
        var l23 = await Lab.LinkAsync("2", "3", Ct);
        var l34 = await Lab.LinkAsync("3", "4", Ct);
        var l45 = await Lab.LinkAsync("4", "5", Ct);
        var l24 = await Lab.LinkAsync("2", "4", Ct);

        // Isolation: no namespace forwards, and ns5 has no route to ns1, where ns2 (its neighbour) gets an answer.
        foreach (var ns in new[] { "1", "2", "3", "4", "5" })
            Assert.Equal("0", await Lab.ForwardingAsync(ns, Ct));
        Assert.Equal("ECONNREFUSED", await ConnectAsync("2", l12.A, 7400));
        Assert.Equal("ENETUNREACH", await ConnectAsync("5", l12.A, 7400));
        Assert.Equal("ENETUNREACH", await ConnectAsync("5", l23.A, 7400));

        // Keys first: every node's address is known before any node starts, for its neighbours' "peers".
        var nodes = Enumerable.Range(1, 5).Select(i =>
        {
            var dir = Path.Combine(Lab.Directory, $"node{i}");
            Directory.CreateDirectory(dir);
            using var key = Identity.NodeKeyFile.LoadOrCreate(Path.Combine(dir, "node.key"));
            return new Node($"node{i}", i.ToString(CultureInfo.InvariantCulture), dir, key.Address.ToString());
        }).ToArray();
        var (n1, n2, n3, n4, n5) = (nodes[0], nodes[1], nodes[2], nodes[3], nodes[4]);

        // The broker, in ns1 on its loopback: TLS (self-signed) and plaintext on one port.
        var broker = Lab.StartSkymesh("broker", "1", "broker", "--listen", $"127.0.0.1:{BrokerPort}", "--tls-self-signed", Path.Combine(Lab.Directory, "broker.pem"));
        var fingerprint = FingerprintPattern().Match(await broker.WaitForLineAsync("tls fingerprint", Bound)).Value;
        Assert.StartsWith("sha256:", fingerprint, StringComparison.Ordinal);
        // ns5's own 127.0.0.1 has no broker: node 5 can reach it only through the mesh.
        Assert.Equal("ECONNREFUSED", await ConnectAsync("5", "127.0.0.1", BrokerPort));

        // Each node lists the neighbour on the broker's side as its static peer (one side dials; the other accepts).
        await WriteConfigAsync(n1, $"127.0.0.1:{BrokerPort}", null, null);
        await WriteConfigAsync(n2, "via-neighbours", n1, l12.A);
        await WriteConfigAsync(n3, "via-neighbours", n2, l23.A);
        await WriteConfigAsync(n4, "via-neighbours", n3, l34.A);
        await WriteConfigAsync(n5, "via-neighbours", n4, l45.A, "\"127.0.0.1:*\"");
        foreach (var node in nodes)
            node.Process = Lab.StartSkymesh(node.Name, node.Ns, "node", "--config", Path.Combine(node.Dir, "node.json"));
        foreach (var node in nodes)
            await node.Process!.WaitForLineAsync("local API:", Bound);
        Log("broker and five nodes started in five namespaces");

        // (a) Node 5 is on the bus through node 4, four relays from the broker (4, 3, 2, and 1, which splices to it).
        var status5 = await UntilStatusAsync(n5, s => Control(s) == "connected" && Bus(s, "mode") == "via-neighbours" && Hops(s) == 4 && Bus(s, "via") == n4.Address,
            "node 5 on the control bus through node 4, 4 relays from the broker");
        Log("node 5 on the control bus through 4 relays");
        Assert.Equal(fingerprint, Bus(status5, "brokerPin"));
        Assert.Equal(fingerprint, (await File.ReadAllTextAsync(Path.Combine(n5.Dir, "broker.pin"), Ct)).Trim());
        for (var i = 1; i < 4; i++)
        {
            var (node, upstream, hops) = (nodes[i], nodes[i - 1], i);
            var status = await UntilStatusAsync(node, s => Control(s) == "connected" && Bus(s, "via") == upstream.Address && Hops(s) == hops, $"{node.Name} on the bus through {upstream.Name}");
            Assert.Equal("via-neighbours", Bus(status, "mode"));
            Assert.Equal(fingerprint, Bus(status, "brokerPin"));
        }
        var status1 = await UntilStatusAsync(n1, s => Control(s) == "connected", "node 1 on the bus");
        Assert.Equal("direct", Bus(status1, "mode"));
        // Node 1 relays the tunnels of nodes 2, 3, 4 and 5; node 4 only node 5's.
        await UntilMetricAsync(n1, "skymesh_bus_relay_tunnels", 4);
        await UntilMetricAsync(n4, "skymesh_bus_relay_tunnels", 1);

        // (b) A port forward from node 1 to a file server on node 5's loopback, on a path the control plane opens.
        var www = Path.Combine(Lab.Directory, "www");
        Directory.CreateDirectory(www);
        var file = RandomNumberGenerator.GetBytes(RandomNumberGenerator.GetInt32(1 << 20, (4 << 20) + 1));
        await File.WriteAllBytesAsync(Path.Combine(www, "blob.bin"), file, Ct);
        var server = Lab.Start("file server", "5", "python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", www, FilePort.ToString(CultureInfo.InvariantCulture));
        await server.WaitForTextAsync("Serving HTTP", Bound, Ct);
        var forward = await StartForwardAsync(n1, n5);
        Assert.Equal([n1.Address, n2.Address, n3.Address, n4.Address, n5.Address], await PathHopsAsync(n1, n5));
        var fetched = Stopwatch.StartNew();
        await FetchAsync(file, "the first fetch, through 2, 3 and 4", retries: false);
        Log($"{file.Length:N0} bytes fetched 1 -> 5 in {fetched.ElapsedMilliseconds} ms, byte-identical");

        // (c) The bypass 2 - 4 comes up, then node 3 dies without a word: node 4 rejoins through node 2, node 5
        // through node 4 again, and the path from 1 to 5 moves onto 2 - 4. (The link is made only now: up from the
        // start, it would have been node 4's way in from the start, one relay fewer than through node 3.)
        var (code, added) = await Lab.SkymeshAsync(n4.Ns, "links", "add", $"{l24.A}:7400", "--peer", n2.Address, "--api", Api, "--data-dir", n4.Dir);
        Assert.True(code == 0, $"links add on node 4 exited with {code}: {added}");
        await n3.Process!.CrashAsync(Bound);
        var failover = Stopwatch.StartNew();
        await UntilStatusAsync(n4, s => Control(s) == "connected" && Bus(s, "via") == n2.Address && Hops(s) == 2, "node 4 back on the bus through node 2 (the bypass)");
        await UntilStatusAsync(n5, s => Control(s) == "connected" && Bus(s, "via") == n4.Address && Hops(s) == 3, "node 5 back on the bus through node 4, 3 relays from the broker");
        Log($"node 3 killed; nodes 4 and 5 back on the bus through the bypass after {failover.ElapsedMilliseconds} ms");
        await UntilAsync("node 1's path to node 5 moved onto the bypass", async () =>
            (await PathHopsAsync(n1, n5)).SequenceEqual([n1.Address, n2.Address, n4.Address, n5.Address]));
        Log($"path 1 -> 5 repaired onto 1 - 2 - 4 - 5 after {failover.ElapsedMilliseconds} ms");
        if (forward.HasExited)
            forward = await StartForwardAsync(n1, n5);
        await FetchAsync(file, "the fetch after node 3 died, through 2 and 4", retries: true);
        Log($"fetched again, byte-identical, {failover.ElapsedMilliseconds} ms after the kill");
        // The dead relay's tunnels are gone: node 1 relays those of 2, 4 and 5, node 2 those of 4 and 5.
        await UntilMetricAsync(n1, "skymesh_bus_relay_tunnels", 3);
        await UntilMetricAsync(n2, "skymesh_bus_relay_tunnels", 2);
        Log("done");
    }

    private static bool HasPython() => LabPolling.HasPython();

    private void Log(string message) =>
        TestContext.Current.TestOutputHelper?.WriteLine($"{_clock.Elapsed.TotalSeconds,6:0.0} s  {message}");

    private async Task WriteConfigAsync(Node node, string broker, Node? peer, string? peerAddress, string exits = "")
    {
        var peers = peer is null ? "" : $$"""{ "address": "{{peer.Address}}", "endpoint": "{{peerAddress}}:7400" }""";
        await File.WriteAllTextAsync(Path.Combine(node.Dir, "node.json"), $$"""
            {
              "broker": "{{broker}}",
              "api": "{{Api}}",
              "keepaliveSeconds": 0.25,
              "deadAfterSeconds": 2,
              "interfaces": [ { "type": "udp", "listen": "0.0.0.0:7400" } ],
              "peers": [ {{peers}} ],
              "exits": [ {{exits}} ]
            }
            """, Ct);
    }

    /// <summary>A TCP connect from inside namespace <paramref name="ns"/>: "OK" or the errno's name.</summary>
    private Task<string> ConnectAsync(string ns, string address, int port) => LabPolling.ConnectAsync(Lab, ns, address, port, Ct);

    /// <summary>`skymesh status --json` of a node, run inside its namespace; default when it did not answer.</summary>
    private async Task<JsonElement> StatusAsync(Node node)
    {
        var (code, output) = await Lab.SkymeshAsync(node.Ns, "status", "--json", "--api", Api, "--data-dir", node.Dir);
        lock (_lastStatus)
            _lastStatus[node.Name] = $"(exit {code}) {output.Trim()}";
        if (code != 0)
            return default;
        try
        {
            return JsonDocument.Parse(output).RootElement.Clone();
        }
        catch (JsonException)
        {
            return default;
        }
    }

    private static string? Control(JsonElement status) => LabPolling.Control(status);

    private static string? Bus(JsonElement status, string field) => LabPolling.Bus(status, field);

    private static int? Hops(JsonElement status) => LabPolling.Hops(status);

    private async Task<JsonElement> UntilStatusAsync(Node node, Func<JsonElement, bool> condition, string what)
    {
        JsonElement status = default;
        await UntilAsync(what, async () => condition(status = await StatusAsync(node)));
        return status;
    }

    private async Task UntilMetricAsync(Node node, string metric, long expected)
    {
        var last = "";
        await UntilAsync($"{node.Name}'s {metric} at {expected}", async () =>
        {
            last = await LabPolling.MetricLineAsync(Lab, node.Ns, Api, metric, Ct);
            return last == $"{metric} {expected}";
        }, () => $"last seen: {last}");
    }

    /// <summary>Polls <paramref name="condition"/> until it holds; fails after <see cref="Bound"/> with every node's last status and every process's last lines.</summary>
    private Task UntilAsync(string what, Func<Task<bool>> condition, Func<string>? detail = null) =>
        LabPolling.UntilAsync(what, condition, Bound, Report, detail, Ct);

    private string Report()
    {
        var report = new StringBuilder("last statuses:\n");
        lock (_lastStatus)
        {
            foreach (var (name, status) in _lastStatus.OrderBy(s => s.Key, StringComparer.Ordinal))
                report.Append("  ").Append(name).Append(": ").Append(status).Append('\n');
        }
        return report.Append(Lab.Tails()).ToString();
    }

    /// <summary>`skymesh forward` on <paramref name="from"/> to the file server next to <paramref name="to"/>: tried until the control plane knows a path.</summary>
    private async Task<Skymesh> StartForwardAsync(Node from, Node to)
    {
        Skymesh? forward = null;
        await UntilAsync($"a port forward from {from.Name} to {to.Name}", async () =>
        {
            forward = Lab.StartSkymesh($"forward {from.Name} -> {to.Name}", from.Ns, "forward", "--listen", $"127.0.0.1:{ForwardPort}", "--to", to.Address,
                "--target", $"127.0.0.1:{FilePort}", "--api", Api, "--data-dir", from.Dir);
            using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
            while (!forward.Output.Contains("forwarding ", StringComparison.Ordinal))
            {
                if (forward.HasExited)
                    return false; // The route finder does not know the way yet: ask again.
                await poll.WaitForNextTickAsync(Ct);
            }
            return true;
        });
        return forward!;
    }

    /// <summary>The nodes of the path <paramref name="from"/> has to <paramref name="to"/>, source first; empty while it has none up.</summary>
    private async Task<string[]> PathHopsAsync(Node from, Node to)
    {
        var (code, output) = await Lab.SkymeshAsync(from.Ns, "path", "list", "--json", "--api", Api, "--data-dir", from.Dir);
        lock (_lastStatus)
            _lastStatus[$"{from.Name} paths"] = $"(exit {code}) {output.Trim()}";
        if (code != 0)
            return [];
        foreach (var path in JsonDocument.Parse(output).RootElement.EnumerateArray())
        {
            if (path.GetProperty("peer").GetString() == to.Address && path.GetProperty("state").GetString() == "up" && path.TryGetProperty("hops", out var hops) && hops.ValueKind == JsonValueKind.Array)
                return [.. hops.EnumerateArray().Select(h => h.GetProperty("node").GetString()!)];
        }
        return [];
    }

    /// <summary>Fetches the file with curl inside ns1 through the forward and checks it byte for byte (SHA-256).</summary>
    private async Task FetchAsync(byte[] expected, string what, bool retries)
    {
        var target = Path.Combine(Lab.Directory, "fetched.bin");
        var attempts = new StringBuilder();
        await UntilAsync(what, async () =>
        {
            File.Delete(target);
            var (code, output) = await Lab.RunAsync("1", Bound, Ct, "curl", "-sS", "--max-time", "30", "-o", target, $"http://127.0.0.1:{ForwardPort}/blob.bin");
            if (code != 0)
            {
                attempts.Append("curl exited with ").Append(code).Append(": ").Append(output.Trim()).Append('\n');
                if (!retries)
                    throw new Xunit.Sdk.XunitException($"{what}: curl exited with {code}: {output}\n{Report()}");
                return false;
            }
            // A whole answer that differs is never retried: that would be the mesh corrupting data.
            var got = await File.ReadAllBytesAsync(target, Ct);
            Assert.True(SHA256.HashData(got).AsSpan().SequenceEqual(SHA256.HashData(expected)), $"{what}: {got.Length:N0} bytes arrived for {expected.Length:N0}, and they differ");
            return true;
        }, () => attempts.ToString());
    }

    [GeneratedRegex("sha256:[0-9a-f]{64}")]
    private static partial Regex FingerprintPattern();
}
