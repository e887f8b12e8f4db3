using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Control.Bus;
using Skymesh.Control.Settlement;
using Skymesh.Identity;

namespace Skymesh.Node.Control;

/// <summary>
/// Keeps a node's control agent connected, whatever the control bus does. A mesh node switches traffic and keeps its
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
    private readonly IControlBusConnector _connector;
    private readonly ILedger _ledger;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly AsyncSignal _lost = new();
    private readonly TaskCompletionSource _firstConnected = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _loop = Task.CompletedTask;
    private volatile ControlAgent? _agent;
    private volatile string? _lastError;
    private long _attempts;
    private long _connects;
    private long _failures;

    private ControlPlane(MeshNode node, IControlBusConnector connector, ILedger ledger, ILoggerFactory? loggerFactory)
    {
        _node = node;
        _connector = connector;
        _ledger = ledger;
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger("Skymesh.Node.Control");
    }

    /// <summary>The broker in the node's configuration, or where the bus is when it names none.</summary>
    public string Broker => _connector is MeshBusConnector mesh ? mesh.Describe : _node.Options.Broker ?? _connector.Describe;

    /// <summary>The connector the control plane joins the bus with.</summary>
    public IControlBusConnector Connector => _connector;

    /// <summary>Raised each time the node is on the bus again: at each login, and when its connection comes back.</summary>
    public event Action? Joined;

    /// <summary>The agent while logged in; null while connecting.</summary>
    public ControlAgent? Agent => _agent;

    public bool Connected => _agent is { } agent && agent.BusState == BusState.Connected;

    /// <summary><c>connected</c>, <c>reconnecting</c> (the agent's client lost the broker and is dialling again) or <c>connecting</c>.</summary>
    public string State => _agent is { } agent ? (agent.BusState == BusState.Connected ? "connected" : "reconnecting") : "connecting";

    /// <summary>Why the last attempt to reach or log into the broker failed; null once logged in.</summary>
    public string? LastError => _lastError;

    /// <summary>Attempts to log in so far, and how many succeeded.</summary>
    public long Attempts => Interlocked.Read(ref _attempts);

    public long Connects => Interlocked.Read(ref _connects);

    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>A line for people: "connected to B", or "connecting to B (last error: …)".</summary>
    public string Describe() => _agent is { } agent
        ? (agent.BusState == BusState.Connected ? $"connected to {Broker}" : $"reconnecting to {Broker}")
        : $"connecting to {Broker}" + (_lastError is { } error ? $" (last error: {error})" : "");

    /// <summary>Starts keeping the node's agent connected; returns at once, the first login happens in the background.</summary>
    public static ControlPlane Start(MeshNode node, IControlBusConnector connector, ILedger ledger, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(connector);
        ArgumentNullException.ThrowIfNull(ledger);
        var plane = new ControlPlane(node, connector, ledger, loggerFactory);
        plane._loop = Background.Run(plane.RunAsync);
        return plane;
    }

    /// <summary>Completes when the agent first logs in.</summary>
    public Task WaitConnectedAsync(CancellationToken cancellationToken) => Background.WaitAsync(_firstConnected.Task, cancellationToken);

    private async Task RunAsync()
    {
        var delay = FirstRetry;
        while (!_stop.IsCancellationRequested)
        {
            ControlAgent agent;
            try
            {
                Interlocked.Increment(ref _attempts);
                var bus = await _connector.ConnectAsync(_node.Key, _stop.Token);
                try
                {
                    agent = await ControlAgent.StartAsync(_node, bus, _ledger, _loggerFactory, _stop.Token);
                }
                catch
                {
                    await bus.DisposeAsync();
                    throw;
                }
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                // Whatever a connector throws — a bus away, a refusal, or a bug — the node keeps trying: a control plane
                // that stopped here would leave the node off the bus for good, without a word.
                if (e is not (ControlBusException or SocketException or IOException or TimeoutException or OperationCanceledException))
                    Log.ConnectorFailed(_logger, Broker, e);
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
            agent.Rejoined += () => Joined?.Invoke();
            _agent = agent;
            Joined?.Invoke();
            _node.Events.Append(Events.NodeEventKind.ControlConnected, $"control agent on the control bus at {Broker}");
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
            _lastError = "the control bus closed the connection (a refused re-login, or dropped)";
            Log.AgentLost(_logger, Broker);
            _node.Events.Append(Events.NodeEventKind.ControlLost, $"the control bus at {Broker} closed the node's connection; connecting again");
            await agent.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        await Background.CancelAsync(_stop);
        await _loop;
        if (_agent is { } agent)
            await agent.DisposeAsync();
        _stop.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 730, Level = LogLevel.Warning, Message = "Control plane: cannot join the control bus at {Broker}: {Reason}; the node goes on forwarding and tries again (next in {Seconds:0.#} s, backing off to 30 s)")]
        public static partial void Unreachable(ILogger logger, string broker, string reason, double seconds);

        [LoggerMessage(EventId = 732, Level = LogLevel.Error, Message = "Control plane: joining the control bus at {Broker} failed unexpectedly; trying again")]
        public static partial void ConnectorFailed(ILogger logger, string broker, Exception error);

        [LoggerMessage(EventId = 731, Level = LogLevel.Warning, Message = "Control plane: the control bus at {Broker} closed the node's connection (a refused re-login, or dropped); starting over")]
        public static partial void AgentLost(ILogger logger, string broker);
    }
}
