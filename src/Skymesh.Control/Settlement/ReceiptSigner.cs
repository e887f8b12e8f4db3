using Skymesh.Identity;

namespace Skymesh.Control.Settlement;

/// <summary>When a <see cref="ReceiptSigner"/> signs.</summary>
public sealed record ReceiptSignerOptions
{
    /// <summary>Longest time traffic waits for a receipt: one is due this long after the first byte it does not cover.</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Traffic not covered by a receipt that makes one due at once.</summary>
    public long ByteThreshold { get; init; } = Receipt.BytesPerMiB;

    /// <summary>
    /// Shortest time between two receipts to one payee, whatever the traffic: a neighbour forwarding 100 MiB/s costs
    /// at most 1 / MinInterval signatures a second here (and checks there), each covering more than a MiB. Twice the
    /// <see cref="ReceiptBookOptions.MinInterval"/> a payee enforces.
    /// </summary>
    public TimeSpan MinInterval { get; init; } = TimeSpan.FromMilliseconds(100);
}

/// <summary>
/// The payer's side of settlement (docs/control-plane.md, "Settlement"): this node counts what it hands each neighbour
/// to forward, at the neighbour's price, and signs a cumulative receipt for it when one is due — one
/// <see cref="ReceiptSignerOptions.Interval"/> after the first traffic not yet covered, or as soon as
/// <see cref="ReceiptSignerOptions.ByteThreshold"/> bytes are not covered, whichever comes first, never sooner than
/// <see cref="ReceiptSignerOptions.MinInterval"/> after the previous one. Sequence numbers, bytes and amounts never go
/// backwards. Pure: the node calls <see cref="Count"/> with its counters and <see cref="Poll"/> (or
/// <see cref="PollAll"/>) on its own timer, e.g. every 100 ms, and sends what they return. Safe to use from several
/// threads; signing happens outside the lock.
/// </summary>
public sealed class ReceiptSigner
{
    private sealed class Pair
    {
        public Meter Counted;
        public ulong Sequence;
        public long ReceiptedBytes;
        public long ReceiptedAmount;
        public DateTimeOffset? LastIssued;

        // When the oldest traffic not covered by a receipt was counted; null while everything is covered.
        public DateTimeOffset? PendingSince;
        public Receipt? Latest;
    }

    private readonly NodeKey _key;
    private readonly TimeProvider _time;
    private readonly ReceiptSignerOptions _options;
    private readonly Dictionary<NodeAddress, Pair> _pairs = [];
    private readonly Lock _lock = new();
    private long _signed;

    public ReceiptSigner(NodeKey key, TimeProvider? time = null, ReceiptSignerOptions? options = null)
    {
        _key = key ?? throw new ArgumentNullException(nameof(key));
        _time = time ?? TimeProvider.System;
        _options = options ?? new ReceiptSignerOptions();
        if (_options.Interval <= TimeSpan.Zero || _options.ByteThreshold <= 0 || _options.MinInterval < TimeSpan.Zero)
            throw new ArgumentException("The interval and byte threshold are positive.", nameof(options));
    }

    /// <summary>Receipts signed so far.</summary>
    public long Signed => Interlocked.Read(ref _signed);

    /// <summary>
    /// Adds bytes this node handed <paramref name="payee"/> to forward, at the price per MiB it charges for them (its
    /// announced price onto the link they go out on). Returns true when that makes a receipt due now.
    /// </summary>
    public bool Count(NodeAddress payee, long bytes, uint pricePerMiB)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (payee.IsEmpty || payee == _key.Address)
            throw new ArgumentException("A payee is a neighbour, not this node.", nameof(payee));
        var now = _time.GetUtcNow();
        lock (_lock)
        {
            if (!_pairs.TryGetValue(payee, out var pair))
                _pairs.Add(payee, pair = new Pair());
            pair.Counted.Add(bytes, pricePerMiB);
            if (bytes > 0)
                pair.PendingSince ??= now;
            return IsDue(pair, now);
        }
    }

    /// <summary>The next receipt to <paramref name="payee"/> if one is due, signed; otherwise null.</summary>
    public Receipt? Poll(NodeAddress payee)
    {
        var now = _time.GetUtcNow();
        (ulong Sequence, long Bytes, long Amount) next;
        lock (_lock)
        {
            if (!_pairs.TryGetValue(payee, out var pair) || !IsDue(pair, now))
                return null;
            next = Claim(pair, now);
        }
        return Sign(payee, next, now);
    }

    /// <summary>Every receipt due now, signed (about 0.2 ms each).</summary>
    public IReadOnlyList<Receipt> PollAll()
    {
        var now = _time.GetUtcNow();
        var due = new List<(NodeAddress, (ulong, long, long))>();
        lock (_lock)
        {
            foreach (var (payee, pair) in _pairs)
            {
                if (IsDue(pair, now))
                    due.Add((payee, Claim(pair, now)));
            }
        }
        var receipts = new Receipt[due.Count];
        for (var i = 0; i < due.Count; i++)
            receipts[i] = Sign(due[i].Item1, due[i].Item2, now);
        return receipts;
    }

    /// <summary>True while some payee has traffic counted that no receipt covers yet.</summary>
    public bool HasPending
    {
        get
        {
            lock (_lock)
            {
                foreach (var pair in _pairs.Values)
                {
                    if (pair.PendingSince is not null && HasNewTraffic(pair))
                        return true;
                }
                return false;
            }
        }
    }

    /// <summary>How long until a receipt to <paramref name="payee"/> is due by time alone (zero: due now); null if no traffic waits.</summary>
    public TimeSpan? DueIn(NodeAddress payee)
    {
        var now = _time.GetUtcNow();
        lock (_lock)
        {
            if (!_pairs.TryGetValue(payee, out var pair) || pair.PendingSince is not { } since || !HasNewTraffic(pair))
                return null;
            var due = since + _options.Interval;
            if (pair.LastIssued is { } last && last + _options.MinInterval > due)
                due = last + _options.MinInterval;
            return due <= now ? TimeSpan.Zero : due - now;
        }
    }

    /// <summary>Every neighbour this node has counted traffic for or signed a receipt to.</summary>
    public IReadOnlyList<NodeAddress> Payees
    {
        get
        {
            lock (_lock)
                return [.. _pairs.Keys];
        }
    }

    /// <summary>The latest receipt signed for <paramref name="payee"/>.</summary>
    public Receipt? LatestReceipt(NodeAddress payee)
    {
        lock (_lock)
            return _pairs.GetValueOrDefault(payee)?.Latest;
    }

    /// <summary>
    /// After a restart, continues from the latest receipt <paramref name="receipt"/>'s payee holds from this node (it
    /// sends it back when the link comes up): later receipts number on from it and add this node's new counts to its
    /// totals, so the payee never sees one go backwards. Ignored if this signer is already past it or signed it last.
    /// </summary>
    /// <exception cref="ArgumentException">It is not a receipt this node signed.</exception>
    public void Resume(Receipt receipt)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        if (receipt.Payer != _key.Address || !receipt.Verify())
            throw new ArgumentException("Only a receipt this node signed can be resumed from.", nameof(receipt));
        lock (_lock)
        {
            if (!_pairs.TryGetValue(receipt.Payee, out var pair))
                _pairs.Add(receipt.Payee, pair = new Pair());
            // Already past it, or it is the very receipt this signer made last: nothing to learn.
            if (receipt.Sequence < pair.Sequence
                || (receipt.Sequence == pair.Sequence && pair.Latest is { } latest && latest.Bytes.AsSpan().SequenceEqual(receipt.Bytes)))
                return;
            // Otherwise the payee holds a history this signer lost: a later number, or the same number on another receipt
            // (signed before a restart that then numbered from 1 again).
            // A payee ahead of this signer means this signer lost its state: everything it counted since is traffic the
            // receipt does not cover (any receipt it signed since was refused as stale), so it goes on top.
            var sinceRestart = pair.Counted;
            pair.Counted = default;
            pair.Counted.RaiseTo(receipt.ForwardedBytes, receipt.Amount);
            pair.Counted.Bytes = checked(pair.Counted.Bytes + sinceRestart.Bytes);
            pair.Counted.Value += sinceRestart.Value;
            pair.PendingSince = sinceRestart.Bytes > 0 ? pair.PendingSince ?? _time.GetUtcNow() : null;
            pair.Sequence = receipt.Sequence;
            pair.ReceiptedBytes = receipt.ForwardedBytes;
            pair.ReceiptedAmount = receipt.Amount;
            pair.Latest = receipt;
            pair.LastIssued = receipt.Issued;
        }
    }

    private bool IsDue(Pair pair, DateTimeOffset now)
    {
        if (!HasNewTraffic(pair))
            return false;
        if (pair.LastIssued is { } last && now - last < _options.MinInterval)
            return false;
        return pair.Counted.Bytes - pair.ReceiptedBytes >= _options.ByteThreshold
            || (pair.PendingSince is { } since && now - since >= _options.Interval);
    }

    private static bool HasNewTraffic(Pair pair) => pair.Counted.Bytes > pair.ReceiptedBytes || pair.Counted.Amount > pair.ReceiptedAmount;

    // Under the lock: takes the next sequence number and the totals it covers, so two polls never sign the same one.
    private static (ulong Sequence, long Bytes, long Amount) Claim(Pair pair, DateTimeOffset now)
    {
        pair.Sequence++;
        pair.ReceiptedBytes = Math.Max(pair.ReceiptedBytes, pair.Counted.Bytes);
        pair.ReceiptedAmount = Math.Max(pair.ReceiptedAmount, pair.Counted.Amount);
        pair.LastIssued = now;
        pair.PendingSince = null;
        return (pair.Sequence, pair.ReceiptedBytes, pair.ReceiptedAmount);
    }

    private Receipt Sign(NodeAddress payee, (ulong Sequence, long Bytes, long Amount) next, DateTimeOffset now)
    {
        var receipt = Receipt.Create(_key, payee, next.Sequence, next.Bytes, next.Amount, now);
        Interlocked.Increment(ref _signed);
        lock (_lock)
        {
            var pair = _pairs[payee];
            if (pair.Latest is null || pair.Latest.Sequence < receipt.Sequence)
                pair.Latest = receipt;
        }
        return receipt;
    }
}
