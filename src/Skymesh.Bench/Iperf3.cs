using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;

namespace Skymesh.Bench;

/// <summary>One iperf3 client run, from its JSON report (<c>-J</c>).</summary>
internal sealed record IperfResult(double BitsPerSecond, double SenderBitsPerSecond, long Retransmits, double Seconds, CpuSpent Cpu);

/// <summary>iperf3 (Debian package <c>iperf3</c>, installed when missing): a server on loopback and client runs against any port.</summary>
internal sealed class Iperf3 : IAsyncDisposable
{
    private readonly string _executable;
    private readonly ChildProcess _server;
    private readonly TextWriter _output;

    private Iperf3(string executable, ChildProcess server, int port, TextWriter output)
    {
        _executable = executable;
        _server = server;
        Port = port;
        _output = output;
    }

    /// <summary>Seconds at the start of each run that iperf3 leaves out of its figures (<c>-O</c>).</summary>
    public const int OmitSeconds = 2;

    /// <summary>The server's port on 127.0.0.1.</summary>
    public int Port { get; }

    public int ServerProcessId => _server.Id;

    public static async Task<Iperf3> StartServerAsync(string path, TextWriter output, TimeSpan timeout, CancellationToken cancellationToken, string bind = "127.0.0.1")
    {
        var executable = HostTools.FindExecutable(path);
        if (executable is null && path == "iperf3")
        {
            await HostTools.InstallDebianPackageAsync("iperf3", output, cancellationToken);
            executable = HostTools.FindExecutable(path);
        }
        if (executable is null)
        {
            throw new BenchException(
                $"'{path}' was not found. Install it (Debian: apt-get update && apt-get install -y iperf3), give its path with --iperf3, or use --skip-iperf.");
        }
        var port = HostTools.FreeLoopbackPort();
        var info = Info(executable, ["-s", "-B", bind, "-p", port.ToString(CultureInfo.InvariantCulture), "--forceflush"]);
        var listening = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var server = new ChildProcess("iperf3 server", info, output, line =>
        {
            if (line.Contains("listening", StringComparison.OrdinalIgnoreCase))
                listening.TrySetResult(true);
        });
        try
        {
            await server.WaitForAsync(listening.Task, timeout, cancellationToken);
            return new Iperf3(executable, server, port, output);
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Runs <c>iperf3 -c</c> against <paramref name="target"/> for <paramref name="seconds"/> with <paramref name="parallel"/>
    /// streams; the received rate is the report's <c>end.sum_received.bits_per_second</c>. CPU time of
    /// <paramref name="watch"/> (and of the server and client) is taken over the run.
    /// </summary>
    public async Task<IperfResult> RunClientAsync(
        IPEndPoint target, int seconds, int parallel, IEnumerable<(string Name, int Pid)> watch, TimeSpan timeout, CancellationToken cancellationToken,
        string? netns = null)
    {
        var arguments = new List<string>
        {
            "-c", target.Address.ToString(), "-p", target.Port.ToString(CultureInfo.InvariantCulture),
            "-t", seconds.ToString(CultureInfo.InvariantCulture), "-J",
            // The first seconds are not counted: TCP's slow start, and the nodes' code being compiled again with profile data.
            "-O", OmitSeconds.ToString(CultureInfo.InvariantCulture),
        };
        if (parallel > 1)
            arguments.AddRange(["-P", parallel.ToString(CultureInfo.InvariantCulture)]);
        var report = new StringBuilder();
        var started = Stopwatch.GetTimestamp();
        // In a network namespace: `ip netns exec` replaces itself with iperf3, so the process id is iperf3's.
        var info = netns is null ? Info(_executable, arguments) : Info("ip", ["netns", "exec", netns, _executable, .. arguments]);
        await using var client = new ChildProcess("iperf3 client", info, _output, line =>
        {
            lock (report)
                report.AppendLine(line);
        });
        var cpu = CpuWindow.Start([.. watch, ("iperf3 server", _server.Id), ("iperf3 client", client.Id)]);
        var exit = await client.WaitForExitAsync(TimeSpan.FromSeconds(seconds + OmitSeconds) + timeout, cancellationToken);
        var spent = cpu.Stop();
        string text;
        lock (report)
            text = report.ToString();
        return Parse(text, exit, Stopwatch.GetElapsedTime(started).TotalSeconds, spent);
    }

    private static IperfResult Parse(string text, int exit, double seconds, CpuSpent cpu)
    {
        // -J prints one JSON document; stderr (merged here) may add a line or two before or after it.
        var open = text.IndexOf('{', StringComparison.Ordinal);
        var close = text.LastIndexOf('}');
        if (open < 0 || close < open)
            throw new BenchException($"iperf3 client exited with {exit} and printed no JSON report: {text.Trim()}");
        try
        {
            using var document = JsonDocument.Parse(text.AsMemory(open, close - open + 1));
            var root = document.RootElement;
            if (root.TryGetProperty("error", out var error))
                throw new BenchException($"iperf3: {error.GetString()}");
            var end = root.GetProperty("end");
            var received = end.GetProperty("sum_received").GetProperty("bits_per_second").GetDouble();
            var sentSum = end.GetProperty("sum_sent");
            var sent = sentSum.GetProperty("bits_per_second").GetDouble();
            var retransmits = sentSum.TryGetProperty("retransmits", out var r) ? r.GetInt64() : 0;
            // The client has exited before its CPU time could be read from /proc: take it from its own report.
            if (end.TryGetProperty("cpu_utilization_percent", out var utilization) && utilization.TryGetProperty("host_total", out var host)
                && sentSum.TryGetProperty("seconds", out var ran))
            {
                var clientSeconds = host.GetDouble() / 100 * ran.GetDouble();
                cpu = cpu with { Children = [.. cpu.Children.Select(c => c.Name == "iperf3 client" ? (c.Name, clientSeconds) : c)] };
            }
            return new IperfResult(received, sent, retransmits, seconds, cpu);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new BenchException($"iperf3 client exited with {exit}; its report could not be read ({e.Message}).", e);
        }
    }

    private static ProcessStartInfo Info(string executable, IEnumerable<string> arguments)
    {
        var info = new ProcessStartInfo(executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
            info.ArgumentList.Add(argument);
        return info;
    }

    public ValueTask DisposeAsync() => _server.DisposeAsync();
}
