using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using Skymesh.Identity;
using Skymesh.Mesh.Apps;

namespace Skymesh.Node;

/// <summary>node.json as written by the operator (docs/node.md). Every field but the interfaces is optional.</summary>
public sealed class NodeConfigFile
{
    /// <summary>Where the node keeps its key (node.key) and state; relative to the config file. Default: the config file's directory.</summary>
    public string? DataDir { get; set; }

    /// <summary>The local API (HTTP, JSON, /metrics) address; loopback only unless the operator means otherwise. Default 127.0.0.1:7300.</summary>
    public string? Api { get; set; }

    /// <summary>The SSMP broker of the control plane (host:port), used by the control agent.</summary>
    public string? Broker { get; set; }

    /// <summary>The broker's name, which the node's `key` login signs (default "skymesh", as `skymesh broker --name`).</summary>
    public string? BrokerName { get; set; }

    /// <summary>With "broker": "via-neighbours": the fingerprint of the broker's TLS key (sha256:…) the node trusts; default the first it meets.</summary>
    public string? BrokerPin { get; set; }

    /// <summary>What this node relays of the control bus for neighbours that reach it through it.</summary>
    public BusRelayConfig? BusRelay { get; set; }

    /// <summary>What this node relays of links between others that cannot reach each other (behind NATs).</summary>
    public LinkRelayConfig? LinkRelay { get; set; }

    /// <summary>
    /// With "broker": "via-neighbours": where a NATS server beside this node connects as a leaf node (its leafnode
    /// remote), to be carried through the neighbours to the cluster's leafnode port.
    /// </summary>
    public string? LeafnodeListen { get; set; }

    /// <summary>A dedicated route finder's node address; without one the node keeps the whole graph itself.</summary>
    public string? Finder { get; set; }

    /// <summary>Encrypt link frames (a link is encrypted when both ends ask). Default true.</summary>
    public bool? Encrypt { get; set; }

    /// <summary>Recover lost frames on each link (asks for missing frames, resends on request). Default true.</summary>
    public bool? LinkRecovery { get; set; }

    public List<InterfaceConfig>? Interfaces { get; set; }

    public List<PeerConfig>? Peers { get; set; }

    /// <summary>Discovery of neighbours by signed beacons on a LAN; off unless given.</summary>
    public DiscoveryConfig? Discovery { get; set; }

    /// <summary>Targets this node connects to for streams arriving on its paths (host:port rules); default none.</summary>
    public List<string>? Exits { get; set; }

    /// <summary>What this node offers the mesh in its signed service record (docs/node.md, "Services"); default nothing.</summary>
    public List<ServiceConfig>? Services { get; set; }

    /// <summary>Seconds between link keepalives (default 1).</summary>
    public double? KeepaliveSeconds { get; set; }

    /// <summary>Seconds of silence after which a link is declared down (default 5).</summary>
    public double? DeadAfterSeconds { get; set; }

    /// <summary>Seconds a label entry lives without traffic (default 60).</summary>
    public double? LabelLifetimeSeconds { get; set; }

    /// <summary>Seconds without any answer after which a path end declares the path lost (default 15).</summary>
    public double? PathTimeoutSeconds { get; set; }

    /// <summary>Apps (port forwards, SOCKS servers) the node runs at once at most (default 64).</summary>
    public int? MaxApps { get; set; }

    /// <summary>What this node charges to forward one MiB, in micro-units of the settlement coin (default 0).</summary>
    public uint? Price { get; set; }

    /// <summary>Kilobits per second this node offers to forward onto each link (default 1,000,000).</summary>
    public uint? CapacityKbps { get; set; }

    /// <summary>Seconds between refreshes of this node's link announcement (default 30; records live four times as long).</summary>
    public double? AnnounceSeconds { get; set; }

    /// <summary>What a neighbour may owe (micro-units) beyond its receipts before it is throttled and then suspended (default 10,000).</summary>
    public long? CreditLimit { get; set; }

    /// <summary>The embedded ledger's file (default ledger.db in the data directory).</summary>
    public string? Ledger { get; set; }

    /// <summary>Where neighbours' receipts are paid: absent, on the embedded ledger (which records who owes whom); or on an exchange.</summary>
    public SettlementConfig? Settlement { get; set; }

    /// <summary>How the node settles by itself what would otherwise wait for a person (docs/dashboard.md, "Decisions").</summary>
    public DecisionsConfig? Decisions { get; set; }

    /// <summary>An exchange service the node trades on as its own account (the dashboard's Exchange page); none unless given.</summary>
    public ExchangeConfig? Exchange { get; set; }

    /// <summary>Serve the VPN (docs/vpn.md).</summary>
    public Vpn.VpnConfig? Vpn { get; set; }

    /// <summary>The node's mesh IPv6 address (docs/vpn.md).</summary>
    public Vpn.Ipv6Config? Ipv6 { get; set; }
}

public sealed class LinkRelayConfig
{
    /// <summary>Relay links for neighbours (default true).</summary>
    public bool? Enabled { get; set; }

    /// <summary>Relayed links one neighbour may ask for at once (default 8).</summary>
    public int? MaxPerNeighbour { get; set; }

    /// <summary>Bytes a second one relayed link may carry (default 4 MiB).</summary>
    public int? BytesPerSecond { get; set; }
}

public sealed class BusRelayConfig
{
    /// <summary>Relay the control bus for neighbours (default true).</summary>
    public bool? Enabled { get; set; }

    /// <summary>Tunnels one neighbour may hold through this node at once (default 64).</summary>
    public int? MaxTunnelsPerNeighbour { get; set; }

    /// <summary>Bytes a second relayed for one neighbour (default 1 MiB).</summary>
    public int? BytesPerSecondPerNeighbour { get; set; }

    /// <summary>On a node on a NATS cluster directly: its server's leafnode port (host:port), for leaf-node tunnels from elsewhere in the mesh.</summary>
    public string? Leafnodes { get; set; }
}

public sealed class ExchangeConfig
{
    /// <summary>The exchange's SSMP id (what <c>skymesh exchange serve</c> prints, or its <c>--id</c>).</summary>
    public string? Service { get; set; }

    /// <summary>The SSMP broker the exchange is on, host:port (default: the node's own <c>broker</c>, when that is host:port).</summary>
    public string? Broker { get; set; }

    /// <summary>That broker's name (default: the node's <c>brokerName</c>).</summary>
    public string? BrokerName { get; set; }

    /// <summary>The exchange's topic prefix, its <c>--name</c> (default "exchange").</summary>
    public string? Name { get; set; }
}

public sealed class DecisionsConfig
{
    /// <summary>A node that is not in <c>peers</c> asks to link: accept (default), ask, or refuse.</summary>
    public string? Neighbours { get; set; }

    /// <summary>A neighbour reaches its credit limit: keep (default) or ask.</summary>
    public string? Credit { get; set; }

    /// <summary>A peer asks for a destination the exit rules do not allow: refuse (default) or ask.</summary>
    public string? Exits { get; set; }

    /// <summary>A path costs more than maxPathPrice: pay (default), cheaper, or ask.</summary>
    public string? Price { get; set; }

    /// <summary>The most a path may cost per MiB before "price" applies; absent for no cap.</summary>
    public ulong? MaxPathPrice { get; set; }
}

public sealed class SettlementConfig
{
    /// <summary>The directory of an exchange (made by <c>skymesh exchange</c>) whose accounts pay the receipts; this node holds it open.</summary>
    public string? Exchange { get; set; }

    /// <summary>The asset receipts are paid in (default SKY); it needs at least 6 decimal places.</summary>
    public string? Asset { get; set; }

    /// <summary>
    /// True: hand the receipts to the running exchange service that the <c>exchange</c> section names (its <c>settle</c>
    /// method), which pays this node's account there from the payers' — instead of an exchange directory.
    /// </summary>
    public bool? Service { get; set; }

    /// <summary>
    /// What a neighbour may owe in all beyond what the exchange has paid, micro-units, before it is throttled and then
    /// suspended (default 10 × creditLimit): a neighbour whose account cannot pay is cut off here.
    /// </summary>
    public long? Limit { get; set; }
}

public sealed class InterfaceConfig
{
    public string? Name { get; set; }

    /// <summary>udp, tcp, or memory (an in-process network, for tests and simulations).</summary>
    public string? Type { get; set; }

    /// <summary>host:port to bind (port 0 takes a free one); for memory, <c>mem:N</c> or nothing (a free port).</summary>
    public string? Listen { get; set; }

    public int? Mtu { get; set; }

    /// <summary>memory only: the name of the in-process network (interfaces of one name reach each other). Default "default".</summary>
    public string? Network { get; set; }

    /// <summary>memory only: how frames sent from this interface misbehave.</summary>
    public ImpairmentConfig? Impairment { get; set; }
}

public sealed class ImpairmentConfig
{
    public double? LatencyMs { get; set; }

    public double? JitterMs { get; set; }

    /// <summary>Share of frames lost, 0 to 1.</summary>
    public double? Loss { get; set; }

    public double? Duplication { get; set; }

    public double? Reordering { get; set; }

    /// <summary>0 or absent: unlimited.</summary>
    public long? BandwidthKbps { get; set; }
}

public sealed class DiscoveryConfig
{
    /// <summary>Broadcast and listen for beacons (default false: on a public network it would invite strangers).</summary>
    public bool? Beacons { get; set; }

    /// <summary>Where beacons are sent: a broadcast (or multicast) address and port (default 255.255.255.255:7399).</summary>
    public string? Address { get; set; }

    /// <summary>The UDP interface whose port the beacons announce and whose links they make (default: the first UDP one).</summary>
    public string? Interface { get; set; }

    /// <summary>Seconds between beacons (default 5).</summary>
    public double? IntervalSeconds { get; set; }
}

/// <summary>One service the node offers: <c>{"kind": "vpn", "price": 200, "region": "eu-west", "maxMbps": 50, "maxSessions": 10}</c>.</summary>
public sealed class ServiceConfig
{
    /// <summary>exit, socks, vpn or app.</summary>
    public string? Kind { get; set; }

    /// <summary>An app's name (1 to 32 bytes); apps only.</summary>
    public string? Name { get; set; }

    /// <summary>An app's port on this node; apps only.</summary>
    public int? Port { get; set; }

    /// <summary>What the service costs per MiB, in micro-units (default 0).</summary>
    public uint? Price { get; set; }

    /// <summary>A region tag the operator chooses, up to 32 bytes (default none).</summary>
    public string? Region { get; set; }

    /// <summary>Mbit/s one user gets at most; 0 or absent for no limit.</summary>
    public uint? MaxMbps { get; set; }

    /// <summary>Users at once at most; 0 or absent for no limit.</summary>
    public int? MaxSessions { get; set; }

    /// <summary>An offer as node.json writes it.</summary>
    public static ServiceConfig From(Skymesh.Control.Discovery.ServiceEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var app = entry.Kind == Skymesh.Control.Discovery.ServiceKind.App;
        return new ServiceConfig
        {
            Kind = entry.KindName,
            Name = app ? entry.Name : null,
            Port = app ? entry.Port : null,
            Price = entry.PricePerMiB,
            Region = entry.Region.Length > 0 ? entry.Region : null,
            MaxMbps = entry.MaxMbps == 0 ? null : entry.MaxMbps,
            MaxSessions = entry.MaxSessions == 0 ? null : entry.MaxSessions,
        };
    }
}

public sealed class PeerConfig
{
    /// <summary>The neighbour's node address (64 hex digits): the link is refused if someone else answers.</summary>
    public string? Address { get; set; }

    /// <summary>The neighbour's interface address, host:port; left out (with a control bus), the node links through NATs by hole punching, or through a relay.</summary>
    public string? Endpoint { get; set; }

    /// <summary>Which of this node's interfaces to use (default: the first of a matching type).</summary>
    public string? Interface { get; set; }
}

/// <summary>A bad node configuration: <see cref="Field"/> names what is wrong, as a JSON path.</summary>
public sealed class NodeConfigException : Exception
{
    public NodeConfigException()
    {
    }

    public NodeConfigException(string message)
        : base(message)
    {
    }

    public NodeConfigException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public NodeConfigException(string field, string problem, Exception? inner = null)
        : base($"{field}: {problem}", inner)
    {
        Field = field;
    }

    public string Field { get; } = "";

    /// <summary>An exception's message for one line of output, without the "(Parameter 'x')" that ArgumentException appends.</summary>
    public static string Reason(Exception e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return e is ArgumentException { ParamName: { } name } a ? a.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
    }
}

public enum InterfaceKind
{
    Udp,
    Tcp,
    Memory,
}

/// <summary>One interface: <see cref="Listen"/> is an <see cref="IPEndPoint"/> for UDP and TCP, a <see cref="Mesh.Interfaces.MemoryEndPoint"/> for memory (port 0: any free one).</summary>
public sealed record InterfaceOptions(string Name, InterfaceKind Kind, EndPoint Listen, int? Mtu)
{
    /// <summary>Memory interfaces: the in-process network's name.</summary>
    public string? Network { get; init; }

    /// <summary>Memory interfaces: how frames sent from this interface misbehave.</summary>
    public Mesh.Interfaces.Impairment? Impairment { get; init; }
}

/// <param name="Endpoint">Where the neighbour is; null: wherever it is, found through the control bus (hole punching, or a relay).</param>
public sealed record PeerOptions(NodeAddress Address, EndPoint? Endpoint, string Interface);

/// <summary>The exchange service the node trades on (node.json's <c>exchange</c>): its SSMP id, the broker it is on and its topic prefix.</summary>
public sealed record NodeExchangeOptions(string Service, string Host, int Port, string BrokerName, string Name)
{
    /// <summary>The broker as host:port.</summary>
    public string Broker => Host.Contains(':', StringComparison.Ordinal) ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}

/// <summary>A validated node configuration.</summary>
public sealed record NodeOptions
{
    public const int DefaultApiPort = 7300;

    public required string DataDir { get; init; }

    public IPEndPoint Api { get; init; } = new(IPAddress.Loopback, DefaultApiPort);

    public string? Broker { get; init; }

    public string BrokerName { get; init; } = Skymesh.Control.Bus.Ssmp.SsmpBusConnector.DefaultServerName;

    /// <summary>The node reaches the control bus only through its neighbours (<c>"broker": "via-neighbours"</c>).</summary>
    public bool BusViaNeighbours => Broker == Control.MeshBusConnector.Setting;

    /// <summary>The broker key fingerprint a node on the bus through neighbours trusts; null: the first it meets.</summary>
    public string? BrokerPin { get; init; }

    public Control.BusRelayOptions BusRelay { get; init; } = new();

    public Control.LinkRelayOptions LinkRelay { get; init; } = new();

    /// <summary>Where a NATS server beside this node connects as a leaf node, carried through the neighbours; null: nowhere.</summary>
    public IPEndPoint? LeafnodeListen { get; init; }

    /// <summary>The dedicated route finder paths come from; null when the node finds its own.</summary>
    public NodeAddress? Finder { get; init; }

    public bool Encrypt { get; init; } = true;

    public bool LinkRecovery { get; init; } = true;

    public IReadOnlyList<InterfaceOptions> Interfaces { get; init; } = [];

    public IReadOnlyList<PeerOptions> Peers { get; init; } = [];

    public ExitPolicy Exits { get; init; } = ExitPolicy.None;

    /// <summary>What the node offers in its service record, as node.json says (the owner may change it while the node runs).</summary>
    public IReadOnlyList<Skymesh.Control.Discovery.ServiceEntry> Services { get; init; } = [];

    /// <summary>LAN discovery by beacons; null when off.</summary>
    public Discovery.DiscoveryOptions? Discovery { get; init; }

    public TimeSpan Keepalive { get; init; } = TimeSpan.FromSeconds(1);

    public TimeSpan DeadAfter { get; init; } = TimeSpan.FromSeconds(5);

    public TimeSpan LabelLifetime { get; init; } = TimeSpan.FromSeconds(60);

    public TimeSpan PathTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>Apps the node runs at once at most; more are refused (each holds a listening socket and its connections).</summary>
    public int MaxApps { get; init; } = 64;

    public uint Price { get; init; }

    public uint CapacityKbps { get; init; } = 1_000_000;

    public TimeSpan AnnounceInterval { get; init; } = TimeSpan.FromSeconds(30);

    public long CreditLimit { get; init; } = 10_000;

    public string? Ledger { get; init; }

    public string LedgerFile => Ledger ?? Path.Combine(DataDir, "ledger.db");

    /// <summary>The exchange directory receipts are paid on; null: the embedded ledger (or the exchange service).</summary>
    public string? SettlementExchange { get; init; }

    /// <summary>Receipts are handed to the exchange service of <see cref="Exchange"/>, which pays them.</summary>
    public bool SettlementService { get; init; }

    public string SettlementAsset { get; init; } = "SKY";

    /// <summary>What a neighbour may owe beyond what the ledger has paid (micro-units); null: no bound (the embedded ledger pays every receipt).</summary>
    public long? SettlementLimit { get; init; }

    /// <summary>Where a node paid on an exchange keeps the latest receipt paid per neighbour and the transfers it has asked for.</summary>
    public string SettlementFile => Path.Combine(DataDir, "settlement.db");

    public string KeyFile => Path.Combine(DataDir, "node.key");

    /// <summary>How the node decides by itself until its owner (through the API or the dashboard) sets otherwise.</summary>
    public Operator.DecisionPolicies Decisions { get; init; } = new();

    /// <summary>The exchange the node trades on as its own address; null when node.json has no <c>exchange</c> section.</summary>
    public NodeExchangeOptions? Exchange { get; init; }

    /// <summary>How the node serves the VPN from its start; null: it does not (until <c>skymesh vpn serve</c>).</summary>
    public Vpn.VpnServeOptions? VpnServe { get; init; }

    /// <summary>node.json's <c>vpn</c> section, also when it does not serve from the start: what <c>skymesh vpn serve</c> uses when told nothing else.</summary>
    public Vpn.VpnServeOptions? VpnSection { get; init; }

    /// <summary>The node's mesh IPv6 address on a TUN device; null: off.</summary>
    public Vpn.MeshIpv6Options? Ipv6 { get; init; }

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    /// <summary>Reads and checks a node.json; every problem is a <see cref="NodeConfigException"/> naming the field.</summary>
    public static NodeOptions Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new NodeConfigException($"Cannot read the node configuration {path}: {e.Message}", e);
        }
        return Parse(text, Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>Parses node.json text; relative paths are taken from <paramref name="baseDirectory"/>.</summary>
    public static NodeOptions Parse(string json, string baseDirectory)
    {
        NodeConfigFile? file;
        try
        {
            file = JsonSerializer.Deserialize<NodeConfigFile>(json, Json);
        }
        catch (JsonException e)
        {
            var field = string.IsNullOrEmpty(e.Path) ? "$" : e.Path;
            var problem = e.Message.Contains("could not be mapped", StringComparison.Ordinal)
                ? "is not a node setting (see docs/node.md for the settings)"
                : e.Message.Contains("could not be converted", StringComparison.Ordinal)
                    ? $"must be {Expected(e.Message)}"
                    : $"{e.Message.Split(" Path:", 2)[0]} (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1})";
            throw new NodeConfigException(field, problem, e);
        }
        if (file is null)
            throw new NodeConfigException("$", "the configuration is empty (null); write a JSON object");
        return FromFile(file, baseDirectory);
    }

    /// <summary>What a JSON value that did not convert should have been, in words, from the serializer's message.</summary>
    private static string Expected(string message)
    {
        var type = message.Split("converted to ", 2) is [_, var rest] ? rest.Split(" Path:", 2)[0].TrimEnd('.', ' ') : "";
        if (type.StartsWith("System.Nullable`1[", StringComparison.Ordinal))
            type = type["System.Nullable`1[".Length..].TrimEnd(']');
        return type switch
        {
            "System.UInt32" => "a whole number from 0 to 4294967295",
            "System.UInt64" => "a whole number of 0 or more",
            "System.Int32" or "System.Int64" => "a whole number",
            "System.Double" or "System.Single" or "System.Decimal" => "a number",
            "System.Boolean" => "true or false",
            "System.String" => "a string in double quotes",
            _ when type.Contains("List", StringComparison.Ordinal) || type.EndsWith("[]", StringComparison.Ordinal) => "a list in [ ]",
            _ => "an object in { } (see docs/node.md)",
        };
    }

    private static NodeOptions FromFile(NodeConfigFile file, string baseDirectory)
    {
        var dataDir = Path.GetFullPath(file.DataDir is { } d ? Path.Combine(baseDirectory, d) : baseDirectory);
        if (File.Exists(dataDir))
            throw new NodeConfigException("$.dataDir", $"\"{dataDir}\" is a file; the data directory (key, token, ledger) must be a directory");
        var api = file.Api is null ? new IPEndPoint(IPAddress.Loopback, DefaultApiPort) : ParseEndPoint(file.Api, "$.api");
        if (file.Broker is not null && file.Broker != Control.MeshBusConnector.Setting && NatsServers(file.Broker) is null && !ServiceWire.TryParseTarget(file.Broker, out _, out _))
            throw new NodeConfigException("$.broker", $"\"{file.Broker}\" is neither host:port (an SSMP broker), nats://host:port[,nats://host:port…] (a NATS cluster) nor via-neighbours (the control bus through this node's neighbours)");
        if (file.BrokerPin is { } pin && !Skymesh.Ssmp.Broker.BrokerCertificate.IsFingerprint(pin.ToLowerInvariant()))
            throw new NodeConfigException("$.brokerPin", $"\"{pin}\" is not a key fingerprint: sha256: and 64 hex digits, as `skymesh broker` prints it");
        if (file.BrokerPin is not null && file.Broker != Control.MeshBusConnector.Setting)
            throw new NodeConfigException("$.brokerPin", "is for a node that reaches the broker through its neighbours (\"broker\": \"via-neighbours\")");

        var interfaces = new List<InterfaceOptions>();
        if (file.Interfaces is null || file.Interfaces.Count == 0)
            throw new NodeConfigException("$.interfaces", "a node needs at least one interface, e.g. {\"type\": \"udp\", \"listen\": \"0.0.0.0:7400\"}");
        for (var i = 0; i < file.Interfaces.Count; i++)
        {
            var field = $"$.interfaces[{i}]";
            var nic = file.Interfaces[i] ?? throw new NodeConfigException(field, "is null");
            var kind = nic.Type?.ToLowerInvariant() switch
            {
                "udp" => InterfaceKind.Udp,
                "tcp" => InterfaceKind.Tcp,
                "memory" => InterfaceKind.Memory,
                null => throw new NodeConfigException($"{field}.type", "is missing (udp, tcp or memory)"),
                _ => throw new NodeConfigException($"{field}.type", $"\"{nic.Type}\" is not an interface type (udp, tcp or memory)"),
            };
            if (kind != InterfaceKind.Memory && (nic.Network is not null || nic.Impairment is not null))
                throw new NodeConfigException($"{field}.{(nic.Network is not null ? "network" : "impairment")}", "is for memory interfaces only");
            EndPoint listen;
            if (kind == InterfaceKind.Memory)
                listen = nic.Listen is null ? new Mesh.Interfaces.MemoryEndPoint(0) : ParseMemoryEndPoint(nic.Listen, $"{field}.listen");
            else if (nic.Listen is null)
                throw new NodeConfigException($"{field}.listen", "is missing (host:port to bind, e.g. 0.0.0.0:7400)");
            else
                listen = ParseEndPoint(nic.Listen, $"{field}.listen");
            if (nic.Mtu is { } mtu && (mtu < Mesh.Wire.MeshWire.MinMtu || mtu > Mesh.Wire.MeshWire.MaxFrameLength))
                throw new NodeConfigException($"{field}.mtu", $"{mtu} is outside {Mesh.Wire.MeshWire.MinMtu}..{Mesh.Wire.MeshWire.MaxFrameLength}");
            var name = nic.Name ?? $"{kind.ToString().ToLowerInvariant()}{interfaces.Count(x => x.Kind == kind)}";
            if (interfaces.Any(x => x.Name == name))
                throw new NodeConfigException($"{field}.name", $"\"{name}\" names two interfaces");
            interfaces.Add(new InterfaceOptions(name, kind, listen, nic.Mtu)
            {
                Network = kind == InterfaceKind.Memory ? ValidNetworkName(nic.Network ?? "default", $"{field}.network") : null,
                Impairment = nic.Impairment is { } impaired ? ParseImpairment(impaired, $"{field}.impairment") : null,
            });
        }

        var peers = new List<PeerOptions>();
        for (var i = 0; i < (file.Peers?.Count ?? 0); i++)
        {
            var field = $"$.peers[{i}]";
            var peer = file.Peers![i] ?? throw new NodeConfigException(field, "is null");
            if (peer.Address is null)
                throw new NodeConfigException($"{field}.address", "is missing (the neighbour's 64-hex node address)");
            if (!NodeAddress.TryParse(peer.Address, out var address))
                throw new NodeConfigException($"{field}.address", $"\"{peer.Address}\" is not a node address (64 lowercase hex digits)");
            if (peer.Endpoint is null && file.Broker is null)
                throw new NodeConfigException($"{field}.endpoint", "is missing (the neighbour's host:port; or, with a control bus to meet it through, leave it out to link through NATs)");
            var endpoint = peer.Endpoint is null ? null : ParsePeerEndPoint(peer.Endpoint, $"{field}.endpoint");
            InterfaceOptions nic;
            if (peer.Interface is not null)
                nic = interfaces.FirstOrDefault(x => x.Name == peer.Interface)
                    ?? throw new NodeConfigException($"{field}.interface", $"no interface is named \"{peer.Interface}\" (there are: {string.Join(", ", interfaces.Select(x => x.Name))})");
            else
                nic = endpoint is null ? interfaces.FirstOrDefault(x => x.Kind == InterfaceKind.Udp) ?? throw new NodeConfigException($"{field}.endpoint", "is missing, and linking through NATs needs a UDP interface") : interfaces[0];
            peers.Add(new PeerOptions(address, endpoint, nic.Name));
        }

        ExitPolicy exits;
        try
        {
            exits = ExitPolicy.Parse(file.Exits ?? []);
        }
        catch (FormatException e)
        {
            var index = file.Exits!.FindIndex(r => e.Message.Contains($"\"{r}\"", StringComparison.Ordinal) || string.IsNullOrWhiteSpace(r));
            throw new NodeConfigException($"$.exits[{Math.Max(index, 0)}]", e.Message, e);
        }

        var services = ParseServices(file.Services ?? [], exits, "$.services");
        if (file.Vpn is null && services.Any(s => s.Kind == Skymesh.Control.Discovery.ServiceKind.Vpn))
            throw new NodeConfigException("$.services", "offers vpn, but node.json has no \"vpn\" section to serve it (docs/vpn.md, \"Serving\")");

        Discovery.DiscoveryOptions? discovery = null;
        if (file.Discovery is { Beacons: true } beacons)
        {
            var nic = beacons.Interface is null ? interfaces.FirstOrDefault(i => i.Kind == InterfaceKind.Udp)
                : interfaces.FirstOrDefault(i => i.Name == beacons.Interface);
            if (nic is null || nic.Kind != InterfaceKind.Udp)
                throw new NodeConfigException("$.discovery.interface", beacons.Interface is null ? "beacons need a UDP interface" : $"\"{beacons.Interface}\" is not a UDP interface of this node");
            discovery = new Discovery.DiscoveryOptions(nic.Name, ParseEndPoint(beacons.Address ?? "255.255.255.255:7399", "$.discovery.address"),
                Seconds(beacons.IntervalSeconds, 5, "$.discovery.intervalSeconds"));
        }

        NodeAddress? finder = null;
        if (file.Finder is not null)
        {
            if (!NodeAddress.TryParse(file.Finder, out var parsedFinder))
                throw new NodeConfigException("$.finder", $"\"{file.Finder}\" is not a node address (64 lowercase hex digits)");
            finder = parsedFinder;
        }

        var keepalive = Seconds(file.KeepaliveSeconds, 1, "$.keepaliveSeconds");
        var deadAfter = Seconds(file.DeadAfterSeconds, 5, "$.deadAfterSeconds");
        if (deadAfter <= keepalive)
            throw new NodeConfigException("$.deadAfterSeconds", "must be longer than keepaliveSeconds");
        var decisions = new Operator.DecisionPolicies(
            file.Decisions?.Neighbours ?? "accept", file.Decisions?.Credit ?? "keep", file.Decisions?.Exits ?? "refuse",
            file.Decisions?.Price ?? "pay", file.Decisions?.MaxPathPrice);
        if (decisions.Problem() is { } decisionProblem)
            throw new NodeConfigException("$.decisions", decisionProblem);
        return new NodeOptions
        {
            DataDir = dataDir,
            Decisions = decisions,
            Exchange = file.Exchange is { } exchangeSection ? ParseExchange(exchangeSection, file) : null,
            VpnServe = file.Vpn is { } vpn ? Vpn.VpnConfig.Parse(vpn, exits) : null,
            VpnSection = file.Vpn is { } section ? Vpn.VpnConfig.ParseOptions(section) : null,
            Ipv6 = file.Ipv6 is { } ipv6 ? Vpn.Ipv6Config.Parse(ipv6) : null,
            Api = api,
            Broker = file.Broker,
            BrokerName = file.BrokerName ?? Skymesh.Control.Bus.Ssmp.SsmpBusConnector.DefaultServerName,
            BrokerPin = file.BrokerPin?.ToLowerInvariant(),
            BusRelay = new Control.BusRelayOptions
            {
                Enabled = file.BusRelay?.Enabled ?? true,
                MaxTunnelsPerNeighbour = file.BusRelay?.MaxTunnelsPerNeighbour is { } tunnels
                    ? (tunnels is < 1 or > 100_000 ? throw new NodeConfigException("$.busRelay.maxTunnelsPerNeighbour", $"{tunnels} is not a number of tunnels from 1 to 100000") : tunnels)
                    : 64,
                BytesPerSecondPerNeighbour = file.BusRelay?.BytesPerSecondPerNeighbour is { } rate
                    ? (rate < 1024 ? throw new NodeConfigException("$.busRelay.bytesPerSecondPerNeighbour", $"{rate} is below 1024 bytes a second") : rate)
                    : 1 << 20,
                Leafnodes = file.BusRelay?.Leafnodes is { } leafnodes
                    ? (file.Broker is null || NatsServers(file.Broker) is null
                        ? throw new NodeConfigException("$.busRelay.leafnodes", "a NATS server's leafnode port is relayed to by a node on that NATS cluster directly (\"broker\": \"nats://…\")")
                        : ServiceWire.TryParseTarget(leafnodes, out _, out _) ? leafnodes : throw new NodeConfigException("$.busRelay.leafnodes", $"\"{leafnodes}\" is not host:port"))
                    : null,
            },
            LeafnodeListen = file.LeafnodeListen is { } leafListen
                ? (file.Broker != Control.MeshBusConnector.Setting
                    ? throw new NodeConfigException("$.leafnodeListen", "a leaf node is carried through the neighbours by a node that reaches the bus through them (\"broker\": \"via-neighbours\")")
                    : ParseEndPoint(leafListen, "$.leafnodeListen"))
                : null,
            LinkRelay = new Control.LinkRelayOptions
            {
                Enabled = file.LinkRelay?.Enabled ?? true,
                MaxPerNeighbour = file.LinkRelay?.MaxPerNeighbour is { } perNeighbour
                    ? (perNeighbour is < 1 or > 10_000 ? throw new NodeConfigException("$.linkRelay.maxPerNeighbour", $"{perNeighbour} is not a number of relayed links from 1 to 10000") : perNeighbour)
                    : 8,
                BytesPerSecond = file.LinkRelay?.BytesPerSecond is { } linkRate
                    ? (linkRate < 16 * 1024 ? throw new NodeConfigException("$.linkRelay.bytesPerSecond", $"{linkRate} is below 16384 bytes a second") : linkRate)
                    : 4 << 20,
            },
            Finder = finder,
            Encrypt = file.Encrypt ?? true,
            LinkRecovery = file.LinkRecovery ?? true,
            Interfaces = interfaces,
            Peers = peers,
            Exits = exits,
            Services = services,
            Discovery = discovery,
            Keepalive = keepalive,
            DeadAfter = deadAfter,
            LabelLifetime = Seconds(file.LabelLifetimeSeconds, 60, "$.labelLifetimeSeconds"),
            PathTimeout = Seconds(file.PathTimeoutSeconds, 15, "$.pathTimeoutSeconds"),
            MaxApps = file.MaxApps is { } apps && apps is < 1 or > 10_000
                ? throw new NodeConfigException("$.maxApps", $"{apps} is not a number of apps from 1 to 10000")
                : file.MaxApps ?? 64,
            Price = file.Price ?? 0,
            CapacityKbps = file.CapacityKbps ?? 1_000_000,
            AnnounceInterval = Seconds(file.AnnounceSeconds, 30, "$.announceSeconds"),
            CreditLimit = file.CreditLimit is { } limit && limit <= 0
                ? throw new NodeConfigException("$.creditLimit", "must be positive (micro-units a neighbour may owe beyond its receipts)")
                : file.CreditLimit ?? 10_000,
            Ledger = file.Ledger is { } ledger ? Path.GetFullPath(Path.Combine(baseDirectory, ledger)) : null,
            SettlementService = file.Settlement?.Service == true
                ? (file.Exchange is null
                    ? throw new NodeConfigException("$.settlement.service", "settles on the exchange service the \"exchange\" section names: add one")
                    : file.Settlement.Exchange is not null
                        ? throw new NodeConfigException("$.settlement.service", "settles on the exchange service; \"exchange\" (a directory) is the other way: give one of them")
                        : file.Settlement.Asset is { } serviceAsset && serviceAsset != "SKY"
                            ? throw new NodeConfigException("$.settlement.asset", $"an exchange service pays receipts in SKY, not {serviceAsset}")
                            : true)
                : false,
            SettlementExchange = file.Settlement?.Service == true ? null
                : file.Settlement?.Exchange is { } exchange
                ? (exchange.Length == 0 ? throw new NodeConfigException("$.settlement.exchange", "must name the exchange's directory") : Path.GetFullPath(Path.Combine(baseDirectory, exchange)))
                : file.Settlement is null ? null : throw new NodeConfigException("$.settlement.exchange", "must name the exchange's directory, or set \"service\": true to settle on the exchange service of the \"exchange\" section"),
            SettlementAsset = file.Settlement?.Asset is { } asset
                ? (asset.Length is 0 or > 16 ? throw new NodeConfigException("$.settlement.asset", $"\"{asset}\" is not an asset code (1 to 16 characters)") : asset)
                : "SKY",
            SettlementLimit = file.Settlement is null ? null : file.Settlement.Limit switch
            {
                null => checked(10 * (file.CreditLimit ?? 10_000)),
                <= 0 and var bad => throw new NodeConfigException("$.settlement.limit", $"must be positive (micro-units a neighbour may owe beyond what the exchange paid), not {bad}"),
                var settlementLimit => settlementLimit,
            },
        };
    }

    /// <summary>node.json's <c>exchange</c> section; the broker and its name default to the node's own.</summary>
    private static NodeExchangeOptions ParseExchange(ExchangeConfig section, NodeConfigFile file)
    {
        static string Id(string? value, string fallback, string field, string what)
        {
            var id = value ?? fallback;
            return Ssmp.Codec.SsmpGrammar.IsValidId(id)
                ? id
                : throw new NodeConfigException(field, $"\"{id}\" is not {what} (1 to {Ssmp.Codec.SsmpGrammar.MaxIdLength} letters, digits and - _ . characters an SSMP id may hold)");
        }
        if (section.Service is null)
            throw new NodeConfigException("$.exchange.service", "is missing: the exchange's SSMP id (what `skymesh exchange serve` prints, also in its directory's exchange.id)");
        var service = Id(section.Service, "", "$.exchange.service", "an SSMP id");
        string broker;
        if (section.Broker is { } given)
            broker = given;
        else if (file.Broker is { } own && NatsServers(own) is null)
            broker = own;
        else
            throw new NodeConfigException("$.exchange.broker", file.Broker is null
                ? "is missing: the exchange's SSMP broker as host:port (the node has no broker of its own to take it from)"
                : $"is missing: the exchange's SSMP broker as host:port (the node's broker \"{file.Broker}\" is NATS, not SSMP)");
        if (!ServiceWire.TryParseTarget(broker, out var host, out var port))
            throw new NodeConfigException(section.Broker is null ? "$.broker" : "$.exchange.broker", $"\"{broker}\" is not host:port (the SSMP broker the exchange is on)");
        var brokerName = Id(section.BrokerName, file.BrokerName ?? Skymesh.Control.Bus.Ssmp.SsmpBusConnector.DefaultServerName, "$.exchange.brokerName", "a broker name");
        var name = Id(section.Name, "exchange", "$.exchange.name", "a topic prefix");
        if (name.Length > 40)
            throw new NodeConfigException("$.exchange.name", $"\"{name}\" is longer than 40 characters (an exchange's --name is at most 40)");
        return new NodeExchangeOptions(service, host, port, brokerName, name);
    }

    /// <summary>
    /// The services a node offers (node.json's <c>services</c>, or what its owner sets through the API), each checked
    /// with the field and the reason named: kind, name (apps only, and required there), port, lengths, at most 32, none
    /// twice, and an exit or socks offer only from a node with exit rules.
    /// </summary>
    public static IReadOnlyList<Skymesh.Control.Discovery.ServiceEntry> ParseServices(IReadOnlyList<ServiceConfig?> services, ExitPolicy exits, string field)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(exits);
        const int most = Skymesh.Control.Discovery.ServiceRecord.MaxEntries;
        const int textBytes = Skymesh.Control.Discovery.ServiceRecord.MaxTextBytes;
        if (services.Count > most)
            throw new NodeConfigException(field, $"a node offers at most {most} services, not {services.Count}");
        var entries = new List<Skymesh.Control.Discovery.ServiceEntry>();
        for (var i = 0; i < services.Count; i++)
        {
            var at = $"{field}[{i}]";
            var service = services[i] ?? throw new NodeConfigException(at, "is null");
            if (service.Kind is null)
                throw new NodeConfigException($"{at}.kind", "is missing (exit, socks, vpn or app)");
            if (!Skymesh.Control.Discovery.ServiceEntry.TryParseKind(service.Kind, out var kind))
                throw new NodeConfigException($"{at}.kind", $"\"{service.Kind}\" is not a service kind (exit, socks, vpn or app)");
            var app = kind == Skymesh.Control.Discovery.ServiceKind.App;
            if (app)
            {
                if (string.IsNullOrEmpty(service.Name))
                    throw new NodeConfigException($"{at}.name", "is missing: an app is offered under a name (1 to 32 bytes)");
                if (System.Text.Encoding.UTF8.GetByteCount(service.Name) > textBytes)
                    throw new NodeConfigException($"{at}.name", $"\"{service.Name}\" is longer than {textBytes} bytes");
                if (service.Name.Any(char.IsControl))
                    throw new NodeConfigException($"{at}.name", "holds a control character");
                if (service.Port is null)
                    throw new NodeConfigException($"{at}.port", "is missing: the app's port on this node (1 to 65535)");
                if (service.Port is < 1 or > 65535)
                    throw new NodeConfigException($"{at}.port", $"{service.Port} is not a port (1 to 65535)");
            }
            else
            {
                if (service.Name is not null)
                    throw new NodeConfigException($"{at}.name", $"is for apps only: a {service.Kind.ToLowerInvariant()} offer has no name");
                if (service.Port is not null)
                    throw new NodeConfigException($"{at}.port", $"is for apps only: a {service.Kind.ToLowerInvariant()} offer has no port");
            }
            if (kind is Skymesh.Control.Discovery.ServiceKind.Exit or Skymesh.Control.Discovery.ServiceKind.Socks && exits.Rules.Count == 0)
                throw new NodeConfigException($"{at}.kind", $"offers {kind.ToString().ToLowerInvariant()}, but the node's exit rules let nobody out: add some to \"exits\"");
            if (service.Region is { } region && System.Text.Encoding.UTF8.GetByteCount(region) > textBytes)
                throw new NodeConfigException($"{at}.region", $"\"{region}\" is longer than {textBytes} bytes");
            if (service.Region is { } shown && shown.Any(char.IsControl))
                throw new NodeConfigException($"{at}.region", "holds a control character");
            if (service.MaxSessions is < 0 or > ushort.MaxValue)
                throw new NodeConfigException($"{at}.maxSessions", $"{service.MaxSessions} is not a number of sessions from 0 (no limit) to {ushort.MaxValue}");
            var entry = new Skymesh.Control.Discovery.ServiceEntry(kind, service.Name ?? "", (ushort)(service.Port ?? 0), service.Price ?? 0, service.MaxMbps ?? 0,
                (ushort)(service.MaxSessions ?? 0), service.Region ?? "");
            if (entry.Problem() is { } problem)
                throw new NodeConfigException(at, problem);
            if (entries.Any(e => e.Kind == entry.Kind && e.Name == entry.Name))
                throw new NodeConfigException(at, $"offers {entry} a second time");
            entries.Add(entry);
        }
        return entries;
    }

    private static TimeSpan Seconds(double? value, double fallback, string field)
    {
        var seconds = value ?? fallback;
        if (!double.IsFinite(seconds) || seconds <= 0 || seconds > 86_400)
            throw new NodeConfigException(field, $"must be more than 0 and at most 86400 seconds, not {seconds.ToString(CultureInfo.InvariantCulture)}");
        return TimeSpan.FromSeconds(seconds);
    }

    /// <summary>The NATS servers of a <c>broker</c> written <c>nats://host:port[,nats://host:port…]</c>; null for anything else.</summary>
    public static IReadOnlyList<string>? NatsServers(string broker)
    {
        if (!broker.StartsWith("nats://", StringComparison.OrdinalIgnoreCase))
            return null;
        var servers = broker.Split(',', StringSplitOptions.TrimEntries);
        return servers.All(s => s.StartsWith("nats://", StringComparison.OrdinalIgnoreCase) && ServiceWire.TryParseTarget(s["nats://".Length..], out _, out _)) ? servers : null;
    }

    internal static IPEndPoint ParseEndPoint(string value, string field)
    {
        var text = value.StartsWith("localhost:", StringComparison.OrdinalIgnoreCase) ? "127.0.0.1:" + value["localhost:".Length..] : value;
        if (!text.Contains(':', StringComparison.Ordinal) || !IPEndPoint.TryParse(text, out var endPoint))
            throw new NodeConfigException(field, $"\"{value}\" is not an address:port such as 127.0.0.1:7400");
        return endPoint;
    }

    private static Mesh.Interfaces.MemoryEndPoint ParseMemoryEndPoint(string value, string field) =>
        value.StartsWith("mem:", StringComparison.Ordinal) && int.TryParse(value.AsSpan(4), NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and < 1 << 30
            ? new Mesh.Interfaces.MemoryEndPoint(port)
            : throw new NodeConfigException(field, $"\"{value}\" is not a memory address such as mem:7");

    private static string ValidNetworkName(string name, string field) =>
        name.Length is > 0 and <= 64 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')
            ? name
            : throw new NodeConfigException(field, $"\"{name}\" is not a network name (1 to 64 of A-Z a-z 0-9 - _ .)");

    private static Mesh.Interfaces.Impairment ParseImpairment(ImpairmentConfig config, string field)
    {
        static double Share(double? value, string field) => value is null ? 0
            : double.IsFinite(value.Value) && value.Value is >= 0 and <= 1 ? value.Value
            : throw new NodeConfigException(field, "is a share between 0 and 1");
        static TimeSpan Millis(double? value, string field) => value is null ? TimeSpan.Zero
            : double.IsFinite(value.Value) && value.Value is >= 0 and <= 60_000 ? TimeSpan.FromMilliseconds(value.Value)
            : throw new NodeConfigException(field, "is milliseconds between 0 and 60000");
        if (config.BandwidthKbps is < 0)
            throw new NodeConfigException($"{field}.bandwidthKbps", "must not be negative");
        return new Mesh.Interfaces.Impairment
        {
            Latency = Millis(config.LatencyMs, $"{field}.latencyMs"),
            Jitter = Millis(config.JitterMs, $"{field}.jitterMs"),
            Loss = Share(config.Loss, $"{field}.loss"),
            Duplication = Share(config.Duplication, $"{field}.duplication"),
            Reordering = Share(config.Reordering, $"{field}.reordering"),
            BandwidthBytesPerSecond = (config.BandwidthKbps ?? 0) * 1000 / 8,
        };
    }

    private static EndPoint ParsePeerEndPoint(string value, string field)
    {
        if (value.StartsWith("mem:", StringComparison.Ordinal))
            return ParseMemoryEndPoint(value, field);
        if (!ServiceWire.TryParseTarget(value, out var host, out var port))
            throw new NodeConfigException(field, $"\"{value}\" is not host:port");
        if (IPAddress.TryParse(host, out var address))
            return new IPEndPoint(address, port);
        if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase))
            return new IPEndPoint(IPAddress.Loopback, port);
        return new DnsEndPoint(host, port);
    }
}
