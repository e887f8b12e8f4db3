using System.Diagnostics;
using System.Globalization;
using System.Net;

namespace Skymesh.Node.Vpn;

/// <summary>
/// What the VPN changes on its host besides the TUN device: addresses, routes, forwarding and NAT. Every change the
/// VPN makes is one call here, so it can be listed, saved (for cleanup after a crash) and undone.
/// </summary>
public interface IHostNetwork
{
    /// <summary>Sets the device's MTU, gives it these addresses (CIDR, e.g. <c>10.99.0.2/24</c>) in place of any it had, and brings it up.</summary>
    void ConfigureDevice(string device, int mtu, IEnumerable<string> addresses);

    /// <summary>Routes <paramref name="prefix"/> into <paramref name="device"/>.</summary>
    void AddRoute(string prefix, string device);

    /// <summary>Routes <paramref name="prefix"/> through <paramref name="gateway"/> (or directly) on <paramref name="device"/>.</summary>
    void AddRouteVia(string prefix, string? gateway, string device);

    /// <summary>Removes a route added by <see cref="AddRoute"/> or <see cref="AddRouteVia"/>; false when it was not there.</summary>
    bool DeleteRoute(string prefix, string? gateway, string? device);

    /// <summary>How the host reaches <paramref name="address"/> now: the gateway (null when on link) and the device; null when it has no route.</summary>
    (string? Gateway, string Device)? RouteTo(IPAddress address);

    /// <summary>Lets the host forward between its devices (IPv4, and IPv6 when asked).</summary>
    void EnableForwarding(bool ipv6);

    /// <summary>Rewrites the source of packets from <paramref name="pool"/> leaving by any device but <paramref name="device"/> to the host's own address.</summary>
    void AddMasquerade(string pool, string device);

    /// <summary>Removes a rule added by <see cref="AddMasquerade"/>; false when it was not there.</summary>
    bool DeleteMasquerade(string pool, string device);

    /// <summary>The resolver configuration the VPN replaces while it gives the host the server's DNS servers.</summary>
    string ResolverFile => "/etc/resolv.conf";
}

/// <summary>The host's network on Linux, through iproute2 (<c>ip</c>), <c>sysctl</c> files and <c>iptables</c>/<c>ip6tables</c>.</summary>
public sealed class LinuxHostNetwork : IHostNetwork
{
    public static LinuxHostNetwork Instance { get; } = new();

    public void ConfigureDevice(string device, int mtu, IEnumerable<string> addresses)
    {
        Run("ip", "link", "set", "dev", device, "mtu", mtu.ToString(CultureInfo.InvariantCulture));
        // The device is the VPN's own: what it held before (an earlier lease) goes; routes through it stay.
        Run("ip", "-4", "addr", "flush", "dev", device);
        Run("ip", "-6", "addr", "flush", "dev", device, "scope", "global");
        foreach (var address in addresses)
            Run("ip", Family(address), "addr", "replace", address, "dev", device);
        Run("ip", "link", "set", "dev", device, "up");
    }

    public void AddRoute(string prefix, string device) => Run("ip", Family(prefix), "route", "replace", prefix, "dev", device);

    public void AddRouteVia(string prefix, string? gateway, string device)
    {
        if (gateway is null)
            Run("ip", Family(prefix), "route", "replace", prefix, "dev", device);
        else
            Run("ip", Family(prefix), "route", "replace", prefix, "via", gateway, "dev", device);
    }

    public bool DeleteRoute(string prefix, string? gateway, string? device)
    {
        var args = new List<string> { Family(prefix), "route", "del", prefix };
        if (gateway is not null)
            args.AddRange(["via", gateway]);
        if (device is not null)
            args.AddRange(["dev", device]);
        return TryRun("ip", [.. args], out _);
    }

    public (string? Gateway, string Device)? RouteTo(IPAddress address)
    {
        if (!TryRun("ip", [address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? "-6" : "-4", "route", "get", address.ToString()], out var output))
            return null;
        var words = output.Split((char[])[' ', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries);
        string? gateway = null, device = null;
        for (var i = 0; i + 1 < words.Length; i++)
        {
            if (words[i] == "via")
                gateway = words[i + 1];
            else if (words[i] == "dev")
                device = words[i + 1];
        }
        return device is null ? null : (gateway, device);
    }

    public void EnableForwarding(bool ipv6)
    {
        WriteSysctl("/proc/sys/net/ipv4/ip_forward", "1");
        if (ipv6)
            WriteSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1");
    }

    public void AddMasquerade(string pool, string device)
    {
        var tool = pool.Contains(':', StringComparison.Ordinal) ? "ip6tables" : "iptables";
        if (!TryRun(tool, ["-t", "nat", "-C", "POSTROUTING", "-s", pool, "!", "-o", device, "-j", "MASQUERADE"], out _))
            Run(tool, "-t", "nat", "-A", "POSTROUTING", "-s", pool, "!", "-o", device, "-j", "MASQUERADE");
    }

    public bool DeleteMasquerade(string pool, string device)
    {
        var tool = pool.Contains(':', StringComparison.Ordinal) ? "ip6tables" : "iptables";
        return TryRun(tool, ["-t", "nat", "-D", "POSTROUTING", "-s", pool, "!", "-o", device, "-j", "MASQUERADE"], out _);
    }

    private static void WriteSysctl(string file, string value)
    {
        try
        {
            File.WriteAllText(file, value);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Cannot turn on forwarding ({file}): {e.Message}", e);
        }
    }

    private static string Family(string prefix) => prefix.Contains(':', StringComparison.Ordinal) ? "-6" : "-4";

    private static void Run(string tool, params string[] args)
    {
        if (!TryRun(tool, args, out var error))
            throw new IOException($"`{tool} {string.Join(' ', args)}` failed: {error.Trim()}");
    }

    /// <summary>Runs a host tool; false with its error output (or why it could not start) when it fails.</summary>
    private static bool TryRun(string tool, string[] args, out string output)
    {
        var start = new ProcessStartInfo(tool)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        try
        {
            using var process = Process.Start(start)!;
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            var error = stderr.GetAwaiter().GetResult();
            output = process.ExitCode == 0 ? stdout : (error.Length > 0 ? error : $"exit code {process.ExitCode}");
            return process.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            output = $"cannot run {tool}: {e.Message} (install iproute2 / iptables)";
            return false;
        }
    }
}
