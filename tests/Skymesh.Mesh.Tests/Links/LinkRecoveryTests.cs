using System.Buffers.Binary;
using System.Collections.Concurrent;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Tests.Links;

/// <summary>Links that recover their own lost frames (Nack and resend), on a lossy in-memory hop under virtual time.</summary>
public sealed class LinkRecoveryTests : IAsyncDisposable
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 5, 12, 0, 0, TimeSpan.Zero));
    private readonly List<MeshSwitch> _switches = [];
    private readonly List<NodeKey> _keys = [];
    private readonly List<MemoryInterface> _nics = [];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask DisposeAsync()
    {
        foreach (var s in _switches)
            await s.DisposeAsync();
        foreach (var k in _keys)
            k.Dispose();
    }

    /// <summary>Counts each delivered message by its number (the first 4 bytes of its payload).</summary>
    private sealed class Counter : IPathSink
    {
        public ConcurrentDictionary<int, int> Seen { get; } = new();

        public void OnMessage(Link from, uint label, byte type, ReadOnlySpan<byte> payload) =>
            Seen.AddOrUpdate(BinaryPrimitives.ReadInt32BigEndian(payload), 1, (_, n) => n + 1);
    }

    private static void Until(Func<bool> condition, string what) =>
        Assert.True(SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(10)), what);

    /// <summary>A link from A to B over a hop that loses <paramref name="loss"/> of the frames each way; B delivers label 7 to a counter.</summary>
    private async Task<(Link AtA, Link AtB, Counter Inbox)> LossyLinkAsync(double loss, bool recovery, bool encrypt = true)
    {
        var net = new MemoryNetwork(_time, seed: 19);
        var nodes = Enumerable.Range(0, 2).Select(_ =>
        {
            var key = NodeKey.Generate();
            _keys.Add(key);
            var sw = new MeshSwitch(key, new MeshSwitchOptions { LinkRecovery = recovery, Encrypt = encrypt }, _time);
            var nic = net.CreateInterface(mtu: 1400);
            sw.AddInterface(nic);
            _nics.Add(nic);
            _switches.Add(sw);
            return (Switch: sw, Nic: nic);
        }).ToArray();
        var up = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        nodes[1].Switch.LinkUp += l => up.TrySetResult(l);
        var atA = await nodes[0].Switch.ConnectAsync(nodes[0].Nic, nodes[1].Nic.EndPoint, nodes[1].Switch.Address, Ct);
        var atB = await up.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var inbox = new Counter();
        nodes[1].Switch.Labels.Install(atB.Id, 7, LabelAction.Deliver(nodes[1].Switch.RegisterSink(inbox)));
        net.SetDefaultImpairment(new Impairment { Loss = loss });
        return (atA, atB, inbox);
    }

    [Fact]
    public async Task A_busy_link_keeps_only_the_frames_it_could_still_be_asked_for_not_the_whole_ring()
    {
        var (atA, _, inbox) = await LossyLinkAsync(loss: 0, recovery: true);
        // 300 frames over 3 s of virtual time, then 5 s of keepalives: frames older than the resend horizon
        // (a second here) go back to the pool, where before the ring kept up to 1,024 of them (2 MiB of buffers).
        Send(atA, 300);
        Until(() => inbox.Seen.Count == 300, "not every message arrived");
        for (var second = 0; second < 5; second++)
        {
            _time.Advance(TimeSpan.FromSeconds(1));
            Until(() => atA.RetainedFrames < 50, $"after {second + 1} s of keepalives the link still keeps {atA.RetainedFrames} frames");
        }
        Assert.True(atA.RetainedFrames < 50, $"{atA.RetainedFrames} frames kept");
    }

    [Fact]
    public async Task A_quiet_link_keeps_a_small_ring_and_a_burst_grows_it_so_every_frame_can_still_be_asked_for()
    {
        var (atA, _, inbox) = await LossyLinkAsync(loss: 0, recovery: true);
        // Keepalives only: the ring of kept frames stays at its smallest (32 slots of 32 bytes), where it used to
        // take 1,024 slots (32 KiB per link end) however quiet the link — most of an idle simulated node's memory.
        for (var second = 0; second < 3; second++)
            _time.Advance(TimeSpan.FromSeconds(1));
        Assert.InRange(atA.RetainSlots, 0, 32);
        // 300 frames within a millisecond each: all still young, so the ring grows to hold them.
        Send(atA, 300);
        Until(() => inbox.Seen.Count == 300, "not every message arrived");
        Assert.InRange(atA.RetainSlots, 300, 1024);
    }

    /// <summary>Sends messages 0..count-1 one frame each, a millisecond of virtual time apart, then lets a second pass.</summary>
    private void Send(Link link, int count)
    {
        var payload = new byte[200];
        for (var i = 0; i < count; i++)
        {
            BinaryPrimitives.WriteInt32BigEndian(payload, i);
            var sent = link.Info().FramesSent;
            Assert.True(link.TryEnqueue(7, 16, payload));
            Until(() => link.Info().FramesSent > sent, $"message {i} was never sent");
            _time.Advance(TimeSpan.FromMilliseconds(1));
        }
    }

    [Fact]
    public async Task A_hop_that_loses_a_tenth_of_its_frames_delivers_every_message_exactly_once()
    {
        var (atA, atB, inbox) = await LossyLinkAsync(loss: 0.10, recovery: true);
        Send(atA, 1000);
        // Gaps found late (the last frames, lost Nacks) are asked for again on later frames and on the switch's timer.
        for (var step = 0; step < 400 && inbox.Seen.Count < 1000; step++)
        {
            _time.Advance(TimeSpan.FromMilliseconds(5));
            SpinWait.SpinUntil(() => inbox.Seen.Count >= 1000, TimeSpan.FromMilliseconds(2));
        }
        Assert.True(inbox.Seen.Count == 1000, $"missing {string.Join(",", Enumerable.Range(0, 1000).Where(i => !inbox.Seen.ContainsKey(i)))}; "
            + $"B asked {atB.FramesAskedFor}, recovered {atB.FramesRecovered}, gave up {atB.FramesGivenUp}; A resent {atA.FramesRetransmitted}, tail probes {atA.TailProbes}; {atA.Info()} {atB.Info()}");
        Assert.All(inbox.Seen, pair => Assert.Equal(1, pair.Value));
        Assert.True(atB.FramesAskedFor > 50, $"B asked for {atB.FramesAskedFor} frames");
        Assert.True(atA.FramesRetransmitted > 50, $"A resent {atA.FramesRetransmitted} frames");
        Assert.Equal(LinkState.Up, atA.State);
    }

    [Fact]
    public async Task With_link_recovery_off_the_same_hop_loses_what_it_loses()
    {
        var (atA, atB, inbox) = await LossyLinkAsync(loss: 0.10, recovery: false);
        Send(atA, 1000);
        _time.Advance(TimeSpan.FromSeconds(1));
        Until(() => atB.Info().FramesReceived >= 850, "B received far fewer frames than a tenth's loss leaves");
        Assert.InRange(inbox.Seen.Count, 850, 960);
        Assert.Equal(0, atB.FramesAskedFor);
        Assert.Equal(0, atA.FramesRetransmitted);
    }

    [Fact]
    public async Task A_malformed_nack_from_the_neighbour_is_counted_and_changes_nothing()
    {
        var (atA, atB, inbox) = await LossyLinkAsync(loss: 0, recovery: true, encrypt: false);
        var sw = _switches[0];
        var badBefore = sw.BadFrames;
        var sentBefore = atA.FramesRetransmitted;
        // A plain link's neighbour (B's side) sends Nacks that are not whole 16-byte ranges, or too many of them.
        foreach (var length in new[] { 1, 15, 17, 17 * 16 })
        {
            var builder = new FrameBuilder(1400);
            Assert.True(builder.TryAdd(MeshWire.ControlLabel, LinkMessageType.Nack, new byte[length], encrypted: false));
            Assert.True(_nics[1].TrySend(_nics[0].EndPoint, builder.Seal(1_000_000 + (ulong)length, null)));
        }
        Until(() => sw.BadFrames >= badBefore + 4, $"the switch counted {sw.BadFrames - badBefore} bad frames");
        Assert.Equal(sentBefore, atA.FramesRetransmitted);
        Assert.Equal(LinkState.Up, atA.State);
        Send(atA, 10);
        Until(() => inbox.Seen.Count == 10, "the link stopped carrying messages");
    }
}
