using System.Globalization;
using System.Net;
using System.Text.Json;
using Skymesh.Control.Bus;
using Skymesh.Control.Bus.Nats;
using Skymesh.Control.Bus.Ssmp;
using Skymesh.Control.Setup;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Node;
using Skymesh.Node.Control;
using Skymesh.Node.Hosting;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Bench;

/// <summary>What <c>skymesh bench control</c> runs.</summary>
public sealed record ControlBenchOptions
{
    public int MaxHops { get; init; } = 10;

    /// <summary>Paths set up (and closed) per hop count.</summary>
    public int Setups { get; init; } = 200;

    /// <summary>Nodes of the idle mesh whose control traffic is measured (0 skips it).</summary>
    public int IdleNodes { get; init; } = 10;

    public TimeSpan IdleTime { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Neighbours each settled with at one receipt per second, each way.</summary>
    public int ReceiptNeighbours { get; init; } = 1000;

    /// <summary>The buses path setup is measured over: <c>ssmp</c> (the embedded broker), <c>nats</c> (a three-server cluster), or both in one run.</summary>
    public IReadOnlyList<string> Buses { get; init; } = ["ssmp"];

    public void Validate()
    {
        if (MaxHops is < 1 or > SetupRequest.MaxHops)
            throw new BenchException($"--max-hops must be 1 to {SetupRequest.MaxHops}.");
        if (Setups < 10)
            throw new BenchException("--setups must be at least 10 (percentiles of fewer mean little).");
        if (IdleNodes is < 0 or > 100 || (IdleNodes is > 0 and < 2))
            throw new BenchException("--idle-nodes must be 0 (skip) or 2 to 100.");
        if (IdleTime < TimeSpan.FromSeconds(1))
            throw new BenchException("--idle-seconds must be at least 1.");
    }
}

/// <summary>
/// The control plane's speed: path setup latency for 1..N hops over a real broker with key logins (one signed
/// request, two parallel rounds), and the SSMP bytes an idle node's control agent costs.
/// </summary>
public static class ControlBench
{
    public static async Task<int> RunAsync(ControlBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        options.Validate();
        var c = CultureInfo.InvariantCulture;
        output.WriteLine(string.Format(c, "skymesh bench control: {0} CPUs ({1}), .NET {2}; broker, agents and tables in this process", Environment.ProcessorCount, ProcessProbe.CpuModel(), Environment.Version));
        var results = new Dictionary<string, List<(int Hops, double P50, double P99)>>();
        foreach (var bus in options.Buses)
            results[bus] = await SetupLatencyAsync(options, bus, output, cancellationToken);
        if (results.Count > 1 && results.TryGetValue("ssmp", out var ssmp) && results.TryGetValue("nats", out var nats))
        {
            output.WriteLine("path setup, NATS cluster / embedded SSMP broker, same run (p50, p99):");
            foreach (var (a, b) in ssmp.Zip(nats))
                output.WriteLine(string.Format(c, "  {0,2} hops: {1:0.00} / {2:0.00} ms = {3:0.00}x, {4:0.00} / {5:0.00} ms = {6:0.00}x", a.Hops, b.P50, a.P50, b.P50 / a.P50, b.P99, a.P99, b.P99 / a.P99));
        }
        Receipts(options, output);
        if (options.IdleNodes > 0)
            await IdleTrafficAsync(options, output, cancellationToken);
        return 0;
    }

    private static SsmpBroker StartBroker()
    {
        var brokerOptions = new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) };
        brokerOptions.Authenticators.Add(new KeyAuthenticator());
        var broker = new SsmpBroker(brokerOptions);
        broker.Start();
        return broker;
    }

    private static async Task<List<(int Hops, double P50, double P99)>> SetupLatencyAsync(ControlBenchOptions options, string bus, TextWriter output, CancellationToken cancellationToken)
    {
        var measured = new List<(int, double, double)>();
        await using var broker = bus == "ssmp" ? StartBroker() : null;
        await using var cluster = bus == "nats" ? await BenchTarget.StartNatsClusterAsync(3, output, cancellationToken) : null;
        var count = options.MaxHops + 1;
        var keys = Enumerable.Range(0, count).Select(_ => NodeKey.Generate()).ToArray();
        var peers = new List<IControlBus>();
        try
        {
            var sources = new PathSetupSource[count];
            for (var i = 0; i < count; i++)
            {
                var links = new Dictionary<NodeAddress, int>();
                if (i + 1 < count)
                    links[keys[i + 1].Address] = 1;
                if (i > 0)
                    links[keys[i - 1].Address] = 2;
                var table = new ChainTable(links);
                // On NATS, consecutive hops sit on different servers of the cluster, so each request crosses a route.
                IControlBus peer = cluster is not null
                    ? await NatsControlBus.ConnectAsync([cluster.Urls[i % cluster.Urls.Count]], keys[i], cancellationToken: cancellationToken)
                    : await SsmpControlBus.ConnectAsync("127.0.0.1", broker!.LocalEndPoint.Port, keys[i], cancellationToken: cancellationToken);
                peers.Add(peer);
                SetupService.Register(peer, new PathSetupHop(keys[i].Address, table) { MaxPathsPerSource = int.MaxValue });
                sources[i] = new PathSetupSource(keys[i], table, new BusControlCaller(peer));
            }
            var nodes = keys.Select(k => k.Address).ToList();
            // Warm up over the whole chain (on NATS this also waits until every server knows every node's subjects).
            for (var i = 0; i < 20; i++)
                await WarmUpAsync(sources[0], nodes, cancellationToken);
            output.WriteLine(bus == "nats"
                ? $"setup over a 3-server NATS cluster (hop i on server i mod 3; signed envelopes): {options.Setups} paths per hop count, set up then closed one at a time, source at one end of a chain of {count} agents"
                : $"setup over the embedded SSMP broker (key logins): {options.Setups} paths per hop count, set up then closed one at a time, source at one end of a chain of {count} agents");
            for (var hops = 1; hops <= options.MaxHops; hops++)
            {
                var times = new double[options.Setups];
                for (var i = 0; i < options.Setups; i++)
                {
                    var path = await sources[0].SetupAsync(nodes[..(hops + 1)], 0, cancellationToken);
                    times[i] = path.SetupTime.TotalMilliseconds;
                    await sources[0].CloseAsync(path, cancellationToken);
                }
                Array.Sort(times);
                measured.Add((hops, Percentile(times, 0.50), Percentile(times, 0.99)));
                var line = new Dictionary<string, object>
                {
                    ["bench"] = "control",
                    ["bus"] = bus,
                    ["hops"] = hops,
                    ["setup_p50_ms"] = Math.Round(Percentile(times, 0.50), 3),
                    ["setup_p99_ms"] = Math.Round(Percentile(times, 0.99), 3),
                    ["setups"] = options.Setups,
                };
                output.WriteLine(JsonSerializer.Serialize(line));
            }
        }
        finally
        {
            foreach (var peer in peers)
                await peer.DisposeAsync();
            foreach (var key in keys)
                key.Dispose();
        }
        return measured;
    }

    private static async Task WarmUpAsync(PathSetupSource source, List<NodeAddress> nodes, CancellationToken cancellationToken)
    {
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                await source.CloseAsync(await source.SetupAsync(nodes, 0, cancellationToken), cancellationToken);
                return;
            }
            catch (PathSetupException) when (attempt < 50)
            {
                await Task.Delay(100, cancellationToken);
            }
        }
    }

    private static async Task IdleTrafficAsync(ControlBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        await using var broker = StartBroker();
        var root = Directory.CreateTempSubdirectory("skymesh-bench-control-").FullName;
        var mesh = new List<NodeHost>();
        try
        {
            for (var i = 0; i < options.IdleNodes; i++)
            {
                var host = await new NodeHostBuilder(NodeOptions.Parse($$"""
                    { "dataDir": "n{{i}}", "broker": "{{broker.LocalEndPoint}}", "interfaces": [ { "type": "udp", "listen": "127.0.0.1:0" } ] }
                    """, root)).WithoutApi().StartAsync(cancellationToken);
                mesh.Add(host);
                await host.WaitForControlAsync(cancellationToken);
            }
            for (var i = 0; i + 1 < mesh.Count; i++)
                await mesh[i].Node.ConnectAsync(mesh[i].Node.Interfaces.Keys.First(), mesh[i + 1].Node.Interfaces.Values.First().LocalEndPoint, mesh[i + 1].Node.Address, cancellationToken);
            // Let the start-up announcements settle, then count what flows while nothing changes.
            await Task.Delay(TimeSpan.FromSeconds(3), cancellationToken);
            var before = broker.Snapshot();
            output.WriteLine($"idle: {options.IdleNodes} nodes in a chain with control agents (announcement refresh {mesh[0].Node.Options.AnnounceInterval.TotalSeconds:0} s, SSMP keepalive 30 s), measured for {options.IdleTime.TotalSeconds:0} s");
            await Task.Delay(options.IdleTime, cancellationToken);
            var after = broker.Snapshot();
            var bytes = (after.BytesReceived - before.BytesReceived) + (after.BytesSent - before.BytesSent);
            var perNode = bytes / options.IdleTime.TotalSeconds / options.IdleNodes;
            output.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["bench"] = "control",
                ["idle_control_bytes_per_sec"] = Math.Round(perNode, 1),
                ["idle_nodes"] = options.IdleNodes,
                ["idle_seconds"] = options.IdleTime.TotalSeconds,
            }));
        }
        finally
        {
            foreach (var host in mesh)
                await host.DisposeAsync();
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>
    /// Settlement at 1,000 neighbours: one second's work — sign one cumulative receipt to each neighbour and check one
    /// from each — timed in this thread's CPU; repeated, the best round reported.
    /// </summary>
    private static void Receipts(ControlBenchOptions options, TextWriter output)
    {
        var neighbours = options.ReceiptNeighbours;
        using var self = NodeKey.Generate();
        var keys = Enumerable.Range(0, neighbours).Select(_ => NodeKey.Generate()).ToArray();
        try
        {
            var book = new Skymesh.Control.Settlement.ReceiptBook(self.Address, options: new Skymesh.Control.Settlement.ReceiptBookOptions { MinInterval = TimeSpan.Zero });
            var signer = new Skymesh.Control.Settlement.ReceiptSigner(self, options: new Skymesh.Control.Settlement.ReceiptSignerOptions { MinInterval = TimeSpan.Zero });
            foreach (var key in keys)
                book.AddNeighbour(key.Address);
            var best = double.MaxValue;
            for (var round = 1; round <= 4; round++)
            {
                // Their receipts to us are made outside the timing: that is their CPU, not ours.
                var incoming = keys.Select(k => Skymesh.Control.Settlement.Receipt.Create(k, self.Address, (ulong)round, round << 20, round * 1000L, DateTimeOffset.UtcNow).Bytes).ToArray();
                var cpu = System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime;
                foreach (var key in keys)
                {
                    signer.Count(key.Address, 1 << 20, 1000);
                    _ = signer.Poll(key.Address) ?? throw new BenchException("A receipt was not due after a MiB.");
                }
                foreach (var receipt in incoming)
                {
                    var result = book.Offer(receipt);
                    if (result != Skymesh.Control.Settlement.ReceiptError.None)
                        throw new BenchException($"A valid receipt was refused: {result}.");
                }
                var used = (System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
                best = Math.Min(best, used);
            }
            output.WriteLine($"receipts: {neighbours:N0} neighbours, one receipt signed to each and one checked from each per round (single thread, process CPU), best of 4 rounds");
            output.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["bench"] = "control",
                ["receipt_neighbours"] = neighbours,
                ["receipts_per_sec"] = Math.Round(2 * neighbours / best),
                ["receipt_cpu_fraction"] = Math.Round(best, 3),
            }));
        }
        finally
        {
            foreach (var key in keys)
                key.Dispose();
        }
    }

    private static double Percentile(double[] sorted, double q) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];

    /// <summary>A relay's forwarder for setup alone: a real label table, links named by neighbour.</summary>
    private sealed class ChainTable(Dictionary<NodeAddress, int> links) : IHopTable
    {
        private readonly LabelTable _labels = new();

        public int? LinkTo(NodeAddress neighbour) => links.TryGetValue(neighbour, out var id) ? id : null;

        public uint Reserve(int link, TimeSpan lifetime) => _labels.Reserve(link, lifetime);

        public void InstallForward(int inLink, uint inLabel, int outLink, uint outLabel, bool billable) => _labels.Install(inLink, inLabel, LabelAction.Forward(outLink, outLabel, billable));

        public void InstallEnd(SetupRequest request, int link, uint inLabel, uint outLabel) => _labels.Install(link, inLabel, LabelAction.Deliver(1));

        public void Remove(int link, uint label) => _labels.Remove(link, label);

        public uint PriceOnto(int outLink) => 0;
    }
}
