using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Skymesh.Ssmp.Rpc;

/// <summary>
/// Remembers which requests a peer has started or answered, keyed by (caller, request id), so that a retried
/// request neither runs its handler twice nor goes unanswered. Bounded in count, in bytes and in age.
/// </summary>
/// <remarks>
/// At a few hundred thousand answers a second, one object per answer kept for seconds is what the GC promotes to
/// gen2 and then has to collect there. So nothing here is an object per answer: callers are interned to numbers, the
/// index holds plain structs, and the answers' bytes are copied into one ring buffer (grown by doubling up to
/// <c>maxBytes</c>), oldest first out — the GC sees three arrays whatever the traffic.
/// </remarks>
internal sealed class ResponseCache
{
    public enum State
    {
        New,
        InProgress,
        Answered,
    }

    private const long InProgress = -1;
    private const long Large = -2;

    private readonly int _capacity;
    private readonly TimeSpan _lifetime;
    private readonly TimeProvider _time;
    private readonly Lock _sync = new();
    private readonly Dictionary<Key, Slot> _entries = [];
    private readonly Queue<Record> _order = new();
    private readonly Dictionary<string, int> _callerIds = new(StringComparer.Ordinal);
    private readonly List<string?> _callerNames = [];
    private readonly List<int> _callerRefs = [];
    private readonly Stack<int> _freeCallers = new();
    // Answers too big for a chunk (more than a quarter of one); rare: listings of a thousand orders and the like.
    private readonly Dictionary<Key, byte[]> _large = [];
    private readonly int _chunkSize;
    private readonly byte[]?[] _chunks;
    private readonly int _largeAbove;
    private long _head;

    public ResponseCache(int capacity, long maxBytes, TimeSpan lifetime, TimeProvider time)
    {
        _capacity = capacity;
        // Chunks of up to 4 MiB (allocated as needed, reused oldest first); answers above a quarter of one kept apart.
        _chunkSize = (int)Math.Clamp(maxBytes / 4, 4096, 4 << 20);
        _chunks = new byte[]?[Math.Max(2, (int)Math.Min(maxBytes / _chunkSize, 1 << 20))];
        _largeAbove = _chunkSize / 4;
        _lifetime = lifetime;
        _time = time;
    }

    private readonly record struct Key(int Caller, ulong Id);

    private readonly record struct Slot(long Position, int Length);

    private readonly record struct Record(Key Key, long Added, long Position, int Length);

    /// <summary>Answers remembered now (for tests and metrics).</summary>
    public int Count
    {
        get
        {
            lock (_sync)
                return _order.Count;
        }
    }

    /// <summary>Records that a request is being handled, unless it already is or was (then <paramref name="response"/> is a copy of the answer).</summary>
    public State Begin(string from, ulong id, out byte[]? response)
    {
        response = null;
        if (_capacity == 0)
            return State.New;
        var now = _time.GetTimestamp();
        lock (_sync)
        {
            Trim(now);
            var caller = Intern(from);
            ref var slot = ref CollectionsMarshal.GetValueRefOrAddDefault(_entries, new Key(caller, id), out var exists);
            if (exists)
            {
                Release(caller);
                if (slot.Position == InProgress)
                    return State.InProgress;
                response = slot.Position == Large ? _large[new Key(caller, id)] : Read(slot);
                return State.Answered;
            }
            slot = new Slot(InProgress, 0);
            return State.New;
        }
    }

    /// <summary>Remembers the answer of a request begun with <see cref="Begin"/>.</summary>
    public void Complete(string from, ulong id, ReadOnlySpan<byte> response)
    {
        if (_capacity == 0)
            return;
        var now = _time.GetTimestamp();
        lock (_sync)
        {
            if (!_callerIds.TryGetValue(from, out var caller))
                return;
            var key = new Key(caller, id);
            ref var slot = ref CollectionsMarshal.GetValueRefOrNullRef(_entries, key);
            if (Unsafe.IsNullRef(ref slot) || slot.Position != InProgress)
                return;
            if (response.Length > _largeAbove)
            {
                _large[key] = response.ToArray();
                slot = new Slot(Large, response.Length);
            }
            else
            {
                slot = new Slot(Write(response), response.Length);
            }
            _order.Enqueue(new Record(key, now, slot.Position, response.Length));
            while (_order.Count > _capacity)
                Evict();
        }
    }

    /// <summary>Forgets a request begun but not answered (it was refused before its handler ran; a retry may run it).</summary>
    public void Forget(string from, ulong id)
    {
        lock (_sync)
        {
            if (_callerIds.TryGetValue(from, out var caller) && _entries.Remove(new Key(caller, id)))
                Release(caller);
        }
    }

    private void Trim(long now)
    {
        while (_order.TryPeek(out var oldest) && _time.GetElapsedTime(oldest.Added, now) >= _lifetime)
            Evict();
    }

    private void Evict()
    {
        var record = _order.Dequeue();
        if (record.Position == Large)
            _large.Remove(record.Key);
        _entries.Remove(record.Key);
        Release(record.Key.Caller);
    }

    private int Intern(string from)
    {
        ref var id = ref CollectionsMarshal.GetValueRefOrAddDefault(_callerIds, from, out var exists);
        if (!exists)
        {
            if (_freeCallers.TryPop(out var free))
            {
                id = free;
                _callerNames[free] = from;
            }
            else
            {
                id = _callerNames.Count;
                _callerNames.Add(from);
                _callerRefs.Add(0);
            }
        }
        _callerRefs[id]++;
        return id;
    }

    private void Release(int caller)
    {
        if (--CollectionsMarshal.AsSpan(_callerRefs)[caller] > 0)
            return;
        _callerIds.Remove(_callerNames[caller]!);
        _callerNames[caller] = null;
        _freeCallers.Push(caller);
    }

    /// <summary>True when an answer kept in the chunks starts below <paramref name="position"/>.</summary>
    private bool KeptBelow(long position)
    {
        foreach (var record in _order)
        {
            if (record.Position >= 0)
                return record.Position < position;
        }
        return false;
    }

    private byte[] Read(Slot slot) =>
        _chunks[(int)(slot.Position / _chunkSize % _chunks.Length)]!.AsSpan((int)(slot.Position % _chunkSize), slot.Length).ToArray();

    /// <summary>
    /// Copies an answer after the newest, in one piece within one chunk. When it does not fit in the newest chunk, the next
    /// chunk is taken: a new one while there are fewer than the bytes bound allows, else the oldest, once the answers in
    /// it are forgotten.
    /// </summary>
    private long Write(ReadOnlySpan<byte> bytes)
    {
        var offset = _head % _chunkSize;
        if (offset == 0 || offset + bytes.Length > _chunkSize)
        {
            var sequence = (_head + _chunkSize - 1) / _chunkSize;
            // The chunk that sequence reuses held sequence - chunks.Length: whatever is still kept there goes first.
            var reused = (sequence - _chunks.Length + 1) * _chunkSize;
            while (_order.TryPeek(out var oldest) && (oldest.Position >= 0 ? oldest.Position < reused : KeptBelow(reused)))
                Evict();
            // Not zeroed: only bytes written here are ever read back, and zeroing 4 MiB is a pass over memory the kernel
            // has just zeroed for the new pages anyway.
            _chunks[(int)(sequence % _chunks.Length)] ??= GC.AllocateUninitializedArray<byte>(_chunkSize);
            _head = sequence * _chunkSize;
            offset = 0;
        }
        bytes.CopyTo(_chunks[(int)(_head / _chunkSize % _chunks.Length)]!.AsSpan((int)offset));
        var at = _head;
        _head += bytes.Length;
        return at;
    }
}
