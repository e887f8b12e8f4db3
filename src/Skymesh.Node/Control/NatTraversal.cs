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
/// </summary>
public sealed partial class NatTraversal
{
    public const string ObserveService = "observe";
    public const string PunchMethod = "link-punch";

    private readonly MeshNode _node;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<NodeAddress, (IPEndPoint Observer, IPEndPoint Reflexive)> _observations = new();
    private readonly ConcurrentDictionary<int, string> _howMade = new();
    private long _punched;
    private long _punchFailures;

    public NatTraversal(MeshNode node, ILoggerFactory loggerFactory)
    {
        _node = node;
        _logger = loggerFactory.CreateLogger("Skymesh.Node.Nat");
        node.Channels.Register(ObserveService, ServeObserveAsync);
        node.Switch.LinkUp += link =>
        {
            if (link.Interface is UdpInterface && link.Peer is not null)
                _ = Background.Run(() => AskAsync(link));
        };
        node.Switch.LinkDown += (link, _) =>
        {
            _howMade.TryRemove(link.Id, out string? _);
            // What a neighbour no longer linked saw says nothing of the NAT's mappings now.
            if (link.Peer is { } peer && node.FindLink(peer) is null)
                _observations.TryRemove(peer, out var _);
        };
    }

    /// <summary>The node's control plane, once it runs: the rendezvous.</summary>
    public ControlPlane? Control { get; set; }

    /// <summary>Links made by hole punching, and attempts that found no way through.</summary>
    public long Punched => Interlocked.Read(ref _punched);

    public long PunchFailures => Interlocked.Read(ref _punchFailures);

    /// <summary>How the link was made, when not simply dialled: <c>punched</c>.</summary>
    public string? HowMade(Link link) => _howMade.TryGetValue(link.Id, out var how) ? how : null;

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

    /// <summary>Serves <see cref="PunchMethod"/> on the node's bus (at every login).</summary>
    public void Serve(IControlBus bus) => bus.Handle(PunchMethod, (request, token) =>
    {
        var theirs = Parse(request.Body.Span);
        if (theirs.Count == 0)
            throw new ControlBusException(ControlBusException.BadRequest, "no candidates");
        var mine = Encode(Candidates());
        // Our part starts at once, beside the caller's: dial, or open our NAT to its addresses.
        var before = _node.FindLink(request.From);
        _ = Background.Run(() => MeetAsync(request.From, theirs, before, CancellationToken.None));
        return ValueTask.FromResult<ReadOnlyMemory<byte>>(mine);
    });

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
        var mine = Candidates();
        if (mine.Count == 0)
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
        if (theirs.Count == 0)
            throw new NodeRequestException(NodeError.Unavailable, $"{peer} has no address to punch to");
        return await MeetAsync(peer, theirs, null, cancellationToken)
            ?? throw new NodeRequestException(NodeError.Timeout, $"hole punching to {peer} found no way through its NAT and ours (tried {string.Join(", ", theirs)}): a NAT that maps each destination to a new port (symmetric) lets no punch through");
    }

    /// <summary>
    /// One side of a punch. The node with the lower address dials every candidate of the other at once (the handshake
    /// retries its Hello every second); the other sends probes to the dialler's candidates, which open its own NAT for
    /// them, and waits for the dialler's Hello to come through. So only one side ever dials and no two handshakes cross.
    /// Null when no link came up within the handshake timeout. <paramref name="before"/> is the link to the peer there was
    /// before the punch began, if any: not the punch's doing. One that came up since is (the other side's dial can beat
    /// this side's start).
    /// </summary>
    private async Task<Link?> MeetAsync(NodeAddress peer, IReadOnlyList<IPEndPoint> candidates, Link? before, CancellationToken cancellationToken)
    {
        if (Udp is not { } udp)
            return null;
        var link = _node.FindLink(peer);
        if (link is not null && link == before)
            return link;
        link ??= string.CompareOrdinal(_node.Address.ToString(), peer.ToString()) < 0
                ? await DialAsync(udp, peer, candidates, cancellationToken)
                : await ProbeAsync(udp, peer, candidates, cancellationToken);
        if (link is null)
        {
            Interlocked.Increment(ref _punchFailures);
            Log.PunchFailed(_logger, peer.ToString(), string.Join(", ", candidates));
            return null;
        }
        if (_howMade.TryAdd(link.Id, "punched"))
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
            if (_node.FindLink(peer) is { } link)
                return link;
            foreach (var candidate in candidates)
                udp.TrySend(candidate, MeshSwitch.PunchProbe);
            if (!await tick.WaitForNextTickAsync(cancellationToken))
                break;
        }
        return _node.FindLink(peer);
    }

    private static byte[] Encode(IReadOnlyList<IPEndPoint> candidates) =>
        JsonSerializer.SerializeToUtf8Bytes(candidates.Select(c => c.ToString()).ToArray());

    private static List<IPEndPoint> Parse(ReadOnlySpan<byte> body)
    {
        try
        {
            var texts = JsonSerializer.Deserialize<string[]>(body) ?? [];
            return [.. texts.Take(16).Select(t => IPEndPoint.TryParse(t, out var e) && e.Port != 0 ? e : null).OfType<IPEndPoint>()];
        }
        catch (JsonException)
        {
            return [];
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 690, Level = LogLevel.Debug, Message = "Neighbour {Peer} sees this node at {Reflexive}")]
        public static partial void Observed(ILogger logger, string peer, string reflexive);

        [LoggerMessage(EventId = 691, Level = LogLevel.Information, Message = "Linked to {Peer} by hole punching, at {Remote}")]
        public static partial void Punched(ILogger logger, string peer, string remote);

        [LoggerMessage(EventId = 692, Level = LogLevel.Warning, Message = "Hole punching to {Peer} found no way through (tried {Candidates})")]
        public static partial void PunchFailed(ILogger logger, string peer, string candidates);
    }
}
