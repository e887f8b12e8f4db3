namespace Skymesh.Mesh.Paths;

/// <summary>
/// Disjoint, non-adjacent byte ranges <c>[Start, End)</c> in ascending order: what a receiver holds above its
/// cumulative point. Bounded: a segment that would need more ranges than the limit is refused, and the
/// sender sends it again later.
/// </summary>
internal sealed class RangeSet(int maxRanges)
{
    private readonly List<SackBlock> _ranges = [];

    public int Count => _ranges.Count;

    public SackBlock this[int index] => _ranges[index];

    public long Highest => _ranges.Count == 0 ? 0 : _ranges[^1].End;

    /// <summary>Adds <c>[start, end)</c>; returns the bytes it added, or -1 when it would exceed the range limit.</summary>
    public long Add(long start, long end)
    {
        if (end <= start)
            return 0;
        // First range that ends at or after start: it may touch or overlap the new one.
        var index = FirstEndingAtOrAfter(start);
        var last = index;
        long covered = 0;
        while (last < _ranges.Count && _ranges[last].Start <= end)
        {
            covered += Math.Min(end, _ranges[last].End) - Math.Max(start, _ranges[last].Start);
            last++;
        }
        if (last == index)
        {
            if (_ranges.Count >= maxRanges)
                return -1;
            _ranges.Insert(index, new SackBlock(start, end));
            return end - start;
        }
        var merged = new SackBlock(Math.Min(start, _ranges[index].Start), Math.Max(end, _ranges[last - 1].End));
        _ranges[index] = merged;
        if (last - index > 1)
            _ranges.RemoveRange(index + 1, last - index - 1);
        return Math.Max(0, end - start - covered);
    }

    /// <summary>Removes the first range when it starts at or below <paramref name="point"/>; returns its end, or <paramref name="point"/>.</summary>
    public long TakeFrom(long point)
    {
        if (_ranges.Count > 0 && _ranges[0].Start <= point)
        {
            var end = Math.Max(point, _ranges[0].End);
            _ranges.RemoveAt(0);
            return end;
        }
        return point;
    }

    /// <summary>Index of the range holding <paramref name="offset"/>, or -1.</summary>
    public int IndexOf(long offset)
    {
        var index = FirstEndingAtOrAfter(offset + 1);
        return index < _ranges.Count && _ranges[index].Start <= offset ? index : -1;
    }

    public bool Contains(long start, long end)
    {
        var index = IndexOf(start);
        return index >= 0 && _ranges[index].End >= end;
    }

    public void Clear() => _ranges.Clear();

    private int FirstEndingAtOrAfter(long offset)
    {
        int lo = 0, hi = _ranges.Count;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_ranges[mid].End < offset)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }
}
