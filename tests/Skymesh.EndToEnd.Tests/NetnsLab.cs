using System.Diagnostics;
using System.Text;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// A lab of Linux network namespaces (needs root and iproute2): each namespace has its own loopback and only the veth
/// pairs the test makes, with a /30 subnet of its own per pair, and no forwarding (<c>net.ipv4.ip_forward</c> 0), so
/// two namespaces reach each other only over a veth between them, or through whatever the programs inside carry.
/// Programs are run inside a namespace with <c>ip netns exec</c>. Disposing kills every process the lab started and
/// deletes its namespaces (their veths go with them), whatever the test did.
/// </summary>
public sealed class NetnsLab : IAsyncDisposable
{
    private static readonly TimeSpan CommandBound = TimeSpan.FromSeconds(30);

    private readonly List<string> _namespaces = [];
    private readonly List<(string Name, Skymesh Process)> _skymesh = [];
    private readonly List<(string Name, LabProcess Process)> _others = [];
    private int _pairs;

    private NetnsLab(string prefix)
    {
        Prefix = prefix;
        Directory = System.IO.Directory.CreateTempSubdirectory($"skymesh-{prefix}-").FullName;
        // Nodes publish their API tokens per port under the user's data directory: keep this lab's apart from the user's.
        Environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(Directory, "xdg") };
    }

    /// <summary>Names of this lab's namespaces start with it: <c>sk&lt;pid % 1000&gt;-&lt;n&gt;</c>.</summary>
    public string Prefix { get; }

    /// <summary>A temporary directory for the test's files; deleted on dispose.</summary>
    public string Directory { get; }

    /// <summary>Added to the environment of every skymesh process the lab runs.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; }

    /// <summary>The full name of the lab's namespace <paramref name="name"/>.</summary>
    public string Namespace(string name) => $"{Prefix}-{name}";

    /// <summary>Whether this machine can run a lab: root, and iproute2 with network namespaces.</summary>
    public static bool Available => OperatingSystem.IsLinux() && System.Environment.UserName == "root" && (File.Exists("/usr/sbin/ip") || File.Exists("/sbin/ip") || File.Exists("/usr/bin/ip"));

    /// <summary>Creates one namespace per name, each with its loopback up and forwarding off.</summary>
    public static async Task<NetnsLab> CreateAsync(IReadOnlyList<string> names, CancellationToken cancellationToken)
    {
        var existing = (await IpAsync(cancellationToken, "netns", "list")).Split('\n').Select(l => l.Split(' ')[0]).ToHashSet();
        // A prefix no namespace has yet: several labs (and several test processes) may run at once.
        var n = 1;
        while (existing.Any(e => e.StartsWith($"sk{System.Environment.ProcessId % 1000}-{n}-", StringComparison.Ordinal)))
            n++;
        var lab = new NetnsLab($"sk{System.Environment.ProcessId % 1000}-{n}");
        try
        {
            foreach (var name in names)
                await lab.AddNamespaceAsync(name, cancellationToken);
            return lab;
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Adds a namespace to the lab after its creation, as <see cref="CreateAsync"/> makes them (loopback up, forwarding
    /// off); deleted on dispose like the others.
    /// </summary>
    public async Task AddNamespaceAsync(string name, CancellationToken cancellationToken)
    {
        var ns = Namespace(name);
        lock (_namespaces)
        {
            if (_namespaces.Contains(ns))
                throw new InvalidOperationException($"the lab already has a namespace {name}");
        }
        await IpAsync(cancellationToken, "netns", "add", ns);
        lock (_namespaces)
            _namespaces.Add(ns);
        await IpAsync(cancellationToken, "-n", ns, "link", "set", "lo", "up");
        // A new namespace starts with forwarding off; make sure of it (a host may have new namespaces inherit its own).
        if (await ReadForwardingAsync(ns, cancellationToken) != "0")
            await RunCheckedAsync(cancellationToken, "ip", "netns", "exec", ns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward");
    }

    /// <summary>Runs <c>ip -n &lt;namespace&gt; <paramref name="arguments"/></c> in the lab's namespace <paramref name="ns"/>; fails when it exits non-zero.</summary>
    public Task<string> IpInAsync(string ns, CancellationToken cancellationToken, params string[] arguments) => IpAsync(cancellationToken, ["-n", Namespace(ns), .. arguments]);

    /// <summary>Runs a short command to its end inside the lab's namespace <paramref name="ns"/> and returns its output; fails when it exits non-zero.</summary>
    public Task<string> ExecCheckedAsync(string ns, CancellationToken cancellationToken, string program, params string[] arguments) =>
        RunCheckedAsync(cancellationToken, "ip", ["netns", "exec", Namespace(ns), program, .. arguments]);

    /// <summary>The lab's namespace <paramref name="name"/>'s <c>net.ipv4.ip_forward</c>: "0" when it forwards nothing between its interfaces.</summary>
    public Task<string> ForwardingAsync(string name, CancellationToken cancellationToken) => ReadForwardingAsync(Namespace(name), cancellationToken);

    private static async Task<string> ReadForwardingAsync(string ns, CancellationToken cancellationToken) =>
        (await RunCheckedAsync(cancellationToken, "ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward")).Trim();

    /// <summary>
    /// A veth pair between namespaces <paramref name="a"/> and <paramref name="b"/> on a /30 of its own; returns the
    /// address of each end.
    /// </summary>
    public async Task<(string A, string B)> LinkAsync(string a, string b, CancellationToken cancellationToken)
    {
        var pair = Interlocked.Increment(ref _pairs);
        if (pair > 250)
            throw new InvalidOperationException("a lab has at most 250 veth pairs");
        var (endA, endB) = ($"{Prefix}-{a}{b}", $"{Prefix}-{b}{a}");
        if (endA.Length > 15 || endB.Length > 15)
            throw new InvalidOperationException($"interface names {endA} and {endB} must be at most 15 characters: use shorter namespace names");
        var (addressA, addressB) = ($"10.99.{pair}.1", $"10.99.{pair}.2");
        // Made directly inside the two namespaces: nothing appears, even for a moment, in the host's.
        await IpAsync(cancellationToken, "link", "add", "name", endA, "netns", Namespace(a), "type", "veth", "peer", "name", endB, "netns", Namespace(b));
        foreach (var (ns, end, address) in new[] { (Namespace(a), endA, addressA), (Namespace(b), endB, addressB) })
        {
            await IpAsync(cancellationToken, "-n", ns, "addr", "add", $"{address}/30", "dev", end);
            await IpAsync(cancellationToken, "-n", ns, "link", "set", end, "up");
        }
        return (addressA, addressB);
    }

    /// <summary>Starts skymesh inside namespace <paramref name="ns"/>; <paramref name="name"/> labels its output in reports.</summary>
    public Skymesh StartSkymesh(string name, string ns, params string[] arguments)
    {
        var process = Skymesh.StartIn(Namespace(ns), Environment, arguments);
        lock (_skymesh)
            _skymesh.Add((name, process));
        return process;
    }

    /// <summary>Runs a skymesh command to its end inside namespace <paramref name="ns"/>.</summary>
    public Task<(int Code, string Output)> SkymeshAsync(string ns, params string[] arguments) => Skymesh.RunInAsync(Namespace(ns), Environment, arguments);

    /// <summary>Starts any program inside namespace <paramref name="ns"/>, kept running until the lab is disposed.</summary>
    public LabProcess Start(string name, string ns, string program, params string[] arguments)
    {
        var process = new LabProcess(["netns", "exec", Namespace(ns), program, .. arguments]);
        lock (_others)
            _others.Add((name, process));
        return process;
    }

    /// <summary>Runs a program to its end inside namespace <paramref name="ns"/>, at most <paramref name="timeout"/>.</summary>
    public async Task<(int Code, string Output)> RunAsync(string ns, TimeSpan timeout, CancellationToken cancellationToken, string program, params string[] arguments)
    {
        using var process = new LabProcess(["netns", "exec", Namespace(ns), program, .. arguments]);
        var code = await process.WaitForExitAsync(timeout, cancellationToken);
        return (code, process.Output);
    }

    /// <summary>The last <paramref name="lines"/> lines of every process the lab started, for a failure message.</summary>
    public string Tails(int lines = 25)
    {
        var report = new StringBuilder();
        List<(string Name, string Output, bool Exited)> all;
        lock (_skymesh)
            all = [.. _skymesh.Select(p => (p.Name, p.Process.Output, p.Process.HasExited))];
        lock (_others)
            all.AddRange(_others.Select(p => (p.Name, p.Process.Output, p.Process.HasExited)));
        foreach (var (name, output, exited) in all)
        {
            var tail = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).TakeLast(lines);
            report.Append("---- ").Append(name).Append(exited ? " (exited)" : "").Append(" ----\n");
            foreach (var line in tail)
                report.Append(line.Length > 400 ? line[..400] + "…" : line).Append('\n');
        }
        return report.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        var failures = new List<Exception>();
        List<LabProcess> others;
        lock (_others)
            others = [.. _others.Select(p => p.Process)];
        foreach (var process in others)
            process.Dispose();
        List<Skymesh> skymesh;
        lock (_skymesh)
            skymesh = [.. _skymesh.Select(p => p.Process)];
        foreach (var process in skymesh)
        {
            try
            {
                // Kills it; fails when it logged an error.
                await process.DisposeAsync();
            }
            catch (Exception e)
            {
                failures.Add(e);
            }
        }
        List<string> namespaces;
        lock (_namespaces)
            namespaces = [.. _namespaces];
        foreach (var ns in namespaces)
        {
            try
            {
                await IpAsync(CancellationToken.None, "netns", "del", ns);
            }
            catch (Exception e)
            {
                failures.Add(e);
            }
        }
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
        if (failures.Count == 1)
            throw failures[0];
        if (failures.Count > 1)
            throw new AggregateException(failures);
    }

    private static Task<string> IpAsync(CancellationToken cancellationToken, params string[] arguments) => RunCheckedAsync(cancellationToken, "ip", arguments);

    private static async Task<string> RunCheckedAsync(CancellationToken cancellationToken, string program, params string[] arguments)
    {
        using var process = new LabProcess(arguments, program);
        var code = await process.WaitForExitAsync(CommandBound, cancellationToken);
        if (code != 0)
            throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} exited with {code}: {process.Output}");
        return process.Output;
    }
}

/// <summary>A program other than skymesh run as a child process (through <c>ip</c> by default); stdout and stderr kept together.</summary>
public sealed class LabProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public LabProcess(string[] arguments, string program = "ip")
    {
        var info = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments)
            info.ArgumentList.Add(a);
        _process = new Process { StartInfo = info, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.Exited += (_, _) => _exited.TrySetResult();
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string Output
    {
        get
        {
            lock (_output)
                return _output.ToString();
        }
    }

    public bool HasExited => _exited.Task.IsCompleted;

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_output)
            _output.Append(line).Append('\n');
    }

    /// <summary>Waits for the process to end and returns its exit code; kills it and fails when it takes longer than <paramref name="timeout"/>.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        try
        {
            await _exited.Task.WaitAsync(timeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            Kill();
            throw new Xunit.Sdk.XunitException($"{_process.StartInfo.FileName} {string.Join(' ', _process.StartInfo.ArgumentList)} did not end within {timeout.TotalSeconds} s; output:\n{Output}");
        }
        // Every line read before the exit code is looked at.
        await _process.WaitForExitAsync(cancellationToken);
        return _process.ExitCode;
    }

    /// <summary>Waits until the output so far contains <paramref name="text"/>; fails when the process ends first or time runs out.</summary>
    public async Task WaitForTextAsync(string text, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        var deadline = Stopwatch.StartNew();
        while (!Output.Contains(text, StringComparison.Ordinal))
        {
            if (HasExited || deadline.Elapsed > timeout)
                throw new Xunit.Sdk.XunitException($"no \"{text}\" from {_process.StartInfo.FileName} {string.Join(' ', _process.StartInfo.ArgumentList)} within {timeout.TotalSeconds} s{(HasExited ? " (it exited)" : "")}; output:\n{Output}");
            await poll.WaitForNextTickAsync(cancellationToken);
        }
    }

    private void Kill()
    {
        try
        {
            if (!_process.HasExited)
                _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // It ended meanwhile.
        }
    }

    public void Dispose()
    {
        Kill();
        _process.WaitForExit(TimeSpan.FromSeconds(10));
        _process.Dispose();
    }
}
