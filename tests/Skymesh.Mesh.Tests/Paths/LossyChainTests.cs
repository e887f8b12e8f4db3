using System.Diagnostics;
using System.Security.Cryptography;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Paths;

/// <summary>A reliable, end-to-end encrypted stream across three label-switched hops of in-memory links that lose, reorder and duplicate frames.</summary>
public sealed class LossyChainTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task A_hundred_megabytes_cross_three_lossy_hops_byte_identical()
    {
        var net = new MemoryNetwork(TimeProvider.System, seed: 2015);
        var keys = Enumerable.Range(0, 4).Select(_ => NodeKey.Generate()).ToArray();
        var switches = keys.Select(k => new MeshSwitch(k)).ToArray();
        var nics = switches.Select(s =>
        {
            var nic = net.CreateInterface(receiveQueue: 16_384);
            s.AddInterface(nic);
            return nic;
        }).ToArray();
        try
        {
            // Links S-R1, R1-R2, R2-D; each side's view of each link.
            var forward = new Link[3];
            var backward = new Link[3];
            for (var i = 0; i < 3; i++)
            {
                var arrived = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
                var from = keys[i].Address;
                void OnUp(Link l)
                {
                    if (l.Peer == from)
                        arrived.TrySetResult(l);
                }
                switches[i + 1].LinkUp += OnUp;
                forward[i] = await switches[i].ConnectAsync(nics[i], nics[i + 1].EndPoint, keys[i + 1].Address, Ct).WaitAsync(TimeSpan.FromSeconds(20), Ct);
                backward[i] = await arrived.Task.WaitAsync(TimeSpan.FromSeconds(20), Ct);
                switches[i + 1].LinkUp -= OnUp;
            }

            // Every hop, both ways: 5 % loss, 5 % reordered by 2 ms, 2 % duplicated, 0.5-1 ms of latency.
            net.SetDefaultImpairment(new Impairment
            {
                Latency = TimeSpan.FromMilliseconds(0.5),
                Jitter = TimeSpan.FromMilliseconds(0.5),
                Loss = 0.05,
                Reordering = 0.05,
                ReorderDelay = TimeSpan.FromMilliseconds(2),
                Duplication = 0.02,
            });

            // Labels: S -(11)-> R1 -(12)-> R2 -(13)-> D, and back D -(21)-> R2 -(22)-> R1 -(23)-> S.
            var atSource = new LinkPathChannel(forward[0], 11);
            var atDestination = new LinkPathChannel(backward[2], 21);
            switches[0].Labels.Install(forward[0].Id, 23, LabelAction.Deliver(switches[0].RegisterSink(atSource)));
            switches[3].Labels.Install(backward[2].Id, 13, LabelAction.Deliver(switches[3].RegisterSink(atDestination)));
            switches[1].Labels.Install(backward[0].Id, 11, LabelAction.Forward(forward[1].Id, 12));
            switches[2].Labels.Install(backward[1].Id, 12, LabelAction.Forward(forward[2].Id, 13));
            switches[2].Labels.Install(forward[2].Id, 21, LabelAction.Forward(backward[1].Id, 22));
            switches[1].Labels.Install(forward[1].Id, 22, LabelAction.Forward(backward[0].Id, 23));

            var key = RandomNumberGenerator.GetBytes(32);
            var back = RandomNumberGenerator.GetBytes(32);
            await using var source = new PathEndpoint(atSource, new PathEndpointOptions { PeerName = "D" }, new PathCipher(key, back));
            await using var destination = new PathEndpoint(atDestination, new PathEndpointOptions { PeerName = "S", IsInitiator = false }, new PathCipher(back, key));
            atSource.Endpoint = source;
            atDestination.Endpoint = destination;

            const int size = 100 * 1024 * 1024;
            var expected = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var clock = Stopwatch.StartNew();
            var sender = source.OpenStream();
            var writing = Task.Run(async () =>
            {
                var rng = new Random(84);
                var chunk = new byte[256 * 1024];
                for (var sent = 0; sent < size; sent += chunk.Length)
                {
                    rng.NextBytes(chunk);
                    expected.AppendData(chunk);
                    await sender.WriteAsync(chunk, Ct);
                }
                await sender.CompleteAsync(Ct);
            }, Ct);
            var receiver = await destination.AcceptStreamAsync(Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(30), Ct);
            using var actual = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[256 * 1024];
            long received = 0;
            int n;
            try
            {
                while ((n = await receiver.ReadAsync(buffer, Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(60), Ct)) > 0)
                {
                    actual.AppendData(buffer.AsSpan(0, n));
                    received += n;
                }
            }
            catch (TimeoutException)
            {
                throw new Xunit.Sdk.XunitException($"no data for 60 s after {received:N0} bytes; sender {sender.Counters}; receiver {receiver.Counters}; "
                    + $"source {source.Counters}; destination {destination.Counters}; links {string.Join(" | ", forward.Concat(backward).Select(l => l.Info()))}");
            }
            await writing.WaitAsync(TimeSpan.FromSeconds(60), Ct);
            var elapsed = clock.Elapsed;

            Assert.Equal(size, received);
            Assert.Equal(expected.GetHashAndReset(), actual.GetHashAndReset());
            // Bounded time: the path slowed down under loss instead of collapsing.
            Assert.True(elapsed < TimeSpan.FromSeconds(240), $"took {elapsed}");
            var counters = sender.Counters;
            Assert.True(counters.SegmentsRetransmitted > 0, "5 % loss on every hop must have cost retransmissions");
            Assert.True(switches[1].Forwarded > size / 65_536 && switches[2].Forwarded > size / 65_536, $"relays forwarded {switches[1].Forwarded} and {switches[2].Forwarded} messages");
            TestContext.Current.SendDiagnosticMessage($"100 MB over 3 lossy hops in {elapsed.TotalSeconds:0.0} s, {counters.SegmentsRetransmitted} segments retransmitted");
        }
        finally
        {
            foreach (var s in switches)
                await s.DisposeAsync();
            foreach (var k in keys)
                k.Dispose();
        }
    }
}
