using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Paths;

public class PathEndpointTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task An_idle_healthy_path_stays_up_on_a_few_keepalives()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(30), Loss = 0.1 });
        path.Run(TimeSpan.FromMinutes(2));
        Assert.Null(path.A.BrokenBy);
        Assert.Null(path.B.BrokenBy);
        // About one request every 5 s from each side, and an answer to each: a trickle.
        Assert.InRange(path.A.Counters.KeepalivesSent, 10, 60);
        Assert.InRange(path.AtoB.Sent + path.BtoA.Sent, 20, 200);
    }

    [Fact]
    public async Task An_idle_path_that_goes_dead_is_declared_lost_within_the_timeout_and_a_waiting_reader_learns_it()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10) });
        var (_, atB) = path.OpenStream();
        path.Run(TimeSpan.FromSeconds(30));
        var read = atB.ReadAsync(new byte[8], Ct);
        PathBrokenException? raised = null;
        path.B.Broken += (_, error) => raised = error;

        path.AtoB.Dead = true;
        path.BtoA.Dead = true;
        var cut = path.Elapsed;
        Assert.True(path.RunUntil(() => read.IsCompleted, TimeSpan.FromSeconds(60)));

        Assert.InRange(path.Elapsed - cut, TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(15) + TimeSpan.FromMilliseconds(1));
        var error = await Assert.ThrowsAsync<PathBrokenException>(async () => await read);
        Assert.Equal("path to A lost: no acknowledgement for 15 s", error.Message);
        Assert.Same(error, raised);
        Assert.Same(error, path.B.BrokenBy);
        Assert.Throws<PathBrokenException>(() => path.B.OpenStream());
    }

    [Fact]
    public async Task Retargeting_revives_a_lost_path_for_new_streams()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10) });
        path.AtoB.Dead = true;
        path.BtoA.Dead = true;
        Assert.True(path.RunUntil(() => path.A.BrokenBy is not null && path.B.BrokenBy is not null, TimeSpan.FromSeconds(20)));

        path.Repair(new Conditions { Latency = TimeSpan.FromMilliseconds(10) });

        Assert.Null(path.A.BrokenBy);
        var (atA, atB) = path.OpenStream();
        using var transfer = new Transfer(atA, atB, 100_000);
        Assert.True(path.RunUntil(transfer.Pump, TimeSpan.FromSeconds(10)));
        Assert.Equal(transfer.SentHash, transfer.ReceivedHash);
    }

    [Fact]
    public async Task A_datagram_arrives_whole_and_one_too_large_for_the_path_is_refused()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10) });
        var largest = new byte[path.A.Datagrams.MaxDatagramSize];
        largest.AsSpan().Fill(7);
        Assert.True(path.A.Datagrams.TrySend(largest));
        Assert.False(path.A.Datagrams.TrySend(new byte[largest.Length + 1]));
        path.Run(TimeSpan.FromMilliseconds(10));

        Assert.Equal(largest, await path.B.Datagrams.ReceiveAsync(Ct));
        Assert.Equal(1, path.A.Datagrams.Sent);
        Assert.Equal(1, path.B.Datagrams.Received);
    }

    [Fact]
    public async Task Datagrams_the_application_does_not_take_are_dropped_beyond_the_queue_and_counted()
    {
        await using var path = PathHarness.Create(options: new PathEndpointOptions { DatagramQueue = 4 });
        for (var i = 0; i < 10; i++)
            Assert.True(path.A.Datagrams.TrySend([(byte)i]));
        path.Run(TimeSpan.FromMilliseconds(20));

        Assert.Equal(10, path.B.Datagrams.Received);
        Assert.Equal(6, path.B.Datagrams.Dropped);
        for (var i = 0; i < 4; i++)
        {
            Assert.True(path.B.Datagrams.TryReceive(out var datagram));
            Assert.Equal([(byte)i], datagram);
        }
        Assert.False(path.B.Datagrams.TryReceive(out _));
    }

    [Fact]
    public async Task Closing_an_endpoint_aborts_its_streams_and_tells_the_peer()
    {
        await using var path = PathHarness.Create(new Conditions { Latency = TimeSpan.FromMilliseconds(10) });
        var (atA, atB) = path.OpenStream();
        var read = atB.ReadAsync(new byte[8], Ct);
        await path.A.DisposeAsync();
        Assert.True(path.RunUntil(() => read.IsCompleted, TimeSpan.FromSeconds(1)));

        var error = await Assert.ThrowsAsync<StreamAbortedException>(async () => await read);
        Assert.Equal(StreamCloseCode.EndpointClosed, error.Code);
        Assert.True(error.ByPeer);
        Assert.IsType<StreamAbortedException>(atA.Failure);
        Assert.Throws<ObjectDisposedException>(() => path.A.OpenStream());
    }

    /// <summary>A channel that takes every message from any thread and only counts them.</summary>
    private sealed class CountingChannel : IPathChannel
    {
        private long _sent;

        public int MaxPayload => PathHarness.UdpPayload;

        public long Sent => Interlocked.Read(ref _sent);

        public bool TrySend(byte type, ReadOnlySpan<byte> payload)
        {
            Interlocked.Increment(ref _sent);
            return true;
        }
    }

    [Fact]
    public async Task Disposing_while_the_receive_loop_opens_streams_closes_every_stream_it_let_in()
    {
        // A real receive loop runs on its own thread and does not stop because the application disposes the
        // endpoint. Every stream the peer opened must either have been refused or be closed by the disposal;
        // one let in meanwhile and never closed would keep a reader waiting for ever.
        for (var round = 0; round < 20; round++)
        {
            var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
            var endpoint = new PathEndpoint(new CountingChannel(), new PathEndpointOptions { MaxIncomingStreams = 1_000_000 }, time: time);
            var opened = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var stop = new CancellationTokenSource();
            var receiveLoop = Task.Run(() =>
            {
                // The peer (not the initiator) opens even-numbered streams, each with just its end.
                var message = new byte[PathWire.DataHeaderLength];
                for (uint id = 2; !stop.IsCancellationRequested; id += 2)
                {
                    var length = PathWire.WriteData(message, id, fin: true, offset: 0, data: []);
                    endpoint.OnMessage((byte)PathMessageType.StreamData, message.AsSpan(0, length));
                    if (id == 200)
                        opened.TrySetResult();
                }
            }, Ct);
            await opened.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct);

            await endpoint.DisposeAsync();
            await stop.CancelAsync();
            await receiveLoop.WaitAsync(TimeSpan.FromSeconds(30), Ct);

            Assert.Equal(0, endpoint.OpenStreams);
            var accepted = 0;
            while (endpoint.TryAcceptStream(out var stream))
            {
                accepted++;
                var aborted = Assert.IsType<StreamAbortedException>(stream.Failure);
                Assert.Equal(StreamCloseCode.EndpointClosed, aborted.Code);
            }
            Assert.True(accepted >= 100, $"round {round}: {accepted} streams accepted");
        }
    }

    [Fact]
    public void A_path_too_small_for_streams_is_refused_when_the_endpoint_is_made()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        var channel = new SimulatedChannel(time, Conditions.Clean, PathEndpoint.MinMessageRoom + 10, seed: 1);
        using var cipher = new PathCipher(PathHarness.KeyAtoB, PathHarness.KeyBtoA);
        var error = Assert.Throws<ArgumentException>(() => new PathEndpoint(channel, cipher: cipher, time: time));
        Assert.Contains("at least 280", error.Message, StringComparison.Ordinal);
    }
}
