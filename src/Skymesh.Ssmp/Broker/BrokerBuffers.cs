using System.Buffers;

namespace Skymesh.Ssmp.Broker;

/// <summary>
/// Where a broker's connection buffers come from, and how their memory goes back to the system.
/// <para>
/// Small buffers (up to <see cref="PooledLimit"/>) come from the shared pool, which keeps a bounded number of
/// each size. Larger ones — a queue growing towards a reader of pipelining senders, a big receive buffer — come
/// from the broker's own pool: the shared pool would keep them, per thread and per core, until a full collection
/// that an idle broker never triggers (a burst of 979-byte UCASTs once left 670 MB resident), and allocating
/// each afresh costs a collection every few of them.
/// </para>
/// <para>
/// The broker's sweep calls <see cref="ReleaseIfQuiet"/>: once a burst has allocated at least
/// <see cref="BurstBytes"/> and then the process has allocated next to nothing for <see cref="QuietTime"/>, the
/// broker's pool of large buffers is dropped and one compacting collection gives the memory back to the
/// operating system.
/// </para>
/// </summary>
internal sealed class BrokerBuffers(TimeProvider time, bool releaseWhenQuiet, Func<long> allocatedBytes)
{
    /// <summary>Largest buffer taken from (and returned to) the shared pool.</summary>
    public const int PooledLimit = 64 * 1024;

    /// <summary>Bytes allocated since the last release that make a release worth its pause.</summary>
    public const long BurstBytes = 64L * 1024 * 1024;

    /// <summary>Allocation rate below which the process counts as quiet.</summary>
    public const long QuietBytesPerSecond = 1024 * 1024;

    /// <summary>How long the process must stay quiet before the release.</summary>
    public static readonly TimeSpan QuietTime = TimeSpan.FromSeconds(5);

    /// <summary>Largest buffer the broker's own pool keeps: a queue at the slow-consumer limit, rounded up.</summary>
    private const int LargePoolLimit = 64 * 1024 * 1024;

    private const int LargePerSize = 64;

    private ArrayPool<byte> _large = ArrayPool<byte>.Create(LargePoolLimit, LargePerSize);
    private long _largeBytes;
    private long _largeAllocations;
    private long _releases;
    private long _allocatedAtRelease = allocatedBytes();
    private long _allocatedAtLastSweep = allocatedBytes();
    private long _lastSweep = time.GetTimestamp();
    private long _quietSince = time.GetTimestamp();
    private bool _quiet;

    /// <summary>Bytes held right now in buffers larger than <see cref="PooledLimit"/>.</summary>
    public long LargeBytes => Interlocked.Read(ref _largeBytes);

    /// <summary>Buffers larger than <see cref="PooledLimit"/> handed out so far.</summary>
    public long LargeAllocations => Interlocked.Read(ref _largeAllocations);

    /// <summary>Collections run to give memory back after a burst.</summary>
    public long Releases => Interlocked.Read(ref _releases);

    /// <summary>A buffer of at least <paramref name="size"/> bytes.</summary>
    public byte[] Rent(int size)
    {
        if (size <= PooledLimit)
            return ArrayPool<byte>.Shared.Rent(size);
        var buffer = Volatile.Read(ref _large).Rent(size);
        Interlocked.Add(ref _largeBytes, buffer.Length);
        Interlocked.Increment(ref _largeAllocations);
        return buffer;
    }

    public void Return(byte[] buffer)
    {
        if (buffer.Length <= PooledLimit)
            ArrayPool<byte>.Shared.Return(buffer);
        else
        {
            Interlocked.Add(ref _largeBytes, -buffer.Length);
            // A buffer rented before a release goes to the new pool; one of a size no pool keeps is dropped.
            if (buffer.Length <= LargePoolLimit && System.Numerics.BitOperations.IsPow2(buffer.Length))
                Volatile.Read(ref _large).Return(buffer);
        }
    }

    /// <summary>Called from the broker's sweep; see the class summary. Returns true when it released.</summary>
    public bool ReleaseIfQuiet()
    {
        var now = time.GetTimestamp();
        var allocated = allocatedBytes();
        var seconds = Math.Max(0.001, time.GetElapsedTime(_lastSweep, now).TotalSeconds);
        var quietNow = allocated - _allocatedAtLastSweep < QuietBytesPerSecond * seconds && LargeBytes == 0;
        _allocatedAtLastSweep = allocated;
        _lastSweep = now;
        if (!quietNow)
        {
            _quiet = false;
            return false;
        }
        if (!_quiet)
        {
            _quiet = true;
            _quietSince = now;
        }
        if (!releaseWhenQuiet || allocated - _allocatedAtRelease < BurstBytes || time.GetElapsedTime(_quietSince, now) < QuietTime)
            return false;
        Volatile.Write(ref _large, ArrayPool<byte>.Create(LargePoolLimit, LargePerSize));
        // Compacts and returns the freed memory to the system; a pause of milliseconds, once per burst.
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        _allocatedAtRelease = allocatedBytes();
        _allocatedAtLastSweep = _allocatedAtRelease;
        Interlocked.Increment(ref _releases);
        return true;
    }
}
