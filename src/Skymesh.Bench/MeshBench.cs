using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Skymesh.Node;

namespace Skymesh.Bench;

/// <summary>
/// <c>skymesh bench mesh</c>: the data plane measured beside its anchors in the same run. (a) messages per
/// second a relay node (a <c>skymesh node</c> child process) forwards between a sender and a receiver in this
/// process, beside the rate plain .NET sockets move single datagrams; (c) what one relay hop adds to one-way
/// latency at half that load; (b) iperf3 through <c>skymesh forward</c> over a chain of four node processes,
/// beside iperf3 on plain loopback. Prints lines as it goes and ends with one JSON line.
/// </summary>
public static class MeshBench
{
    public const double RelayTarget = 1_000_000;
    public const double ThreeHopTarget = 1e9;
    public const double HopP99TargetUs = 200;

    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    /// <summary>Runs the benchmark; 0 when every part ran (targets met or not), 1 when a part could not be measured.</summary>
    public static async Task<int> RunAsync(MeshBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        options.Validate();
        var result = new JsonLine();
        var date = DateTimeOffset.UtcNow;
        result.Add("bench", "mesh");
        result.Add("date", date.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", C));
        result.Add("cpus", Environment.ProcessorCount);
        result.Add("cpu_model", ProcessProbe.CpuModel());
        result.Add("dotnet", Environment.Version.ToString());
        result.Add("payload_size", options.PayloadSize);
        result.Add("duration_s", options.Duration.TotalSeconds);
        Say(output, string.Format(C, "skymesh bench mesh: {0} CPUs ({1}), .NET {2}, {3:u}; {4}-byte messages, {5:0.#} s measured after {6:0.#} s warm-up",
            Environment.ProcessorCount, ProcessProbe.CpuModel(), Environment.Version, date, options.PayloadSize, options.Duration.TotalSeconds, options.Warmup.TotalSeconds));

        var complete = true;
        // (a) anchors first, while no node runs.
        Say(output, "raw .NET UDP on loopback (anchor): one datagram per message, a sender thread and a receiver thread");
        var (raw, rawCpu) = await RawUdpAnchor.RunAsync(options.PayloadSize, relay: false, options.Warmup, options.Duration, cancellationToken);
        Say(output, string.Format(C, "  direct:           {0,12:N0} datagrams/s received  ({1})", raw, rawCpu.Describe()));
        var (rawRelay, rawRelayCpu) = await RawUdpAnchor.RunAsync(options.PayloadSize, relay: true, options.Warmup, options.Duration, cancellationToken);
        Say(output, string.Format(C, "  through a relay:  {0,12:N0} datagrams/s received  (a thread receiving and re-sending each one; {1})", rawRelay, rawRelayCpu.Describe()));
        result.Add("raw_udp_datagrams_per_sec", Math.Round(raw));
        result.Add("raw_udp_relay_datagrams_per_sec", Math.Round(rawRelay));
        result.Add("raw_udp_other_cpu_s", rawCpu.Others, 2);

        double relayRate;
        await using (var relay = await NodeProcess.StartAsync(options.Launch!, "relay", encrypt: true, [], output, options.Timeout, cancellationToken))
        {
            Say(output, string.Format(C, "relay: `skymesh node` pid {0}, udp {1}; sender and receiver switches in this process, linked to it", relay.ProcessId, relay.Udp));
            double encryptedRate;
            await using (var route = await WithTimeout(RelayRoute.ThroughAsync(relay, encrypt: true, cancellationToken), options.Timeout, "linking to the relay"))
            {
                encryptedRate = await MeasureRelayAsync(route, relay, options, output, result, "relay", cancellationToken);
                relayRate = encryptedRate;
                if (!options.SkipLatency)
                    await MeasureLatencyAsync(route, relay, relayRate, options, output, result, cancellationToken);
            }
            await using (var plain = await WithTimeout(RelayRoute.ThroughAsync(relay, encrypt: false, cancellationToken), options.Timeout, "linking to the relay"))
            {
                var plainRate = await MeasureRelayAsync(plain, relay, options, output, result, "relay_plain", cancellationToken);
                result.Add("relay_plain_vs_raw_udp", plainRate / raw, 2);
            }
            result.Add("relay_vs_raw_udp", encryptedRate / raw, 2);
            result.Add("relay_vs_raw_udp_relay", encryptedRate / rawRelay, 2);
            Say(output, string.Format(C, "  relay / raw UDP datagrams = {0:0.00}x; relay / raw re-sending relay = {1:0.00}x", encryptedRate / raw, encryptedRate / rawRelay));
        }

        if (!options.SkipIperf)
        {
            try
            {
                await MeasureIperfAsync(options, output, result, cancellationToken);
            }
            catch (Exception e) when (e is BenchException or NodeApiException)
            {
                Say(output, $"iperf3: {e.Message}");
                result.Add("iperf3_error", e.Message);
                complete = false;
            }
        }

        Say(output, "targets:");
        var relayMet = relayRate >= RelayTarget;
        Say(output, string.Format(C, "  relay >= 1,000,000 msgs/s: {0:N0} -> {1}", relayRate, relayMet ? "met" : "MISSED"));
        result.Add("target_relay_met", relayMet);
        if (result.Get("iperf3_3hop_bits_per_sec") is double threeHop)
        {
            var met = threeHop >= ThreeHopTarget;
            Say(output, string.Format(C, "  3 hops >= 1 Gbit/s: {0:0.000} Gbit/s -> {1}", threeHop / 1e9, met ? "met" : "MISSED"));
            result.Add("target_3hop_met", met);
        }
        if (result.Get("vpn_3hop_vs_forward") is double vpnRatio)
        {
            var met = vpnRatio >= VpnTarget;
            Say(output, string.Format(C, "  VPN >= 80% of the port forward over 3 hops: {0:0}% -> {1}", vpnRatio * 100, met ? "met" : "MISSED"));
            result.Add("target_vpn_met", met);
        }
        if (result.Get("hop_p99_us") is double hopP99)
        {
            var met = hopP99 <= HopP99TargetUs;
            Say(output, string.Format(C, "  added p99 <= 200 us per hop: {0:0.0} us -> {1}", hopP99, met ? "met" : "MISSED"));
            result.Add("target_hop_p99_met", met);
        }
        result.Add("complete", complete);
        lock (output)
            output.WriteLine(result.ToJson());
        return complete ? 0 : 1;
    }

    /// <summary>(a) S sends as fast as the window allows; messages R counts per second over the measured interval.</summary>
    private static async Task<double> MeasureRelayAsync(
        RelayRoute route, NodeProcess relay, MeshBenchOptions options, TextWriter output, JsonLine result, string key, CancellationToken cancellationToken)
    {
        using var stop = new CancellationTokenSource();
        var sender = MeshSenders.StartSaturating(route, options.PayloadSize, options.Window, stop.Token);
        try
        {
            await Task.Delay(options.Warmup, cancellationToken);
            var forwardedBefore = await relay.MetricAsync("skymesh_forwarded_messages_total", cancellationToken) ?? double.NaN;
            var framesBefore = route.Receiver.Nic.Counters.FramesReceived;
            var before = route.Sink.Count;
            var cpu = CpuWindow.Start([("relay", relay.ProcessId)]);
            var started = Stopwatch.GetTimestamp();
            await Task.Delay(options.Duration, cancellationToken);
            var after = route.Sink.Count;
            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            var spent = cpu.Stop();
            var frames = route.Receiver.Nic.Counters.FramesReceived - framesBefore;
            var forwardedAfter = await relay.MetricAsync("skymesh_forwarded_messages_total", cancellationToken) ?? double.NaN;
            var rate = (after - before) / seconds;
            var forwardedRate = (forwardedAfter - forwardedBefore) / seconds;
            var relayCpu = spent.Children[0].Seconds;
            var perFrame = frames > 0 ? (after - before) / (double)frames : 0;
            Say(output, string.Format(C, "  {0}: {1,12:N0} msgs/s received through the relay ({2}); relay's own counter {3:N0} forwarded/s; {4:0} messages per frame into R; relay CPU {5:0.00} s = {6:0} ns per message",
                route.Encrypted ? "encrypted links" : "plain links    ", rate, route.Encrypted ? "ChaCha20-Poly1305 frames" : "no link encryption",
                forwardedRate, perFrame, relayCpu, relayCpu / Math.Max(1, after - before) * 1e9));
            Say(output, "    " + spent.Describe());
            result.Add($"{key}_msgs_per_sec", Math.Round(rate));
            result.Add($"{key}_forwarded_per_sec", double.IsFinite(forwardedRate) ? Math.Round(forwardedRate) : null);
            result.Add($"{key}_msgs_per_frame", perFrame, 1);
            result.Add($"{key}_cpu_s", relayCpu, 3);
            result.Add($"{key}_bench_cpu_s", spent.Bench, 3);
            result.Add($"{key}_other_cpu_s", spent.Others, 2);
            result.Add($"{key}_encrypted", route.Encrypted);
            return rate;
        }
        finally
        {
            await stop.CancelAsync();
            sender.Join(TimeSpan.FromSeconds(5));
            // Let what is in flight drain, so that the next measurement starts from empty queues.
            await Task.Delay(200, CancellationToken.None);
        }
    }

    /// <summary>
    /// (c) Background traffic at <see cref="MeshBenchOptions.LatencyLoad"/> of the relay rate plus timestamped probes,
    /// through the relay and over a direct link between the same two switches, taking turns every
    /// <see cref="LatencySlice"/> probes; the hop's cost is the difference of the percentiles.
    /// </summary>
    private static async Task MeasureLatencyAsync(RelayRoute route, NodeProcess relay, double relayRate, MeshBenchOptions options, TextWriter output, JsonLine result, CancellationToken cancellationToken)
    {
        var load = relayRate * options.LatencyLoad;
        await using var direct = await WithTimeout(route.DirectAsync(options.Timeout, cancellationToken), options.Timeout, "linking sender and receiver");
        Say(output, string.Format(C, "latency: {0:N0} probes per route, one per {1:0.###} ms, with {2:N0} msgs/s of background ({3:0}% of the relay rate) sent every ~0.1 ms; the route via the relay and a direct link S-R take turns every {4} probes",
            options.Probes, options.ProbeInterval.TotalMilliseconds, load, options.LatencyLoad * 100, LatencySlice));
        route.Sink.ExpectProbes(options.Probes);
        direct.Sink.ExpectProbes(options.Probes);
        var cpu = CpuWindow.Start([("relay", relay.ProcessId)]);
        var sentLoad = await MeshSenders.RunLatencyAsync([route, direct], options.PayloadSize, load, options.Probes, options.ProbeInterval, LatencySlice, options.Warmup, cancellationToken);
        await Task.Delay(200, cancellationToken);
        var spent = cpu.Stop();
        var (viaMicros, viaLost) = route.Sink.ProbeResults();
        var (directMicros, directLost) = direct.Sink.ProbeResults();
        var via = Percentiles.Of(viaMicros, viaLost);
        var straight = Percentiles.Of(directMicros, directLost);
        Say(output, "  via relay: " + via.Describe());
        Say(output, "  direct:    " + straight.Describe());
        Say(output, "    " + spent.Describe() + string.Format(C, "; background sent: {0:N0} msgs/s", sentLoad));
        var p50 = via.P50 - straight.P50;
        var p99 = via.P99 - straight.P99;
        Say(output, string.Format(C, "  added by one relay hop: p50 {0:0.0} us, p99 {1:0.0} us", p50, p99));
        result.Add("hop_p50_us", p50, 1);
        result.Add("hop_p99_us", p99, 1);
        result.Add("latency_background_msgs_per_sec", Math.Round(load));
        result.Add("latency_background_sent_msgs_per_sec", Math.Round(sentLoad));
        result.Add("latency_probes", options.Probes);
        via.Write(result, "relay_path");
        straight.Write(result, "direct_path");
        result.Add("latency_other_cpu_s", spent.Others, 2);
        await Task.Delay(200, CancellationToken.None);
    }

    /// <summary>Length of the uncounted iperf3 run through a fresh chain.</summary>
    private const int WarmupIperfSeconds = 3;

    /// <summary>Probes per turn of each route in the latency run.</summary>
    private const int LatencySlice = 100;

    /// <summary>
    /// (b) iperf3 on plain loopback, then through <c>skymesh forward</c> on node A of a chain A-B-C-D of node
    /// processes (a static path A→D; D connects to the iperf3 server): single stream, several streams, and with
    /// link encryption off.
    /// </summary>
    private static async Task MeasureIperfAsync(MeshBenchOptions options, TextWriter output, JsonLine result, CancellationToken cancellationToken)
    {
        await using var iperf = await Iperf3.StartServerAsync(options.Iperf3Path, output, options.Timeout, cancellationToken);
        var server = new IPEndPoint(IPAddress.Loopback, iperf.Port);
        Say(output, string.Format(C, "iperf3: server on {0} (pid {1}), {2} s per run", server, iperf.ServerProcessId, options.IperfSeconds));
        var direct = await iperf.RunClientAsync(server, options.IperfSeconds, 1, [], options.Timeout, cancellationToken);
        Say(output, string.Format(C, "  direct loopback:          {0,8:0.000} Gbit/s  ({1})", direct.BitsPerSecond / 1e9, direct.Cpu.Describe()));
        result.Add("iperf3_direct_bits_per_sec", Math.Round(direct.BitsPerSecond));

        foreach (var encrypt in new[] { true, false })
        {
            var nodes = new List<NodeProcess>();
            try
            {
                string[] names = ["A", "B", "C", "D"];
                var started = names.Select((name, i) => NodeProcess.StartAsync(options.Launch!, $"node {name}", encrypt,
                    i == names.Length - 1 ? ["127.0.0.1:*"] : [], output, options.Timeout, options.ChainMtu, linkRecovery: true, cancellationToken)).ToList();
                try
                {
                    await Task.WhenAll(started);
                }
                finally
                {
                    // Those that did start are killed below, also when another did not.
                    nodes.AddRange(started.Where(t => t.IsCompletedSuccessfully).Select(t => t.Result));
                }
                for (var i = 0; i + 1 < nodes.Count; i++)
                    await WithTimeout(nodes[i].LinkToAsync(nodes[i + 1], cancellationToken), options.Timeout, $"linking node {names[i]} to {names[i + 1]}");
                await WithTimeout(StaticPath.InstallAsync(nodes.Select(n => n.Api).ToList(), cancellationToken), options.Timeout, "installing the path");
                IPEndPoint? listen = null;
                await foreach (var e in nodes[0].Api.RunAppAsync("forwards", new ForwardRequest("127.0.0.1:0", nodes[^1].Address, server.ToString(), true), cancellationToken))
                {
                    listen = e.Listen is { } l && IPEndPoint.TryParse(l, out var parsed) ? parsed : null;
                    break;
                }
                if (listen is null)
                    throw new BenchException("node A did not say where its forward listens.");
                var watch = nodes.Select((n, i) => ($"node {names[i]}", n.ProcessId)).ToList();
                Say(output, string.Format(C, "  chain A-B-C-D ({0}{5}; pids {1}), forward on A at {2} -> D -> {3}",
                    encrypt ? "encrypted links" : "plain links", string.Join(" ", nodes.Select(n => n.ProcessId)), listen, server, 0,
                    options.ChainMtu is { } chainMtu ? string.Format(C, ", UDP MTU {0}", chainMtu) : ""));
                // Fresh processes run unoptimised code at first (the JIT recompiles hot methods after a few hundred ms,
                // slower on a busy machine): a short run that is not counted, besides iperf3's -O.
                await iperf.RunClientAsync(listen, WarmupIperfSeconds, 1, [], options.Timeout, cancellationToken);
                var linksBefore = await LinkTotals.ReadAsync(nodes[1], cancellationToken);
                var single = await iperf.RunClientAsync(listen, options.IperfSeconds, 1, watch, options.Timeout, cancellationToken);
                var linksAfter = await LinkTotals.ReadAsync(nodes[1], cancellationToken);
                var key = encrypt ? "iperf3_3hop" : "iperf3_3hop_plain";
                Say(output, string.Format(C, "  3 hops{0}, 1 stream:  {1,8:0.000} Gbit/s = {2:0.00}x direct ({3} retransmits; {4})",
                    encrypt ? "" : " plain", single.BitsPerSecond / 1e9, single.BitsPerSecond / direct.BitsPerSecond, single.Retransmits, single.Cpu.Describe()));
                Say(output, "    relay B: " + linksAfter.Minus(linksBefore).Describe());
                result.Add($"{key}_bits_per_sec", Math.Round(single.BitsPerSecond));
                result.Add($"{key}_vs_direct", single.BitsPerSecond / direct.BitsPerSecond, 3);
                result.Add($"{key}_cpu_s", single.Cpu.Children.ToDictionary(c => c.Name.Replace(' ', '_'), c => double.IsFinite(c.Seconds) ? Math.Round(c.Seconds, 2) : (double?)null));
                result.Add($"{key}_other_cpu_s", single.Cpu.Others, 2);
                if (encrypt && !options.SkipVpn)
                    await MeasureVpnAsync(nodes[0], nodes[^1], single.BitsPerSecond, watch, options, output, result, cancellationToken);
                if (encrypt && options.IperfParallel > 1)
                {
                    var parallel = await iperf.RunClientAsync(listen, options.IperfSeconds, options.IperfParallel, watch, options.Timeout, cancellationToken);
                    Say(output, string.Format(C, "  3 hops, {0} streams:      {1,8:0.000} Gbit/s = {2:0.00}x direct ({3})",
                        options.IperfParallel, parallel.BitsPerSecond / 1e9, parallel.BitsPerSecond / direct.BitsPerSecond, parallel.Cpu.Describe()));
                    result.Add($"iperf3_3hop_p{options.IperfParallel}_bits_per_sec", Math.Round(parallel.BitsPerSecond));
                }
            }
            finally
            {
                foreach (var node in nodes)
                    await node.DisposeAsync();
            }
        }
    }

    /// <summary>The VPN's throughput as a share of the port forward's over the same hops.</summary>
    public const double VpnTarget = 0.8;

    /// <summary>
    /// (d) iperf3 through the VPN over the same chain A-B-C-D: D serves the VPN (pool 10.99.0.0/24, no NAT), A connects
    /// to it, and A's TUN device is moved (its descriptor stays A's) into a network namespace of its own, where the
    /// iperf3 client runs against a server on D's tunnel address — so the packets cannot take the host's loopback
    /// shortcut and go through A's device, the path's three hops and D's device. Then ping round trips through it,
    /// beside ping on loopback, for the time each hop adds. Needs root (TUN devices, namespaces).
    /// </summary>
    private static async Task MeasureVpnAsync(NodeProcess first, NodeProcess last, double forwardBits, IReadOnlyList<(string, int)> watch,
        MeshBenchOptions options, TextWriter output, JsonLine result, CancellationToken cancellationToken)
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root" || !File.Exists("/dev/net/tun"))
        {
            Say(output, "  VPN: skipped (needs Linux, root and /dev/net/tun)");
            result.Add("vpn_skipped", "needs Linux, root and /dev/net/tun");
            return;
        }
        var ns = string.Create(C, $"skb-vpn-{Environment.ProcessId}");
        const string ClientDevice = "skb-vc";
        await HostCommandAsync(cancellationToken, "ip", "netns", "add", ns);
        try
        {
            await last.Api.VpnServeAsync(new Node.Vpn.VpnConfig { Device = "skb-vs", Pool = "10.99.0.0/24", Pool6 = "none", Nat = false, Mtu = 65_000 }, cancellationToken);
            var client = (await first.Api.VpnConnectAsync(new VpnConnectRequest(last.Address, ["10.99.1.0/24"], false, false, null, ClientDevice), cancellationToken)).Client;
            await HostCommandAsync(cancellationToken, "ip", "link", "set", ClientDevice, "netns", ns);
            await HostCommandAsync(cancellationToken, "ip", "-n", ns, "link", "set", "lo", "up");
            await HostCommandAsync(cancellationToken, "ip", "-n", ns, "addr", "add", client.Address, "dev", ClientDevice);
            await HostCommandAsync(cancellationToken, "ip", "-n", ns, "link", "set", ClientDevice, "mtu", client.Mtu.ToString(C), "up");
            await using var iperf = await Iperf3.StartServerAsync(options.Iperf3Path, output, options.Timeout, cancellationToken, bind: client.Gateway);
            var target = new IPEndPoint(IPAddress.Parse(client.Gateway), iperf.Port);
            Say(output, string.Format(C, "  VPN: D serves, A connected as {0} (MTU {1}); A's device in namespace {2}, iperf3 -> {3} through it", client.Address, client.Mtu, ns, target));
            await iperf.RunClientAsync(target, WarmupIperfSeconds, 1, [], options.Timeout, cancellationToken, ns);
            var vpn = await iperf.RunClientAsync(target, options.IperfSeconds, 1, watch, options.Timeout, cancellationToken, ns);
            var ratio = vpn.BitsPerSecond / forwardBits;
            Say(output, string.Format(C, "  3 hops through the VPN, 1 stream: {0,8:0.000} Gbit/s = {1:0.00}x the port forward over the same hops ({2} retransmits; {3})",
                vpn.BitsPerSecond / 1e9, ratio, vpn.Retransmits, vpn.Cpu.Describe()));
            result.Add("vpn_3hop_bits_per_sec", Math.Round(vpn.BitsPerSecond));
            result.Add("vpn_3hop_vs_forward", ratio, 3);
            result.Add("vpn_mtu", client.Mtu);
            result.Add("vpn_3hop_cpu_s", vpn.Cpu.Children.ToDictionary(c => c.Name.Replace(' ', '_'), c => double.IsFinite(c.Seconds) ? Math.Round(c.Seconds, 2) : (double?)null));
            var throughVpn = await PingAverageAsync(cancellationToken, "ip", "netns", "exec", ns, "ping", "-q", "-n", "-c", "50", "-i", "0.02", client.Gateway);
            var loopback = await PingAverageAsync(cancellationToken, "ping", "-q", "-n", "-c", "50", "-i", "0.02", "127.0.0.1");
            var perHop = (throughVpn - loopback) / 3;
            Say(output, string.Format(C, "  ping through the VPN over 3 hops: {0:0.000} ms average (loopback {1:0.000} ms): {2:0.000} ms added per hop", throughVpn, loopback, perHop));
            result.Add("vpn_ping_ms", throughVpn, 3);
            result.Add("loopback_ping_ms", loopback, 3);
            result.Add("vpn_ping_added_per_hop_ms", perHop, 3);
        }
        finally
        {
            await HostCommandAsync(CancellationToken.None, "ip", "netns", "del", ns);
            try
            {
                await first.Api.VpnDisconnectAsync(CancellationToken.None);
                await last.Api.VpnStopServingAsync(CancellationToken.None);
            }
            catch (NodeApiException)
            {
                // The nodes are about to go anyway.
            }
        }
    }

    private static async Task<double> PingAverageAsync(CancellationToken cancellationToken, string program, params string[] arguments)
    {
        var text = await HostCommandAsync(cancellationToken, program, arguments);
        // "rtt min/avg/max/mdev = 0.045/0.061/0.102/0.012 ms"
        var at = text.IndexOf(" = ", StringComparison.Ordinal);
        var parts = at < 0 ? [] : text[(at + 3)..].Split('/');
        return parts.Length >= 2 && double.TryParse(parts[1], NumberStyles.Float, C, out var average)
            ? average
            : throw new BenchException($"ping printed no round trips: {text.Trim()}");
    }

    /// <summary>Runs a host tool and returns what it printed; a failure is a <see cref="BenchException"/> with its error.</summary>
    private static async Task<string> HostCommandAsync(CancellationToken cancellationToken, string program, params string[] arguments)
    {
        var info = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
            info.ArgumentList.Add(argument);
        using var process = Process.Start(info) ?? throw new BenchException($"cannot start {program}");
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        if (process.ExitCode != 0)
            throw new BenchException($"`{program} {string.Join(' ', arguments)}` failed: {(await stderr).Trim()}");
        return await stdout;
    }

    private static async Task<T> WithTimeout<T>(Task<T> task, TimeSpan timeout, string what)
    {
        try
        {
            return await task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new BenchException($"{what} took longer than {timeout.TotalSeconds:0} s.");
        }
    }

    private static async Task WithTimeout(Task task, TimeSpan timeout, string what)
    {
        try
        {
            await task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new BenchException($"{what} took longer than {timeout.TotalSeconds:0} s.");
        }
    }

    private static void Say(TextWriter output, string line)
    {
        lock (output)
            output.WriteLine(line);
    }

    /// <summary>Counters of a node's links added up (both directions), and its forwarding drops.</summary>
    private sealed record LinkTotals(long Frames, long Messages, long Bytes, long SendDrops, double ForwardDrops)
    {
        public static async Task<LinkTotals> ReadAsync(NodeProcess node, CancellationToken cancellationToken)
        {
            var links = await node.Api.LinksAsync(cancellationToken);
            var drops = await node.MetricAsync("skymesh_forward_drops_total", cancellationToken) ?? 0;
            return new LinkTotals(links.Sum(l => l.FramesReceived), links.Sum(l => l.MessagesReceived), links.Sum(l => l.BytesReceived), links.Sum(l => l.SendDrops), drops);
        }

        public LinkTotals Minus(LinkTotals before) =>
            new(Frames - before.Frames, Messages - before.Messages, Bytes - before.Bytes, SendDrops - before.SendDrops, ForwardDrops - before.ForwardDrops);

        public string Describe() => string.Format(C, "{0:N0} frames in ({1:N0} bytes per frame, {2:0.00} messages per frame), {3:N0} messages dropped on sending, {4:N0} not forwarded",
            Frames, Frames > 0 ? Bytes / Frames : 0, Frames > 0 ? Messages / (double)Frames : 0, SendDrops, ForwardDrops);
    }

    /// <summary>Percentiles of one probe run, in microseconds.</summary>
    private sealed record Percentiles(int Samples, int Lost, double P50, double P99, double P999, double Max, double Mean)
    {
        public static Percentiles Of(double[] micros, int lost)
        {
            if (micros.Length == 0)
                throw new BenchException($"None of the {lost} latency probes arrived.");
            Array.Sort(micros);
            double At(double q) => micros[Math.Min(micros.Length - 1, (int)Math.Ceiling(q * micros.Length) - 1)];
            return new Percentiles(micros.Length, lost, At(0.50), At(0.99), At(0.999), micros[^1], micros.Average());
        }

        public string Describe() => string.Format(C, "{0} samples ({1} lost): p50 {2:0.0} us, p99 {3:0.0} us, p99.9 {4:0.0} us, max {5:0.0} us, mean {6:0.0} us",
            Samples, Lost, P50, P99, P999, Max, Mean);

        public void Write(JsonLine json, string prefix)
        {
            json.Add($"{prefix}_p50_us", P50, 1);
            json.Add($"{prefix}_p99_us", P99, 1);
            json.Add($"{prefix}_p999_us", P999, 1);
            json.Add($"{prefix}_max_us", Max, 1);
            json.Add($"{prefix}_lost", Lost);
        }
    }

    /// <summary>The final line: keys in the order they were added.</summary>
}
