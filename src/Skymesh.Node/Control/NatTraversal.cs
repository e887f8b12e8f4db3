using System.Collections.Concurrent;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Skymesh.Control.Bus;
using Skymesh.Identity;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node.Control;

/// <summary>What a node knows of the NAT in front of it (docs/control-plane.md, "Links through NAT").</summary>
/// <param name="Reflexive">Its UDP interface's address as neighbours outside see it; null before any has said.</param>
/// <param name="Type"><c>unknown</c>, <c>none</c>, <c>endpoint-independent</c> (hole punching works) or <c>symmetric</c> (it does not: links go through a relay).</param>
/// <param name="Observers">How many neighbours have said.</param>
public sealed record NatInfo(string? Reflexive, string Type, int Observers);

/// <summary>
/// Links through NAT (docs/control-plane.md, "Links through NAT"). Every neighbour tells a node, on the link-local
/// channel (service <c>observe</c>), the UDP address it sees the node's frames come from — its reflexive address; from
/// two or more neighbours at different addresses the node learns whether its NAT keeps one mapping for every destination
/// (hole punching works) or makes a new one for each (symmetric: it does not). Two nodes behind NATs link directly by
/// hole punching with the control bus as the rendezvous: the one that wants the link sends its candidates (reflexive and
/// local addresses) in a <c>link-punch</c> request, the other answers with its own, and at once the node with the lower
/// address dials every candidate of the other while the other sends probes to the dialler's, which open its NAT for them.
/// When that finds no way through (a symmetric NAT on either side), the dialler asks a neighbour both of them have to
/// relay the link (<see cref="LinkRelay"/>), tells the other node over the bus (<c>link-relay</c>), and the two link
/// through the relay's port: a link like any other, shown as <c>relayed</c>.
/// </summary>
public sealed partial class NatTraversal
{
    public const string ObserveService = "observe";
    public const string PunchMethod = "link-punch";
    public const string RelayMethod = "link-relay";

    private readonly MeshNode _node;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<NodeAddress, (IPEndPoint Observer, IPEndPoint Reflexive)> _observations = new();
    private readonly ConcurrentDictionary<int, (string How, NodeAddress? Via)> _howMade = new();
    // Relay ports this node links through (or is about to): what a neighbour sees on such a link is the relay's address,
    // which says nothing of this node's NAT.
    private readonly ConcurrentDictionary<IPEndPoint, NodeAddress> _relayPorts = new();
    private readonly ConcurrentDictionary<NodeAddress, Task<Link?>> _meetings = new();
    private long _punched;
    private long _relayed;
    private long _punchFailures;

    public NatTraversal(MeshNode node, ILoggerFactory loggerFactory)
    {
        _node = node;
        _logger = loggerFactory.CreateLogger("Skymesh.Node.Nat");
        node.Channels.Register(ObserveService, ServeObserveAsync);
        node.Switch.LinkUp += link =>
        {
            if (link.Interface is UdpInterface && link.Peer is not null && !(link.Remote is IPEndPoint remote && _relayPorts.ContainsKey(remote)))
                _ = Background.Run(() => AskAsync(link));
        };
        node.Switch.LinkDown += (link, why) =>
        {
            _howMade.TryRemove(link.Id, out _);
            if (link.Remote is IPEndPoint remote && _relayPorts.ContainsKey(remote) && !node.Switch.Links.Any(l => l != link && l.Remote.Equals(remote)))
                _relayPorts.TryRemove(remote, out _);
            // What a neighbour no longer linked saw says nothing of the NAT's mappings now.
            if (link.Peer is { } peer && node.FindLink(peer) is null)
                _observations.TryRemove(peer, out var _);
        };
    }

    /// <summary>The node's control plane, once it runs: the rendezvous.</summary>
    public ControlPlane? Control { get; set; }

    /// <summary>Links made by hole punching, links made through a relay, and attempts that found no way through.</summary>
    public long Punched => Interlocked.Read(ref _punched);

    public long Relayed => Interlocked.Read(ref _relayed);

    public long PunchFailures => Interlocked.Read(ref _punchFailures);

    /// <summary>How the link was made, when not simply dialled: <c>punched</c>, or <c>relayed</c> and through which node.</summary>
    public (string How, NodeAddress? Via)? HowMade(Link link) =>
        _howMade.TryGetValue(link.Id, out var how) ? how
        // Relayed from the moment it is up, before the end that waited for it has seen it.
        : link.Remote is IPEndPoint remote && _relayPorts.TryGetValue(remote, out var via) ? ("relayed", via)
        // Up during a meeting with its peer, before the meeting has marked it: the punch's doing (MeetAsync takes it so).
        : link.Peer is { } peer && _meetings.ContainsKey(peer) ? ("punched", null)
        : null;

    /// <summary>What the neighbours have said of this node's address, and what that makes of its NAT.</summary>
    public NatInfo Info()
    {
        var seen = _observations.Values.ToList();
        if (seen.Count == 0)
            return new NatInfo(null, "unknown", 0);
        var reflexive = seen.GroupBy(o => o.Reflexive).OrderByDescending(g => g.Count()).First().Key;
        var local = LocalEndPoints();
        string type;
        if (local.Contains(reflexive))
            type = "none";
        else if (seen.Select(o => o.Reflexive).Distinct().Count() > 1)
            type = "symmetric";
        else if (seen.Select(o => o.Observer.Address).Distinct().Count() > 1)
            type = "endpoint-independent";
        else
            type = "unknown";
        return new NatInfo(reflexive.ToString(), type, seen.Count);
    }

    /// <summary>Where others may reach this node's first UDP interface: what neighbours see, then its own addresses.</summary>
    public IReadOnlyList<IPEndPoint> Candidates()
    {
        var candidates = new List<IPEndPoint>();
        foreach (var (_, reflexive) in _observations.Values)
        {
            if (!candidates.Contains(reflexive))
                candidates.Add(reflexive);
        }
        foreach (var local in LocalEndPoints())
        {
            if (!candidates.Contains(local))
                candidates.Add(local);
        }
        return candidates;
    }

    private UdpInterface? Udp => _node.Interfaces.Values.OfType<UdpInterface>().FirstOrDefault();

    private List<IPEndPoint> LocalEndPoints()
    {
        if (Udp?.LocalEndPoint is not IPEndPoint bound)
            return [];
        if (!bound.Address.Equals(IPAddress.Any) && !bound.Address.Equals(IPAddress.IPv6Any))
            return [bound];
        var all = new List<IPEndPoint>();
        try
        {
            foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
            {
                if (nic.OperationalStatus != OperationalStatus.Up)
                    continue;
                foreach (var unicast in nic.GetIPProperties().UnicastAddresses)
                {
                    // Loopback reaches nobody else; an interface bound to it alone is listed above as it is.
                    if (unicast.Address.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(unicast.Address))
                        all.Add(new IPEndPoint(unicast.Address, bound.Port));
                }
            }
        }
        catch (NetworkInformationException)
        {
        }
        return all;
    }

    private static async Task ServeObserveAsync(Link link, string verb, ReliableStream stream, CancellationToken cancellationToken)
    {
        var answer = verb == "address" && link.Remote is IPEndPoint seen ? $"ok {seen}\n" : "no not a UDP link\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(answer), cancellationToken);
        await stream.CompleteAsync(cancellationToken);
    }

    private async Task AskAsync(Link link)
    {
        if (link.Remote is not IPEndPoint observer || link.Peer is not { } peer)
            return;
        // A question lost with its stream (a neighbour busy starting up) is asked again, a few times, while the link lasts.
        for (var attempt = 0; attempt < 4 && link.State == LinkState.Up; attempt++)
        {
            if (attempt > 0)
                await Task.Delay(TimeSpan.FromSeconds(attempt), _node.Time);
            try
            {
                var stream = await _node.Channels.OpenAsync(link, ObserveService, "address", CancellationToken.None);
                await stream.CompleteAsync();
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5), _node.Time);
                var line = await LinkChannels.ReadLineAsync(stream, 128, timeout.Token);
                if (line is not null && line.StartsWith("ok ", StringComparison.Ordinal) && IPEndPoint.TryParse(line[3..], out var reflexive))
                {
                    _observations[peer] = (observer, reflexive);
                    Log.Observed(_logger, peer.ToString(), reflexive.ToString());
                    return;
                }
                if (line is not null)
                    return; // It answered, and not with an address: asking again changes nothing.
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException or OperationCanceledException)
            {
            }
        }
    }

    /// <summary>Serves <see cref="PunchMethod"/> and <see cref="RelayMethod"/> on the node's bus (at every login).</summary>
    public void Serve(IControlBus bus)
    {
        bus.Handle(PunchMethod, (request, token) =>
        {
            var theirs = Parse(request.Body.Span);
            if (theirs.Candidates.Count == 0)
                throw new ControlBusException(ControlBusException.BadRequest, "no candidates");
            var mine = Offer(request.From);
            // Our part starts at once, beside the caller's: dial, or open our NAT to its addresses.
            var before = _node.FindLink(request.From);
            var common = mine.Neighbours.Intersect(theirs.Neighbours).ToList();
            _ = Background.Run(() => MeetOnceAsync(request.From, theirs with { Neighbours = common }, before, CancellationToken.None));
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(Encode(mine));
        });
        bus.Handle(RelayMethod, (request, token) =>
        {
            RelayOffer? offer;
            try
            {
                offer = JsonSerializer.Deserialize<RelayOffer>(request.Body.Span, WireJson);
            }
            catch (JsonException)
            {
                offer = null;
            }
            if (offer is null || !NodeAddress.TryParse(offer.Via, out var via) || offer.Port is < 1 or > 65535 || offer.Token is not { Length: 32 } secret || !secret.All(char.IsAsciiHexDigitLower))
                throw new ControlBusException(ControlBusException.BadRequest, "a relay offer names the relay (via), its port and a 32-digit token");
            if (Udp is not { } udp || _node.FindLink(via) is not { Remote: IPEndPoint relayAt } toRelay || toRelay.Interface != udp)
                throw new ControlBusException(ControlBusException.NotFound, $"this node has no UDP link to {via}");
            if (_relayPorts.Count >= 64)
                throw new ControlBusException(ControlBusException.Unavailable, "this node is busy with other relayed links");
            var port = new IPEndPoint(relayAt.Address, offer.Port);
            _relayPorts[port] = via;
            _ = Background.Run(() => ThroughRelayAsync(udp, request.From, via, port, secret, dial: false, CancellationToken.None));
            return ValueTask.FromResult<ReadOnlyMemory<byte>>("ok"u8.ToArray());
        });
    }

    /// <summary>
    /// Links to <paramref name="peer"/> through the NATs between them: exchanges candidates over the control bus, then
    /// each does its part (<see cref="MeetAsync"/>) at the same time.
    /// </summary>
    public async Task<Link> PunchAsync(NodeAddress peer, CancellationToken cancellationToken)
    {
        if (peer == _node.Address)
            throw new NodeRequestException(NodeError.Invalid, "a link leads to another node, not to this one");
        // Linked already: nothing to punch.
        if (_node.FindLink(peer) is { } already)
            return already;
        var bus = Control?.Agent?.Bus ?? throw new NodeRequestException(NodeError.Unavailable, "hole punching needs the control bus as the rendezvous, and this node is not on it");
        var mine = Offer(peer);
        if (mine.Candidates.Count == 0)
            throw new NodeRequestException(NodeError.Invalid, "this node has no UDP interface to punch through");
        ReadOnlyMemory<byte> answer;
        try
        {
            answer = await bus.RequestAsync(peer, PunchMethod, Encode(mine), null, cancellationToken);
        }
        catch (ControlBusException e)
        {
            throw new NodeRequestException(e.Status == ControlBusException.NotFound ? NodeError.NotFound : NodeError.Unavailable, $"{peer} did not take part in hole punching: {e.Message}");
        }
        var theirs = Parse(answer.Span);
        if (theirs.Candidates.Count == 0)
            throw new NodeRequestException(NodeError.Unavailable, $"{peer} has no address to punch to");
        var common = mine.Neighbours.Intersect(theirs.Neighbours).ToList();
        return await MeetOnceAsync(peer, theirs with { Neighbours = common }, null, cancellationToken)
            ?? throw new NodeRequestException(NodeError.Timeout, $"hole punching to {peer} found no way through its NAT and ours (tried {string.Join(", ", theirs.Candidates)}): a NAT that maps each destination to a new port (symmetric) lets no punch through"
                + (common.Count == 0 ? ", and the two nodes have no neighbour in common to relay the link" : $", and no common neighbour relayed the link (tried {string.Join(", ", common)})"));
    }

    /// <summary>
    /// Links to <paramref name="peer"/> through <paramref name="via"/>, a neighbour of both, without trying to punch
    /// first (<c>skymesh links add NODE --via RELAY</c>).
    /// </summary>
    public async Task<Link> RelayAsync(NodeAddress peer, NodeAddress via, CancellationToken cancellationToken)
    {
        if (peer == _node.Address || via == _node.Address || via == peer)
            throw new NodeRequestException(NodeError.Invalid, "a relayed link joins this node to another through a third");
        if (Udp is not { } udp)
            throw new NodeRequestException(NodeError.Invalid, "this node has no UDP interface to link through a relay");
        if (_node.FindLink(via) is not { Remote: IPEndPoint } toRelay || toRelay.Interface != udp)
            throw new NodeRequestException(NodeError.NotFound, $"this node has no UDP link to {via}, the relay");
        if (Control?.Agent?.Bus is null)
            throw new NodeRequestException(NodeError.Unavailable, "a relayed link is agreed over the control bus, and this node is not on it");
        var (link, why) = await RelayThroughAsync(udp, peer, via, cancellationToken);
        return link ?? throw new NodeRequestException(NodeError.Unavailable, $"no link to {peer} through {via}: {why}");
    }

    /// <summary>
    /// One side of a punch. The node with the lower address dials every candidate of the other at once (the handshake
    /// retries its Hello every second); the other sends probes to the dialler's candidates, which open its own NAT for
    /// them, and waits for the dialler's Hello to come through. So only one side ever dials and no two handshakes cross.
    /// Null when no link came up within the handshake timeout. <paramref name="before"/> is the link to the peer there was
    /// before the punch began, if any: not the punch's doing. One that came up since is (the other side's dial can beat
    /// this side's start).
    /// </summary>
    private async Task<Link?> MeetOnceAsync(NodeAddress peer, PunchOffer theirs, Link? before, CancellationToken cancellationToken)
    {
        // Both ends may ask at once (each lists the other as a peer): one meeting with a peer at a time, and whoever comes
        // second takes the link the first one made — so a failed punch never leaves two relayed links.
        var mine = new TaskCompletionSource<Link?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = _meetings.GetOrAdd(peer, mine.Task);
        if (running != mine.Task)
        {
            await running.WaitAsync(cancellationToken);
            return _node.FindLink(peer);
        }
        try
        {
            var link = await MeetAsync(peer, theirs, before, cancellationToken);
            mine.TrySetResult(link);
            return link;
        }
        catch (Exception e)
        {
            mine.TrySetException(e);
            throw;
        }
        finally
        {
            _meetings.TryRemove(new KeyValuePair<NodeAddress, Task<Link?>>(peer, mine.Task));
        }
    }

    private async Task<Link?> MeetAsync(NodeAddress peer, PunchOffer theirs, Link? before, CancellationToken cancellationToken)
    {
        if (Udp is not { } udp)
            return null;
        var link = _node.FindLink(peer);
        if (link is not null && link == before)
            return link;
        var dialler = string.CompareOrdinal(_node.Address.ToString(), peer.ToString()) < 0;
        link ??= dialler
                ? await DialAsync(udp, peer, theirs.Candidates, cancellationToken)
                : await ProbeAsync(udp, peer, theirs.Candidates, cancellationToken);
        if (link is null)
        {
            Interlocked.Increment(ref _punchFailures);
            Log.PunchFailed(_logger, peer.ToString(), string.Join(", ", theirs.Candidates));
            // Through a neighbour of both: the dialler asks one, the other waits for the link to come through it.
            if (dialler)
            {
                foreach (var via in theirs.Neighbours.Where(n => _node.FindLink(n) is { Interface: UdpInterface }).Take(3))
                {
                    if ((await RelayThroughAsync(udp, peer, via, cancellationToken)).Link is { } relayed)
                        return relayed;
                }
                return null;
            }
            return theirs.Neighbours.Count == 0 ? null : await WaitForLinkAsync(
                l => l.Peer == peer, 3 * _node.Switch.Options.HandshakeTimeout, cancellationToken);
        }
        if (_howMade.TryAdd(link.Id, ("punched", null)))
        {
            Interlocked.Increment(ref _punched);
            Log.Punched(_logger, peer.ToString(), link.Remote.ToString() ?? "");
        }
        return link;
    }

    /// <summary>The dialler's part: every candidate at once; the first link up wins and the others are dropped.</summary>
    private async Task<Link?> DialAsync(UdpInterface udp, NodeAddress peer, IReadOnlyList<IPEndPoint> candidates, CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var attempts = candidates.Select(c => Background.Run(async () =>
        {
            try
            {
                return await _node.ConnectAsync(udp.Name, c, peer, stop.Token);
            }
            catch (Exception e) when (e is NodeRequestException or LinkFailedException or OperationCanceledException or InvalidOperationException or SocketException)
            {
                return null;
            }
        })).ToList();
        Link? won = null;
        while (attempts.Count > 0)
        {
            var done = await Task.WhenAny(attempts);
            attempts.Remove(done);
            if (await done is not { } link)
                continue;
            if (won is null)
            {
                won = link;
                await Background.CancelAsync(stop);
            }
            else if (link != won)
            {
                _node.Switch.Disconnect(link, "another candidate linked first");
            }
        }
        return won;
    }

    /// <summary>The other part: probes to every candidate of the dialler, a few a second, until its Hello has made the link.</summary>
    private async Task<Link?> ProbeAsync(UdpInterface udp, NodeAddress peer, IReadOnlyList<IPEndPoint> candidates, CancellationToken cancellationToken)
    {
        var time = _node.Time;
        var until = time.GetTimestamp() + (long)((_node.Switch.Options.HandshakeTimeout.TotalSeconds + 1) * time.TimestampFrequency);
        using var tick = new PeriodicTimer(TimeSpan.FromMilliseconds(200), time);
        while (time.GetTimestamp() < until)
        {
            if (DirectLink(peer) is { } link)
                return link;
            foreach (var candidate in candidates)
                udp.TrySend(candidate, MeshSwitch.PunchProbe);
            if (!await tick.WaitForNextTickAsync(cancellationToken))
                break;
        }
        return DirectLink(peer);
    }

    /// <summary>A link up to <paramref name="peer"/> that does not go through a relay.</summary>
    private Link? DirectLink(NodeAddress peer) =>
        _node.Switch.Links.Where(l => l.State == LinkState.Up && l.Peer == peer && !(l.Remote is IPEndPoint r && _relayPorts.ContainsKey(r))).MinBy(l => l.Id);

    /// <summary>
    /// The asking side of a relayed link: a port and token from <paramref name="via"/>, the offer to
    /// <paramref name="peer"/> over the bus, then the link through the port. The link, or why there is none.
    /// </summary>
    private async Task<(Link? Link, string Why)> RelayThroughAsync(UdpInterface udp, NodeAddress peer, NodeAddress via, CancellationToken cancellationToken)
    {
        if (_node.FindLink(via) is not { Remote: IPEndPoint relayAt } toRelay)
            return (null, $"the link to {via} went down");
        string? answer;
        try
        {
            var stream = await _node.Channels.OpenAsync(toRelay, LinkRelay.Service, "open", cancellationToken);
            await stream.WriteAsync(Encoding.ASCII.GetBytes(peer + "\n"), cancellationToken);
            await stream.CompleteAsync(cancellationToken);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5), _node.Time);
            using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
            answer = await LinkChannels.ReadLineAsync(stream, 256, either.Token);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException or OperationCanceledException)
        {
            cancellationToken.ThrowIfCancellationRequested();
            return (null, $"{via} did not answer ({e.Message})");
        }
        var parts = answer?.Split(' ');
        if (parts is not ["ok", var portText, var secret] || !int.TryParse(portText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var portNumber)
            || portNumber is < 1 or > 65535)
            return (null, $"{via} does not relay it: {(answer is null ? "no answer" : answer.StartsWith("no ", StringComparison.Ordinal) ? answer[3..] : answer)}");
        if (Control?.Agent?.Bus is not { } bus)
            return (null, "this node is not on the control bus");
        try
        {
            await bus.RequestAsync(peer, RelayMethod, JsonSerializer.SerializeToUtf8Bytes(new RelayOffer(via.ToString(), portNumber, secret), WireJson), null, cancellationToken);
        }
        catch (ControlBusException e)
        {
            return (null, $"{peer} did not take the relayed link: {e.Message}");
        }
        var port = new IPEndPoint(relayAt.Address, portNumber);
        _relayPorts[port] = via;
        var link = await ThroughRelayAsync(udp, peer, via, port, secret, dial: true, cancellationToken);
        return (link, link is null ? "no handshake through the relay" : "");
    }

    /// <summary>
    /// One end of a relayed link: tells the relay where this node is (again every half second, in case a datagram is
    /// lost, until the link is up), and dials through it, or waits for the other end's dial.
    /// </summary>
    private async Task<Link?> ThroughRelayAsync(UdpInterface udp, NodeAddress peer, NodeAddress via, IPEndPoint port, string secret, bool dial, CancellationToken cancellationToken)
    {
        var bind = LinkRelay.BindDatagram(secret, dial ? 'a' : 'b');
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var binding = Background.Run(async () =>
        {
            using var tick = new PeriodicTimer(TimeSpan.FromMilliseconds(500), _node.Time);
            do
                udp.TrySend(port, bind);
            while (await tick.WaitForNextTickAsync(stop.Token));
        });
        Link? link = null;
        try
        {
            if (dial)
            {
                try
                {
                    link = await _node.ConnectAsync(udp.Name, port, peer, cancellationToken);
                }
                catch (Exception e) when (e is NodeRequestException or LinkFailedException or InvalidOperationException or SocketException)
                {
                }
            }
            else
            {
                link = await WaitForLinkAsync(l => l.Peer == peer && l.Remote.Equals(port), _node.Switch.Options.HandshakeTimeout * 2, cancellationToken);
            }
        }
        finally
        {
            await Background.CancelAsync(stop);
            try
            {
                await binding;
            }
            catch (OperationCanceledException)
            {
            }
        }
        if (link is null || !link.Remote.Equals(port))
        {
            if (!_node.Switch.Links.Any(l => l.Remote.Equals(port)))
                _relayPorts.TryRemove(port, out _);
            return link;
        }
        _howMade[link.Id] = ("relayed", via);
        Interlocked.Increment(ref _relayed);
        Log.Relayed(_logger, peer.ToString(), via.ToString(), port.ToString());
        return link;
    }

    /// <summary>A link up that <paramref name="match"/>es, once there is one; null after <paramref name="patience"/>.</summary>
    private async Task<Link?> WaitForLinkAsync(Func<Link, bool> match, TimeSpan patience, CancellationToken cancellationToken)
    {
        var time = _node.Time;
        var until = time.GetTimestamp() + (long)(patience.TotalSeconds * time.TimestampFrequency);
        using var tick = new PeriodicTimer(TimeSpan.FromMilliseconds(100), time);
        do
        {
            var link = _node.Switch.Links.FirstOrDefault(l => l.State == LinkState.Up && match(l));
            if (link is not null)
                return link;
        }
        while (time.GetTimestamp() < until && await tick.WaitForNextTickAsync(cancellationToken));
        return null;
    }

    /// <summary>What this node offers in a punch: where it may be reached, and its neighbours on UDP links (possible relays).</summary>
    private PunchOffer Offer(NodeAddress peer) => new(Candidates(),
        [.. _node.Switch.Links.Where(l => l.State == LinkState.Up && l.Interface is UdpInterface && l.Peer is { } p && p != peer && !(l.Remote is IPEndPoint r && _relayPorts.ContainsKey(r)))
            .Select(l => l.Peer!.Value).Distinct().Take(32)]);

    private static readonly JsonSerializerOptions WireJson = new(JsonSerializerDefaults.Web);

    private static byte[] Encode(PunchOffer offer) =>
        JsonSerializer.SerializeToUtf8Bytes(new PunchWire([.. offer.Candidates.Select(c => c.ToString())], [.. offer.Neighbours.Select(n => n.ToString())]), WireJson);

    private static PunchOffer Parse(ReadOnlySpan<byte> body)
    {
        try
        {
            var wire = JsonSerializer.Deserialize<PunchWire>(body, WireJson);
            return new PunchOffer(
                [.. (wire?.Candidates ?? []).Take(16).Select(t => IPEndPoint.TryParse(t, out var e) && e.Port != 0 ? e : null).OfType<IPEndPoint>()],
                [.. (wire?.Neighbours ?? []).Take(32).Select(t => NodeAddress.TryParse(t, out var a) ? a : (NodeAddress?)null).OfType<NodeAddress>()]);
        }
        catch (JsonException)
        {
            return new PunchOffer([], []);
        }
    }

    /// <summary>A punch request or answer on the bus: <c>{"candidates": ["ip:port", …], "neighbours": ["node address", …]}</c>.</summary>
    private sealed record PunchWire(string[]? Candidates, string[]? Neighbours);

    private sealed record PunchOffer(IReadOnlyList<IPEndPoint> Candidates, IReadOnlyList<NodeAddress> Neighbours);

    /// <summary>A relayed link offered on the bus: <c>{"via": relay, "port": its UDP port, "token": 32 hex digits}</c>.</summary>
    private sealed record RelayOffer(string? Via, int Port, string? Token);

    private static partial class Log
    {
        [LoggerMessage(EventId = 690, Level = LogLevel.Debug, Message = "Neighbour {Peer} sees this node at {Reflexive}")]
        public static partial void Observed(ILogger logger, string peer, string reflexive);

        [LoggerMessage(EventId = 691, Level = LogLevel.Information, Message = "Linked to {Peer} by hole punching, at {Remote}")]
        public static partial void Punched(ILogger logger, string peer, string remote);

        [LoggerMessage(EventId = 692, Level = LogLevel.Warning, Message = "Hole punching to {Peer} found no way through (tried {Candidates})")]
        public static partial void PunchFailed(ILogger logger, string peer, string candidates);

        [LoggerMessage(EventId = 693, Level = LogLevel.Information, Message = "Linked to {Peer} through relay {Via}, at its port {Port}")]
        public static partial void Relayed(ILogger logger, string peer, string via, string port);
    }
}
