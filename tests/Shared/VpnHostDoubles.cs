using System.Net;
using Skymesh.Node.Vpn;

namespace Skymesh.Tests;

/// <summary>A TUN device for tests that only need a VPN session to exist: the host never sends into it, and it takes every packet.</summary>
public sealed class SilentTun(string name = "skyvpn0") : ITunDevice
{
    private readonly CancellationTokenSource _closed = new();

    public string Name => name;

    public int Read(Span<byte> buffer)
    {
        _closed.Token.WaitHandle.WaitOne();
        return 0;
    }

    public bool Write(ReadOnlySpan<byte> packet) => true;

    public void Dispose() => _closed.Cancel();
}

/// <summary>A host that takes every address, route and NAT rule without changing anything.</summary>
public sealed class AcceptingHost : IHostNetwork
{
    public void ConfigureDevice(string device, int mtu, IEnumerable<string> addresses)
    {
    }

    public void AddRoute(string prefix, string device)
    {
    }

    public void AddRouteVia(string prefix, string? gateway, string device)
    {
    }

    public bool DeleteRoute(string prefix, string? gateway, string? device) => true;

    public (string? Gateway, string Device)? RouteTo(IPAddress address) => null;

    public void EnableForwarding(bool ipv6)
    {
    }

    public void AddMasquerade(string pool, string device)
    {
    }

    public bool DeleteMasquerade(string pool, string device) => true;
}
