using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Ssmp.Client;

namespace Skymesh.Node.Control;

/// <summary>
/// Keeps a node's control agent connected, whatever the broker does. A mesh node switches traffic and keeps its
/// links and paths without a control plane; so a broker that is not running, refuses the login, or goes away for
/// good never stops the node: this retries with backoff (0.5 s doubling to 30 s), logs once per change of state,
/// and says where it stands (<see cref="State"/>, <see cref="LastError"/>) for <c>skymesh status</c> and
/// <c>/metrics</c>. Once an agent is logged in, its client reconnects by itself; when that client gives up (the
/// broker refused its re-login), the agent is dropped and this starts over.
/// </summary>
public sealed partial class ControlPlane : IAsyncDisposable
{
    private static readonly TimeSpan FirstRetry = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan LastRetry = TimeSpan.FromSeconds(30);

    private readonly MeshNode _node;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _lost = new(0);
    private readonly TaskCompletionSource _firstConnected = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _loop = Task.CompletedTask;
    private volatile ControlAgent? _agent;
    private volatile string? _lastError;
    private long _attempts;
    private long _connects;
    private long _failures;

    private ControlPlane(MeshNode node, ILoggerFactory? loggerFactory)
    {
        _node = node;
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger("Skymesh.Node.Control");
    }

    /// <summary>The broker in the node's configuration.</summary>
    public string Broker => _node.Options.Broker ?? "";

    /// <summary>The agent while logged in; null while connecting.</summary>
    public ControlAgent? Agent => _agent;

    public bool Connected => _agent is { } agent && agent.ClientState == SsmpClientState.Connected;

    /// <summary><c>connected</c>, <c>reconnecting</c> (the agent's client lost the broker and is dialling again) or <c>connecting</c>.</summary>
    public string State => _agent is { } agent ? (agent.ClientState == SsmpClientState.Connected ? "connected" : "reconnecting") : "connecting";

    /// <summary>Why the last attempt to reach or log into the broker failed; null once logged in.</summary>
    public string? LastError => _lastError;

    /// <summary>Attempts to log in so far, and how many succeeded.</summary>
    public long Attempts => Interlocked.Read(ref _attempts);

    public long Connects => Interlocked.Read(ref _connects);

    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>A line for people: "connected to B", or "connecting to B (last error: …)".</summary>
    public string Describe() => _agent is { } agent
        ? (agent.ClientState == SsmpClientState.Connected ? $"connected to {Broker}" : $"reconnecting to {Broker}")
        : $"connecting to {Broker}" + (_lastError is { } error ? $" (last error: {error})" : "");

    /// <summary>Starts keeping the node's agent connected; returns at once, the first login happens in the background.</summary>
    public static ControlPlane Start(MeshNode node, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(node);
        if (node.Options.Broker is null)
            throw new InvalidOperationException("The node has no broker configured.");
        var plane = new ControlPlane(node, loggerFactory);
        plane._loop = Task.Run(plane.RunAsync);
        return plane;
    }

    /// <summary>A control plane around an agent already logged in (tests, the demo).</summary>
    public static ControlPlane Of(ControlAgent agent, MeshNode node)
    {
        ArgumentNullException.ThrowIfNull(agent);
        var plane = new ControlPlane(node, null) { _agent = agent };
        plane._firstConnected.TrySetResult();
        return plane;
    }

    /// <summary>Completes when the agent first logs in.</summary>
    public Task WaitConnectedAsync(CancellationToken cancellationToken) => _firstConnected.Task.WaitAsync(cancellationToken);

    private async Task RunAsync()
    {
        var delay = FirstRetry;
        while (!_stop.IsCancellationRequested)
        {
            ControlAgent agent;
            try
            {
                Interlocked.Increment(ref _attempts);
                agent = await ControlAgent.StartAsync(_node, _loggerFactory, _stop.Token);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is SsmpException or SocketException or IOException or TimeoutException or OperationCanceledException)
            {
                Interlocked.Increment(ref _failures);
                var reason = e.Message;
                // Once per change: a broker that stays away for a day does not fill the log.
                if (reason != _lastError)
                    Log.Unreachable(_logger, Broker, reason, delay.TotalSeconds);
                _lastError = reason;
                try
                {
                    await Task.Delay(delay, _node.Time, _stop.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, LastRetry.Ticks));
                continue;
            }
            delay = FirstRetry;
            _lastError = null;
            Interlocked.Increment(ref _connects);
            agent.GaveUp += () => _lost.Release();
            _agent = agent;
            _firstConnected.TrySetResult();
            try
            {
                // Until the agent's own client gives up on the broker (a refused re-login), or the node stops.
                await _lost.WaitAsync(_stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            _agent = null;
            _lastError = "the broker refused the node's login after a reconnect";
            Log.AgentLost(_logger, Broker);
            await agent.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        await _stop.CancelAsync();
        await _loop;
        if (_agent is { } agent)
            await agent.DisposeAsync();
        _stop.Dispose();
        _lost.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 730, Level = LogLevel.Warning, Message = "Control plane: cannot log into the SSMP broker at {Broker}: {Reason}; the node goes on forwarding and tries again (next in {Seconds:0.#} s, backing off to 30 s)")]
        public static partial void Unreachable(ILogger logger, string broker, string reason, double seconds);

        [LoggerMessage(EventId = 731, Level = LogLevel.Warning, Message = "Control plane: the broker at {Broker} refused the node after a reconnect; starting over")]
        public static partial void AgentLost(ILogger logger, string broker);
    }
}
