using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// The <see cref="NatTopology"/> lab behaves like two homes behind real home routers, checked at the IP level with
/// small UDP programs (python3) run in its namespaces: hosts are seen by their router's WAN address, a plain router keeps
/// one external port per local port and a symmetric one does not, UDP hole punching gets through two plain routers and
/// not through a symmetric one, and nothing unsolicited reaches a host.
/// </summary>
public sealed partial class NatLabTests : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);
    private const int EchoPort = 3478;
    private const int LocalPort = 40000;
    private static readonly string Echo = $"{NatTopology.PublicAddress}:{EchoPort}";
    private static readonly string EchoOtherAddress = $"{NatTopology.PublicAddress2}:{EchoPort}";
    private static readonly string EchoOtherPort = $"{NatTopology.PublicAddress}:{EchoPort + 1}";

    private NetnsLab? _lab;
    private NatTopology? _nat;
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private NatTopology Nat => _nat ?? throw new InvalidOperationException("no topology yet");

    private string Tool => Path.Combine(Nat.Lab.Directory, "udp.py");

    public async ValueTask DisposeAsync()
    {
        if (_lab is not null)
            await _lab.DisposeAsync();
    }

    [Fact]
    public async Task Hosts_reach_the_Internet_from_their_routers_WAN_addresses_and_nothing_routes_into_a_LAN()
    {
        var hostForwarding = (await File.ReadAllTextAsync("/proc/sys/net/ipv4/ip_forward", Ct)).Trim();
        await CreateAsync(new(), new());
        await CheckedAsync(async () =>
        {
            // Forwarding on in the two routers only.
            foreach (var ns in Nat.Namespaces)
                Assert.Equal(Nat.Sites.Any(s => s.Router == ns) ? "1" : "0", await Nat.Lab.ForwardingAsync(ns, Ct));
            Assert.Equal(hostForwarding, (await File.ReadAllTextAsync("/proc/sys/net/ipv4/ip_forward", Ct)).Trim());

            // The echo in pub sees each host by its router's WAN address, never by its LAN address.
            var echo = await StartEchoAsync(Echo);
            foreach (var site in Nat.Sites)
            {
                var seen = await AskAsync(site.Host, LocalPort, 0, Echo);
                Assert.StartsWith(site.WanAddress + ":", seen[Echo], StringComparison.Ordinal);
            }
            Assert.Contains($"from {Nat.A.WanAddress}:", echo.Output, StringComparison.Ordinal);
            Assert.Contains($"from {Nat.B.WanAddress}:", echo.Output, StringComparison.Ordinal);
            Assert.DoesNotContain("from 10.", echo.Output, StringComparison.Ordinal);

            // pub has no route to either LAN.
            foreach (var site in Nat.Sites)
            {
                var (code, output) = await Nat.Lab.RunAsync(NatTopology.Public, Bound, Ct, "ip", "route", "get", site.HostAddress);
                Assert.True(code != 0 && output.Contains("unreachable", StringComparison.Ordinal), $"pub has a route to {site.HostAddress}: {output}");
            }

            // So hA's packets to hB's own address go out through natA to pub, which drops them (it forwards nothing);
            // pub counting them as address errors is what says they have arrived, and hB has had none.
            var addressErrors = await SnmpAsync(NatTopology.Public, "Ip", "InAddrErrors");
            var stop = Path.Combine(Nat.Lab.Directory, "stop-hB");
            var listener = Nat.Lab.Start("listener in hB", Nat.B.Host, Python, "-u", Tool, "listen", $"0.0.0.0:{LocalPort}", stop, "20");
            await listener.WaitForTextAsync("bound", Bound, Ct);
            var sender = await RunToolAsync(Nat.A.Host, "send", $"0.0.0.0:{LocalPort}", $"{Nat.B.HostAddress}:{LocalPort}", "3");
            Assert.Equal("silence", sender.Trim());
            await UntilAsync("pub has dropped hA's 3 packets for hB's LAN address", async () => await SnmpAsync(NatTopology.Public, "Ip", "InAddrErrors") >= addressErrors + 3);
            await File.WriteAllTextAsync(stop, "", Ct);
            Assert.Equal(0, await listener.WaitForExitAsync(Bound, Ct));
            Assert.Contains("stopped after 0 packets", listener.Output, StringComparison.Ordinal);
        });
    }

    [Fact]
    public async Task A_plain_router_shows_one_local_port_to_every_destination_as_one_external_port_the_same_number()
    {
        await CreateAsync(new(), new());
        await CheckedAsync(async () =>
        {
            await StartEchoAsync(Echo);
            await StartEchoAsync(EchoOtherAddress);
            await StartEchoAsync(EchoOtherPort);
            var seen = await AskAsync(Nat.A.Host, LocalPort, 0, Echo, EchoOtherAddress, EchoOtherPort);
            Log($"hA from port {LocalPort} seen as {string.Join(", ", seen.Select(s => $"{s.Value} by {s.Key}"))}");
            // Endpoint-independent mapping; and plain MASQUERADE keeps the host's port when it is free on the WAN address.
            Assert.All(seen.Values, s => Assert.Equal($"{Nat.A.WanAddress}:{LocalPort}", s));
        });
    }

    [Fact]
    public async Task A_symmetric_router_maps_each_new_destination_to_another_external_port_and_keeps_each_mapping()
    {
        await CreateAsync(new(Symmetric: true), new());
        await CheckedAsync(async () =>
        {
            await StartEchoAsync(Echo);
            await StartEchoAsync(EchoOtherAddress);
            await StartEchoAsync(EchoOtherPort);
            var seen = await AskAsync(Nat.A.Host, LocalPort, 0, Echo, EchoOtherAddress, EchoOtherPort);
            Log($"hA from port {LocalPort} seen as {string.Join(", ", seen.Select(s => $"{s.Value} by {s.Key}"))}");
            Assert.All(seen.Values, s => Assert.StartsWith(Nat.A.WanAddress + ":", s, StringComparison.Ordinal));
            // Random ports: three destinations see at least two of them (all three alike by chance: about 1 in 4·10⁹).
            Assert.True(seen.Values.Distinct().Count() >= 2, $"three destinations saw one external port: {string.Join(", ", seen.Values)}");
            // A mapping lasts as long as its conntrack entry, whatever the socket: asked again from the same port, the
            // first echo sees the same external port.
            var again = await AskAsync(Nat.A.Host, LocalPort, 0, Echo);
            Assert.Equal(seen[Echo], again[Echo]);
            // natB, plain, is unaffected.
            var b = await AskAsync(Nat.B.Host, LocalPort, 0, Echo, EchoOtherAddress);
            Assert.All(b.Values, s => Assert.Equal($"{Nat.B.WanAddress}:{LocalPort}", s));
        });
    }

    [Fact]
    public async Task Hole_punching_between_two_plain_routers_gets_packets_through_both_ways()
    {
        await CreateAsync(new(), new());
        await CheckedAsync(async () =>
        {
            await StartEchoAsync(Echo);
            var (a, b, externalA, externalB) = await PunchAsync();
            Assert.Equal($"{Nat.A.WanAddress}:{LocalPort}", externalA);
            Assert.Equal($"{Nat.B.WanAddress}:{LocalPort}", externalB);
            // Each received the other's packets from the external address the echo had told the other.
            Assert.Matches($"received hB [0-9]+ (none|got) from {Regex.Escape(externalB)} after", a);
            Assert.Matches($"received hA [0-9]+ (none|got) from {Regex.Escape(externalA)} after", b);
            Assert.Contains("both ways", a, StringComparison.Ordinal);
            Assert.Contains("both ways", b, StringComparison.Ordinal);
            Log($"hA: {Line(a, "received")}; hB: {Line(b, "received")}");
        });
    }

    [Fact]
    public async Task Hole_punching_fails_when_one_router_is_symmetric()
    {
        await CreateAsync(new(Symmetric: true), new());
        await CheckedAsync(async () =>
        {
            await StartEchoAsync(Echo);
            var (a, b, externalA, _) = await PunchAsync();
            // natA gave hA's flow to hB an external port of its own, not the one the echo saw; natB only lets in what
            // comes from the address and port hB sent to, and natA only what comes from where hA sent to. (Were natA to
            // draw the echo's port again for the flow to hB, about 1 time in 64,000, the punch would get through.)
            Assert.Contains("no packet within 3 s", a, StringComparison.Ordinal);
            Assert.Contains("no packet within 3 s", b, StringComparison.Ordinal);
            var mapped = MappedPort().Match(Conntrack(await Nat.ConntrackAsync(Nat.A, Ct), Nat.A.HostAddress, Nat.B.WanAddress));
            Log($"hA seen by the echo as {externalA}; natA maps its flow to hB to port {(mapped.Success ? mapped.Groups[1].Value : "?")}");
        });
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Nothing_unsolicited_reaches_a_host(bool firewall)
    {
        await CreateAsync(new(Firewall: firewall), new());
        await CheckedAsync(async () =>
        {
            // The echo, asked later by hA, also sends to hA from pub's other address and from another port.
            await StartEchoAsync(Echo, EchoOtherAddress, EchoOtherPort);
            var stop = Path.Combine(Nat.Lab.Directory, "stop-hA");
            var listener = Nat.Lab.Start("listener in hA", Nat.A.Host, Python, "-u", Tool, "listen", $"0.0.0.0:{LocalPort}", stop, "20", Echo, "0.5");
            await listener.WaitForTextAsync("bound", Bound, Ct);

            // From pub to natA's WAN address at the port hA listens on, which no mapping has.
            var dropped = await Nat.DroppedAsync(Nat.A, Ct);
            var noPorts = await SnmpAsync(Nat.A.Router, "Udp", "NoPorts");
            var sender = (await RunToolAsync(NatTopology.Public, "send", $"{NatTopology.PublicAddress}:0", $"{Nat.A.WanAddress}:{LocalPort}", "3")).Trim();
            if (firewall)
            {
                // Dropped without a word.
                Assert.Equal("silence", sender);
                await UntilAsync("natA's firewall has dropped the 3 packets", async () => await Nat.DroppedAsync(Nat.A, Ct) >= dropped + 3);
            }
            else
            {
                // Taken by the router for itself, where nothing listens: ICMP port unreachable, nothing forwarded.
                Assert.Equal("refused", sender);
                await UntilAsync("natA has taken the 3 packets for itself", async () => await SnmpAsync(Nat.A.Router, "Udp", "NoPorts") >= noPorts + 3);
            }
            await File.WriteAllTextAsync(stop, "", Ct);

            // Then hA asks the echo from the same socket: the answer gets in, the packets from another address or
            // port to that very mapping do not (the filtering is address- and port-dependent).
            Assert.Equal(0, await listener.WaitForExitAsync(Bound, Ct));
            var output = listener.Output;
            Assert.Contains("stopped after 0 packets", output, StringComparison.Ordinal);
            Assert.Contains($"seen-by {Echo} {Nat.A.WanAddress}:{LocalPort}", output, StringComparison.Ordinal);
            Assert.DoesNotContain("received", output, StringComparison.Ordinal);
            Assert.Contains("done", output, StringComparison.Ordinal);
        });
    }

    /// <summary>
    /// What a router without a firewall does to hole punching: the first punch packet to arrive, before its own host has
    /// sent, is taken by the router for itself and leaves a conntrack entry holding the pair of addresses and ports; the
    /// NAT then gives its own host's flow to that peer another external port, and the punch fails both ways.
    /// </summary>
    [Fact]
    public async Task Without_a_firewall_an_early_punch_packet_makes_the_late_side_s_router_map_it_to_another_port()
    {
        await CreateAsync(new(), new(Firewall: false));
        await CheckedAsync(async () =>
        {
            await StartEchoAsync(Echo);
            var early = $"src={Nat.A.WanAddress} dst={Nat.B.WanAddress} sport={LocalPort} dport={LocalPort} [UNREPLIED]";
            var (a, b, _, _) = await PunchAsync(async () =>
                await UntilAsync("hA's first punch packet in natB's conntrack table", async () => (await Nat.ConntrackAsync(Nat.B, Ct)).Contains(early, StringComparison.Ordinal)));
            Assert.Contains("no packet within 3 s", a, StringComparison.Ordinal);
            Assert.Contains("no packet within 3 s", b, StringComparison.Ordinal);
            var entry = Conntrack(await Nat.ConntrackAsync(Nat.B, Ct), Nat.B.HostAddress, Nat.A.WanAddress);
            var mapped = MappedPort().Match(entry);
            Assert.True(mapped.Success, $"no mapping of hB's flow to hA in natB's conntrack table: {entry}");
            Assert.NotEqual(LocalPort.ToString(CultureInfo.InvariantCulture), mapped.Groups[1].Value);
            Log($"natB mapped hB:{LocalPort} -> {Nat.A.WanAddress}:{LocalPort} to port {mapped.Groups[1].Value}, not {LocalPort}");
        });
    }

    private async Task CreateAsync(NatRouterOptions a, NatRouterOptions b)
    {
        if (!NatTopology.Available)
            Assert.Skip("needs root, iproute2 and iptables (Debian's iptables package)");
        if (!HasPython())
            Assert.Skip("needs python3 (test.sh installs it)");
        var started = Stopwatch.StartNew();
        _lab = await NetnsLab.CreateAsync([], Ct);
        _nat = await NatTopology.CreateAsync(_lab, a, b, Ct);
        await File.WriteAllTextAsync(Tool, Script, Ct);
        Log($"topology up in {started.ElapsedMilliseconds} ms (natA {a}, natB {b})");
    }

    /// <summary>Runs the test's body; a failure comes with every router's tables and every program's output.</summary>
    private async Task CheckedAsync(Func<Task> body)
    {
        try
        {
            await body();
            Log("done");
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"{e.Message}\n{await Nat.DiagnosticsAsync(CancellationToken.None)}{Nat.Lab.Tails(60)}", e);
        }
    }

    private async Task<LabProcess> StartEchoAsync(string bind, params string[] strays)
    {
        var echo = Nat.Lab.Start($"echo {bind}", NatTopology.Public, Python, ["-u", Tool, "echo", bind, .. strays]);
        await echo.WaitForTextAsync("listening", Bound, Ct);
        return echo;
    }

    private async Task<string> RunToolAsync(string ns, params string[] arguments)
    {
        var (code, output) = await Nat.Lab.RunAsync(ns, Bound, Ct, Python, ["-u", Tool, .. arguments]);
        Assert.True(code == 0, $"udp.py {string.Join(' ', arguments)} in {ns} exited with {code}: {output}");
        return output;
    }

    /// <summary>From one local port of <paramref name="ns"/>, which source address each echo saw.</summary>
    private async Task<Dictionary<string, string>> AskAsync(string ns, int port, double linger, params string[] echoes)
    {
        var output = await RunToolAsync(ns, ["ask", port.ToString(CultureInfo.InvariantCulture), linger.ToString(CultureInfo.InvariantCulture), .. echoes]);
        var seen = output.Split('\n').Select(l => l.Split(' ')).Where(f => f.Length == 3 && f[0] == "seen-by").ToDictionary(f => f[1], f => f[2]);
        Assert.True(seen.Count == echoes.Length, $"not every echo answered: {output}");
        return seen;
    }

    /// <summary>
    /// hA and hB each learn their external address from the echo, then punch towards each other's from the same socket
    /// for at most 3 s; <paramref name="betweenStarts"/> (when given) runs after hA has started punching and before hB
    /// does, else both are told at once. Returns both outputs and the two external addresses.
    /// </summary>
    private async Task<(string A, string B, string ExternalA, string ExternalB)> PunchAsync(Func<Task>? betweenStarts = null)
    {
        var peerFiles = Nat.Sites.Select(s => Path.Combine(Nat.Lab.Directory, $"peer-of-{s.Host}")).ToArray();
        var punchers = Nat.Sites.Select((s, i) => Nat.Lab.Start($"punch {s.Host}", s.Host, Python, "-u", Tool, "punch",
            LocalPort.ToString(CultureInfo.InvariantCulture), Echo, peerFiles[i], "3", s.Host)).ToArray();
        var externals = new string[2];
        for (var i = 0; i < 2; i++)
        {
            await punchers[i].WaitForTextAsync("external ", Bound, Ct);
            externals[i] = Line(punchers[i].Output, "external ").Split(' ')[1];
        }
        var punching = Stopwatch.StartNew();
        await WriteAtomicallyAsync(peerFiles[0], externals[1]);
        if (betweenStarts is not null)
        {
            await punchers[0].WaitForTextAsync("punching", Bound, Ct);
            await betweenStarts();
        }
        await WriteAtomicallyAsync(peerFiles[1], externals[0]);
        foreach (var puncher in punchers)
            Assert.Equal(0, await puncher.WaitForExitAsync(Bound, Ct));
        Log($"hA {externals[0]} and hB {externals[1]} punched for {punching.ElapsedMilliseconds} ms");
        return (punchers[0].Output, punchers[1].Output, externals[0], externals[1]);
    }

    private async Task WriteAtomicallyAsync(string path, string text)
    {
        await File.WriteAllTextAsync(path + ".tmp", text, Ct);
        File.Move(path + ".tmp", path);
    }

    /// <summary>A counter of <c>/proc/net/snmp</c> in a namespace, e.g. ("Udp", "NoPorts").</summary>
    private async Task<long> SnmpAsync(string ns, string protocol, string counter)
    {
        var lines = (await Nat.Lab.ExecCheckedAsync(ns, Ct, "cat", "/proc/net/snmp")).Split('\n').Where(l => l.StartsWith(protocol + ": ", StringComparison.Ordinal)).ToArray();
        var (names, values) = (lines[0].Split(' '), lines[1].Split(' '));
        return long.Parse(values[Array.IndexOf(names, counter)], CultureInfo.InvariantCulture);
    }

    /// <summary>The conntrack entry of the UDP flow from <paramref name="source"/> to <paramref name="destination"/> ("" when none).</summary>
    private static string Conntrack(string table, string source, string destination) =>
        table.Split('\n').FirstOrDefault(l => l.Contains(" udp ", StringComparison.Ordinal) && l.Contains($"src={source} dst={destination} ", StringComparison.Ordinal)) ?? "";

    /// <summary>In a conntrack entry of a masqueraded flow, the external port: the destination port of its reply direction.</summary>
    [GeneratedRegex(@"src=\S+ dst=\S+ sport=\d+ dport=\d+ .*src=\S+ dst=\S+ sport=\d+ dport=(\d+)")]
    private static partial Regex MappedPort();

    private static string Line(string output, string start) =>
        output.Split('\n').FirstOrDefault(l => l.StartsWith(start, StringComparison.Ordinal)) ?? $"(no line starting \"{start}\")";

    /// <summary>Polls <paramref name="condition"/> every 20 ms until it holds; fails after <see cref="Bound"/>.</summary>
    private static async Task UntilAsync(string what, Func<Task<bool>> condition)
    {
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        var waited = Stopwatch.StartNew();
        while (!await condition())
        {
            if (waited.Elapsed > Bound)
                throw new Xunit.Sdk.XunitException($"{what}: not within {Bound.TotalSeconds} s");
            await poll.WaitForNextTickAsync(Ct);
        }
    }

    /// <summary>The system's python3 when there is one: a version manager's shim on the PATH can take half a second to start each program.</summary>
    private static string Python => File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    private static bool HasPython() =>
        File.Exists("/usr/bin/python3") || (System.Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries).Any(dir => File.Exists(Path.Combine(dir, "python3")));

    private void Log(string message) =>
        TestContext.Current.TestOutputHelper?.WriteLine($"{_clock.Elapsed.TotalSeconds,6:0.00} s  {message}");

    /// <summary>The UDP programs the tests run, one per mode (python3, standard library only).</summary>
    private const string Script = """
        # Small UDP programs for NatLabTests, one per mode; each prints what it sees, one line per event, and ends by itself.
        import os, select, socket, sys, time

        def endpoint(text):
            host, port = text.rsplit(":", 1)
            return host, int(port)

        def show(address):
            return "%s:%d" % address

        def say(*parts):
            print(*parts, flush=True)

        def bound(text):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(endpoint(text))
            return s

        def receive(s, seconds):
            ready, _, _ = select.select([s], [], [], max(0.0, seconds))
            return s.recvfrom(2048) if ready else None

        def ask(s, server):
            # The source address the echo at server saw for s; other datagrams meanwhile are reported.
            server = endpoint(server)
            for attempt in range(4):
                s.sendto(b"who", server)
                deadline = time.monotonic() + 0.5
                while True:
                    got = receive(s, deadline - time.monotonic())
                    if got is None:
                        break
                    data, source = got
                    if source == server and data.startswith(b"seen "):
                        return data[5:].decode()
                    say("received", data.decode(errors="replace"), "from", show(source))
            say("no answer from", show(server))
            sys.exit(3)

        def linger(s, seconds):
            deadline = time.monotonic() + seconds
            while True:
                got = receive(s, deadline - time.monotonic())
                if got is None:
                    return
                say("received", got[0].decode(errors="replace"), "from", show(got[1]))

        mode, args = sys.argv[1], sys.argv[2:]

        if mode == "echo":
            # echo BIND [STRAY_BIND ...]: answers each datagram with "seen <source it saw>", then sends "stray" to that
            # source from each STRAY_BIND socket too (another address or port than the one it asked).
            s = bound(args[0])
            strays = [bound(b) for b in args[1:]]
            say("listening on", args[0])
            while True:
                data, source = s.recvfrom(2048)
                say("from", show(source))
                s.sendto(b"seen " + show(source).encode(), source)
                for t in strays:
                    t.sendto(b"stray from " + show(t.getsockname()).encode(), source)

        elif mode == "ask":
            # ask LOCAL_PORT LINGER_S SERVER...: from one socket, asks each echo which source it saw; then reports whatever
            # else arrives within LINGER_S.
            s = bound("0.0.0.0:" + args[0])
            for server in args[2:]:
                say("seen-by", server, ask(s, server))
            linger(s, float(args[1]))
            say("done")

        elif mode == "listen":
            # listen BIND STOP_FILE MAX_S [ECHO LINGER_S]: reports each datagram until STOP_FILE exists; then, with ECHO, asks
            # it from the same socket and reports whatever else arrives within LINGER_S.
            s = bound(args[0])
            say("bound", args[0])
            deadline, count = time.monotonic() + float(args[2]), 0
            while not os.path.exists(args[1]):
                if time.monotonic() > deadline:
                    say("no stop file within", args[2], "s")
                    sys.exit(2)
                got = receive(s, 0.02)
                if got is not None:
                    count += 1
                    say("received", got[0].decode(errors="replace"), "from", show(got[1]))
            say("stopped after %d packets" % count)
            if len(args) > 3:
                say("seen-by", args[3], ask(s, args[3]))
                linger(s, float(args[4]))
            say("done")

        elif mode == "send":
            # send BIND TARGET COUNT: sends COUNT datagrams on a connected socket; reports "refused" when an ICMP port
            # unreachable came back, "answered" for a datagram, else "silence" (within 0.5 s of the last).
            s = bound(args[0])
            s.connect(endpoint(args[1]))
            outcome = "silence"
            for i in range(int(args[2])):
                try:
                    s.send(b"unsolicited %d" % i)
                except ConnectionRefusedError:
                    # The error an earlier datagram brought back, reported instead of sending this one: send it again.
                    outcome = "refused"
                    s.send(b"unsolicited %d" % i)
            try:
                s.settimeout(0.5)
                s.recv(2048)
                outcome = "answered"
            except ConnectionRefusedError:
                outcome = "refused"
            except socket.timeout:
                pass
            say(outcome)

        elif mode == "punch":
            # punch LOCAL_PORT ECHO PEER_FILE PUNCH_S NAME: learns its external address from ECHO, waits for the peer's in
            # PEER_FILE, then from the same socket sends to it every 100 ms for at most PUNCH_S, saying whether it has had a
            # packet from the peer yet; ends once it has had one and the peer has said it had one too.
            s = bound("0.0.0.0:" + args[0])
            echo, name, seconds = endpoint(args[1]), args[4], float(args[3])
            say("external", ask(s, args[1]))
            wait = time.monotonic() + 20
            while not os.path.exists(args[2]):
                if time.monotonic() > wait:
                    say("no peer file within 20 s")
                    sys.exit(2)
                time.sleep(0.01)
            with open(args[2]) as f:
                peer = endpoint(f.read().strip())
            say("punching", show(peer))
            got = peer_got = False
            sent = 0
            start = time.monotonic()
            deadline, next_send = start + seconds, start
            def punch():
                global sent
                s.sendto(("%s %d %s" % (name, sent, "got" if got else "none")).encode(), peer)
                sent += 1
            while time.monotonic() < deadline:
                now = time.monotonic()
                if now >= next_send:
                    punch()
                    next_send += 0.1
                packet = receive(s, min(next_send, deadline) - time.monotonic())
                if packet is None:
                    continue
                data, source = packet
                if source == echo:
                    continue
                if not got:
                    got = True
                    say("received %s from %s after %d ms" % (data.decode(errors="replace"), show(source), (time.monotonic() - start) * 1000))
                    punch()
                if data.endswith(b" got"):
                    peer_got = True
                if got and peer_got:
                    punch()
                    say("both ways after %d sends" % sent)
                    sys.exit(0)
            say("peer did not confirm within %g s" % seconds if got else "no packet within %g s" % seconds)

        else:
            say("unknown mode", mode)
            sys.exit(64)
        """;
}
