namespace Skymesh.Mesh.Forwarding;

public enum LabelActionKind : byte
{
    /// <summary>Rewrite the label and queue the message on another link.</summary>
    Forward = 1,

    /// <summary>Hand the message to a path endpoint on this node.</summary>
    Deliver = 2,
}

/// <summary>What the forwarder does with a message that arrives on a link with a label.</summary>
/// <param name="Unbilled">For a forward: the next hop delivers (it is the path's end), so it is not paid for forwarding.</param>
public readonly record struct LabelAction(LabelActionKind Kind, int OutLink, uint OutLabel, int Endpoint, bool Unbilled = false)
{
    /// <param name="billable">False when the next hop is the path's end: settlement pays only for forwarding.</param>
    public static LabelAction Forward(int outLink, uint outLabel, bool billable = true) => new(LabelActionKind.Forward, outLink, outLabel, 0, !billable);

    public static LabelAction Deliver(int endpoint) => new(LabelActionKind.Deliver, 0, 0, endpoint);

    public override string ToString() => Kind == LabelActionKind.Forward ? $"forward to link {OutLink} label {OutLabel}" : $"deliver to endpoint {Endpoint}";
}

/// <summary>One installed entry, as the local API lists it.</summary>
public sealed record LabelEntryInfo(int InLink, uint InLabel, LabelAction Action, TimeSpan IdleFor, TimeSpan Lifetime);

/// <summary>
/// The forwarder's table: <c>(incoming link, label) → action</c>. Labels are chosen by the node that receives
/// on them — this one — as small numbers, so each link's entries sit in an array indexed by label and a
/// lookup is one bounds check and one load. The control agent is the only writer (under a lock); link
/// receive loops read without locking. An entry not used or refreshed within its lifetime expires.
/// </summary>
public sealed class LabelTable
{
    /// <summary>
    /// The label of a link's link-local channel (docs/control-plane.md, "Control through the mesh"): both ends know it
    /// without asking anyone, so two neighbours can talk before either is on the control bus. Never reserved for a path.
    /// </summary>
    public const uint LinkChannelLabel = 1;

    /// <summary>The first label <see cref="Reserve"/> hands out.</summary>
    public const uint FirstPathLabel = 2;

    private readonly TimeProvider _time;
    private readonly TimeSpan _defaultLifetime;
    private readonly int _maxLabelsPerLink;
    private readonly object _writeLock = new();
    private volatile Entry?[][] _links = [];
    private long _unknownLabel;
    private long _expired;

    public LabelTable(TimeProvider? time = null, TimeSpan? defaultLifetime = null, int maxLabelsPerLink = 1 << 20)
    {
        _time = time ?? TimeProvider.System;
        _defaultLifetime = defaultLifetime ?? TimeSpan.FromSeconds(60);
        if (_defaultLifetime <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(defaultLifetime), _defaultLifetime, "Must be positive.");
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLabelsPerLink, 2);
        _maxLabelsPerLink = maxLabelsPerLink;
    }

    /// <summary>Lookups of labels nobody installed (or that expired): such messages are dropped.</summary>
    public long UnknownLabels => Interlocked.Read(ref _unknownLabel);

    public long Expired => Interlocked.Read(ref _expired);

    /// <summary>
    /// Reserves a free label on <paramref name="inLink"/> for a path being set up; it does nothing until
    /// <see cref="Install"/> gives it an action, and expires like an entry if it never gets one.
    /// </summary>
    public uint Reserve(int inLink, TimeSpan? lifetime = null)
    {
        lock (_writeLock)
        {
            var entries = EntriesFor(inLink, grow: true)!;
            // Label 0 is the link's own and label 1 its link-local channel; search from 2 for a free slot, growing the array when full.
            for (var label = (int)FirstPathLabel; label < entries.Length; label++)
            {
                if (entries[label] is null)
                {
                    entries[label] = new Entry(null, lifetime ?? _defaultLifetime, _time.GetTimestamp());
                    return (uint)label;
                }
            }
            var next = Math.Max(entries.Length, (int)FirstPathLabel);
            if (next >= _maxLabelsPerLink)
                throw new InvalidOperationException($"Link {inLink} has all {_maxLabelsPerLink - 1} labels in use.");
            entries = Grow(inLink, next + 1);
            entries[next] = new Entry(null, lifetime ?? _defaultLifetime, _time.GetTimestamp());
            return (uint)next;
        }
    }

    /// <summary>Gives a label an action (a reserved one, or any free one the caller names).</summary>
    public void Install(int inLink, uint label, LabelAction action, TimeSpan? lifetime = null)
    {
        if (label == 0)
            throw new ArgumentOutOfRangeException(nameof(label), "Label 0 is the link's own and carries control messages.");
        if (label >= _maxLabelsPerLink)
            throw new ArgumentOutOfRangeException(nameof(label), label, $"Labels on a link are below {_maxLabelsPerLink}.");
        if (action.Kind is not (LabelActionKind.Forward or LabelActionKind.Deliver))
            throw new ArgumentException("Unknown action.", nameof(action));
        if (action.Kind == LabelActionKind.Forward && action.OutLabel == 0)
            throw new ArgumentException("A path cannot be forwarded onto label 0.", nameof(action));
        lock (_writeLock)
        {
            var entries = EntriesFor(inLink, grow: true)!;
            if (label >= entries.Length)
                entries = Grow(inLink, (int)label + 1);
            entries[label] = new Entry(action, lifetime ?? _defaultLifetime, _time.GetTimestamp());
        }
    }

    public bool Remove(int inLink, uint label)
    {
        lock (_writeLock)
        {
            var entries = EntriesFor(inLink, grow: false);
            if (entries is null || label >= entries.Length || entries[label] is null)
                return false;
            entries[label] = null;
            return true;
        }
    }

    /// <summary>
    /// The hot path: the action for a message that came in on <paramref name="inLink"/> with <paramref name="label"/>.
    /// <paramref name="now"/> is one timestamp per frame (<see cref="TimeProvider.GetTimestamp"/>); using an entry refreshes it.
    /// </summary>
    public bool TryLookup(int inLink, uint label, long now, out LabelAction action)
    {
        var links = _links;
        if ((uint)inLink < (uint)links.Length)
        {
            var entries = links[inLink];
            if (label < (uint)entries.Length && entries[label] is { Action: { } found } entry)
            {
                entry.LastUsed = now;
                action = found;
                return true;
            }
        }
        Interlocked.Increment(ref _unknownLabel);
        action = default;
        return false;
    }

    /// <summary>Keeps an entry alive without traffic (a path keepalive).</summary>
    public bool Refresh(int inLink, uint label)
    {
        var entries = EntriesFor(inLink, grow: false);
        if (entries is null || label >= entries.Length || entries[label] is not { } entry)
            return false;
        entry.LastUsed = _time.GetTimestamp();
        return true;
    }

    /// <summary>Removes entries idle past their lifetime and returns them, so the owner can report the paths that ended.</summary>
    public IReadOnlyList<LabelEntryInfo> Sweep()
    {
        var now = _time.GetTimestamp();
        List<LabelEntryInfo>? removed = null;
        lock (_writeLock)
        {
            var links = _links;
            for (var link = 0; link < links.Length; link++)
            {
                var entries = links[link];
                for (var label = 1; label < entries.Length; label++)
                {
                    if (entries[label] is not { } entry)
                        continue;
                    var idle = _time.GetElapsedTime(entry.LastUsed, now);
                    if (idle < entry.Lifetime)
                        continue;
                    entries[label] = null;
                    Interlocked.Increment(ref _expired);
                    if (entry.Action is { } action)
                        (removed ??= []).Add(new LabelEntryInfo(link, (uint)label, action, idle, entry.Lifetime));
                }
            }
        }
        return removed ?? (IReadOnlyList<LabelEntryInfo>)[];
    }

    /// <summary>Removes every entry that arrives on or leaves by <paramref name="link"/> (the link went down).</summary>
    public IReadOnlyList<LabelEntryInfo> RemoveLink(int link)
    {
        var removed = new List<LabelEntryInfo>();
        var now = _time.GetTimestamp();
        lock (_writeLock)
        {
            var links = _links;
            for (var inLink = 0; inLink < links.Length; inLink++)
            {
                var entries = links[inLink];
                for (var label = 1; label < entries.Length; label++)
                {
                    if (entries[label] is not { } entry)
                        continue;
                    var leaves = entry.Action is { Kind: LabelActionKind.Forward } a && a.OutLink == link;
                    if (inLink != link && !leaves)
                        continue;
                    entries[label] = null;
                    if (entry.Action is { } action)
                        removed.Add(new LabelEntryInfo(inLink, (uint)label, action, _time.GetElapsedTime(entry.LastUsed, now), entry.Lifetime));
                }
            }
        }
        return removed;
    }

    /// <summary>Every installed entry (reserved labels without an action are not listed).</summary>
    public IReadOnlyList<LabelEntryInfo> List()
    {
        var now = _time.GetTimestamp();
        return [.. Entries().Where(e => e.Entry.Action is not null)
            .Select(e => new LabelEntryInfo(e.Link, e.Label, e.Entry.Action!.Value, _time.GetElapsedTime(e.Entry.LastUsed, now), e.Entry.Lifetime))];
    }

    /// <summary>Labels reserved for a path being set up that have no action yet, with how long ago each was reserved.</summary>
    public IReadOnlyList<(int InLink, uint InLabel, TimeSpan Age, TimeSpan Lifetime)> Reserved()
    {
        var now = _time.GetTimestamp();
        return [.. Entries().Where(e => e.Entry.Action is null).Select(e => (e.Link, e.Label, _time.GetElapsedTime(e.Entry.LastUsed, now), e.Entry.Lifetime))];
    }

    /// <summary>Every occupied slot of every link (read without the lock, as the forwarder reads).</summary>
    private IEnumerable<(int Link, uint Label, Entry Entry)> Entries()
    {
        var links = _links;
        for (var link = 0; link < links.Length; link++)
        {
            var entries = links[link];
            for (var label = 1; label < entries.Length; label++)
            {
                if (entries[label] is { } entry)
                    yield return (link, (uint)label, entry);
            }
        }
    }

    private Entry?[]? EntriesFor(int link, bool grow)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(link);
        var links = _links;
        if (link < links.Length)
            return links[link];
        if (!grow)
            return null;
        var more = new Entry?[link + 1][];
        links.CopyTo(more, 0);
        for (var i = links.Length; i < more.Length; i++)
            more[i] = new Entry?[Math.Min(16, _maxLabelsPerLink)];
        _links = more;
        return more[link];
    }

    /// <summary>Replaces a link's array with a larger copy (readers keep using the old one until they reload it).</summary>
    private Entry?[] Grow(int link, int atLeast)
    {
        var old = _links[link];
        var size = Math.Min(_maxLabelsPerLink, Math.Max(atLeast, old.Length * 2));
        var bigger = new Entry?[size];
        old.CopyTo(bigger, 0);
        var links = (Entry?[][])_links.Clone();
        links[link] = bigger;
        _links = links;
        return bigger;
    }

    private sealed class Entry(LabelAction? action, TimeSpan lifetime, long created)
    {
        public LabelAction? Action { get; } = action;

        public TimeSpan Lifetime { get; } = lifetime;

        public long LastUsed { get; set; } = created;
    }
}
