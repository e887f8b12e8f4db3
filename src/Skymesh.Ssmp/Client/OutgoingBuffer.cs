using System.Buffers;

namespace Skymesh.Ssmp.Client;

/// <summary>
/// Bytes waiting to be sent on one connection. Writers fill it under <see cref="Sync"/> (it is an
/// <see cref="IBufferWriter{T}"/>, so the codec writes straight into it); one flusher at a time swaps it out
/// and sends everything queued in a single write, so many small requests share one syscall.
/// </summary>
internal sealed class OutgoingBuffer : IBufferWriter<byte>
{
    private const int InitialSize = 4096;
    private byte[] _buffer = [];
    private byte[]? _spare;
    private int _length;

    public object Sync { get; } = new();

    /// <summary>Bytes waiting, not counting a batch being sent.</summary>
    public int Length => _length;

    public void Advance(int count) => _length += count;

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsMemory(_length);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsSpan(_length);
    }

    /// <summary>Takes everything queued (caller holds <see cref="Sync"/>); give the array back with <see cref="Recycle"/>.</summary>
    public ArraySegment<byte> Take()
    {
        var batch = new ArraySegment<byte>(_buffer, 0, _length);
        _buffer = _spare ?? [];
        _spare = null;
        _length = 0;
        return batch;
    }

    /// <summary>Returns a sent batch's array (caller holds <see cref="Sync"/>).</summary>
    public void Recycle(byte[] array)
    {
        if (array.Length == 0)
            return;
        if (_spare is null && array.Length <= 256 * 1024)
            _spare = array;
        else
            ArrayPool<byte>.Shared.Return(array);
    }

    /// <summary>Drops what is queued and gives all arrays back (caller holds <see cref="Sync"/>).</summary>
    public void Clear()
    {
        _length = 0;
        if (_buffer.Length > 0)
            ArrayPool<byte>.Shared.Return(_buffer);
        if (_spare is not null)
            ArrayPool<byte>.Shared.Return(_spare);
        _buffer = [];
        _spare = null;
    }

    private void Ensure(int sizeHint)
    {
        sizeHint = Math.Max(sizeHint, 1);
        if (_buffer.Length - _length >= sizeHint)
            return;
        var size = Math.Max(InitialSize, _buffer.Length * 2);
        while (size - _length < sizeHint)
            size *= 2;
        var bigger = ArrayPool<byte>.Shared.Rent(size);
        _buffer.AsSpan(0, _length).CopyTo(bigger);
        if (_buffer.Length > 0)
            ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = bigger;
    }
}
