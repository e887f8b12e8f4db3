using Skymesh.Identity;

namespace Skymesh.Control.Settlement;

/// <summary>What the data plane may do for one neighbour.</summary>
public enum CreditState
{
    /// <summary>Forward without limit.</summary>
    Normal,

    /// <summary>Forward at most <see cref="CreditOptions.ThrottledBytesPerSecond"/>.</summary>
    Throttled,

    /// <summary>Forward nothing for this neighbour.</summary>
    Suspended,
}

/// <summary>
/// How much one neighbour may owe, in micro-units of the settlement coin.
/// </summary>
/// <param name="ReceiptLimit">Most it may owe by this node's count beyond what its receipts acknowledge (must be positive).</param>
/// <param name="SettlementLimit">
/// Most it may owe in all beyond what the ledger has settled — unacknowledged plus acknowledged but unsettled; null
/// for no bound (the embedded ledger settles every valid receipt, so only a ledger that can refuse, such as the
/// exchange's, makes this bite).
/// </param>
public sealed record CreditLimits(long ReceiptLimit, long? SettlementLimit = null);

public sealed record CreditOptions
{
    /// <summary>Limits for every neighbour without its own (<see cref="CreditPolicy.SetLimits"/>). 1,000,000 micro-units is one coin.</summary>
    public CreditLimits DefaultLimits { get; init; } = new(ReceiptLimit: 10_000);

    /// <summary>Share of a limit past which the neighbour is throttled.</summary>
    public double ThrottleAt { get; init; } = 0.8;

    /// <summary>
    /// Share of every limit a throttled or suspended neighbour must fall to (or under) before it is back to normal; between
    /// this and <see cref="ThrottleAt"/> it stays as it was, so a neighbour near the threshold does not flap.
    /// </summary>
    public double ResumeAt { get; init; } = 0.5;

    /// <summary>What a throttled neighbour may still send, in bytes per second.</summary>
    public long ThrottledBytesPerSecond { get; init; } = 128 * 1024;
}

/// <summary>
/// What one neighbour owes, as the credit policy weighs it.
/// </summary>
/// <param name="Unacknowledged">Counted by this node, not yet acknowledged by a receipt.</param>
/// <param name="Unsettled">Acknowledged by a receipt, not yet settled on the ledger.</param>
public readonly record struct Exposure(long Unacknowledged, long Unsettled)
{
    /// <summary>From the receipt book's account of a neighbour and the amount the ledger has settled for the pair.</summary>
    public static Exposure Of(PayerAccount account, long settledAmount) =>
        new(account.UnacknowledgedAmount, Math.Max(0, account.ReceiptedAmount - settledAmount));

    public long Total => Unacknowledged + Unsettled;
}

/// <summary>A neighbour's state, what it may send, how much of its limits it uses, and since when it is in this state.</summary>
/// <param name="AllowedBytesPerSecond">Null: unlimited; 0: suspended.</param>
/// <param name="Usage">The larger share of its two limits it uses (1 = at a limit).</param>
public readonly record struct CreditStatus(NodeAddress Neighbour, CreditState State, long? AllowedBytesPerSecond, double Usage, DateTimeOffset Since);

/// <summary>
/// The credit each neighbour gets (docs/control-plane.md, "Settlement"). The node calls <see cref="Update"/> for a
/// neighbour with its <see cref="Exposure"/> whenever counts, receipts or settlements change it (e.g. every 100 ms),
/// and the data plane asks <see cref="AllowedBytesPerSecond"/>. Past <see cref="CreditOptions.ThrottleAt"/> of a limit
/// the neighbour is throttled, past the limit suspended, and back to normal once receipts or settlement bring it to
/// <see cref="CreditOptions.ResumeAt"/>. Pure: no I/O, no timers; the clock (injected) only stamps transitions.
/// Safe to use from several threads.
/// </summary>
public sealed class CreditPolicy
{
    private readonly CreditOptions _options;
    private readonly TimeProvider _time;
    private readonly Dictionary<NodeAddress, CreditLimits> _limits = [];
    private readonly HashSet<NodeAddress> _held = [];
    private CreditLimits _defaultLimits;
    private readonly Dictionary<NodeAddress, CreditStatus> _status = [];
    private readonly Lock _lock = new();

    public CreditPolicy(CreditOptions? options = null, TimeProvider? time = null)
    {
        _options = options ?? new CreditOptions();
        Validate(_options.DefaultLimits);
        _defaultLimits = _options.DefaultLimits;
        if (!(_options.ResumeAt >= 0 && _options.ResumeAt <= _options.ThrottleAt && _options.ThrottleAt <= 1))
            throw new ArgumentException("0 ≤ ResumeAt ≤ ThrottleAt ≤ 1.", nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(_options.ThrottledBytesPerSecond);
        _time = time ?? TimeProvider.System;
    }

    /// <summary>Raised on every change of a neighbour's state, with the state it left; handlers must not block.</summary>
    public event Action<CreditStatus, CreditState>? StateChanged;

    /// <summary>Gives one neighbour its own limits; takes effect at its next <see cref="Update"/>.</summary>
    public void SetLimits(NodeAddress neighbour, CreditLimits limits)
    {
        Validate(limits);
        lock (_lock)
            _limits[neighbour] = limits;
    }

    public CreditLimits LimitsOf(NodeAddress neighbour)
    {
        lock (_lock)
            return _limits.GetValueOrDefault(neighbour) ?? _defaultLimits;
    }

    /// <summary>The limits of every neighbour without its own; takes effect at each one's next <see cref="Update"/>.</summary>
    public CreditLimits DefaultLimits
    {
        get
        {
            lock (_lock)
                return _defaultLimits;
        }
        set
        {
            Validate(value);
            lock (_lock)
                _defaultLimits = value;
        }
    }

    /// <summary>
    /// Suspends a neighbour whatever it owes, until <paramref name="held"/> is given false again (a person's decision:
    /// "forward nothing for it"); takes effect at its next <see cref="Update"/>.
    /// </summary>
    public void Hold(NodeAddress neighbour, bool held)
    {
        lock (_lock)
        {
            if (held)
                _held.Add(neighbour);
            else
                _held.Remove(neighbour);
        }
    }

    /// <summary>True while a person holds the neighbour suspended (<see cref="Hold"/>).</summary>
    public bool IsHeld(NodeAddress neighbour)
    {
        lock (_lock)
            return _held.Contains(neighbour);
    }

    /// <summary>Weighs what <paramref name="neighbour"/> owes now and moves it to the state that follows.</summary>
    public CreditStatus Update(NodeAddress neighbour, Exposure exposure)
    {
        CreditStatus status;
        CreditState previous;
        lock (_lock)
        {
            var limits = _limits.GetValueOrDefault(neighbour) ?? _defaultLimits;
            var usage = Math.Max(0, (double)exposure.Unacknowledged / limits.ReceiptLimit);
            if (limits.SettlementLimit is { } settlementLimit)
                usage = Math.Max(usage, (double)exposure.Total / settlementLimit);
            var current = _status.TryGetValue(neighbour, out var known) ? known : default;
            previous = current.State;
            var next = usage >= 1 || _held.Contains(neighbour) ? CreditState.Suspended
                : usage >= _options.ThrottleAt ? CreditState.Throttled
                : usage > _options.ResumeAt && previous != CreditState.Normal ? CreditState.Throttled
                : CreditState.Normal;
            var since = next == previous && known.Neighbour == neighbour ? known.Since : _time.GetUtcNow();
            status = new CreditStatus(neighbour, next, Allowed(next), usage, since);
            _status[neighbour] = status;
        }
        if (status.State != previous)
            StateChanged?.Invoke(status, previous);
        return status;
    }

    /// <summary>What the data plane may forward for <paramref name="neighbour"/>: null unlimited, 0 suspended.</summary>
    public long? AllowedBytesPerSecond(NodeAddress neighbour)
    {
        lock (_lock)
            return _status.TryGetValue(neighbour, out var status) ? status.AllowedBytesPerSecond : null;
    }

    /// <summary>The neighbour's status as of its last <see cref="Update"/>; null if it has none.</summary>
    public CreditStatus? StatusOf(NodeAddress neighbour)
    {
        lock (_lock)
            return _status.TryGetValue(neighbour, out var status) ? status : null;
    }

    /// <summary>Drops a neighbour whose link is gone (its limits stay).</summary>
    public void Forget(NodeAddress neighbour)
    {
        lock (_lock)
            _status.Remove(neighbour);
    }

    private long? Allowed(CreditState state) => state switch
    {
        CreditState.Normal => null,
        CreditState.Throttled => _options.ThrottledBytesPerSecond,
        _ => 0,
    };

    private static void Validate(CreditLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        if (limits.ReceiptLimit <= 0 || limits.SettlementLimit is <= 0)
            throw new ArgumentOutOfRangeException(nameof(limits), limits, "Credit limits are positive amounts.");
    }
}
