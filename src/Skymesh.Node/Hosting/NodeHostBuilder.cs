using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Control.Bus;
using Skymesh.Control.Bus.Nats;
using Skymesh.Control.Bus.Ssmp;
using Skymesh.Control.Settlement;
using Skymesh.Exchange;
using Skymesh.Identity;
using Skymesh.Ledger;
using Skymesh.Mesh.Apps;
using Skymesh.Node.Control;

namespace Skymesh.Node.Hosting;

/// <summary>
/// The one place a node is put together (docs/node.md, "The node host"). Every part from outside the node is
/// injected, each with a real default: the clock (<see cref="TimeProvider.System"/>), randomness, the key store (the
/// owner-only file in the data directory), the interfaces (sockets, or in-process networks), the control bus (the SSMP
/// broker in node.json, or none), the ledger (SQLite in the data directory) and whether the local API runs. The
/// <c>node</c> command, <c>skymesh demo</c>, the tests and the simulator all start nodes here, so the start order
/// exists once.
/// </summary>
public sealed class NodeHostBuilder
{
    private readonly NodeOptions _options;
    private ILoggerFactory _logging = NullLoggerFactory.Instance;
    private TimeProvider _time = TimeProvider.System;
    private Random? _random;
    private IKeyStore? _keys;
    private IInterfaceFactory _interfaces = InterfaceFactory.Default;
    private IControlBusConnector? _bus;
    private bool _busChosen;
    private Func<TimeProvider, NodeAddress, CancellationToken, Task<ILedger>>? _ledger;
    private bool _api = true;

    public NodeHostBuilder(NodeOptions options) => _options = options ?? throw new ArgumentNullException(nameof(options));

    public NodeOptions Options => _options;

    public NodeHostBuilder UseLogging(ILoggerFactory loggerFactory)
    {
        _logging = loggerFactory ?? throw new ArgumentNullException(nameof(loggerFactory));
        return this;
    }

    /// <summary>Every timer and timeout of the node, its control plane and its bus connection runs on <paramref name="time"/>.</summary>
    public NodeHostBuilder UseTime(TimeProvider time)
    {
        _time = time ?? throw new ArgumentNullException(nameof(time));
        return this;
    }

    /// <summary>
    /// A seeded random source for repeatable runs (simulations): bus message ids, reconnect jitter, path ids and
    /// nonces. Without it, ids and nonces come from the operating system's cryptographic generator.
    /// </summary>
    public NodeHostBuilder UseRandom(Random random)
    {
        _random = random ?? throw new ArgumentNullException(nameof(random));
        return this;
    }

    public NodeHostBuilder UseKeyStore(IKeyStore keys)
    {
        _keys = keys ?? throw new ArgumentNullException(nameof(keys));
        return this;
    }

    public NodeHostBuilder UseInterfaces(IInterfaceFactory interfaces)
    {
        _interfaces = interfaces ?? throw new ArgumentNullException(nameof(interfaces));
        return this;
    }

    /// <summary>The control bus; null runs the node without a control plane (paths by hand only).</summary>
    public NodeHostBuilder UseControlBus(IControlBusConnector? connector)
    {
        _bus = connector;
        _busChosen = true;
        return this;
    }

    /// <summary>
    /// Where receipts settle; by default the SQLite file in the data directory (or node.json's <c>ledger</c>), or the
    /// exchange node.json's <c>settlement</c> names.
    /// </summary>
    public NodeHostBuilder UseLedger(Func<TimeProvider, ILedger> open)
    {
        ArgumentNullException.ThrowIfNull(open);
        _ledger = (time, _, _) => Task.FromResult(open(time));
        return this;
    }

    /// <summary>
    /// Receipts are paid as transfers in <paramref name="asset"/> on <paramref name="ledger"/> (which the caller keeps and
    /// disposes); the latest receipt paid per neighbour is kept in the data directory's settlement.db.
    /// </summary>
    public NodeHostBuilder UseTransferLedger(ITransferLedger ledger, string asset)
    {
        ArgumentNullException.ThrowIfNull(ledger);
        _ledger = async (_, self, cancellationToken) =>
            await TransferSettlement.OpenAsync(ledger, asset, _options.SettlementFile, self, ownsLedger: false, cancellationToken: cancellationToken);
        return this;
    }

    /// <summary>A ledger in memory: nothing settled survives the host.</summary>
    public NodeHostBuilder UseMemoryLedger() => UseLedger(EmbeddedLedger.OpenInMemory);

    /// <summary>Runs no local API (simulations, embedded nodes).</summary>
    public NodeHostBuilder WithoutApi()
    {
        _api = false;
        return this;
    }

    /// <summary>
    /// Starts the node: key, interfaces and links, then the control plane (connecting in the background: a bus that is
    /// away never stops the data plane), then the local API. A part that cannot start (a port in use, a bad key file)
    /// stops what had started and throws.
    /// </summary>
    public async Task<NodeHost> StartAsync(CancellationToken cancellationToken = default)
    {
        var keys = _keys ?? new FileKeyStore(_options.KeyFile);
        if (keys is FileKeyStore || _ledger is null || _api)
        {
            try
            {
                Directory.CreateDirectory(_options.DataDir);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new NodeConfigException("$.dataDir", $"cannot create the data directory {_options.DataDir}: {e.Message}", e);
            }
        }
        var key = keys.LoadOrCreate(out var keyDescription);
        var bus = _busChosen ? _bus : DefaultBus();
        var viaNeighbours = !_busChosen && _options.BusViaNeighbours;
        if (bus is null && !viaNeighbours && _options.Finder is not null)
            throw new InvalidOperationException("$.finder: a route finder is reached over the control bus: set \"broker\" too");
        // The ledger before any port is bound: a ledger that cannot open (a bad exchange directory) stops the node
        // before it has touched the network.
        ILedger ledger;
        MeshNode node;
        // Like the control plane, the exchange is reached in the background: one that is away never stops the node. It
        // comes before the ledger, which may settle through it.
        var exchange = _options.Exchange is { } trading ? NodeExchange.Start(trading, key, _time, _random, _logging) : null;
        try
        {
            ledger = _ledger is not null ? await _ledger(_time, key.Address, cancellationToken)
                : _options.SettlementService && exchange is not null
                    ? new ExchangeSettlement(exchange.CallAsync, key.Address, $"exchange service {exchange.Options.Service} (SKY)")
                    : await DefaultLedgerAsync(_time, key.Address, cancellationToken);
        }
        catch
        {
            if (exchange is not null)
                await exchange.DisposeAsync();
            key.Dispose();
            throw;
        }
        try
        {
            node = MeshNode.Start(_options, key, keyDescription, nic => _interfaces.Open(nic, _time), _logging, _time);
        }
        catch
        {
            ledger.Dispose();
            if (exchange is not null)
                await exchange.DisposeAsync();
            throw;
        }
        node.Random = _random;
        ControlPlane? control = null;
        try
        {
            if (viaNeighbours)
            {
                // The node's own links are its way to the bus: the connector needs the running node.
                var mesh = new MeshBusConnector(node, _options.BrokerPin, _logging);
                node.BusRelay.Upstream = mesh;
                node.BusRelay.NeighbourJoined += _ => mesh.OnNeighbourJoined();
                bus = mesh;
                if (_options.LeafnodeListen is { } leafnodes)
                {
                    try
                    {
                        node.BusRelay.ListenForLeafnodes(leafnodes);
                    }
                    catch (System.Net.Sockets.SocketException e)
                    {
                        throw new NodeConfigException("$.leafnodeListen", e.SocketErrorCode == System.Net.Sockets.SocketError.AddressAlreadyInUse
                            ? $"{leafnodes} is already in use" : $"cannot listen on {leafnodes}: {e.Message}", e);
                    }
                }
            }
            control = bus is null ? null : ControlPlane.Start(node, bus, ledger, _logging);
            if (control is not null)
            {
                node.BusRelay.Control = control;
                node.Nat.Control = control;
                void OnJoined()
                {
                    if (control.Agent?.Bus is { } joined)
                        node.Nat.Serve(joined);
                    node.BusRelay.AnnounceJoined();
                }
                control.Joined += OnJoined;
                // A login that came before the line above (serving twice does no harm).
                if (control.Agent is not null)
                    OnJoined();
            }
            await StartIpRolesAsync(node, control, cancellationToken);
            var read = new NodeReadModel(node, control);
            var api = _api ? await NodeApi.StartAsync(read, _options.Api, exchange) : null;
            return new NodeHost(node, control, api, ledger, read) { Exchange = exchange };
        }
        catch
        {
            if (exchange is not null)
                await exchange.DisposeAsync();
            if (control is not null)
                await control.DisposeAsync();
            ledger.Dispose();
            await node.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// The VPN server and mesh IPv6 node.json asks for, with paths opened through the control plane; and what a VPN
    /// client that crashed left on the host, put back.
    /// </summary>
    private async Task StartIpRolesAsync(MeshNode node, ControlPlane? control, CancellationToken cancellationToken)
    {
        if (control is not null)
        {
            node.Vpn.OpenPath = async (peer, token) =>
            {
                if (node.FindPath(peer) is { } existing)
                    return existing;
                var agent = control.Agent ?? throw new NodeRequestException(NodeError.Unavailable, $"no path to {peer}, and the control plane is not connected to open one ({control.LastError ?? "connecting"})");
                var opened = await agent.OpenPathAsync(peer, null, token);
                return node.FindPath(peer) ?? throw new NoPathException($"the path to {peer} (path {opened.Id}) went down as soon as it was opened");
            };
        }
        if (File.Exists(Vpn.VpnClient.StateFile(_options.DataDir)))
        {
            foreach (var undone in Vpn.VpnHostState.CleanUp(Vpn.VpnClient.StateFile(_options.DataDir), node.Vpn.Host))
                node.Events.Append(Events.NodeEventKind.VpnDown, $"a VPN client that did not stop cleanly: {undone}");
        }
        if (_options.VpnServe is { } serve)
        {
            try
            {
                await node.Vpn.ServeAsync(serve, cancellationToken);
            }
            catch (NodeRequestException e)
            {
                throw new NodeConfigException("$.vpn", e.Message, e);
            }
        }
        if (_options.Ipv6 is { } ipv6)
        {
            try
            {
                node.Vpn.StartIpv6(ipv6);
            }
            catch (Exception e) when (e is IOException or PlatformNotSupportedException or NodeRequestException)
            {
                throw new NodeConfigException("$.ipv6", "cannot give the node its mesh IPv6 address: " + e.Message, e);
            }
            node.Vpn.Ipv6!.OpenPath = node.Vpn.OpenPath;
            node.Vpn.Ipv6.KnownNodes = () => control?.Agent?.Graph.Records.Select(r => r.Node) ?? [];
        }
    }

    /// <summary>The ledger node.json names: an exchange's directory, or the embedded SQLite file.</summary>
    private async Task<ILedger> DefaultLedgerAsync(TimeProvider time, NodeAddress self, CancellationToken cancellationToken)
    {
        if (_options.SettlementExchange is not { } directory)
        {
            try
            {
                return EmbeddedLedger.Open(_options.LedgerFile, time);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or Microsoft.Data.Sqlite.SqliteException)
            {
                throw new NodeConfigException(_options.Ledger is null ? "$.dataDir" : "$.ledger", $"cannot open the ledger {_options.LedgerFile}: {e.Message}", e);
            }
        }
        ExchangeStore exchange;
        try
        {
            exchange = ExchangeStore.Open(directory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            throw new NodeConfigException("$.settlement.exchange", $"cannot open the exchange in {directory}: {e.Message}", e);
        }
        try
        {
            return await TransferSettlement.OpenAsync(exchange, _options.SettlementAsset, _options.SettlementFile, self, ownsLedger: true,
                $"exchange {directory} ({_options.SettlementAsset})", cancellationToken);
        }
        catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException or Microsoft.Data.Sqlite.SqliteException or InvalidDataException)
        {
            exchange.Dispose();
            throw new NodeConfigException(e is ArgumentException ? "$.settlement.asset" : "$.dataDir", $"cannot settle on the exchange in {directory}: {NodeConfigException.Reason(e)}", e);
        }
    }

    private IControlBusConnector? DefaultBus() =>
        _options.Broker is { } broker ? ControlBusConnectors.For(broker, _options.BrokerName, _time, _random, _logging) : null;
}

/// <summary>A running node and the parts the host put around it; disposing stops them in the reverse order.</summary>
public sealed class NodeHost : IAsyncDisposable
{
    private int _disposed;

    internal NodeHost(MeshNode node, ControlPlane? control, NodeApi? api, ILedger ledger, NodeReadModel read)
    {
        Node = node;
        Read = read;
        Control = control;
        Api = api;
        Ledger = ledger;
    }

    public MeshNode Node { get; }

    /// <summary>What the node shows of itself, as the local API serves it.</summary>
    public NodeReadModel Read { get; }

    /// <summary>The control plane; null when the node has no control bus.</summary>
    public ControlPlane? Control { get; }

    /// <summary>The control agent while the node is on its bus.</summary>
    public ControlAgent? Agent => Control?.Agent;

    /// <summary>The local API; null when the host runs without one.</summary>
    public NodeApi? Api { get; }

    /// <summary>Where this node's receipts settle; it outlives reconnections of the control plane.</summary>
    public ILedger Ledger { get; }

    /// <summary>The node's account on the exchange node.json's <c>exchange</c> names; null without one.</summary>
    public NodeExchange? Exchange { get; internal init; }

    /// <summary>Completes once the control agent is first on the bus (at once when there is no bus to wait for: it throws).</summary>
    public async Task<ControlAgent> WaitForControlAsync(CancellationToken cancellationToken)
    {
        var control = Control ?? throw new InvalidOperationException("This node has no control bus.");
        await control.WaitConnectedAsync(cancellationToken);
        return control.Agent ?? throw new InvalidOperationException("The control agent left the bus again.");
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        if (Api is not null)
            await Api.DisposeAsync();
        // The control plane first: its settlement may pay through the exchange connection.
        if (Control is not null)
            await Control.DisposeAsync();
        if (Exchange is not null)
            await Exchange.DisposeAsync();
        await Node.DisposeAsync();
        Ledger.Dispose();
    }
}

/// <summary>The control bus a <c>broker</c> setting names: an SSMP broker (<c>host:port</c>) or a NATS cluster (<c>nats://…</c>).</summary>
public static class ControlBusConnectors
{
    /// <summary>The connector for <paramref name="broker"/>; null when it is neither form.</summary>
    /// <param name="serverName">The SSMP broker's name, which a key login signs (unused on NATS).</param>
    public static IControlBusConnector? For(string broker, string serverName, TimeProvider? time = null, Random? random = null, ILoggerFactory? logging = null)
    {
        if (NodeOptions.NatsServers(broker) is { } servers)
            return new NatsBusConnector(servers, new NatsControlBusOptions { Time = time, LoggerFactory = logging });
        if (!ServiceWire.TryParseTarget(broker, out var host, out var port))
            return null;
        return new SsmpBusConnector(host, port, new SsmpControlBusOptions { ServerName = serverName, Time = time, Random = random, LoggerFactory = logging });
    }
}
