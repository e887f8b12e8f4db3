using System.Net.Security;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Control.Bus;
using Skymesh.Control.Bus.Nats;
using Skymesh.Control.Bus.Ssmp;
using Skymesh.Identity;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;
using Skymesh.Ssmp.Client;

namespace Skymesh.Node.Control;

/// <summary>
/// Joins the control bus through neighbours (node.json <c>"broker": "via-neighbours"</c>; docs/control-plane.md,
/// "Control through the mesh"): asks every neighbour on its link-local channel whether it is on the bus and how many
/// relays it is from the broker, opens a tunnel through the nearest (never one whose own way in is this node), and
/// runs the node's SSMP session through it inside TLS to the broker, whose certificate must match the pinned
/// fingerprint (node.json <c>brokerPin</c>, or the first one seen, kept in <c>broker.pin</c> in the data directory).
/// The SSMP client makes a new tunnel at every reconnect, so a relay that goes away is replaced by another neighbour.
/// </summary>
public sealed partial class MeshBusConnector : IControlBusConnector
{
    /// <summary>The value of node.json's <c>broker</c> that selects this connector.</summary>
    public const string Setting = "via-neighbours";

    private readonly MeshNode _node;
    private readonly string _pinFile;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly AsyncSignal _neighbourJoined = new();
    private readonly Lock _lock = new();
    private NodeAddress? _via;
    private int? _hops;
    private string? _kind;
    private volatile bool _leafUpstream;
    private volatile string? _pin;
    private string? _lastProblem;

    public MeshBusConnector(MeshNode node, string? pin, ILoggerFactory? loggerFactory = null)
    {
        _node = node;
        _pinFile = Path.Combine(node.Options.DataDir, "broker.pin");
        _pin = pin ?? ReadPinFile();
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger("Skymesh.Node.Control");
    }

    public string Describe => "the control bus through neighbours";

    /// <summary>How long one attempt waits for a neighbour on the bus before it fails (and the control plane tries again).</summary>
    public TimeSpan WaitForNeighbour { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a neighbour has to answer a question on its link-local channel.</summary>
    public TimeSpan AnswerTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The neighbour the current tunnel goes through; null before the first.</summary>
    public NodeAddress? Via
    {
        get
        {
            lock (_lock)
                return _via;
        }
    }

    /// <summary>Relays between this node and the broker on the current tunnel (1 when the neighbour reaches it directly).</summary>
    public int? Hops
    {
        get
        {
            lock (_lock)
                return _hops;
        }
    }

    /// <summary>The fingerprint of the broker's key this node trusts (configured or first seen).</summary>
    public string? Pin => _pin;

    /// <summary>Why the last search for a way in found none; null once one was found.</summary>
    public string? LastProblem => _lastProblem;

    /// <summary>A neighbour said it has just joined the bus: a search waiting for one asks again at once.</summary>
    public void OnNeighbourJoined() => _neighbourJoined.Release();

    /// <summary>Whether the neighbour this node joined through leads on to a NATS server's leafnode port.</summary>
    public bool LeafUpstream => _leafUpstream;

    /// <summary>The kind of bus the neighbours lead to, as the one this node joined through said (<c>ssmp</c> or <c>nats</c>); null before.</summary>
    public string Kind => Volatile.Read(ref _kind) ?? "ssmp";

    public async Task<IControlBus> ConnectAsync(NodeKey key, CancellationToken cancellationToken)
    {
        var (first, name) = await OpenTunnelWithNameAsync(own: true, cancellationToken);
        var handedOut = 0;
        // The first connection uses the tunnel just found; every reconnection looks for one afresh.
        async ValueTask<Stream> Connect(CancellationToken token) =>
            Interlocked.Exchange(ref handedOut, 1) == 0 ? first : (await OpenTunnelWithNameAsync(own: true, token)).Stream;
        try
        {
            if (Kind == "nats")
            {
                // Plain NATS inside the tunnel: every message on a NATS bus is signed by its node, so a relay can drop
                // messages but not forge or alter them (docs/control-plane.md, "Control through the mesh").
                return await NatsControlBus.ConnectAsync(["nats://via-neighbours:4222"], key, new NatsControlBusOptions
                {
                    Time = _node.Time,
                    LoggerFactory = _loggerFactory,
                    Describe = "nats through neighbours",
                    ConnectStream = Connect,
                }, cancellationToken);
            }
            var bus = await SsmpControlBus.ConnectAsync(name, 0, key, new SsmpControlBusOptions
            {
                ServerName = name,
                Time = _node.Time,
                Random = _node.Random,
                LoggerFactory = _loggerFactory,
                Describe = "ssmp through neighbours",
                ConnectStream = Connect,
                Tls = Tls(name),
            }, cancellationToken);
            return bus;
        }
        catch
        {
            if (Interlocked.Exchange(ref handedOut, 1) == 0)
                await first.DisposeAsync();
            throw;
        }
    }

    /// <summary>Opens a tunnel to the broker for a neighbour's session, through the best neighbour on the bus, waiting a while for one.</summary>
    /// <param name="ttl">Further relays the tunnel may pass: each relay passes one less on, so stale answers can never make tunnels go round in a loop.</param>
    /// <param name="leaf">To a NATS server's leafnode port (for a server beside this node) rather than to the bus.</param>
    public async Task<Stream> OpenTunnelAsync(int ttl, bool leaf, CancellationToken cancellationToken) => (await OpenTunnelWithNameAsync(own: false, cancellationToken, ttl, leaf)).Stream;

    /// <param name="own">For this node's own session (its route is what status shows), or onwards for a neighbour's.</param>
    private async Task<(Stream Stream, string Name)> OpenTunnelWithNameAsync(bool own, CancellationToken cancellationToken, int ttl = BusRelay.MaxHops, bool leaf = false)
    {
        var deadline = _node.Time.GetTimestamp() + (long)(WaitForNeighbour.TotalSeconds * _node.Time.TimestampFrequency);
        while (true)
        {
            var (tunnel, problem) = await TryOpenAsync(own, ttl, leaf, cancellationToken);
            if (tunnel is { } found)
            {
                if (own)
                    _lastProblem = null;
                return found;
            }
            if (!own)
                throw new IOException(problem);
            if (problem != _lastProblem)
                Log.NoWayIn(_logger, problem);
            _lastProblem = problem;
            var left = _node.Time.GetElapsedTime(_node.Time.GetTimestamp(), deadline);
            if (left <= TimeSpan.Zero)
                throw new ControlBusException(ControlBusException.Unavailable, problem);
            // Until a neighbour says it joined the bus, or a while has passed (a neighbour whose word was lost).
            using var poll = new CancellationTokenSource(TimeSpan.FromTicks(Math.Min(left.Ticks, TimeSpan.FromSeconds(2).Ticks)), _node.Time);
            using var either = CancellationTokenSource.CreateLinkedTokenSource(poll.Token, cancellationToken);
            try
            {
                await _neighbourJoined.WaitAsync(either.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
            }
        }
    }

    private async Task<((Stream, string)? Tunnel, string Problem)> TryOpenAsync(bool own, int ttl, bool leaf, CancellationToken cancellationToken)
    {
        var links = _node.Switch.Links.Where(l => l.State == LinkState.Up && l.Peer is not null).ToList();
        if (links.Count == 0)
            return (null, "no neighbour reaches the control bus: this node has no links up");
        var answers = await Task.WhenAll(links.Select(link => AskAsync(link, cancellationToken)));
        var self = _node.Address;
        // Once joined, only neighbours that lead to the same kind of bus (a mesh mixing kinds is set up wrong somewhere).
        var kind = Volatile.Read(ref _kind);
        var candidates = answers.Where(a => a.Hops is not null && a.Upstream != self && a.Hops < ttl && (kind is null || a.Kind == kind) && (!leaf || a.Leaf))
            .OrderBy(a => a.Hops).ThenBy(a => a.Link.Rtt ?? TimeSpan.MaxValue).ToList();
        var reasons = answers.Where(a => a.Hops is null || a.Upstream == self)
            .Select(a => $"{Short(a.Link.Peer)}: {(a.Upstream == self ? "reaches it through this node" : a.Problem)}").ToList();
        foreach (var candidate in candidates)
        {
            var peer = candidate.Link.Peer!.Value;
            ReliableStream? stream = null;
            try
            {
                stream = await _node.Channels.OpenAsync(candidate.Link, BusRelay.Service, $"{(leaf ? "leaf" : "tunnel")}:{ttl - 1}", cancellationToken);
                var answer = await ReadAnswerAsync(stream, cancellationToken);
                if (answer != "ok")
                {
                    reasons.Add($"{Short(peer)}: {Trim(answer)}");
                    stream.Abort("refused");
                    continue;
                }
                if (own)
                {
                    lock (_lock)
                    {
                        _via = peer;
                        _hops = candidate.Hops + 1;
                        _kind ??= candidate.Kind;
                        _leafUpstream = candidate.Leaf;
                    }
                    Log.Tunnel(_logger, peer.ToString(), candidate.Hops!.Value + 1);
                }
                return (((Stream)stream.AsStream(), candidate.Name!), "");
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                stream?.Abort(e.Message);
                reasons.Add($"{Short(peer)}: {e.Message}");
            }
        }
        return (null, "no neighbour reaches the control bus (" + string.Join("; ", reasons) + ")");
    }

    private async Task<(Link Link, int? Hops, NodeAddress? Upstream, string? Name, string Kind, bool Leaf, string Problem)> AskAsync(Link link, CancellationToken cancellationToken)
    {
        ReliableStream? stream = null;
        try
        {
            stream = await _node.Channels.OpenAsync(link, BusRelay.Service, "status", cancellationToken);
            await stream.CompleteAsync(cancellationToken);
            var answer = await ReadAnswerAsync(stream, cancellationToken);
            if (answer is null || !answer.StartsWith("ok ", StringComparison.Ordinal))
                return (link, null, null, null, "", false, Trim(answer));
            int? hops = null;
            NodeAddress? upstream = null;
            string? name = null;
            // A relay that does not say leads to an SSMP broker.
            var kind = "ssmp";
            var leaf = false;
            foreach (var field in answer[3..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                var eq = field.IndexOf('=');
                if (eq <= 0)
                    continue;
                var value = field[(eq + 1)..];
                switch (field[..eq])
                {
                    case "hops" when int.TryParse(value, out var h) && h is >= 0 and < BusRelay.MaxHops:
                        hops = h;
                        break;
                    case "upstream" when NodeAddress.TryParse(value, out var u):
                        upstream = u;
                        break;
                    case "name" when Skymesh.Ssmp.Codec.SsmpGrammar.IsValidId(value):
                        name = value;
                        break;
                    case "kind" when value is "ssmp" or "nats":
                        kind = value;
                        break;
                    case "leaf":
                        leaf = value == "1";
                        break;
                }
            }
            return hops is null || name is null ? (link, null, null, null, "", false, "an answer that does not parse") : (link, hops, upstream, name, kind, leaf, "");
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return (link, null, null, null, "", false, e.Message);
        }
        finally
        {
            stream?.Abort("answered");
        }
    }

    private async Task<string?> ReadAnswerAsync(ReliableStream stream, CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(AnswerTimeout, _node.Time);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, cancellationToken);
        try
        {
            return await LinkChannels.ReadLineAsync(stream, 512, either.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new IOException($"no answer within {AnswerTimeout.TotalSeconds:0.#} s");
        }
    }

    private static string Trim(string? answer) => answer is null ? "no answer" : answer.StartsWith("no ", StringComparison.Ordinal) ? answer[3..] : answer;

    private static string Short(NodeAddress? address) => address?.ToString()[..16] ?? "?";

    /// <summary>TLS to the broker named <paramref name="name"/>, accepting only the pinned key (or, with none yet, the first).</summary>
    private SslClientAuthenticationOptions Tls(string name)
    {
        var tls = SsmpTlsPinning.ClientOptions(Trust);
        tls.TargetHost = name;
        return tls;
    }

    private bool Trust(string presented)
    {
        var pinned = _pin;
        if (pinned is null)
        {
            // Trust on first use: the first broker this node meets is the one it keeps to.
            File.WriteAllText(_pinFile, presented + "\n");
            _pin = presented;
            Log.Pinned(_logger, presented, _pinFile);
            return true;
        }
        if (string.Equals(pinned, presented, StringComparison.OrdinalIgnoreCase))
            return true;
        _lastProblem = $"the broker at the end of the tunnel presented the key {presented}, not the pinned {pinned}";
        Log.WrongBroker(_logger, presented, pinned);
        return false;
    }

    private string? ReadPinFile()
    {
        try
        {
            return File.ReadAllText(_pinFile).Trim() is { Length: > 0 } pin ? pin : null;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 683, Level = LogLevel.Warning, Message = "Control bus through neighbours: {Problem}")]
        public static partial void NoWayIn(ILogger logger, string problem);

        [LoggerMessage(EventId = 684, Level = LogLevel.Information, Message = "Control bus through neighbour {Peer} ({Hops} relays from the broker)")]
        public static partial void Tunnel(ILogger logger, string peer, int hops);

        [LoggerMessage(EventId = 685, Level = LogLevel.Warning, Message = "Control bus through neighbours: trusting the broker key {Fingerprint} from now on (first seen; kept in {File})")]
        public static partial void Pinned(ILogger logger, string fingerprint, string file);

        [LoggerMessage(EventId = 686, Level = LogLevel.Warning, Message = "Control bus through neighbours: the broker presented {Presented}, not the pinned {Pinned}: refused (a relay in the way, or a new broker key: remove broker.pin or set brokerPin)")]
        public static partial void WrongBroker(ILogger logger, string presented, string pinned);
    }
}
