using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Skymesh.Bench;

/// <summary>What the benchmarks need from the machine: executables on the PATH, Debian packages, free ports.</summary>
internal static class HostTools
{
    /// <summary>
    /// Installs a Debian package with apt-get (as root, or through sudo) and says so; does nothing when neither
    /// apt-get nor a way to become root is there (the caller then reports the missing program).
    /// </summary>
    public static async Task InstallDebianPackageAsync(string package, TextWriter output, CancellationToken cancellationToken)
    {
        if (FindExecutable("apt-get") is null)
            return;
        var root = string.Equals(Environment.UserName, "root", StringComparison.Ordinal);
        if (!root && FindExecutable("sudo") is null)
            return;
        lock (output)
            output.WriteLine($"{package} is missing: installing it with apt-get");
        foreach (var arguments in new[] { new[] { "apt-get", "update", "-qq" }, new[] { "apt-get", "install", "-y", "-qq", package } })
        {
            var info = new ProcessStartInfo(root ? arguments[0] : "sudo") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in root ? arguments[1..] : arguments)
                info.ArgumentList.Add(a);
            info.Environment["DEBIAN_FRONTEND"] = "noninteractive";
            using var process = Process.Start(info) ?? throw new BenchException("Could not start apt-get.");
            var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
            _ = process.StandardOutput.ReadToEndAsync(cancellationToken);
            await process.WaitForExitAsync(cancellationToken);
            if (process.ExitCode != 0)
                throw new BenchException($"'{string.Join(' ', arguments)}' failed ({process.ExitCode}): {(await stderr).Trim()}");
        }
    }

    /// <summary>The full path of <paramref name="name"/> on the PATH (or in the usual system directories); null when absent.</summary>
    public static string? FindExecutable(string name)
    {
        if (name.Contains('/', StringComparison.Ordinal))
            return File.Exists(name) ? name : null;
        var directories = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]);
        foreach (var directory in directories)
        {
            var candidate = Path.Combine(directory, name);
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }

    /// <summary>A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot be told to pick one).</summary>
    public static int FreeLoopbackPort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    /// <summary>Completes once something accepts TCP connections on <paramref name="endPoint"/>.</summary>
    public static async Task<IPEndPoint> WaitUntilListeningAsync(IPEndPoint endPoint, CancellationToken cancellationToken)
    {
        while (true)
        {
            using var probe = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(endPoint, cancellationToken);
                return endPoint;
            }
            catch (SocketException)
            {
                await Task.Delay(50, cancellationToken);
            }
        }
    }
}
