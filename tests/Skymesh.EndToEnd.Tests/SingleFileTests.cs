using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// The self-contained single-file executable publish.sh makes (test.sh publishes linux-x64 and names it in
/// SKYMESH_SINGLE_FILE): it says what it is, runs a broker and nodes on its own, with no .NET installed beside it, and
/// runs as a systemd service of Type=notify (READY once the node is up, STOPPING when asked to stop).
/// </summary>
public sealed class SingleFileTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(90);
    private readonly string _dir = Directory.CreateTempSubdirectory("skymesh-single-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static string Executable =>
        Environment.GetEnvironmentVariable("SKYMESH_SINGLE_FILE") is { Length: > 0 } path
            ? path
            : throw Xunit.Sdk.SkipException.ForSkip("no single file to run (test.sh publishes one and sets SKYMESH_SINGLE_FILE)");

    private static string Repository
    {
        get
        {
            var dir = AppContext.BaseDirectory;
            while (!File.Exists(Path.Combine(dir, "Skymesh.slnx")))
                dir = Path.GetDirectoryName(dir) ?? throw new InvalidOperationException("not inside the repository");
            return dir;
        }
    }

    /// <summary>Runs a program to its end with no .NET on its PATH and no DOTNET_ROOT: what a user without the SDK has.</summary>
    private static async Task<(int Code, string Output)> RunAsync(string program, IEnumerable<string> arguments, IDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo(program, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        info.Environment["PATH"] = "/usr/local/bin:/usr/bin:/bin";
        info.Environment.Remove("DOTNET_ROOT");
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
            info.Environment[key] = value;
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync(Ct);
        var errors = process.StandardError.ReadToEndAsync(Ct);
        await process.WaitForExitAsync(Ct).WaitAsync(Bound, Ct);
        return (process.ExitCode, await output + await errors);
    }

    [Fact]
    public async Task It_names_its_version_commit_runtime_and_platform()
    {
        var (code, output) = await RunAsync(Executable, ["--version"]);
        Assert.Equal(0, code);
        Assert.Matches(@"^skymesh \d+\.\d+\.\d+ \(commit [0-9a-f]{12}, \.NET 10\.\d+\.\d+, linux-x64\)$", output.Trim());
        var (gitCode, head) = await RunAsync("git", ["-C", Repository, "rev-parse", "HEAD"]);
        if (gitCode == 0)
            Assert.Contains($"commit {head.Trim()[..12]},", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_tool_package_beside_it_installs_and_runs_as_a_dotnet_tool()
    {
        var source = Path.GetDirectoryName(Executable)!;
        Assert.NotEmpty(Directory.GetFiles(source, "skymesh.*.nupkg"));
        var tools = Path.Combine(_dir, "tools");
        var info = new ProcessStartInfo("dotnet", ["tool", "install", "--tool-path", tools, "--add-source", source, "skymesh"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using (var install = Process.Start(info)!)
        {
            var output = install.StandardOutput.ReadToEndAsync(Ct);
            var errors = install.StandardError.ReadToEndAsync(Ct);
            await install.WaitForExitAsync(Ct).WaitAsync(Bound, Ct);
            Assert.True(install.ExitCode == 0, await output + await errors);
        }
        var tool = Path.Combine(tools, "skymesh");
        var installed = new ProcessStartInfo(tool, ["--version"]) { RedirectStandardOutput = true };
        using var run = Process.Start(installed)!;
        var version = await run.StandardOutput.ReadToEndAsync(Ct);
        await run.WaitForExitAsync(Ct).WaitAsync(Bound, Ct);
        Assert.Equal(0, run.ExitCode);
        Assert.StartsWith("skymesh ", version, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_three_node_sample_runs_on_the_single_file_alone()
    {
        var (code, output) = await RunAsync("bash", [Path.Combine(Repository, "samples", "three-nodes", "run.sh")],
            new Dictionary<string, string> { ["SKYMESH"] = Executable });
        Assert.True(code == 0, output);
        Assert.Contains("3 sent, 3 answered, 0% lost", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_demo_runs_on_the_single_file_alone()
    {
        var (code, output) = await RunAsync(Executable, ["demo", "--duration", "3"]);
        Assert.True(code == 0, output);
        Assert.Contains("the path is up; forward failures: 0", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_node_under_systemd_says_ready_once_it_is_up_and_stopping_when_asked_to_stop()
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root" || !File.Exists("/usr/bin/unshare"))
            Assert.Skip("needs root and unshare, to give the node the process id a service has in its own namespace");
        var (init, initOutput) = await RunAsync(Executable, ["init", "--data-dir", Path.Combine(_dir, "node"), "--listen", $"127.0.0.1:{FreePort(SocketType.Dgram)}", "--api", $"127.0.0.1:{FreePort(SocketType.Stream)}"]);
        Assert.True(init == 0, initOutput);

        // systemd's side of Type=notify: a datagram socket named in NOTIFY_SOCKET, where the service writes READY=1 and
        // STOPPING=1. The node runs as process 1 of its own process namespace, as a service's main process does in a
        // container, which is how .NET knows it runs under a service manager.
        var socketPath = Path.Combine(_dir, "notify.sock");
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(socketPath));
        var info = new ProcessStartInfo("unshare", ["--pid", "--fork", "--mount-proc", "--kill-child", Executable, "node", "--config", Path.Combine(_dir, "node", "node.json")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        info.Environment["NOTIFY_SOCKET"] = socketPath;
        using var service = Process.Start(info)!;
        var output = service.StandardOutput.ReadToEndAsync(Ct);
        var errors = service.StandardError.ReadToEndAsync(Ct);
        try
        {
            var ready = await ReceiveAsync(notify);
            Assert.Contains("READY=1", ready, StringComparison.Ordinal);
            // Ready means up: the local API answers.
            var (status, statusOutput) = await RunAsync(Executable, ["status", "--api", ApiOf(Path.Combine(_dir, "node", "node.json")), "--data-dir", Path.Combine(_dir, "node")]);
            Assert.True(status == 0, statusOutput);

            // systemctl stop sends SIGTERM to the main process: the node says it is stopping and exits 0.
            var (kill, killOutput) = await RunAsync("pkill", ["-TERM", "-f", $"^{Executable} node --config {Path.Combine(_dir, "node", "node.json")}"]);
            Assert.True(kill == 0, killOutput);
            Assert.Contains("STOPPING=1", await ReceiveAsync(notify), StringComparison.Ordinal);
            await service.WaitForExitAsync(Ct).WaitAsync(Bound, Ct);
            Assert.True(service.ExitCode == 0, await output + await errors);
        }
        finally
        {
            if (!service.HasExited)
                service.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public async Task The_example_systemd_unit_is_one_systemd_takes_without_a_word()
    {
        if (!File.Exists("/usr/bin/systemd-analyze"))
            Assert.Skip("no systemd-analyze (test.sh installs systemd)");
        // The unit as docs/service/skymesh-node.service gives it, with this machine's executable and an existing user.
        var unit = File.ReadAllText(Path.Combine(Repository, "docs", "service", "skymesh-node.service"))
            .Replace("/usr/local/bin/skymesh", Executable, StringComparison.Ordinal)
            .Replace("User=skymesh", "User=root", StringComparison.Ordinal)
            .Replace("Group=skymesh", "Group=root", StringComparison.Ordinal);
        Assert.Contains("Type=notify", unit, StringComparison.Ordinal);
        var path = Path.Combine(_dir, "skymesh-node.service");
        File.WriteAllText(path, unit);
        var (code, output) = await RunAsync("/usr/bin/systemd-analyze", ["verify", path]);
        Assert.True(code == 0 && output.Trim().Length == 0, $"systemd-analyze verify said (exit {code}):\n{output}");
    }

    private static async Task<string> ReceiveAsync(Socket socket)
    {
        var buffer = new byte[4096];
        var received = await socket.ReceiveAsync(buffer, SocketFlags.None, Ct).AsTask().WaitAsync(Bound, Ct);
        return Encoding.UTF8.GetString(buffer, 0, received);
    }

    private static string ApiOf(string config) =>
        System.Text.RegularExpressions.Regex.Match(File.ReadAllText(config), "\"api\": \"([^\"]+)\"").Groups[1].Value;

    private static int FreePort(SocketType type)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, type, type == SocketType.Stream ? ProtocolType.Tcp : ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }
}
