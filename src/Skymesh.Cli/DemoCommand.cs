using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Skymesh.Mesh.Links;
using Skymesh.Node;

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
        var nodes = new Option<int>("--nodes") { Description = "Nodes in the chain (2 to 10): the path has nodes-2 relays.", DefaultValueFactory = _ => 4 };
        var duration = new Option<double>("--duration") { Description = "Seconds to run; 0 runs until Ctrl+C.", DefaultValueFactory = _ => 20 };
        var rate = new Option<double>("--rate") { Description = "Megabytes per second of demo traffic through the path (0: as fast as it goes).", DefaultValueFactory = _ => 4 };
        var socks = new Option<string>("--socks") { Description = "Where the demo's SOCKS5 server listens (a free port is taken if this one is busy).", DefaultValueFactory = _ => "127.0.0.1:1080" };
        var command = new Command("demo", "Start a mesh of nodes on loopback UDP with a multi-hop path and live traffic, and show what flows where.") { nodes, duration, rate, socks };
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
        var mesh = new List<(MeshNode Node, NodeApi Api, NodeApiClient Client)>();
        try
        {
            Console.WriteLine($"Starting {count} nodes on loopback UDP (keys and state in {root})...");
            for (var i = 0; i < count; i++)
            {
                var name = ((char)('a' + i)).ToString();
                var json = $$"""
                    {
                      "dataDir": "{{name}}",
                      "api": "127.0.0.1:0",
                      "interfaces": [ { "name": "udp0", "type": "udp", "listen": "127.0.0.1:0" } ],
                      "exits": [ {{(i == count - 1 ? "\"*:*\"" : "")}} ]
                    }
                    """;
                var options = NodeOptions.Parse(json, root);
                var node = MeshNode.Start(options, logging);
                var api = await NodeApi.StartAsync(node, options.Api);
                mesh.Add((node, api, new NodeApiClient(api.EndPoint.ToString())));
            }
            var names = mesh.Select((m, i) => $"{(char)('A' + i)} {Short(m.Node.Address.ToString())}").ToList();
            for (var i = 0; i < count; i++)
                Console.WriteLine($"  node {names[i]}  udp {mesh[i].Node.Interfaces.Values.First().LocalEndPoint}  api {mesh[i].Api.EndPoint}{(i == count - 1 ? "  (exit: connects to any target)" : "")}");
            for (var i = 0; i + 1 < count; i++)
            {
                var link = await mesh[i].Node.ConnectAsync("udp0", mesh[i + 1].Node.Interfaces.Values.First().LocalEndPoint, mesh[i + 1].Node.Address, signals.Token);
                Console.WriteLine($"  link {(char)('A' + i)} <-> {(char)('A' + i + 1)} up (signed handshake, {(link.Encrypted ? "ChaCha20-Poly1305 frames" : "plain frames")})");
            }
            var path = await StaticPath.InstallAsync([.. mesh.Select(m => m.Client)], signals.Token);
            Console.WriteLine($"  path A -> {string.Join(" -> ", Enumerable.Range(1, count - 1).Select(i => (char)('A' + i)))}: labels reserved and installed on every hop, both ways, end-to-end encrypted");

            var source = mesh[0].Node;
            var destination = mesh[^1].Node;
            await using var target = new Sink();
            var (_, forward) = source.StartForward(new IPEndPoint(IPAddress.Loopback, 0), destination.Address, target.Target);
            Skymesh.Mesh.Apps.Socks5Server socks;
            try
            {
                (_, socks) = source.StartSocks(socksAt, destination.Address);
            }
            catch (InvalidOperationException) when (socksAt.Port != 0)
            {
                (_, socks) = source.StartSocks(new IPEndPoint(socksAt.Address, 0), destination.Address);
            }
            Console.WriteLine();
            Console.WriteLine("Try it from another terminal while the demo runs:");
            Console.WriteLine($"    curl --socks5-hostname {socks.LocalEndPoint} http://example.org/      # leaves the mesh at {(char)('A' + count - 1)}");
            Console.WriteLine($"    dotnet run --project src/Skymesh.Cli -- links --api {mesh[1].Api.EndPoint}   # node B's links");
            Console.WriteLine($"    dotnet run --project src/Skymesh.Cli -- ping {destination.Address} --api {mesh[0].Api.EndPoint}");
            Console.WriteLine($"    curl http://{mesh[1].Api.EndPoint}/metrics");
            Console.WriteLine();
            Console.WriteLine($"Traffic: a TCP connection into A's port forward {forward.LocalEndPoint} carried to a sink next to {(char)('A' + count - 1)}, plus a ping each second.");

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(signals.Token);
            if (seconds > 0)
                stop.CancelAfter(TimeSpan.FromSeconds(seconds));
            var sender = Task.Run(() => SendAsync(forward.LocalEndPoint, megabytes, stop.Token));
            var previous = mesh.Select(m => m.Node.Switch.Forwarded).ToArray();
            var previousBytes = 0L;
            var clock = Stopwatch.StartNew();
            var second = 0;
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), stop.Token);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                second++;
                string ping;
                try
                {
                    ping = $"{(await source.PingAsync(destination.Address, 64, TimeSpan.FromSeconds(1), stop.Token)).TotalMilliseconds:0.00} ms";
                }
                catch (Exception e) when (e is NodeRequestException or OperationCanceledException)
                {
                    ping = "no answer";
                }
                var bytes = target.Received;
                var relays = string.Join("  ", Enumerable.Range(1, count - 2).Select(i =>
                {
                    var now = mesh[i].Node.Switch.Forwarded;
                    var line = $"{(char)('A' + i)} switched {now - previous[i],7:N0} msgs";
                    previous[i] = now;
                    return line;
                }));
                Console.WriteLine($"{second,3}s  A -> {(char)('A' + count - 1)}: {(bytes - previousBytes) / 1e6,6:0.00} MB/s   ping {ping,9}   {relays}");
                previousBytes = bytes;
            }
            await sender;
            Console.WriteLine();
            var linkLines = mesh.Take(count - 1).Select((m, i) =>
            {
                var link = m.Node.Switch.Links.First(l => l.Peer == mesh[i + 1].Node.Address).Info();
                return $"  link {(char)('A' + i)} -> {(char)('A' + i + 1)}: {link.FramesSent:N0} frames carried {link.MessagesSent:N0} messages ({link.MessagesSent / (double)Math.Max(1, link.FramesSent):0.0} per frame), {link.BytesSent / 1e6:0.0} MB, rtt {link.Rtt?.TotalMilliseconds:0.00} ms";
            });
            Console.WriteLine($"Carried {target.Received / 1e6:0.0} MB from A to {(char)('A' + count - 1)} in {clock.Elapsed.TotalSeconds:0} s; SOCKS connections: {socks.Accepted}.");
            foreach (var line in linkLines)
                Console.WriteLine(line);
            return 0;
        }
        finally
        {
            // Paths first, so that no end reports its path lost while the nodes stop one by one.
            foreach (var (node, _, _) in mesh)
            {
                foreach (var path in node.Paths)
                    await node.RemovePathAsync(path.Id);
            }
            foreach (var (node, api, client) in mesh)
            {
                client.Dispose();
                await api.DisposeAsync();
                await node.DisposeAsync();
            }
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Writes to the forward at <paramref name="megabytes"/> MB/s until stopped.</summary>
    private static async Task SendAsync(IPEndPoint forward, double megabytes, CancellationToken cancellationToken)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var chunk = new byte[64 * 1024];
        Random.Shared.NextBytes(chunk);
        try
        {
            await socket.ConnectAsync(forward, cancellationToken);
            var clock = Stopwatch.StartNew();
            long sent = 0;
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
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
        }
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
