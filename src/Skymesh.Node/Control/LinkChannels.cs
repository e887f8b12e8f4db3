using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node.Control;

/// <summary>Serves one link service: a stream a neighbour opened, after its header line (the neighbour is the link's proven peer).</summary>
public delegate Task LinkServiceHandler(Link link, string verb, ReliableStream stream, CancellationToken cancellationToken);

/// <summary>
/// The link-local channel of every link (docs/control-plane.md, "Control through the mesh"): a path endpoint on the
/// reserved label <see cref="LabelTable.LinkChannelLabel"/> in both directions, which both neighbours set up the moment
/// the link is up, with nobody else's help — so two neighbours can talk before either is on the control bus. It
/// carries reliable streams, each opened with one header line <c>SERVICE VERB</c> naming the service it is for;
/// the channel is encrypted by the link (the two nodes' handshake) and goes no further than the neighbour.
/// </summary>
public sealed partial class LinkChannels : IAsyncDisposable
{
    /// <summary>The longest header line, newline included.</summary>
    public const int MaxHeader = 128;

    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<int, Channel> _channels = new();
    private readonly ConcurrentDictionary<string, LinkServiceHandler> _services = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private long _refused;
    private int _disposed;

    public LinkChannels(MeshSwitch meshSwitch, TimeProvider time, ILoggerFactory loggerFactory)
    {
        _time = time;
        _logger = loggerFactory.CreateLogger("Skymesh.Node.LinkChannels");
        meshSwitch.LinkUp += Open;
        meshSwitch.LinkDown += (link, reason) => Close(link, reason);
    }

    /// <summary>How long a link-local channel hears nothing (not even its keepalives) before it is given up and opened afresh.</summary>
    public TimeSpan FailureTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Streams a neighbour opened whose header named no service, was malformed or too long.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Serves <paramref name="service"/> (1–32 of <c>a-z 0-9 -</c>) on every link's channel.</summary>
    public void Register(string service, LinkServiceHandler handler)
    {
        if (!IsName(service))
            throw new ArgumentException("A link service is named by 1 to 32 of a-z, 0-9 and '-'.", nameof(service));
        _services[service] = handler;
    }

    /// <summary>
    /// Opens a stream to <paramref name="link"/>'s neighbour for <paramref name="service"/>, sending the header line;
    /// fails with <see cref="InvalidOperationException"/> when the link has no channel (it is down).
    /// </summary>
    public async Task<ReliableStream> OpenAsync(Link link, string service, string verb, CancellationToken cancellationToken)
    {
        if (!IsName(service) || verb.Length == 0 || verb.Length > 64 || verb.Any(c => c is < '!' or > '~'))
            throw new ArgumentException("Bad service or verb.");
        if (!_channels.TryGetValue(link.Id, out var channel) || channel.Link != link)
            throw new InvalidOperationException($"the link to {link.Peer} has no link-local channel (it is not up)");
        var stream = channel.Endpoint.OpenStream();
        try
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"{service} {verb}\n"), cancellationToken);
            return stream;
        }
        catch
        {
            stream.Abort("not sent");
            throw;
        }
    }

    /// <summary>Reads one line of at most <paramref name="max"/> bytes (without its newline); null when the stream ends first or the line is longer.</summary>
    public static async Task<string?> ReadLineAsync(ReliableStream stream, int max, CancellationToken cancellationToken)
    {
        var buffer = new byte[max];
        var one = new byte[1];
        var n = 0;
        while (n < max)
        {
            // Byte by byte: what follows the line belongs to whoever reads next.
            if (await stream.ReadAsync(one, cancellationToken) == 0)
                return null;
            if (one[0] == (byte)'\n')
                return Encoding.ASCII.GetString(buffer, 0, n);
            buffer[n++] = one[0];
        }
        return null;
    }

    private static bool IsName(string s) => s.Length is > 0 and <= 32 && s.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-');

    private void Open(Link link)
    {
        if (_disposed != 0 || link.Peer is not { } peer)
            return;
        var pathChannel = new LinkPathChannel(link, LabelTable.LinkChannelLabel) { Billable = false };
        var endpoint = new PathEndpoint(pathChannel, new PathEndpointOptions
        {
            PeerName = $"neighbour {peer}",
            // Stream ids: odd from the side that dialled the link, even from the other, so both may open streams.
            IsInitiator = link.IsInitiator,
            FailureTimeout = FailureTimeout,
            SendBufferSize = 256 * 1024,
            ReceiveBufferSize = 256 * 1024,
            MaxIncomingStreams = 1024,
        }, cipher: null, _time);
        pathChannel.Endpoint = endpoint;
        var channel = new Channel(link, endpoint);
        if (_channels.TryGetValue(link.Id, out var old))
            Retire(old);
        _channels[link.Id] = channel;
        link.ChannelSink = pathChannel;
        // A channel that hears nothing for its failure timeout while the link stays up (the neighbour restarted it):
        // open a fresh one on the same link.
        endpoint.Broken += (_, _) =>
        {
            if (_disposed == 0 && link.State == LinkState.Up && _channels.TryGetValue(link.Id, out var current) && current == channel)
                Open(link);
        };
        channel.Accepting = Background.Run(() => AcceptAsync(channel));
    }

    private void Close(Link link, string reason)
    {
        if (_channels.TryGetValue(link.Id, out var channel) && channel.Link == link)
        {
            _channels.TryRemove(new KeyValuePair<int, Channel>(link.Id, channel));
            channel.Endpoint.Break($"link to neighbour {link.Peer} down ({reason})");
            Retire(channel);
        }
    }

    private static void Retire(Channel channel)
    {
        if (channel.Link.ChannelSink is LinkPathChannel current && current.Endpoint == channel.Endpoint)
            channel.Link.ChannelSink = null;
        _ = channel.Endpoint.DisposeAsync().AsTask();
    }

    private async Task AcceptAsync(Channel channel)
    {
        while (!_stop.IsCancellationRequested)
        {
            ReliableStream stream;
            try
            {
                stream = await channel.Endpoint.AcceptStreamAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or PathBrokenException)
            {
                return;
            }
            _ = Background.Run(() => ServeAsync(channel.Link, stream));
        }
    }

    private async Task ServeAsync(Link link, ReliableStream stream)
    {
        try
        {
            var header = await ReadLineAsync(stream, MaxHeader, _stop.Token);
            var space = header?.IndexOf(' ') ?? -1;
            if (header is null || space <= 0 || !_services.TryGetValue(header[..space], out var handler))
            {
                Interlocked.Increment(ref _refused);
                stream.Abort("no such link service");
                return;
            }
            await handler(link, header[(space + 1)..], stream, _stop.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or PathBrokenException or IOException)
        {
            stream.Abort(e.Message);
        }
        catch (Exception e)
        {
            Log.ServiceFailed(_logger, link.Peer?.ToString() ?? "?", e);
            stream.Abort("the service failed");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await Background.CancelAsync(_stop);
        foreach (var channel in _channels.Values)
        {
            channel.Endpoint.Break("node stopping");
            channel.Link.ChannelSink = null;
            await channel.Endpoint.DisposeAsync();
            if (channel.Accepting is { } accepting)
                await accepting;
        }
        _channels.Clear();
        _stop.Dispose();
    }

    private sealed class Channel(Link link, PathEndpoint endpoint)
    {
        public Link Link { get; } = link;

        public PathEndpoint Endpoint { get; } = endpoint;

        public Task? Accepting { get; set; }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 681, Level = LogLevel.Error, Message = "A link service for neighbour {Peer} failed")]
        public static partial void ServiceFailed(ILogger logger, string peer, Exception error);
    }
}
