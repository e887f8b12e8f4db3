using System.Diagnostics;
using System.Globalization;
using Skymesh.Mesh.Paths;

// CompleteAsync is called without the test's token on purpose: these tests poll tasks between steps of
// virtual time, and a cancellable wait would complete later, on the thread pool, instead of with the stream.
#pragma warning disable xUnit1051

namespace Skymesh.Mesh.Tests.Paths;

public class ReliableStreamTests
{
    private static readonly TimeSpan Ms = TimeSpan.FromMilliseconds(1);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    [Fact]
    public async Task A_short_message_arrives_and_the_end_of_the_stream_reads_as_zero()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(20) });
        var (atA, atB) = path.OpenStream();
        Assert.True(atA.WriteAsync("hello, mesh"u8.ToArray(), Ct).IsCompletedSuccessfully);
        var done = atA.CompleteAsync();

        var buffer = new byte[64];
        var read = atB.ReadAsync(buffer, Ct);
        Assert.True(path.RunUntil(() => read.IsCompleted, TimeSpan.FromSeconds(1)));
        Assert.Equal("hello, mesh", System.Text.Encoding.ASCII.GetString(buffer, 0, await read));
        var end = atB.ReadAsync(buffer, Ct);
        Assert.True(path.RunUntil(() => end.IsCompleted, TimeSpan.FromSeconds(1)));
        Assert.Equal(0, await end);
        Assert.True(path.RunUntil(() => done.IsCompleted, TimeSpan.FromSeconds(1)));
        Assert.True(done.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Completing_is_confirmed_only_once_the_peer_acknowledged_the_end()
    {
        // 50 ms each way: the end reaches B after 50 ms, its acknowledgement is back after 100.
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(50) });
        var (atA, atB) = path.OpenStream();
        var done = atA.CompleteAsync();
        path.Run(TimeSpan.FromMilliseconds(99));
        Assert.False(done.IsCompleted);
        path.Run(TimeSpan.FromMilliseconds(1));
        Assert.True(done.IsCompletedSuccessfully);

        // Both directions ended: the stream leaves both endpoints.
        Assert.Equal(1, path.A.OpenStreams);
        var doneB = atB.CompleteAsync();
        Assert.True(path.RunUntil(() => doneB.IsCompleted && path.A.OpenStreams == 0 && path.B.OpenStreams == 0, TimeSpan.FromSeconds(1)));
        Assert.Equal(0, await atA.ReadAsync(new byte[1], Ct));
    }

    [Fact]
    public async Task A_hundred_megabytes_cross_a_path_with_loss_reordering_and_duplication_both_ways_intact()
    {
        const long Total = 100_000_000;
        const long Bandwidth = 1_000_000;
        var conditions = new Conditions
        {
            Latency = TimeSpan.FromMilliseconds(5),
            Jitter = TimeSpan.FromMilliseconds(1),
            Loss = 0.05,
            Reordering = 0.05,
            ReorderDelay = TimeSpan.FromMilliseconds(5),
            Duplication = 0.05,
            BandwidthBytesPerSecond = Bandwidth,
        };
        await using var path = PathHarness.Create(conditions);
        var (writer, reader) = path.OpenStream();
        using var transfer = new Transfer(writer, reader, Total);
        var wall = Stopwatch.StartNew();
        var start = path.Elapsed;

        Assert.True(path.RunUntil(transfer.Pump, TimeSpan.FromSeconds(1000)), $"not done after 1,000 s of virtual time: {transfer.Read:N0} bytes read");

        var elapsed = path.Elapsed - start;
        var sent = writer.Counters;
        var received = reader.Counters;
        var goodput = Total / elapsed.TotalSeconds;
        // What any loss-based controller can do at this loss rate (Mathis et al.): MSS/RTT · sqrt(3/2p).
        var mathis = (PathHarness.UdpPayload - PathWire.DataHeaderLength) / sent.SmoothedRtt.TotalSeconds * Math.Sqrt(3 / (2 * conditions.Loss));
        Log(string.Create(CultureInfo.InvariantCulture,
            $"100 MB: {elapsed.TotalSeconds:0.0} s virtual, {wall.Elapsed.TotalSeconds:0.00} s real; goodput {goodput / 1e6:0.000} MB/s = {goodput / Bandwidth:P0} of the line, {goodput / mathis:P0} of the Mathis bound ({mathis / 1e6:0.000} MB/s at SRTT {sent.SmoothedRtt.TotalMilliseconds:0.0} ms)"));
        Log(string.Create(CultureInfo.InvariantCulture,
            $"sender: {sent.SegmentsSent:N0} segments, {sent.SegmentsRetransmitted:N0} retransmitted ({(double)sent.BytesRetransmitted / sent.BytesSent:P1} of bytes), {sent.FastRetransmits:N0} found by RACK, {sent.SpuriousRetransmits:N0} spurious, {sent.TailProbes:N0} tail probes, {sent.Timeouts:N0} timeouts; receiver: {received.DuplicateSegments:N0} duplicates, {received.AcksSent:N0} acks"));

        Assert.Equal(Total, transfer.Read);
        Assert.Equal(transfer.SentHash, transfer.ReceivedHash);
        Assert.Null(transfer.WriterError);
        Assert.Null(transfer.ReaderError);
        // Retransmissions track the loss rate (5 %, plus lost retransmissions), not a collapse.
        Assert.InRange((double)sent.BytesRetransmitted / sent.BytesSent, 0.04, 0.08);
        Assert.True(sent.Timeouts < sent.SegmentsRetransmitted / 50, $"{sent.Timeouts} timeouts");
        Assert.True(goodput > 0.30 * Bandwidth, $"goodput {goodput:N0} B/s");
        Assert.True(goodput > 0.6 * mathis, $"goodput {goodput:N0} B/s against a bound of {mathis:N0}");
        Assert.True(received.DuplicateSegments > 0);
    }

    [Theory]
    [InlineData(15)]
    [InlineData(5)]
    public async Task A_path_that_goes_dead_fails_the_writer_and_the_reader_with_a_clear_error_within_the_timeout(int timeoutSeconds)
    {
        var timeout = TimeSpan.FromSeconds(timeoutSeconds);
        await using var path = PathHarness.Create(
            new Conditions { Latency = TimeSpan.FromMilliseconds(10), Loss = 0.01 },
            options: new PathEndpointOptions { FailureTimeout = timeout });
        var (writer, reader) = path.OpenStream();
        using var transfer = new Transfer(writer, reader, 1L << 40);
        path.RunUntil(() => { transfer.Pump(); return false; }, TimeSpan.FromSeconds(1));
        Assert.True(transfer.Read > 0);

        path.AtoB.Dead = true;
        path.BtoA.Dead = true;
        var cut = path.Elapsed;
        Assert.True(path.RunUntil(() => { transfer.Pump(); return transfer.Failed; }, timeout * 3), "the stream hung on a dead path");
        var failedAfter = path.Elapsed - cut;

        var writerError = Assert.IsType<PathBrokenException>(transfer.WriterError);
        var readerError = Assert.IsType<PathBrokenException>(transfer.ReaderError);
        Assert.Equal($"path to B lost: no acknowledgement for {timeoutSeconds} s", writerError.Message);
        Assert.Equal($"path to A lost: no acknowledgement for {timeoutSeconds} s", readerError.Message);
        Assert.InRange(failedAfter, timeout - TimeSpan.FromMilliseconds(100), timeout + TimeSpan.FromMilliseconds(10));
        // Later calls fail the same way at once, and the endpoints report the path lost.
        Assert.IsType<PathBrokenException>(await Assert.ThrowsAnyAsync<IOException>(async () => await writer.WriteAsync(new byte[1], Ct)));
        Assert.IsType<PathBrokenException>(await Assert.ThrowsAnyAsync<IOException>(async () => await reader.ReadAsync(new byte[1], Ct)));
        Assert.NotNull(path.B.BrokenBy);
        Log($"failed {failedAfter.TotalSeconds:0.000} s after the cut: {writerError.Message}");
    }

    [Fact]
    public async Task Retargeting_to_a_repaired_path_mid_transfer_delivers_every_byte_once_and_in_order()
    {
        const long Total = 20_000_000;
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10), Loss = 0.01, BandwidthBytesPerSecond = 5_000_000 });
        var (writer, reader) = path.OpenStream();
        using var transfer = new Transfer(writer, reader, Total);
        path.RunUntil(() => transfer.Pump(), TimeSpan.FromSeconds(2));
        Assert.InRange(transfer.Read, 1, Total / 2);

        // A hop on the old path fails; three seconds later the control plane has a new path with a smaller
        // MTU and a longer delay, and moves both ends onto it.
        path.AtoB.Dead = true;
        path.BtoA.Dead = true;
        path.RunUntil(() => { transfer.Pump(); return false; }, TimeSpan.FromSeconds(3));
        var readBeforeRepair = transfer.Read;
        var retransmittedBefore = writer.Counters.SegmentsRetransmitted;
        path.Repair(new Conditions { Latency = TimeSpan.FromMilliseconds(30), Loss = 0.01, Reordering = 0.05 }, maxPayload: 600);

        Assert.True(path.RunUntil(transfer.Pump, TimeSpan.FromSeconds(300)), $"{transfer.Read:N0} of {Total:N0} bytes");
        Assert.Equal(Total, transfer.Read);
        Assert.Equal(transfer.SentHash, transfer.ReceivedHash);
        Assert.Null(transfer.WriterError);
        Assert.Null(transfer.ReaderError);
        Assert.True(writer.Counters.SegmentsRetransmitted > retransmittedBefore);
        Log($"{readBeforeRepair:N0} bytes read before the repair, all {Total:N0} after; {writer.Counters.SegmentsRetransmitted - retransmittedBefore:N0} segments resent since");
    }

    [Theory]
    [InlineData(CongestionAlgorithm.Cubic)]
    [InlineData(CongestionAlgorithm.NewReno)]
    public async Task On_a_bottleneck_with_a_small_queue_the_window_backs_off_and_throughput_stays_near_the_bottleneck_rate(CongestionAlgorithm algorithm)
    {
        const long Total = 10_000_000;
        const long Bandwidth = 1_000_000;
        const int Queue = 20;
        await using var path = PathHarness.Create(
            new Conditions { Latency = TimeSpan.FromMilliseconds(20), BandwidthBytesPerSecond = Bandwidth, QueueLimit = Queue },
            new Conditions { Latency = TimeSpan.FromMilliseconds(20) },
            options: new PathEndpointOptions { CongestionControl = algorithm });
        var (writer, reader) = path.OpenStream();
        using var transfer = new Transfer(writer, reader, Total);
        var start = path.Elapsed;
        long largestWindowAfterLoss = 0;
        Assert.True(path.RunUntil(() =>
        {
            var done = transfer.Pump();
            var counters = writer.Counters;
            if (counters.SegmentsRetransmitted > 0)
                largestWindowAfterLoss = Math.Max(largestWindowAfterLoss, counters.CongestionWindow);
            return done;
        }, TimeSpan.FromSeconds(60)));

        var elapsed = path.Elapsed - start;
        var counters = writer.Counters;
        var goodput = Total / elapsed.TotalSeconds;
        // What the path holds: bandwidth × round trip, plus the queue.
        var capacity = Bandwidth * 0.040 + Queue * PathHarness.UdpPayload;
        Log(string.Create(CultureInfo.InvariantCulture,
            $"{algorithm}: {goodput / 1e6:0.000} MB/s = {goodput / Bandwidth:P1} of the bottleneck; {path.AtoB.QueueDrops} tail drops; retransmitted {(double)counters.BytesRetransmitted / counters.BytesSent:P2} of bytes; largest window after a loss {largestWindowAfterLoss:N0} B against a path capacity of {capacity:N0} B"));

        Assert.Equal(transfer.SentHash, transfer.ReceivedHash);
        Assert.True(path.AtoB.QueueDrops > 0, "the queue never overflowed: the test tested nothing");
        Assert.True(goodput > 0.85 * Bandwidth, $"goodput {goodput:N0} B/s");
        Assert.True(counters.BytesRetransmitted < 0.03 * counters.BytesSent);
        Assert.True(largestWindowAfterLoss < 2 * capacity, $"window {largestWindowAfterLoss:N0} B");
        Assert.True(counters.SlowStartThreshold < 2 * capacity);
    }

    [Fact]
    public async Task A_receiver_that_stops_reading_holds_the_sender_at_its_window_without_failing_the_path()
    {
        const int Window = 64 * 1024;
        await using var path = PathHarness.Create(
            new Conditions { Latency = TimeSpan.FromMilliseconds(10) },
            options: new PathEndpointOptions { ReceiveBufferSize = Window, SendBufferSize = 256 * 1024 });
        var (writer, reader) = path.OpenStream();
        using var transfer = new Transfer(writer, reader, 2_000_000) { Reading = false };

        // A minute: four times the failure timeout; the sender probes the closed window and hears back.
        path.RunUntil(() => { transfer.Pump(); return false; }, TimeSpan.FromSeconds(60));
        Assert.Null(transfer.WriterError);
        Assert.True(transfer.Written < transfer.Total, "the writer should be waiting for buffer space");
        Assert.InRange(writer.Counters.BytesSent, Window - PathHarness.UdpPayload, Window + 1);
        Assert.InRange(reader.Counters.BytesReceived, Window - PathHarness.UdpPayload, Window + 1);
        Assert.Equal(0, writer.Counters.PeerWindow);

        transfer.Reading = true;
        Assert.True(path.RunUntil(transfer.Pump, TimeSpan.FromSeconds(60)));
        Assert.Equal(transfer.SentHash, transfer.ReceivedHash);
    }

    [Fact]
    public async Task A_stream_that_goes_quiet_after_a_burst_gives_its_buffer_memory_back()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10) });
        var (writer, reader) = path.OpenStream();
        using var transfer = new Transfer(writer, reader, 8_000_000, complete: false);
        long peak = 0;
        Assert.True(path.RunUntil(() =>
        {
            transfer.Pump();
            peak = Math.Max(peak, writer.Counters.BufferBytesHeld + reader.Counters.BufferBytesHeld);
            return transfer.Read == transfer.Total;
        }, TimeSpan.FromSeconds(60)));
        Assert.True(peak > 1 << 20, $"peak {peak:N0} B");

        path.Run(TimeSpan.FromSeconds(12));

        // What stays is the chunk under each buffer's current position: the streams are still open.
        Assert.InRange(writer.Counters.BufferBytesHeld, 0, 32 * 1024);
        Assert.InRange(reader.Counters.BufferBytesHeld, 0, 32 * 1024);
        Assert.Equal(transfer.SentHash, transfer.ReceivedHash);
    }

    [Fact]
    public async Task Aborting_tells_the_peer_whose_reads_and_writes_then_fail_with_the_reason()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10), Loss = 0.2 });
        var (atA, atB) = path.OpenStream();
        var pendingRead = atB.ReadAsync(new byte[16], Ct);
        atA.Abort("user cancelled the download");

        // One in five messages is lost, the peer's confirmation included: the close is sent again until confirmed.
        Assert.True(path.RunUntil(() => pendingRead.IsCompleted && path.A.OpenStreams == 0 && path.B.OpenStreams == 0, TimeSpan.FromSeconds(30)));
        var atPeer = await Assert.ThrowsAsync<StreamAbortedException>(async () => await pendingRead);
        Assert.True(atPeer.ByPeer);
        Assert.Equal("user cancelled the download", atPeer.Reason);
        Assert.Equal($"stream {atA.Id} aborted by the peer: user cancelled the download", atPeer.Message);
        await Assert.ThrowsAsync<StreamAbortedException>(async () => await atB.WriteAsync(new byte[1], Ct));
        var local = await Assert.ThrowsAsync<StreamAbortedException>(async () => await atA.WriteAsync(new byte[1], Ct));
        Assert.False(local.ByPeer);
    }

    [Fact]
    public async Task Several_streams_share_one_path_in_both_directions_and_each_arrives_intact()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10), Loss = 0.02, Reordering = 0.02 });
        var (a1, b1) = path.OpenStream();
        var (a2, b2) = path.OpenStream();
        var fromB = path.B.OpenStream();
        Assert.True(fromB.WriteAsync(new byte[] { 1 }, Ct).IsCompletedSuccessfully);
        ReliableStream? acceptedByA = null;
        Assert.True(path.RunUntil(() => path.A.TryAcceptStream(out acceptedByA), TimeSpan.FromSeconds(1)));
        Assert.Equal(0u, fromB.Id % 2); // B, the responder, opens even ids
        var one = new byte[1];
        var first = acceptedByA!.ReadAsync(one, Ct);
        Assert.True(path.RunUntil(() => first.IsCompleted, TimeSpan.FromSeconds(1)));

        using var t1 = new Transfer(a1, b1, 3_000_000, seed: 1);
        using var t2 = new Transfer(a2, b2, 2_000_000, seed: 2);
        using var t3 = new Transfer(fromB, acceptedByA, 1_000_000, seed: 3);
        Assert.True(path.RunUntil(() => t1.Pump() & t2.Pump() & t3.Pump(), TimeSpan.FromSeconds(120)));
        Assert.Equal(t1.SentHash, t1.ReceivedHash);
        Assert.Equal(t2.SentHash, t2.ReceivedHash);
        Assert.Equal(t3.SentHash, t3.ReceivedHash);
        Assert.Equal(new uint[] { 1, 3 }, new[] { a1.Id, a2.Id });
    }

    [Fact]
    public async Task A_cancelled_read_throws_and_the_stream_keeps_working()
    {
        await using var path = PathHarness.Create();
        var (atA, atB) = path.OpenStream();
        using var cancel = new CancellationTokenSource();
        var buffer = new byte[8];
        var read = atB.ReadAsync(buffer, cancel.Token);
        Assert.False(read.IsCompleted);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await read);

        Assert.True(atA.WriteAsync(new byte[] { 42 }, Ct).IsCompletedSuccessfully);
        var next = atB.ReadAsync(buffer, Ct);
        Assert.True(path.RunUntil(() => next.IsCompleted, TimeSpan.FromSeconds(1)));
        Assert.Equal(1, await next);
        Assert.Equal(42, buffer[0]);
    }

    [Fact]
    public async Task The_stream_adapter_carries_bytes_and_the_end_like_any_stream()
    {
        await using var path = PathHarness.Create();
        var (atA, atB) = path.OpenStream();
        await using var writeSide = atA.AsStream();
        await using var readSide = atB.AsStream();
        Assert.False(writeSide.CanSeek);
        await writeSide.WriteAsync("through the adapter"u8.ToArray(), Ct);
        await writeSide.FlushAsync(Ct);
        var done = atA.CompleteAsync();
        Assert.True(path.RunUntil(() => done.IsCompleted, TimeSpan.FromSeconds(1)));

        var buffer = new byte[64];
        var count = await readSide.ReadAsync(buffer, Ct);
        Assert.Equal("through the adapter", System.Text.Encoding.ASCII.GetString(buffer, 0, count));
        Assert.Equal(0, await readSide.ReadAsync(buffer, Ct));
    }

    [Fact]
    public async Task Writing_after_completing_is_refused_clearly()
    {
        await using var path = PathHarness.Create();
        var (atA, _) = path.OpenStream();
        _ = atA.CompleteAsync();
        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () => await atA.WriteAsync(new byte[1], Ct));
        Assert.Contains("completed", error.Message, StringComparison.Ordinal);
    }
}
