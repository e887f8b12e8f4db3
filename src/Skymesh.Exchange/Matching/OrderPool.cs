namespace Skymesh.Exchange.Matching;

/// <summary>A resting order, kept in <see cref="OrderPool"/> and linked into its price level's queue by slot numbers.</summary>
internal struct RestingOrder
{
    public long Id;
    public long Price;
    public long Remaining;

    /// <summary>Funds held for it right now (quote for a buy, base for a sell); at least what its remainder needs.</summary>
    public long Held;

    /// <summary>When it joined its level's queue (larger is later): price-time priority's "time".</summary>
    public long Priority;

    public int Owner;
    public int Market;
    public int Prev;
    public int Next;
    public Side Side;
    public bool PostOnly;
    public SelfTradePrevention Stp;
}

/// <summary>
/// Every resting order of the engine in one growable array, found by id through a dictionary; slots are reused, so the
/// steady state allocates nothing.
/// </summary>
internal sealed class OrderPool
{
    private RestingOrder[] _orders = new RestingOrder[1024];
    private int[] _free = new int[1024];
    private int _freeCount;
    private int _used;
    private readonly Dictionary<long, int> _byId = new(1024);

    public int Count => _byId.Count;

    public ref RestingOrder this[int slot] => ref _orders[slot];

    public bool TryFind(long id, out int slot) => _byId.TryGetValue(id, out slot);

    public int Add(long id)
    {
        int slot;
        if (_freeCount > 0)
        {
            slot = _free[--_freeCount];
        }
        else
        {
            if (_used == _orders.Length)
                Array.Resize(ref _orders, _orders.Length * 2);
            slot = _used++;
        }
        _orders[slot] = new RestingOrder { Id = id, Prev = -1, Next = -1 };
        _byId.Add(id, slot);
        return slot;
    }

    public void Remove(int slot)
    {
        _byId.Remove(_orders[slot].Id);
        if (_freeCount == _free.Length)
            Array.Resize(ref _free, _free.Length * 2);
        _free[_freeCount++] = slot;
    }
}

/// <summary>
/// One side of a market's book: price levels kept sorted with the best at the end (so taking the best level or adding
/// one next to it moves little), each a FIFO queue of orders linked through the pool.
/// </summary>
internal sealed class BookSide(Side side)
{
    private long[] _prices = new long[64];
    private int[] _heads = new int[64];
    private int[] _tails = new int[64];
    private long[] _volumes = new long[64];

    public Side Side { get; } = side;

    public int Levels { get; private set; }

    public bool IsEmpty => Levels == 0;

    /// <summary>Index of the best level (the last); valid when not empty.</summary>
    public int Best => Levels - 1;

    public long PriceAt(int level) => _prices[level];

    public int HeadAt(int level) => _heads[level];

    public long VolumeAt(int level) => _volumes[level];

    /// <summary>True when <paramref name="a"/> is a better price than <paramref name="b"/> on this side.</summary>
    public bool Better(long a, long b) => Side == Side.Buy ? a > b : a < b;

    /// <summary>
    /// The level with this price, or the bitwise complement of where it would go. Levels run from worst to best: bids
    /// ascending, asks descending.
    /// </summary>
    public int Find(long price)
    {
        int lo = 0, hi = Levels - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            var p = _prices[mid];
            if (p == price)
                return mid;
            // Worse prices come first.
            if (Better(price, p))
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        return ~lo;
    }

    /// <summary>Appends an order to the back of its price's queue, adding the level if needed.</summary>
    public void Append(OrderPool pool, int slot)
    {
        ref var order = ref pool[slot];
        var level = Find(order.Price);
        if (level < 0)
        {
            level = ~level;
            if (Levels == _prices.Length)
                Grow();
            var move = Levels - level;
            if (move > 0)
            {
                Array.Copy(_prices, level, _prices, level + 1, move);
                Array.Copy(_heads, level, _heads, level + 1, move);
                Array.Copy(_tails, level, _tails, level + 1, move);
                Array.Copy(_volumes, level, _volumes, level + 1, move);
            }
            _prices[level] = order.Price;
            _heads[level] = slot;
            _tails[level] = slot;
            _volumes[level] = order.Remaining;
            order.Prev = order.Next = -1;
            Levels++;
            return;
        }
        var tail = _tails[level];
        pool[tail].Next = slot;
        order.Prev = tail;
        order.Next = -1;
        _tails[level] = slot;
        _volumes[level] += order.Remaining;
    }

    /// <summary>Takes an order out of its level (removing the level when it empties).</summary>
    public void Unlink(OrderPool pool, int slot)
    {
        ref var order = ref pool[slot];
        var level = Find(order.Price);
        if (order.Prev >= 0)
            pool[order.Prev].Next = order.Next;
        else
            _heads[level] = order.Next;
        if (order.Next >= 0)
            pool[order.Next].Prev = order.Prev;
        else
            _tails[level] = order.Prev;
        _volumes[level] -= order.Remaining;
        if (_heads[level] < 0)
            RemoveLevel(level);
    }

    /// <summary>An order in the book traded or was reduced by <paramref name="lots"/> (it stays unless the caller unlinks it).</summary>
    public void Reduce(long price, long lots) => _volumes[Find(price)] -= lots;

    private void RemoveLevel(int level)
    {
        var move = Levels - level - 1;
        if (move > 0)
        {
            Array.Copy(_prices, level + 1, _prices, level, move);
            Array.Copy(_heads, level + 1, _heads, level, move);
            Array.Copy(_tails, level + 1, _tails, level, move);
            Array.Copy(_volumes, level + 1, _volumes, level, move);
        }
        Levels--;
    }

    private void Grow()
    {
        var size = _prices.Length * 2;
        Array.Resize(ref _prices, size);
        Array.Resize(ref _heads, size);
        Array.Resize(ref _tails, size);
        Array.Resize(ref _volumes, size);
    }
}
