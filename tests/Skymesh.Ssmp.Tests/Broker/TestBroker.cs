using System.Net;
using Skymesh.Tests;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>
/// A real broker on 127.0.0.1, port 0. It records what the broker logs; disposing it fails the test when the
/// broker logged an error (an exception it did not expect), so a bug hidden behind "keep serving" still shows.
/// </summary>
internal sealed class TestBroker : IAsyncDisposable
{
    private readonly CapturingLoggerFactory _logs = new();

    private TestBroker(SsmpBrokerOptions options)
    {
        Options = options;
        Broker = new SsmpBroker(options, _logs);
        Broker.Start();
    }

    public SsmpBroker Broker { get; }

    public SsmpBrokerOptions Options { get; }

    public IPEndPoint EndPoint => Broker.LocalEndPoint;

    public int Port => EndPoint.Port;

    public IReadOnlyCollection<string> Errors => _logs.Errors;

    /// <summary>How often the broker logged the warning or error with this event id.</summary>
    public int Logged(int eventId) => _logs.Counts.GetValueOrDefault(eventId);

    public static TestBroker Start(Action<SsmpBrokerOptions>? configure = null, IPEndPoint? listen = null)
    {
        var options = new SsmpBrokerOptions { Listen = listen ?? new IPEndPoint(IPAddress.Loopback, 0) };
        configure?.Invoke(options);
        return new TestBroker(options);
    }

    public Task<RawPeer> ConnectAsync(int? receiveBufferSize = null) => RawPeer.ConnectAsync(EndPoint, receiveBufferSize);

    public Task<RawPeer> LoginAsync(string id, int? receiveBufferSize = null) => RawPeer.LoginAsync(EndPoint, id, receiveBufferSize);

    /// <summary>
    /// Waits for a broker counter to reach a value. Only for states that no byte on the wire reveals (a socket
    /// the broker has accepted but not yet answered); everything else waits on the wire itself.
    /// </summary>
    public Task WaitUntilAsync(Func<BrokerMetricsSnapshot, bool> condition, string what)
    {
        // A condition poll with back-off (SpinWait yields, then sleeps a millisecond), bounded like every read.
        if (!SpinWait.SpinUntil(() => condition(Broker.Snapshot()), RawPeer.ReadTimeout))
            Assert.Fail($"Timed out waiting until {what}; broker counters: {Broker.Snapshot()}");
        return Task.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await Broker.DisposeAsync();
        Assert.True(_logs.Errors.IsEmpty, "The broker logged errors:\n" + string.Join("\n", _logs.Errors));
    }
}
