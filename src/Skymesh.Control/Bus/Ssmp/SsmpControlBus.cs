using System.Net.Sockets;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Control.Bus.Ssmp;

/// <summary>
/// The control bus on an SSMP broker (docs/control-plane.md). The node logs in under its address with the
/// <c>key</c> scheme, so the broker proves every sender: an event whose sender is not a node address (an
/// <c>open</c> login) is refused and counted. Topics are SSMP topics; watching members is SUBSCRIBE with PRESENCE;
/// a publication larger than one SSMP payload goes as the documented fragments (docs/ssmp-rpc.md §1), one MCAST
/// each, and is put back together per sender; direct messages and requests are the RPC layer's.
/// </summary>
public sealed partial class SsmpControlBus : IControlBus
{
    private readonly SsmpPeer _peer;
    private readonly ILogger _logger;
    private readonly Channel<BusEvent> _events;
    private readonly SsmpReassembler _publications;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _pump;
    private readonly Task _messagePump;
    private uint _nextPublication;
    private long _unproven;
    private long _dropped;
    private int _disposed;

    private SsmpControlBus(SsmpPeer peer, NodeAddress self, string describe, TimeProvider time, Random random, ILogger logger)
    {
        _peer = peer;
        Self = self;
        Describe = describe;
        _logger = logger;
        _nextPublication = (uint)random.Next();
        _events = Channel.CreateBounded<BusEvent>(new BoundedChannelOptions(65_536) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = false },
            _ => Interlocked.Increment(ref _dropped));
        _publications = new SsmpReassembler(new SsmpReassemblerOptions
        {
            MaxMessageBytes = ControlBus.MaxPublishBytes,
            MaxIncompletePerSender = 2,
            MaxIncompleteBytes = 64L * 1024 * 1024,
            Timeout = TimeSpan.FromSeconds(10),
        }, time);
        peer.Client.StateChanged += OnClientState;
        _pump = Background.Run(PumpEventsAsync);
        _messagePump = Background.Run(PumpMessagesAsync);
    }

    public NodeAddress Self { get; }

    public string Describe { get; }

    public BusState State => ToBusState(_peer.Client.State);

    public event Action<BusState>? StateChanged;

    public ChannelReader<BusEvent> Events => _events.Reader;

    public long UnprovenSenders => Interlocked.Read(ref _unproven);

    /// <summary>Events dropped because nobody read <see cref="Events"/> fast enough.</summary>
    public long DroppedEvents => Interlocked.Read(ref _dropped);

    /// <summary>
    /// Logs <paramref name="key"/>'s node into the broker at <paramref name="host"/>:<paramref name="port"/>; a broker
    /// that cannot be reached or refuses throws <see cref="ControlBusException"/> (503 or 403).
    /// </summary>
    public static async Task<SsmpControlBus> ConnectAsync(string host, int port, NodeKey key, SsmpControlBusOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(key);
        options ??= new SsmpControlBusOptions();
        var time = options.Time ?? TimeProvider.System;
        var random = options.Random ?? new Random();
        SsmpPeer peer;
        try
        {
            peer = await SsmpPeer.ConnectAsync(new SsmpClientOptions
            {
                Host = host,
                Port = port,
                ConnectStream = options.ConnectStream,
                Tls = options.Tls,
                // The `key` scheme: the broker checks a fresh signature by the node's key at every (re)login, so every
                // other node can trust that what comes from this id comes from this node.
                Key = key,
                ServerName = options.ServerName,
                TimeProvider = time,
                Random = random,
                LoggerFactory = options.LoggerFactory,
            }, cancellationToken: cancellationToken);
        }
        catch (SsmpException e)
        {
            // A refused key login is almost always one of three things; say which to check rather than a bare 401.
            var hint = e.Code == 401
                ? $" (check that the broker's name is \"{options.ServerName}\" — \"brokerName\" in node.json, `skymesh broker --name` on the broker — that it offers the key scheme, and that this machine's clock is right)"
                : "";
            throw new ControlBusException(e.Code is 401 or 403 ? ControlBusException.Forbidden : ControlBusException.Unavailable, e.Message.TrimEnd('.') + hint, e);
        }
        catch (Exception e) when (e is SocketException or IOException or TimeoutException or System.Security.Authentication.AuthenticationException)
        {
            throw new ControlBusException(ControlBusException.Unavailable, e.Message, e);
        }
        var logger = (options.LoggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance).CreateLogger("Skymesh.Control.Bus");
        return new SsmpControlBus(peer, key.Address, options.Describe ?? $"ssmp://{host}:{port}", time, random, logger);
    }

    private static BusState ToBusState(SsmpClientState state) => state switch
    {
        SsmpClientState.Connected => BusState.Connected,
        SsmpClientState.Reconnecting => BusState.Reconnecting,
        _ => BusState.Closed,
    };

    private void OnClientState(SsmpClientState state) => StateChanged?.Invoke(ToBusState(state));

    public async Task PublishAsync(string topic, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        ControlBus.ValidateName(topic, nameof(topic));
        if (payload.Length > ControlBus.MaxPublishBytes)
            throw new ArgumentException($"A publication is at most {ControlBus.MaxPublishBytes} bytes.", nameof(payload));
        await RunAsync(async () =>
        {
            // One MCAST when it fits and cannot be mistaken for a fragment; the documented fragments otherwise.
            if (payload.Length <= SsmpGrammar.MaxPayloadLength && !SsmpChunking.IsFragment(payload.Span))
            {
                await _peer.Client.McastAsync(topic, payload, cancellationToken);
                return;
            }
            var id = Interlocked.Increment(ref _nextPublication);
            var count = SsmpChunking.FragmentCount(payload.Length);
            // FIFO per sender and recipient keeps the fragments in order; each is confirmed.
            var sends = new Task[count];
            for (var i = 0; i < count; i++)
                sends[i] = _peer.Client.McastAsync(topic, SsmpChunking.Fragment(id, payload.Span, i), cancellationToken);
            await Task.WhenAll(sends);
        });
    }

    public Task SubscribeAsync(string topic, bool watchMembers, CancellationToken cancellationToken)
    {
        ControlBus.ValidateName(topic, nameof(topic));
        return RunAsync(() => _peer.Client.SubscribeAsync(topic, watchMembers, cancellationToken));
    }

    public Task SendAsync(NodeAddress to, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken) =>
        RunAsync(() => _peer.SendAsync(to.ToString(), payload, cancellationToken));

    public async Task<ReadOnlyMemory<byte>> RequestAsync(NodeAddress to, string method, ReadOnlyMemory<byte> body, BusCallOptions? options, CancellationToken cancellationToken)
    {
        ControlBus.ValidateName(method, nameof(method));
        options ??= BusCallOptions.Default;
        var call = new SsmpCallOptions { AttemptTimeout = options.AttemptTimeout, Attempts = options.Attempts };
        ReadOnlyMemory<byte> answer = default;
        await RunAsync(async () => answer = await _peer.CallAsync(to.ToString(), method, body, call, cancellationToken));
        return answer;
    }

    public void Handle(string method, BusHandler handler)
    {
        ControlBus.ValidateName(method, nameof(method));
        ArgumentNullException.ThrowIfNull(handler);
        _peer.Handle(method, async (request, cancellationToken) =>
        {
            // The caller's SSMP id is its node address, proven by its key login; any other id is not a node.
            if (!NodeAddress.TryParse(request.From, out var from))
            {
                Interlocked.Increment(ref _unproven);
                throw new SsmpRpcException(ControlBusException.Forbidden, "the control plane answers nodes logged in under their address");
            }
            try
            {
                return await handler(new BusRequest(from, request.Method, request.Body), cancellationToken);
            }
            catch (ControlBusException e)
            {
                throw new SsmpRpcException(e.Status, e.Message);
            }
        });
    }

    /// <summary>Runs an SSMP operation, answering its failures as the bus's.</summary>
    private static async Task RunAsync(Func<Task> operation)
    {
        try
        {
            await operation();
        }
        catch (SsmpRpcException e)
        {
            throw new ControlBusException(e.Status, e.Message, e);
        }
        catch (SsmpException e)
        {
            // 404: nobody of that id is logged in; anything else: the broker or the connection failed us.
            throw new ControlBusException(e.Code == 404 ? ControlBusException.NotFound : ControlBusException.Unavailable, e.Message, e);
        }
        catch (ObjectDisposedException e)
        {
            throw new ControlBusException(ControlBusException.Unavailable, "the bus connection is closed", e);
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
            throw new ControlBusException(ControlBusException.Unavailable, e.Message, e);
        }
    }

    private bool TryProve(string from, out NodeAddress address)
    {
        if (NodeAddress.TryParse(from, out address))
            return true;
        Interlocked.Increment(ref _unproven);
        return false;
    }

    private async Task PumpEventsAsync()
    {
        try
        {
            await foreach (var e in _peer.OtherEvents.ReadAllAsync(_stop.Token))
            {
                if (!TryProve(e.From, out var from))
                    continue;
                switch (e.Verb)
                {
                    case SsmpVerb.Mcast when e.Target is { } topic:
                        if (!SsmpChunking.IsFragment(e.Payload.Span))
                        {
                            _events.Writer.TryWrite(new BusPublication(from, topic, e.Payload));
                            break;
                        }
                        var status = _publications.Add($"{e.From} {topic}", e.Payload.Span, out var whole, out var drop);
                        if (status == ReassemblyStatus.Complete)
                            _events.Writer.TryWrite(new BusPublication(from, topic, whole));
                        else if (status == ReassemblyStatus.Dropped)
                            Log.FragmentDropped(_logger, e.From, topic, drop.ToString());
                        break;
                    case SsmpVerb.Subscribe when e.Target is { } topic:
                        _events.Writer.TryWrite(new BusMemberJoined(from, topic));
                        break;
                    case SsmpVerb.Unsubscribe when e.Target is { } topic:
                        _events.Writer.TryWrite(new BusMemberLeft(from, topic));
                        break;
                    case SsmpVerb.Ucast:
                        // A plain UCAST (not through the message layer) is a direct message all the same.
                        _events.Writer.TryWrite(new BusDirectMessage(from, e.Payload));
                        break;
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ChannelClosedException)
        {
        }
    }

    private async Task PumpMessagesAsync()
    {
        try
        {
            await foreach (var message in _peer.Messages.ReadAllAsync(_stop.Token))
            {
                if (TryProve(message.From, out var from))
                    _events.Writer.TryWrite(new BusDirectMessage(from, message.Body));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ChannelClosedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _peer.Client.StateChanged -= OnClientState;
        await _stop.CancelAsync();
        await _peer.DisposeAsync();
        await Task.WhenAll(_pump, _messagePump);
        _events.Writer.TryComplete();
        _stop.Dispose();
        StateChanged?.Invoke(BusState.Closed);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 740, Level = LogLevel.Debug, Message = "Bus: a fragment of a publication from {From} on {Topic} dropped: {Reason}")]
        public static partial void FragmentDropped(ILogger logger, string from, string topic, string reason);
    }
}

public sealed class SsmpControlBusOptions
{
    /// <summary>The broker's name in its TLS certificate and in the key login's signed statement.</summary>
    public string ServerName { get; init; } = SsmpBrokerOptions.DefaultServerName;

    public TimeProvider? Time { get; init; }

    /// <summary>Randomness of message ids and reconnect jitter; seeded for repeatable runs.</summary>
    public Random? Random { get; init; }

    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>How the connection is made instead of TCP to host:port (a tunnel through neighbours); called again at each reconnect.</summary>
    public Func<CancellationToken, ValueTask<Stream>>? ConnectStream { get; init; }

    /// <summary>TLS to the broker, on top of the connection.</summary>
    public System.Net.Security.SslClientAuthenticationOptions? Tls { get; init; }

    /// <summary>Where the bus is, for people; default <c>ssmp://host:port</c>.</summary>
    public string? Describe { get; init; }
}

/// <summary>Connects nodes to one SSMP broker (<c>host:port</c>).</summary>
public sealed class SsmpBusConnector(string host, int port, SsmpControlBusOptions? options = null) : IControlBusConnector
{
    /// <summary>The broker name a key login signs for when the configuration names none.</summary>
    public const string DefaultServerName = SsmpBrokerOptions.DefaultServerName;

    public string Describe => $"ssmp://{host}:{port}";

    /// <summary>The broker's address as configured (<c>host:port</c>).</summary>
    public string Broker => $"{host}:{port}";

    public async Task<IControlBus> ConnectAsync(NodeKey key, CancellationToken cancellationToken) =>
        await SsmpControlBus.ConnectAsync(host, port, key, options, cancellationToken);
}
