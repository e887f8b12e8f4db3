using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Skymesh.Control.Topology;
using Skymesh.Mesh.Apps;
using Skymesh.Node;
using Skymesh.Node.Control;
using Skymesh.Node.Hosting;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Cli;

/// <summary>
/// <c>skymesh demo</c>: a small mesh on this machine — several nodes on loopback UDP, linked in a chain, a static
/// path from the first to the last, a port forward and a SOCKS server on the first, and live traffic, with a
/// line per second of what flows where.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var nodes = new Option<int>("--nodes") { Description = "Nodes in the chain (2 to 10): the path has nodes-2 relays; one more node offers the repair route.", DefaultValueFactory = _ => 4 }.Within(2, 10);
        var duration = new Option<double>("--duration") { Description = "Seconds to run; 0 runs until Ctrl+C.", DefaultValueFactory = _ => 20 }.Within(0, 86_400, "seconds");
        var rate = new Option<double>("--rate") { Description = "Megabytes per second of demo traffic through the path (0: as fast as it goes).", DefaultValueFactory = _ => 4 }.Within(0, 100_000);
        var socks = new Option<string>("--socks") { Description = "Where the demo's SOCKS5 server listens (a free port is taken if this one is busy).", DefaultValueFactory = _ => "127.0.0.1:1080" };
        var command = new Command("demo", "Start a broker and a mesh of nodes on loopback UDP; the control plane opens a multi-hop path, carries live traffic, and repairs the path when a link is cut.") { nodes, duration, rate, socks };
        command.Subcommands.Add(ChatDemoCommand.Create());
        command.SetAction(async (parse, cancellationToken) =>
        {
            var count = parse.GetValue(nodes);
            var seconds = parse.GetValue(duration);
            var megabytes = parse.GetValue(rate);
            if (count is < 2 or > 10)
                throw new UsageException("--nodes must be 2 to 10.");
            if (seconds < 0 || !double.IsFinite(seconds))
                throw new UsageException("--duration must be 0 or a positive number of seconds.");
            if (megabytes < 0 || !double.IsFinite(megabytes))
                throw new UsageException("--rate must be 0 or a positive number of megabytes per second.");
            return await RunAsync(count, seconds, megabytes, CliSupport.ParseEndPoint(parse.GetValue(socks)!, "--socks"), cancellationToken);
        });
        return command;
    }

    private static async Task<int> RunAsync(int count, double seconds, double megabytes, IPEndPoint socksAt, CancellationToken cancellationToken)
    {
        using var logging = CliSupport.Logging(LogLevel.Warning);
        using var signals = CliSupport.UntilSignal(cancellationToken);
        var root = Directory.CreateTempSubdirectory("skymesh-demo-").FullName;
        var hosts = new List<NodeHost>();
        var mesh = new List<(MeshNode Node, NodeApi Api, ControlAgent Agent)>();
        var brokerOptions = new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) };
        brokerOptions.Authenticators.Add(new KeyAuthenticator());
        // Open logins too, for clients that sign each request instead (node addresses still log in only by key).
        brokerOptions.Authenticators.Add(new OpenAuthenticator());
        await using var broker = new SsmpBroker(brokerOptions, logging);
        broker.Start();
        DemoExchange? exchange = null;
        // The chain A, B, C... plus one more node linked to both ends: the route a repair can take.
        var total = count + 1;
        string Name(int i) => ((char)('A' + i)).ToString();
        try
        {
            Console.WriteLine($"Starting an SSMP broker on {broker.LocalEndPoint} (key logins for nodes and accounts) and {total} nodes on loopback UDP (keys and state in {root})...");
            // Node A's key is made first: its address is the exchange operator's, so A's dashboard can approve withdrawals.
            string operatorAddress;
            using (var operatorKey = Skymesh.Identity.NodeKeyFile.LoadOrCreate(Path.Combine(root, "a", "node.key")))
                operatorAddress = operatorKey.Address.ToString();
            exchange = await DemoExchange.StartAsync(Path.Combine(root, "exchange"), broker.LocalEndPoint, [operatorAddress], logging, signals.Token);
            for (var i = 0; i < total; i++)
            {
                var json = $$"""
                    {
                      "dataDir": "{{Name(i).ToLowerInvariant()}}",
                      "api": "127.0.0.1:0",
                      "broker": "{{broker.LocalEndPoint}}",
                      "interfaces": [ { "name": "udp0", "type": "udp", "listen": "127.0.0.1:0" } ],
                      "exits": [ {{(i == count - 1 ? "\"*:*\"" : "")}} ],
                      "price": {{(i == 0 || i == count - 1 ? 0 : 1000)}},
                      "exchange": { "service": "{{exchange.Service.Id}}" },
                      "settlement": { "service": true }
                    }
                    """;
                var options = NodeOptions.Parse(json, root);
                var host = await new NodeHostBuilder(options).UseLogging(logging).StartAsync(signals.Token);
                hosts.Add(host);
                mesh.Add((host.Node, host.Api!, await host.WaitForControlAsync(signals.Token)));
            }
            for (var i = 0; i < total; i++)
                Console.WriteLine($"  node {Name(i)} {Short(mesh[i].Node.Address.ToString())}  udp {mesh[i].Node.Interfaces.Values.First().LocalEndPoint}  api {mesh[i].Api.EndPoint}{(i == count - 1 ? "  (exit: connects to any target)" : "")}");
            var pairs = Enumerable.Range(0, count - 1).Select(i => (i, i + 1)).Append((0, count)).Append((count, count - 1)).ToList();
            foreach (var (a, b) in pairs)
            {
                var link = await mesh[a].Node.ConnectAsync("udp0", mesh[b].Node.Interfaces.Values.First().LocalEndPoint, mesh[b].Node.Address, signals.Token);
                Console.WriteLine($"  link {Name(a)} <-> {Name(b)} up (signed handshake, {(link.Encrypted ? "ChaCha20-Poly1305 frames" : "plain frames")})");
            }

            var source = mesh[0].Node;
            var destination = mesh[count - 1].Node;
            await WaitForMeshAsync(mesh[0].Agent.Graph, mesh.Select(m => m.Node.Address).ToList(), pairs.Count, signals.Token);
            Console.WriteLine($"  every node's signed link announcement reached A over the broker: {mesh[0].Agent.Graph.NodeCount} nodes, {pairs.Count} links");
            // The lowest-latency route usually goes through E, which links both ends; the demo asks for the long way round
            // so that the path has relays whose link it can cut, and says which route the finder would have taken.
            string Route(IEnumerable<Skymesh.Identity.NodeAddress> nodes) => string.Join(" -> ", nodes.Select(n => Name(mesh.FindIndex(m => m.Node.Address == n))));
            var best = mesh[0].Agent.Graph.FindPath(source.Address, destination.Address, new PathQuery());
            await mesh[0].Agent.OpenPathAsync(destination.Address, new PathQuery { MinHops = count - 1 }, signals.Token);
            var established = mesh[0].Agent.Opened.Single();
            Console.WriteLine($"  A's route finder would take {Route(best.Nodes)} (lowest latency); the demo asks it for at least {count - 1} hops, so that the path has relays to cut:");
            Console.WriteLine($"  path {Route(established.Request.Nodes)} found and set up by the control plane in {established.SetupTime.TotalMilliseconds:0.0} ms (two parallel rounds, one signature)");

            await using var target = new Sink();
            var (_, forward) = source.StartForward(new IPEndPoint(IPAddress.Loopback, 0), destination.Address, target.Target);
            Socks5Server socks;
            try
            {
                (_, socks) = source.StartSocks(socksAt, destination.Address);
            }
            catch (InvalidOperationException) when (socksAt.Port != 0)
            {
                (_, socks) = source.StartSocks(new IPEndPoint(socksAt.Address, 0), destination.Address);
            }
            // A's dashboard steers the other nodes too (its Nodes page), as one person's several nodes would be.
            using (var a = new NodeApiClient(mesh[0].Api.EndPoint.ToString(), token: mesh[0].Api.Token))
            {
                for (var i = 1; i < mesh.Count; i++)
                    await a.AddDashboardNodeAsync(Name(i), mesh[i].Api.EndPoint.ToString(), mesh[i].Api.Token, signals.Token);
            }
            await exchange.StartTradersAsync(broker.LocalEndPoint, 3, signals.Token);
            // Every node pays the next one for forwarding from its account on the exchange: a trader sends each some SKY
            // and BTC to start with (a relay's earnings come in as fast as it pays on, but not always first).
            foreach (var member in mesh)
                await exchange.FundAsync(member.Node.Address.ToString(), signals.Token);
            Console.WriteLine($"  exchange {Short(exchange.Service.Id)} on the broker: SKY/BTC, SKY and BTC on simulated chains (a block a second); 3 traders funded through them and trading;");
            Console.WriteLine("  every node has an account there (its address, funded by a trader); relays settle their receipts on it; A's dashboard trades there and approves withdrawals");
            Console.WriteLine();
            Console.WriteLine("Watch and steer it in a browser — node A's dashboard (the map, the path's labels at every hop, the cut and the");
            Console.WriteLine($"repair live; the other nodes on its Nodes page):  {mesh[0].Api.DashboardAddress}");
            Console.WriteLine();
            Console.WriteLine("Try it from another terminal while the demo runs:");
            Console.WriteLine($"    curl --socks5-hostname {socks.LocalEndPoint} http://example.org/      # leaves the mesh at {Name(count - 1)}");
            Console.WriteLine($"    dotnet run --project src/Skymesh.Cli -- nodes --api {mesh[0].Api.EndPoint}    # the mesh as A knows it");
            Console.WriteLine($"    dotnet run --project src/Skymesh.Cli -- links --api {mesh[1].Api.EndPoint}    # node B's links");
            Console.WriteLine($"    dotnet run --project src/Skymesh.Cli -- ping {destination.Address} --api {mesh[0].Api.EndPoint}");
            Console.WriteLine($"    curl http://{mesh[1].Api.EndPoint}/metrics");
            Console.WriteLine($"    export SKYMESH_BROKER={broker.LocalEndPoint} SKYMESH_EXCHANGE={exchange.Service.Id}");
            Console.WriteLine("    dotnet run --project src/Skymesh.Cli -- exchange book SKY/BTC              # the traders' book; deposit-address, simchain pay, order ...");
            Console.WriteLine();
            var cutAt = seconds > 0 ? Math.Max(2, (int)(seconds / 2)) : 10;
            Console.WriteLine($"Traffic: a TCP connection into A's port forward {forward.LocalEndPoint} carried to a sink next to {Name(count - 1)}, plus a ping each second.");
            Console.WriteLine($"At {cutAt} s the link {Name(count > 2 ? 1 : 0)} <-> {Name(count > 2 ? 2 : 1)} is cut: watch the control plane repair the path through {Name(count)} while the stream goes on.");

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(signals.Token);
            if (seconds > 0)
                stop.CancelAfter(TimeSpan.FromSeconds(seconds));
            var sender = Task.Run(() => SendAsync(forward.LocalEndPoint, megabytes, stop.Token));
            var previous = mesh.Select(m => m.Node.Switch.Forwarded).ToArray();
            var previousBytes = 0L;
            var clock = Stopwatch.StartNew();
            var lastLine = TimeSpan.Zero;
            var cut = false;
            var second = 0;
            // One line per second of real time: the ticks do not drift with the work done on each, and each rate is
            // over the time since the line before.
            using var ticks = new PeriodicTimer(TimeSpan.FromSeconds(1));
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    if (!await ticks.WaitForNextTickAsync(stop.Token))
                        break;
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                second = (int)Math.Round(clock.Elapsed.TotalSeconds);
                if (second >= cutAt && !cut)
                {
                    cut = true;
                    var (a, b) = count > 2 ? (1, 2) : (0, 1);
                    if (mesh[a].Node.FindLink(mesh[b].Node.Address) is { } doomed)
                    {
                        mesh[a].Node.Switch.Disconnect(doomed, "cut by the demo");
                        Console.WriteLine($"      link {Name(a)} <-> {Name(b)} cut");
                    }
                }
                string ping;
                try
                {
                    ping = $"{(await source.PingAsync(destination.Address, 64, TimeSpan.FromMilliseconds(500), stop.Token)).TotalMilliseconds:0.00} ms";
                }
                catch (Exception e) when (e is NodeRequestException or OperationCanceledException or Skymesh.Mesh.Apps.NoPathException)
                {
                    ping = "no answer";
                }
                var via = source.Paths.FirstOrDefault() is { } p ? Name(mesh.FindIndex(m => m.Node.Address.ToString() == p.Via)) : "-";
                var bytes = target.Received;
                var now = clock.Elapsed;
                var span = Math.Max(0.001, (now - lastLine).TotalSeconds);
                lastLine = now;
                var relays = string.Join("  ", Enumerable.Range(1, total - 1).Where(i => i != count - 1).Select(i =>
                {
                    var forwarded = mesh[i].Node.Switch.Forwarded;
                    var line = $"{Name(i)} {(forwarded - previous[i]) / span,7:N0}";
                    previous[i] = forwarded;
                    return line;
                }));
                Console.WriteLine($"{now.TotalSeconds,5:0.0}s  A -> {Name(count - 1)} via {via}: {(bytes - previousBytes) / 1e6 / span,6:0.00} MB/s   ping {ping,9}   switched msgs/s: {relays}");
                previousBytes = bytes;
            }
            var (sentBytes, sendError) = await sender;
            // What is still in flight gets a few seconds to arrive before it is counted.
            var drain = Stopwatch.StartNew();
            while (target.Received < sentBytes && drain.Elapsed < TimeSpan.FromSeconds(10))
                await Task.Delay(50, CancellationToken.None);
            Console.WriteLine();
            foreach (var (node, _, agent) in mesh)
                await agent.Settlement.SettleAsync(CancellationToken.None);
            // Each node's net position: what its neighbours' receipts to it add up to, less what its own receipts to them
            // add up to (settled or not). Every receipt is one node's debit and another's credit, so the positions sum to 0.
            var positions = mesh.Select(m => m.Agent.Settlement.Balance().Neighbours.Sum(n => n.ReceiptedAmount - n.ReceiptedByUs)).ToList();
            var receipts = mesh.Sum(m => m.Agent.Settlement.Book.Accepted);
            Console.WriteLine($"Settlement: relays charge 1,000 micro-units per MiB; {receipts:N0} signed receipts passed between neighbours over their links, and the relays handed them to the exchange.");
            Console.WriteLine($"  net by receipts: {string.Join(", ", positions.Select((p, i) => $"{Name(i)} {p:+#,0;-#,0;0}"))} (sum {positions.Sum():N0}); "
                + $"settled on the relays' exchange accounts (SKY units): {string.Join(", ", Enumerable.Range(0, total).Where(i => i != 0 && i != count - 1).Select(i => $"{Name(i)} +{mesh[i].Agent.Settlement.Ledger.BalanceOf(mesh[i].Node.Address) - DemoExchange.NodeFunding:N0}"))} beyond the 100 SKY each was funded with.");
            Console.WriteLine(await exchange.SummaryAsync(CancellationToken.None));
            var carried = target.Received;
            var pathState = source.Paths.FirstOrDefault()?.State ?? "gone";
            if (carried == sentBytes && sendError is null)
                Console.WriteLine($"Carried all {carried / 1e6:0.0} MB sent from A to {Name(count - 1)} in {clock.Elapsed.TotalSeconds:0} s over one TCP connection, across the repair; the path is {pathState}; forward failures: {forward.Failed}; SOCKS connections: {socks.Accepted}.");
            else
                Console.WriteLine($"NOT everything arrived: A sent {sentBytes / 1e6:0.0} MB and {Name(count - 1)} received {carried / 1e6:0.0} MB"
                    + $"{(sendError is null ? "" : $" (the connection failed: {sendError})")}; the path is {pathState}; forward failures: {forward.Failed}.");
            foreach (var (a, b) in pairs)
            {
                if (mesh[a].Node.Switch.Links.FirstOrDefault(l => l.Peer == mesh[b].Node.Address) is not { } link)
                    continue;
                var info = link.Info();
                Console.WriteLine($"  link {Name(a)} -> {Name(b)}: {info.FramesSent:N0} frames carried {info.MessagesSent:N0} messages, {info.BytesSent / 1e6:0.0} MB, rtt {info.Rtt?.TotalMilliseconds:0.00} ms ({info.State.ToString().ToLowerInvariant()})");
            }
            return 0;
        }
        finally
        {
            // Paths first, so that no end reports its path lost while the nodes stop one by one.
            foreach (var host in hosts)
            {
                foreach (var path in host.Node.Paths)
                    await host.Node.RemovePathAsync(path.Id);
            }
            foreach (var host in hosts)
                await host.DisposeAsync();
            if (exchange is not null)
                await exchange.DisposeAsync();
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Waits until <paramref name="graph"/> holds every node and every link, both ends confirming.</summary>
    private static async Task WaitForMeshAsync(TopologyGraph graph, IReadOnlyList<Skymesh.Identity.NodeAddress> nodes, int links, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void Check(LinkAnnouncement _)
        {
            if (nodes.Sum(n => graph.Neighbours(n).Count) == 2 * links)
                done.TrySetResult();
        }
        graph.RecordAccepted += Check;
        try
        {
            Check(null!);
            await done.Task.WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
        }
        finally
        {
            graph.RecordAccepted -= Check;
        }
    }

    /// <summary>Writes to the forward at <paramref name="megabytes"/> MB/s until stopped.</summary>
    /// <returns>Bytes the forward accepted, and why sending ended early (null when it ran until stopped).</returns>
    private static async Task<(long Sent, string? Error)> SendAsync(IPEndPoint forward, double megabytes, CancellationToken cancellationToken)
    {
        long sent = 0;
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var chunk = new byte[64 * 1024];
        Random.Shared.NextBytes(chunk);
        try
        {
            await socket.ConnectAsync(forward, cancellationToken);
            var clock = Stopwatch.StartNew();
            while (!cancellationToken.IsCancellationRequested)
            {
                if (megabytes > 0)
                {
                    var due = TimeSpan.FromSeconds(sent / (megabytes * 1e6));
                    if (due > clock.Elapsed)
                        await Task.Delay(due - clock.Elapsed, cancellationToken);
                }
                sent += await socket.SendAsync(chunk, SocketFlags.None, cancellationToken);
            }
            // Everything written is on its way: say so, so that the far end can tell all of it arrived.
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (OperationCanceledException)
        {
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (SocketException e)
        {
            return (sent, e.Message);
        }
        return (sent, null);
    }

    private static string Short(string address) => $"{address[..8]}…{address[^4..]}";

    /// <summary>A TCP server that reads and counts everything it is sent.</summary>
    private sealed class Sink : IAsyncDisposable
    {
        private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;
        private long _received;

        public Sink()
        {
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _listener.Listen(16);
            _loop = Task.Run(async () =>
            {
                try
                {
                    while (true)
                    {
                        var client = await _listener.AcceptAsync(_stop.Token);
                        _ = Task.Run(async () =>
                        {
                            using (client)
                            {
                                var buffer = new byte[64 * 1024];
                                try
                                {
                                    int n;
                                    while ((n = await client.ReceiveAsync(buffer, SocketFlags.None, _stop.Token)) > 0)
                                        Interlocked.Add(ref _received, n);
                                }
                                catch (Exception e) when (e is OperationCanceledException or SocketException)
                                {
                                }
                            }
                        });
                    }
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                }
            });
        }

        public string Target => _listener.LocalEndPoint!.ToString()!;

        public long Received => Interlocked.Read(ref _received);

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Dispose();
            await _loop;
            _stop.Dispose();
        }
    }
}
