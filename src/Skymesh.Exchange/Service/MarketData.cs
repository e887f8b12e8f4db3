using System.IO.Hashing;
using System.Text;
using System.Threading.Channels;
using Skymesh.Exchange.Matching;
using static Skymesh.Exchange.Service.Utf8Text;

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
    private readonly string[] _topics;

    // Scratch for the parts of one message and for the checksum's text (on the engine thread only).
    private readonly byte[] _bids = new byte[MaxMessage + 256];
    private readonly byte[] _asks = new byte[MaxMessage + 256];
    private readonly byte[] _tradeText = new byte[MaxMessage + 256];
    private readonly byte[] _message = new byte[4 * MaxMessage];
    private readonly byte[] _checksumText = new byte[2 * ChecksumDepth * 2 * 48 + 1];
    private readonly List<(Side Side, long Price)> _touched = [];
    private MatchingEngine? _engine;
    private long _tradeCounter;
    private ExchangeCommand _command;
    private int _leg;

    public MarketData(IReadOnlyList<MarketRules> markets, string topicPrefix, string epoch)
    {
        _markets = [.. markets];
        _books = [.. markets.Select(_ => new Book())];
        _prefix = topicPrefix;
        _topics = [.. _markets.Select(m => $"{_prefix}.md.{m.Topic}")];
        Epoch = epoch;
        _epochUtf8 = Encoding.UTF8.GetBytes(epoch);
        _symbolsUtf8 = [.. _markets.Select(m => Encoding.UTF8.GetBytes(m.Symbol))];
    }

    private readonly byte[] _epochUtf8;
    private readonly byte[][] _symbolsUtf8;

    /// <summary>Changes every time the exchange starts: sequence numbers start again at 1 under a new epoch.</summary>
    public string Epoch { get; }

    public ChannelReader<(string Topic, long Sequence, byte[] Payload)> Outgoing => _out.Reader;

    public long Messages { get; private set; }

    public string TopicOf(MarketRules market) => _topics[market.Index];

    private sealed class Book
    {
        public readonly SortedDictionary<long, long> Bids = new(Comparer<long>.Create((a, b) => b.CompareTo(a)));
        public readonly SortedDictionary<long, long> Asks = new();
        public readonly HashSet<(Side, long)> Touched = [];
        public readonly List<(long Price, long Quantity, Side Taker, long Command, int Leg, long Time)> Trades = [];
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
                book.Trades.Add((e.Price, e.Quantity, e.Side, e.Command, _leg++, time));
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
            _touched.Clear();
            _touched.AddRange(book.Touched);
            _touched.Sort();
            foreach (var (side, price) in _touched)
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
    private void Publish(int m, List<(Side Side, long Price, long Quantity)> changes, List<(long Price, long Quantity, Side Taker, long Command, int Leg, long Time)> trades)
    {
        var rules = _markets[m];
        var book = _books[m];
        int c = 0, t = 0;
        Span<byte> entry = stackalloc byte[256];
        while (c < changes.Count || t < trades.Count)
        {
            // Bids, asks and trades are written apart (each list comma-separated), then joined into the message.
            int bids = 0, asks = 0, tradeBytes = 0, bidCount = 0, askCount = 0, tradeCount = 0;
            var size = 200 + rules.Symbol.Length + Epoch.Length;
            while (c < changes.Count)
            {
                var (side, price, quantity) = changes[c];
                // ["price","quantity"]
                var n = 0;
                Put(entry, ref n, "[\""u8);
                PutAmount(entry, ref n, checked(price * rules.PriceFactor), rules.Quote.Scale);
                Put(entry, ref n, "\",\""u8);
                PutAmount(entry, ref n, quantity, rules.Base.Scale);
                Put(entry, ref n, "\"]"u8);
                if (size + n + 1 > MaxMessage && bidCount + askCount > 0)
                    break;
                size += n + 1;
                if (side == Side.Buy)
                    Append(_bids, ref bids, ref bidCount, entry[..n]);
                else
                    Append(_asks, ref asks, ref askCount, entry[..n]);
                if (quantity == 0)
                    book.Of(side).Remove(price);
                else
                    book.Of(side)[price] = quantity;
                c++;
            }
            while (t < trades.Count)
            {
                var trade = trades[t];
                // {"id":"COMMAND-N","price":"…","quantity":"…","side":"buy","time":T}
                var n = 0;
                Put(entry, ref n, "{\"id\":\""u8);
                PutNumber(entry, ref n, trade.Command);
                entry[n++] = (byte)'-';
                PutNumber(entry, ref n, trade.Leg);
                Put(entry, ref n, "\",\"price\":\""u8);
                PutAmount(entry, ref n, checked(trade.Price * rules.PriceFactor), rules.Quote.Scale);
                Put(entry, ref n, "\",\"quantity\":\""u8);
                PutAmount(entry, ref n, trade.Quantity, rules.Base.Scale);
                Put(entry, ref n, trade.Taker == Side.Buy ? "\",\"side\":\"buy\",\"time\":"u8 : "\",\"side\":\"sell\",\"time\":"u8);
                PutNumber(entry, ref n, trade.Time);
                entry[n++] = (byte)'}';
                if (size + n + 1 > MaxMessage && bidCount + askCount + tradeCount > 0)
                    break;
                size += n + 1;
                Append(_tradeText, ref tradeBytes, ref tradeCount, entry[..n]);
                t++;
            }
            book.Sequence++;
            var message = _message.AsSpan();
            var at = 0;
            Put(message, ref at, "{\"type\":\"diff\",\"market\":\""u8);
            Put(message, ref at, _symbolsUtf8[m]);
            Put(message, ref at, "\",\"epoch\":\""u8);
            Put(message, ref at, _epochUtf8);
            Put(message, ref at, "\",\"seq\":"u8);
            PutNumber(message, ref at, book.Sequence);
            Put(message, ref at, ",\"bids\":["u8);
            Put(message, ref at, _bids.AsSpan(0, bids));
            Put(message, ref at, "],\"asks\":["u8);
            Put(message, ref at, _asks.AsSpan(0, asks));
            Put(message, ref at, "],\"trades\":["u8);
            Put(message, ref at, _tradeText.AsSpan(0, tradeBytes));
            Put(message, ref at, "],\"checksum\":"u8);
            PutNumber(message, ref at, Checksum(m));
            message[at++] = (byte)'}';
            Send(rules, book.Sequence, message[..at].ToArray());
        }

        static void Append(byte[] list, ref int length, ref int count, ReadOnlySpan<byte> entry)
        {
            if (count++ > 0)
                list[length++] = (byte)',';
            entry.CopyTo(list.AsSpan(length));
            length += entry.Length;
        }
    }

    /// <summary>A heartbeat on every market's topic: the last sequence number, so a subscriber that lost the last diff knows.</summary>
    public void Heartbeat(long now)
    {
        for (var m = 0; m < _markets.Length; m++)
            Send(_markets[m], 0, $"{{\"type\":\"heartbeat\",\"market\":\"{_markets[m].Symbol}\",\"epoch\":\"{Epoch}\",\"seq\":{_books[m].Sequence},\"time\":{now}}}");
    }

    /// <summary>Holds a message until its batch is durable; <paramref name="sequence"/> is 0 for a heartbeat.</summary>
    private void Send(MarketRules rules, long sequence, string text) => Send(rules, sequence, Encoding.UTF8.GetBytes(text));

    private void Send(MarketRules rules, long sequence, byte[] payload)
    {
        Messages++;
        _pending.Add((TopicOf(rules), sequence, payload));
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
    public uint Checksum(int market)
    {
        // The same text as BookChecksum makes of the formatted levels, written as UTF-8 straight from the book.
        var rules = _markets[market];
        var book = _books[market];
        var text = _checksumText.AsSpan();
        var at = 0;
        Levels(book.Bids, text, ref at);
        text[at++] = (byte)'#';
        Levels(book.Asks, text, ref at);
        return Crc32.HashToUInt32(text[..at]);

        void Levels(SortedDictionary<long, long> levels, Span<byte> text, ref int at)
        {
            var count = 0;
            foreach (var (price, quantity) in levels)
            {
                if (count++ == ChecksumDepth)
                    break;
                if (count > 1)
                    text[at++] = (byte)'|';
                PutAmount(text, ref at, checked(price * rules.PriceFactor), rules.Quote.Scale);
                text[at++] = (byte)':';
                PutAmount(text, ref at, quantity, rules.Base.Scale);
            }
        }
    }

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
