using System.Globalization;
using System.Text.Json;
using Skymesh.Exchange.Service;
using Skymesh.Identity;

namespace Skymesh.Exchange.Client;

/// <summary>
/// A market's book as the client keeps it from the market-data topic (docs/exchange-api.md, "Keeping a book"): diffs
/// that arrive before the snapshot are held, those the snapshot already covers dropped, and each one applied checked —
/// its sequence number must be the next, its checksum the book's. A gap (also one a heartbeat reveals), a checksum that
/// does not match or a new epoch starts a resynchronisation: a new snapshot, then the diffs after it.
/// </summary>
public sealed class LocalBook
{
    private readonly ExchangeClient _client;
    private readonly Lock _lock = new();
    private readonly SortedDictionary<decimal, (string Price, string Quantity)> _bids = new(Comparer<decimal>.Create((a, b) => b.CompareTo(a)));
    private readonly SortedDictionary<decimal, (string Price, string Quantity)> _asks = new();
    private readonly List<JsonElement> _pending = [];
    private readonly AsyncSignal _changed = new();
    private bool _synced;
    private bool _resyncing;
    private string? _epoch;
    private long _sequence;

    internal LocalBook(ExchangeClient client, string market, string topic)
    {
        _client = client;
        Market = market;
        Topic = topic;
    }

    public string Market { get; }

    public string Topic { get; }

    /// <summary>The last sequence number applied.</summary>
    public long Sequence
    {
        get
        {
            lock (_lock)
                return _sequence;
        }
    }

    /// <summary>Snapshots taken: the first, and one per gap or mismatch.</summary>
    public int Resyncs { get; private set; }

    public int Gaps { get; private set; }

    public int ChecksumFailures { get; private set; }

    /// <summary>Drops incoming messages for which this returns true (to try the recovery: a lossy link).</summary>
    public Func<JsonElement, bool>? DropFilter { get; set; }

    /// <summary>The bids, best first, as (price, quantity) decimal strings.</summary>
    public IReadOnlyList<BookLevel> Bids
    {
        get
        {
            lock (_lock)
                return [.. _bids.Values.Select(l => new BookLevel(l.Price, l.Quantity))];
        }
    }

    public IReadOnlyList<BookLevel> Asks
    {
        get
        {
            lock (_lock)
                return [.. _asks.Values.Select(l => new BookLevel(l.Price, l.Quantity))];
        }
    }

    /// <summary>Waits until something changed (a diff applied or a resync done) since the last wait.</summary>
    public Task WaitChangedAsync(CancellationToken cancellationToken = default) => _changed.WaitAsync(cancellationToken);

    /// <summary>Waits until the book has applied <paramref name="sequence"/> (under the current epoch).</summary>
    public async Task WaitForSequenceAsync(long sequence, CancellationToken cancellationToken = default)
    {
        while (Sequence < sequence)
            await WaitChangedAsync(cancellationToken);
    }

    internal void OnMessage(ReadOnlyMemory<byte> payload)
    {
        JsonElement message;
        try
        {
            using var document = JsonDocument.Parse(payload);
            message = document.RootElement.Clone();
        }
        catch (JsonException)
        {
            return;
        }
        if (DropFilter?.Invoke(message) == true)
            return;
        var resync = false;
        lock (_lock)
        {
            if (!_synced)
            {
                _pending.Add(message);
                return;
            }
            resync = !Apply(message);
        }
        if (resync)
            _ = ResyncSafeAsync();
        else
            _changed.Release();
    }

    /// <summary>Applies one message to a synced book; false when the book must be resynchronised.</summary>
    private bool Apply(JsonElement message)
    {
        var type = message.GetProperty("type").GetString();
        var epoch = message.GetProperty("epoch").GetString();
        var seq = message.GetProperty("seq").GetInt64();
        if (epoch != _epoch)
            return Lost();
        if (type == "heartbeat")
            return seq <= _sequence || Lost();
        if (type != "diff")
            return true;
        if (seq <= _sequence)
            return true;
        if (seq != _sequence + 1)
            return Lost();
        ApplyLevels(_bids, message.GetProperty("bids"));
        ApplyLevels(_asks, message.GetProperty("asks"));
        _sequence = seq;
        if (MarketData.BookChecksum(_bids.Values.Select(l => new BookLevel(l.Price, l.Quantity)), _asks.Values.Select(l => new BookLevel(l.Price, l.Quantity)))
            != message.GetProperty("checksum").GetUInt32())
        {
            ChecksumFailures++;
            _synced = false;
            return false;
        }
        return true;
    }

    private bool Lost()
    {
        Gaps++;
        _synced = false;
        return false;
    }

    private static void ApplyLevels(SortedDictionary<decimal, (string, string)> side, JsonElement levels)
    {
        foreach (var level in levels.EnumerateArray())
        {
            var price = level[0].GetString()!;
            var quantity = level[1].GetString()!;
            var key = decimal.Parse(price, CultureInfo.InvariantCulture);
            if (decimal.Parse(quantity, CultureInfo.InvariantCulture) == 0)
                side.Remove(key);
            else
                side[key] = (price, quantity);
        }
    }

    private async Task ResyncSafeAsync()
    {
        try
        {
            await ResyncAsync(CancellationToken.None);
        }
        catch (Exception e) when (e is ExchangeApiException or ObjectDisposedException or InvalidOperationException or Ssmp.Client.SsmpException)
        {
            lock (_lock)
                _resyncing = false;
        }
    }

    /// <summary>Takes a snapshot and applies the diffs after it; the book is synced again when it returns.</summary>
    internal async Task ResyncAsync(CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (_resyncing)
                return;
            _resyncing = true;
            _synced = false;
        }
        try
        {
            var snapshot = await _client.SnapshotAsync(Market, cancellationToken);
            var resyncAgain = false;
            lock (_lock)
            {
                _bids.Clear();
                _asks.Clear();
                ApplyLevels(_bids, snapshot.GetProperty("bids"));
                ApplyLevels(_asks, snapshot.GetProperty("asks"));
                _epoch = snapshot.GetProperty("epoch").GetString();
                _sequence = snapshot.GetProperty("seq").GetInt64();
                _synced = true;
                Resyncs++;
                var held = _pending.ToList();
                _pending.Clear();
                foreach (var message in held)
                {
                    if (message.GetProperty("epoch").GetString() == _epoch && message.GetProperty("seq").GetInt64() <= _sequence)
                        continue;
                    if (!Apply(message))
                    {
                        resyncAgain = true;
                        break;
                    }
                }
                _resyncing = false;
            }
            _changed.Release();
            if (resyncAgain)
                await ResyncAsync(cancellationToken);
        }
        catch
        {
            lock (_lock)
                _resyncing = false;
            throw;
        }
    }
}
