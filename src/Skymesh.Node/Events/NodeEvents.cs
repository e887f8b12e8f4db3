using System.Text.Json.Serialization;

namespace Skymesh.Node.Events;

/// <summary>What happened (docs/node.md, "Events").</summary>
[JsonConverter(typeof(JsonStringEnumConverter<NodeEventKind>))]
public enum NodeEventKind
{
    LinkUp,
    LinkDown,
    HandshakeRefused,
    PathSetUp,
    PathRepaired,
    PathBroken,
    PathClosed,
    AnnouncementAccepted,
    AnnouncementRefused,
    ReceiptSent,
    ReceiptAccepted,
    ReceiptRefused,
    CreditNormal,
    CreditThrottled,
    CreditSuspended,
    AppStarted,
    AppStopped,
    ControlConnected,
    ControlLost,

    /// <summary>The ledger would not pay a neighbour's receipt (its account cannot cover it).</summary>
    SettlementRefused,

    /// <summary>A decision waits for a person (docs/dashboard.md, "Decisions").</summary>
    DecisionPending,

    /// <summary>A decision was taken, by a person or by the policy.</summary>
    DecisionResolved,

    InterfaceUp,
    InterfaceDown,
    NodeBlocked,
    NodeUnblocked,

    /// <summary>The owner changed the price, a credit limit, the exit rules or a decision policy.</summary>
    SettingsChanged,

    /// <summary>A VPN session began (this node's as a client, or a client's of this node).</summary>
    VpnUp,

    /// <summary>A VPN session ended.</summary>
    VpnDown,
}

/// <summary>
/// One thing a node did, numbered: <see cref="Sequence"/> grows by one per event from 1 at the node's start, so a
/// reader that remembers the last number it saw resumes without gaps or duplicates. <see cref="Peer"/> is the other
/// node concerned (a neighbour, a path's far end, an announcer), <see cref="Link"/>, <see cref="Path"/> and
/// <see cref="App"/> the local ids, <see cref="Detail"/> a sentence for people.
/// </summary>
public sealed record NodeEvent(long Sequence, DateTimeOffset At, NodeEventKind Kind, string? Peer, int? Link, int? Path, int? App, string Detail);

/// <summary>
/// The node's recent events in a bounded ring (the oldest go first), with a signal for readers that wait for the next
/// one. Appending never blocks and never fails: a node's work never waits for whoever watches it.
/// </summary>
public sealed class NodeEventLog
{
    public const int DefaultCapacity = 4096;

    // Grows by doubling up to the capacity, so that a node with little to say (thousands of them in a simulation)
    // holds little.
    private NodeEvent?[] _ring;
    private readonly int _capacity;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _last;

    public NodeEventLog(TimeProvider? time = null, int capacity = DefaultCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _capacity = capacity;
        _ring = new NodeEvent?[Math.Min(capacity, 16)];
        _time = time ?? TimeProvider.System;
    }

    public int Capacity => _capacity;

    /// <summary>The number of the latest event (0 before the first).</summary>
    public long Last
    {
        get
        {
            lock (_lock)
                return _last;
        }
    }

    /// <summary>Raised after each event is appended, on the appending thread; handlers must not block.</summary>
    public event Action<NodeEvent>? Appended;

    public NodeEvent Append(NodeEventKind kind, string detail, string? peer = null, int? link = null, int? path = null, int? app = null)
    {
        NodeEvent appended;
        TaskCompletionSource woken;
        lock (_lock)
        {
            appended = new NodeEvent(++_last, _time.GetUtcNow(), kind, peer, link, path, app, detail);
            if (_last > _ring.Length && _ring.Length < _capacity)
            {
                var grown = new NodeEvent?[Math.Min(_capacity, _ring.Length * 2)];
                for (var sequence = _last - _ring.Length; sequence < _last; sequence++)
                    grown[sequence % grown.Length] = _ring[sequence % _ring.Length];
                _ring = grown;
            }
            _ring[_last % _ring.Length] = appended;
            woken = _next;
            _next = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        woken.TrySetResult();
        Appended?.Invoke(appended);
        return appended;
    }

    /// <summary>
    /// The events after number <paramref name="after"/> still held, oldest first; <paramref name="missed"/> is how
    /// many after it have already left the ring (0 when the reader kept up).
    /// </summary>
    public IReadOnlyList<NodeEvent> Since(long after, out long missed)
    {
        lock (_lock)
        {
            after = Math.Clamp(after, 0, _last);
            var oldest = Math.Max(1, _last - _ring.Length + 1);
            missed = Math.Max(0, oldest - after - 1);
            var from = Math.Max(after + 1, oldest);
            var events = new NodeEvent[_last - from + 1];
            for (var i = 0; i < events.Length; i++)
                events[i] = _ring[(from + i) % _ring.Length]!;
            return events;
        }
    }

    /// <summary>Completes when an event after number <paramref name="after"/> exists.</summary>
    public Task WaitAsync(long after, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (_last > after)
                return Task.CompletedTask;
            return _next.Task.WaitAsync(cancellationToken);
        }
    }
}
