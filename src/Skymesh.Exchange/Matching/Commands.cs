namespace Skymesh.Exchange.Matching;

public enum Side : byte
{
    Buy,
    Sell,
}

public enum OrderType : byte
{
    /// <summary>Trades at its price or better; what is left rests (GTC) or expires (IOC, FOK).</summary>
    Limit,

    /// <summary>Trades at whatever the book offers, never rests. A buy spends at most what its owner has available.</summary>
    Market,
}

public enum TimeInForce : byte
{
    /// <summary>Good till cancelled: what does not trade at once rests on the book.</summary>
    Gtc,

    /// <summary>Immediate or cancel: trades what it can at once, the rest expires.</summary>
    Ioc,

    /// <summary>Fill or kill: trades all of it at once, or nothing.</summary>
    Fok,
}

/// <summary>What happens when an incoming order would trade with a resting order of the same owner (the incoming order's choice).</summary>
public enum SelfTradePrevention : byte
{
    /// <summary>The incoming order's remainder expires; the resting order stays.</summary>
    ExpireTaker,

    /// <summary>The resting order is cancelled and matching goes on.</summary>
    ExpireMaker,

    /// <summary>Both: the resting order is cancelled and the incoming order's remainder expires.</summary>
    ExpireBoth,

    /// <summary>Both are reduced by the smaller quantity without a trade; an order reduced to nothing is gone.</summary>
    Decrement,
}

public enum CommandKind : byte
{
    Place,
    Cancel,
    CancelAll,
    Amend,
    Deposit,
    Withdraw,

    /// <summary>Opens the account of the owner named by <see cref="ExchangeCommand.Key"/> (its key), numbered in order.</summary>
    OpenAccount,

    /// <summary>
    /// Moves <see cref="ExchangeCommand.Amount"/> of an asset from the owner's available balance to the available balance of
    /// the owner numbered <see cref="ExchangeCommand.Market"/>, once per <see cref="ExchangeCommand.Key"/> (mesh settlement).
    /// </summary>
    Transfer,

    /// <summary>
    /// Takes back a credited deposit the chain no longer confirms (<see cref="ExchangeCommand.Amount"/> of
    /// <see cref="ExchangeCommand.Asset"/>, once per <see cref="ExchangeCommand.Key"/>): from the available balance, the
    /// rest as a debt that freezes the owner until a deposit repays it.
    /// </summary>
    Reverse,
}

/// <summary>
/// One command to the engine. Build it with the static methods. Prices are quote units per lot, quantities base units
/// (a whole number of lots), amounts the asset's smallest units (see <see cref="MarketSpec"/>).
/// </summary>
public readonly record struct ExchangeCommand
{
    public CommandKind Kind { get; init; }
    public int Owner { get; init; }
    /// <summary>The market of an order; for a <see cref="CommandKind.Transfer"/>, the owner paid.</summary>
    public int Market { get; init; }
    public long OrderId { get; init; }
    public Side Side { get; init; }
    public OrderType Type { get; init; }
    public TimeInForce TimeInForce { get; init; }
    public bool PostOnly { get; init; }
    public SelfTradePrevention Stp { get; init; }
    public long Price { get; init; }
    public long Quantity { get; init; }
    public int Asset { get; init; }
    public long Amount { get; init; }
    /// <summary>
    /// The idempotency key of a deposit, withdrawal, transfer or reversal; of an order, its client order id (optional, 1
    /// to <see cref="MatchingEngine.MaxClientOrderIdLength"/> characters): a second order of the same owner with the same
    /// client order id is refused as <see cref="RejectReason.DuplicateClientOrderId"/>, naming the first.
    /// </summary>
    public string? Key { get; init; }

    public static ExchangeCommand Limit(int owner, int market, Side side, long price, long quantity,
        TimeInForce timeInForce = TimeInForce.Gtc, bool postOnly = false, SelfTradePrevention stp = SelfTradePrevention.ExpireTaker,
        string? clientOrderId = null) =>
        new() { Kind = CommandKind.Place, Owner = owner, Market = market, Side = side, Type = OrderType.Limit, Price = price, Quantity = quantity, TimeInForce = timeInForce, PostOnly = postOnly, Stp = stp, Key = clientOrderId };

    public static ExchangeCommand MarketOrder(int owner, int market, Side side, long quantity,
        TimeInForce timeInForce = TimeInForce.Ioc, SelfTradePrevention stp = SelfTradePrevention.ExpireTaker, string? clientOrderId = null) =>
        new() { Kind = CommandKind.Place, Owner = owner, Market = market, Side = side, Type = OrderType.Market, Quantity = quantity, TimeInForce = timeInForce, Stp = stp, Key = clientOrderId };

    /// <summary>Takes back a deposit the chain no longer confirms (see <see cref="CommandKind.Reverse"/>).</summary>
    public static ExchangeCommand Reverse(int owner, int asset, long amount, string key) =>
        new() { Kind = CommandKind.Reverse, Owner = owner, Asset = asset, Amount = amount, Key = key };

    public static ExchangeCommand Cancel(int owner, long orderId) => new() { Kind = CommandKind.Cancel, Owner = owner, OrderId = orderId };

    /// <summary>Cancels every resting order of the owner, in one market or (<paramref name="market"/> −1) in all.</summary>
    public static ExchangeCommand CancelAll(int owner, int market = -1) => new() { Kind = CommandKind.CancelAll, Owner = owner, Market = market };

    /// <summary>
    /// Changes a resting order's price and/or quantity (the new quantity still to trade). A smaller quantity at the same
    /// price keeps the order's place in the queue; any other change puts it at the back, and may trade at once.
    /// </summary>
    public static ExchangeCommand Amend(int owner, long orderId, long price, long quantity) =>
        new() { Kind = CommandKind.Amend, Owner = owner, OrderId = orderId, Price = price, Quantity = quantity };

    public static ExchangeCommand Deposit(int owner, int asset, long amount, string key) =>
        new() { Kind = CommandKind.Deposit, Owner = owner, Asset = asset, Amount = amount, Key = key };

    /// <summary>Numbers a new owner (an account key, e.g. a node address); an owner already known keeps its number.</summary>
    public static ExchangeCommand OpenAccount(string ownerKey) => new() { Kind = CommandKind.OpenAccount, Key = ownerKey };

    public static ExchangeCommand Withdraw(int owner, int asset, long amount, string key) =>
        new() { Kind = CommandKind.Withdraw, Owner = owner, Asset = asset, Amount = amount, Key = key };

    /// <summary>Pays <paramref name="amount"/> of <paramref name="asset"/> from <paramref name="owner"/>'s available balance to <paramref name="to"/>'s, once per <paramref name="key"/>.</summary>
    public static ExchangeCommand Transfer(int owner, int to, int asset, long amount, string key) =>
        new() { Kind = CommandKind.Transfer, Owner = owner, Market = to, Asset = asset, Amount = amount, Key = key };
}

public enum EventKind : byte
{
    /// <summary>The command was refused; nothing changed. <see cref="ExchangeEvent.Reason"/> says why.</summary>
    Rejected,

    /// <summary>An order was accepted under <see cref="ExchangeEvent.OrderId"/>; its funds are held.</summary>
    Accepted,

    /// <summary>A trade: the incoming order (<see cref="ExchangeEvent.OrderId"/>) with a resting one (<see cref="ExchangeEvent.MakerOrderId"/>) at the resting order's price.</summary>
    Trade,

    /// <summary>What was left of an incoming order rests on the book.</summary>
    Rested,

    /// <summary>What was left of an incoming order expired (IOC, market, self-trade prevention, funds).</summary>
    Expired,

    /// <summary>A resting order left the book unfilled (asked for, or self-trade prevention); its funds are released.</summary>
    Canceled,

    /// <summary>A resting order's price or quantity changed.</summary>
    Amended,

    /// <summary>Self-trade prevention reduced a resting order and the incoming one without a trade.</summary>
    Decremented,

    Deposited,
    Withdrawn,

    /// <summary>An owner's account is open under <see cref="ExchangeEvent.Owner"/>.</summary>
    AccountOpened,

    /// <summary><see cref="ExchangeEvent.Quantity"/> of asset <see cref="ExchangeEvent.Market"/> moved from <see cref="ExchangeEvent.Owner"/> to <see cref="ExchangeEvent.MakerOwner"/>.</summary>
    Transferred,

    /// <summary>
    /// A deposit of <see cref="ExchangeEvent.Quantity"/> of asset <see cref="ExchangeEvent.Market"/> was taken back from
    /// <see cref="ExchangeEvent.Owner"/>; <see cref="ExchangeEvent.Price"/> of it became a debt (0 when the balance covered it).
    /// </summary>
    Reversed,
}

public enum RejectReason : byte
{
    None,
    UnknownMarket,
    UnknownOwner,
    UnknownAsset,
    UnknownOrder,
    NotYourOrder,
    BadPrice,
    BadQuantity,
    BelowMinimum,
    TooLarge,
    InsufficientFunds,
    WouldTakeLiquidity,
    CannotFillCompletely,
    NothingToAmend,
    DuplicateKey,
    BadAmount,
    BadTimeInForce,

    /// <summary>A transfer from an owner to itself.</summary>
    SameOwner,

    /// <summary>The owner already placed an order with this client order id; <see cref="ExchangeEvent.OrderId"/> names it.</summary>
    DuplicateClientOrderId,

    /// <summary>A client order id longer than <see cref="MatchingEngine.MaxClientOrderIdLength"/> characters.</summary>
    BadClientOrderId,

    /// <summary>The owner owes a reversed deposit: it may cancel orders, and nothing else until a deposit repays it.</summary>
    AccountFrozen,
}

public enum ExpiryReason : byte
{
    None,
    ImmediateOrCancel,
    SelfTrade,
    OutOfFunds,
    Requested,
}

/// <summary>
/// One thing that happened. Which fields mean something depends on <see cref="Kind"/>; <see cref="Command"/> is the
/// number of the command that caused it (commands are numbered from 1 as the engine takes them).
/// </summary>
public readonly record struct ExchangeEvent(
    EventKind Kind, long Command, long OrderId, int Owner, int Market, Side Side, long Price, long Quantity,
    long MakerOrderId = 0, int MakerOwner = -1, long TakerFee = 0, long MakerFee = 0,
    RejectReason Reason = RejectReason.None, ExpiryReason Expiry = ExpiryReason.None);

/// <summary>Receives the engine's events as they happen, on the engine's thread.</summary>
public interface IExchangeEvents
{
    void On(in ExchangeEvent e);
}
