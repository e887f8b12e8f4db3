using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;

namespace Skymesh.EndToEnd.Tests;

/// <summary>The skymesh program run as a child process: its output read line by line as it comes.</summary>
public sealed partial class Skymesh : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Channel<string> _lines = Channel.CreateUnbounded<string>();
    private readonly StringBuilder _all = new();
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private Skymesh(string[] arguments, string? netns = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "skymesh.dll");
        // Inside a network namespace through `ip netns exec`, which execs the program: the process is still skymesh itself.
        var info = new ProcessStartInfo(netns is null ? "dotnet" : "ip")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in netns is null ? [] : (string[])["netns", "exec", netns, "dotnet"])
            info.ArgumentList.Add(a);
        info.ArgumentList.Add(dll);
        foreach (var a in arguments)
            info.ArgumentList.Add(a);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
            info.Environment[name] = value;
        _process = new Process { StartInfo = info, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => OnLine(e.Data, _process.HasExited);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data, false);
        _process.Exited += (_, _) => _exited.TrySetResult();
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string Output
    {
        get
        {
            lock (_all)
                return _all.ToString();
        }
    }

    public int Pid => _process.Id;

    /// <summary>True once the process has ended.</summary>
    public bool HasExited => _exited.Task.IsCompleted;

    public static Skymesh Start(params string[] arguments) => new(arguments);

    /// <summary>
    /// Starts skymesh inside the network namespace <paramref name="netns"/> (<c>ip netns exec</c>; needs root), with
    /// <paramref name="environment"/> added to this process's environment.
    /// </summary>
    public static Skymesh StartIn(string netns, IReadOnlyDictionary<string, string>? environment, params string[] arguments) => new(arguments, netns, environment);

    /// <summary>Runs a command to its end and returns its exit code and everything it printed.</summary>
    public static Task<(int Code, string Output)> RunAsync(params string[] arguments) => RunToEndAsync(new Skymesh(arguments));

    /// <summary>Runs a command to its end inside the network namespace <paramref name="netns"/> (see <see cref="StartIn"/>).</summary>
    public static Task<(int Code, string Output)> RunInAsync(string netns, IReadOnlyDictionary<string, string>? environment, params string[] arguments) =>
        RunToEndAsync(new Skymesh(arguments, netns, environment));

    private static async Task<(int Code, string Output)> RunToEndAsync(Skymesh started)
    {
        await using var run = started;
        var code = await run.WaitForExitAsync(TimeSpan.FromSeconds(60));
        return (code, run.Output);
    }

    private void OnLine(string? line, bool _)
    {
        if (line is null)
            return;
        lock (_all)
            _all.AppendLine(line);
        _lines.Writer.TryWrite(line);
    }

    /// <summary>Waits for a line of output containing <paramref name="text"/> and returns it.</summary>
    public async Task<string> WaitForLineAsync(string text, TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            while (true)
            {
                var line = await _lines.Reader.ReadAsync(deadline.Token);
                if (line.Contains(text, StringComparison.Ordinal))
                    return line;
            }
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"No line with \"{text}\" within {timeout.TotalSeconds} s; output so far:\n{Output}");
        }
    }

    /// <summary>Waits until the output so far contains <paramref name="text"/>, in a line already read or one still to come.</summary>
    public async Task WaitForTextAsync(string text, TimeSpan timeout)
    {
        if (Output.Contains(text, StringComparison.Ordinal))
            return;
        await WaitForLineAsync(text, timeout);
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        try
        {
            await _exited.Task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new Xunit.Sdk.XunitException($"skymesh did not exit within {timeout.TotalSeconds} s; output so far:\n{Output}");
        }
        await _process.WaitForExitAsync();
        return _process.ExitCode;
    }

    /// <summary>Asks the process to stop as an operator would (SIGTERM).</summary>
    public void Terminate()
    {
        if (!_process.HasExited)
            _ = Kill(_process.Id, 15);
    }

    /// <summary>Kills the process as a crash or a power cut would (SIGKILL): nothing is flushed, nothing said to peers.</summary>
    public async Task CrashAsync(TimeSpan timeout)
    {
        if (!_process.HasExited)
            _ = Kill(_process.Id, 9);
        await WaitForExitAsync(timeout);
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        // The program keeps going through what its peers, its bus and its disk do, and says so in warnings; an error
        // it logged (the console logger's "fail:" and "crit:" lines) is a bug, whatever the test checked.
        // Each line starts with its date and time, then the level.
        var errors = Output.Split('\n').Where(l => l.Contains("Z fail: ", StringComparison.Ordinal) || l.Contains("Z crit: ", StringComparison.Ordinal)).ToList();
        Assert.True(errors.Count == 0, "skymesh logged errors:\n" + Output);
    }
}
