using System.Threading.Channels;
using Skymesh.Identity;

namespace Skymesh.Control.Bus;

/// <summary>
/// A control bus in one process, with SSMP's semantics (docs/control-plane.md): a publication reaches every
/// subscriber of its topic but the sender, in order per sender and recipient; a watcher hears every member already
/// on a topic when it subscribes and every join and leave after, never about itself, never a leave before the join;
/// a second connection under the same address closes the first; requests are answered at most once. Senders are
/// proven by construction: a node connects with its key. For tests and the simulator, on any
/// <see cref="TimeProvider"/>.
/// </summary>
/// <param name="eventQueueLimit">
/// Events one connection may have waiting to be read before more are dropped (and counted): a broker's bound on what
/// it queues towards a slow reader. A simulated mesh whose nodes all announce at one instant sizes it to hold one
/// announcement from every node at its finders.
/// </param>
public sealed class MemoryBusNetwork(TimeProvider? time = null, TimeSpan latency = default, int eventQueueLimit = MemoryBusNetwork.DefaultEventQueueLimit)
{
    public const int DefaultEventQueueLimit = 65_536;

    /// <summary>Events one connection may have waiting to be read before more are dropped.</summary>
    public int EventQueueLimit { get; } = eventQueueLimit > 0 ? eventQueueLimit : throw new ArgumentOutOfRangeException(nameof(eventQueueLimit));

    /// <summary>Events dropped at every connection so far because its reader fell behind by <see cref="EventQueueLimit"/>.</summary>
    public long DroppedEvents => Interlocked.Read(ref _dropped);

    internal void CountDropped() => Interlocked.Increment(ref _dropped);

    /// <summary>
    /// How long every message takes to reach its recipient (a broker's round trip is twice this); zero delivers at
    /// once. Deliveries keep their order: each waits the same time on <see cref="Time"/>.
    /// </summary>
    public TimeSpan Latency { get; } = latency >= TimeSpan.Zero ? latency : throw new ArgumentOutOfRangeException(nameof(latency));

    private readonly Lock _lock = new();
    private readonly Dictionary<NodeAddress, MemoryControlBus> _members = [];
    private readonly Dictionary<string, TopicMembers> _topics = new(StringComparer.Ordinal);

    /// <summary>A topic's members, and apart those of them that watch its membership (joins and leaves go to those only).</summary>
    private sealed class TopicMembers
    {
        public HashSet<NodeAddress> Members { get; } = [];

        public HashSet<NodeAddress> Watchers { get; } = [];
    }
    private bool _down;
    private long _bytes;
    private long _messages;
    private long _membership;
    private long _dropped;

    public TimeProvider Time { get; } = time ?? TimeProvider.System;

    /// <summary>Payload bytes delivered so far (each copy counted at its recipient): what the control plane costs.</summary>
    public long BytesDelivered => Interlocked.Read(ref _bytes);

    /// <summary>Messages delivered so far (publications per recipient, direct messages, requests and answers).</summary>
    public long MessagesDelivered => Interlocked.Read(ref _messages);

    /// <summary>Join and leave events delivered so far, to watchers (each copy counted at its recipient).</summary>
    public long MembershipEventsDelivered => Interlocked.Read(ref _membership);

    // Under _lock: one membership event to one watcher.
    private void Tell(MemoryControlBus watcher, BusEvent e)
    {
        _membership++;
        watcher.Deliver(e);
    }

    internal void CountDelivered(long bytes)
    {
        Interlocked.Add(ref _bytes, bytes);
        Interlocked.Increment(ref _messages);
    }

    /// <summary>Nodes connected now.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
                return _members.Count;
        }
    }

    /// <summary>Connects <paramref name="key"/>'s node, closing an earlier connection under the same address.</summary>
    public MemoryControlBus Connect(NodeKey key)
    {
        ArgumentNullException.ThrowIfNull(key);
        MemoryControlBus? evicted;
        MemoryControlBus bus;
        lock (_lock)
        {
            if (_down)
                throw new ControlBusException(ControlBusException.Unavailable, "the in-memory bus is down");
            _members.TryGetValue(key.Address, out evicted);
            if (evicted is not null)
                LeaveAll(evicted);
            bus = new MemoryControlBus(this, key.Address);
            _members[key.Address] = bus;
        }
        evicted?.Close();
        return bus;
    }

    /// <summary>Takes the bus down (every node is disconnected and new connections are refused) or brings it back.</summary>
    public void SetDown(bool down)
    {
        List<MemoryControlBus> closed;
        lock (_lock)
        {
            _down = down;
            if (!down)
                return;
            closed = [.. _members.Values];
            foreach (var bus in closed)
                LeaveAll(bus);
        }
        foreach (var bus in closed)
            bus.Close();
    }

    /// <summary>Disconnects one node, as a broker would drop it; its watchers hear it leave.</summary>
    public bool Disconnect(NodeAddress node)
    {
        MemoryControlBus? bus;
        lock (_lock)
        {
            if (!_members.TryGetValue(node, out bus))
                return false;
            LeaveAll(bus);
        }
        bus.Close();
        return true;
    }

    // Under _lock: removes the member and tells each watched topic's watchers it left.
    private void LeaveAll(MemoryControlBus bus)
    {
        if (_members.TryGetValue(bus.Self, out var current) && current == bus)
            _members.Remove(bus.Self);
        foreach (var (topic, members) in _topics)
        {
            if (!members.Members.Remove(bus.Self))
                continue;
            members.Watchers.Remove(bus.Self);
            foreach (var other in members.Watchers)
                Tell(_members[other], new BusMemberLeft(bus.Self, topic));
        }
    }

    internal void Leave(MemoryControlBus bus)
    {
        lock (_lock)
        {
            if (_members.TryGetValue(bus.Self, out var current) && current == bus)
                LeaveAll(bus);
        }
    }

    internal void Subscribe(MemoryControlBus bus, string topic, bool watch)
    {
        lock (_lock)
        {
            EnsureMember(bus);
            if (!_topics.TryGetValue(topic, out var members))
                _topics[topic] = members = new TopicMembers();
            var already = !members.Members.Add(bus.Self);
            if (watch)
                members.Watchers.Add(bus.Self);
            else
                members.Watchers.Remove(bus.Self);
            if (already)
                return;
            // Atomically with the registration: the snapshot for the newcomer, the join for those watching — a walk of
            // the watchers only, so that a topic of 100,000 members that nobody watches costs nothing to join.
            if (watch)
            {
                foreach (var other in members.Members)
                {
                    if (other != bus.Self)
                        Tell(bus, new BusMemberJoined(other, topic));
                }
            }
            foreach (var other in members.Watchers)
            {
                if (other != bus.Self)
                    Tell(_members[other], new BusMemberJoined(bus.Self, topic));
            }
        }
    }

    internal void Publish(MemoryControlBus bus, string topic, ReadOnlyMemory<byte> payload)
    {
        // Copied once: the sender may reuse its buffer, every receiver shares the copy (it is read-only).
        var copy = payload.ToArray();
        lock (_lock)
        {
            EnsureMember(bus);
            if (!_topics.TryGetValue(topic, out var members))
                return;
            foreach (var other in members.Members)
            {
                if (other != bus.Self)
                {
                    _members[other].DeliverAfter(Latency, new BusPublication(bus.Self, topic, copy));
                    CountDelivered(copy.Length);
                }
            }
        }
    }

    internal MemoryControlBus Recipient(MemoryControlBus bus, NodeAddress to)
    {
        lock (_lock)
        {
            EnsureMember(bus);
            return _members.TryGetValue(to, out var recipient)
                ? recipient
                : throw new ControlBusException(ControlBusException.NotFound, $"{to} is not on the bus");
        }
    }

    private void EnsureMember(MemoryControlBus bus)
    {
        if (!_members.TryGetValue(bus.Self, out var current) || current != bus)
            throw new ControlBusException(ControlBusException.Unavailable, "this connection to the in-memory bus is closed");
    }
}

/// <summary>One node's connection to a <see cref="MemoryBusNetwork"/>.</summary>
public sealed class MemoryControlBus : IControlBus
{
    private readonly MemoryBusNetwork _network;
    private readonly Channel<BusEvent> _events;
    private readonly Dictionary<string, BusHandler> _handlers = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _closed = new();
    private long _dropped;
    private int _state;

    internal MemoryControlBus(MemoryBusNetwork network, NodeAddress self)
    {
        _network = network;
        Self = self;
        _events = Channel.CreateBounded<BusEvent>(new BoundedChannelOptions(network.EventQueueLimit) { FullMode = BoundedChannelFullMode.DropWrite },
            _ =>
            {
                Interlocked.Increment(ref _dropped);
                network.CountDropped();
            });
    }

    public NodeAddress Self { get; }

    public string Describe => "memory";

    public BusState State => Volatile.Read(ref _state) == 0 ? BusState.Connected : BusState.Closed;

    public event Action<BusState>? StateChanged;

    public ChannelReader<BusEvent> Events => _events.Reader;

    public long UnprovenSenders => 0;

    /// <summary>Events dropped because nobody read <see cref="Events"/> fast enough.</summary>
    public long DroppedEvents => Interlocked.Read(ref _dropped);

    internal void Deliver(BusEvent e) => _events.Writer.TryWrite(e);

    /// <summary>Delivers after <paramref name="delay"/> on the network's clock (at once when zero).</summary>
    internal void DeliverAfter(TimeSpan delay, BusEvent e)
    {
        if (delay == TimeSpan.Zero)
        {
            Deliver(e);
            return;
        }
        _ = LaterAsync(this, delay, e);

        static async Task LaterAsync(MemoryControlBus bus, TimeSpan delay, BusEvent e)
        {
            await Task.Delay(delay, bus._network.Time);
            bus.Deliver(e);
        }
    }

    public Task PublishAsync(string topic, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        ControlBus.ValidateName(topic, nameof(topic));
        if (payload.Length > ControlBus.MaxPublishBytes)
            throw new ArgumentException($"A publication is at most {ControlBus.MaxPublishBytes} bytes.", nameof(payload));
        cancellationToken.ThrowIfCancellationRequested();
        _network.Publish(this, topic, payload);
        return Task.CompletedTask;
    }

    public Task SubscribeAsync(string topic, bool watchMembers, CancellationToken cancellationToken)
    {
        ControlBus.ValidateName(topic, nameof(topic));
        cancellationToken.ThrowIfCancellationRequested();
        _network.Subscribe(this, topic, watchMembers);
        return Task.CompletedTask;
    }

    public Task SendAsync(NodeAddress to, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        _network.Recipient(this, to).DeliverAfter(_network.Latency, new BusDirectMessage(Self, payload.ToArray()));
        _network.CountDelivered(payload.Length);
        return Task.CompletedTask;
    }

    public async Task<ReadOnlyMemory<byte>> RequestAsync(NodeAddress to, string method, ReadOnlyMemory<byte> body, BusCallOptions? options, CancellationToken cancellationToken)
    {
        ControlBus.ValidateName(method, nameof(method));
        options ??= BusCallOptions.Default;
        var recipient = _network.Recipient(this, to);
        // Nothing is lost in memory, so a retry would reach the same handler and get its cached answer: one run,
        // waited for as long as all the attempts together.
        _network.CountDelivered(body.Length + method.Length);
        var request = new BusRequest(Self, method, body.ToArray());
        var answer = _network.Latency == TimeSpan.Zero ? recipient.AnswerAsync(request) : AnswerLaterAsync(recipient, request, _network);
        var patience = options.AttemptTimeout * Math.Max(1, options.Attempts);
        try
        {
            var result = await answer.WaitAsync(patience, _network.Time, cancellationToken);
            _network.CountDelivered(result.Length);
            return result;
        }
        catch (TimeoutException)
        {
            throw new ControlBusException(ControlBusException.Timeout,
                $"{method} at {to}: no answer after {options.Attempts} attempt(s) of {options.AttemptTimeout.TotalSeconds:0.###} s.");
        }
    }

    // The request travels to the recipient and its answer back, each taking the network's latency.
    private static async Task<ReadOnlyMemory<byte>> AnswerLaterAsync(MemoryControlBus recipient, BusRequest request, MemoryBusNetwork network)
    {
        await Task.Delay(network.Latency, network.Time);
        var answer = await recipient.AnswerAsync(request);
        await Task.Delay(network.Latency, network.Time);
        return answer;
    }

    private async Task<ReadOnlyMemory<byte>> AnswerAsync(BusRequest request)
    {
        BusHandler? handler;
        lock (_lock)
            _handlers.TryGetValue(request.Method, out handler);
        if (handler is null)
            throw new ControlBusException(ControlBusException.NotFound, $"no method '{request.Method}' here");
        // Never on the caller's stack, as over a real bus.
        await Task.Yield();
        try
        {
            return (await handler(request, _closed.Token)).ToArray();
        }
        catch (ControlBusException)
        {
            throw;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new ControlBusException(ControlBusException.HandlerFailed, $"{request.Method} failed: {e.Message}");
        }
    }

    public void Handle(string method, BusHandler handler)
    {
        ControlBus.ValidateName(method, nameof(method));
        ArgumentNullException.ThrowIfNull(handler);
        lock (_lock)
            _handlers[method] = handler;
    }

    // The network dropped this connection (evicted, bus down): closed for good.
    internal void Close()
    {
        if (Interlocked.Exchange(ref _state, 1) != 0)
            return;
        _closed.Cancel();
        _events.Writer.TryComplete();
        StateChanged?.Invoke(BusState.Closed);
    }

    public ValueTask DisposeAsync()
    {
        _network.Leave(this);
        Close();
        return ValueTask.CompletedTask;
    }
}

/// <summary>Connects nodes to a <see cref="MemoryBusNetwork"/>.</summary>
public sealed class MemoryBusConnector(MemoryBusNetwork network) : IControlBusConnector
{
    public MemoryBusNetwork Network { get; } = network;

    public string Describe => "memory";

    public Task<IControlBus> ConnectAsync(NodeKey key, CancellationToken cancellationToken) =>
        Task.FromResult<IControlBus>(Network.Connect(key));
}
