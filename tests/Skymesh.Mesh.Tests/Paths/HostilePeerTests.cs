using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Paths;

/// <summary>What a broken or hostile peer (or anything on the way) may put on a path: dropped, counted, never thrown.</summary>
public class HostilePeerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    // Stream 1 is open (A opened it, B accepted it; each side has sent or received one byte).
    public static TheoryData<string, bool, byte, string> Malformed => new()
    {
        { "an empty data message", false, 17, "" },
        { "a data header cut short", false, 17, "0000000100000000" },
        { "an acknowledgement cut short", true, 18, "00000001000000000000000001" },
        { "a close cut short", true, 19, "000000010000" },
        { "a keepalive cut short", false, 20, "00" },
        { "a keepalive with a byte too many", false, 20, "00" + "0000000000000001" + "00" },
        { "an unknown type", false, 99, "0000000100" },
        { "a link control type on a path label", false, 4, "" },
        { "a reserved data flag", false, 17, "00000001" + "80" + "0000000000000001" + "41" },
        { "data far beyond the receive window", false, 17, "00000001" + "00" + "0000010000000000" + "41" },
        { "an offset of 2^62 or more", false, 17, "00000001" + "00" + "4000000000000000" + "41" },
        { "data on stream id 0", false, 17, "00000000" + "00" + "0000000000000000" + "41" },
        { "data on an id of B's own that B never opened", false, 17, "00000064" + "00" + "0000000000000000" + "41" },
        { "an end below data already received", false, 17, "00000001" + "01" + "0000000000000000" },
        { "an acknowledgement of bytes A never sent", true, 18, "00000001" + "00" + "00000000000f4240" + "0000000000100000" + "00" },
        { "a SACK block beyond what A sent", true, 18, "00000001" + "00" + "0000000000000001" + "0000000000100000" + "01" + "0000000a00000010" },
        { "an acknowledgement of an end A never sent", true, 18, "00000001" + "01" + "0000000000000001" + "0000000000100000" + "00" },
        { "a SACK block count past the limit", true, 18, "00000001" + "00" + "0000000000000001" + "0000000000100000" + "11" },
        { "a close whose reason runs past the end", true, 19, "00000001" + "00" + "0000" + "10" + "41" },
        { "a close reason that is not UTF-8", true, 19, "00000001" + "00" + "0000" + "01" + "ff" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public async Task A_malformed_message_is_dropped_and_counted_and_the_stream_keeps_working(string what, bool toA, byte type, string hex)
    {
        _ = what;
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10) });
        var (atA, atB) = path.OpenStream();
        path.Run(TimeSpan.FromMilliseconds(100));
        var target = toA ? path.A : path.B;
        var before = target.Counters;

        target.OnMessage(type, Convert.FromHexString(hex));

        var after = target.Counters;
        Assert.Equal(before.MessagesDropped + 1, after.MessagesDropped);
        if (type is < 16 or > 20)
            Assert.Equal(before.UnknownTypes + 1, after.UnknownTypes);
        Assert.Null(atA.Failure);
        Assert.Null(atB.Failure);
        using var transfer = new Transfer(atA, atB, 200_000);
        Assert.True(path.RunUntil(transfer.Pump, TimeSpan.FromSeconds(30)));
        Assert.Equal(transfer.SentHash, transfer.ReceivedHash);
    }

    [Fact]
    public async Task A_storm_of_scattered_segments_cannot_make_the_receiver_track_unbounded_holes()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10) });
        var (_, atB) = path.OpenStream();
        var before = path.B.Counters.MessagesDropped;
        var message = new byte[PathWire.DataHeaderLength + 1];
        // 3,000 one-byte segments with a hole before each: only the first 1,024 holes are tracked.
        for (var i = 0; i < 3000; i++)
        {
            PathWire.WriteData(message, 1, fin: false, 3 + 2L * i, [0x41]);
            path.B.OnMessage((byte)PathMessageType.StreamData, message);
        }
        Assert.Equal(3000 - 1024, path.B.Counters.MessagesDropped - before);
        Assert.Equal(3000 - 1024, atB.Counters.MessagesDropped);
        Assert.Null(atB.Failure);
    }

    [Fact]
    public async Task A_peer_cannot_open_more_streams_than_allowed_and_the_opener_learns_why()
    {
        await using var path = PathHarness.Create(options: new PathEndpointOptions { MaxIncomingStreams = 2 });
        var streams = Enumerable.Range(0, 4).Select(_ => path.A.OpenStream()).ToArray();
        foreach (var stream in streams)
            Assert.True(stream.WriteAsync(new byte[] { 1 }, Ct).IsCompletedSuccessfully);
        path.Run(TimeSpan.FromSeconds(1));

        Assert.Equal(2, path.B.Counters.StreamsRefused);
        Assert.Equal(2, path.B.OpenStreams);
        Assert.Null(streams[0].Failure);
        Assert.Null(streams[1].Failure);
        foreach (var refused in streams[2..])
        {
            var error = Assert.IsType<StreamAbortedException>(refused.Failure);
            Assert.Equal(StreamCloseCode.Refused, error.Code);
            Assert.Equal($"stream {refused.Id} aborted by the peer: more than 2 streams open", error.Message);
        }
    }

    [Fact]
    public async Task Data_for_a_stream_that_ended_gets_an_answer_not_a_new_stream()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10) });
        var (atA, atB) = path.OpenStream();
        atA.Abort("done with it");
        Assert.True(path.RunUntil(() => path.B.OpenStreams == 0 && path.A.OpenStreams == 0, TimeSpan.FromSeconds(5)));
        var closesBefore = path.BtoA.Sent;

        // A late (or replayed) segment of the aborted stream: B answers with a close and opens nothing.
        var message = new byte[PathWire.DataHeaderLength + 1];
        PathWire.WriteData(message, atB.Id, fin: false, 1, [0x41]);
        path.B.OnMessage((byte)PathMessageType.StreamData, message);

        Assert.Equal(closesBefore + 1, path.BtoA.Sent);
        Assert.Equal(0, path.B.OpenStreams);
        Assert.False(path.B.TryAcceptStream(out _));
        Assert.Equal(0, path.B.Counters.MessagesDropped);
    }
}
