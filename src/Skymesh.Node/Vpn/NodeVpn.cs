using Skymesh.Identity;
using Skymesh.Mesh.Apps;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node.Vpn;

/// <summary>
/// A node's IP roles: the VPN server it may run, the VPN client it may be (one server at a time), and its mesh IPv6
/// address; and the dispatch of IP datagrams arriving on its paths to them.
/// </summary>
public sealed class NodeVpn : IAsyncDisposable
{
    private readonly MeshNode _node;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile VpnServer? _server;
    private volatile VpnClient? _client;
    private volatile MeshIpv6? _ipv6;

    internal NodeVpn(MeshNode node)
    {
        _node = node;
    }

    /// <summary>Where addresses, routes and NAT are set (the host's own, through iproute2 and iptables, unless a test gives another).</summary>
    public IHostNetwork Host { get; set; } = LinuxHostNetwork.Instance;

    /// <summary>Opens a TUN device by name.</summary>
    public Func<string, ITunDevice> OpenTun { get; set; } = TunDevice.Open;

    /// <summary>
    /// Finds or opens a path to a node (set by the node host once it has a control plane; without one, only paths
    /// already installed are used).
    /// </summary>
    public Func<NodeAddress, CancellationToken, Task<PathEndpoint>>? OpenPath { get; set; }

    public VpnServer? Server => _server;

    public VpnClient? Client => _client;

    public MeshIpv6? Ipv6 => _ipv6;

    /// <summary>Starts serving the VPN.</summary>
    /// <exception cref="NodeRequestException">Already serving (409), or the host refused (the reason).</exception>
    public async Task<VpnServer> ServeAsync(VpnServeOptions options, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_server is not null)
                throw new NodeRequestException(NodeError.Conflict, $"this node already serves the VPN on {_server.Device}; stop it first");
            return _server = VpnServer.Start(_node, options, Host, OpenTun);
        }
        catch (Exception e) when (e is IOException or PlatformNotSupportedException or ArgumentException)
        {
            throw new NodeRequestException(NodeError.Unavailable, "cannot serve the VPN: " + e.Message);
        }
        finally
        {
            _gate.Release();
        }
    }

    public async Task<bool> StopServingAsync()
    {
        await _gate.WaitAsync();
        try
        {
            if (_server is not { } server)
                return false;
            _server = null;
            await server.DisposeAsync();
            return true;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Connects this node's host to the VPN served by <paramref name="server"/>.</summary>
    /// <exception cref="NodeRequestException">Already connected (409), refused by the server (403), no path (404), the host refused.</exception>
    public async Task<VpnClient> ConnectAsync(NodeAddress server, VpnConnectOptions options, CancellationToken cancellationToken)
    {
        if (server == _node.Address)
            throw new NodeRequestException(NodeError.Invalid, "a VPN connects to another node, not to this one");
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_client is not null)
                throw new NodeRequestException(NodeError.Conflict, $"this node is already connected to the VPN of {_client.Server}; `skymesh vpn disconnect` first");
            var openPath = OpenPath ?? ((peer, _) => Task.FromResult(_node.FindPath(peer)
                ?? throw new NoPathException($"This node has no path to {peer}, and no control plane to open one.")));
            return _client = await VpnClient.ConnectAsync(_node, server, options, Host, OpenTun, openPath, cancellationToken);
        }
        catch (ServiceRefusedException e)
        {
            throw new NodeRequestException(NodeError.Refused, e.Message);
        }
        catch (Exception e) when (e is IOException or PlatformNotSupportedException or ArgumentException or InvalidDataException)
        {
            throw new NodeRequestException(NodeError.Unavailable, "cannot connect the VPN: " + e.Message);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Ends the VPN session and restores the host's routes and DNS; false when there was none.</summary>
    public async Task<bool> DisconnectAsync()
    {
        await _gate.WaitAsync();
        try
        {
            if (_client is not { } client)
                return false;
            _client = null;
            await client.DisposeAsync();
            return true;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Gives the node its mesh IPv6 address on a TUN device of its own.</summary>
    public void StartIpv6(MeshIpv6Options options)
    {
        if (_ipv6 is not null)
            throw new NodeRequestException(NodeError.Conflict, "mesh IPv6 is already on");
        _ipv6 = MeshIpv6.Start(_node, options, Host, OpenTun);
    }

    /// <summary>A datagram of kind 3 or more that arrived on a path from <paramref name="peer"/>; true when taken.</summary>
    internal bool OnDatagram(NodeAddress peer, PathEndpoint endpoint, ReadOnlySpan<byte> datagram)
    {
        if (datagram.Length < 2)
            return false;
        if (datagram[0] == IpDatagram.Vpn)
        {
            if (_client is { } client && client.OnPacket(peer, datagram[1..]))
                return true;
            if (_server is { } server && server.OnPacket(peer, datagram[1..]))
                return true;
            _server?.Counters.Drop(VpnDrop.NoSession);
            return true;
        }
        if (datagram[0] == IpDatagram.MeshIpv6)
        {
            _ipv6?.OnPacket(peer, endpoint, datagram[1..]);
            return true;
        }
        return false;
    }

    /// <summary>A stream whose request is not a TCP connection: a VPN session when this node serves, refused otherwise.</summary>
    internal async Task ServeStreamAsync(ServiceKind kind, string request, ReliableStream stream, NodeAddress peer, PathEndpoint endpoint, CancellationToken cancellationToken)
    {
        if (kind == ServiceKind.Vpn && _server is { } server)
        {
            await server.ServeAsync(stream, request, peer, endpoint, cancellationToken);
            return;
        }
        await stream.WriteAsync(ServiceWire.EncodeResponse(kind == ServiceKind.Vpn ? ServiceStatus.NotAllowed : ServiceStatus.BadRequest,
            kind == ServiceKind.Vpn ? "this node does not serve the VPN" : $"unknown service {(byte)kind}"), cancellationToken);
        await stream.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_client is { } client)
            await client.DisposeAsync();
        if (_server is { } server)
            await server.DisposeAsync();
        if (_ipv6 is { } ipv6)
            await ipv6.DisposeAsync();
        _client = null;
        _server = null;
        _ipv6 = null;
    }
}
