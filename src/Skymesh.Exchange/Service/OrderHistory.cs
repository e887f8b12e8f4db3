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
internal readonly record struct FillRecord(string TradeId, long OrderId, int Market, Side Side, long Price, long Quantity, long Fee, bool Maker, long Time);

/// <summary>
/// Every account's orders and fills, kept beside the engine from its events (on the engine thread), rebuilt at start from
/// the journal's replay. Open orders are all kept; of closed orders and fills, the newest <see cref="KeepPerAccount"/>
/// per account. Times come from the commands (the exchange stamps each order command with its clock).
/// </summary>
internal sealed class OrderHistory(IReadOnlyList<MarketSpec> markets) : IEngineObserver
{
    public const int KeepPerAccount = 1000;

    private readonly Dictionary<long, OrderRecord> _orders = [];
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
                var order = new OrderRecord
                {
                    Id = e.OrderId, Owner = e.Owner, Market = e.Market, Side = e.Side, Type = _command.Type, TimeInForce = _command.TimeInForce,
                    PostOnly = _command.PostOnly, Price = e.Price, Quantity = e.Quantity, Remaining = e.Quantity,
                    ClientOrderId = _command.Key, Status = OrderStatus.Open, Created = time, Updated = time,
                };
                _orders[order.Id] = order;
                Of(e.Owner).Open.Add(order.Id);
                break;
            case EventKind.Trade:
                var tradeId = $"{e.Command}-{_leg++}";
                Fill(e.OrderId, e, e.TakerFee, maker: false, time, tradeId);
                Fill(e.MakerOrderId, e, e.MakerFee, maker: true, time, tradeId);
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

    private void Fill(long id, in ExchangeEvent e, long fee, bool maker, long time, string tradeId)
    {
        if (!_orders.TryGetValue(id, out var order))
            return;
        order.Filled += e.Quantity;
        order.Remaining -= e.Quantity;
        order.FilledValue += e.Price * (e.Quantity / markets[order.Market].LotSize);
        order.Fees += fee;
        order.Updated = time;
        var fills = Of(order.Owner).Fills;
        fills.Enqueue(new FillRecord(tradeId, id, order.Market, order.Side, e.Price, e.Quantity, fee, maker, time));
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
        if (account.Closed.Count > KeepPerAccount)
            _orders.Remove(account.Closed.Dequeue());
    }

    private Account Of(int owner)
    {
        if (!_accounts.TryGetValue(owner, out var account))
            _accounts[owner] = account = new Account();
        return account;
    }
}
