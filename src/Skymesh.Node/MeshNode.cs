using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;
using Skymesh.Mesh.Apps;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node;

/// <summary>What kind of failure a node operation met; the local API (and only it) turns each into an HTTP status.</summary>
public enum NodeError
{
    /// <summary>The request is malformed or impossible (a bad address, a path to oneself…).</summary>
    Invalid,

    /// <summary>No such link, path, label, app or route.</summary>
    NotFound,

    /// <summary>The thing is in use or in another state (a label taken, no control plane configured).</summary>
    Conflict,

    /// <summary>More than the node's limit (apps).</summary>
    TooMany,

    /// <summary>The far side refused (path setup refused by a hop).</summary>
    Refused,

    /// <summary>Not possible now (the control plane is not connected yet).</summary>
    Unavailable,

    /// <summary>No answer in time.</summary>
    Timeout,
}

/// <summary>A node operation failed; <see cref="Error"/> says how, the message says why in words for people.</summary>
public sealed class NodeRequestException : Exception
{
    public NodeRequestException()
    {
    }

    public NodeRequestException(string message)
        : base(message)
    {
    }

    public NodeRequestException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public NodeRequestException(NodeError error, string message)
        : base(message)
    {
        Error = error;
    }

    public NodeError Error { get; } = NodeError.Invalid;
}

/// <summary>
/// A running node: its key, interfaces and switch, the links it keeps to its static peers, the path endpoints
/// installed on it, and the apps running over them. The local API (<see cref="NodeApi"/>) drives it; the
/// control plane will drive it through the same methods.
/// </summary>
public sealed partial class MeshNode : IAsyncDisposable, IStreamOpener
{
    private const byte PingRequest = 1;
    private const byte PingReply = 2;

    private readonly ConcurrentDictionary<int, NodePath> _paths = new();
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource> _pings = new();
    private readonly ConcurrentDictionary<int, TcpAppListener> _apps = new();
    private readonly Dictionary<string, IMeshInterface> _interfaces = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _peerLoops = [];
    private readonly ILogger _logger;
    private readonly ILoggerFactory _loggerFactory;
    private readonly StreamExit _exit;
    private readonly Lock _pathLock = new();
    private int _nextPath;
    private int _nextApp;
    private ulong _nextPing;
    private long _pingsAnswered;
    private int _disposed;

    private MeshNode(NodeOptions options, NodeKey key, TimeProvider time, ILoggerFactory loggerFactory)
    {
        Options = options;
        Key = key;
        Time = time;
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger("Skymesh.Node");
        Started = time.GetUtcNow();
        Switch = new MeshSwitch(key, new MeshSwitchOptions
        {
            Encrypt = options.Encrypt,
            LinkRecovery = options.LinkRecovery,
            KeepaliveInterval = options.Keepalive,
            DeadAfter = options.DeadAfter,
            LabelLifetime = options.LabelLifetime,
        }, time, loggerFactory);
        Events = new Events.NodeEventLog(time);
        Operator = new Operator.NodeOperator(this, options.Decisions);
        _exit = new StreamExit(Operator.Exits, loggerFactory.CreateLogger("Skymesh.Node.Exit")) { Time = time, NotAllowed = Operator.OnExitRefused };
        Switch.Admission = Operator.Admit;
        Switch.LinkUp += link => Events.Append(Node.Events.NodeEventKind.LinkUp,
            $"link {link.Id} to {link.Peer} up via {link.Remote}{(link.Encrypted ? ", encrypted" : "")}", link.Peer?.ToString(), link.Id);
        Switch.LinkUp += link =>
        {
            // A link this node started itself, to a node its owner has blocked since.
            if (link.Peer is { } peer && Operator.IsBlocked(peer))
                Switch.Disconnect(link, "blocked by the node's owner");
        };
        Switch.LinkDown += OnLinkDown;
        Channels = new Control.LinkChannels(Switch, time, loggerFactory);
        BusRelay = new Control.BusRelay(this, options.BusRelay, loggerFactory);
        Nat = new Control.NatTraversal(this, loggerFactory);
        LinkRelay = new Control.LinkRelay(this, options.LinkRelay, loggerFactory);
        Vpn = new Vpn.NodeVpn(this);
        Switch.HandshakeRefused += why => Events.Append(Node.Events.NodeEventKind.HandshakeRefused, why);
    }

    public NodeOptions Options { get; }

    /// <summary>The node's owner: decisions waiting for a person, their policies, and what the owner set (operator.json).</summary>
    public Operator.NodeOperator Operator { get; }

    /// <summary>What this node charges per MiB it forwards (node.json's price until its owner changes it).</summary>
    public uint Price => Operator.Price;

    /// <summary>Takes an interface down (its links go down; its port stays bound) or brings it up; false when it already was so.</summary>
    public bool SetInterfaceUp(string name, bool up)
    {
        if (!_interfaces.TryGetValue(name, out var nic))
            throw new NodeRequestException(NodeError.NotFound, $"no interface is named \"{name}\"");
        if (!Switch.SetInterfaceUp(nic, up))
            return false;
        Events.Append(up ? Node.Events.NodeEventKind.InterfaceUp : Node.Events.NodeEventKind.InterfaceDown,
            $"interface {name} {(up ? "up" : "down: its links are down, and it neither answers nor starts links")}");
        return true;
    }

    /// <summary>A seeded random source in simulations (path ids and nonces repeat run to run); null in a real node.</summary>
    public Random? Random { get; internal set; }

    /// <summary>What the node did recently, numbered (link, path, control, settlement and app events).</summary>
    public Events.NodeEventLog Events { get; }

    public NodeKey Key { get; }

    public NodeAddress Address => Key.Address;

    public TimeProvider Time { get; }

    public MeshSwitch Switch { get; }

    public DateTimeOffset Started { get; }

    public StreamExit Exit => _exit;

    public IReadOnlyDictionary<string, IMeshInterface> Interfaces => _interfaces;

    public long PingsAnswered => Interlocked.Read(ref _pingsAnswered);

    /// <summary>LAN discovery, when node.json enables it.</summary>
    public Discovery.BeaconService? Beacons { get; private set; }

    /// <summary>Every link's link-local channel, and the services offered on it.</summary>
    public Control.LinkChannels Channels { get; }

    /// <summary>Relays the control bus for neighbours that reach it only through this node.</summary>
    public Control.BusRelay BusRelay { get; }

    /// <summary>This node's reflexive address and NAT type, and links made through NATs by hole punching.</summary>
    public Control.NatTraversal Nat { get; }

    /// <summary>Relays links between neighbours that cannot reach each other directly.</summary>
    public Control.LinkRelay LinkRelay { get; }

    /// <summary>The node's VPN server and client, and its mesh IPv6 address (docs/vpn.md).</summary>
    public Vpn.NodeVpn Vpn { get; }

    /// <summary>
    /// Asked (on the thread that took the link down; it must not block) whether a path end whose link went down
    /// will be repaired: true when its owner takes it over (and calls <see cref="RetargetPath"/> or breaks it).
    /// </summary>
    public Func<int, string, bool>? RepairHandler { get; set; }

    /// <summary>Raised when a link to a neighbour goes down, with the paths that were using it.</summary>
    public event Action<Link, string>? LinkDown;

    /// <summary>
    /// Starts a node from its parts (the node host, <see cref="Hosting.NodeHostBuilder"/>, is the one caller): its key,
    /// its interfaces opened by <paramref name="openInterface"/>, LAN discovery when configured, and the loops that keep
    /// links to its static peers. The control plane and the local API are the host's.
    /// </summary>
    internal static MeshNode Start(NodeOptions options, NodeKey key, string keyState, Func<InterfaceOptions, IMeshInterface> openInterface,
        ILoggerFactory loggerFactory, TimeProvider time)
    {
        var node = new MeshNode(options, key, time, loggerFactory);
        try
        {
            foreach (var nic in options.Interfaces)
            {
                var opened = openInterface(nic);
                node._interfaces[nic.Name] = opened;
                node.Switch.AddInterface(opened);
            }
        }
        catch
        {
            node.DisposeAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
        if (options.Discovery is { } discovery)
            node.Beacons = Discovery.BeaconService.Start(node, discovery, loggerFactory);
        Log.Started(node._logger, node.Address.ToString(), keyState);
        foreach (var peer in options.Peers)
            node._peerLoops.Add(Background.Run(() => node.KeepPeerAsync(peer)));
        return node;
    }

    // ---- Links -------------------------------------------------------------------------------------------

    /// <summary>The link that is up to <paramref name="peer"/>, if any.</summary>
    public Link? FindLink(NodeAddress peer) =>
        Switch.Links.Where(l => l.State == LinkState.Up && l.Peer == peer).OrderBy(l => l.Id).FirstOrDefault();

    /// <summary>A link named by its id or its peer's address (as the local API names them).</summary>
    public Link ResolveLink(string reference)
    {
        if (int.TryParse(reference, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id))
            return Switch.GetLink(id) is { State: LinkState.Up } byId ? byId : throw new NodeRequestException(NodeError.NotFound, $"no link {id} is up");
        if (!NodeAddress.TryParse(reference, out var peer))
            throw new NodeRequestException(NodeError.Invalid, $"\"{reference}\" is neither a link id nor a node address");
        return FindLink(peer) ?? throw new NodeRequestException(NodeError.NotFound, $"no link to {peer} is up");
    }

    /// <summary>Connects to a neighbour now (the API's "add link"); the static peers are kept by the node itself.</summary>
    public async Task<Link> ConnectAsync(string interfaceName, EndPoint remote, NodeAddress? expected, CancellationToken cancellationToken)
    {
        if (!_interfaces.TryGetValue(interfaceName, out var nic))
            throw new NodeRequestException(NodeError.NotFound, $"no interface is named \"{interfaceName}\"");
        // A little past the switch's own handshake timeout: the link fails and goes by itself first, so an attempt
        // right after this one starts afresh instead of joining a handshake about to give up.
        using var deadline = new Deadline(Switch.Options.HandshakeTimeout + HandshakeGrace, Time, cancellationToken, _stop.Token);
        try
        {
            return await Switch.ConnectAsync(nic, await ResolveAsync(remote, deadline.Token), expected, deadline.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new NodeRequestException(NodeError.Timeout, $"no handshake with {remote} within {Switch.Options.HandshakeTimeout.TotalSeconds:0} s");
        }
    }

    private static readonly TimeSpan HandshakeGrace = TimeSpan.FromSeconds(1);

    private async Task KeepPeerAsync(PeerOptions peer)
    {
        var nic = _interfaces[peer.Interface];
        var backoff = TimeSpan.FromMilliseconds(500);
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                if (Operator.IsBlocked(peer.Address))
                {
                    // Its owner blocked it: asked again now and then, in case they unblock it.
                    await Task.Delay(TimeSpan.FromSeconds(5), Time, _stop.Token);
                    continue;
                }
                var existing = FindLink(peer.Address);
                if (existing is null && peer.Endpoint is null)
                {
                    // Wherever it is: met through the control bus, so not before this node is on it.
                    if (Nat.Control?.Agent is null)
                    {
                        await Task.Delay(TimeSpan.FromSeconds(1), Time, _stop.Token);
                        continue;
                    }
                    // A punch, and a relay after it when it fails.
                    using var deadline = new Deadline(Switch.Options.HandshakeTimeout * 4 + HandshakeGrace, Time, _stop.Token);
                    existing = await Nat.PunchAsync(peer.Address, deadline.Token);
                    backoff = TimeSpan.FromMilliseconds(500);
                }
                else if (existing is null)
                {
                    using var deadline = new Deadline(Switch.Options.HandshakeTimeout + HandshakeGrace, Time, _stop.Token);
                    existing = await Switch.ConnectAsync(nic, await ResolveAsync(peer.Endpoint!, deadline.Token), peer.Address, deadline.Token);
                    backoff = TimeSpan.FromMilliseconds(500);
                }
                await Background.WaitAsync(existing.WaitDownAsync(), _stop.Token);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Log.PeerUnreachable(_logger, peer.Address.ToString(), peer.Endpoint?.ToString() ?? "through NATs", e is OperationCanceledException ? "no answer" : e.Message, backoff.TotalSeconds);
                try
                {
                    await Task.Delay(backoff, Time, _stop.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
            }
        }
    }

    private static async Task<EndPoint> ResolveAsync(EndPoint remote, CancellationToken cancellationToken)
    {
        if (remote is not DnsEndPoint dns)
            return remote;
        var addresses = await Dns.GetHostAddressesAsync(dns.Host, cancellationToken);
        var address = addresses.FirstOrDefault(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork) ?? addresses.FirstOrDefault()
            ?? throw new InvalidOperationException($"{dns.Host} has no address");
        return new IPEndPoint(address, dns.Port);
    }

    private void OnLinkDown(Link link, string reason)
    {
        // A handshake that never completed (a stranger not admitted, a peer that did not answer) was never a link to
        // anyone: its own events (decisions, handshake failures) say what happened.
        if (link.WasUp)
            Events.Append(Node.Events.NodeEventKind.LinkDown, $"link {link.Id} to {link.Peer?.ToString() ?? "?"} down: {reason}", link.Peer?.ToString(), link.Id);
        // The paths over this link cannot carry anything more: fail their streams now rather than after the
        // path's own timeout, so apps get a clear error at once.
        foreach (var path in _paths.Values)
        {
            if (path.Link != link)
                continue;
            var why = $"link to neighbour {link.Peer?.ToString() ?? "?"} down ({reason})";
            // A path the control plane set up may be repaired onto other links, streams and all.
            if (path.Spec.SetupId is not null && RepairHandler is { } repair && repair(path.Id, why))
                continue;
            path.Endpoint.Break(why);
        }
        LinkDown?.Invoke(link, reason);
    }

    // ---- Labels ------------------------------------------------------------------------------------------

    private const string LabelsFromTwo = "label 0 is each link's own (control messages) and 1 its link-local channel; paths use labels from 2";

    /// <summary>Reserves a label on a link for a path being installed (it expires unless given an action).</summary>
    public uint ReserveLabel(Link link) => Switch.Labels.Reserve(link.Id);

    /// <summary>Installs a forwarding entry: messages arriving on <paramref name="inLink"/> with <paramref name="inLabel"/> go out on <paramref name="outLink"/> with <paramref name="outLabel"/>.</summary>
    public void InstallForward(Link inLink, uint inLabel, Link outLink, uint outLabel, bool billable = true)
    {
        if (inLabel < LabelTable.FirstPathLabel || outLabel < LabelTable.FirstPathLabel)
            throw new NodeRequestException(NodeError.Invalid, LabelsFromTwo);
        if (inLink.Id == outLink.Id)
            throw new NodeRequestException(NodeError.Invalid, "a path cannot be forwarded back onto the link it came from");
        EnsureFree(inLink, inLabel);
        Switch.Labels.Install(inLink.Id, inLabel, LabelAction.Forward(outLink.Id, outLabel, billable));
        Log.LabelInstalled(_logger, inLink.Id, inLabel, outLink.Id, outLabel);
    }

    public bool RemoveLabel(int link, uint label)
    {
        lock (_pathLock)
        {
            if (_paths.Values.Any(p => p.Link.Id == link && p.InLabel == label))
                throw new NodeRequestException(NodeError.Conflict, $"label {label} on link {link} belongs to a path; remove the path instead");
        }
        return Switch.Labels.Remove(link, label);
    }

    private void EnsureFree(Link link, uint label)
    {
        if (Switch.Labels.List().Any(e => e.InLink == link.Id && e.InLabel == label))
            throw new NodeRequestException(NodeError.Conflict, $"label {label} on link {link.Id} is already in use; remove it first or reserve a new one");
    }

    // ---- Paths -------------------------------------------------------------------------------------------

    public IReadOnlyList<PathInfo> Paths => [.. _paths.Values.OrderBy(p => p.Id).Select(p => p.Info())];

    internal IEnumerable<NodePath> PathEnds => _paths.Values;

    /// <summary>Installs one end of a path: a path endpoint whose messages leave by the link to <see cref="PathSpec.Via"/>.</summary>
    public PathInfo InstallPath(PathSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (spec.Nonce.Length != 32)
            throw new NodeRequestException(NodeError.Invalid, "a path nonce is 32 bytes (64 hex digits)");
        if (spec.Peer == Address)
            throw new NodeRequestException(NodeError.Invalid, "a path leads to another node, not to this one");
        if (spec.OutLabel < LabelTable.FirstPathLabel)
            throw new NodeRequestException(NodeError.Invalid, "outLabel: " + LabelsFromTwo);
        var link = FindLink(spec.Via) ?? throw new NodeRequestException(NodeError.NotFound, $"no link to {spec.Via} is up");
        var inLabel = spec.InLabel ?? ReserveLabel(link);
        if (spec.InLabel is { } given)
        {
            if (given < LabelTable.FirstPathLabel)
                throw new NodeRequestException(NodeError.Invalid, "inLabel: " + LabelsFromTwo);
            EnsureFree(link, given);
        }
        var channel = new LinkPathChannel(link, spec.OutLabel) { Billable = spec.Peer != spec.Via };
        var options = new PathEndpointOptions { PeerName = spec.Peer.ToString(), IsInitiator = spec.Initiator, FailureTimeout = Options.PathTimeout };
        var endpoint = new PathEndpoint(channel, options, NodePath.CreateCipher(Key, spec), Time);
        channel.Endpoint = endpoint;
        var sink = Switch.RegisterSink(channel);
        Switch.Labels.Install(link.Id, inLabel, LabelAction.Deliver(sink));
        var path = new NodePath
        {
            Id = Interlocked.Increment(ref _nextPath),
            Spec = spec with { InLabel = inLabel },
            Link = link,
            InLabel = inLabel,
            SinkId = sink,
            Channel = channel,
            Endpoint = endpoint,
            Created = Time.GetUtcNow(),
        };
        lock (_pathLock)
            _paths[path.Id] = path;
        endpoint.Broken += (_, error) =>
        {
            Log.PathBroken(_logger, path.Id, spec.Peer.ToString(), error.Message);
            Events.Append(Node.Events.NodeEventKind.PathBroken, $"path {path.Id} to {spec.Peer} lost: {error.Message}", spec.Peer.ToString(), path: path.Id);
        };
        endpoint.Datagrams.Handler = datagram => datagram.Length > 1 && datagram[0] >= Node.Vpn.IpDatagram.Vpn && Vpn.OnDatagram(spec.Peer, endpoint, datagram);
        path.Loops.Add(Background.Run(() => AcceptStreamsAsync(path)));
        path.Loops.Add(Background.Run(() => ReceiveDatagramsAsync(path)));
        Log.PathInstalled(_logger, path.Id, spec.Peer.ToString(), spec.Via.ToString(), spec.OutLabel, inLabel);
        Events.Append(Node.Events.NodeEventKind.PathSetUp, $"path {path.Id} to {spec.Peer} via {spec.Via}: out label {spec.OutLabel}, in label {inLabel}",
            spec.Peer.ToString(), link.Id, path.Id);
        return path.Info();
    }

    /// <summary>
    /// Moves a path end onto a repaired path: new link and labels, same endpoint — its streams resend what was
    /// not acknowledged and go on, with the same end-to-end keys.
    /// </summary>
    public void RetargetPath(int id, NodeAddress via, uint inLabel, uint outLabel, Guid setupId)
    {
        NodePath path;
        lock (_pathLock)
        {
            path = _paths.GetValueOrDefault(id) ?? throw new NodeRequestException(NodeError.NotFound, $"no path {id}");
        }
        var link = FindLink(via) ?? throw new NodeRequestException(NodeError.NotFound, $"no link to {via} is up");
        var channel = new LinkPathChannel(link, outLabel) { Endpoint = path.Endpoint, Billable = path.Spec.Peer != via };
        var sink = Switch.RegisterSink(channel);
        Switch.Labels.Install(link.Id, inLabel, LabelAction.Deliver(sink));
        lock (_pathLock)
        {
            if (path.Link.State != LinkState.Down)
                Switch.Labels.Remove(path.Link.Id, path.InLabel);
            Switch.UnregisterSink(path.SinkId);
            path.Link = link;
            path.InLabel = inLabel;
            path.SinkId = sink;
            path.Channel = channel;
            path.Spec = path.Spec with { Via = via, OutLabel = outLabel, InLabel = inLabel, SetupId = setupId };
            path.Repairs++;
        }
        path.Endpoint.Retarget(channel);
        Log.PathRetargeted(_logger, id, path.Spec.Peer.ToString(), via.ToString());
        Events.Append(Node.Events.NodeEventKind.PathRepaired, $"path {id} to {path.Spec.Peer} moved onto a repaired path via {via}: out label {outLabel}, in label {inLabel}",
            path.Spec.Peer.ToString(), path: id);
    }

    public async Task<bool> RemovePathAsync(int id)
    {
        NodePath? path;
        lock (_pathLock)
        {
            if (!_paths.TryRemove(id, out path))
                return false;
        }
        await ClosePathAsync(path);
        Log.PathRemoved(_logger, id);
        Events.Append(Node.Events.NodeEventKind.PathClosed, $"path {id} to {path.Spec.Peer} removed", path.Spec.Peer.ToString(), path: id);
        return true;
    }

    private async Task ClosePathAsync(NodePath path)
    {
        Switch.Labels.Remove(path.Link.Id, path.InLabel);
        Switch.UnregisterSink(path.SinkId);
        await Background.CancelAsync(path.Stop);
        await path.Endpoint.DisposeAsync();
        await Task.WhenAll(path.Loops);
        path.Stop.Dispose();
    }

    /// <summary>The path this node uses to reach <paramref name="peer"/>: one that is up, its own paths (as source) first.</summary>
    public PathEndpoint? FindPath(NodeAddress peer) =>
        _paths.Values
            .Where(p => p.Spec.Peer == peer && p.Endpoint.BrokenBy is null && p.Link.State == LinkState.Up)
            .OrderByDescending(p => p.Spec.Initiator).ThenBy(p => p.Id)
            .FirstOrDefault()?.Endpoint;

    private PathEndpoint RequirePath(NodeAddress peer) =>
        FindPath(peer) ?? throw new NoPathException($"This node has no working path to {peer}; open one with `skymesh path open {peer}` (docs/node.md).");

    private async Task AcceptStreamsAsync(NodePath path)
    {
        var from = path.Spec.Peer.ToString();
        while (!path.Stop.IsCancellationRequested)
        {
            ReliableStream stream;
            try
            {
                stream = await path.Endpoint.AcceptStreamAsync(path.Stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            _ = Background.Run(() => _exit.ServeAsync(stream, from, _stop.Token,
                (kind, request, accepted) => Vpn.ServeStreamAsync(kind, request, accepted, path.Spec.Peer, path.Endpoint, _stop.Token)));
        }
    }

    private async Task ReceiveDatagramsAsync(NodePath path)
    {
        while (!path.Stop.IsCancellationRequested)
        {
            byte[] datagram;
            try
            {
                datagram = await path.Endpoint.Datagrams.ReceiveAsync(path.Stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or System.Threading.Channels.ChannelClosedException)
            {
                return;
            }
            if (datagram.Length < 9)
                continue;
            if (datagram[0] == PingRequest)
            {
                datagram[0] = PingReply;
                path.Endpoint.Datagrams.TrySend(datagram);
                Interlocked.Increment(ref _pingsAnswered);
            }
            else if (datagram[0] == PingReply && _pings.TryRemove(BinaryPrimitives.ReadUInt64BigEndian(datagram.AsSpan(1)), out var waiter))
            {
                waiter.TrySetResult();
            }
        }
    }

    /// <summary>Where the node's parts (its local API, its control plane) log.</summary>
    internal ILoggerFactory LoggerFactory => _loggerFactory;

    // ---- Apps --------------------------------------------------------------------------------------------

    /// <summary>The smallest ping datagram: its kind and its 8-byte token.</summary>
    public const int MinPingSize = 9;

    /// <summary>One round trip over the path to <paramref name="peer"/>: a datagram the far node echoes.</summary>
    public Task<TimeSpan> PingAsync(NodeAddress peer, int size, TimeSpan timeout, CancellationToken cancellationToken) =>
        PingAsync(RequirePath(peer), peer, size, timeout, cancellationToken);

    /// <summary>One round trip over the path end <paramref name="pathId"/>.</summary>
    public Task<TimeSpan> PingPathAsync(int pathId, int size, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var path = _paths.GetValueOrDefault(pathId) ?? throw new NodeRequestException(NodeError.NotFound, $"no path {pathId}");
        return PingAsync(path.Endpoint, path.Spec.Peer, size, timeout, cancellationToken);
    }

    private async Task<TimeSpan> PingAsync(PathEndpoint endpoint, NodeAddress peer, int size, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (size < MinPingSize || size > endpoint.Datagrams.MaxDatagramSize)
            throw new NodeRequestException(NodeError.Invalid, $"a ping on this path is {MinPingSize} to {endpoint.Datagrams.MaxDatagramSize} bytes, not {size}");
        var token = Interlocked.Increment(ref _nextPing);
        var datagram = new byte[size];
        datagram[0] = PingRequest;
        BinaryPrimitives.WriteUInt64BigEndian(datagram.AsSpan(1), token);
        var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _pings[token] = waiter;
        var started = Time.GetTimestamp();
        try
        {
            if (!endpoint.Datagrams.TrySend(datagram))
                throw new NodeRequestException(NodeError.Unavailable, "the path refused the ping (its link queue is full or down)");
            await Background.WaitAsync(waiter.Task, timeout, Time, cancellationToken);
            return Time.GetElapsedTime(started);
        }
        catch (TimeoutException)
        {
            throw new NodeRequestException(NodeError.Timeout, $"no answer from {peer} within {timeout.TotalMilliseconds:0} ms");
        }
        finally
        {
            _pings.TryRemove(token, out _);
        }
    }

    public async Task<ReliableStream> OpenAsync(NodeAddress destination, string target, CancellationToken cancellationToken) =>
        await ServiceWire.OpenAsync(RequirePath(destination), target, cancellationToken);

    /// <summary>Starts TCP port forwarding through the mesh; runs until <see cref="StopApp"/> or the node stops.</summary>
    public (int Id, TcpForwarder Forwarder) StartForward(IPEndPoint listen, NodeAddress destination, string target) =>
        Register(new TcpForwarder(listen, this, destination, CheckTarget(target)) { Time = Time });

    /// <summary>A forward's target as given, once it is a host:port; refused (400) otherwise.</summary>
    public static string CheckTarget(string target) =>
        ServiceWire.TryParseTarget(target, out _, out _) ? target : throw new NodeRequestException(NodeError.Invalid, $"target \"{target}\" is not host:port");

    /// <summary>Starts a SOCKS5 server whose connections leave the mesh at <paramref name="exit"/>.</summary>
    public (int Id, Socks5Server Server) StartSocks(IPEndPoint listen, NodeAddress exit) => Register(new Socks5Server(listen, this, exit) { Time = Time });

    private (int, T) Register<T>(T app)
        where T : TcpAppListener
    {
        if (_apps.Count >= Options.MaxApps)
        {
            _ = app.DisposeAsync();
            throw new NodeRequestException(NodeError.TooMany, $"this node already runs {_apps.Count} apps, its limit (\"maxApps\" in node.json); stop one first");
        }
        var id = Interlocked.Increment(ref _nextApp);
        _apps[id] = app;
        try
        {
            app.Start();
        }
        catch
        {
            _apps.TryRemove(id, out _);
            throw;
        }
        Events.Append(Node.Events.NodeEventKind.AppStarted, $"app {id} ({app.GetType().Name}) listening on {app.LocalEndPoint}", app: id);
        return (id, app);
    }

    /// <summary>Apps running on this node (port forwards, SOCKS servers), by id.</summary>
    public IReadOnlyList<KeyValuePair<int, TcpAppListener>> Apps => [.. _apps.OrderBy(a => a.Key)];

    public async Task<bool> StopApp(int id)
    {
        if (!_apps.TryRemove(id, out var app))
            return false;
        await app.DisposeAsync();
        Events.Append(Node.Events.NodeEventKind.AppStopped, $"app {id} ({app.GetType().Name}) stopped", app: id);
        return true;
    }

    /// <summary>The only peer this node has a path to, for a SOCKS server started without naming its exit.</summary>
    public NodeAddress? SolePathPeer()
    {
        var peers = _paths.Values.Where(p => p.Spec.Initiator).Select(p => p.Spec.Peer).Distinct().ToList();
        return peers.Count == 1 ? peers[0] : null;
    }

    // ---- Shutdown ----------------------------------------------------------------------------------------

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        Log.Stopping(_logger, Address.ToString());
        await Background.CancelAsync(_stop);
        foreach (var id in _apps.Keys.ToList())
            await StopApp(id);
        // Before the paths close: a VPN client ends its session and puts the host's routes back.
        await Vpn.DisposeAsync();
        foreach (var path in _paths.Values.ToList())
        {
            _paths.TryRemove(path.Id, out _);
            await ClosePathAsync(path);
        }
        await Task.WhenAll(_peerLoops);
        if (Beacons is not null)
            await Beacons.DisposeAsync();
        await LinkRelay.DisposeAsync();
        await BusRelay.DisposeAsync();
        await Channels.DisposeAsync();
        await Switch.DisposeAsync();
        Key.Dispose();
        _stop.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 600, Level = LogLevel.Information, Message = "Node {Address} started ({Key})")]
        public static partial void Started(ILogger logger, string address, string key);

        [LoggerMessage(EventId = 601, Level = LogLevel.Warning, Message = "Peer {Peer} at {Endpoint} unreachable: {Reason}; retrying in {Seconds} s")]
        public static partial void PeerUnreachable(ILogger logger, string peer, string endpoint, string reason, double seconds);

        [LoggerMessage(EventId = 602, Level = LogLevel.Information, Message = "Label {InLabel} on link {InLink} forwards to link {OutLink} label {OutLabel}")]
        public static partial void LabelInstalled(ILogger logger, int inLink, uint inLabel, int outLink, uint outLabel);

        [LoggerMessage(EventId = 603, Level = LogLevel.Information, Message = "Path {Id} to {Peer} installed via {Via}: out label {OutLabel}, in label {InLabel}")]
        public static partial void PathInstalled(ILogger logger, int id, string peer, string via, uint outLabel, uint inLabel);

        [LoggerMessage(EventId = 604, Level = LogLevel.Information, Message = "Path {Id} removed")]
        public static partial void PathRemoved(ILogger logger, int id);

        [LoggerMessage(EventId = 605, Level = LogLevel.Warning, Message = "Path {Id} to {Peer} lost: {Reason}")]
        public static partial void PathBroken(ILogger logger, int id, string peer, string reason);

        [LoggerMessage(EventId = 607, Level = LogLevel.Information, Message = "Path {Id} to {Peer} moved onto a repaired path via {Via}")]
        public static partial void PathRetargeted(ILogger logger, int id, string peer, string via);

        [LoggerMessage(EventId = 606, Level = LogLevel.Information, Message = "Node {Address} stopping")]
        public static partial void Stopping(ILogger logger, string address);
    }
}
