using System.Net;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node.Control;

/// <summary>Limits of the control traffic a node relays for its neighbours (node.json <c>busRelay</c>).</summary>
public sealed record BusRelayOptions
{
    /// <summary>Relay for neighbours at all (default true: it costs a neighbour's few control messages a minute).</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>Tunnels one neighbour may hold open through this node at once: its own and those of nodes behind it.</summary>
    public int MaxTunnelsPerNeighbour { get; init; } = 64;

    /// <summary>Bytes a second relayed for one neighbour, both ways together; beyond it the tunnels wait.</summary>
    public int BytesPerSecondPerNeighbour { get; init; } = 1 << 20;

    /// <summary>
    /// On a node that reaches a NATS cluster directly: the leafnode port (host:port) of its server, where this node
    /// splices the leafnode tunnels of NATS servers elsewhere in the mesh (docs/control-plane.md, "Several brokers").
    /// </summary>
    public string? Leafnodes { get; init; }
}

/// <summary>What the relay counts, for <c>/metrics</c> and <c>skymesh status</c>.</summary>
public sealed record BusRelayCounters(long TunnelsOpen, long TunnelsOpened, long TunnelsRefused, long TunnelsFailed, long BytesUp, long BytesDown, long ThrottledWaits,
    IReadOnlyList<BusRelayNeighbour> Neighbours);

/// <summary>One neighbour's relayed control traffic.</summary>
public sealed record BusRelayNeighbour(string Neighbour, long TunnelsOpen, long BytesUp, long BytesDown);

/// <summary>
/// Relays the control bus for neighbours that cannot reach it themselves (docs/control-plane.md, "Control through the
/// mesh"), on the link service <c>control-bus</c>. A neighbour asks <c>status</c> (is this node on the bus, and how
/// many relays away from the broker) and opens a <c>tunnel</c>: a byte stream that this node splices to the broker —
/// a TCP connection to it when this node reaches it directly, or a tunnel through this node's own chosen neighbour
/// when it does not, so the relaying is recursive. The bytes are the neighbour's SSMP session inside TLS to the broker,
/// so no relay can read them, or add to them; a relay can only carry them or drop them. Tunnels are bounded per
/// neighbour in number and in bytes a second, and counted.
/// </summary>
public sealed partial class BusRelay : IAsyncDisposable
{
    public const string Service = "control-bus";

    /// <summary>The furthest from the broker a node offers to relay: a tunnel through more relays than this is refused.</summary>
    public const int MaxHops = 16;

    private readonly MeshNode _node;
    private readonly BusRelayOptions _options;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<NodeAddress, NeighbourState> _neighbours = new();
    private long _opened;
    private long _refused;
    private long _failed;
    private long _throttled;

    public BusRelay(MeshNode node, BusRelayOptions options, ILoggerFactory loggerFactory)
    {
        _node = node;
        _options = options;
        _logger = loggerFactory.CreateLogger("Skymesh.Node.BusRelay");
        node.Channels.Register(Service, ServeAsync);
    }

    /// <summary>The node's control plane, once it runs: the relay offers only what it has (a bus it is connected to).</summary>
    public ControlPlane? Control { get; set; }

    /// <summary>When the node reaches the bus through neighbours itself: how it opens its own tunnels onwards.</summary>
    public MeshBusConnector? Upstream { get; set; }

    /// <summary>Told when a neighbour says it has just joined the bus (verb <c>up</c>): a node waiting for one tries again at once.</summary>
    public event Action<NodeAddress>? NeighbourJoined;

    public BusRelayCounters Counters()
    {
        var neighbours = _neighbours.Select(n => new BusRelayNeighbour(n.Key.ToString(), Volatile.Read(ref n.Value.Open), Interlocked.Read(ref n.Value.Up), Interlocked.Read(ref n.Value.Down)))
            .OrderBy(n => n.Neighbour, StringComparer.Ordinal).ToList();
        return new BusRelayCounters(neighbours.Sum(n => n.TunnelsOpen), Interlocked.Read(ref _opened), Interlocked.Read(ref _refused), Interlocked.Read(ref _failed),
            neighbours.Sum(n => n.BytesUp), neighbours.Sum(n => n.BytesDown), Interlocked.Read(ref _throttled), neighbours);
    }

    /// <summary>Relays between this node and the broker: 0 when it reaches the broker directly; null when it is not on the bus.</summary>
    public int? Hops
    {
        get
        {
            if (Control is not { Connected: true })
                return null;
            if (Upstream is { } upstream)
                return upstream.Hops;
            return Direct() is null ? null : 0;
        }
    }

    /// <summary>Tells every neighbour that this node is on the bus now, so that those waiting for a way in ask again.</summary>
    public void AnnounceJoined()
    {
        foreach (var link in _node.Switch.Links)
        {
            if (link.State != LinkState.Up || link.Peer is null)
                continue;
            _ = Background.Run(async () =>
            {
                try
                {
                    var stream = await _node.Channels.OpenAsync(link, Service, "up", CancellationToken.None);
                    await stream.CompleteAsync();
                }
                catch (Exception e) when (e is InvalidOperationException or IOException or ObjectDisposedException)
                {
                    // The neighbour will ask by itself.
                }
            });
        }
    }

    /// <summary>Whether this node's tunnels can reach a NATS server's leafnode port: its own, or one its upstream leads to.</summary>
    public bool LeafAvailable => Control is { Connected: true } && (Upstream is { } upstream ? upstream.LeafUpstream : Direct() is not null && LeafTarget() is not null);

    private List<(string Host, int Port)>? LeafTarget() =>
        _options.Leafnodes is { } target && Skymesh.Mesh.Apps.ServiceWire.TryParseTarget(target, out var host, out var port) ? [(host, port)] : null;

    /// <summary>
    /// The kind of control bus this node's tunnels lead to: <c>ssmp</c> (an SSMP broker) or <c>nats</c> (a NATS cluster);
    /// what its own upstream said when it reaches the bus through neighbours too.
    /// </summary>
    public string Kind => Upstream is { } upstream ? upstream.Kind : _node.Options.Broker is { } broker && NodeOptions.NatsServers(broker) is not null ? "nats" : "ssmp";

    /// <summary>Where this node reaches the bus over IP, when it does: the SSMP broker, or the NATS servers in the order given.</summary>
    private List<(string Host, int Port)>? Direct()
    {
        if (Upstream is not null || _node.Options.Broker is not { } broker)
            return null;
        var targets = NodeOptions.NatsServers(broker) is { } servers ? servers.Select(s => s["nats://".Length..]) : [broker];
        var direct = new List<(string, int)>();
        foreach (var target in targets)
        {
            if (Skymesh.Mesh.Apps.ServiceWire.TryParseTarget(target, out var host, out var port))
                direct.Add((host, port));
        }
        return direct.Count == 0 ? null : direct;
    }

    private async Task ServeAsync(Link link, string verb, ReliableStream stream, CancellationToken cancellationToken)
    {
        var peer = link.Peer!.Value;
        switch (verb)
        {
            case "up":
                NeighbourJoined?.Invoke(peer);
                await stream.CompleteAsync(cancellationToken);
                return;
            case "status":
                await AnswerAndEndAsync(stream, _options.Enabled && Hops is { } hops && hops < MaxHops
                    ? $"ok hops={hops} upstream={(Upstream?.Via?.ToString() ?? "-")} name={_node.Options.BrokerName} kind={Kind}{(LeafAvailable ? " leaf=1" : "")}"
                    : $"no {Unavailable()}", cancellationToken);
                return;
            case "tunnel":
                await TunnelAsync(peer, MaxHops, leaf: false, stream, cancellationToken);
                return;
            case var _ when verb.StartsWith("tunnel:", StringComparison.Ordinal) && int.TryParse(verb.AsSpan(7), out var ttl) && ttl >= 0:
                await TunnelAsync(peer, Math.Min(ttl, MaxHops), leaf: false, stream, cancellationToken);
                return;
            case var _ when verb.StartsWith("leaf:", StringComparison.Ordinal) && int.TryParse(verb.AsSpan(5), out var leafTtl) && leafTtl >= 0:
                await TunnelAsync(peer, Math.Min(leafTtl, MaxHops), leaf: true, stream, cancellationToken);
                return;
            default:
                await RefuseAsync(stream, $"unknown verb {verb}", cancellationToken);
                return;
        }
    }

    private string Unavailable() =>
        !_options.Enabled ? "this node does not relay the control bus"
        : Control is not { Connected: true } ? "this node is not on the control bus"
        : Upstream is null && Direct() is null ? "this node has no address of its control bus to relay to"
        : "too many relays from the broker (or a tunnel that has passed too many already)";

    private static Task ReplyAsync(ReliableStream stream, string line, CancellationToken cancellationToken) =>
        stream.WriteAsync(Encoding.ASCII.GetBytes(line + "\n"), cancellationToken).AsTask();

    private static async Task AnswerAndEndAsync(ReliableStream stream, string line, CancellationToken cancellationToken)
    {
        await ReplyAsync(stream, line, cancellationToken);
        await stream.CompleteAsync(cancellationToken);
    }

    /// <summary>Says no, and why, to a request this node does not carry out (counted).</summary>
    private Task RefuseAsync(ReliableStream stream, string reason, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _refused);
        return AnswerAndEndAsync(stream, $"no {reason}", cancellationToken);
    }

    /// <param name="ttl">Further relays the tunnel may pass beyond this node.</param>
    /// <param name="leaf">A NATS server's leafnode connection, to the cluster's leafnode port, rather than a node's session.</param>
    private async Task TunnelAsync(NodeAddress peer, int ttl, bool leaf, ReliableStream stream, CancellationToken cancellationToken)
    {
        var state = _neighbours.GetOrAdd(peer, _ => new NeighbourState(_options.BytesPerSecondPerNeighbour));
        if (!_options.Enabled || Hops is not { } hops || hops >= MaxHops || hops > ttl)
        {
            await RefuseAsync(stream, Unavailable(), cancellationToken);
            return;
        }
        if (leaf && !LeafAvailable)
        {
            await RefuseAsync(stream, "this node leads to no NATS server's leafnode port", cancellationToken);
            return;
        }
        if (Interlocked.Increment(ref state.Open) > _options.MaxTunnelsPerNeighbour)
        {
            Interlocked.Decrement(ref state.Open);
            Log.TooMany(_logger, peer.ToString(), _options.MaxTunnelsPerNeighbour);
            await RefuseAsync(stream, $"neighbour has {_options.MaxTunnelsPerNeighbour} tunnels open through this node already", cancellationToken);
            return;
        }
        Stream? upstream = null;
        try
        {
            try
            {
                upstream = await OpenUpstreamAsync(ttl, leaf, cancellationToken);
            }
            catch (Exception e) when (e is IOException or SocketException or InvalidOperationException or OperationCanceledException or Skymesh.Control.Bus.ControlBusException)
            {
                Interlocked.Increment(ref _failed);
                await AnswerAndEndAsync(stream, $"no cannot reach the broker: {e.Message.Replace('\n', ' ')}", cancellationToken);
                return;
            }
            Interlocked.Increment(ref _opened);
            await ReplyAsync(stream, "ok", cancellationToken);
            await SpliceAsync(stream, upstream, state, cancellationToken);
        }
        finally
        {
            Interlocked.Decrement(ref state.Open);
            if (upstream is not null)
                await upstream.DisposeAsync();
        }
    }

    private async Task<Stream> OpenUpstreamAsync(int ttl, bool leaf, CancellationToken cancellationToken)
    {
        if (Upstream is { } onwards)
            return await onwards.OpenTunnelAsync(ttl, leaf, cancellationToken);
        var targets = (leaf ? LeafTarget() : Direct()) ?? throw new InvalidOperationException("this node has no broker address");
        // The first server of a cluster that takes the connection (one is down: the next).
        for (var i = 0; ; i++)
        {
            var (host, port) = targets[i];
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10), _node.Time);
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, cancellationToken);
                await socket.ConnectAsync(host, port, linked.Token);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch (Exception e) when (i + 1 < targets.Count && e is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                socket.Dispose();
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }
    }

    /// <summary>Copies both ways until either side ends; then ends the other.</summary>
    private async Task SpliceAsync(ReliableStream neighbour, Stream upstream, NeighbourState state, CancellationToken cancellationToken)
    {
        await SpliceStreamsAsync(neighbour.AsStream(), upstream, state, cancellationToken);
        neighbour.Abort("the tunnel to the control bus ended");
    }

    /// <summary>
    /// Copies both ways between <paramref name="down"/> (the side away from the bus) and <paramref name="up"/> until either
    /// ends, then ends the other; within <paramref name="state"/>'s byte budget and counted there, when given.
    /// </summary>
    private async Task SpliceStreamsAsync(Stream down, Stream up, NeighbourState? state, CancellationToken cancellationToken)
    {
        using var done = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        await Task.WhenAll(
            Background.Run(() => CopyAsync(down, up, state, n => Interlocked.Add(ref state!.Up, n), done)),
            Background.Run(() => CopyAsync(up, down, state, n => Interlocked.Add(ref state!.Down, n), done)));
    }

    /// <summary>One direction of a tunnel, within the neighbour's byte budget (if any); when it ends, <paramref name="done"/> ends the other.</summary>
    private async Task CopyAsync(Stream from, Stream to, NeighbourState? state, Action<int> count, CancellationTokenSource done)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            int n;
            while ((n = await from.ReadAsync(buffer, done.Token)) > 0)
            {
                if (state is not null)
                {
                    await ThrottleAsync(state, n, done.Token);
                    count(n);
                }
                await to.WriteAsync(buffer.AsMemory(0, n), done.Token);
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or SocketException or InvalidOperationException)
        {
        }
        finally
        {
            await Background.CancelAsync(done);
        }
    }

    /// <summary>
    /// Takes the leafnode connection of a NATS server beside this node at <paramref name="at"/> and carries it, through
    /// this node's neighbours, to the leafnode port of the cluster they lead to (node.json <c>leafnodeListen</c>), so a
    /// server with no way over IP to the rest of the cluster joins it as a leaf node (docs/control-plane.md, "Several
    /// brokers"). Throws <see cref="SocketException"/> when the address is taken.
    /// </summary>
    public void ListenForLeafnodes(IPEndPoint at)
    {
        var listener = new Socket(at.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(at);
            listener.Listen(16);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _leafListener = listener;
        _leafAccepting = Background.Run(() => AcceptLeafnodesAsync(listener));
    }

    /// <summary>Where <see cref="ListenForLeafnodes"/> listens; null when it does not.</summary>
    public EndPoint? LeafnodeEndPoint => _leafListener?.LocalEndPoint;

    /// <summary>Leafnode connections taken, carried through the neighbours now, and refused (no way through).</summary>
    public (long Taken, long Open, long Failed) Leafnodes => (Interlocked.Read(ref _leafTaken), Interlocked.Read(ref _leafOpen), Interlocked.Read(ref _leafFailed));

    private Socket? _leafListener;
    private Task _leafAccepting = Task.CompletedTask;
    private readonly CancellationTokenSource _stop = new();
    private long _leafTaken, _leafOpen, _leafFailed;
    private string? _leafProblem;

    private async Task AcceptLeafnodesAsync(Socket listener)
    {
        try
        {
            while (true)
            {
                var connection = await listener.AcceptAsync(_stop.Token);
                connection.NoDelay = true;
                Interlocked.Increment(ref _leafTaken);
                _ = Background.Run(() => CarryLeafnodeAsync(connection));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
    }

    private async Task CarryLeafnodeAsync(Socket connection)
    {
        await using var local = new NetworkStream(connection, ownsSocket: true);
        Stream tunnel;
        try
        {
            tunnel = Upstream is { } upstream ? await upstream.OpenTunnelAsync(MaxHops, leaf: true, _stop.Token)
                : throw new InvalidOperationException("this node does not reach the bus through neighbours");
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or OperationCanceledException or SocketException or Skymesh.Control.Bus.ControlBusException)
        {
            Interlocked.Increment(ref _leafFailed);
            // The server tries again every second or so while this node has no way through yet: said once per reason.
            if (Interlocked.Exchange(ref _leafProblem, e.Message) != e.Message)
                Log.LeafnodeRefused(_logger, e.Message);
            return;
        }
        Interlocked.Increment(ref _leafOpen);
        Volatile.Write(ref _leafProblem, null);
        // This node's own server's bytes: counted and bounded by the relays beyond, not here.
        await using (tunnel)
            await SpliceStreamsAsync(local, tunnel, null, _stop.Token);
        Interlocked.Decrement(ref _leafOpen);
    }

    public async ValueTask DisposeAsync()
    {
        await Background.CancelAsync(_stop);
        _leafListener?.Dispose();
        await _leafAccepting;
    }

    private async Task ThrottleAsync(NeighbourState state, int bytes, CancellationToken cancellationToken)
    {
        var wait = state.Bucket.Take(bytes, _node.Time.GetTimestamp(), _node.Time.TimestampFrequency);
        if (wait <= TimeSpan.Zero)
            return;
        Interlocked.Increment(ref _throttled);
        await Task.Delay(wait, _node.Time, cancellationToken);
    }

    private sealed class NeighbourState(int bytesPerSecond)
    {
        public int Open;
        public long Up;
        public long Down;

        public TokenBucket Bucket { get; } = new(bytesPerSecond);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 682, Level = LogLevel.Warning, Message = "Control bus relay: neighbour {Peer} already has {Max} tunnels open through this node; refused another")]
        public static partial void TooMany(ILogger logger, string peer, int max);

        [LoggerMessage(EventId = 687, Level = LogLevel.Warning, Message = "A NATS server's leafnode connection found no way through the neighbours: {Why}")]
        public static partial void LeafnodeRefused(ILogger logger, string why);
    }
}
