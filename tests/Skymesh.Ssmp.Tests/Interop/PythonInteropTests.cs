using System.Diagnostics;
using Skymesh.Ssmp.Tests.Broker;

namespace Skymesh.Ssmp.Tests.Interop;

/// <summary>
/// A client written separately from this code base (ssmp_chat.py, Python standard library only, read field by
/// field from docs/ssmp.md) chats through the real broker and checks every line it receives.
/// </summary>
public class PythonInteropTests
{
    [Fact]
    public async Task An_independent_python_client_chats_through_the_broker_and_every_line_it_checks_is_right()
    {
        await using var broker = TestBroker.Start();
        var script = Path.Combine(AppContext.BaseDirectory, "Interop", "ssmp_chat.py");
        Assert.True(File.Exists(script), $"{script} was not copied to the test output");
        var start = new ProcessStartInfo("python3")
        {
            ArgumentList = { script, "127.0.0.1", broker.Port.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var python = Process.Start(start)!;
        var stdout = python.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = python.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(TimeSpan.FromSeconds(60));
        try
        {
            await python.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            python.Kill();
            throw;
        }
        var output = await stdout;
        var errors = await stderr;

        Assert.True(python.ExitCode == 0, $"ssmp_chat.py exited with {python.ExitCode}\n{errors}\n{output}");
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^ssmp_chat: all [0-9]+ checks passed$", lines[^1]);
        // A few lines of the transcript, as the spec defines them.
        Assert.Contains("bob < 000 alice UCAST bob hi bob", lines);
        Assert.Contains(@"bob < 000 alice UCAST bob \x00\x02a\nb", lines);
        Assert.Contains("bob < 000 alice MCAST room hello room", lines);
        Assert.Contains("bob < 000 alice UNSUBSCRIBE room", lines);
        Assert.Contains("alice < (closed)", lines);
        Assert.Equal("", errors);
    }
}
