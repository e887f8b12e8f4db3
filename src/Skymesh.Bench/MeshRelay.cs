using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;

namespace Skymesh.Bench;

/// <summary>A mesh switch in the bench's own process with one UDP interface on 127.0.0.1: a sender or receiver end.</summary>
internal sealed class InProcessNode : IAsyncDisposable
{
    private InProcessNode(MeshSwitch meshSwitch, UdpInterface nic)
    {
        Switch = meshSwitch;
        Nic = nic;
    }

    public MeshSwitch Switch { get; }

    public UdpInterface Nic { get; }

    public IPEndPoint Udp => (IPEndPoint)Nic.LocalEndPoint;

    public static InProcessNode Start(bool encrypt)
    {
        var meshSwitch = new MeshSwitch(NodeKey.Generate(), new MeshSwitchOptions { Encrypt = encrypt });
        var nic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        meshSwitch.AddInterface(nic);
        return new InProcessNode(meshSwitch, nic);
    }

    public Task<Link> ConnectAsync(IPEndPoint remote, string peer, CancellationToken cancellationToken) =>
        Switch.ConnectAsync(Nic, remote, NodeAddress.Parse(peer), cancellationToken);

    /// <summary>Installs "deliver to <paramref name="sink"/>" for a fresh label on <paramref name="from"/>; returns the label.</summary>
    public uint Deliver(Link from, IPathSink sink)
    {
        var id = Switch.RegisterSink(sink);
        var label = Switch.Labels.Reserve(from.Id);
        Switch.Labels.Install(from.Id, label, LabelAction.Deliver(id));
        return label;
    }

    /// <summary>The link this node holds to <paramref name="peer"/> once the neighbour's handshake has completed.</summary>
    public async Task<Link> WaitForLinkAsync(NodeAddress peer, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            var link = Switch.Links.FirstOrDefault(l => l.State == LinkState.Up && l.Peer == peer);
            if (link is not null)
                return link;
            if (Stopwatch.GetTimestamp() > deadline)
                throw new BenchException($"No link from {peer} came up within {timeout.TotalSeconds:0} s.");
            await Task.Delay(10, cancellationToken);
        }
    }

    public ValueTask DisposeAsync() => Switch.DisposeAsync();
}

/// <summary>
/// The receiving end of the bench's messages: counts them, and for probes (type <see cref="ProbeType"/>, payload
/// starting with the probe's index and the sender's <see cref="Stopwatch"/> timestamp) records the one-way time.
/// Runs on the receive loop of one interface, so the counter has one writer.
/// </summary>
internal sealed class CountingSink : IPathSink
{
    public const byte DataType = 1;
    public const byte ProbeType = 2;

    private long _count;
    private long[] _probeTicks = [];

    public long Count => Volatile.Read(ref _count);

    /// <summary>Starts recording probes 0 to <paramref name="probes"/>-1 (earlier samples are forgotten).</summary>
    public void ExpectProbes(int probes)
    {
        var ticks = new long[probes];
        Array.Fill(ticks, -1);
        Volatile.Write(ref _probeTicks, ticks);
    }

    /// <summary>One-way times of the probes that arrived, in microseconds; and how many did not.</summary>
    public (double[] Micros, int Lost) ProbeResults()
    {
        var ticks = Volatile.Read(ref _probeTicks);
        var micros = ticks.Where(t => t >= 0).Select(t => t * 1e6 / Stopwatch.Frequency).ToArray();
        return (micros, ticks.Length - micros.Length);
    }

    public void OnMessage(Link from, uint label, byte type, ReadOnlySpan<byte> payload)
    {
        _count++;
        if (type != ProbeType || payload.Length < 12)
            return;
        var now = Stopwatch.GetTimestamp();
        var index = BinaryPrimitives.ReadInt32LittleEndian(payload);
        var sent = BinaryPrimitives.ReadInt64LittleEndian(payload[4..]);
        var ticks = _probeTicks;
        if ((uint)index < (uint)ticks.Length)
            ticks[index] = now - sent;
    }
}

/// <summary>
/// Sender S and receiver R in this process, each linked to the relay node (a separate process), and the relay's
/// forwarding entry from S's link to R's: what S puts on its link with <see cref="Label"/> the relay switches to R.
/// </summary>
internal sealed class RelayRoute : IAsyncDisposable
{
    private RelayRoute(InProcessNode sender, InProcessNode receiver, Link senderLink, uint label, CountingSink sink)
    {
        Sender = sender;
        Receiver = receiver;
        SenderLink = senderLink;
        Label = label;
        Sink = sink;
    }

    public InProcessNode Sender { get; }

    public InProcessNode Receiver { get; }

    /// <summary>S's link to the relay (or, for <see cref="DirectAsync"/>, to R).</summary>
    public Link SenderLink { get; }

    /// <summary>The label S sends with.</summary>
    public uint Label { get; }

    public CountingSink Sink { get; }

    public bool Encrypted => SenderLink.Encrypted;

    public static async Task<RelayRoute> ThroughAsync(NodeProcess relay, bool encrypt, CancellationToken cancellationToken)
    {
        var sender = InProcessNode.Start(encrypt);
        var receiver = InProcessNode.Start(encrypt);
        try
        {
            var toRelay = await sender.ConnectAsync(relay.Udp, relay.Address, cancellationToken);
            var fromRelay = await receiver.ConnectAsync(relay.Udp, relay.Address, cancellationToken);
            await relay.WaitForLinkAsync(sender.Switch.Address.ToString(), cancellationToken);
            await relay.WaitForLinkAsync(receiver.Switch.Address.ToString(), cancellationToken);
            var sink = new CountingSink();
            var outLabel = receiver.Deliver(fromRelay, sink);
            var entry = await relay.Api.ForwardLabelAsync(sender.Switch.Address.ToString(), null, receiver.Switch.Address.ToString(), outLabel, cancellationToken);
            return new RelayRoute(sender, receiver, toRelay, entry.Label, sink);
        }
        catch
        {
            await sender.DisposeAsync();
            await receiver.DisposeAsync();
            throw;
        }
    }

    /// <summary>The same two ends linked to each other, no relay between them (the latency anchor).</summary>
    public async Task<RelayRoute> DirectAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var link = await Sender.ConnectAsync(Receiver.Udp, Receiver.Switch.Address.ToString(), cancellationToken);
        var back = await Receiver.WaitForLinkAsync(Sender.Switch.Address, timeout, cancellationToken);
        var sink = new CountingSink();
        var label = Receiver.Deliver(back, sink);
        return new RelayRoute(Sender, Receiver, link, label, sink) { _ownsNodes = false };
    }

    private bool _ownsNodes = true;

    public async ValueTask DisposeAsync()
    {
        if (!_ownsNodes)
            return;
        await Sender.DisposeAsync();
        await Receiver.DisposeAsync();
    }
}

/// <summary>The sending loops of the relay workloads, each on a thread of its own.</summary>
internal static class MeshSenders
{
    /// <summary>
    /// Sends as fast as the route takes it, keeping at most <paramref name="window"/> messages in flight (sent and
    /// not yet counted at R): every hop then sends full frames, and no socket buffer overflows. A message lost on
    /// the way would shrink the window for good, so after 100 ms without progress what is in flight is written off.
    /// </summary>
    public static Thread StartSaturating(RelayRoute route, int payloadSize, int window, CancellationToken stop)
    {
        var thread = new Thread(() =>
        {
            var payload = new byte[payloadSize];
            var link = route.SenderLink;
            var sink = route.Sink;
            long sent = 0, writtenOff = 0, lastReceived = -1;
            var lastProgress = Stopwatch.GetTimestamp();
            while (!stop.IsCancellationRequested)
            {
                var received = sink.Count;
                var now = Stopwatch.GetTimestamp();
                if (received != lastReceived)
                {
                    lastReceived = received;
                    lastProgress = now;
                }
                var room = window - (sent - received - writtenOff);
                if (room <= 0)
                {
                    if (now - lastProgress > Stopwatch.Frequency / 10)
                        writtenOff = sent - received;
                    Thread.Sleep(1);
                    continue;
                }
                // Read the receiver's counter once per burst, not per message (it lives on another core's cache line).
                // The burst is sealed and sent by this thread when the scope ends, as a relay's receive loop does.
                var burst = Math.Min(room, 1024);
                var full = false;
                using (MeshSwitch.DeferFlushes())
                {
                    for (var i = 0; i < burst; i++)
                    {
                        if (!link.TryEnqueue(route.Label, CountingSink.DataType, payload))
                        {
                            full = true;
                            break;
                        }
                        sent++;
                    }
                }
                if (full)
                    Thread.Sleep(1);
            }
        })
        { IsBackground = true, Name = "bench sender" };
        thread.Start();
        return thread;
    }

    /// <summary>
    /// The latency run: background messages at <paramref name="rate"/> per second in small steps (about every 0.1 ms,
    /// so the load is smooth rather than a burst per millisecond), and a timestamped probe every
    /// <paramref name="interval"/>, both on one route at a time: the routes take turns in slices of
    /// <paramref name="slice"/> probes, so that both see the same machine (a shared one is noisy, and its noise
    /// comes and goes in seconds). The first <paramref name="warmup"/> carries background only.
    /// </summary>
    /// <returns>The background rate actually sent over the probes' time, messages per second.</returns>
    public static Task<double> RunLatencyAsync(RelayRoute[] routes, int payloadSize, double rate, int probesPerRoute, TimeSpan interval, int slice, TimeSpan warmup, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource<double>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                var background = new byte[payloadSize];
                var probe = new byte[Math.Max(12, payloadSize)];
                var start = Stopwatch.GetTimestamp();
                var probesFrom = start + (long)(warmup.TotalSeconds * Stopwatch.Frequency);
                var step = interval.TotalSeconds * Stopwatch.Frequency;
                var sent = new int[routes.Length];
                long backgroundSent = 0, measuredSent = 0;
                // At most two steps' worth at once: after the thread slept long (descheduled), the missed messages
                // are not sent in one burst, which would queue every probe behind it and measure the catch-up.
                var maxBurst = (long)(rate * 0.0002) + 1;
                var probe0 = 0;
                while (sent.Min() < probesPerRoute)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    // What this step queues is sent by this thread at the end of the step (no pool thread woken).
                    using (MeshSwitch.DeferFlushes())
                    {
                        var now = Stopwatch.GetTimestamp();
                        var route = routes[probe0 / slice % routes.Length];
                        var due = (long)((now - start) * rate / Stopwatch.Frequency);
                        backgroundSent = Math.Max(backgroundSent, due - maxBurst);
                        while (backgroundSent < due && route.SenderLink.TryEnqueue(route.Label, CountingSink.DataType, background))
                        {
                            backgroundSent++;
                            if (now >= probesFrom)
                                measuredSent++;
                        }
                        // Behind (queue full): what was not sent is not owed later.
                        backgroundSent = Math.Max(backgroundSent, due);
                        if (now >= probesFrom + (long)(probe0 * step))
                        {
                            var r = probe0 / slice % routes.Length;
                            if (sent[r] < probesPerRoute)
                            {
                                BinaryPrimitives.WriteInt32LittleEndian(probe, sent[r]);
                                BinaryPrimitives.WriteInt64LittleEndian(probe.AsSpan(4), Stopwatch.GetTimestamp());
                                route.SenderLink.TryEnqueue(route.Label, CountingSink.ProbeType, probe);
                                sent[r]++;
                            }
                            probe0++;
                        }
                    }
                    Pause.Microseconds(100);
                }
                done.TrySetResult(measuredSent / Math.Max(1e-9, (Stopwatch.GetTimestamp() - probesFrom) / (double)Stopwatch.Frequency));
            }
            catch (Exception e)
            {
                done.TrySetException(e);
            }
        })
        { IsBackground = true, Name = "bench latency" };
        thread.Start();
        return done.Task;
    }
}

/// <summary>Sleeps shorter than a millisecond (Thread.Sleep's unit) where the system allows it.</summary>
internal static class Pause
{
    public static void Microseconds(int microseconds)
    {
        if (OperatingSystem.IsLinux())
            _ = Usleep((uint)microseconds);
        else
            Thread.Sleep(1);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "usleep")]
    [System.Runtime.InteropServices.DefaultDllImportSearchPaths(System.Runtime.InteropServices.DllImportSearchPath.SafeDirectories)]
    private static extern int Usleep(uint microseconds);
}
