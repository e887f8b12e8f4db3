using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Skymesh.Node;

namespace Skymesh.Bench;

/// <summary>
/// A <c>skymesh node</c> child process with a node.json of its own in a temporary directory: one UDP interface
/// and the local API, both on ports of the kernel's choosing on 127.0.0.1. Killed (and its directory removed)
/// on dispose.
/// </summary>
internal sealed class NodeProcess : IAsyncDisposable
{
    private readonly ChildProcess _process;
    private readonly string _directory;

    private NodeProcess(string name, ChildProcess process, string directory, NodeApiClient api, string address, IPEndPoint udp)
    {
        Name = name;
        _process = process;
        _directory = directory;
        Api = api;
        Address = address;
        Udp = udp;
    }

    public string Name { get; }

    public int ProcessId => _process.Id;

    public NodeApiClient Api { get; }

    /// <summary>The node's address (64 hex digits).</summary>
    public string Address { get; }

    /// <summary>Where its UDP interface listens.</summary>
    public IPEndPoint Udp { get; }

    public static Task<NodeProcess> StartAsync(
        SkymeshLaunch launch, string name, bool encrypt, IReadOnlyList<string> exits, TextWriter output, TimeSpan timeout, CancellationToken cancellationToken) =>
        StartAsync(launch, name, encrypt, exits, output, timeout, mtu: null, linkRecovery: true, cancellationToken);

    /// <param name="mtu">The UDP interface's MTU (node.json's default, the largest frame on loopback, when null).</param>
    public static async Task<NodeProcess> StartAsync(
        SkymeshLaunch launch, string name, bool encrypt, IReadOnlyList<string> exits, TextWriter output, TimeSpan timeout, int? mtu, bool linkRecovery, CancellationToken cancellationToken)
    {
        var directory = Directory.CreateTempSubdirectory("skymesh-bench-node-").FullName;
        var config = Path.Combine(directory, "node.json");
        var json = new Dictionary<string, object>
        {
            ["dataDir"] = "state",
            ["api"] = "127.0.0.1:0",
            ["encrypt"] = encrypt,
            ["linkRecovery"] = linkRecovery,
            ["interfaces"] = new[] { mtu is { } m
                ? new Dictionary<string, object> { ["type"] = "udp", ["listen"] = "127.0.0.1:0", ["mtu"] = m }
                : new Dictionary<string, object> { ["type"] = "udp", ["listen"] = "127.0.0.1:0" } },
            ["exits"] = exits,
        };
        await File.WriteAllTextAsync(config, JsonSerializer.Serialize(json), cancellationToken);

        var info = new ProcessStartInfo(launch.FileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in launch.Prefix)
            info.ArgumentList.Add(argument);
        foreach (var argument in new[] { "node", "--config", config, "--log-level", "Warning" })
            info.ArgumentList.Add(argument);
        var api = new TaskCompletionSource<IPEndPoint>(TaskCreationOptions.RunContinuationsAsynchronously);
        ChildProcess process;
        try
        {
            process = new ChildProcess(name, info, output, line =>
            {
                // "  local API:  http://127.0.0.1:PORT/api/node   metrics: …"
                const string marker = "local API:  http://";
                var at = line.IndexOf(marker, StringComparison.Ordinal);
                if (at < 0)
                    return;
                var rest = line.AsSpan(at + marker.Length);
                var slash = rest.IndexOf('/');
                if (slash > 0 && IPEndPoint.TryParse(rest[..slash], out var endPoint))
                    api.TrySetResult(endPoint);
            });
        }
        catch
        {
            DeleteDirectory(directory);
            throw;
        }
        NodeApiClient? client = null;
        try
        {
            var endPoint = await process.WaitForAsync(api.Task, timeout, cancellationToken);
            client = new NodeApiClient(endPoint.ToString(), timeout);
            var status = await client.StatusAsync(cancellationToken);
            var nic = (await client.InterfacesAsync(cancellationToken)).First();
            if (!IPEndPoint.TryParse(nic.Local, out var udp))
                throw new BenchException($"{name}: cannot read its UDP address from \"{nic.Local}\".");
            return new NodeProcess(name, process, directory, client, status.Address, udp);
        }
        catch
        {
            client?.Dispose();
            await process.DisposeAsync();
            DeleteDirectory(directory);
            throw;
        }
    }

    /// <summary>
    /// Links this node to <paramref name="next"/> through its local API (it starts the handshake), and waits until
    /// <paramref name="next"/> has the link up too (the answering side completes the handshake a moment later).
    /// </summary>
    public Task LinkToAsync(NodeProcess next, CancellationToken cancellationToken) => LinkToAsync(next, next.Udp, cancellationToken);

    /// <summary>Links this node to <paramref name="next"/> by sending to <paramref name="via"/> (an impairing relay in front of it).</summary>
    public async Task LinkToAsync(NodeProcess next, IPEndPoint via, CancellationToken cancellationToken)
    {
        await Api.ConnectAsync(null, via.ToString(), next.Address, cancellationToken);
        await next.WaitForLinkAsync(Address, cancellationToken);
    }

    /// <summary>Waits until this node has a link up to <paramref name="peer"/>.</summary>
    public async Task WaitForLinkAsync(string peer, CancellationToken cancellationToken)
    {
        while (!(await Api.LinksAsync(cancellationToken)).Any(l => l.Peer == peer && l.State == Mesh.Links.LinkState.Up))
            await Task.Delay(5, cancellationToken);
    }

    /// <summary>One counter of the node's /metrics (the sum over its label sets); null when absent.</summary>
    public async Task<double?> MetricAsync(string name, CancellationToken cancellationToken)
    {
        var text = await Api.MetricsAsync(cancellationToken);
        double? sum = null;
        foreach (var line in text.Split('\n'))
        {
            if (!line.StartsWith(name, StringComparison.Ordinal) || line.Length == name.Length || (line[name.Length] != ' ' && line[name.Length] != '{'))
                continue;
            var space = line.LastIndexOf(' ');
            if (double.TryParse(line.AsSpan(space + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
                sum = (sum ?? 0) + value;
        }
        return sum;
    }

    public double CpuSeconds() => ProcessProbe.CpuTime(ProcessId)?.TotalSeconds ?? double.NaN;

    public async ValueTask DisposeAsync()
    {
        Api.Dispose();
        await _process.DisposeAsync();
        DeleteDirectory(_directory);
    }

    private static void DeleteDirectory(string directory)
    {
        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
