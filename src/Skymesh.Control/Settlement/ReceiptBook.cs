using Skymesh.Identity;

namespace Skymesh.Control.Settlement;

/// <summary>What a <see cref="ReceiptBook"/> accepts, and how fast.</summary>
public sealed record ReceiptBookOptions
{
    /// <summary>How far in the future a receipt may be issued (the two clocks differ).</summary>
    public TimeSpan ClockTolerance { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>How long ago a receipt may have been issued; an older one is refused as <see cref="ReceiptError.TooOld"/>.</summary>
    public TimeSpan MaxAge { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Shortest time between two signature checks for one payer: a receipt sooner than that is refused, unchecked, as
    /// <see cref="ReceiptError.TooFrequent"/>, so no payer can make this node spend more than one check per interval
    /// on it. Half the <see cref="ReceiptSignerOptions.MinInterval"/> an honest payer keeps; a refused receipt costs
    /// nothing, as the next one is cumulative.
    /// </summary>
    public TimeSpan MinInterval { get; init; } = TimeSpan.FromMilliseconds(50);
}

/// <summary>A receipt the book refused, for the log: why, from whom (empty when the payer is unknown or unreadable), which.</summary>
public readonly record struct ReceiptRefusal(ReceiptError Reason, NodeAddress Payer, ulong Sequence, DateTimeOffset At);

/// <summary>
/// What one neighbour owes this node, by this node's count and by the neighbour's latest receipt. Amounts are in
/// micro-units of the settlement coin.
/// </summary>
/// <param name="CountedBytes">Bytes this node forwarded for the payer (fed by the node through <see cref="ReceiptBook.Count"/>).</param>
/// <param name="CountedAmount">What they cost at the prices they were forwarded at.</param>
/// <param name="ReceiptedBytes">Bytes the payer's latest accepted receipt acknowledges.</param>
/// <param name="ReceiptedAmount">The amount it acknowledges.</param>
/// <param name="Sequence">Its sequence number (0: no receipt yet).</param>
/// <param name="LastReceiptAt">When it was accepted (null: no receipt yet).</param>
public readonly record struct PayerAccount(
    NodeAddress Payer, long CountedBytes, long CountedAmount, long ReceiptedBytes, long ReceiptedAmount, ulong Sequence, DateTimeOffset? LastReceiptAt)
{
    /// <summary>Counted but not yet acknowledged by a receipt (never negative: the payer may count more than arrived).</summary>
    public long UnacknowledgedBytes => Math.Max(0, CountedBytes - ReceiptedBytes);

    /// <summary>The amount counted but not yet acknowledged; what <see cref="CreditPolicy"/> bounds by the receipt limit.</summary>
    public long UnacknowledgedAmount => Math.Max(0, CountedAmount - ReceiptedAmount);
}

/// <summary>
/// The payee's side of settlement (docs/control-plane.md, "Settlement"): for every neighbour it forwards for, what
/// this node counted and the latest receipt the neighbour signed for it. <see cref="Offer(ReadOnlySpan{byte})"/> makes
/// every cheap check first — form, payee, time window, order, rate — and the signature check last, with the payer's
/// key kept decompressed; refusals are counted by reason and raised as <see cref="ReceiptRefused"/>. Only receipts
/// from neighbours the node has counted for (<see cref="Count"/>, <see cref="AddNeighbour"/>) are considered, so a
/// stranger can make the book neither grow nor check a signature. Safe to use from several threads.
/// </summary>
public sealed class ReceiptBook
{
    private sealed class Account(NodeVerifier verifier)
    {
        public readonly NodeVerifier Verifier = verifier;
        public Meter Counted;
        public Receipt? Latest;
        public DateTimeOffset? LatestAt;
        public DateTimeOffset? LastCheckedAt;
    }

    private readonly TimeProvider _time;
    private readonly ReceiptBookOptions _options;
    private readonly byte[] _self;
    private readonly Dictionary<AddressKey, Account> _accounts = [];
    private readonly Lock _lock = new();
    private readonly long[] _refused = new long[Enum.GetValues<ReceiptError>().Length];
    private long _accepted;

    public ReceiptBook(NodeAddress self, TimeProvider? time = null, ReceiptBookOptions? options = null)
    {
        if (self.IsEmpty)
            throw new ArgumentException("A receipt book belongs to a node.", nameof(self));
        Self = self;
        _self = self.ToBytes();
        _time = time ?? TimeProvider.System;
        _options = options ?? new ReceiptBookOptions();
    }

    /// <summary>The node this book belongs to: the payee of every receipt it accepts.</summary>
    public NodeAddress Self { get; }

    public long Accepted => Interlocked.Read(ref _accepted);

    /// <summary>Receipts refused for <paramref name="reason"/>.</summary>
    public long Refused(ReceiptError reason) => Interlocked.Read(ref _refused[(int)reason]);

    /// <summary>Raised (on the offering thread, outside the book's lock) for every receipt accepted; handlers must not block.</summary>
    public event Action<Receipt>? ReceiptAccepted;

    /// <summary>Raised for every receipt refused, with the reason, for the node to log; handlers must not block.</summary>
    public event Action<ReceiptRefusal>? ReceiptRefused;

    /// <summary>Starts an account for a neighbour (no-op if it exists), so its receipts are considered.</summary>
    public void AddNeighbour(NodeAddress payer)
    {
        lock (_lock)
            AccountFor(payer);
    }

    /// <summary>
    /// Adds bytes this node forwarded for <paramref name="payer"/> at <paramref name="pricePerMiB"/> (this node's price
    /// onto the link they went out on). The node feeds its per-neighbour counters here, e.g. every 100 ms.
    /// </summary>
    public void Count(NodeAddress payer, long bytes, uint pricePerMiB)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        lock (_lock)
            AccountFor(payer).Counted.Add(bytes, pricePerMiB);
    }

    /// <summary>
    /// After a restart, takes back the latest receipt a neighbour had signed (e.g. the last one the ledger settled), so
    /// that older ones are refused and the count starts from what it acknowledges. Checks it fully.
    /// </summary>
    /// <exception cref="ArgumentException">It is not a valid receipt to this node.</exception>
    public void Restore(Receipt receipt)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        if (receipt.Payee != Self || !receipt.Verify())
            throw new ArgumentException("Only a receipt signed by its payer to this node can be restored.", nameof(receipt));
        lock (_lock)
        {
            var account = AccountFor(receipt.Payer);
            if (account.Latest is null || account.Latest.Sequence < receipt.Sequence)
            {
                account.Latest = receipt;
                account.LatestAt = _time.GetUtcNow();
                account.Counted.RaiseTo(receipt.ForwardedBytes, receipt.Amount);
            }
        }
    }

    /// <summary>Checks and keeps a receipt as it arrived off the wire. The node should offer only what the payer itself sent (the SSMP sender).</summary>
    public ReceiptError Offer(ReadOnlySpan<byte> bytes)
    {
        var now = _time.GetUtcNow();
        if (!Receipt.HasForm(bytes))
            return Refuse(ReceiptError.Malformed, default, 0, now);
        Account? account;
        lock (_lock)
            account = _accounts.GetValueOrDefault(AddressKey.From(Receipt.PayerField(bytes)));
        var payer = account?.Verifier.Address ?? default;
        if (!Receipt.PayeeField(bytes).SequenceEqual(_self))
            return Refuse(ReceiptError.WrongPayee, payer, 0, now);
        if (account is null)
            return Refuse(ReceiptError.UnknownPayer, default, 0, now);
        var error = Receipt.TryParseFields(bytes, payer, Self, out var receipt);
        return error != ReceiptError.None ? Refuse(error, payer, 0, now) : Check(account, receipt!, now);
    }

    /// <summary>Checks and keeps a receipt already parsed.</summary>
    public ReceiptError Offer(Receipt receipt)
    {
        ArgumentNullException.ThrowIfNull(receipt);
        var now = _time.GetUtcNow();
        Account? account;
        lock (_lock)
            account = _accounts.GetValueOrDefault(AddressKey.From(receipt.Payer));
        if (receipt.Payee != Self)
            return Refuse(ReceiptError.WrongPayee, receipt.Payer, receipt.Sequence, now);
        return account is null ? Refuse(ReceiptError.UnknownPayer, receipt.Payer, receipt.Sequence, now) : Check(account, receipt, now);
    }

    /// <summary>The latest receipt accepted from <paramref name="payer"/>: what the node settles on the ledger.</summary>
    public Receipt? LatestReceipt(NodeAddress payer)
    {
        lock (_lock)
            return _accounts.GetValueOrDefault(AddressKey.From(payer))?.Latest;
    }

    public PayerAccount? AccountOf(NodeAddress payer)
    {
        lock (_lock)
            return _accounts.TryGetValue(AddressKey.From(payer), out var account) ? Snapshot(account) : null;
    }

    public IReadOnlyList<PayerAccount> Accounts
    {
        get
        {
            lock (_lock)
                return [.. _accounts.Values.Select(Snapshot)];
        }
    }

    private ReceiptError Check(Account account, Receipt receipt, DateTimeOffset now)
    {
        if (receipt.Issued > now + _options.ClockTolerance)
            return Refuse(ReceiptError.FromTheFuture, receipt.Payer, receipt.Sequence, now);
        if (receipt.Issued < now - _options.MaxAge)
            return Refuse(ReceiptError.TooOld, receipt.Payer, receipt.Sequence, now);
        ReceiptError error;
        lock (_lock)
        {
            error = Order(account, receipt);
            if (error == ReceiptError.None && account.LastCheckedAt is { } checkedAt && now - checkedAt < _options.MinInterval)
                error = ReceiptError.TooFrequent;
            if (error == ReceiptError.None)
                account.LastCheckedAt = now;
        }
        if (error != ReceiptError.None)
            return Refuse(error, receipt.Payer, receipt.Sequence, now);
        // The expensive part, outside the lock; then the order again, in case another receipt of this payer won the race.
        if (!receipt.Verify(account.Verifier))
            return Refuse(ReceiptError.BadSignature, receipt.Payer, receipt.Sequence, now);
        lock (_lock)
        {
            error = Order(account, receipt);
            if (error == ReceiptError.None)
            {
                // The first receipt of an account sets where the count stands: traffic before it (a longer history
                // than this book has seen) is acknowledged by it, so it cannot hide later traffic.
                if (account.Latest is null)
                    account.Counted.RaiseTo(receipt.ForwardedBytes, receipt.Amount);
                account.Latest = receipt;
                account.LatestAt = now;
                Interlocked.Increment(ref _accepted);
            }
        }
        if (error != ReceiptError.None)
            return Refuse(error, receipt.Payer, receipt.Sequence, now);
        ReceiptAccepted?.Invoke(receipt);
        return ReceiptError.None;
    }

    private static ReceiptError Order(Account account, Receipt receipt)
    {
        var latest = account.Latest;
        if (latest is null)
            return ReceiptError.None;
        if (receipt.Sequence == latest.Sequence)
            return ReceiptError.Replayed;
        if (receipt.Sequence < latest.Sequence)
            return ReceiptError.Stale;
        return receipt.ForwardedBytes < latest.ForwardedBytes || receipt.Amount < latest.Amount ? ReceiptError.NonMonotonic : ReceiptError.None;
    }

    private ReceiptError Refuse(ReceiptError reason, NodeAddress payer, ulong sequence, DateTimeOffset now)
    {
        Interlocked.Increment(ref _refused[(int)reason]);
        ReceiptRefused?.Invoke(new ReceiptRefusal(reason, payer, sequence, now));
        return reason;
    }

    private Account AccountFor(NodeAddress payer)
    {
        if (payer.IsEmpty || payer == Self)
            throw new ArgumentException("A payer is a neighbour, not this node.", nameof(payer));
        var key = AddressKey.From(payer);
        if (!_accounts.TryGetValue(key, out var account))
            _accounts.Add(key, account = new Account(new NodeVerifier(payer)));
        return account;
    }

    private static PayerAccount Snapshot(Account account) => new(
        account.Verifier.Address, account.Counted.Bytes, account.Counted.Amount,
        account.Latest?.ForwardedBytes ?? 0, account.Latest?.Amount ?? 0, account.Latest?.Sequence ?? 0, account.LatestAt);
}
