using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Text;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;
using Skymesh.Mesh.Apps;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node.Vpn;

/// <summary>One client of a VPN server: the node, its path, the addresses it was given and the networks behind it.</summary>
public sealed class VpnSession
{
    internal VpnSession(NodeAddress peer, PathEndpoint endpoint, IPAddress address, IPAddress? address6, IReadOnlyList<IPNetwork> networks, int mtu, DateTimeOffset since)
    {
        Peer = peer;
        Endpoint = endpoint;
        Address = address;
        Address6 = address6;
        Networks = networks;
        Mtu = mtu;
        Since = since;
        _address = address.GetAddressBytes();
        _address6 = address6?.GetAddressBytes();
    }

    private readonly byte[] _address;
    private readonly byte[]? _address6;

    public NodeAddress Peer { get; }

    public PathEndpoint Endpoint { get; }

    public IPAddress Address { get; }

    public IPAddress? Address6 { get; }

    public IReadOnlyList<IPNetwork> Networks { get; }

    public int Mtu { get; }

    public DateTimeOffset Since { get; }

    public VpnCounters Counters { get; } = new();

    /// <summary>The session's stream: aborted when the server stops, so the client knows at once.</summary>
    internal ReliableStream? Stream { get; set; }

    /// <summary>Whether a packet from this client may carry <paramref name="source"/>: its own address, or one of its site's.</summary>
    internal bool Owns(ReadOnlySpan<byte> source)
    {
        if (source.SequenceEqual(source.Length == 4 ? _address : _address6))
            return true;
        if (Networks.Count == 0)
            return false;
        var address = new IPAddress(source);
        foreach (var network in Networks)
        {
            if (network.Contains(address))
                return true;
        }
        return false;
    }
}

/// <summary>
/// The exit end of the VPN (docs/vpn.md): gives each client node an address from its pools, takes the IP packets
/// clients send as path datagrams into its TUN device — checking that each comes from the client's own address and
/// goes where the node's exit policy allows — and sends what the host routes into the device back to the client
/// that owns the destination. The host routes and masquerades (NAT to its uplink) like any router.
/// </summary>
public sealed partial class VpnServer : IAsyncDisposable
{
    private readonly MeshNode _node;
    private readonly IHostNetwork _host;
    private readonly ITunDevice _tun;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<NodeAddress, VpnSession> _byPeer = new();
    private readonly ConcurrentDictionary<UInt128, VpnSession> _byAddress = new();
    private readonly ConcurrentDictionary<(UInt128, int), bool> _allowed = new();
    private readonly Dictionary<NodeAddress, long> _leases = [];
    private readonly Lock _lock = new();
    private readonly Thread _reader;
    private readonly string _stateFile;
    private ExitPolicy? _cachedPolicy;
    private readonly HashSet<long> _taken = [];
    private int _disposed;

    private VpnServer(MeshNode node, VpnServeOptions options, IHostNetwork host, ITunDevice tun, string stateFile)
    {
        _node = node;
        Options = options;
        _host = host;
        _tun = tun;
        _stateFile = stateFile;
        _logger = node.LoggerFactory.CreateLogger("Skymesh.Node.Vpn");
        _reader = new Thread(ReadLoop) { IsBackground = true, Name = "skymesh vpn server" };
    }

    public VpnServeOptions Options { get; }

    /// <summary>Packets to and from all clients, and drops by reason.</summary>
    public VpnCounters Counters { get; } = new();

    public IReadOnlyCollection<VpnSession> Sessions => [.. _byPeer.Values];

    public string Device => _tun.Name;

    /// <summary>Opens the TUN device, gives it the pools' first addresses, and turns on forwarding and NAT; undone by <see cref="DisposeAsync"/>.</summary>
    public static VpnServer Start(MeshNode node, VpnServeOptions options, IHostNetwork host, Func<string, ITunDevice> openTun)
    {
        var stateFile = Path.Combine(node.Options.DataDir, "vpn-serve.state.json");
        VpnHostState.CleanUp(stateFile, host);
        var tun = openTun(options.Device);
        var state = new VpnHostState { Device = tun.Name };
        try
        {
            var addresses = new List<string> { $"{AddressKey.Nth(options.Pool, 1)}/{options.Pool.PrefixLength}" };
            if (options.Pool6 is { } pool6)
                addresses.Add($"{AddressKey.Nth(pool6, 1)}/{pool6.PrefixLength}");
            host.ConfigureDevice(tun.Name, options.Mtu, addresses);
            host.EnableForwarding(options.Pool6 is not null);
            if (options.Nat)
            {
                foreach (var pool in new[] { options.Pool, options.Pool6 }.OfType<IPNetwork>())
                {
                    state.Masquerade.Add(new MasqueradeRule(pool.ToString(), tun.Name));
                    state.Save(stateFile);
                    host.AddMasquerade(pool.ToString(), tun.Name);
                }
            }
        }
        catch
        {
            tun.Dispose();
            VpnHostState.CleanUp(stateFile, host);
            throw;
        }
        var server = new VpnServer(node, options, host, tun, stateFile);
        server._reader.Start();
        Log.Serving(server._logger, tun.Name, options.Pool.ToString(), options.Pool6?.ToString() ?? "none", options.Nat);
        return server;
    }

    /// <summary>
    /// Serves one client's session stream (service kind <see cref="ServiceKind.Vpn"/>): gives it its addresses, answers
    /// with them, and keeps the session until the stream ends. Never throws for what the client does.
    /// </summary>
    public async Task ServeAsync(ReliableStream stream, string request, NodeAddress peer, PathEndpoint endpoint, CancellationToken cancellationToken)
    {
        VpnSession? session = null;
        try
        {
            if (!TryParseRequest(request, out var networks, out var error))
            {
                await stream.WriteAsync(ServiceWire.EncodeResponse(ServiceStatus.BadRequest, error), cancellationToken);
                await stream.CompleteAsync();
                return;
            }
            if (networks.Count > 0 && (!Options.Sites.TryGetValue(peer, out var allowed) || networks.Any(n => !allowed.Any(a => Within(n, a)))))
            {
                await stream.WriteAsync(ServiceWire.EncodeResponse(ServiceStatus.NotAllowed, "this server does not route those networks to your node (its vpn.sites)"), cancellationToken);
                await stream.CompleteAsync();
                return;
            }
            session = Admit(peer, endpoint, networks, stream, out var refusal);
            if (session is null)
            {
                await stream.WriteAsync(ServiceWire.EncodeResponse(ServiceStatus.NotAllowed, refusal!), cancellationToken);
                await stream.CompleteAsync();
                return;
            }
            var config = new StringBuilder().Append(CultureInfo.InvariantCulture, $"addr={session.Address}/{Options.Pool.PrefixLength} gw={AddressKey.Nth(Options.Pool, 1)} mtu={session.Mtu}");
            if (session.Address6 is { } address6)
                config.Append(CultureInfo.InvariantCulture, $" addr6={address6}/{Options.Pool6!.Value.PrefixLength} gw6={AddressKey.Nth(Options.Pool6.Value, 1)}");
            if (Options.Dns.Count > 0)
                config.Append(" dns=").Append(string.Join(',', Options.Dns));
            config.Append('\n');
            await stream.WriteAsync(ServiceWire.EncodeResponse(ServiceStatus.Ok, ""), cancellationToken);
            await stream.WriteAsync(Encoding.ASCII.GetBytes(config.ToString()), cancellationToken);
            foreach (var network in session.Networks)
                _host.AddRoute(network.ToString(), _tun.Name);
            Log.SessionUp(_logger, peer.ToString(), session.Address.ToString(), session.Mtu);
            _node.Events.Append(Events.NodeEventKind.VpnUp, $"VPN client {peer} connected as {session.Address}{(session.Address6 is null ? "" : $" and {session.Address6}")}", peer.ToString());
            // The session lasts as long as its stream: the client ends it by closing, a lost path by failing it.
            var sink = new byte[64];
            while (await stream.ReadAsync(sink, cancellationToken) > 0)
            {
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            stream.Abort(cancellationToken.IsCancellationRequested ? "node stopping" : "VPN session ended");
        }
        finally
        {
            if (session is not null)
                End(session);
            await stream.DisposeAsync();
        }
    }

    private static bool Within(IPNetwork inner, IPNetwork outer) => inner.PrefixLength >= outer.PrefixLength && outer.Contains(inner.BaseAddress);

    private VpnSession? Admit(NodeAddress peer, PathEndpoint endpoint, IReadOnlyList<IPNetwork> networks, ReliableStream stream, out string? refusal)
    {
        lock (_lock)
        {
            refusal = null;
            if (_disposed != 0)
            {
                refusal = "the VPN server is stopping";
                return null;
            }
            if (!_byPeer.ContainsKey(peer) && _byPeer.Count >= Options.MaxSessions)
            {
                refusal = $"the server has {Options.MaxSessions} clients, its limit";
                return null;
            }
            if (!_leases.TryGetValue(peer, out var lease))
            {
                if (Lease(peer) is not { } free)
                {
                    refusal = $"the address pool {Options.Pool} is used up";
                    return null;
                }
                lease = free;
                _leases[peer] = lease;
            }
            var mtu = Math.Min(Options.Mtu, endpoint.Datagrams.MaxDatagramSize - 1);
            var session = new VpnSession(peer, endpoint, AddressKey.Nth(Options.Pool, lease),
                Options.Pool6 is { } pool6 && mtu >= IpPacket.MinIpv6Mtu ? AddressKey.Nth(pool6, lease) : null, networks, mtu, _node.Time.GetUtcNow())
            {
                Stream = stream,
            };
            if (_byPeer.TryGetValue(peer, out var old))
                Unregister(old);
            _byPeer[peer] = session;
            _byAddress[AddressKey.Of(session.Address)] = session;
            if (session.Address6 is { } address6)
                _byAddress[AddressKey.Of(address6)] = session;
            return session;
        }
    }

    /// <summary>
    /// A free address index for <paramref name="peer"/>: where the node's address points in the pool, or the next free one
    /// after it — so a node gets the same address again after the server restarts, as long as no other took it. When the
    /// pool is full, the addresses of nodes without a session are taken back first. Under the lock.
    /// </summary>
    private long? Lease(NodeAddress peer)
    {
        var hosts = AddressKey.Hosts(Options.Pool);
        var start = (long)(System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(peer.ToBytes()) % (ulong)hosts);
        for (var pass = 0; pass < 2; pass++)
        {
            for (long i = 0; i < Math.Min(hosts, 1 << 20); i++)
            {
                var index = 2 + (start + i) % hosts;
                if (_taken.Add(index))
                    return index;
            }
            foreach (var (node, index) in _leases.Where(l => !_byPeer.ContainsKey(l.Key)).ToList())
            {
                _leases.Remove(node);
                _taken.Remove(index);
            }
        }
        return null;
    }

    private void End(VpnSession session)
    {
        lock (_lock)
        {
            if (!_byPeer.TryGetValue(session.Peer, out var current) || current != session)
                return;
            Unregister(session);
        }
        Log.SessionDown(_logger, session.Peer.ToString(), session.Counters.PacketsFromMesh, session.Counters.PacketsToMesh);
        _node.Events.Append(Events.NodeEventKind.VpnDown, $"VPN client {session.Peer} ({session.Address}) disconnected", session.Peer.ToString());
    }

    private void Unregister(VpnSession session)
    {
        _byPeer.TryRemove(new KeyValuePair<NodeAddress, VpnSession>(session.Peer, session));
        _byAddress.TryRemove(new KeyValuePair<UInt128, VpnSession>(AddressKey.Of(session.Address), session));
        if (session.Address6 is { } address6)
            _byAddress.TryRemove(new KeyValuePair<UInt128, VpnSession>(AddressKey.Of(address6), session));
        foreach (var network in session.Networks)
            _host.DeleteRoute(network.ToString(), null, _tun.Name);
    }

    /// <summary>
    /// The session request: <c>vpn1</c>, then optionally <c> net=CIDR,CIDR</c> (the client's site networks). False
    /// with the reason when it is not one.
    /// </summary>
    internal static bool TryParseRequest(string request, out List<IPNetwork> networks, out string error)
    {
        networks = [];
        error = "";
        var words = request.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (words.Length == 0 || words[0] != VpnClient.RequestVersion)
        {
            error = $"not a VPN request of version {VpnClient.RequestVersion}";
            return false;
        }
        foreach (var word in words.Skip(1))
        {
            if (!word.StartsWith("net=", StringComparison.Ordinal))
                continue;
            foreach (var text in word[4..].Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                if (!IPNetwork.TryParse(text, out var network) || networks.Count >= 16)
                {
                    error = $"\"{text}\" is not a network in CIDR form (at most 16)";
                    return false;
                }
                networks.Add(network);
            }
        }
        return true;
    }

    /// <summary>A client's packet (a path datagram of kind <see cref="IpDatagram.Vpn"/>, without its kind byte), on the link's receive thread.</summary>
    internal bool OnPacket(NodeAddress peer, ReadOnlySpan<byte> packet)
    {
        if (!_byPeer.TryGetValue(peer, out var session))
            return false;
        var version = IpPacket.Version(packet);
        if (version == 0)
        {
            Drop(session, VpnDrop.Malformed);
            return true;
        }
        if (!session.Owns(IpPacket.Source(packet, version)))
        {
            Drop(session, VpnDrop.Spoofed);
            return true;
        }
        var destination = IpPacket.Destination(packet, version);
        if (!InPools(destination) && !Allowed(destination, IpPacket.DestinationPort(packet, version)))
        {
            Drop(session, VpnDrop.NotAllowed);
            return true;
        }
        var length = IpPacket.Length(packet, version);
        packet = packet[..length];
        bool written;
        if (length <= 256 && IpPacket.Protocol(packet, version) == IpPacket.Tcp)
        {
            // A SYN's MSS is clamped to the tunnel; only short TCP packets can be SYNs worth copying.
            Span<byte> copy = stackalloc byte[length];
            packet.CopyTo(copy);
            IpPacket.ClampMss(copy, version, session.Mtu);
            written = _tun.Write(copy);
        }
        else
        {
            written = _tun.Write(packet);
        }
        if (!written)
        {
            Drop(session, VpnDrop.HostRefused);
            return true;
        }
        session.Counters.Received(length);
        Counters.Received(length);
        return true;
    }

    private void Drop(VpnSession? session, VpnDrop reason)
    {
        session?.Counters.Drop(reason);
        Counters.Drop(reason);
    }

    /// <summary>Whether <paramref name="address"/> is in the server's pools: the server itself and its clients, always reachable to a client.</summary>
    private bool InPools(ReadOnlySpan<byte> address)
    {
        var pool = address.Length == 4 ? Options.Pool : Options.Pool6;
        if (pool is not { } network)
            return false;
        var bits = address.Length * 8;
        var shift = bits - network.PrefixLength;
        var mask = shift >= bits ? UInt128.Zero : (address.Length == 4 ? (UInt128)uint.MaxValue : UInt128.MaxValue) >> shift << shift;
        return (AddressKey.Of(address) & mask) == (AddressKey.Of(network.BaseAddress) & mask);
    }

    /// <summary>Whether the node's exit policy lets a client reach <paramref name="destination"/> (on <paramref name="port"/>, 0 for no port).</summary>
    private bool Allowed(ReadOnlySpan<byte> destination, int port)
    {
        var policy = _node.Operator.Exits;
        if (!ReferenceEquals(policy, _cachedPolicy) || _allowed.Count > 65_536)
        {
            _allowed.Clear();
            _cachedPolicy = policy;
        }
        var key = (AddressKey.Of(destination) | (destination.Length == 4 ? (UInt128)1 << 127 : 0), port);
        if (_allowed.TryGetValue(key, out var allowed))
            return allowed;
        var address = new IPAddress(destination);
        allowed = port == 0 ? policy.AllowsAnyPort(address) : policy.Allows(address.ToString(), address, port);
        _allowed[key] = allowed;
        return allowed;
    }

    private void ReadLoop() => TunPump.Run(_tun, IpDatagram.Vpn, Counters, Route);

    /// <summary>A packet the host routed into the device goes to the client that owns its destination.</summary>
    private PathEndpoint? Route(ReadOnlySpan<byte> packet, int version, out int mtu, out VpnCounters? counters, out VpnDrop reason)
    {
        var destination = IpPacket.Destination(packet, version);
        if (!_byAddress.TryGetValue(AddressKey.Of(destination), out var session) && (session = SiteOwner(destination)) is null)
        {
            (mtu, counters, reason) = (0, null, VpnDrop.NoRoute);
            return null;
        }
        (mtu, counters, reason) = (session.Mtu, session.Counters, VpnDrop.NoRoute);
        return session.Endpoint;
    }

    private VpnSession? SiteOwner(ReadOnlySpan<byte> destination)
    {
        IPAddress? address = null;
        foreach (var session in _byPeer.Values)
        {
            if (session.Networks.Count == 0)
                continue;
            address ??= new IPAddress(destination);
            if (session.Networks.Any(n => n.Contains(address)))
                return session;
        }
        return null;
    }

    public ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            if (_disposed != 0)
                return ValueTask.CompletedTask;
            _disposed = 1;
            foreach (var session in _byPeer.Values)
            {
                Unregister(session);
                session.Stream?.Abort("the VPN server stopped");
            }
        }
        _tun.Dispose();
        _reader.Join();
        VpnHostState.CleanUp(_stateFile, _host);
        Log.Stopped(_logger, _tun.Name);
        return ValueTask.CompletedTask;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 900, Level = LogLevel.Information, Message = "VPN server on {Device}: clients from {Pool} and {Pool6}, NAT {Nat}")]
        public static partial void Serving(ILogger logger, string device, string pool, string pool6, bool nat);

        [LoggerMessage(EventId = 901, Level = LogLevel.Information, Message = "VPN client {Peer} connected as {Address}, MTU {Mtu}")]
        public static partial void SessionUp(ILogger logger, string peer, string address, int mtu);

        [LoggerMessage(EventId = 902, Level = LogLevel.Information, Message = "VPN client {Peer} disconnected after {In} packets in and {Out} out")]
        public static partial void SessionDown(ILogger logger, string peer, long @in, long @out);

        [LoggerMessage(EventId = 903, Level = LogLevel.Information, Message = "VPN server on {Device} stopped")]
        public static partial void Stopped(ILogger logger, string device);
    }
}
