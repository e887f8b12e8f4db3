using System.Text;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>
/// A broker gives back what a burst made it hold: a queue grown towards a reader that fell behind is returned
/// when the reader catches up, and once traffic stops the memory goes back to the system (docs/ssmp-broker.md,
/// "Memory"). How much the process allocates is the one thing replaced here, so that other tests running at
/// the same time cannot make this broker look busy or quiet.
/// </summary>
public sealed class MemoryTests
{
    private const long MiB = 1024 * 1024;

    [Fact]
    public async Task A_queue_grown_for_a_reader_that_fell_behind_is_given_back_and_the_memory_released_once_traffic_stops()
    {
        var time = new FakeTimeProvider();
        long allocated = 0;
        await using var broker = TestBroker.Start(o =>
        {
            o.TimeProvider = time;
            o.AllocatedBytes = () => Interlocked.Read(ref allocated);
        });
        await using var reader = await broker.LoginAsync("reader", receiveBufferSize: 64 * 1024);
        await reader.SendAsync("SUBSCRIBE t\n");
        await reader.ExpectLineAsync("200");
        await using var publisher = await broker.LoginAsync("publisher");

        // 6 MB for a reader that reads nothing meanwhile: more than the kernel buffers between them hold
        // (4 MiB at most), so megabytes wait in the broker's queue for it.
        var padding = new string('p', 1000);
        const int events = 6000;
        await publisher.PublishNumberedAsync("t", events, padding);
        var queued = broker.Broker.Snapshot().LargeBufferBytes;
        Assert.True(queued >= MiB, $"the broker holds {queued} bytes in large buffers for the reader");

        // Busy: the process keeps allocating, so however long that lasts, nothing is released.
        for (var second = 0; second < 10; second++)
        {
            Interlocked.Add(ref allocated, 100 * MiB);
            time.Advance(TimeSpan.FromSeconds(1));
        }
        Assert.Equal(0, broker.Broker.Snapshot().MemoryReleases);

        // The reader catches up, every event in order; its queue is given back.
        for (var i = 0; i < events; i++)
            await reader.ExpectLineAsync($"000 publisher MCAST t {i} {padding}");
        await broker.WaitUntilAsync(s => s.LargeBufferBytes == 0, "the reader's queue has been given back");

        // Quiet: nothing more is allocated. Released once, after the quiet time and not before.
        var waited = TimeSpan.Zero;
        while (waited < BrokerBuffers.QuietTime - TimeSpan.FromSeconds(1))
        {
            time.Advance(TimeSpan.FromSeconds(1));
            waited += TimeSpan.FromSeconds(1);
            Assert.Equal(0, broker.Broker.Snapshot().MemoryReleases);
        }
        for (var second = 0; second < 3; second++)
            time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(1, broker.Broker.Snapshot().MemoryReleases);

        // Staying quiet does not release again; the broker still serves.
        for (var second = 0; second < 5; second++)
            time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(1, broker.Broker.Snapshot().MemoryReleases);
        await publisher.SendAsync("MCAST t after hello\n");
        await publisher.ExpectLineAsync("200");
        await reader.ExpectLineAsync("000 publisher MCAST t after hello");
    }
}
