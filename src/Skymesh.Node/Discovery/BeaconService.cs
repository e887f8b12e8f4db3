using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Control.Discovery;
using Skymesh.Identity;

namespace Skymesh.Node.Discovery;

/// <summary>Discovery by LAN beacons, as node.json's "discovery" sets it.</summary>
public sealed record DiscoveryOptions(string Interface, IPEndPoint Address, TimeSpan Interval);

/// <summary>
/// Broadcasts the node's signed beacon on its LAN and links to the nodes whose beacons it hears (off unless
/// node.json enables it: on a public network it would invite strangers). A beacon only says where to knock;
/// the link handshake proves who answers. Attempts are rate-limited per node, so forged or replayed beacons
/// cannot make the node dial in a loop.
/// </summary>
public sealed partial class BeaconService : IAsyncDisposable
{
    private static readonly TimeSpan Tolerance = TimeSpan.FromMinutes(1);
    private readonly MeshNode _node;
    private readonly DiscoveryOptions _options;
    private readonly Socket _listener;
    private readonly Socket _sender;
    private readonly ITimer _timer;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<NodeAddress, long> _lastAttempt = new();
    private readonly ILogger _logger;
    private readonly int _port;
    private readonly Task _loop;
    private long _sent;
    private long _heard;
    private long _ignored;
    private long _linked;

    private BeaconService(MeshNode node, DiscoveryOptions options, ILogger logger)
    {
        _node = node;
        _options = options;
        _logger = logger;
        if (!node.Interfaces.TryGetValue(options.Interface, out var nic) || nic is not Mesh.Interfaces.UdpInterface)
            throw new NodeConfigException("$.discovery.interface", $"\"{options.Interface}\" is not one of this node's UDP interfaces");
        _port = ((IPEndPoint)nic.LocalEndPoint).Port;
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        _listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Bind(new IPEndPoint(IPAddress.Any, options.Address.Port));
        _sender = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { EnableBroadcast = true };
        _loop = Background.Run(ListenAsync);
        _timer = node.Time.CreateTimer(static s => ((BeaconService)s!).Send(), this, TimeSpan.Zero, options.Interval);
    }

    public long Sent => Interlocked.Read(ref _sent);

    public long Heard => Interlocked.Read(ref _heard);

    /// <summary>Beacons ignored: malformed, stale, forged (our own are not counted).</summary>
    public long Ignored => Interlocked.Read(ref _ignored);

    /// <summary>Raised on the listening loop for each beacon ignored, with the reason; handlers must not block.</summary>
    public event Action<BeaconError>? BeaconIgnored;

    /// <summary>Links made to nodes found by their beacons.</summary>
    public long Linked => Interlocked.Read(ref _linked);

    public static BeaconService Start(MeshNode node, DiscoveryOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(options);
        return new BeaconService(node, options, (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Skymesh.Node.Discovery"));
    }

    private void Send()
    {
        try
        {
            var beacon = Beacon.Create(_node.Key, _port, _node.Time.GetUtcNow());
            _sender.SendTo(beacon.Bytes, _options.Address);
            Interlocked.Increment(ref _sent);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            Log.SendFailed(_logger, _options.Address.ToString(), e.Message);
        }
    }

    private async Task ListenAsync()
    {
        var buffer = new byte[512];
        EndPoint any = new IPEndPoint(IPAddress.Any, 0);
        while (!_stop.IsCancellationRequested)
        {
            SocketReceiveFromResult received;
            try
            {
                received = await _listener.ReceiveFromAsync(buffer, SocketFlags.None, any, _stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            var result = Beacon.Check(buffer.AsSpan(0, received.ReceivedBytes), _node.Address, _node.Time.GetUtcNow(), Tolerance, out var beacon);
            if (result == BeaconError.Own)
                continue;
            if (result != BeaconError.None)
            {
                Interlocked.Increment(ref _ignored);
                Log.Ignored(_logger, received.RemoteEndPoint.ToString() ?? "?", result.ToString());
                BeaconIgnored?.Invoke(result);
                continue;
            }
            Interlocked.Increment(ref _heard);
            var from = (IPEndPoint)received.RemoteEndPoint;
            // Of two nodes that hear each other, only the one with the lower address dials: two handshakes
            // crossing on the same pair of sockets would each wait for the other.
            if (_node.FindLink(beacon!.Node) is not null || string.CompareOrdinal(_node.Address.ToString(), beacon.Node.ToString()) > 0)
                continue;
            // One attempt per node per three intervals, whatever the beacons say.
            var now = _node.Time.GetTimestamp();
            if (_lastAttempt.TryGetValue(beacon.Node, out var last) && _node.Time.GetElapsedTime(last, now) < _options.Interval * 3)
                continue;
            _lastAttempt[beacon.Node] = now;
            _ = Background.Run(() => LinkAsync(beacon.Node, new IPEndPoint(from.Address, beacon.Port)));
        }
    }

    private async Task LinkAsync(NodeAddress peer, IPEndPoint at)
    {
        try
        {
            await _node.ConnectAsync(_options.Interface, at, peer, _stop.Token);
            Interlocked.Increment(ref _linked);
            Log.Linked(_logger, peer.ToString(), at.ToString());
        }
        catch (Exception e) when (e is NodeRequestException or OperationCanceledException or Mesh.Links.LinkFailedException or ObjectDisposedException)
        {
            Log.LinkFailed(_logger, peer.ToString(), at.ToString(), e.Message);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        await _timer.DisposeAsync();
        await _stop.CancelAsync();
        _listener.Dispose();
        _sender.Dispose();
        await _loop;
        _stop.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 800, Level = LogLevel.Information, Message = "Found {Peer} by its beacon; linked at {At}")]
        public static partial void Linked(ILogger logger, string peer, string at);

        [LoggerMessage(EventId = 801, Level = LogLevel.Debug, Message = "Beacon from {From} ignored: {Reason}")]
        public static partial void Ignored(ILogger logger, string from, string reason);

        [LoggerMessage(EventId = 802, Level = LogLevel.Debug, Message = "No link to {Peer} at {At} after its beacon: {Reason}")]
        public static partial void LinkFailed(ILogger logger, string peer, string at, string reason);

        [LoggerMessage(EventId = 803, Level = LogLevel.Warning, Message = "Beacon not sent to {Address}: {Reason}")]
        public static partial void SendFailed(ILogger logger, string address, string reason);
    }
}
