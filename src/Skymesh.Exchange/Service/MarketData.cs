using System.IO.Hashing;
using System.Text;
using System.Threading.Channels;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Service;

/// <summary>One price level: a decimal price and the total quantity resting there.</summary>
public readonly record struct BookLevel(string Price, string Quantity);

/// <summary>
/// The market-data feed (docs/exchange-api.md, "Market data"): per market one MCAST topic carrying book diffs and trades
/// under gap-free sequence numbers, each message with the checksum of the book it leaves, and heartbeats carrying the last
/// sequence number; and the snapshot (a request) to start from or resynchronise to. It keeps the book as published, so
/// every diff, checksum and snapshot agrees with what went out, whatever the engine did in between. Runs on the engine
/// thread; the messages are sent, in order, by one pump.
/// </summary>
internal sealed class MarketData : IEngineObserver
{
    /// <summary>Levels of each side the checksum covers.</summary>
    public const int ChecksumDepth = 25;

    /// <summary>Largest message: SSMP carries at most 1,024 bytes in one MCAST.</summary>
    private const int MaxMessage = 1000;

    private readonly MarketRules[] _markets;
    private readonly Book[] _books;
    private readonly Channel<(string Topic, long Sequence, byte[] Payload)> _out = Channel.CreateUnbounded<(string, long, byte[])>(new UnboundedChannelOptions { SingleReader = true });
    private readonly List<(string Topic, long Sequence, byte[] Payload)> _pending = [];
    private readonly string _prefix;
    private MatchingEngine? _engine;
    private long _tradeCounter;
    private ExchangeCommand _command;
    private int _leg;

    public MarketData(IReadOnlyList<MarketRules> markets, string topicPrefix, string epoch)
    {
        _markets = [.. markets];
        _books = [.. markets.Select(_ => new Book())];
        _prefix = topicPrefix;
        Epoch = epoch;
    }

    /// <summary>Changes every time the exchange starts: sequence numbers start again at 1 under a new epoch.</summary>
    public string Epoch { get; }

    public ChannelReader<(string Topic, long Sequence, byte[] Payload)> Outgoing => _out.Reader;

    public long Messages { get; private set; }

    public string TopicOf(MarketRules market) => $"{_prefix}.md.{market.Topic}";

    private sealed class Book
    {
        public readonly SortedDictionary<long, long> Bids = new(Comparer<long>.Create((a, b) => b.CompareTo(a)));
        public readonly SortedDictionary<long, long> Asks = new();
        public readonly HashSet<(Side, long)> Touched = [];
        public readonly List<(long Price, long Quantity, Side Taker, string Id, long Time)> Trades = [];
        public long Sequence;

        public SortedDictionary<long, long> Of(Side side) => side == Side.Buy ? Bids : Asks;
    }

    /// <summary>Takes the engine's books as they are now as the published state (on the engine thread, before any command).</summary>
    public void Start(MatchingEngine engine)
    {
        _engine = engine;
        for (var m = 0; m < _markets.Length; m++)
        {
            foreach (var side in new[] { Side.Buy, Side.Sell })
            {
                foreach (var (price, quantity) in engine.Levels(m, side))
                    _books[m].Of(side)[price] = quantity;
            }
        }
    }

    public void Before(in ExchangeCommand command, bool replaying)
    {
        _command = command;
        _leg = 0;
        // An amendment moves an order away from a price the events do not name.
        if (!replaying && _engine is not null && command.Kind == CommandKind.Amend && _engine.TryGetOrder(command.OrderId, out var order))
            _books[order.Market].Touched.Add((order.Side, order.Price));
    }

    public void On(in ExchangeEvent e, bool replaying)
    {
        if (replaying || _engine is null)
            return;
        switch (e.Kind)
        {
            case EventKind.Rested:
            case EventKind.Canceled:
            case EventKind.Amended:
                _books[e.Market].Touched.Add((e.Side, e.Price));
                break;
            case EventKind.Trade:
                var book = _books[e.Market];
                book.Touched.Add((Opposite(e.Side), e.Price));
                var time = _command.Kind is CommandKind.Place or CommandKind.Amend ? _command.Amount : 0;
                book.Trades.Add((e.Price, e.Quantity, e.Side, $"{e.Command}-{_leg++}", time));
                _tradeCounter++;
                break;
            case EventKind.Decremented:
                _books[e.Market].Touched.Add((Opposite(e.Side), e.Price));
                break;
        }
    }

    private static Side Opposite(Side side) => side == Side.Buy ? Side.Sell : Side.Buy;

    /// <summary>Turns the batch's changes into messages; they are sent once the batch is durable (the action returned).</summary>
    public Action? BatchDone()
    {
        if (_engine is null)
            return null;
        for (var m = 0; m < _markets.Length; m++)
        {
            var book = _books[m];
            if (book.Touched.Count == 0 && book.Trades.Count == 0)
                continue;
            var changes = new List<(Side Side, long Price, long Quantity)>();
            foreach (var (side, price) in book.Touched.OrderBy(t => t.Item1).ThenBy(t => t.Item2))
            {
                var now = _engine.LevelQuantity(m, side, price);
                if (book.Of(side).GetValueOrDefault(price) != now)
                    changes.Add((side, price, now));
            }
            book.Touched.Clear();
            Publish(m, changes, book.Trades);
            book.Trades.Clear();
        }
        if (_pending.Count == 0)
            return null;
        var release = _pending.ToArray();
        _pending.Clear();
        return () =>
        {
            foreach (var message in release)
                _out.Writer.TryWrite(message);
        };
    }

    /// <summary>Packs the changes and trades into as few messages as fit, each applied to the published book before its checksum.</summary>
    private void Publish(int m, List<(Side Side, long Price, long Quantity)> changes, List<(long Price, long Quantity, Side Taker, string Id, long Time)> trades)
    {
        var rules = _markets[m];
        var book = _books[m];
        int c = 0, t = 0;
        while (c < changes.Count || t < trades.Count)
        {
            var bids = new List<string>();
            var asks = new List<string>();
            var tradeTexts = new List<string>();
            var size = 200 + rules.Symbol.Length + Epoch.Length;
            while (c < changes.Count)
            {
                var (side, price, quantity) = changes[c];
                var entry = $"[\"{rules.FormatPrice(price)}\",\"{rules.FormatQuantity(quantity)}\"]";
                if (size + entry.Length + 1 > MaxMessage && bids.Count + asks.Count > 0)
                    break;
                size += entry.Length + 1;
                (side == Side.Buy ? bids : asks).Add(entry);
                if (quantity == 0)
                    book.Of(side).Remove(price);
                else
                    book.Of(side)[price] = quantity;
                c++;
            }
            while (t < trades.Count)
            {
                var trade = trades[t];
                var entry = $"{{\"id\":\"{trade.Id}\",\"price\":\"{rules.FormatPrice(trade.Price)}\",\"quantity\":\"{rules.FormatQuantity(trade.Quantity)}\",\"side\":\"{(trade.Taker == Side.Buy ? "buy" : "sell")}\",\"time\":{trade.Time}}}";
                if (size + entry.Length + 1 > MaxMessage && bids.Count + asks.Count + tradeTexts.Count > 0)
                    break;
                size += entry.Length + 1;
                tradeTexts.Add(entry);
                t++;
            }
            book.Sequence++;
            var text = $"{{\"type\":\"diff\",\"market\":\"{rules.Symbol}\",\"epoch\":\"{Epoch}\",\"seq\":{book.Sequence},\"bids\":[{string.Join(',', bids)}],\"asks\":[{string.Join(',', asks)}],\"trades\":[{string.Join(',', tradeTexts)}],\"checksum\":{Checksum(m)}}}";
            Send(rules, book.Sequence, text);
        }
    }

    /// <summary>A heartbeat on every market's topic: the last sequence number, so a subscriber that lost the last diff knows.</summary>
    public void Heartbeat(long now)
    {
        for (var m = 0; m < _markets.Length; m++)
            Send(_markets[m], 0, $"{{\"type\":\"heartbeat\",\"market\":\"{_markets[m].Symbol}\",\"epoch\":\"{Epoch}\",\"seq\":{_books[m].Sequence},\"time\":{now}}}");
    }

    /// <summary>Holds a message until its batch is durable; <paramref name="sequence"/> is 0 for a heartbeat.</summary>
    private void Send(MarketRules rules, long sequence, string text)
    {
        Messages++;
        _pending.Add((TopicOf(rules), sequence, Encoding.UTF8.GetBytes(text)));
    }

    /// <summary>The published book of a market: its sequence number, checksum and up to <paramref name="depth"/> levels a side.</summary>
    public (long Sequence, uint Checksum, IReadOnlyList<BookLevel> Bids, IReadOnlyList<BookLevel> Asks) Snapshot(int market, int depth)
    {
        var rules = _markets[market];
        var book = _books[market];
        return (book.Sequence, Checksum(market),
            [.. book.Bids.Take(depth).Select(l => new BookLevel(rules.FormatPrice(l.Key), rules.FormatQuantity(l.Value)))],
            [.. book.Asks.Take(depth).Select(l => new BookLevel(rules.FormatPrice(l.Key), rules.FormatQuantity(l.Value)))]);
    }

    /// <summary>
    /// CRC-32 (IEEE) of the text "p:q|p:q|…#p:q|…": the best <see cref="ChecksumDepth"/> bids, best first, then '#', then the
    /// best asks, each level its price and quantity as the API writes them.
    /// </summary>
    public uint Checksum(int market) => BookChecksum(
        _books[market].Bids.Take(ChecksumDepth).Select(l => new BookLevel(_markets[market].FormatPrice(l.Key), _markets[market].FormatQuantity(l.Value))),
        _books[market].Asks.Take(ChecksumDepth).Select(l => new BookLevel(_markets[market].FormatPrice(l.Key), _markets[market].FormatQuantity(l.Value))));

    /// <summary>The checksum of a book given as levels, best first (clients compute the same).</summary>
    public static uint BookChecksum(IEnumerable<BookLevel> bids, IEnumerable<BookLevel> asks)
    {
        var text = new StringBuilder();
        Append(text, bids);
        text.Append('#');
        Append(text, asks);
        return Crc32.HashToUInt32(Encoding.UTF8.GetBytes(text.ToString()));

        static void Append(StringBuilder text, IEnumerable<BookLevel> levels)
        {
            var first = true;
            foreach (var level in levels.Take(ChecksumDepth))
            {
                if (!first)
                    text.Append('|');
                text.Append(level.Price).Append(':').Append(level.Quantity);
                first = false;
            }
        }
    }

    public void Complete() => _out.Writer.TryComplete();
}
