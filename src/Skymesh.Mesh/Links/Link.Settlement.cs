namespace Skymesh.Mesh.Links;

/// <summary>
/// What settlement needs of a link (docs/control-plane.md, "Settlement"): the bytes this node forwarded for the
/// neighbour (it owes them), the bytes this node handed the neighbour to forward (this node owes them), and the
/// credit gate — how much more this node forwards for the neighbour while it owes too much.
/// </summary>
public sealed partial class Link
{
    private long _forwardedForPeer;
    private long _billableSent;
    private long _creditDrops;
    private ForwardGate? _gate;

    /// <summary>Payload bytes that arrived on this link and that this node forwarded onward: what the neighbour owes for.</summary>
    public long ForwardedForPeer => Interlocked.Read(ref _forwardedForPeer);

    /// <summary>Payload bytes this node queued on this link for the neighbour to forward (counted by <see cref="TryEnqueue"/>): what this node owes for.</summary>
    public long BillableSent => Interlocked.Read(ref _billableSent);

    private long _confirmedForwarded;

    /// <summary>
    /// What the neighbour reports having forwarded of what this node handed it to forward (link message 9), on this
    /// link: a neighbour that drops traffic — lost on the way, or no entry to forward it by — reports less, and this
    /// node pays only for what both counts agree on.
    /// </summary>
    public long ConfirmedForwarded => Interlocked.Read(ref _confirmedForwarded);

    /// <summary>Bytes this node may pay the neighbour for: handed over for forwarding and reported forwarded.</summary>
    public long PayableSent => Math.Min(BillableSent, ConfirmedForwarded);

    /// <summary>Tells the neighbour how many bytes of its traffic this node has forwarded on this link (a cumulative count).</summary>
    public bool TryReportForwarded()
    {
        Span<byte> count = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64BigEndian(count, ForwardedForPeer);
        return State == LinkState.Up && Enqueue(Wire.MeshWire.ControlLabel, LinkMessageType.Forwarded, count);
    }

    private void OnForwardedReport(ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 8)
        {
            _switch.CountBadFrame(Wire.WireError.BadControlMessage);
            return;
        }
        var reported = System.Buffers.Binary.BinaryPrimitives.ReadInt64BigEndian(payload);
        // Cumulative and only ever up (a report that arrives late changes nothing).
        long current;
        while (reported > (current = Interlocked.Read(ref _confirmedForwarded)))
        {
            if (Interlocked.CompareExchange(ref _confirmedForwarded, reported, current) == current)
                break;
        }
    }

    /// <summary>Messages from this neighbour not forwarded because it was over its credit.</summary>
    public long CreditDrops => Interlocked.Read(ref _creditDrops);

    /// <summary>Bytes per second this node still forwards for the neighbour: null unlimited, 0 suspended.</summary>
    public long? ForwardAllowance => Volatile.Read(ref _gate)?.BytesPerSecond;

    /// <summary>Sets what this node forwards for the neighbour (null: unlimited; 0: nothing).</summary>
    public void SetForwardAllowance(long? bytesPerSecond)
    {
        var current = Volatile.Read(ref _gate);
        if (current?.BytesPerSecond == bytesPerSecond)
            return;
        Volatile.Write(ref _gate, bytesPerSecond is { } rate ? new ForwardGate(rate, _switch.Time) : null);
    }

    /// <summary>On the receive loop, before forwarding: false (and counted) when the neighbour's credit does not allow it.</summary>
    internal bool MayForward(int bytes, long now)
    {
        var gate = Volatile.Read(ref _gate);
        if (gate is null || gate.TryTake(bytes, now))
            return true;
        Interlocked.Increment(ref _creditDrops);
        return false;
    }

    /// <summary>Counts bytes forwarded for the neighbour; only this link's receive loop calls it, so a plain add will do.</summary>
    internal void Forwarded(int bytes) => Volatile.Write(ref _forwardedForPeer, _forwardedForPeer + bytes);

    /// <summary>A token bucket of a tenth of a second's allowance; rate 0 lets nothing through.</summary>
    private sealed class ForwardGate(long bytesPerSecond, TimeProvider time)
    {
        private readonly double _perTick = bytesPerSecond / (double)time.TimestampFrequency;
        private readonly double _burst = Math.Max(bytesPerSecond / 10.0, 64 * 1024);
        private double _tokens = Math.Max(bytesPerSecond / 10.0, 64 * 1024);
        private long _last = time.GetTimestamp();

        public long BytesPerSecond { get; } = bytesPerSecond;

        // Only the link's receive loop takes tokens, so no lock is needed.
        public bool TryTake(int bytes, long now)
        {
            if (BytesPerSecond == 0)
                return false;
            _tokens = Math.Min(_burst, _tokens + (now - _last) * _perTick);
            _last = now;
            if (_tokens < bytes)
                return false;
            _tokens -= bytes;
            return true;
        }
    }
}
