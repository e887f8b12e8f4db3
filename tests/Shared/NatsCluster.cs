using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Skymesh.Tests.Shared;

/// <summary>
/// A real three-server nats-server cluster on loopback ports (Debian's <c>nats-server</c>, which test.sh installs):
/// each server routes to the other two. Servers can be killed one by one, as a machine failure would.
/// </summary>
public sealed partial class NatsCluster : IAsyncDisposable
{
    private readonly Process?[] _servers;
    private readonly string _log = Directory.CreateTempSubdirectory("skymesh-nats-").FullName;

    private NatsCluster(int count)
    {
        ClientPorts = [.. Enumerable.Range(0, count).Select(_ => FreePort())];
        RoutePorts = [.. Enumerable.Range(0, count).Select(_ => FreePort())];
        _servers = new Process?[count];
    }

    public int[] ClientPorts { get; }

    public int[] RoutePorts { get; }

    public string Url(int server) => $"nats://127.0.0.1:{ClientPorts[server]}";

    public IReadOnlyList<string> Urls => [.. ClientPorts.Select((_, i) => Url(i))];

    /// <summary>Starts the servers and waits until every one has its routes to all the others.</summary>
    /// <param name="config">More configuration for server i (a leafnodes block, say), in nats-server's file syntax.</param>
    public static async Task<NatsCluster> StartAsync(int count = 3, TimeSpan? timeout = null, Func<int, string>? config = null)
    {
        var binary = new[] { "/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("nats-server is not installed (test.sh installs Debian's nats-server)");
        var cluster = new NatsCluster(count);
        try
        {
            var ready = new List<Task>();
            for (var i = 0; i < count; i++)
            {
                var routes = string.Join(',', cluster.RoutePorts.Where((_, j) => j != i).Select(p => $"nats://127.0.0.1:{p}"));
                var info = new ProcessStartInfo(binary)
                {
                    RedirectStandardError = true,
                    RedirectStandardOutput = true,
                    UseShellExecute = false,
                };
                if (config is not null)
                {
                    var file = Path.Combine(cluster._log, $"server-{i}.conf");
                    File.WriteAllText(file, config(i));
                    info.ArgumentList.Add("-c");
                    info.ArgumentList.Add(file);
                }
                foreach (var a in new[] { "-a", "127.0.0.1", "-p", cluster.ClientPorts[i].ToString(System.Globalization.CultureInfo.InvariantCulture), "-n", $"skymesh-test-{i}" })
                    info.ArgumentList.Add(a);
                if (count > 1)
                {
                    foreach (var a in new[] { "--cluster_name", "skymesh-test", "--cluster", $"nats://127.0.0.1:{cluster.RoutePorts[i]}", "--routes", routes })
                        info.ArgumentList.Add(a);
                }
                var process = new Process { StartInfo = info };
                var routed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var links = 0;
                var log = Path.Combine(cluster._log, $"server-{i}.log");
                void OnLine(string? line)
                {
                    if (line is null)
                        return;
                    lock (process)
                        File.AppendAllText(log, line + "\n");
                    // Ready when it listens for clients and has a route to every other server.
                    if (line.Contains("Server is ready", StringComparison.Ordinal) && count == 1)
                        routed.TrySetResult();
                    if (line.Contains("Route connection created", StringComparison.Ordinal) && Interlocked.Increment(ref links) >= count - 1)
                        routed.TrySetResult();
                }
                process.ErrorDataReceived += (_, e) => OnLine(e.Data);
                process.OutputDataReceived += (_, e) => OnLine(e.Data);
                process.Start();
                process.BeginErrorReadLine();
                process.BeginOutputReadLine();
                cluster._servers[i] = process;
                ready.Add(routed.Task);
            }
            await Task.WhenAll(ready).WaitAsync(timeout ?? TimeSpan.FromSeconds(30));
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <summary>Kills one server with SIGKILL: its clients lose their connection and must move to another.</summary>
    public async Task KillAsync(int server)
    {
        if (_servers[server] is not { } process)
            return;
        _servers[server] = null;
        _ = Kill(process.Id, 9);
        await process.WaitForExitAsync();
        process.Dispose();
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    public static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    public async ValueTask DisposeAsync()
    {
        for (var i = 0; i < _servers.Length; i++)
            await KillAsync(i);
        try
        {
            Directory.Delete(_log, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
