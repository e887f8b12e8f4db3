using Microsoft.Extensions.Logging;
using Skymesh.Control.Bus;
using Skymesh.Control.Settlement;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Mesh.Links;
using Skymesh.Node.Events;

namespace Skymesh.Node.Control;

/// <summary>A neighbour's side of the books, as the local API shows it.</summary>
/// <param name="OwedToUs">What the neighbour owes for traffic not yet covered by a receipt (micro-units).</param>
/// <param name="ReceiptedAmount">What the neighbour's receipts to this node add up to.</param>
/// <param name="SettledToUs">Of that, what is settled on the ledger (paid to this node).</param>
/// <param name="ReceiptedByUs">What this node's receipts to the neighbour add up to (what it owes it).</param>
/// <param name="SettledByUs">Of that, what is settled on the ledger (paid by this node).</param>
public sealed record NeighbourBalance(
    string Neighbour, long ForwardedForThem, long ReceiptedBytes, long OwedToUs, long ReceiptedAmount, long SettledToUs, string Credit,
    long? AllowedBytesPerSecond, long CreditDrops, long HandedToThem, long ReceiptsWeSigned, long ReceiptedByUs = 0, long SettledByUs = 0);

/// <summary>This node's balance on its ledger and its books with each neighbour.</summary>
/// <param name="Ledger">Which ledger receipts settle on (the embedded file, or the exchange and its asset).</param>
/// <param name="SettlementsRefused">Receipts the ledger would not pay (the payer's account short), since the node started.</param>
public sealed record BalanceInfo(string Node, long Balance, long ReceiptsAccepted, long ReceiptsRefused, IReadOnlyList<NeighbourBalance> Neighbours,
    string Ledger = "", long SettlementsRefused = 0);

/// <summary>
/// Settlement for one node (docs/control-plane.md, "Settlement"): every 100 ms it feeds the links' counts to the
/// receipt book (what neighbours owe) and the signer (what this node owes), sends the receipts that are due to the
/// neighbours (on their links, over the control bus when no link is up), weighs each neighbour's debt with the credit policy and sets its link's forwarding
/// allowance (throttled, then suspended), and settles the latest receipts on the ledger every half minute.
/// </summary>
public sealed partial class SettlementService : IAsyncDisposable
{
    private readonly MeshNode _node;
    private readonly IControlBus _bus;
    private readonly TopologyGraph _graph;
    private readonly ILogger _logger;
    private readonly ReceiptBook _book;
    private readonly ReceiptSigner _signer;
    private readonly CreditPolicy _credit;
    private readonly ILedger _ledger;
    // Per link object, not per id: a link's id is used again by a later link, whose counts start from zero.
    private readonly Dictionary<Link, (long Forwarded, long Billable)> _seen = [];
    private readonly Dictionary<Link, long> _reported = [];
    private readonly Lock _lock = new();
    private readonly ITimer _tick;
    private readonly ITimer _settle;
    private int _disposed;

    /// <summary>How often links are read while traffic flows, a neighbour is held to its credit, or a receipt is due.</summary>
    internal static readonly TimeSpan BusyTick = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// The longest wait between reads of an idle node's links: idle rounds double the wait up to this, and any traffic
    /// or receipt brings it back to <see cref="BusyTick"/>. (A mesh of idle nodes does not wake each ten times a second.)
    /// </summary>
    internal static readonly TimeSpan IdleTick = TimeSpan.FromSeconds(1);

    private long _tickPeriod = BusyTick.Ticks;

    internal SettlementService(MeshNode node, IControlBus bus, TopologyGraph graph, ILedger ledger, ILogger logger)
    {
        _node = node;
        _bus = bus;
        _graph = graph;
        _logger = logger;
        _book = new ReceiptBook(node.Address, node.Time);
        _signer = new ReceiptSigner(node.Key, node.Time);
        _credit = new CreditPolicy(new CreditOptions { DefaultLimits = new CreditLimits(node.Options.CreditLimit, node.Options.SettlementLimit) }, node.Time);
        _ledger = ledger;
        _book.ReceiptRefused += r =>
        {
            Log.ReceiptRefused(_logger, r.Payer.ToString(), r.Reason.ToString());
            node.Events.Append(NodeEventKind.ReceiptRefused, $"receipt from {r.Payer} refused: {r.Reason}", r.Payer.ToString());
            // A payer behind us restarted and missed the receipt handed back when the link came up (it can cross the
            // payer's own HelloConfirm, or be lost): hand it back again, so that its next receipt numbers on.
            if (r.Reason is ReceiptError.Stale or ReceiptError.Replayed or ReceiptError.NonMonotonic)
                HandBack(r.Payer);
        };
        _book.ReceiptAccepted += r =>
        {
            if (Due(r.Payer, incoming: true))
                node.Events.Append(NodeEventKind.ReceiptAccepted, $"receipt {r.Sequence} from {r.Payer} accepted: {r.Amount:N0} micro-units for {r.ForwardedBytes:N0} bytes so far", r.Payer.ToString());
        };
        _credit.StateChanged += (status, _) => node.Events.Append(status.State switch
        {
            CreditState.Throttled => NodeEventKind.CreditThrottled,
            CreditState.Suspended => NodeEventKind.CreditSuspended,
            _ => NodeEventKind.CreditNormal,
        }, $"{status.Neighbour} {status.State.ToString().ToLowerInvariant()} at {status.Usage:P0} of its credit limit"
            + (status.AllowedBytesPerSecond is { } allowed ? $" (forwarding at most {allowed:N0} B/s for it)" : ""), status.Neighbour.ToString());
        // After a restart: what each neighbour had paid, as far as this node's ledger knows, so that their receipts
        // carry on from there (and each byte is paid once).
        foreach (var payer in _ledger.PayersOf(node.Address))
        {
            if (_ledger.LatestSettled(payer, node.Address) is { } latest)
                _book.Restore(latest);
        }
        // The owner's credit limits and suspensions, and the decisions a neighbour at its limit may wait for.
        node.Operator.AttachCredit(_credit, Hurry);
        node.Switch.ReceiptReceived += OnLinkReceipt;
        node.Switch.LinkUp += OnLinkUp;
        _tick = node.Time.CreateTimer(static s => ((SettlementService)s!).OnTickTimer(), this, BusyTick, Timeout.InfiniteTimeSpan);
        // Settled every 2 s: what is settled survives a restart (the ledger is the node's memory of who paid what).
        _settle = node.Time.CreateTimer(static s => _ = ((SettlementService)s!).SettleAsync(CancellationToken.None), this, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(2));
    }

    public ReceiptBook Book => _book;

    public ReceiptSigner Signer => _signer;

    public CreditPolicy Credit => _credit;

    public ILedger Ledger => _ledger;

    /// <summary>A receipt a neighbour sent (on its link, or over the bus from <paramref name="sender"/>); only its payer may send it.</summary>
    internal void OnReceipt(NodeAddress sender, ReadOnlySpan<byte> payload)
    {
        if (Receipt.TryParse(payload, out var receipt) != ReceiptError.None || receipt!.Payer != sender)
        {
            Log.ReceiptRefused(_logger, sender.ToString(), "not a receipt signed by its sender");
            return;
        }
        // A neighbour's first receipt can arrive before the next round has opened its account (a MiB in the first
        // 100 ms of a link): any node this one has a link to is a neighbour; strangers stay unknown and refused.
        if (_node.FindLink(sender) is not null)
            _book.AddNeighbour(sender);
        _book.Offer(receipt);
        Hurry();
    }

    /// <summary>
    /// A receipt on the link from a neighbour (the link's handshake proved who sent it): one it signed for what this
    /// node forwarded, or one this node signed, handed back when the link came up so that this node, if it restarted,
    /// numbers on from it.
    /// </summary>
    private void OnLinkReceipt(Link link, ReadOnlySpan<byte> payload)
    {
        if (link.Peer is not { } peer || Volatile.Read(ref _disposed) != 0)
            return;
        if (Receipt.TryParse(payload, out var receipt) == ReceiptError.None && receipt!.Payer == _node.Address && receipt.Payee == peer)
        {
            try
            {
                _signer.Resume(receipt);
            }
            catch (ArgumentException e)
            {
                Log.ReceiptRefused(_logger, peer.ToString(), e.Message);
            }
            return;
        }
        OnReceipt(peer, payload);
    }

    /// <summary>A link came up: hand the neighbour back the latest receipt this node holds from it (see <see cref="OnLinkReceipt"/>).</summary>
    private void OnLinkUp(Link link)
    {
        if (link.Peer is { } peer && Volatile.Read(ref _disposed) == 0)
        {
            SendLatestReceipt(link, peer);
            Hurry();
        }
    }

    private void SendLatestReceipt(Link link, NodeAddress payer)
    {
        if (_book.LatestReceipt(payer) is { } latest)
            link.TrySendReceipt(latest.Bytes);
    }

    private readonly Dictionary<NodeAddress, long> _handedBack = [];

    /// <summary>Hands a payer back the latest receipt held from it, at most once a second per payer.</summary>
    private void HandBack(NodeAddress payer)
    {
        var now = _node.Time.GetTimestamp();
        lock (_lock)
        {
            if (_handedBack.TryGetValue(payer, out var last) && _node.Time.GetElapsedTime(last, now) < TimeSpan.FromSeconds(1))
                return;
            _handedBack[payer] = now;
        }
        if (_node.FindLink(payer) is { } link)
            SendLatestReceipt(link, payer);
    }

    /// <summary>The round's timer: a round, then the next one soon (busy) or later (idle).</summary>
    private void OnTickTimer()
    {
        if (Volatile.Read(ref _disposed) != 0)
            return;
        var next = Tick() ? BusyTick.Ticks : Math.Min(IdleTick.Ticks, 2 * Interlocked.Read(ref _tickPeriod));
        Interlocked.Exchange(ref _tickPeriod, next);
        Rearm(TimeSpan.FromTicks(next));
    }

    /// <summary>Something happened that the next read of the links must see soon: back to <see cref="BusyTick"/>.</summary>
    private void Hurry()
    {
        if (Interlocked.Exchange(ref _tickPeriod, BusyTick.Ticks) > BusyTick.Ticks)
            Rearm(BusyTick);
    }

    private void Rearm(TimeSpan due)
    {
        try
        {
            _tick.Change(due, Timeout.InfiniteTimeSpan);
        }
        catch (ObjectDisposedException)
        {
            // Stopping.
        }
    }

    /// <summary>One round — counts in, receipts out, credit to the links; true when there was something to do (or soon will be).</summary>
    private bool Tick()
    {
        var busy = false;
        try
        {
            var ownPrice = _node.Price;
            foreach (var link in _node.Switch.Links)
            {
                if (link.State != LinkState.Up || link.Peer is not { } peer)
                    continue;
                long forwarded, billable;
                lock (_lock)
                {
                    _seen.TryGetValue(link, out var before);
                    // Paid for: what was handed over to forward and the neighbour reports forwarded, not merely sent.
                    var payable = link.PayableSent;
                    forwarded = link.ForwardedForPeer - before.Forwarded;
                    billable = Math.Max(0, payable - before.Billable);
                    _seen[link] = (link.ForwardedForPeer, Math.Max(before.Billable, payable));
                    // Tell the neighbour what it is owed for, when that changed.
                    if (!_reported.TryGetValue(link, out var told) || told != link.ForwardedForPeer)
                    {
                        if (link.TryReportForwarded())
                            _reported[link] = link.ForwardedForPeer;
                    }
                }
                _book.AddNeighbour(peer);
                if (forwarded > 0)
                    _book.Count(peer, forwarded, ownPrice);
                if (billable > 0)
                    _signer.Count(peer, billable, PriceOf(peer));
                busy |= forwarded > 0 || billable > 0;
                if (_book.AccountOf(peer) is { } account)
                {
                    var settled = _ledger.SettledOf(peer, _node.Address).Amount;
                    var status = _credit.Update(peer, Exposure.Of(account, settled));
                    link.SetForwardAllowance(status.AllowedBytesPerSecond);
                    busy |= status.State != CreditState.Normal;
                }
            }
            foreach (var receipt in _signer.PollAll())
            {
                busy = true;
                _ = SendAsync(receipt);
            }
            busy |= _signer.HasPending;
            lock (_lock)
            {
                foreach (var gone in _seen.Keys.Where(l => l.State == LinkState.Down).ToList())
                {
                    _seen.Remove(gone);
                    _reported.Remove(gone);
                }
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A timer callback must not end the process; the next round tries again.
            Log.TickFailed(_logger, e.Message);
        }
        return busy;
    }

    /// <summary>What <paramref name="neighbour"/> charges per MiB to forward, from its announcement (0 when unknown).</summary>
    private readonly Dictionary<NodeAddress, uint> _knownPrices = [];

    /// <summary>A neighbour's price, told over the bus when this node keeps no graph of announcements (it asks a finder).</summary>
    internal void OnNeighbourPrice(NodeAddress neighbour, uint price)
    {
        if (_node.FindLink(neighbour) is null)
            return;
        lock (_lock)
            _knownPrices[neighbour] = price;
    }

    /// <summary>
    /// What a neighbour charges to forward a MiB: the highest price it announces on its links that are up. A neighbour that
    /// has just restarted announces before its links are back; until they are, the price it announced last still holds
    /// (else traffic handed to it in those seconds would go unpaid).
    /// </summary>
    private uint PriceOf(NodeAddress neighbour)
    {
        uint? announced = null;
        if (_graph.RecordOf(neighbour) is { } record)
        {
            foreach (var link in record.Links)
            {
                if (link.State == AnnouncedLinkState.Up)
                    announced = Math.Max(announced ?? 0, link.PricePerMiB);
            }
        }
        lock (_lock)
            return announced is { } price ? _knownPrices[neighbour] = price : _knownPrices.GetValueOrDefault(neighbour);
    }

    // Receipts flow every 100 ms per neighbour under traffic: at most one event a second per neighbour and direction
    // keeps them from pushing everything else out of the event ring.
    private readonly Dictionary<(NodeAddress, bool, bool), long> _lastReceiptEvent = [];
    private long _settlementsRefused;

    private bool Due(NodeAddress neighbour, bool incoming, bool refused = false)
    {
        var now = _node.Time.GetTimestamp();
        lock (_lastReceiptEvent)
        {
            if (_lastReceiptEvent.TryGetValue((neighbour, incoming, refused), out var last) && _node.Time.GetElapsedTime(last, now) < TimeSpan.FromSeconds(1))
                return false;
            _lastReceiptEvent[(neighbour, incoming, refused)] = now;
            return true;
        }
    }

    private async Task SendAsync(Receipt receipt)
    {
        if (Due(receipt.Payee, incoming: false))
            _node.Events.Append(NodeEventKind.ReceiptSent, $"receipt {receipt.Sequence} to {receipt.Payee}: {receipt.Amount:N0} micro-units for {receipt.ForwardedBytes:N0} bytes so far", receipt.Payee.ToString());
        // Straight to the neighbour on the link between them: settlement does not wait for the control bus, and a
        // broker outage never throttles a paying neighbour. Over the control bus only when no link to the payee is up.
        if (_node.FindLink(receipt.Payee) is { } link && link.TrySendReceipt(receipt.Bytes))
            return;
        try
        {
            await _bus.SendAsync(receipt.Payee, receipt.Bytes, CancellationToken.None);
        }
        catch (Exception e) when (e is ControlBusException or ObjectDisposedException or OperationCanceledException)
        {
            // The payee is away or the broker is: the next receipt (cumulative) covers this one.
            Log.ReceiptNotSent(_logger, receipt.Payee.ToString(), e.Message);
        }
    }

    /// <summary>Settles every neighbour's latest receipt on the ledger (also done every 30 s).</summary>
    public async Task SettleAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _disposed) != 0)
            return;
        await SettleLatestAsync(cancellationToken);
    }

    private async Task SettleLatestAsync(CancellationToken cancellationToken)
    {
        var receipts = _book.Accounts.Select(a => _book.LatestReceipt(a.Payer)).OfType<Receipt>().ToList();
        if (receipts.Count == 0)
            return;
        try
        {
            var results = await _ledger.SettleAsync(receipts, cancellationToken);
            for (var i = 0; i < results.Count; i++)
            {
                if (results[i].Outcome != SettlementOutcome.Refused)
                    continue;
                Interlocked.Increment(ref _settlementsRefused);
                var payer = receipts[i].Payer;
                if (Due(payer, incoming: true, refused: true))
                {
                    Log.SettlementRefused(_logger, payer.ToString(), receipts[i].Amount - results[i].Position.Amount);
                    _node.Events.Append(NodeEventKind.SettlementRefused,
                        $"the ledger would not pay {receipts[i].Amount - results[i].Position.Amount:N0} micro-units {payer} owes (receipt {receipts[i].Sequence}): its account is short",
                        payer.ToString());
                }
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A ledger away or failing (the exchange's disk, a network): what is owed stays receipted and the next round
            // tries again; the settlement limit throttles payers meanwhile.
            Log.TickFailed(_logger, e.Message);
        }
    }

    public BalanceInfo Balance()
    {
        var neighbours = new List<NeighbourBalance>();
        // Every neighbour with a link up, and every one with books, also after its link went down: what it owes
        // does not go away with the link.
        var links = _node.Switch.Links.Where(l => l.State == LinkState.Up && l.Peer is not null).ToDictionary(l => l.Peer!.Value);
        var peers = links.Keys.Concat(_book.Accounts.Select(a => a.Payer)).Concat(_signer.Payees).Distinct()
            .OrderBy(p => links.TryGetValue(p, out var l) ? l.Id : int.MaxValue).ThenBy(p => p.ToString(), StringComparer.Ordinal);
        foreach (var peer in peers)
        {
            var link = links.GetValueOrDefault(peer);
            var account = _book.AccountOf(peer);
            var status = _credit.StatusOf(peer);
            var signed = _signer.LatestReceipt(peer);
            neighbours.Add(new NeighbourBalance(peer.ToString(), account?.CountedBytes ?? 0, account?.ReceiptedBytes ?? 0, account?.UnacknowledgedAmount ?? 0,
                account?.ReceiptedAmount ?? 0, _ledger.SettledOf(peer, _node.Address).Amount,
                link is null ? "no link" : (status?.State ?? CreditState.Normal).ToString().ToLowerInvariant(),
                link?.ForwardAllowance, link?.CreditDrops ?? 0, link?.BillableSent ?? 0, (long)(signed?.Sequence ?? 0),
                signed?.Amount ?? 0, _ledger.SettledOf(_node.Address, peer).Amount));
        }
        var refused = Enum.GetValues<ReceiptError>().Where(r => r != ReceiptError.None).Sum(_book.Refused);
        return new BalanceInfo(_node.Address.ToString(), _ledger.BalanceOf(_node.Address), _book.Accepted, refused, neighbours, _ledger.Description,
            Interlocked.Read(ref _settlementsRefused));
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _node.Switch.ReceiptReceived -= OnLinkReceipt;
        _node.Switch.LinkUp -= OnLinkUp;
        await _tick.DisposeAsync();
        await _settle.DisposeAsync();
        // Settled once more, so what the neighbours receipted last is on the ledger; the ledger is the host's.
        await SettleLatestAsync(CancellationToken.None);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 720, Level = LogLevel.Warning, Message = "Receipt from {Payer} refused: {Reason}")]
        public static partial void ReceiptRefused(ILogger logger, string payer, string reason);

        [LoggerMessage(EventId = 721, Level = LogLevel.Debug, Message = "Receipt to {Payee} not sent: {Reason}")]
        public static partial void ReceiptNotSent(ILogger logger, string payee, string reason);

        [LoggerMessage(EventId = 723, Level = LogLevel.Warning, Message = "The ledger would not pay {Amount} micro-units {Payer} owes: its account is short")]
        public static partial void SettlementRefused(ILogger logger, string payer, long amount);

        [LoggerMessage(EventId = 722, Level = LogLevel.Warning, Message = "Settlement round failed: {Reason}")]
        public static partial void TickFailed(ILogger logger, string reason);
    }
}
