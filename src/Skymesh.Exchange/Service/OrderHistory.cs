using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Service;

public enum OrderStatus : byte
{
    Open,
    Filled,
    Canceled,
    Expired,
}

/// <summary>One order as its owner sees it; amounts in engine units (base units, quote units per lot).</summary>
internal sealed class OrderRecord
{
    public long Id;
    public int Owner;
    public int Market;
    public Side Side;
    public OrderType Type;
    public TimeInForce TimeInForce;
    public bool PostOnly;
    public long Price;
    public long Quantity;
    public long Remaining;
    public long Filled;
    public long FilledValue;
    public long Fees;
    public string? ClientOrderId;
    public OrderStatus Status;
    public ExpiryReason Expiry;
    public long Created;
    public long Updated;

    /// <summary>A copy, to be read off the engine thread while the original goes on changing.</summary>
    public OrderRecord Copy() => (OrderRecord)MemberwiseClone();

    /// <summary>Copies every field into <paramref name="target"/> (a record kept for the purpose: no allocation).</summary>
    public void CopyTo(OrderRecord target)
    {
        target.Id = Id;
        target.Owner = Owner;
        target.Market = Market;
        target.Side = Side;
        target.Type = Type;
        target.TimeInForce = TimeInForce;
        target.PostOnly = PostOnly;
        target.Price = Price;
        target.Quantity = Quantity;
        target.Remaining = Remaining;
        target.Filled = Filled;
        target.FilledValue = FilledValue;
        target.Fees = Fees;
        target.ClientOrderId = ClientOrderId;
        target.Status = Status;
        target.Expiry = Expiry;
        target.Created = Created;
        target.Updated = Updated;
    }
}

/// <summary>A trade as one of its two sides sees it.</summary>
internal readonly record struct FillRecord(long Command, int Leg, long OrderId, int Market, Side Side, long Price, long Quantity, long Fee, bool Maker, long Time)
{
    /// <summary>The trade's id as the API writes it, "COMMAND-N" (made when asked for: a string kept per fill would outlive a collection or two).</summary>
    public string TradeId => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Command}-{Leg}");
}

/// <summary>
/// Every account's orders and fills, kept beside the engine from its events (on the engine thread), rebuilt at start from
/// the journal's replay. Open orders are all kept; of closed orders and fills, the newest <see cref="KeepPerAccount"/>
/// per account. Times come from the commands (the exchange stamps each order command with its clock).
/// </summary>
internal sealed class OrderHistory(IReadOnlyList<MarketSpec> markets) : IEngineObserver
{
    public const int KeepPerAccount = 1000;

    private readonly Dictionary<long, OrderRecord> _orders = [];

    // Records of orders no longer kept, to be used again (every record stays on the engine thread: answers take copies).
    private readonly Stack<OrderRecord> _spare = new();
    private const int MaxSpare = 4096;
    private readonly Dictionary<int, Account> _accounts = [];
    private ExchangeCommand _command;
    private int _leg;
    private long _lastCommand;

    private sealed class Account
    {
        public readonly HashSet<long> Open = [];
        public readonly Queue<long> Closed = new();
        public readonly Queue<FillRecord> Fills = new();
    }

    public bool TryGet(long id, out OrderRecord order) => _orders.TryGetValue(id, out order!);

    public IEnumerable<OrderRecord> Open(int owner) =>
        _accounts.TryGetValue(owner, out var account) ? account.Open.Select(id => _orders[id]).OrderBy(o => o.Id) : [];

    public IEnumerable<OrderRecord> Closed(int owner) =>
        _accounts.TryGetValue(owner, out var account) ? account.Closed.Reverse().Select(id => _orders[id]) : [];

    /// <summary>The account's fills, newest first.</summary>
    public IEnumerable<FillRecord> Fills(int owner) =>
        _accounts.TryGetValue(owner, out var account) ? account.Fills.Reverse() : [];

    public int OpenCount(int owner) => _accounts.TryGetValue(owner, out var account) ? account.Open.Count : 0;

    public void Before(in ExchangeCommand command, bool replaying) => _command = command;

    public Action? BatchDone() => null;

    public void On(in ExchangeEvent e, bool replaying)
    {
        if (e.Command != _lastCommand)
        {
            _lastCommand = e.Command;
            _leg = 0;
        }
        var time = _command.Kind is CommandKind.Place or CommandKind.Cancel or CommandKind.CancelAll or CommandKind.Amend ? _command.Amount : 0;
        switch (e.Kind)
        {
            case EventKind.Accepted:
                // A record forgotten earlier is filled in again: at one order each, new ones would all outlive a collection.
                var order = _spare.TryPop(out var spare) ? spare : new OrderRecord();
                order.Id = e.OrderId;
                order.Owner = e.Owner;
                order.Market = e.Market;
                order.Side = e.Side;
                order.Type = _command.Type;
                order.TimeInForce = _command.TimeInForce;
                order.PostOnly = _command.PostOnly;
                order.Price = e.Price;
                order.Quantity = e.Quantity;
                order.Remaining = e.Quantity;
                order.Filled = 0;
                order.FilledValue = 0;
                order.Fees = 0;
                order.ClientOrderId = _command.Key;
                order.Status = OrderStatus.Open;
                order.Expiry = ExpiryReason.None;
                order.Created = time;
                order.Updated = time;
                _orders[order.Id] = order;
                Of(e.Owner).Open.Add(order.Id);
                break;
            case EventKind.Trade:
                var leg = _leg++;
                Fill(e.OrderId, e, e.TakerFee, maker: false, time, leg);
                Fill(e.MakerOrderId, e, e.MakerFee, maker: true, time, leg);
                break;
            case EventKind.Rested:
                if (_orders.TryGetValue(e.OrderId, out var rested))
                    rested.Remaining = e.Quantity;
                break;
            case EventKind.Expired:
                Close(e.OrderId, OrderStatus.Expired, e.Expiry, time);
                break;
            case EventKind.Canceled:
                Close(e.OrderId, OrderStatus.Canceled, e.Expiry, time);
                break;
            case EventKind.Amended:
                if (_orders.TryGetValue(e.OrderId, out var amended))
                {
                    amended.Price = e.Price;
                    amended.Remaining = e.Quantity;
                    amended.Quantity = amended.Filled + e.Quantity;
                    amended.Updated = time;
                }
                break;
            case EventKind.Decremented:
                Reduce(e.OrderId, e.Quantity, time);
                Reduce(e.MakerOrderId, e.Quantity, time);
                break;
        }
    }

    private void Fill(long id, in ExchangeEvent e, long fee, bool maker, long time, int leg)
    {
        if (!_orders.TryGetValue(id, out var order))
            return;
        order.Filled += e.Quantity;
        order.Remaining -= e.Quantity;
        order.FilledValue += e.Price * (e.Quantity / markets[order.Market].LotSize);
        order.Fees += fee;
        order.Updated = time;
        var fills = Of(order.Owner).Fills;
        fills.Enqueue(new FillRecord(e.Command, leg, id, order.Market, order.Side, e.Price, e.Quantity, fee, maker, time));
        if (fills.Count > KeepPerAccount)
            fills.Dequeue();
        if (order.Remaining == 0)
            Close(id, OrderStatus.Filled, ExpiryReason.None, time);
    }

    private void Reduce(long id, long quantity, long time)
    {
        if (!_orders.TryGetValue(id, out var order))
            return;
        order.Remaining -= quantity;
        order.Quantity -= quantity;
        if (order.Remaining <= 0)
            Close(id, OrderStatus.Canceled, ExpiryReason.SelfTrade, time);
    }

    private void Close(long id, OrderStatus status, ExpiryReason why, long time)
    {
        if (!_orders.TryGetValue(id, out var order) || order.Status != OrderStatus.Open)
            return;
        order.Status = status;
        order.Expiry = why;
        order.Updated = time;
        var account = Of(order.Owner);
        account.Open.Remove(id);
        account.Closed.Enqueue(id);
        if (account.Closed.Count > KeepPerAccount && _orders.Remove(account.Closed.Dequeue(), out var forgotten) && _spare.Count < MaxSpare)
            _spare.Push(forgotten);
    }

    private Account Of(int owner)
    {
        if (!_accounts.TryGetValue(owner, out var account))
            _accounts[owner] = account = new Account();
        return account;
    }
}
