using System.Net;
using System.Net.Sockets;
using Skymesh.Mesh.Links;
using Skymesh.Node.Hosting;
using Skymesh.Tests;

namespace Skymesh.Node.Tests;

/// <summary>A running node with its local API, in this process, on loopback UDP.</summary>
public sealed class TestNode : IAsyncDisposable
{
    private readonly string _dir;
    private int _disposed;

    private TestNode(string dir, NodeHost host, Control.ControlAgent? agent, CapturingLoggerFactory logs)
    {
        Logs = logs;
        _dir = dir;
        Host = host;
        Agent = agent;
        Client = new NodeApiClient(Api.EndPoint.ToString());
    }

    public NodeHost Host { get; }

    /// <summary>What the node logged: stopping it fails the test if it logged an error.</summary>
    internal CapturingLoggerFactory Logs { get; }

    /// <summary>The control agent as it first logged in (null without a broker).</summary>
    public Control.ControlAgent? Agent { get; }

    public MeshNode Node => Host.Node;

    public NodeApi Api => Host.Api!;

    public NodeApiClient Client { get; }

    public string Address => Node.Address.ToString();

    public IPEndPoint UdpEndPoint => (IPEndPoint)Node.Interfaces.Values.First().LocalEndPoint;

    /// <param name="dir">The data directory of a node restarted (its key, ledger and token); a new one when null.</param>
    /// <param name="bus">A control bus named as node.json's "broker" names it (e.g. <c>nats://127.0.0.1:4222</c>), instead of <paramref name="broker"/>.</param>
    public static async Task<TestNode> StartAsync(string? extraJson = null, string kind = "udp", IPEndPoint? broker = null, string? dir = null, string? bus = null)
    {
        if (broker is not null)
            extraJson += $", \"broker\": \"{broker}\"";
        if (bus is not null)
            extraJson += $", \"broker\": \"{bus}\"";
        dir ??= Directory.CreateTempSubdirectory("skymesh-node-").FullName;
        var json = $$"""
            {
              "api": "127.0.0.1:0",
              "interfaces": [ { "type": "{{kind}}", "listen": "127.0.0.1:0" } ],
              "exits": [ "127.0.0.1:*" ],
              "keepaliveSeconds": 0.2,
              "deadAfterSeconds": 1.5,
              "pathTimeoutSeconds": 4
              {{extraJson}}
            }
            """;
        var logs = new CapturingLoggerFactory();
        var host = await new NodeHostBuilder(NodeOptions.Parse(json, dir)).UseLogging(logs).StartAsync();
        try
        {
            // A node on the bus through neighbours joins once it has links: its test waits for that.
            var agent = broker is null && bus is null or "via-neighbours" ? null : await host.WaitForControlAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(20));
            return new TestNode(dir, host, agent, logs);
        }
        catch
        {
            await host.DisposeAsync();
            throw;
        }
    }

    public async Task<Link> LinkToAsync(TestNode other) =>
        await Node.ConnectAsync(Node.Interfaces.Keys.First(), other.UdpEndPoint, other.Node.Address, CancellationToken.None);

    /// <summary>The node's data directory, to start it again from (<see cref="StopAsync"/>).</summary>
    public string DataDirectory => _dir;

    /// <summary>Stops the node as a process would stop, keeping its data directory for a restart.</summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await StopPartsAsync();
    }

    private async Task StopPartsAsync()
    {
        Client.Dispose();
        await Host.DisposeAsync();
        // A node keeps going through what its peers and its bus do, and says so in warnings; an error is a bug.
        Assert.True(Logs.Errors.IsEmpty, $"node {Address[..16]} logged errors:\n" + string.Join("\n", Logs.Errors));
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await StopPartsAsync();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>A chain of nodes, each linked to the next, with a static path from the first to the last.</summary>
public sealed class Chain : IAsyncDisposable
{
    private Chain(TestNode[] nodes, StaticPath.Result path)
    {
        Nodes = nodes;
        Path = path;
    }

    public TestNode[] Nodes { get; }

    public StaticPath.Result Path { get; }

    public TestNode Source => Nodes[0];

    public TestNode Destination => Nodes[^1];

    /// <param name="maxApps">The source's <c>maxApps</c>, when not the default.</param>
    public static async Task<Chain> StartAsync(int count, string kind = "udp", int? maxApps = null)
    {
        var nodes = new TestNode[count];
        try
        {
            for (var i = 0; i < count; i++)
                nodes[i] = await TestNode.StartAsync(i == 0 && maxApps is { } apps ? $", \"maxApps\": {apps}" : null, kind: kind);
            for (var i = 0; i + 1 < count; i++)
                await nodes[i].LinkToAsync(nodes[i + 1]).WaitAsync(TimeSpan.FromSeconds(20));
            var path = await StaticPath.InstallAsync([.. nodes.Select(n => n.Client)]).WaitAsync(TimeSpan.FromSeconds(20));
            return new Chain(nodes, path);
        }
        catch
        {
            foreach (var node in nodes.Where(n => n is not null))
                await node.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in Nodes)
            await node.DisposeAsync();
    }
}

/// <summary>A TCP server for tests: echoes what it receives, or answers one HTTP request.</summary>
public sealed class TcpTarget : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public TcpTarget(Func<Socket, CancellationToken, Task> serve)
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(64);
        _loop = Task.Run(async () =>
        {
            var running = new List<Task>();
            while (!_stop.IsCancellationRequested)
            {
                Socket client;
                try
                {
                    client = await _listener.AcceptAsync(_stop.Token);
                }
                catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
                {
                    break;
                }
                running.Add(Task.Run(async () =>
                {
                    using (client)
                    {
                        try
                        {
                            await serve(client, _stop.Token);
                        }
                        catch (Exception e) when (e is SocketException or OperationCanceledException or IOException)
                        {
                        }
                    }
                }));
            }
            await Task.WhenAll(running);
        });
    }

    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    public string Target => $"127.0.0.1:{EndPoint.Port}";

    /// <summary>Echoes everything, then closes its side when the client closes its own.</summary>
    public static TcpTarget Echo() => new(async (socket, token) =>
    {
        var buffer = new byte[65536];
        while (true)
        {
            var n = await socket.ReceiveAsync(buffer, SocketFlags.None, token);
            if (n == 0)
                break;
            await socket.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, token);
        }
        socket.Shutdown(SocketShutdown.Send);
    });

    /// <summary>Answers any HTTP request with 200 and <paramref name="body"/>.</summary>
    public static TcpTarget Http(string body) => new(async (socket, token) =>
    {
        var buffer = new byte[8192];
        var request = "";
        while (!request.Contains("\r\n\r\n", StringComparison.Ordinal))
        {
            var n = await socket.ReceiveAsync(buffer, SocketFlags.None, token);
            if (n == 0)
                return;
            request += System.Text.Encoding.ASCII.GetString(buffer, 0, n);
        }
        var bytes = System.Text.Encoding.UTF8.GetBytes(body);
        var head = $"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {bytes.Length}\r\nConnection: close\r\n\r\n";
        await socket.SendAsync(System.Text.Encoding.ASCII.GetBytes(head), SocketFlags.None, token);
        await socket.SendAsync(bytes, SocketFlags.None, token);
        socket.Shutdown(SocketShutdown.Send);
    });

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _loop;
        _stop.Dispose();
    }
}
