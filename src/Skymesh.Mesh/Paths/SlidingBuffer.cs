using System.Buffers;
using System.Diagnostics;

namespace Skymesh.Mesh.Paths;

/// <summary>
/// Bytes addressed by 64-bit stream offsets inside a window <c>[Start, Start + Capacity)</c> that only slides
/// forward. Storage is pooled chunks, taken on first write. A chunk the window has passed is kept as a spare
/// for the next one — a busy stream passes whole windows of chunks at a time, far more than the shared pool
/// keeps, so handing them straight back would make it allocate them again — and <see cref="ReleaseSpares"/>
/// gives the spares back once the stream has gone quiet. Never more than capacity plus one chunk is held.
/// Not thread-safe: the owning stream's lock guards it.
/// </summary>
internal sealed class SlidingBuffer : IDisposable
{
    private const int MaxChunk = 32 * 1024;

    private readonly byte[]?[] _chunks;
    private readonly Stack<byte[]> _spares = new();
    private readonly int _chunkSize;

    public SlidingBuffer(int capacity, long start = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
        _chunkSize = Math.Min(MaxChunk, capacity);
        // A window of Capacity bytes that starts mid-chunk touches at most this many chunks.
        _chunks = new byte[]?[(capacity + _chunkSize - 1) / _chunkSize + 1];
        Start = start;
    }

    public int Capacity { get; }

    public long Start { get; private set; }

    public long End => Start + Capacity;

    /// <summary>Chunks currently held, spares included.</summary>
    public int ChunksHeld { get; private set; }

    /// <summary>Bytes of memory held, spares included.</summary>
    public long BytesHeld => (long)ChunksHeld * _chunkSize;

    /// <summary>Chunks held that the window does not use.</summary>
    public int Spares => _spares.Count;

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        Debug.Assert(offset >= Start && offset + data.Length <= End, "write outside the window");
        while (!data.IsEmpty)
        {
            var chunk = Chunk(offset, allocate: true)!;
            var at = (int)(offset % _chunkSize);
            var n = Math.Min(data.Length, _chunkSize - at);
            data[..n].CopyTo(chunk.AsSpan(at, n));
            data = data[n..];
            offset += n;
        }
    }

    public void Read(long offset, Span<byte> destination)
    {
        Debug.Assert(offset >= Start && offset + destination.Length <= End, "read outside the window");
        while (!destination.IsEmpty)
        {
            var chunk = Chunk(offset, allocate: false);
            Debug.Assert(chunk is not null, "read of bytes never written");
            var at = (int)(offset % _chunkSize);
            var n = Math.Min(destination.Length, _chunkSize - at);
            chunk.AsSpan(at, n).CopyTo(destination[..n]);
            destination = destination[n..];
            offset += n;
        }
    }

    /// <summary>Slides the window to start at <paramref name="start"/>, returning every chunk wholly below it.</summary>
    public void Advance(long start)
    {
        if (start <= Start)
            return;
        for (var index = Start / _chunkSize; index < start / _chunkSize; index++)
            Return(index);
        Start = start;
    }

    private byte[]? Chunk(long offset, bool allocate)
    {
        var slot = (int)(offset / _chunkSize % _chunks.Length);
        var chunk = _chunks[slot];
        if (chunk is null && allocate)
        {
            if (_spares.TryPop(out var spare))
            {
                chunk = _chunks[slot] = spare;
            }
            else
            {
                chunk = _chunks[slot] = ArrayPool<byte>.Shared.Rent(_chunkSize);
                ChunksHeld++;
            }
        }
        return chunk;
    }

    private void Return(long index)
    {
        var slot = (int)(index % _chunks.Length);
        if (_chunks[slot] is { } chunk)
        {
            _chunks[slot] = null;
            _spares.Push(chunk);
        }
    }

    /// <summary>Gives the spare chunks back to the shared pool.</summary>
    public void ReleaseSpares()
    {
        while (_spares.TryPop(out var spare))
        {
            ChunksHeld--;
            ArrayPool<byte>.Shared.Return(spare);
        }
    }

    public void Dispose()
    {
        ReleaseSpares();
        for (var slot = 0; slot < _chunks.Length; slot++)
        {
            if (_chunks[slot] is { } chunk)
            {
                _chunks[slot] = null;
                ArrayPool<byte>.Shared.Return(chunk);
            }
        }
        ChunksHeld = 0;
    }
}
