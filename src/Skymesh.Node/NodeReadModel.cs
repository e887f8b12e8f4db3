using Skymesh.Mesh.Apps;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Links;
using Skymesh.Node.Control;

namespace Skymesh.Node;

/// <summary>
/// What a node shows of itself — its status, interfaces, links, label table, paths with the labels at every hop,
/// balances, the mesh as it knows it, its apps — in the shapes the local API serves. The API, the dashboard and the
/// simulator all read a node through this one place, so they never disagree. Reads are snapshots: cheap, lock-free
/// where the node's own state is, and safe from any thread.
/// </summary>
public sealed class NodeReadModel(MeshNode node, ControlPlane? control)
{
    public MeshNode Node { get; } = node;

    public ControlPlane? Control { get; } = control;

    /// <summary>The control agent, or why there is none: no control bus configured, or not on it yet.</summary>
    public ControlAgent RequireAgent() =>
        Control is null ? throw new NodeRequestException(NodeError.Conflict, "this node has no control plane (set \"broker\" in node.json)")
        : Control.Agent ?? throw new NodeRequestException(NodeError.Unavailable, $"the control plane is not connected: {Control.Describe()}");

    public NodeStatus Status() => new(
        Node.Address.ToString(), Node.Started, [.. Node.Interfaces.Values.Select(i => $"{i.Name} {i.LocalEndPoint}")],
        Node.Switch.Links.Count(l => l.State == LinkState.Up), Node.Paths.Count, Node.Switch.Labels.List().Count,
        Node.Switch.Forwarded, Node.Switch.Delivered, Node.Switch.ForwardDrops, Node.Switch.BadFrames, Node.Switch.Labels.UnknownLabels,
        Node.Options.Exits.Rules, Node.Options.Broker ?? (Control is null ? null : Control.Broker), Control?.State ?? "none", Control?.LastError)
    {
        Bus = Control is null ? null : Control.Connector is Control.MeshBusConnector mesh
            ? new BusRoute("via-neighbours", mesh.Via?.ToString(), mesh.Hops, mesh.Kind == "nats" ? null : mesh.Pin, mesh.LastProblem) { Kind = mesh.Kind }
            : new BusRoute("direct", null, 0, null, null) { Kind = Node.BusRelay.Kind },
        Relay = Node.BusRelay.Counters(),
        Nat = Node.Nat.Info(),
        LinkRelay = Node.LinkRelay.Counters(),
        Services = Services(),
    };

    /// <summary>What this node offers, and the offers of others it holds (none when it asks a dedicated finder).</summary>
    public ServicesStatus Services()
    {
        var offered = Node.Operator.Services.Select(ServiceConfig.From).ToList();
        if (Control?.Agent is not { } agent)
            return new ServicesStatus(offered, 0, null, null);
        if (agent.UsesFinder)
            return new ServicesStatus(offered, agent.ServicesPublished, null, null);
        var others = agent.Services.Matching().Where(m => m.Record.Node != Node.Address).ToList();
        return new ServicesStatus(offered, agent.ServicesPublished, others.Count, others.Select(m => m.Record.Node).Distinct().Count());
    }

    public IReadOnlyList<InterfaceInfo> Interfaces() => [.. Node.Interfaces.Values.Select(i => new InterfaceInfo(
        i.Name, i.LocalEndPoint.ToString() ?? "", i.Mtu, i.Counters.FramesSent, i.Counters.FramesReceived,
        i.Counters.BytesSent, i.Counters.BytesReceived, i.Counters.SendDrops, i.Counters.ReceiveDrops) { Up = Node.Switch.IsInterfaceUp(i) })];

    public IReadOnlyList<LinkInfo> Links() => [.. Node.Switch.Links.OrderBy(l => l.Id).Select(Link)];

    /// <summary>One link as the API shows it, with how it was made.</summary>
    public LinkInfo Link(Link link) => Node.Nat.HowMade(link) is { } made
        ? link.Info() with { How = made.How, Via = made.Via?.ToString() }
        : link.Info() with { How = link.IsInitiator ? "dialled" : "answered" };

    /// <summary>The label table: installed entries, then labels reserved for a path being set up (they expire unless installed).</summary>
    public IReadOnlyList<LabelEntry> Labels() =>
    [
        .. Node.Switch.Labels.List().Select(Describe),
        .. Node.Switch.Labels.Reserved().Select(r => new LabelEntry(r.InLink, Node.Switch.GetLink(r.InLink)?.Peer?.ToString(), r.InLabel, "reserved", null, null, null, null, r.Age.TotalSeconds)),
    ];

    private LabelEntry Describe(LabelEntryInfo e)
    {
        var inPeer = Node.Switch.GetLink(e.InLink)?.Peer?.ToString();
        if (e.Action.Kind == LabelActionKind.Forward)
            return new LabelEntry(e.InLink, inPeer, e.InLabel, "forward", e.Action.OutLink, Node.Switch.GetLink(e.Action.OutLink)?.Peer?.ToString(), e.Action.OutLabel, null, e.IdleFor.TotalSeconds);
        var path = Node.PathEnds.FirstOrDefault(p => p.SinkId == e.Action.Endpoint)?.Id;
        return new LabelEntry(e.InLink, inPeer, e.InLabel, "deliver", null, null, null, path, e.IdleFor.TotalSeconds);
    }

    /// <summary>The node's path ends; those it set up through the control plane carry every hop and its labels.</summary>
    public IReadOnlyList<PathInfo> Paths()
    {
        var opened = Control?.Agent?.Opened.ToDictionary(p => p.Request.PathId) ?? [];
        var setupIds = Node.PathEnds.ToDictionary(p => p.Id, p => p.Spec.SetupId);
        return [.. Node.Paths.Select(p =>
        {
            if (!setupIds.TryGetValue(p.Id, out var setupId) || setupId is not { } id || !opened.TryGetValue(id, out var path))
                return p;
            var nodes = path.Request.Nodes;
            var hops = new List<PathHop> { new(nodes[0].ToString(), 0, path.InLabel) };
            hops.AddRange(path.Hops.Select((h, i) => new PathHop(nodes[i + 1].ToString(), h.ForwardIn, i + 1 == path.Hops.Count ? 0 : h.BackIn)));
            return p with { Hops = hops, Price = PriceOf(nodes) };
        })];
    }

    /// <summary>The relays' announced prices summed along <paramref name="nodes"/>; null when this node keeps no graph or lacks a record.</summary>
    private ulong? PriceOf(IReadOnlyList<Skymesh.Identity.NodeAddress> nodes)
    {
        if (Control?.Agent is not { UsesFinder: false } agent)
            return null;
        ulong price = 0;
        for (var i = 1; i + 1 < nodes.Count; i++)
        {
            if (agent.Graph.RecordOf(nodes[i]) is not { } record || !record.TryGetUpLinkTo(nodes[i + 1], out var link))
                return null;
            price += link.PricePerMiB;
        }
        return price;
    }

    public BalanceInfo Balance() => RequireAgent().Settlement.Balance();

    /// <summary>The mesh as this node's control plane knows it: every node's latest announcement.</summary>
    public IReadOnlyList<MeshNodeInfo> Mesh() => [.. RequireAgent().Graph.Records.OrderBy(r => r.Node.ToString()).Select(r => new MeshNodeInfo(
        r.Node.ToString(), r.Sequence, r.Expires, [.. r.Links.Select(l => new MeshLinkInfo(l.Peer.ToString(), l.RttMicroseconds, l.LossPpm, l.CapacityKbps, l.PricePerMiB, l.State.ToString().ToLowerInvariant()))]))];

    public IReadOnlyList<AppInfo> Apps() => [.. Node.Apps.Select(a => AppInfo.Of(a.Key, a.Value))];
}
