using System.Net;
using Microsoft.Extensions.Logging;
using Skymesh.Control.Settlement;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Mesh.Apps;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Node.Events;

namespace Skymesh.Node.Operator;

/// <summary>A decision that waits, or waited, for a person (docs/dashboard.md, "Decisions").</summary>
/// <param name="Kind"><c>neighbour</c>, <c>credit</c>, <c>exit</c> or <c>price</c>.</param>
/// <param name="Peer">The other node concerned.</param>
/// <param name="Summary">One line for people.</param>
/// <param name="Waiting">What waits on the decision.</param>
/// <param name="Choices">What the person may answer.</param>
/// <param name="Data">What the choice is about, by kind.</param>
public sealed record DecisionInfo(
    long Id, string Kind, string Peer, DateTimeOffset Created, string Summary, string Waiting, IReadOnlyList<string> Choices,
    IReadOnlyDictionary<string, object?> Data)
{
    public DateTimeOffset? Resolved { get; init; }

    public string? Choice { get; init; }

    /// <summary><c>person</c> when someone answered, <c>policy</c> when the node settled it itself.</summary>
    public string? By { get; init; }
}

public sealed record DecisionsView(DecisionPolicies Policies, IReadOnlyList<DecisionInfo> Pending, IReadOnlyList<DecisionInfo> Recent);

/// <summary>One neighbour as its owner set it.</summary>
/// <param name="Suspended">Held suspended by a person: nothing is forwarded for it whatever it owes.</param>
/// <param name="Accepted">Taken as a neighbour (a configured peer, or accepted by a person).</param>
public sealed record NeighbourView(string Peer, long CreditLimit, bool Suspended, bool Blocked, bool Accepted, bool Linked);

/// <summary>Node-wide settings a person may change while the node runs.</summary>
/// <param name="Price">What this node charges per MiB it forwards, in micro-units.</param>
/// <param name="CreditLimit">The default receipt limit of a neighbour, in micro-units.</param>
/// <param name="Exits">The exit rules: which destinations peers may reach through this node.</param>
public sealed record NodeSettings(uint Price, long CreditLimit, IReadOnlyList<string> Exits)
{
    /// <summary>What the node offers in its signed service record (docs/node.md, "Services").</summary>
    public IReadOnlyList<ServiceConfig> Services { get; init; } = [];
}

/// <summary>
/// The node's owner, as the node knows them: the decisions that wait for a person (a stranger asking to link, a
/// neighbour at its credit limit, a peer asking for a destination the exit policy does not allow, a path dearer than
/// the cap), the policies that settle them when nobody is asked, and what the owner set — blocked and accepted nodes,
/// credit limits and suspensions, the price, the exit rules — kept in <c>operator.json</c>. Every method is safe from
/// any thread and never blocks on I/O beyond writing that small file; the hooks it gives the data plane
/// (<see cref="Admit"/>, <see cref="OnExitRefused"/>) take a lock and return.
/// </summary>
public sealed partial class NodeOperator
{
    /// <summary>How long a stranger refused by a person is refused without asking again.</summary>
    public static readonly TimeSpan RefusedFor = TimeSpan.FromMinutes(10);

    /// <summary>How long an accepted stranger has to link by itself before this node links to it.</summary>
    public static readonly TimeSpan AcceptedLinkWait = TimeSpan.FromSeconds(3);

    /// <summary>Decisions kept after they were taken, for people to see what happened.</summary>
    public const int RecentKept = 50;

    /// <summary>Decisions waiting at once at most: past it, new questions are settled by refusing (and counted).</summary>
    public const int PendingLimit = 256;

    private readonly MeshNode _node;
    private readonly string _file;
    private readonly Lock _lock = new();
    private readonly Dictionary<long, PendingDecision> _pending = [];
    private readonly LinkedList<DecisionInfo> _recent = new();
    private readonly Dictionary<NodeAddress, DateTimeOffset> _refusedUntil = [];
    private readonly HashSet<NodeAddress> _peers;
    private readonly ILogger _logger;
    private OperatorState _state;
    private DecisionPolicies _policies;
    private ExitPolicy _exits;
    private IReadOnlyList<Skymesh.Control.Discovery.ServiceEntry> _services;
    private CreditPolicy? _credit;
    private Action? _hurry;
    private long _nextId;
    private long _overflow;

    internal NodeOperator(MeshNode node, DecisionPolicies policies)
    {
        _node = node;
        _logger = node.LoggerFactory.CreateLogger("Skymesh.Node.Operator");
        _file = Path.Combine(node.Options.DataDir, OperatorState.FileName);
        // Read only when it exists and written only when the owner decides something: a simulated node never touches disk.
        _state = OperatorState.Load(_file);
        _policies = _state.Policies ?? policies;
        _peers = [.. node.Options.Peers.Select(p => p.Address)];
        _exits = _state.Exits is { } rules ? ParseExits(rules) : node.Options.Exits;
        try
        {
            _services = _state.Services is { } services ? NodeOptions.ParseServices(services, _exits, "$.services") : node.Options.Services;
        }
        catch (NodeConfigException e)
        {
            throw new NodeConfigException($"{_file}: {e.Message}; fix it or remove \"services\" there (what the owner set on the dashboard)", e);
        }
    }

    /// <summary>What the node offers in its service record: node.json's <c>services</c>, or what the owner set since.</summary>
    public IReadOnlyList<Skymesh.Control.Discovery.ServiceEntry> Services
    {
        get
        {
            lock (_lock)
                return _services;
        }
    }

    /// <summary>Raised (outside any lock) after the price, the default credit limit or the exit rules changed.</summary>
    public event Action? SettingsChanged;

    /// <summary>Questions settled by refusing because too many were waiting already.</summary>
    public long Overflowed => Interlocked.Read(ref _overflow);

    public DecisionPolicies Policies
    {
        get
        {
            lock (_lock)
                return _policies;
        }
    }

    /// <summary>What this node charges per MiB it forwards.</summary>
    public uint Price
    {
        get
        {
            lock (_lock)
                return _state.Price ?? _node.Options.Price;
        }
    }

    public ExitPolicy Exits
    {
        get
        {
            lock (_lock)
                return _exits;
        }
    }

    /// <summary>The default credit limit of a neighbour.</summary>
    public long CreditLimit
    {
        get
        {
            lock (_lock)
                return _state.CreditLimit ?? _node.Options.CreditLimit;
        }
    }

    public NodeSettings Settings
    {
        get
        {
            lock (_lock)
                return new NodeSettings(_state.Price ?? _node.Options.Price, _state.CreditLimit ?? _node.Options.CreditLimit, _exits.Rules) { Services = [.. _services.Select(ServiceConfig.From)] };
        }
    }

    public bool IsBlocked(NodeAddress node)
    {
        var text = node.ToString();
        lock (_lock)
            return _state.Blocked.Contains(text);
    }

    public IReadOnlyList<string> Blocked
    {
        get
        {
            lock (_lock)
                return _state.Blocked;
        }
    }

    // ---- Hooks of the data and control planes ------------------------------------------------------------

    /// <summary>
    /// The switch's question when a neighbour's signed Hello arrives: blocked nodes never link; configured peers and
    /// accepted nodes always do; anyone else as the neighbour policy says — with <c>ask</c>, a decision waits for a
    /// person (one per node; its later Hellos only refresh it) and the Hello goes unanswered until they accept.
    /// </summary>
    public bool Admit(NodeAddress peer, EndPoint remote, IMeshInterface nic)
    {
        var text = peer.ToString();
        DecisionInfo? asked = null;
        lock (_lock)
        {
            if (_state.Blocked.Contains(text))
                return false;
            if (_peers.Contains(peer) || _state.Accepted.Contains(text))
                return true;
            switch (_policies.Neighbours)
            {
                case "accept":
                    return true;
                case "refuse":
                    return false;
            }
            if (_refusedUntil.TryGetValue(peer, out var until) && until > _node.Time.GetUtcNow())
                return false;
            var existing = _pending.Values.FirstOrDefault(p => p.Info.Kind == "neighbour" && p.Info.Peer == text);
            if (existing is not null)
            {
                existing.Info = existing.Info with { Data = NeighbourData(remote, nic) };
                existing.Remote = remote;
                existing.Interface = nic.Name;
                return false;
            }
            asked = AskLocked("neighbour", text, $"{Short(text)} asks to link from {remote} on {nic.Name}",
                "its link stays down until you accept it", ["accept", "refuse", "block"], NeighbourData(remote, nic), remote, nic.Name);
        }
        Announce(asked);
        return false;
    }

    private static Dictionary<string, object?> NeighbourData(EndPoint remote, IMeshInterface nic) =>
        new() { ["endpoint"] = remote.ToString(), ["interface"] = nic.Name };

    /// <summary>
    /// The exit's note when a peer asks for a destination the rules do not allow: with the <c>ask</c> policy, a decision
    /// (one per port) waits for a person, and the peer is told so.
    /// </summary>
    public string? OnExitRefused(string from, string host, int port)
    {
        DecisionInfo? asked;
        lock (_lock)
        {
            if (_policies.Exits != "ask")
                return null;
            var existing = _pending.Values.FirstOrDefault(p => p.Info.Kind == "exit" && p.Info.Data["port"] is int known && known == port);
            if (existing is not null)
                return $"this node's owner is asked whether to allow port {port} (decision {existing.Info.Id}); try again once they do";
            asked = AskLocked("exit", from, $"{Short(from)} asks to reach {host}:{port} through this node (an exit to the Internet)",
                "the peer's connection was refused; it may try again once you allow the port", ["allow-port", "refuse"],
                new Dictionary<string, object?> { ["target"] = $"{host}:{port}", ["port"] = port });
        }
        if (asked is null)
            return null;
        Announce(asked);
        return $"this node's owner is asked whether to allow port {port} (decision {asked.Id}); try again once they do";
    }

    /// <summary>
    /// Before a path is set up: true to take <paramref name="found"/> as it is; false to look for one within the cap.
    /// The price policy answers at once, or, with <c>ask</c>, a person does (the request waits for them).
    /// </summary>
    internal async Task<bool> ConfirmPriceAsync(NodeAddress destination, FoundPath found, CancellationToken cancellationToken)
    {
        PendingDecision pending;
        DecisionInfo asked;
        lock (_lock)
        {
            if (_policies.MaxPathPrice is not { } cap || found.Price <= cap || _policies.Price == "pay")
                return true;
            if (_policies.Price == "cheaper")
                return false;
            var question = AskLocked("price", destination.ToString(),
                $"the path to {Short(destination.ToString())} costs {found.Price:N0} per MiB, over your cap of {cap:N0}",
                "opening the path waits for your answer", ["pay", "other"],
                new Dictionary<string, object?> { ["to"] = destination.ToString(), ["price"] = found.Price, ["cap"] = cap, ["nodes"] = found.Nodes.Select(n => n.ToString()).ToArray() });
            // Too many questions wait already: the path is not opened dearer than the cap.
            if (question is null)
                return false;
            asked = question;
            pending = _pending[asked.Id];
        }
        Announce(asked);
        try
        {
            return await pending.Answer.Task.WaitAsync(cancellationToken) == "pay";
        }
        catch (OperationCanceledException)
        {
            Settle(asked.Id, "other", "policy");
            throw;
        }
    }

    /// <summary>The settlement service of the node's current control session: it takes the owner's limits and suspensions.</summary>
    internal void AttachCredit(CreditPolicy credit, Action hurry)
    {
        lock (_lock)
        {
            _credit = credit;
            _hurry = hurry;
            credit.DefaultLimits = credit.DefaultLimits with { ReceiptLimit = _state.CreditLimit ?? credit.DefaultLimits.ReceiptLimit };
            foreach (var (peer, settings) in _state.Neighbours)
            {
                if (!NodeAddress.TryParse(peer, out var address))
                    continue;
                if (settings.CreditLimit is { } limit)
                    credit.SetLimits(address, credit.LimitsOf(address) with { ReceiptLimit = limit });
                credit.Hold(address, settings.Suspended);
            }
        }
        credit.StateChanged += OnCreditChanged;
    }

    private void OnCreditChanged(CreditStatus status, CreditState previous)
    {
        var peer = status.Neighbour.ToString();
        DecisionInfo? asked = null;
        long? moot = null;
        lock (_lock)
        {
            var existing = _pending.Values.FirstOrDefault(p => p.Info.Kind == "credit" && p.Info.Peer == peer);
            if (status.State == CreditState.Suspended)
            {
                if (existing is not null || _policies.Credit != "ask" || _credit?.IsHeld(status.Neighbour) == true)
                    return;
                var limit = _credit?.LimitsOf(status.Neighbour).ReceiptLimit ?? CreditLimit;
                asked = AskLocked("credit", peer, $"{Short(peer)} reached its credit limit of {limit:N0} micro-units: nothing is forwarded for it",
                    "its traffic through this node is suspended until it pays or you raise its limit", ["raise", "keep", "suspend"],
                    new Dictionary<string, object?> { ["limit"] = limit, ["usage"] = Math.Round(status.Usage, 3) });
            }
            else if (existing is not null && status.State == CreditState.Normal)
            {
                moot = existing.Info.Id;
            }
        }
        if (asked is not null)
            Announce(asked);
        if (moot is { } id)
            Settle(id, "keep", "policy");
    }

    // ---- What a person does ------------------------------------------------------------------------------

    public DecisionsView View()
    {
        lock (_lock)
            return new DecisionsView(_policies, [.. _pending.Values.Select(p => p.Info).OrderBy(d => d.Id)], [.. _recent]);
    }

    public IReadOnlyList<DecisionInfo> Waiting
    {
        get
        {
            lock (_lock)
                return [.. _pending.Values.Select(p => p.Info).OrderBy(d => d.Id)];
        }
    }

    /// <summary>A person's answer to decision <paramref name="id"/>; <paramref name="value"/> is the new limit of <c>raise</c>.</summary>
    public DecisionInfo Decide(long id, string choice, long? value)
    {
        PendingDecision? pending;
        lock (_lock)
        {
            if (!_pending.TryGetValue(id, out pending))
                throw new NodeRequestException(NodeError.NotFound, _recent.Any(d => d.Id == id) ? $"decision {id} was already taken" : $"no decision {id}");
            if (!pending.Info.Choices.Contains(choice))
                throw new NodeRequestException(NodeError.Invalid, $"decision {id} ({pending.Info.Kind}) is answered with one of: {string.Join(", ", pending.Info.Choices)}");
        }
        if (choice == "raise" && value is not > 0)
            throw new NodeRequestException(NodeError.Invalid, "\"raise\" needs \"value\": the new credit limit, a positive number of micro-units");
        // Off the list first, then done: what the answer sets off (a neighbour back to normal) must not settle it again.
        var resolved = Settle(id, choice, "person") ?? throw new NodeRequestException(NodeError.NotFound, $"decision {id} was already taken");
        var peer = NodeAddress.Parse(resolved.Peer);
        switch (resolved.Kind, choice)
        {
            case ("neighbour", "accept"):
                Accept(peer, pending.Remote, pending.Interface);
                break;
            case ("neighbour", "refuse"):
                lock (_lock)
                    _refusedUntil[peer] = _node.Time.GetUtcNow() + RefusedFor;
                break;
            case ("neighbour", "block"):
                Block(peer);
                break;
            case ("credit", "raise"):
                SetNeighbour(peer, value, false);
                break;
            case ("credit", "suspend"):
                SetNeighbour(peer, null, true);
                break;
            case ("exit", "allow-port"):
                var port = (int)resolved.Data["port"]!;
                SetSettings(null, null, [.. Exits.Rules, $"*:{port}"]);
                break;
        }
        return resolved;
    }

    public DecisionPolicies SetPolicies(DecisionPolicies policies)
    {
        ArgumentNullException.ThrowIfNull(policies);
        if (policies.Problem() is { } problem)
            throw new NodeRequestException(NodeError.Invalid, problem);
        lock (_lock)
        {
            _policies = policies;
            Save(_state with { Policies = policies });
        }
        _node.Events.Append(NodeEventKind.SettingsChanged, $"decision policies: neighbours {policies.Neighbours}, credit {policies.Credit}, exits {policies.Exits}, price {policies.Price}"
            + (policies.MaxPathPrice is { } cap ? $" above {cap:N0} per MiB" : ""));
        return policies;
    }

    /// <summary>Takes <paramref name="peer"/> as a neighbour from now on, and links to it at <paramref name="remote"/> when given.</summary>
    public void Accept(NodeAddress peer, EndPoint? remote, string? nic)
    {
        var text = peer.ToString();
        lock (_lock)
        {
            _refusedUntil.Remove(peer);
            if (!_state.Accepted.Contains(text))
                Save(_state with { Accepted = [.. _state.Accepted, text] });
        }
        if (remote is null || nic is null)
            return;
        // It is most likely still knocking (a Hello a second, now admitted): its next Hello brings the link up. Only if none
        // has after a while does this node link to it — not at once, because two handshakes started from both ends at
        // the same moment answer neither.
        _ = Background.Run(async () =>
        {
            try
            {
                await Task.Delay(AcceptedLinkWait, _node.Time);
                if (_node.FindLink(peer) is not null || IsBlocked(peer))
                    return;
                await _node.ConnectAsync(nic, remote, peer, CancellationToken.None);
            }
            catch (Exception e) when (e is NodeRequestException or InvalidOperationException or OperationCanceledException or System.Net.Sockets.SocketException or IOException)
            {
                Log.AcceptedNotLinked(_logger, text, remote.ToString() ?? "", e.Message);
            }
        });
    }

    /// <summary>Refuses <paramref name="node"/> as a neighbour from now on and takes its links down; false when it already was.</summary>
    public bool Block(NodeAddress node)
    {
        if (node == _node.Address)
            throw new NodeRequestException(NodeError.Invalid, "a node cannot block itself");
        var text = node.ToString();
        long[] waiting;
        lock (_lock)
        {
            if (_state.Blocked.Contains(text))
                return false;
            Save(_state with { Blocked = [.. _state.Blocked, text], Accepted = [.. _state.Accepted.Where(a => a != text)] });
            waiting = [.. _pending.Values.Where(p => p.Info.Kind == "neighbour" && p.Info.Peer == text).Select(p => p.Info.Id)];
        }
        foreach (var id in waiting)
            Settle(id, "block", "person");
        foreach (var link in _node.Switch.Links.Where(l => l.Peer == node))
            _node.Switch.Disconnect(link, "blocked by the node's owner");
        _node.Events.Append(NodeEventKind.NodeBlocked, $"{node} blocked: no link to it, none from it", text);
        return true;
    }

    public bool Unblock(NodeAddress node)
    {
        var text = node.ToString();
        lock (_lock)
        {
            if (!_state.Blocked.Contains(text))
                return false;
            Save(_state with { Blocked = [.. _state.Blocked.Where(b => b != text)] });
        }
        _node.Events.Append(NodeEventKind.NodeUnblocked, $"{node} unblocked", text);
        return true;
    }

    /// <summary>Sets a neighbour's credit limit and whether a person holds it suspended (null leaves each as it is).</summary>
    public NeighbourView SetNeighbour(NodeAddress peer, long? creditLimit, bool? suspended)
    {
        if (creditLimit is <= 0)
            throw new NodeRequestException(NodeError.Invalid, "\"creditLimit\" is a positive number of micro-units");
        var text = peer.ToString();
        CreditPolicy? credit;
        Action? hurry;
        NeighbourSettings settings;
        lock (_lock)
        {
            var before = _state.Neighbours.GetValueOrDefault(text) ?? new NeighbourSettings();
            settings = before with { CreditLimit = creditLimit ?? before.CreditLimit, Suspended = suspended ?? before.Suspended };
            Save(_state with { Neighbours = new Dictionary<string, NeighbourSettings>(_state.Neighbours) { [text] = settings } });
            credit = _credit;
            hurry = _hurry;
        }
        if (credit is not null)
        {
            if (creditLimit is { } limit)
                credit.SetLimits(peer, credit.LimitsOf(peer) with { ReceiptLimit = limit });
            credit.Hold(peer, settings.Suspended);
        }
        hurry?.Invoke();
        _node.Events.Append(NodeEventKind.SettingsChanged, $"{peer}: credit limit {(settings.CreditLimit ?? CreditLimit):N0} micro-units{(settings.Suspended ? ", held suspended" : "")}", text);
        return NeighbourOf(peer);
    }

    public NeighbourView NeighbourOf(NodeAddress peer)
    {
        var text = peer.ToString();
        var linked = _node.FindLink(peer) is not null;
        lock (_lock)
        {
            var settings = _state.Neighbours.GetValueOrDefault(text);
            var limit = settings?.CreditLimit ?? _credit?.LimitsOf(peer).ReceiptLimit ?? CreditLimit;
            return new NeighbourView(text, limit, settings?.Suspended ?? false, _state.Blocked.Contains(text),
                _peers.Contains(peer) || _state.Accepted.Contains(text), linked);
        }
    }

    /// <summary>Every neighbour linked now, configured, accepted or set by the owner.</summary>
    public IReadOnlyList<NeighbourView> Neighbours()
    {
        var known = new HashSet<NodeAddress>(_node.Switch.Links.Where(l => l.Peer is not null).Select(l => l.Peer!.Value));
        known.UnionWith(_peers);
        lock (_lock)
        {
            foreach (var text in _state.Accepted.Concat(_state.Neighbours.Keys))
            {
                if (NodeAddress.TryParse(text, out var address))
                    known.Add(address);
            }
        }
        return [.. known.OrderBy(a => a.ToString(), StringComparer.Ordinal).Select(NeighbourOf)];
    }

    /// <summary>Changes the price, the default credit limit, the exit rules or the services offered (null leaves each as it is).</summary>
    public NodeSettings SetSettings(uint? price, long? creditLimit, IReadOnlyList<string>? exits, IReadOnlyList<ServiceConfig>? services = null)
    {
        if (creditLimit is <= 0)
            throw new NodeRequestException(NodeError.Invalid, "\"creditLimit\" is a positive number of micro-units");
        var parsed = exits is null ? null : ParseExits(exits);
        NodeSettings settings;
        CreditPolicy? credit;
        lock (_lock)
        {
            // The services are checked against the exit rules they will live with: new ones against the rules after this
            // change, and the ones offered now against new rules (an exit offer needs some).
            IReadOnlyList<Skymesh.Control.Discovery.ServiceEntry> offered;
            try
            {
                offered = services is not null ? NodeOptions.ParseServices(services, parsed ?? _exits, "services")
                    : parsed is not null ? NodeOptions.ParseServices([.. _services.Select(ServiceConfig.From)], parsed, "services")
                    : _services;
            }
            catch (NodeConfigException e)
            {
                throw new NodeRequestException(NodeError.Invalid, services is null
                    ? $"\"exits\": this node offers a service that needs exit rules ({e.Message}); take it out of \"services\" first, or together"
                    : e.Message);
            }
            Save(_state with
            {
                Price = price ?? _state.Price, CreditLimit = creditLimit ?? _state.CreditLimit, Exits = parsed?.Rules ?? _state.Exits,
                Services = services is null ? _state.Services : [.. offered.Select(ServiceConfig.From)],
            });
            if (parsed is not null)
                _exits = parsed;
            _services = offered;
            credit = _credit;
            settings = new NodeSettings(_state.Price ?? _node.Options.Price, _state.CreditLimit ?? _node.Options.CreditLimit, _exits.Rules) { Services = [.. _services.Select(ServiceConfig.From)] };
        }
        if (parsed is not null)
            _node.Exit.Policy = parsed;
        if (creditLimit is { } limit && credit is not null)
            credit.DefaultLimits = credit.DefaultLimits with { ReceiptLimit = limit };
        _node.Events.Append(NodeEventKind.SettingsChanged,
            $"price {settings.Price:N0} per MiB, default credit limit {settings.CreditLimit:N0}, exits {(settings.Exits.Count == 0 ? "none" : string.Join(" ", settings.Exits))}"
            + (services is null ? "" : $", services {(settings.Services.Count == 0 ? "none" : string.Join(", ", Services))}"));
        SettingsChanged?.Invoke();
        return settings;
    }

    private static ExitPolicy ParseExits(IEnumerable<string> rules)
    {
        try
        {
            return ExitPolicy.Parse(rules);
        }
        catch (FormatException e)
        {
            throw new NodeRequestException(NodeError.Invalid, e.Message);
        }
    }

    // ---- The book of decisions ---------------------------------------------------------------------------

    private sealed class PendingDecision(DecisionInfo info)
    {
        public DecisionInfo Info { get; set; } = info;

        public EndPoint? Remote { get; set; }

        public string? Interface { get; set; }

        public TaskCompletionSource<string> Answer { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private DecisionInfo? AskLocked(string kind, string peer, string summary, string waiting, IReadOnlyList<string> choices,
        IReadOnlyDictionary<string, object?> data, EndPoint? remote = null, string? nic = null)
    {
        if (_pending.Count >= PendingLimit)
        {
            Interlocked.Increment(ref _overflow);
            return null;
        }
        var info = new DecisionInfo(++_nextId, kind, peer, _node.Time.GetUtcNow(), summary, waiting, choices, data);
        _pending[info.Id] = new PendingDecision(info) { Remote = remote, Interface = nic };
        return info;
    }

    private void Announce(DecisionInfo? asked)
    {
        if (asked is not null)
            _node.Events.Append(NodeEventKind.DecisionPending, $"decision {asked.Id} waits for you: {asked.Summary}", asked.Peer);
    }

    /// <summary>Takes decision <paramref name="id"/> off the pending list with its answer; null when it was not pending.</summary>
    private DecisionInfo? Settle(long id, string choice, string by)
    {
        PendingDecision? pending;
        DecisionInfo resolved;
        lock (_lock)
        {
            if (!_pending.Remove(id, out pending))
                return null;
            resolved = pending.Info with { Resolved = _node.Time.GetUtcNow(), Choice = choice, By = by };
            _recent.AddFirst(resolved);
            while (_recent.Count > RecentKept)
                _recent.RemoveLast();
        }
        pending.Answer.TrySetResult(choice);
        _node.Events.Append(NodeEventKind.DecisionResolved, $"decision {id} ({resolved.Kind}, {Short(resolved.Peer)}): {choice}, by {(by == "person" ? "a person" : "the policy")}", resolved.Peer);
        return resolved;
    }

    private void Save(OperatorState state)
    {
        _state = state;
        try
        {
            state.Save(_file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The node goes on with the decision in memory; its owner learns from the log that it will not survive a restart.
            Log.NotSaved(_logger, _file, e.Message);
        }
    }

    private static string Short(string address) => address.Length > 12 ? address[..12] + "…" : address;

    private static partial class Log
    {
        [LoggerMessage(EventId = 760, Level = LogLevel.Warning, Message = "Could not save the owner's decisions to {File}: {Reason}; they hold until the node stops")]
        public static partial void NotSaved(ILogger logger, string file, string reason);

        [LoggerMessage(EventId = 761, Level = LogLevel.Information, Message = "Accepted {Peer}, but linking to it at {Remote} failed: {Reason}; it links when it tries again")]
        public static partial void AcceptedNotLinked(ILogger logger, string peer, string remote, string reason);
    }
}
