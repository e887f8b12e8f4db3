using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Bench;

/// <summary>A server under test: where it listens, which protocol it speaks, and which process it is.</summary>
internal abstract class BenchTarget : IAsyncDisposable
{
    protected BenchTarget(WireDialect dialect, IPEndPoint endPoint, int? processId, string mode)
    {
        Dialect = dialect;
        EndPoint = endPoint;
        ProcessId = processId;
        Mode = mode;
    }

    public WireDialect Dialect { get; }

    public string Name => Dialect.TargetName;

    public IPEndPoint EndPoint { get; }

    /// <summary>The process to read CPU time and memory of; null when unknown.</summary>
    public int? ProcessId { get; }

    /// <summary>process, inproc, external.</summary>
    public string Mode { get; }

    /// <summary>True when the target shares this process (its CPU time cannot be told from the generator's).</summary>
    public bool InProcess => Mode == "inproc";

    public abstract ValueTask DisposeAsync();

    public static async Task<BenchTarget> StartInProcessAsync(SsmpBenchOptions options)
    {
        var brokerOptions = new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) };
        if (options.BrokerReceiveBufferSize is { } size)
            brokerOptions.ReceiveBufferSize = size;
        var broker = new SsmpBroker(brokerOptions, options.LoggerFactory ?? NullLoggerFactory.Instance);
        try
        {
            broker.Start();
        }
        catch
        {
            await broker.DisposeAsync();
            throw;
        }
        return new InProcessTarget(broker);
    }

    public static BenchTarget External(IPEndPoint endPoint, int? processId) => new ExternalTarget(endPoint, processId);

    /// <summary>Starts <c>skymesh broker</c> and reads its port from the "listening on" line it logs.</summary>
    public static async Task<BenchTarget> StartBrokerProcessAsync(BrokerLaunch launch, TimeSpan? pingInterval, TextWriter output,
        CancellationToken cancellationToken)
    {
        var info = new ProcessStartInfo(launch.FileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in launch.Arguments)
            info.ArgumentList.Add(argument);
        if (pingInterval is { } interval)
        {
            info.ArgumentList.Add("--ping-interval");
            info.ArgumentList.Add(interval.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        var listening = new TaskCompletionSource<IPEndPoint>(TaskCreationOptions.RunContinuationsAsynchronously);
        var process = new ChildProcess("skymesh broker", info, output, line =>
        {
            const string marker = "listening on ";
            var at = line.IndexOf(marker, StringComparison.Ordinal);
            if (at < 0)
                return;
            var rest = line.AsSpan(at + marker.Length);
            var space = rest.IndexOf(' ');
            if (IPEndPoint.TryParse(space < 0 ? rest : rest[..space], out var endPoint))
                listening.TrySetResult(endPoint);
        });
        try
        {
            var endPoint = await process.WaitForAsync(listening.Task, TimeSpan.FromSeconds(30), cancellationToken);
            return new ProcessTarget(WireDialect.Ssmp, endPoint, process, "process");
        }
        catch
        {
            await process.DisposeAsync();
            throw;
        }
    }

    /// <summary>Starts <c>nats-server</c> on a free loopback port and waits until it accepts connections.</summary>
    public static async Task<BenchTarget> StartNatsAsync(string path, TimeSpan? pingInterval, TextWriter output, CancellationToken cancellationToken)
    {
        var executable = HostTools.FindExecutable(path);
        if (executable is null && path == "nats-server")
        {
            await HostTools.InstallDebianPackageAsync("nats-server", output, cancellationToken);
            executable = HostTools.FindExecutable(path);
        }
        if (executable is null)
        {
            throw new BenchException(
                $"'{path}' was not found. Install it (Debian: apt-get update && apt-get install -y nats-server) or give its path with --nats-server.");
        }
        var port = HostTools.FreeLoopbackPort();
        var info = new ProcessStartInfo(executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "-a", "127.0.0.1", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            info.ArgumentList.Add(argument);
        string? config = null;
        if (pingInterval is { } interval)
        {
            // nats-server takes its PING interval only from a configuration file.
            config = Path.Combine(Path.GetTempPath(), $"skymesh-bench-nats-{Environment.ProcessId}-{port}.conf");
            File.WriteAllText(config, $"ping_interval: \"{(int)interval.TotalSeconds}s\"\n");
            info.ArgumentList.Add("-c");
            info.ArgumentList.Add(config);
        }
        var process = new ChildProcess("nats-server", info, output, _ => { });
        try
        {
            var endPoint = new IPEndPoint(IPAddress.Loopback, port);
            await process.WaitForAsync(HostTools.WaitUntilListeningAsync(endPoint, cancellationToken), TimeSpan.FromSeconds(30), cancellationToken);
            return new ProcessTarget(WireDialect.Nats, endPoint, process, "process");
        }
        catch
        {
            await process.DisposeAsync();
            throw;
        }
        finally
        {
            // Read once, at start.
            if (config is not null)
                File.Delete(config);
        }
    }

    /// <summary>
    /// Starts a cluster of <paramref name="servers"/> nats-server processes on loopback, each routed to every other,
    /// and waits until every route is up. Dispose the result to stop them all.
    /// </summary>
    public static async Task<NatsClusterProcesses> StartNatsClusterAsync(int servers, TextWriter output, CancellationToken cancellationToken)
    {
        var executable = HostTools.FindExecutable("nats-server");
        if (executable is null)
        {
            await HostTools.InstallDebianPackageAsync("nats-server", output, cancellationToken);
            executable = HostTools.FindExecutable("nats-server") ?? throw new BenchException("nats-server was not found. Install it (Debian: apt-get install -y nats-server).");
        }
        var clientPorts = Enumerable.Range(0, servers).Select(_ => HostTools.FreeLoopbackPort()).ToArray();
        var routePorts = Enumerable.Range(0, servers).Select(_ => HostTools.FreeLoopbackPort()).ToArray();
        var cluster = new NatsClusterProcesses(clientPorts);
        try
        {
            var routed = new List<Task>();
            for (var i = 0; i < servers; i++)
            {
                var info = new ProcessStartInfo(executable) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
                var c = System.Globalization.CultureInfo.InvariantCulture;
                foreach (var argument in new[] { "-a", "127.0.0.1", "-p", clientPorts[i].ToString(c), "-n", $"skymesh-bench-{i}", "--cluster_name", "skymesh-bench",
                    "--cluster", $"nats://127.0.0.1:{routePorts[i]}", "--routes", string.Join(',', routePorts.Where((_, j) => j != i).Select(p => $"nats://127.0.0.1:{p}")) })
                    info.ArgumentList.Add(argument);
                var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var routes = 0;
                cluster.Processes.Add(new ChildProcess($"nats-server {i}", info, output, line =>
                {
                    if (line.Contains("Route connection created", StringComparison.Ordinal) && Interlocked.Increment(ref routes) >= servers - 1)
                        ready.TrySetResult();
                }));
                routed.Add(ready.Task);
            }
            await Task.WhenAll(routed).WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    private sealed class InProcessTarget(SsmpBroker broker)
        : BenchTarget(WireDialect.Ssmp, new IPEndPoint(IPAddress.Loopback, broker.LocalEndPoint.Port), Environment.ProcessId, "inproc")
    {
        public override ValueTask DisposeAsync() => broker.DisposeAsync();
    }

    private sealed class ExternalTarget(IPEndPoint endPoint, int? processId)
        : BenchTarget(WireDialect.Ssmp, endPoint, processId, "external")
    {
        public override ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    private sealed class ProcessTarget(WireDialect dialect, IPEndPoint endPoint, ChildProcess process, string mode)
        : BenchTarget(dialect, endPoint, process.Id, mode)
    {
        public override ValueTask DisposeAsync() => process.DisposeAsync();
    }
}

/// <summary>A NATS cluster started for a benchmark: its servers' client URLs.</summary>
public sealed class NatsClusterProcesses(int[] clientPorts) : IAsyncDisposable
{
    internal List<ChildProcess> Processes { get; } = [];

    public IReadOnlyList<string> Urls => [.. clientPorts.Select(p => $"nats://127.0.0.1:{p}")];

    public async ValueTask DisposeAsync()
    {
        foreach (var process in Processes)
            await process.DisposeAsync();
    }
}

/// <summary>
/// A server started for the benchmark. Its output is drained all the time (a full pipe would stall its logging);
/// warnings and errors are shown, and the last lines are kept to explain a failed start.
/// </summary>
internal sealed class ChildProcess : IAsyncDisposable
{
    // Children still running; killed when this process exits by any path that runs ProcessExit (an error, SIGTERM),
    // so that no server or node outlives the bench.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<ChildProcess, byte> Live = new();

    static ChildProcess()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var child in Live.Keys)
                child.Kill();
        };
    }

    private readonly string _name;
    private readonly Process _process;
    private readonly Queue<string> _recent = new();
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ChildProcess(string name, ProcessStartInfo info, TextWriter output, Action<string> onLine)
    {
        _name = name;
        _process = new Process { StartInfo = info, EnableRaisingEvents = true };
        void OnData(object sender, DataReceivedEventArgs e)
        {
            if (e.Data is not { } line)
                return;
            lock (_recent)
            {
                _recent.Enqueue(line);
                if (_recent.Count > 20)
                    _recent.Dequeue();
            }
            // (A cluster's servers start one after another: a route to one not yet listening is retried by itself.)
            if ((line.Contains("warn", StringComparison.OrdinalIgnoreCase) || line.Contains("fail", StringComparison.OrdinalIgnoreCase)
                || line.Contains("[ERR]", StringComparison.Ordinal) || line.Contains("[WRN]", StringComparison.Ordinal))
                && !line.Contains("Error trying to connect to route", StringComparison.Ordinal))
            {
                lock (output)
                    output.WriteLine($"  {_name}: {line}");
            }
            onLine(line);
        }
        _process.OutputDataReceived += OnData;
        _process.ErrorDataReceived += OnData;
        _process.Exited += (_, _) => _exited.TrySetResult();
        try
        {
            _process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            _process.Dispose();
            throw new BenchException($"Cannot start {_name} ({info.FileName}): {e.Message}", e);
        }
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        Id = _process.Id;
        Live[this] = 0;
    }

    public string Name => _name;

    /// <summary>Waits until the process has exited and its output is read; its exit code. Kills it after <paramref name="timeout"/>.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        try
        {
            await _process.WaitForExitAsync(cancellationToken).WaitAsync(timeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            Kill();
            throw new BenchException($"{_name} did not finish within {timeout.TotalSeconds:0} s. Its last output: {RecentOutput()}");
        }
        return _process.ExitCode;
    }

    public bool HasExited => _exited.Task.IsCompleted;

    /// <summary>The last lines the process wrote (stdout and stderr), oldest first.</summary>
    public string RecentOutput()
    {
        lock (_recent)
            return string.Join(" | ", _recent);
    }

    private void Kill()
    {
        try
        {
            if (!_process.HasExited)
                _process.Kill(entireProcessTree: true);
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
        }
    }

    public int Id { get; }

    /// <summary>Waits for <paramref name="ready"/>, failing early with the server's own words if it exits first.</summary>
    public async Task<T> WaitForAsync<T>(Task<T> ready, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var first = await Task.WhenAny(ready, _exited.Task, Task.Delay(timeout, cancellationToken));
        if (first == ready)
            return await ready;
        cancellationToken.ThrowIfCancellationRequested();
        string recent;
        lock (_recent)
            recent = string.Join(" | ", _recent);
        var what = first == _exited.Task ? "exited" : $"was not ready within {timeout.TotalSeconds:0} s";
        throw new BenchException($"{_name} {what}. Its last output: {(recent.Length > 0 ? recent : "(none)")}");
    }

    public async ValueTask DisposeAsync()
    {
        Live.TryRemove(this, out _);
        try
        {
            if (!_process.HasExited)
                _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException or System.ComponentModel.Win32Exception)
        {
        }
        _process.Dispose();
    }
}
