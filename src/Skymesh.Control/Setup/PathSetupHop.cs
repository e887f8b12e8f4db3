using System.Buffers.Binary;
using Skymesh.Identity;

namespace Skymesh.Control.Setup;

/// <summary>What a hop's control agent needs of its node's forwarder to take part in path setup.</summary>
public interface IHopTable
{
    /// <summary>The id of the link that is up to <paramref name="neighbour"/>, or null.</summary>
    int? LinkTo(NodeAddress neighbour);

    /// <summary>Reserves a free label on a link; it expires after <paramref name="lifetime"/> unless installed.</summary>
    uint Reserve(int link, TimeSpan lifetime);

    /// <summary>Messages in on (<paramref name="inLink"/>, <paramref name="inLabel"/>) go out on (<paramref name="outLink"/>, <paramref name="outLabel"/>).</summary>
    /// <param name="billable">False when the next hop is the path's end (it delivers, so it is not paid for forwarding).</param>
    void InstallForward(int inLink, uint inLabel, int outLink, uint outLabel, bool billable);

    /// <summary>This node is the destination: a path end towards <paramref name="request"/>'s source.</summary>
    void InstallEnd(SetupRequest request, int link, uint inLabel, uint outLabel);

    void Remove(int link, uint label);

    /// <summary>What this node charges per MiB to forward onto <paramref name="outLink"/>.</summary>
    uint PriceOnto(int outLink);
}

/// <summary>A hop refused a setup step; <see cref="Status"/> is the RPC status it answers with.</summary>
public sealed class SetupRefusedException : Exception
{
    public const int Forbidden = 403;
    public const int UnknownPath = 404;
    public const int Conflict = 409;
    public const int Gone = 410;
    public const int TooMany = 429;

    public SetupRefusedException()
    {
    }

    public SetupRefusedException(string message)
        : base(message)
    {
    }

    public SetupRefusedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public SetupRefusedException(int status, string message)
        : base(message)
    {
        Status = status;
    }

    public int Status { get; } = 400;
}

/// <summary>A hop's answer to a reservation: the labels it reads the path on, from each side (0 where it has no such side).</summary>
public readonly record struct HopLabels(uint ForwardIn, uint BackIn)
{
    public byte[] ToBytes()
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, ForwardIn);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(4), BackIn);
        return bytes;
    }

    public static HopLabels Parse(ReadOnlySpan<byte> bytes) => bytes.Length == 8
        ? new HopLabels(BinaryPrimitives.ReadUInt32BigEndian(bytes), BinaryPrimitives.ReadUInt32BigEndian(bytes[4..]))
        : throw new FormatException("A reservation answer is 8 bytes.");
}

/// <summary>The source's commit to one hop: the labels its neighbours read the path on. <c>path id(16) | forward out(4) | back out(4)</c>.</summary>
public readonly record struct CommitMessage(Guid PathId, uint ForwardOut, uint BackOut)
{
    public byte[] ToBytes()
    {
        var bytes = new byte[24];
        PathId.TryWriteBytes(bytes, bigEndian: true, out _);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(16), ForwardOut);
        BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(20), BackOut);
        return bytes;
    }

    public static CommitMessage Parse(ReadOnlySpan<byte> bytes) => bytes.Length == 24
        ? new CommitMessage(new Guid(bytes[..16], bigEndian: true), BinaryPrimitives.ReadUInt32BigEndian(bytes[16..]), BinaryPrimitives.ReadUInt32BigEndian(bytes[20..]))
        : throw new FormatException("A commit is 24 bytes.");
}

/// <summary>
/// One node's side of path setup (docs/control-plane.md): it checks a source's signed request, reserves its
/// labels, installs its entries on commit, and releases them — every step idempotent by path id, and only
/// the path's source (as authenticated by the SSMP <c>key</c> login) may drive it.
/// </summary>
public sealed class PathSetupHop
{
    private readonly NodeAddress _self;
    private readonly IHopTable _table;
    private readonly TimeProvider _time;
    private readonly Dictionary<Guid, HopState> _paths = [];
    private readonly Lock _lock = new();
    private long _refused;

    public PathSetupHop(NodeAddress self, IHopTable table, TimeProvider? time = null)
    {
        _self = self;
        _table = table ?? throw new ArgumentNullException(nameof(table));
        _time = time ?? TimeProvider.System;
    }

    /// <summary>Paths (reserved or committed) one source may hold on this node.</summary>
    public int MaxPathsPerSource { get; init; } = 64;

    public TimeSpan ClockTolerance { get; init; } = TimeSpan.FromSeconds(30);

    public long Refused => Interlocked.Read(ref _refused);

    public int Paths
    {
        get
        {
            lock (_lock)
                return _paths.Count;
        }
    }

    private sealed class HopState(SetupRequest request, int index, int? prevLink, int? nextLink, HopLabels labels)
    {
        public SetupRequest Request { get; } = request;
        public int Index { get; } = index;
        public int? PrevLink { get; } = prevLink;
        public int? NextLink { get; } = nextLink;
        public HopLabels Labels { get; } = labels;
        public CommitMessage? Committed { get; set; }
    }

    /// <summary>Round one: check the request and reserve this hop's labels.</summary>
    /// <exception cref="SetupRefusedException">The request is not acceptable here; the message says why.</exception>
    public HopLabels Reserve(NodeAddress from, ReadOnlySpan<byte> requestBytes)
    {
        var now = _time.GetUtcNow();
        var error = SetupRequest.Check(requestBytes, now, ClockTolerance, out var request);
        if (error != SetupRequestError.None)
            throw Refuse(error == SetupRequestError.Expired ? SetupRefusedException.Gone : SetupRefusedException.Forbidden, $"setup request refused: {error}");
        if (from != request!.Source)
            throw Refuse(SetupRefusedException.Forbidden, "only the path's source may set it up");
        var index = IndexOf(request);
        lock (_lock)
        {
            if (_paths.TryGetValue(request.PathId, out var known))
            {
                if (known.Request.Bytes.AsSpan().SequenceEqual(request.Bytes))
                    return known.Labels;
                throw Refuse(SetupRefusedException.Conflict, "another request already uses this path id");
            }
            if (_paths.Values.Count(p => p.Request.Source == request.Source) >= MaxPathsPerSource)
                throw Refuse(SetupRefusedException.TooMany, $"the source already holds {MaxPathsPerSource} paths through this node");
            var prev = _table.LinkTo(request.Nodes[index - 1]) ?? throw Refuse(SetupRefusedException.Forbidden, $"no link to the previous hop {request.Nodes[index - 1]}");
            int? next = null;
            if (index < request.Hops)
            {
                next = _table.LinkTo(request.Nodes[index + 1]) ?? throw Refuse(SetupRefusedException.Forbidden, $"no link to the next hop {request.Nodes[index + 1]}");
                var price = _table.PriceOnto(next.Value);
                if (price > request.MaxPricePerHop)
                    throw Refuse(SetupRefusedException.Forbidden, $"this hop charges {price} per MiB, above the request's cap of {request.MaxPricePerHop}");
            }
            var lifetime = request.Expires - now;
            var labels = new HopLabels(_table.Reserve(prev, lifetime), next is { } n ? _table.Reserve(n, lifetime) : 0);
            _paths[request.PathId] = new HopState(request, index, prev, next, labels);
            return labels;
        }
    }

    /// <summary>Round two: install this hop's entries with the labels its neighbours reserved.</summary>
    public void Commit(NodeAddress from, CommitMessage commit)
    {
        lock (_lock)
        {
            if (!_paths.TryGetValue(commit.PathId, out var state))
                throw Refuse(SetupRefusedException.UnknownPath, "no reservation for this path (it expired or was released)");
            if (from != state.Request.Source)
                throw Refuse(SetupRefusedException.Forbidden, "only the path's source may commit it");
            if (state.Committed is { } done)
            {
                if (done == commit)
                    return;
                throw Refuse(SetupRefusedException.Conflict, "the path was committed with other labels");
            }
            if (commit.ForwardOut == 0 && state.NextLink is not null || commit.BackOut == 0)
                throw Refuse(400, "label 0 is no path's label");
            if (state.NextLink is { } next)
            {
                // The next hop forward is the destination when this is the last relay; the next hop back is the
                // source when this is the first: those deliver, and settlement pays only for forwarding.
                _table.InstallForward(state.PrevLink!.Value, state.Labels.ForwardIn, next, commit.ForwardOut, billable: state.Index + 1 < state.Request.Hops);
                _table.InstallForward(next, state.Labels.BackIn, state.PrevLink.Value, commit.BackOut, billable: state.Index > 1);
            }
            else
            {
                _table.InstallEnd(state.Request, state.PrevLink!.Value, state.Labels.ForwardIn, commit.BackOut);
            }
            state.Committed = commit;
        }
    }

    /// <summary>Releases a reservation or tears down a committed path; true if there was something to release.</summary>
    public bool Release(NodeAddress from, Guid pathId)
    {
        lock (_lock)
        {
            if (!_paths.TryGetValue(pathId, out var state))
                return false;
            if (from != state.Request.Source && from != _self)
                throw Refuse(SetupRefusedException.Forbidden, "only the path's source may release it");
            _paths.Remove(pathId);
            _table.Remove(state.PrevLink!.Value, state.Labels.ForwardIn);
            if (state.NextLink is { } next)
                _table.Remove(next, state.Labels.BackIn);
            return true;
        }
    }

    /// <summary>Paths that cross the link to <paramref name="neighbour"/> (to tell their sources when it goes down).</summary>
    /// <summary>
    /// Forgets a path's state here without touching the table: its entries went with a link that went down, and
    /// its end (when this node is the destination) stays, to be moved onto the path that repairs it.
    /// </summary>
    public bool Forget(Guid pathId)
    {
        lock (_lock)
            return _paths.Remove(pathId);
    }

    public IReadOnlyList<(Guid PathId, NodeAddress Source)> PathsThrough(int link)
    {
        lock (_lock)
            return [.. _paths.Values.Where(p => p.PrevLink == link || p.NextLink == link).Select(p => (p.Request.PathId, p.Request.Source))];
    }

    /// <summary>Forgets reservations never committed within their request's lifetime; returns how many.</summary>
    public int Sweep()
    {
        var now = _time.GetUtcNow();
        List<Guid> stale;
        lock (_lock)
            stale = [.. _paths.Where(p => p.Value.Committed is null && p.Value.Request.Expires <= now).Select(p => p.Key)];
        foreach (var id in stale)
            Release(_self, id);
        return stale.Count;
    }

    private int IndexOf(SetupRequest request)
    {
        for (var i = 1; i < request.Nodes.Count; i++)
        {
            if (request.Nodes[i] == _self)
                return i;
        }
        throw Refuse(SetupRefusedException.Forbidden, "this node is not on the requested path (or is its source)");
    }

    private SetupRefusedException Refuse(int status, string message)
    {
        Interlocked.Increment(ref _refused);
        return new SetupRefusedException(status, message);
    }
}
