namespace Skymesh.Exchange.Matching;

/// <summary>
/// The client order ids an engine remembers — each (owner, id) with its order — the newest <c>capacity</c> of them,
/// the oldest forgotten first. Nothing here is an object per id: the ids' characters lie in one ring of text and the
/// entries in parallel arrays in the order they came, found through an open-addressing index. So a million ids cost the
/// garbage collector a few arrays, not a million strings that each outlive two collections on their way to the oldest
/// generation (the engine remembers the id of every order it accepts, a few hundred thousand a second).
/// </summary>
internal sealed class ClientOrderIds(int capacity)
{
    private int[] _owners = new int[16];
    private long[] _orders = new long[16];
    private int[] _hashes = new int[16];
    private long[] _textAt = new long[16];
    private byte[] _textLength = new byte[16];

    // Index + 1 of the entry in each bucket (0: empty); linear probing, at most half full.
    private int[] _buckets = new int[32];
    private int _head;
    private int _count;

    // The ids' characters at monotonic positions (modulo the ring's length): oldest at _textStart, newest ends at _textEnd.
    private char[] _text = new char[1024];
    private long _textStart;
    private long _textEnd;

    public int Count => _count;

    public bool TryGet(int owner, ReadOnlySpan<char> id, out long orderId)
    {
        var hash = Hash(owner, id);
        var mask = _buckets.Length - 1;
        for (var i = hash & mask; _buckets[i] != 0; i = (i + 1) & mask)
        {
            var e = _buckets[i] - 1;
            if (_hashes[e] == hash && _owners[e] == owner && Text(e).SequenceEqual(id))
            {
                orderId = _orders[e];
                return true;
            }
        }
        orderId = 0;
        return false;
    }

    /// <summary>Remembers an id not remembered now (the caller checked), forgetting the oldest when full.</summary>
    public void Add(int owner, ReadOnlySpan<char> id, long orderId)
    {
        if (id.Length > byte.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(id), id.Length, "A client order id is at most 255 characters here.");
        if (_count >= capacity)
            RemoveOldest();
        if (_count == _owners.Length)
            GrowEntries();
        var e = (_head + _count) % _owners.Length;
        var hash = Hash(owner, id);
        _owners[e] = owner;
        _orders[e] = orderId;
        _hashes[e] = hash;
        _textLength[e] = (byte)id.Length;
        _textAt[e] = PlaceText(id);
        _count++;
        var mask = _buckets.Length - 1;
        var i = hash & mask;
        while (_buckets[i] != 0)
            i = (i + 1) & mask;
        _buckets[i] = e + 1;
    }

    /// <summary>The <paramref name="k"/>-th remembered id, oldest first (0 is the next to be forgotten).</summary>
    public ReadOnlySpan<char> At(int k, out int owner, out long orderId)
    {
        var e = (_head + k) % _owners.Length;
        owner = _owners[e];
        orderId = _orders[e];
        return Text(e);
    }

    private static int Hash(int owner, ReadOnlySpan<char> id) => HashCode.Combine(owner, string.GetHashCode(id, StringComparison.Ordinal)) & int.MaxValue;

    private ReadOnlySpan<char> Text(int e) => _text.AsSpan((int)(_textAt[e] % _text.Length), _textLength[e]);

    /// <summary>Copies an id after the newest, in one piece (skipping the ring's tail when it does not fit there); grows the ring when full.</summary>
    private long PlaceText(ReadOnlySpan<char> id)
    {
        var at = Start(_textEnd, id.Length, _text.Length);
        if (at + id.Length - _textStart > _text.Length)
        {
            GrowText(id.Length);
            at = Start(_textEnd, id.Length, _text.Length);
        }
        id.CopyTo(_text.AsSpan((int)(at % _text.Length)));
        _textEnd = at + id.Length;
        if (_count == 0)
            _textStart = at;
        return at;

        static long Start(long end, int length, int ring) => end % ring + length > ring ? (end / ring + 1) * ring : end;
    }

    private void GrowText(int adding)
    {
        var live = _textEnd - _textStart;
        var length = _text.Length * 2;
        while (length < 2 * (live + adding) + 2 * byte.MaxValue)
            length *= 2;
        var text = new char[length];
        long at = 0;
        for (var k = 0; k < _count; k++)
        {
            var e = (_head + k) % _owners.Length;
            Text(e).CopyTo(text.AsSpan((int)at));
            _textAt[e] = at;
            at += _textLength[e];
        }
        _text = text;
        _textStart = 0;
        _textEnd = at;
    }

    private void GrowEntries()
    {
        var length = _owners.Length * 2;
        var owners = new int[length];
        var orders = new long[length];
        var hashes = new int[length];
        var textAt = new long[length];
        var textLength = new byte[length];
        for (var k = 0; k < _count; k++)
        {
            var e = (_head + k) % _owners.Length;
            owners[k] = _owners[e];
            orders[k] = _orders[e];
            hashes[k] = _hashes[e];
            textAt[k] = _textAt[e];
            textLength[k] = _textLength[e];
        }
        (_owners, _orders, _hashes, _textAt, _textLength) = (owners, orders, hashes, textAt, textLength);
        _head = 0;
        _buckets = new int[length * 2];
        var mask = _buckets.Length - 1;
        for (var e = 0; e < _count; e++)
        {
            var i = _hashes[e] & mask;
            while (_buckets[i] != 0)
                i = (i + 1) & mask;
            _buckets[i] = e + 1;
        }
    }

    private void RemoveOldest()
    {
        var e = _head;
        var mask = _buckets.Length - 1;
        var i = _hashes[e] & mask;
        while (_buckets[i] != e + 1)
            i = (i + 1) & mask;
        // Backward-shift deletion: every entry after the hole that may sit in it moves up, so no probe ever stops early.
        var j = i;
        while (true)
        {
            j = (j + 1) & mask;
            if (_buckets[j] == 0)
                break;
            var home = _hashes[_buckets[j] - 1] & mask;
            var between = i <= j ? home > i && home <= j : home > i || home <= j;
            if (!between)
            {
                _buckets[i] = _buckets[j];
                i = j;
            }
        }
        _buckets[i] = 0;
        _head = (_head + 1) % _owners.Length;
        _count--;
        _textStart = _count == 0 ? _textEnd : _textAt[_head];
    }
}
