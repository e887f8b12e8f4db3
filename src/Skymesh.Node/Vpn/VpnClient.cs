using System.Globalization;
using System.Net;
using System.Text;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;
using Skymesh.Mesh.Apps;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node.Vpn;

/// <summary>What a VPN server gave this client when its session began.</summary>
public sealed record VpnLease(IPAddress Address, int PrefixLength, IPAddress Gateway, int Mtu, IPAddress? Address6, int PrefixLength6, IPAddress? Gateway6, IReadOnlyList<IPAddress> Dns)
{
    /// <summary>Reads the server's one-line answer (<c>addr=A/N gw=G mtu=M [addr6=A/N gw6=G] [dns=D,D]</c>).</summary>
    /// <exception cref="InvalidDataException">The line is not such an answer (the server is broken or hostile); the message quotes it.</exception>
    public static VpnLease Parse(string line)
    {
        try
        {
            return ParseFields(line);
        }
        catch (Exception e) when (e is FormatException or OverflowException or ArgumentOutOfRangeException)
        {
            throw new InvalidDataException($"the VPN server's answer \"{line}\" is not addresses, a gateway and an MTU: {e.Message}", e);
        }
    }

    private static VpnLease ParseFields(string line)
    {
        IPAddress? address = null, gateway = null, address6 = null, gateway6 = null;
        int prefix = 0, prefix6 = 0, mtu = 0;
        var dns = new List<IPAddress>();
        foreach (var word in line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = word.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
                continue;
            var (key, value) = (word[..eq], word[(eq + 1)..]);
            switch (key)
            {
                case "addr":
                    (address, prefix) = Cidr(value);
                    break;
                case "addr6":
                    (address6, prefix6) = Cidr(value);
                    break;
                case "gw":
                    gateway = IPAddress.Parse(value);
                    break;
                case "gw6":
                    gateway6 = IPAddress.Parse(value);
                    break;
                case "mtu":
                    mtu = int.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "dns":
                    dns.AddRange(value.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(IPAddress.Parse));
                    break;
            }
        }
        if (address is null || gateway is null || mtu < 576)
            throw new InvalidDataException($"the VPN server's answer \"{line}\" lacks an address, a gateway or a usable MTU");
        return new VpnLease(address, prefix, gateway, mtu, address6, prefix6, gateway6, dns);
    }

    private static (IPAddress, int) Cidr(string text)
    {
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        return (IPAddress.Parse(text[..slash]), int.Parse(text[(slash + 1)..], CultureInfo.InvariantCulture));
    }
}

/// <summary>A VPN client as the local API shows it.</summary>
public sealed record VpnClientStatus(
    string Server, string State, string Device, string Address, string? Address6, string Gateway, int Mtu, IReadOnlyList<string> Routes, bool DefaultRoute,
    IReadOnlyList<string> Dns, IReadOnlyList<string> Networks, int? Path, long PacketsOut, long BytesOut, long PacketsIn, long BytesIn, int Reconnects,
    IReadOnlyDictionary<string, long> Dropped, DateTimeOffset Since, string? Error);

/// <summary>
/// The client end of the VPN (docs/vpn.md): a session stream to the server over a path, a TUN device with the
/// address the server gave, routes (and DNS) pointing into it, and the IP packets between the device and the path's
/// datagrams. A path the control plane repairs carries on under the session; a session that ends (the path lost,
/// the server restarted) is begun again over a new path while the device, its address and routes stay.
/// </summary>
public sealed partial class VpnClient : IAsyncDisposable
{
    /// <summary>The first word of a session request.</summary>
    public const string RequestVersion = "vpn1";

    private readonly MeshNode _node;
    private readonly IHostNetwork _host;
    private readonly Func<NodeAddress, CancellationToken, Task<PathEndpoint>> _openPath;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly VpnHostState _state;
    private readonly string _stateFile;
    private readonly List<string> _routes = [];
    private readonly Lock _pinLock = new();
    private ITunDevice _tun = null!;
    private Thread _reader = null!;
    private Task _sessions = Task.CompletedTask;
    private volatile PathEndpoint? _endpoint;
    private ReliableStream? _stream;
    private VpnLease _lease = null!;
    private volatile int _mtu;
    private byte[] _address = [];
    private byte[]? _address6;
    private volatile string _status = "connecting";
    private string? _error;
    private int _reconnects;
    private int _disposed;

    private VpnClient(MeshNode node, NodeAddress server, VpnConnectOptions options, IHostNetwork host, Func<NodeAddress, CancellationToken, Task<PathEndpoint>> openPath)
    {
        _node = node;
        Server = server;
        Options = options;
        _host = host;
        _openPath = openPath;
        _logger = node.LoggerFactory.CreateLogger("Skymesh.Node.Vpn");
        _stateFile = StateFile(node.Options.DataDir);
        _state = new VpnHostState { Device = options.Device };
        Since = node.Time.GetUtcNow();
    }

    public NodeAddress Server { get; }

    public VpnConnectOptions Options { get; }

    public VpnCounters Counters { get; } = new();

    public DateTimeOffset Since { get; }

    /// <summary>Where a client records what it changed on the host (for <c>skymesh vpn down</c> after a crash).</summary>
    public static string StateFile(string dataDir) => Path.Combine(dataDir, "vpn.state.json");

    /// <summary>
    /// Begins a session with <paramref name="server"/>, then sets up the device, its routes and DNS. Throws (having
    /// undone everything) when the server refuses or the host does.
    /// </summary>
    /// <exception cref="ServiceRefusedException">The server refused the session (its reason in the message).</exception>
    /// <exception cref="IOException">The host refused the device, a route or the DNS change.</exception>
    public static async Task<VpnClient> ConnectAsync(MeshNode node, NodeAddress server, VpnConnectOptions options, IHostNetwork host,
        Func<string, ITunDevice> openTun, Func<NodeAddress, CancellationToken, Task<PathEndpoint>> openPath, CancellationToken cancellationToken)
    {
        VpnHostState.CleanUp(StateFile(node.Options.DataDir), host);
        var client = new VpnClient(node, server, options, host, openPath);
        var (endpoint, stream, lease) = await client.BeginSessionAsync(cancellationToken);
        try
        {
            client._tun = openTun(options.Device);
            client.Apply(endpoint, stream, lease);
            client.SetUpHost();
        }
        catch
        {
            stream.Abort("VPN setup failed");
            await stream.DisposeAsync();
            client._tun?.Dispose();
            VpnHostState.CleanUp(client._stateFile, host);
            throw;
        }
        client._status = "connected";
        client._reader = new Thread(client.ReadLoop) { IsBackground = true, Name = "skymesh vpn client" };
        client._reader.Start();
        client._sessions = Background.Run(() => client.KeepSessionAsync(client._stop.Token));
        Log.Connected(client._logger, server.ToString(), lease.Address.ToString(), lease.Mtu, client._tun.Name);
        node.Events.Append(Events.NodeEventKind.VpnUp, $"VPN to {server} up on {client._tun.Name} as {lease.Address}{(lease.Address6 is null ? "" : $" and {lease.Address6}")}, MTU {client._mtu}", server.ToString());
        return client;
    }

    private async Task<(PathEndpoint, ReliableStream, VpnLease)> BeginSessionAsync(CancellationToken cancellationToken)
    {
        var endpoint = await _openPath(Server, cancellationToken);
        var request = RequestVersion + (Options.Networks.Count > 0 ? " net=" + string.Join(',', Options.Networks) : "");
        var stream = endpoint.OpenStream();
        try
        {
            await stream.WriteAsync(ServiceWire.EncodeRequest(ServiceKind.Vpn, request), cancellationToken);
            var io = stream.AsStream();
            var (status, message) = await ServiceWire.ReadResponseAsync(io, cancellationToken);
            if (status != ServiceStatus.Ok)
                throw new ServiceRefusedException(status, "VPN", message);
            var line = new StringBuilder();
            var one = new byte[1];
            while (true)
            {
                if (await io.ReadAsync(one, cancellationToken) == 0 || line.Length > 1024)
                    throw new InvalidDataException("the VPN server ended the session before giving an address");
                if (one[0] == '\n')
                    break;
                line.Append((char)one[0]);
            }
            return (endpoint, stream, VpnLease.Parse(line.ToString()));
        }
        catch
        {
            stream.Abort("VPN session refused");
            await stream.DisposeAsync();
            throw;
        }
    }

    private void Apply(PathEndpoint endpoint, ReliableStream stream, VpnLease lease)
    {
        _lease = lease;
        _address = lease.Address.GetAddressBytes();
        _address6 = lease.Address6?.GetAddressBytes();
        _mtu = Math.Min(lease.Mtu, endpoint.Datagrams.MaxDatagramSize - 1);
        _stream = stream;
        _endpoint = endpoint;
    }

    private void SetUpHost()
    {
        _state.Save(_stateFile);
        _host.ConfigureDevice(_tun.Name, _mtu, Addresses());
        if (Options.DefaultRoute)
        {
            // The mesh's own traffic (its links, its bus) must keep the routes it has, or it would enter the tunnel it carries.
            foreach (var remote in UnderlayAddresses())
                Pin(remote);
            _node.Switch.LinkUp += OnLinkUp;
            _routes.AddRange(["0.0.0.0/1", "128.0.0.0/1"]);
            if (_lease.Address6 is not null)
                _routes.AddRange(["::/1", "8000::/1"]);
        }
        _routes.AddRange(Options.Routes.Select(r => r.ToString()));
        foreach (var route in _routes)
            _host.AddRoute(route, _tun.Name);
        if (Options.Dns && _lease.Dns.Count > 0)
        {
            var resolv = _host.ResolverFile;
            _state.ResolvConf = resolv;
            _state.ResolvConfBefore = File.Exists(resolv) ? File.ReadAllText(resolv) : "";
            _state.Save(_stateFile);
            File.WriteAllText(resolv, "# written by skymesh vpn connect; restored by skymesh vpn down\n" + string.Concat(_lease.Dns.Select(d => $"nameserver {d}\n")));
        }
    }

    private List<string> Addresses()
    {
        var addresses = new List<string> { $"{_lease.Address}/{_lease.PrefixLength}" };
        if (_lease.Address6 is { } address6)
            addresses.Add($"{address6}/{_lease.PrefixLength6}");
        return addresses;
    }

    private IEnumerable<IPAddress> UnderlayAddresses()
    {
        foreach (var link in _node.Switch.Links)
        {
            if (link.Remote is IPEndPoint remote && !IPAddress.IsLoopback(remote.Address))
                yield return remote.Address.IsIPv4MappedToIPv6 ? remote.Address.MapToIPv4() : remote.Address;
        }
        if (_node.Options.Broker is { } broker && ServiceWire.TryParseTarget(broker, out var host, out _) && IPAddress.TryParse(host, out var address) && !IPAddress.IsLoopback(address))
            yield return address;
    }

    private void OnLinkUp(Mesh.Links.Link link)
    {
        if (link.Remote is IPEndPoint remote && !IPAddress.IsLoopback(remote.Address))
            Pin(remote.Address.IsIPv4MappedToIPv6 ? remote.Address.MapToIPv4() : remote.Address);
    }

    private void Pin(IPAddress address)
    {
        lock (_pinLock)
        {
            var prefix = $"{address}/{(address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128)}";
            if (_disposed != 0 || _state.Pinned.Any(p => p.Prefix == prefix) || _host.RouteTo(address) is not { } route || route.Device == _tun.Name)
                return;
            var pinned = new PinnedRoute(prefix, route.Gateway, route.Device);
            _state.Pinned.Add(pinned);
            _state.Save(_stateFile);
            try
            {
                _host.AddRouteVia(prefix, route.Gateway, route.Device);
            }
            catch (IOException e)
            {
                Log.PinFailed(_logger, prefix, e.Message);
            }
        }
    }

    /// <summary>Waits for the session to end, then begins another (backing off to 10 s) until disconnected.</summary>
    private async Task KeepSessionAsync(CancellationToken cancellationToken)
    {
        var sink = new byte[64];
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                while (await _stream!.ReadAsync(sink, cancellationToken) > 0)
                {
                }
                _error = "the server ended the session";
            }
            catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                _error = e.Message;
            }
            if (cancellationToken.IsCancellationRequested)
                return;
            _status = "reconnecting";
            Log.SessionLost(_logger, Server.ToString(), _error ?? "");
            var delay = TimeSpan.FromSeconds(0.5);
            while (!cancellationToken.IsCancellationRequested)
            {
                try
                {
                    var (endpoint, stream, lease) = await BeginSessionAsync(cancellationToken);
                    var old = _stream;
                    var moved = !lease.Address.Equals(_lease.Address) || !Equals(lease.Address6, _lease.Address6);
                    if (moved)
                        Log.AddressChanged(_logger, Server.ToString(), _lease.Address.ToString(), lease.Address.ToString());
                    Apply(endpoint, stream, lease);
                    // A server that restarted may give another address: the device takes it (its routes stay).
                    if (moved)
                    {
                        // Routes through a device that lost its last address are gone: they are put back.
                        _host.ConfigureDevice(_tun.Name, _mtu, Addresses());
                        foreach (var route in _routes)
                            _host.AddRoute(route, _tun.Name);
                    }
                    if (old is not null)
                        await old.DisposeAsync();
                    _status = "connected";
                    _error = null;
                    Interlocked.Increment(ref _reconnects);
                    Log.Reconnected(_logger, Server.ToString());
                    break;
                }
                catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
                {
                    _error = e.Message;
                    try
                    {
                        await Task.Delay(delay, _node.Time, cancellationToken);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(10).Ticks));
                }
            }
        }
    }

    /// <summary>A packet from the server (a path datagram of kind <see cref="IpDatagram.Vpn"/>, without its kind byte), on the link's receive thread.</summary>
    internal bool OnPacket(NodeAddress peer, ReadOnlySpan<byte> packet)
    {
        if (peer != Server || _disposed != 0)
            return false;
        var version = IpPacket.Version(packet);
        if (version == 0)
        {
            Counters.Drop(VpnDrop.Malformed);
            return true;
        }
        var destination = IpPacket.Destination(packet, version);
        if (!destination.SequenceEqual(version == 4 ? _address : _address6) && !ForOurNetworks(destination))
        {
            Counters.Drop(VpnDrop.NoRoute);
            return true;
        }
        var length = IpPacket.Length(packet, version);
        if (!_tun.Write(packet[..length]))
        {
            Counters.Drop(VpnDrop.HostRefused);
            return true;
        }
        Counters.Received(length);
        return true;
    }

    private bool ForOurNetworks(ReadOnlySpan<byte> destination)
    {
        if (Options.Networks.Count == 0)
            return false;
        var address = new IPAddress(destination);
        return Options.Networks.Any(n => n.Contains(address));
    }

    private void ReadLoop() => TunPump.Run(_tun, IpDatagram.Vpn, Counters, Route);

    /// <summary>Every packet the host routes into the device goes to the server, over the session's path.</summary>
    private PathEndpoint? Route(ReadOnlySpan<byte> packet, int version, out int mtu, out VpnCounters? session, out VpnDrop reason)
    {
        (mtu, session, reason) = (_mtu, null, VpnDrop.PathRefused);
        return _endpoint;
    }

    public VpnClientStatus Status()
    {
        var endpoint = _endpoint;
        var path = endpoint is null ? null : _node.PathEnds.FirstOrDefault(p => p.Endpoint == endpoint)?.Id;
        return new VpnClientStatus(Server.ToString(), _status, _tun.Name, $"{_lease.Address}/{_lease.PrefixLength}",
            _lease.Address6 is { } a6 ? $"{a6}/{_lease.PrefixLength6}" : null, _lease.Gateway.ToString(), _mtu, [.. _routes], Options.DefaultRoute,
            Options.Dns ? [.. _lease.Dns.Select(d => d.ToString())] : [], [.. Options.Networks.Select(n => n.ToString())], path,
            Counters.PacketsToMesh, Counters.BytesToMesh, Counters.PacketsFromMesh, Counters.BytesFromMesh, Volatile.Read(ref _reconnects),
            Counters.Drops(), Since, _status == "connected" ? null : _error);
    }

    /// <summary>Ends the session and puts the host back: the device and its routes go, pinned routes and DNS are restored.</summary>
    public async ValueTask DisposeAsync()
    {
        lock (_pinLock)
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
                return;
        }
        _node.Switch.LinkUp -= OnLinkUp;
        await Background.CancelAsync(_stop);
        try
        {
            await _sessions;
        }
        catch (OperationCanceledException)
        {
        }
        if (_stream is { } stream)
        {
            try
            {
                await stream.CompleteAsync().WaitAsync(TimeSpan.FromSeconds(1), _node.Time);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                stream.Abort("VPN disconnected");
            }
            await stream.DisposeAsync();
        }
        _tun.Dispose();
        _reader.Join();
        VpnHostState.CleanUp(_stateFile, _host);
        _stop.Dispose();
        Log.Disconnected(_logger, Server.ToString());
        _node.Events.Append(Events.NodeEventKind.VpnDown, $"VPN to {Server} down; the host's routes{(Options.Dns ? " and DNS" : "")} restored", Server.ToString());
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 910, Level = LogLevel.Information, Message = "VPN to {Server} up: {Address}, MTU {Mtu}, device {Device}")]
        public static partial void Connected(ILogger logger, string server, string address, int mtu, string device);

        [LoggerMessage(EventId = 911, Level = LogLevel.Warning, Message = "VPN session with {Server} lost ({Reason}); beginning another")]
        public static partial void SessionLost(ILogger logger, string server, string reason);

        [LoggerMessage(EventId = 912, Level = LogLevel.Information, Message = "VPN session with {Server} begun again")]
        public static partial void Reconnected(ILogger logger, string server);

        [LoggerMessage(EventId = 913, Level = LogLevel.Warning, Message = "VPN server {Server} gave {New} where it had given {Old}; the device takes the new address")]
        public static partial void AddressChanged(ILogger logger, string server, string old, string @new);

        [LoggerMessage(EventId = 914, Level = LogLevel.Warning, Message = "Could not keep {Prefix} outside the VPN: {Reason}")]
        public static partial void PinFailed(ILogger logger, string prefix, string reason);

        [LoggerMessage(EventId = 915, Level = LogLevel.Information, Message = "VPN to {Server} down")]
        public static partial void Disconnected(ILogger logger, string server);
    }
}
