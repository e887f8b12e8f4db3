using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Links;

/// <summary>A payload that arrived on a link, valid only during the call.</summary>
public delegate void LinkPayloadHandler(Link link, ReadOnlySpan<byte> payload);

public sealed class MeshSwitchOptions
{
    /// <summary>Ask neighbours for encrypted frames (a link is encrypted when both ends ask).</summary>
    public bool Encrypt { get; set; } = true;

    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(10);

    public TimeSpan HandshakeRetry { get; set; } = TimeSpan.FromSeconds(1);

    public TimeSpan KeepaliveInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>A link that hears nothing for this long is declared down.</summary>
    public TimeSpan DeadAfter { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How far a Hello's clock may differ from ours.</summary>
    public TimeSpan ClockTolerance { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Bytes of messages queued towards one neighbour before more are dropped.</summary>
    public int LinkQueueBytes { get; set; } = 8 * 1024 * 1024;

    /// <summary>
    /// Recover lost frames on the link itself: ask the neighbour for the frames missing from its sequence, and send
    /// again those it asks for (docs/wire-format.md, Nack). Off leaves every loss to end-to-end recovery.
    /// </summary>
    public bool LinkRecovery { get; set; } = true;

    /// <summary>What Hellos from strangers may cost (rates, queue, half-open links).</summary>
    public HandshakeLimits Handshakes { get; set; } = new();

    /// <summary>Label entries without traffic or keepalive for this long expire.</summary>
    public TimeSpan LabelLifetime { get; set; } = TimeSpan.FromSeconds(60);

    public void Validate()
    {
        if (HandshakeTimeout <= TimeSpan.Zero || HandshakeRetry <= TimeSpan.Zero || KeepaliveInterval <= TimeSpan.Zero
            || DeadAfter <= KeepaliveInterval || ClockTolerance <= TimeSpan.Zero || LabelLifetime <= TimeSpan.Zero)
            throw new ArgumentException("Link timers must be positive, and DeadAfter longer than KeepaliveInterval.");
        ArgumentNullException.ThrowIfNull(Handshakes);
        Handshakes.Validate();
        if (LinkQueueBytes < 64 * 1024)
            throw new ArgumentOutOfRangeException(nameof(LinkQueueBytes), LinkQueueBytes, "Must be at least 64 KiB.");
    }
}

/// <summary>Receives messages whose label table entry says "deliver" to it.</summary>
public interface IPathSink
{
    /// <summary>Called on a receive loop; must not block. The payload is valid only during the call.</summary>
    void OnMessage(Link from, uint label, byte type, ReadOnlySpan<byte> payload);
}

/// <summary>
/// The data plane of one node: its interfaces, the links over them, and the label table that switches
/// messages between links or delivers them to local path endpoints. It never signs or parses anything
/// per message; the control plane writes its table.
/// </summary>
public sealed partial class MeshSwitch : IAsyncDisposable
{
    private readonly ConcurrentDictionary<(IMeshInterface, EndPoint), Link> _byRemote = new();
    private readonly ConcurrentDictionary<int, Link> _byId = new();
    private readonly ConcurrentDictionary<int, IPathSink> _sinks = new();
    private readonly List<IMeshInterface> _interfaces = [];
    private readonly ILogger _logger;
    private readonly ITimer _timer;
    private volatile Link?[] _linkArray = new Link?[16];
    private int _nextLinkId;
    private readonly SortedSet<int> _freeIds = [];
    private int _nextSink;
    private long _badFrames;
    private long _handshakeFailures;
    private long _forwarded;
    private long _delivered;
    private long _forwardDrops;
    private readonly byte[] _addressBytes;

    public MeshSwitch(NodeKey key, MeshSwitchOptions? options = null, TimeProvider? time = null, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(key);
        Key = key;
        _addressBytes = key.Address.ToBytes();
        Options = options ?? new MeshSwitchOptions();
        Options.Validate();
        Time = time ?? TimeProvider.System;
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Skymesh.Mesh.Switch");
        Labels = new LabelTable(Time, Options.LabelLifetime);
        var tick = Min(Options.KeepaliveInterval, Options.HandshakeRetry) / 4;
        _timer = Time.CreateTimer(static s => ((MeshSwitch)s!).Tick(), this, tick, tick);
    }

    public NodeKey Key { get; }

    public NodeAddress Address => Key.Address;

    public MeshSwitchOptions Options { get; }

    public TimeProvider Time { get; }

    public LabelTable Labels { get; }

    public IReadOnlyCollection<Link> Links => [.. _byId.Values];

    public IReadOnlyList<IMeshInterface> Interfaces
    {
        get
        {
            lock (_interfaces)
                return [.. _interfaces];
        }
    }

    /// <summary>Frames dropped as malformed, undecryptable, replayed or out of place.</summary>
    public long BadFrames => Interlocked.Read(ref _badFrames);

    public long HandshakeFailures => Interlocked.Read(ref _handshakeFailures);

    public long Forwarded => Interlocked.Read(ref _forwarded);

    public long Delivered => Interlocked.Read(ref _delivered);

    /// <summary>Messages that matched an entry but could not go on (next link down or full, no endpoint).</summary>
    public long ForwardDrops => Interlocked.Read(ref _forwardDrops);

    /// <summary>A settlement receipt from a neighbour, carried on a link (on its receive loop: copy the payload, return quickly).</summary>
    public event LinkPayloadHandler? ReceiptReceived;

    internal void OnReceipt(Link link, ReadOnlySpan<byte> payload)
    {
        if (payload.Length > Link.MaxReceiptLength)
        {
            CountBadFrame(WireError.BadControlMessage);
            return;
        }
        ReceiptReceived?.Invoke(link, payload);
    }

    /// <summary>Raised on the receive loop that completed the handshake: handlers must return quickly and never block.</summary>
    public event Action<Link>? LinkUp;

    /// <summary>Raised where the link was taken down (a receive loop or the timer): handlers must return quickly and never block.</summary>
    public event Action<Link, string>? LinkDown;

    /// <summary>Raised when a handshake is refused or fails (the reason); handlers must not block.</summary>
    public event Action<string>? HandshakeRefused;

    /// <summary>
    /// Asked, on the handshake worker, whether a neighbour whose signed Hello has just been verified may link: its proven
    /// address, the address it wrote from and the interface. False refuses it without an answer (counted in
    /// <see cref="NeighboursRefused"/>); the node keeps its lists of blocked and accepted nodes and the decisions that wait
    /// for a person behind it. Must not block. Null admits everyone.
    /// </summary>
    public Func<NodeAddress, EndPoint, IMeshInterface, bool>? Admission { get; set; }

    /// <summary>Hellos from neighbours <see cref="Admission"/> refused.</summary>
    public long NeighboursRefused => Interlocked.Read(ref _neighboursRefused);

    private long _neighboursRefused;

    internal void CountNeighbourRefused() => Interlocked.Increment(ref _neighboursRefused);

    // Interfaces an operator took down: their frames are dropped and no link starts on them. Copied on write (rare);
    // read on every frame.
    private IMeshInterface[] _downInterfaces = [];

    /// <summary>Frames that arrived on an interface an operator took down, and were dropped.</summary>
    public long FramesOnDownInterfaces => Interlocked.Read(ref _framesOnDownInterfaces);

    private long _framesOnDownInterfaces;

    /// <summary>False when an operator took <paramref name="nic"/> down.</summary>
    public bool IsInterfaceUp(IMeshInterface nic) => Array.IndexOf(Volatile.Read(ref _downInterfaces), nic) < 0;

    /// <summary>
    /// Takes an interface down (every link on it goes down, and it neither answers nor starts links until brought up) or
    /// brings it back up. Its socket stays open, so the port stays this node's. Returns false when it already was so.
    /// </summary>
    public bool SetInterfaceUp(IMeshInterface nic, bool up)
    {
        ArgumentNullException.ThrowIfNull(nic);
        lock (_interfaces)
        {
            var down = _downInterfaces;
            if (up == (Array.IndexOf(down, nic) < 0))
                return false;
            Volatile.Write(ref _downInterfaces, up ? [.. down.Where(n => n != nic)] : [.. down, nic]);
        }
        if (!up)
        {
            foreach (var link in _byId.Values)
            {
                if (link.Interface == nic)
                    TakeDown(link, $"interface {nic.Name} taken down");
            }
        }
        return true;
    }

    public void AddInterface(IMeshInterface nic)
    {
        ArgumentNullException.ThrowIfNull(nic);
        lock (_interfaces)
            _interfaces.Add(nic);
        nic.Start(OnFrame);
    }

    /// <summary>Starts a link to <paramref name="remote"/> and returns it once both sides have proven who they are.</summary>
    public async Task<Link> ConnectAsync(IMeshInterface nic, EndPoint remote, NodeAddress? expectedPeer = null, CancellationToken cancellationToken = default)
    {
        if (!IsInterfaceUp(nic))
            throw new InvalidOperationException($"Interface {nic.Name} is down; bring it up first.");
        // Looked up and registered at once: the handshake worker answering this neighbour's Hello at the same moment
        // either sees this dial (and leaves it alone) or registers its answer first (and this waits for that).
        Link? existing;
        Link link;
        lock (_registering)
        {
            if (!_byRemote.TryGetValue((nic, remote), out existing) || existing.State == LinkState.Down)
                existing = null;
            link = existing ?? NewLink(nic, remote, initiator: true, expectedPeer);
        }
        if (existing is not null)
            return await Background.WaitAsync(existing.WaitUpAsync(), cancellationToken);
        link.StartHandshake();
        try
        {
            return await Background.WaitAsync(link.WaitUpAsync(), cancellationToken);
        }
        catch (LinkFailedException) when (link.DownReason == CrossedDials)
        {
            return await AnsweredInsteadAsync(nic, remote, link, expectedPeer, cancellationToken);
        }
    }

    /// <summary>After a dial crossed the neighbour's (<see cref="CrossedDials"/>): the link this node answers instead, once up.</summary>
    private async Task<Link> AnsweredInsteadAsync(IMeshInterface nic, EndPoint remote, Link given, NodeAddress? expectedPeer, CancellationToken cancellationToken)
    {
        // The answer is made by the handshake worker; look for it for as long as a handshake may take.
        var deadline = Time.GetTimestamp() + (long)(Options.HandshakeTimeout.TotalSeconds * Time.TimestampFrequency);
        while (true)
        {
            if (_byRemote.TryGetValue((nic, remote), out var answered) && answered != given && answered.State != LinkState.Down)
            {
                var up = await Background.WaitAsync(answered.WaitUpAsync(), cancellationToken);
                if (expectedPeer is { } expected && up.Peer != expected)
                    throw new LinkFailedException($"{remote} answered as {up.Peer}, not {expected}");
                return up;
            }
            if (Time.GetTimestamp() > deadline)
                throw new LinkFailedException(CrossedDials + ", which never came");
            await Task.Delay(TimeSpan.FromMilliseconds(20), Time, cancellationToken);
        }
    }

    /// <summary>Registers a local receiver of delivered messages; its id goes into <see cref="LabelAction.Deliver"/>.</summary>
    public int RegisterSink(IPathSink sink)
    {
        var id = Interlocked.Increment(ref _nextSink);
        _sinks[id] = sink;
        return id;
    }

    public void UnregisterSink(int id) => _sinks.TryRemove(id, out _);

    public Link? GetLink(int id)
    {
        var links = _linkArray;
        return (uint)id < (uint)links.Length ? links[id] : null;
    }

    /// <summary>Takes a link down (its label entries go with it) and tells the neighbour when possible.</summary>
    public void Disconnect(Link link, string reason = "closed locally") => TakeDown(link, reason);

    // Held while a link is looked up by its remote end and, when there is none alive, a new one registered there.
    private readonly Lock _registering = new();

    private Link NewLink(IMeshInterface nic, EndPoint remote, bool initiator, NodeAddress? expectedPeer, bool answering = false)
    {
        int id;
        lock (_byId)
        {
            // Ids of links gone are used again (lowest first), so the table of links stays as large as the links
            // there are at once, whatever comes and goes.
            id = _freeIds.Count > 0 ? _freeIds.Min : ++_nextLinkId;
            _freeIds.Remove(id);
        }
        var link = new Link(this, id, nic, remote, initiator, expectedPeer, Options.LinkQueueBytes) { Answering = answering };
        _byRemote[(nic, remote)] = link;
        _byId[id] = link;
        lock (_byId)
        {
            var links = _linkArray;
            if (id >= links.Length)
            {
                var bigger = new Link?[Math.Max(links.Length * 2, id + 1)];
                links.CopyTo(bigger, 0);
                links = bigger;
            }
            links[id] = link;
            _linkArray = links;
        }
        return link;
    }

    // Links this thread has queued messages on inside a DeferFlushes scope, to flush when the outermost scope ends;
    // and how many scopes deep the thread is.
    [ThreadStatic]
    private static List<Link>? t_toFlush;

    [ThreadStatic]
    private static int t_deferring;

    /// <summary>True inside a <see cref="DeferFlushes"/> scope on this thread.</summary>
    internal static bool Deferring => t_deferring > 0;

    /// <summary>
    /// Until the returned scope is disposed, messages this thread queues with <see cref="Link.TryEnqueue"/> are
    /// not handed to the thread pool to be sent: disposing the scope sends them, on this thread, in as few frames
    /// as they fit. A producer that queues a burst so sends it without waking another thread; every frame a
    /// receive loop handles runs in such a scope (a relay reads, switches, seals and sends on one thread).
    /// Scopes nest; the outermost one sends.
    /// </summary>
    public static FlushScope DeferFlushes()
    {
        t_deferring++;
        return default;
    }

    /// <summary>Ends a <see cref="DeferFlushes"/> scope.</summary>
    public readonly struct FlushScope : IDisposable
    {
        public void Dispose()
        {
            if (--t_deferring == 0 && t_toFlush is { Count: > 0 } links)
                FlushQueued(links);
        }
    }

    /// <summary>Called by a link that must be flushed when this thread's scope ends.</summary>
    internal static void FlushAtScopeEnd(Link link) => (t_toFlush ??= []).Add(link);

    private void OnFrame(IMeshInterface nic, EndPoint remote, Span<byte> frame)
    {
        if (_downInterfaces.Length != 0 && !IsInterfaceUp(nic))
        {
            Interlocked.Increment(ref _framesOnDownInterfaces);
            return;
        }
        using (DeferFlushes())
            HandleFrame(nic, remote, frame);
    }

    /// <summary>Flushes, on this thread, every link queued on in the scope that just ended.</summary>
    private static void FlushQueued(List<Link> links)
    {
        // One at a time: a flush may lead (through an in-process interface) to more frames handled here.
        while (links.Count > 0)
        {
            var link = links[^1];
            links.RemoveAt(links.Count - 1);
            link.FlushHere();
        }
    }

    private void HandleFrame(IMeshInterface nic, EndPoint remote, Span<byte> frame)
    {
        var now = Time.GetTimestamp();
        if (!_byRemote.TryGetValue((nic, remote), out var link) || link.State == LinkState.Down)
        {
            // Only a Hello may open a link; anything else from a stranger is dropped. A Hello goes to the handshake
            // worker, through cheap checks only (MeshSwitch.Handshakes.cs).
            if (!LooksLikeHello(frame))
            {
                // A hole-punching probe only opens its sender's NAT on the way here; it carries nothing.
                if (!frame.SequenceEqual(PunchProbe))
                    CountBadFrame(WireError.None);
                return;
            }
            AdmitHello(nic, remote, frame, now);
            return;
        }
        // A Hello on a link that is up: the neighbour restarted on the same address and knows nothing of this link.
        // Taken like a stranger's (it must not keep the old link alive either); the worker replaces the link only when the
        // Hello is newer and signed by the same neighbour.
        if (link.State == LinkState.Up && LooksLikeHello(frame))
        {
            AdmitHello(nic, remote, frame, now);
            return;
        }
        // The worker is answering this neighbour's Hello: a repeat of it waits for the answer (a later repeat gets the
        // same one). What follows the answer (HelloConfirm, the first sealed frame) is the receive loop's as always:
        // the answer is the last thing the worker does.
        if (link.Answering && LooksLikeHello(frame))
            return;
        // Both ends dialled each other at once (each lists the other as a peer): two handshakes crossing on one pair of
        // sockets would each wait for the other until they time out. The end with the lower address keeps its dial (and
        // ignores the other's Hello); the other gives its own up and answers. Which address the Hello claims is checked
        // only by the handshake that follows, so a forged one can at most cost this dial a retry.
        if (link.State == LinkState.Handshaking && LooksLikeHello(frame) && YieldsTo(link, frame.Slice(HelloAddressOffset, NodeAddress.Length)))
        {
            TakeDown(link, CrossedDials);
            AdmitHello(nic, remote, frame, now);
            return;
        }
        link.OnFrame(frame, now);
    }

    /// <summary>
    /// What a node sends to open its NAT towards a node that is dialling it through its own (docs/control-plane.md,
    /// "Links through NAT"): not a frame (its first byte is not the frame marker), dropped without a count.
    /// </summary>
    public static ReadOnlySpan<byte> PunchProbe => "SKYMESH PUNCH\n"u8;

    // Where the address a Hello claims sits in its frame.
    private const int HelloAddressOffset = MeshWire.FrameHeaderLength + MeshWire.MessageHeaderLength + LinkHandshake.AddressOffset;

    /// <summary>Why a dial was given up: the neighbour dialled at the same time, and its handshake goes on instead.</summary>
    private const string CrossedDials = "the neighbour dialled at the same time; answering its handshake instead";

    /// <summary>
    /// Whether <paramref name="link"/>, a dial of ours still in its handshake, gives way to a Hello from the node
    /// <paramref name="claimed"/>: it does when that node's address is the lower (and it is the node the dial meant).
    /// </summary>
    private bool YieldsTo(Link link, ReadOnlySpan<byte> claimed) =>
        link.State == LinkState.Handshaking && link.IsInitiator && claimed.SequenceCompareTo(_addressBytes) < 0
        && (link.ExpectedPeer is not { } expected || expected == NodeAddress.FromBytes(claimed));

    private static bool LooksLikeHello(ReadOnlySpan<byte> frame) =>
        frame.Length - (MeshWire.FrameHeaderLength + MeshWire.MessageHeaderLength) is LinkHandshake.HelloLength or LinkHandshake.HelloLength + LinkHandshake.CookieLength
        && frame[0] == MeshWire.FrameMarker && frame[1] == 0
        && frame[MeshWire.FrameHeaderLength..][..5].SequenceEqual((ReadOnlySpan<byte>)[0, 0, 0, 0, LinkMessageType.Hello]);

    /// <summary>The forwarding step: one table lookup, then queue on the next link or deliver here.</summary>
    internal void Switch(Link from, uint label, byte type, ReadOnlySpan<byte> payload, long now)
    {
        // The link-local channel is the link's own, like label 0: not in the table, never forwarded.
        if (label == LabelTable.LinkChannelLabel && from.ChannelSink is { } channel)
        {
            channel.OnMessage(from, label, type, payload);
            return;
        }
        if (!Labels.TryLookup(from.Id, label, now, out var action))
            return;
        if (action.Kind == LabelActionKind.Forward)
        {
            // On a receive loop the flush waits for the end of the frame (the loop sends it itself).
            if (!from.MayForward(payload.Length, now))
            {
                Interlocked.Increment(ref _forwardDrops);
                return;
            }
            var next = GetLink(action.OutLink);
            // Settlement: this node owes the next hop for what it forwards (unless that hop is the path's end),
            // and the sender owes this node.
            var queued = next is not null && next.TryEnqueue(action.OutLabel, type, payload, billable: !action.Unbilled);
            if (queued)
            {
                Interlocked.Increment(ref _forwarded);
                from.Forwarded(payload.Length);
            }
            else
            {
                Interlocked.Increment(ref _forwardDrops);
            }
            return;
        }
        if (_sinks.TryGetValue(action.Endpoint, out var sink))
        {
            Interlocked.Increment(ref _delivered);
            sink.OnMessage(from, label, type, payload);
        }
        else
        {
            Interlocked.Increment(ref _forwardDrops);
        }
    }

    internal void OnLinkUp(Link link)
    {
        Log.LinkUp(_logger, link.Id, link.Peer?.ToString() ?? "?", link.Remote.ToString() ?? "", link.Encrypted);
        LinkUp?.Invoke(link);
    }

    internal void TakeDown(Link link, string reason)
    {
        var wasUp = link.State == LinkState.Up;
        // Out of the tables before the link is closed: closing wakes whoever waits for it (a ConnectAsync that then
        // fails), and what they see next must not list it. Only this link's own entries go (its id may be reused).
        _byRemote.TryRemove(new KeyValuePair<(IMeshInterface, EndPoint), Link>((link.Interface, link.Remote), link));
        _byId.TryRemove(new KeyValuePair<int, Link>(link.Id, link));
        if (!link.Close(reason))
            return;
        Labels.RemoveLink(link.Id);
        lock (_byId)
        {
            if (link.Id < _linkArray.Length)
                _linkArray[link.Id] = null;
        }
        if (wasUp)
            Log.LinkDown(_logger, link.Id, link.Peer?.ToString() ?? "?", reason);
        LinkDown?.Invoke(link, reason);
        // Only now, when everyone who cleans up after the link has seen its id, may a new link take it.
        lock (_byId)
            _freeIds.Add(link.Id);
    }

    internal void CountBadFrame(WireError error) => Interlocked.Increment(ref _badFrames);

    internal void CountHandshakeFailure(string why)
    {
        Interlocked.Increment(ref _handshakeFailures);
        Log.HandshakeFailed(_logger, why);
        HandshakeRefused?.Invoke(why);
    }

    internal long NowMs() => Time.GetUtcNow().ToUnixTimeMilliseconds();

    internal bool IsFresh(long timestampMs) =>
        Math.Abs(NowMs() - timestampMs) <= (long)Options.ClockTolerance.TotalMilliseconds;

    private void Tick()
    {
        var now = Time.GetTimestamp();
        // Keepalives are sent from this thread, not by a pool thread woken for each: while such a flush is
        // pending, the link's data queued by a receive loop waits for it too.
        using (DeferFlushes())
        {
            foreach (var link in _byId.Values)
                link.CheckTimers(now);
        }
        Labels.Sweep();
    }

    public async ValueTask DisposeAsync()
    {
        await _timer.DisposeAsync();
        StopHandshakeWorker();
        await _handshakeWorker;
        foreach (var link in _byId.Values)
            TakeDown(link, "node stopping");
        IMeshInterface[] nics;
        lock (_interfaces)
            nics = [.. _interfaces];
        foreach (var nic in nics)
            await nic.DisposeAsync();
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static partial class Log
    {
        [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "Link {Id} up to {Peer} at {Remote} (encrypted: {Encrypted})")]
        public static partial void LinkUp(ILogger logger, int id, string peer, string remote, bool encrypted);

        [LoggerMessage(EventId = 301, Level = LogLevel.Information, Message = "Link {Id} to {Peer} down: {Reason}")]
        public static partial void LinkDown(ILogger logger, int id, string peer, string reason);

        [LoggerMessage(EventId = 302, Level = LogLevel.Debug, Message = "Handshake refused: {Reason}")]
        public static partial void HandshakeFailed(ILogger logger, string reason);
    }
}
