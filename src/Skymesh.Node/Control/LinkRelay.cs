using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node.Control;

/// <summary>Limits of the links a node relays between others (node.json <c>linkRelay</c>).</summary>
public sealed record LinkRelayOptions
{
    /// <summary>Relay links for neighbours at all (default true).</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>Relayed links one neighbour may ask for at once.</summary>
    public int MaxPerNeighbour { get; init; } = 8;

    /// <summary>Bytes a second one relayed link may carry, both ways together; beyond it datagrams are dropped (the link's own recovery copes).</summary>
    public int BytesPerSecond { get; init; } = 4 << 20;

    /// <summary>A relayed link that carries nothing this long (a link up sends keepalives) is closed.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>What the link relay counts, for <c>/metrics</c> and <c>skymesh status</c>.</summary>
public sealed record LinkRelayCounters(int Open, long Opened, long Refused, long Datagrams, long Bytes, long Dropped);

/// <summary>
/// Relays links between two nodes that cannot reach each other directly — typically two behind NATs that hole punching
/// cannot get through (docs/control-plane.md, "Links through NAT"). A neighbour asks on the link-local channel (service
/// <c>link-relay</c>, verb <c>open</c>, then the other node's address on a line) and gets a UDP port of this node and a
/// secret token. Each of the two nodes sends <c>SKYMESH RELAY TOKEN a|b</c> from its mesh interface to that port, which
/// tells the relay where it is (through whatever its NAT did); from then on every datagram from one goes to the other.
/// The two then make an ordinary link through the port, handshake and all, so the relay carries sealed frames it cannot
/// read or forge, only drop. Bounded in number per neighbour and in bytes a second, closed when idle, and counted.
/// </summary>
public sealed partial class LinkRelay : IAsyncDisposable
{
    public const string Service = "link-relay";

    /// <summary>How a node tells the relay where it is: this, the token, a space, its side (<c>a</c> or <c>b</c>), a newline.</summary>
    public static ReadOnlySpan<byte> BindPrefix => "SKYMESH RELAY "u8;

    private const int TokenLength = 16;

    private readonly MeshNode _node;
    private readonly LinkRelayOptions _options;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<Session, byte> _sessions = new();
    private readonly CancellationTokenSource _stop = new();
    private long _opened, _refused, _datagrams, _bytes, _dropped;
    private Task _reaper = Task.CompletedTask;
    private int _reaping;

    public LinkRelay(MeshNode node, LinkRelayOptions options, ILoggerFactory loggerFactory)
    {
        _node = node;
        _options = options;
        _logger = loggerFactory.CreateLogger("Skymesh.Node.LinkRelay");
        node.Channels.Register(Service, ServeAsync);
    }

    public LinkRelayCounters Counters() => new(_sessions.Count, Interlocked.Read(ref _opened), Interlocked.Read(ref _refused),
        Interlocked.Read(ref _datagrams), Interlocked.Read(ref _bytes), Interlocked.Read(ref _dropped));

    /// <summary>The datagram a node sends the relay from its mesh interface to say where it is.</summary>
    public static byte[] BindDatagram(string token, char side) => Encoding.ASCII.GetBytes($"SKYMESH RELAY {token} {side}\n");

    private async Task ServeAsync(Link link, string verb, ReliableStream stream, CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10), _node.Time);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        var line = verb == "open" ? await LinkChannels.ReadLineAsync(stream, 128, either.Token) : null;
        var answer = Open(link, line);
        await stream.WriteAsync(Encoding.ASCII.GetBytes(answer + "\n"), cancellationToken);
        await stream.CompleteAsync(cancellationToken);
    }

    private string Open(Link link, string? line)
    {
        if (line is null || !NodeAddress.TryParse(line, out var other))
            return Refuse("no the request is \"open\", then the other node's address on a line");
        if (!_options.Enabled)
            return Refuse("no this node does not relay links");
        if (link.Interface is not UdpInterface udp || udp.LocalEndPoint is not IPEndPoint local || link.Peer is not { } neighbour)
            return Refuse("no only a neighbour on a UDP link can have a link relayed");
        if (other == neighbour || other == _node.Address)
            return Refuse("no a relayed link joins two other nodes");
        if (_sessions.Keys.Count(s => s.Neighbour == neighbour) >= _options.MaxPerNeighbour)
        {
            Log.TooMany(_logger, neighbour.ToString(), _options.MaxPerNeighbour);
            return Refuse($"no {neighbour} already has {_options.MaxPerNeighbour} relayed links through this node");
        }
        Socket socket;
        try
        {
            socket = new Socket(local.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            socket.Bind(new IPEndPoint(local.Address, 0));
        }
        catch (SocketException e)
        {
            return Refuse($"no no UDP port: {e.SocketErrorCode}");
        }
        var session = new Session(socket, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(TokenLength)), neighbour, other,
            new TokenBucket(_options.BytesPerSecond), _node.Time.GetTimestamp());
        _sessions[session] = 0;
        Interlocked.Increment(ref _opened);
        var port = ((IPEndPoint)socket.LocalEndPoint!).Port;
        Log.Opened(_logger, neighbour.ToString(), other.ToString(), port);
        session.Loop = Background.Run(() => RelayAsync(session));
        if (Interlocked.Exchange(ref _reaping, 1) == 0)
            _reaper = Background.Run(ReapAsync);
        return $"ok {port} {session.Token}";
    }

    private string Refuse(string answer)
    {
        Interlocked.Increment(ref _refused);
        return answer;
    }

    private async Task RelayAsync(Session session)
    {
        var buffer = new byte[65536];
        var socket = session.Socket;
        EndPoint any = new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        var time = _node.Time;
        try
        {
            while (true)
            {
                SocketReceiveFromResult received;
                try
                {
                    received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, any, _stop.Token);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
                {
                    continue; // an ICMP error for an earlier send: nothing for this loop
                }
                var from = (IPEndPoint)received.RemoteEndPoint;
                var data = buffer.AsSpan(0, received.ReceivedBytes);
                var now = time.GetTimestamp();
                if (data.StartsWith(BindPrefix))
                {
                    if (session.TryBind(data[BindPrefix.Length..], from))
                        session.LastActive = now;
                    else
                        Interlocked.Increment(ref _dropped);
                    continue;
                }
                var to = from.Equals(session.A) ? session.B : from.Equals(session.B) ? session.A : null;
                if (to is null || !session.Bucket.TryTake(data.Length, now, time.TimestampFrequency))
                {
                    // From neither end, to an end not bound yet, or over the rate.
                    Interlocked.Increment(ref _dropped);
                    continue;
                }
                session.LastActive = now;
                socket.SendTo(data, SocketFlags.None, to);
                Interlocked.Increment(ref _datagrams);
                Interlocked.Add(ref _bytes, data.Length);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
        finally
        {
            Close(session, "stopped");
        }
    }

    /// <summary>Closes relayed links that carried nothing for <see cref="LinkRelayOptions.IdleTimeout"/>.</summary>
    private async Task ReapAsync()
    {
        var time = _node.Time;
        using var tick = new PeriodicTimer(_options.IdleTimeout / 4, time);
        try
        {
            while (await tick.WaitForNextTickAsync(_stop.Token))
            {
                var now = time.GetTimestamp();
                foreach (var session in _sessions.Keys)
                {
                    if (time.GetElapsedTime(session.LastActive, now) >= _options.IdleTimeout)
                        Close(session, "idle");
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void Close(Session session, string why)
    {
        if (!_sessions.TryRemove(session, out _))
            return;
        session.Socket.Dispose();
        Log.Closed(_logger, session.Neighbour.ToString(), session.Other.ToString(), why);
    }

    public async ValueTask DisposeAsync()
    {
        await Background.CancelAsync(_stop);
        var sessions = _sessions.Keys.ToList();
        foreach (var session in sessions)
            Close(session, "the node stops");
        await Task.WhenAll(sessions.Select(s => s.Loop));
        await _reaper;
        _stop.Dispose();
    }

    private sealed class Session(Socket socket, string token, NodeAddress neighbour, NodeAddress other, TokenBucket bucket, long opened)
    {
        private readonly byte[] _token = Encoding.ASCII.GetBytes(token);

        public Socket Socket { get; } = socket;

        public string Token { get; } = token;

        /// <summary>The neighbour that asked (side <c>a</c>) and the node it links to (side <c>b</c>).</summary>
        public NodeAddress Neighbour { get; } = neighbour;

        public NodeAddress Other { get; } = other;

        public TokenBucket Bucket { get; } = bucket;

        public long LastActive { get => Volatile.Read(ref _lastActive); set => Volatile.Write(ref _lastActive, value); }

        private long _lastActive = opened;

        /// <summary>Where each end is, as its bind datagram came (set and read on the relay loop only).</summary>
        public IPEndPoint? A { get; private set; }

        public IPEndPoint? B { get; private set; }

        public Task Loop { get; set; } = Task.CompletedTask;

        /// <summary>Takes <c>TOKEN SIDE\n</c>: the end named moves to where it came from. False for a wrong token or side.</summary>
        public bool TryBind(ReadOnlySpan<byte> rest, IPEndPoint from)
        {
            if (rest.Length != _token.Length + 3 || rest[_token.Length] != (byte)' ' || rest[^1] != (byte)'\n'
                || !CryptographicOperations.FixedTimeEquals(rest[.._token.Length], _token))
                return false;
            switch (rest[_token.Length + 1])
            {
                case (byte)'a':
                    A = from;
                    return true;
                case (byte)'b':
                    B = from;
                    return true;
                default:
                    return false;
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 695, Level = LogLevel.Information, Message = "Relaying a link between neighbour {Neighbour} and {Other} on UDP port {Port}")]
        public static partial void Opened(ILogger logger, string neighbour, string other, int port);

        [LoggerMessage(EventId = 696, Level = LogLevel.Information, Message = "Relayed link between {Neighbour} and {Other} closed ({Why})")]
        public static partial void Closed(ILogger logger, string neighbour, string other, string why);

        [LoggerMessage(EventId = 697, Level = LogLevel.Warning, Message = "Link relay: neighbour {Neighbour} already has {Max} relayed links through this node; refused another")]
        public static partial void TooMany(ILogger logger, string neighbour, int max);
    }
}
