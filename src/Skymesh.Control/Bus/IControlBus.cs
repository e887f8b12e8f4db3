using System.Threading.Channels;
using Skymesh.Identity;

namespace Skymesh.Control.Bus;

/// <summary>
/// What a control agent, a route finder or any other control-plane part needs from the bus that joins them
/// (docs/control-plane.md, "The control bus"): publish to a topic, subscribe (optionally watching who joins and
/// leaves), send to one node, and call one node with request/response, timeouts and retries. Every sender the bus
/// reports is a node address the bus has proven — by the broker's key login on SSMP, by a signature on buses that
/// cannot prove it — and never one read from a payload. Implementations: <see cref="Ssmp.SsmpControlBus"/> and
/// <see cref="MemoryControlBus"/>.
/// </summary>
public interface IControlBus : IAsyncDisposable
{
    /// <summary>The node this bus connection speaks for.</summary>
    NodeAddress Self { get; }

    /// <summary>Where the bus is, for people: <c>ssmp://127.0.0.1:4222</c>, <c>memory</c>…</summary>
    string Describe { get; }

    BusState State { get; }

    /// <summary>Raised when <see cref="State"/> changes; after <see cref="BusState.Connected"/> following a reconnect, the far side may have forgotten everything (announce again).</summary>
    event Action<BusState>? StateChanged;

    /// <summary>What arrives: publications on subscribed topics, direct messages, joins and leaves on watched topics.</summary>
    ChannelReader<BusEvent> Events { get; }

    /// <summary>Senders refused because the bus could not prove they are a node (not a node address).</summary>
    long UnprovenSenders { get; }

    /// <summary>Deliveries dropped because <see cref="Events"/> was full (its reader fell behind).</summary>
    long DroppedEvents { get; }

    /// <summary>Publishes <paramref name="payload"/> (up to <see cref="ControlBus.MaxPublishBytes"/>) to every subscriber of <paramref name="topic"/> but this node.</summary>
    Task PublishAsync(string topic, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken);

    /// <summary>
    /// Joins <paramref name="topic"/>: this node receives what is published there and is a member others can see.
    /// With <paramref name="watchMembers"/> it also hears a <see cref="BusMemberJoined"/> for every member already
    /// there and every later one, and a <see cref="BusMemberLeft"/> when one leaves by any means.
    /// </summary>
    Task SubscribeAsync(string topic, bool watchMembers, CancellationToken cancellationToken);

    /// <summary>Sends <paramref name="payload"/> to <paramref name="to"/>; throws <see cref="ControlBusException"/> (404) when it is not on the bus.</summary>
    Task SendAsync(NodeAddress to, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken);

    /// <summary>
    /// Calls <paramref name="method"/> at <paramref name="to"/>; retries (the same request, answered at most once)
    /// until <see cref="BusCallOptions.Attempts"/> attempts of <see cref="BusCallOptions.AttemptTimeout"/> each have
    /// passed. A refusal, a missing handler or no answer throws <see cref="ControlBusException"/> with its status.
    /// </summary>
    Task<ReadOnlyMemory<byte>> RequestAsync(NodeAddress to, string method, ReadOnlyMemory<byte> body, BusCallOptions? options, CancellationToken cancellationToken);

    /// <summary>Answers requests for <paramref name="method"/> with <paramref name="handler"/> (one handler per method; the last one wins).</summary>
    void Handle(string method, BusHandler handler);
}

/// <summary>Connects a node to a control bus: one per kind of bus, so the node host can reconnect without knowing which.</summary>
public interface IControlBusConnector
{
    /// <summary>Where it connects, for people.</summary>
    string Describe { get; }

    /// <summary>Logs in as <paramref name="key"/>'s node; a bus that cannot be reached or refuses throws <see cref="ControlBusException"/>.</summary>
    Task<IControlBus> ConnectAsync(NodeKey key, CancellationToken cancellationToken);
}

public enum BusState
{
    Connected,

    /// <summary>The connection was lost and is being made again; calls fail until it is back.</summary>
    Reconnecting,

    /// <summary>Closed for good (disposed, or the bus refused the node when it came back).</summary>
    Closed,
}

/// <summary>Something the bus delivered, from a sender it has proven.</summary>
public abstract record BusEvent(NodeAddress From);

/// <summary>A publication on a subscribed topic.</summary>
public sealed record BusPublication(NodeAddress From, string Topic, ReadOnlyMemory<byte> Payload) : BusEvent(From);

/// <summary>A message sent to this node alone.</summary>
public sealed record BusDirectMessage(NodeAddress From, ReadOnlyMemory<byte> Payload) : BusEvent(From);

/// <summary>A member of a watched topic, already there when this node subscribed or joined since.</summary>
public sealed record BusMemberJoined(NodeAddress From, string Topic) : BusEvent(From);

/// <summary>A member left a watched topic (unsubscribed, disconnected, or was evicted).</summary>
public sealed record BusMemberLeft(NodeAddress From, string Topic) : BusEvent(From);

/// <summary>A request as its handler sees it; <see cref="From"/> is proven by the bus.</summary>
public sealed record BusRequest(NodeAddress From, string Method, ReadOnlyMemory<byte> Body);

public delegate ValueTask<ReadOnlyMemory<byte>> BusHandler(BusRequest request, CancellationToken cancellationToken);

/// <summary>How one request is confirmed: each attempt waits <see cref="AttemptTimeout"/>; a retry is the same request.</summary>
public sealed record BusCallOptions
{
    public static BusCallOptions Default { get; } = new();

    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(2);

    public int Attempts { get; init; } = 3;
}

/// <summary>Limits every bus keeps to.</summary>
public static class ControlBus
{
    /// <summary>The largest publication (a link announcement of the most links a node may announce fits).</summary>
    public const int MaxPublishBytes = 256 * 1024;

    /// <summary>The longest topic or method name: SSMP's identifier limit, so a name valid on one bus is valid on all.</summary>
    public const int MaxNameLength = 64;

    /// <summary>Topic and method names: 1 to 64 of <c>A-Z a-z 0-9 . _ -</c> (SSMP identifiers; NATS subject tokens too).</summary>
    public static void ValidateName(string name, string parameter)
    {
        ArgumentNullException.ThrowIfNull(name, parameter);
        if (name.Length is 0 or > MaxNameLength || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            throw new ArgumentException($"\"{name}\" is not a bus name (1 to {MaxNameLength} of A-Z a-z 0-9 . _ -).", parameter);
    }
}

/// <summary>A bus operation failed: <see cref="Status"/> says how (the request's far side refused it, nobody answered, the bus is away).</summary>
public sealed class ControlBusException : Exception
{
    public const int BadRequest = 400;
    public const int Forbidden = 403;
    public const int NotFound = 404;
    public const int Timeout = 408;
    public const int HandlerFailed = 500;
    public const int Unavailable = 503;

    public ControlBusException(int status, string message)
        : base(message) => Status = status;

    public ControlBusException(int status, string message, Exception innerException)
        : base(message, innerException) => Status = status;

    public ControlBusException()
    {
    }

    public ControlBusException(string message)
        : base(message)
    {
    }

    public ControlBusException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public int Status { get; } = HandlerFailed;
}
