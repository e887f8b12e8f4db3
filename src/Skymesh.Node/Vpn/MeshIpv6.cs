using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;
using Skymesh.Mesh.Paths;
using Skymesh.Mesh.Wire;

namespace Skymesh.Node.Vpn;

/// <summary>Mesh IPv6 settings (node.json <c>ipv6</c>).</summary>
public sealed record MeshIpv6Options
{
    /// <summary>The TUN device that holds the node's mesh address.</summary>
    public string Device { get; init; } = "skymesh6";

    /// <summary>Largest packet; null: what the node's interfaces carry over a path (at least 1,280).</summary>
    public int? Mtu { get; init; }
}

/// <summary>
/// Every node's stable IPv6 address, derived from its key (docs/vpn.md, "Mesh IPv6"): <c>fd73:6b79::/32</c> followed
/// by the first 96 bits of SHA-256("skymesh ipv6 v1" ‖ key). A node with <c>ipv6</c> on holds its address on a TUN
/// device that routes the whole prefix into the mesh; a packet to another node's address goes as a path datagram to
/// that node (a path is opened when there is none), which takes it only when its source is the sender's own derived
/// address — so a node cannot speak for another. Any program that speaks IPv6 (ping, ssh, curl, iperf3) works
/// between nodes by address, with no per-pair setup.
/// </summary>
public sealed partial class MeshIpv6 : IAsyncDisposable
{
    /// <summary>The mesh's IPv6 prefix.</summary>
    public static readonly IPNetwork Prefix = IPNetwork.Parse("fd73:6b79::/32");

    private const int MaxPending = 16;

    private readonly MeshNode _node;
    private readonly ITunDevice _tun;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<UInt128, NodeAddress> _known = new();
    private readonly ConcurrentDictionary<NodeAddress, PathEndpoint> _routes = new();
    private readonly ConcurrentDictionary<NodeAddress, UInt128> _peerKeys = new();
    private readonly ConcurrentDictionary<NodeAddress, Pending> _opening = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _reader;
    private readonly byte[] _self;
    private long _lastRefresh = long.MinValue;
    private int _disposed;

    private MeshIpv6(MeshNode node, ITunDevice tun, int mtu)
    {
        _node = node;
        _tun = tun;
        Mtu = mtu;
        Address = AddressOf(node.Address);
        _self = Address.GetAddressBytes();
        _logger = node.LoggerFactory.CreateLogger("Skymesh.Node.Ipv6");
        _reader = new Thread(ReadLoop) { IsBackground = true, Name = "skymesh ipv6" };
    }

    /// <summary>This node's mesh address.</summary>
    public IPAddress Address { get; }

    public int Mtu { get; }

    public string Device => _tun.Name;

    public VpnCounters Counters { get; } = new();

    /// <summary>Nodes whose addresses this node can resolve besides its neighbours and path peers (the mesh's graph, set by the node host).</summary>
    public Func<IEnumerable<NodeAddress>>? KnownNodes { get; set; }

    /// <summary>Opens a path to a node (set by the node host when it has a control plane).</summary>
    public Func<NodeAddress, CancellationToken, Task<PathEndpoint>>? OpenPath { get; set; }

    /// <summary>The mesh IPv6 address of <paramref name="node"/>.</summary>
    public static IPAddress AddressOf(NodeAddress node)
    {
        var input = new byte[15 + 32];
        Encoding.ASCII.GetBytes("skymesh ipv6 v1", input);
        node.ToBytes().CopyTo(input.AsSpan(15));
        var hash = SHA256.HashData(input);
        var bytes = new byte[16];
        Prefix.BaseAddress.GetAddressBytes().AsSpan(0, 4).CopyTo(bytes);
        hash.AsSpan(0, 12).CopyTo(bytes.AsSpan(4));
        return new IPAddress(bytes);
    }

    /// <summary>The largest IPv6 packet a path over an interface of <paramref name="linkMtu"/> bytes carries as a datagram (less its kind byte).</summary>
    public static int PathMtu(int linkMtu) => FrameBuilder.MaxPayload(linkMtu, encrypted: true) - PathCipher.Overhead - 1;

    internal static MeshIpv6 Start(MeshNode node, MeshIpv6Options options, IHostNetwork host, Func<string, ITunDevice> openTun)
    {
        var mtu = options.Mtu ?? Math.Max(IpPacket.MinIpv6Mtu, Math.Min(65_535, node.Interfaces.Values.Select(i => PathMtu(i.Mtu)).DefaultIfEmpty(IpPacket.MinIpv6Mtu).Min()));
        var tun = openTun(options.Device);
        var ipv6 = new MeshIpv6(node, tun, mtu);
        try
        {
            host.ConfigureDevice(tun.Name, mtu, [$"{ipv6.Address}/{Prefix.PrefixLength}"]);
        }
        catch
        {
            tun.Dispose();
            throw;
        }
        ipv6._reader.Start();
        Log.Started(ipv6._logger, ipv6.Address.ToString(), tun.Name, mtu);
        return ipv6;
    }

    /// <summary>The node whose mesh address is <paramref name="address"/>, among those this node knows; null when none.</summary>
    private NodeAddress? Resolve(ReadOnlySpan<byte> address)
    {
        var key = AddressKey.Of(address);
        if (_known.TryGetValue(key, out var node))
            return node;
        // Learn the addresses of every node known now, at most once a second (a scan of unknown addresses costs no more).
        var now = _node.Time.GetTimestamp();
        var last = Interlocked.Read(ref _lastRefresh);
        if (last != long.MinValue && _node.Time.GetElapsedTime(last, now) < TimeSpan.FromSeconds(1))
            return null;
        if (Interlocked.CompareExchange(ref _lastRefresh, now, last) != last)
            return null;
        foreach (var candidate in Candidates())
            _known.TryAdd(AddressKey.Of(AddressOf(candidate)), candidate);
        return _known.TryGetValue(key, out node) ? node : null;
    }

    private IEnumerable<NodeAddress> Candidates()
    {
        foreach (var link in _node.Switch.Links)
        {
            if (link.Peer is { } peer)
                yield return peer;
        }
        foreach (var path in _node.PathEnds)
            yield return path.Spec.Peer;
        if (KnownNodes?.Invoke() is { } known)
        {
            foreach (var node in known)
                yield return node;
        }
    }

    /// <summary>A datagram of kind <see cref="IpDatagram.MeshIpv6"/> from <paramref name="peer"/>, without the kind byte.</summary>
    internal void OnPacket(NodeAddress peer, PathEndpoint endpoint, ReadOnlySpan<byte> packet)
    {
        if (IpPacket.Version(packet) != 6)
        {
            Counters.Drop(VpnDrop.Malformed);
            return;
        }
        if (!IpPacket.Destination(packet, 6).SequenceEqual(_self))
        {
            Counters.Drop(VpnDrop.NoRoute);
            return;
        }
        var source = IpPacket.Source(packet, 6);
        var key = AddressKey.Of(source);
        if (_peerKeys.GetOrAdd(peer, static p => AddressKey.Of(AddressOf(p))) != key)
        {
            Counters.Drop(VpnDrop.Spoofed);
            return;
        }
        _known.TryAdd(key, peer);
        // Answers go back the way the packet came when this node has no path of its own to the sender yet.
        _routes.TryAdd(peer, endpoint);
        var length = IpPacket.Length(packet, 6);
        if (!_tun.Write(packet[..length]))
        {
            Counters.Drop(VpnDrop.HostRefused);
            return;
        }
        Counters.Received(length);
    }

    private void ReadLoop()
    {
        var buffer = GC.AllocateUninitializedArray<byte>(65_536 + 1, pinned: true);
        var answer = new byte[IpPacket.MinIpv6Mtu];
        buffer[0] = IpDatagram.MeshIpv6;
        while (true)
        {
            var n = _tun.Read(buffer.AsSpan(1));
            if (n <= 0)
                return;
            var packet = buffer.AsSpan(1, n);
            if (IpPacket.Version(packet) != 6)
            {
                Counters.Drop(VpnDrop.Malformed);
                continue;
            }
            if (!IpPacket.Source(packet, 6).SequenceEqual(_self))
            {
                // The host's own link-local chatter (router and neighbour solicitations, MLD) has nowhere to go in the mesh.
                Counters.Drop(VpnDrop.NoRoute);
                continue;
            }
            if (Resolve(IpPacket.Destination(packet, 6)) is not { } peer)
            {
                Counters.Drop(VpnDrop.NoRoute);
                continue;
            }
            if (Route(peer) is not { } endpoint)
            {
                Queue(peer, buffer.AsSpan(0, n + 1));
                continue;
            }
            Send(endpoint, peer, buffer.AsSpan(0, n + 1), answer);
        }
    }

    private void Send(PathEndpoint endpoint, NodeAddress peer, Span<byte> datagram, byte[] answer)
    {
        if (TunPump.Send(_tun, endpoint, datagram, 6, Mtu, answer) is { } drop)
        {
            Counters.Drop(drop);
            if (drop == VpnDrop.PathRefused && endpoint.BrokenBy is not null)
                _routes.TryRemove(new KeyValuePair<NodeAddress, PathEndpoint>(peer, endpoint));
            return;
        }
        Counters.Sent(datagram.Length - 1);
    }

    /// <summary>The path to <paramref name="peer"/>: the one used last while it works, else the node's best one; null when there is none.</summary>
    private PathEndpoint? Route(NodeAddress peer)
    {
        if (_routes.TryGetValue(peer, out var endpoint) && endpoint.BrokenBy is null)
            return endpoint;
        endpoint = _node.FindPath(peer);
        if (endpoint is null)
            _routes.TryRemove(peer, out _);
        else
            _routes[peer] = endpoint;
        return endpoint;
    }

    /// <summary>Holds a few packets for a node while a path to it is opened, then sends them.</summary>
    private void Queue(NodeAddress peer, ReadOnlySpan<byte> datagram)
    {
        if (OpenPath is not { } open)
        {
            Counters.Drop(VpnDrop.NoRoute);
            return;
        }
        var pending = _opening.GetOrAdd(peer, _ => new Pending());
        lock (pending)
        {
            if (pending.Packets.Count >= MaxPending)
            {
                Counters.Drop(VpnDrop.PathRefused);
                return;
            }
            pending.Packets.Add(datagram.ToArray());
            if (pending.Started)
                return;
            pending.Started = true;
        }
        _ = Background.Run(async () =>
        {
            PathEndpoint? endpoint = null;
            try
            {
                endpoint = await open(peer, _stop.Token);
                _routes[peer] = endpoint;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Log.NoPath(_logger, peer.ToString(), e.Message);
            }
            _opening.TryRemove(peer, out _);
            List<byte[]> packets;
            lock (pending)
                packets = [.. pending.Packets];
            var answer = new byte[IpPacket.MinIpv6Mtu];
            foreach (var datagram in packets)
            {
                if (endpoint is null || _disposed != 0)
                    Counters.Drop(VpnDrop.NoRoute);
                else
                    Send(endpoint, peer, datagram, answer);
            }
        });
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await Background.CancelAsync(_stop);
        _tun.Dispose();
        _reader.Join();
        _stop.Dispose();
    }

    private sealed class Pending
    {
        public List<byte[]> Packets { get; } = [];

        public bool Started { get; set; }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 920, Level = LogLevel.Information, Message = "Mesh IPv6 address {Address} on {Device}, MTU {Mtu}")]
        public static partial void Started(ILogger logger, string address, string device, int mtu);

        [LoggerMessage(EventId = 921, Level = LogLevel.Information, Message = "No path for IPv6 packets to {Node}: {Reason}")]
        public static partial void NoPath(ILogger logger, string node, string reason);
    }
}
