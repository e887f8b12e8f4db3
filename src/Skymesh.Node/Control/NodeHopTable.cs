using Skymesh.Control.Setup;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;

namespace Skymesh.Node.Control;

/// <summary>The node's forwarder as path setup sees it: links by neighbour, the label table, path ends.</summary>
internal sealed class NodeHopTable(MeshNode node) : IHopTable
{
    public int? LinkTo(NodeAddress neighbour) => node.FindLink(neighbour)?.Id;

    public uint Reserve(int link, TimeSpan lifetime) => node.Switch.Labels.Reserve(link, lifetime);

    public void InstallForward(int inLink, uint inLabel, int outLink, uint outLabel, bool billable) =>
        node.Switch.Labels.Install(inLink, inLabel, LabelAction.Forward(outLink, outLabel, billable));

    public void InstallEnd(SetupRequest request, int link, uint inLabel, uint outLabel)
    {
        var source = request.Source == node.Address;
        var via = source ? request.Nodes[1] : request.Nodes[^2];
        if (request.Replaces != Guid.Empty && node.PathEnds.FirstOrDefault(p => p.Spec.SetupId == request.Replaces) is { } existing)
        {
            node.RetargetPath(existing.Id, via, inLabel, outLabel, request.PathId);
            return;
        }
        node.InstallPath(new PathSpec
        {
            Peer = source ? request.Destination : request.Source,
            Via = via,
            OutLabel = outLabel,
            InLabel = inLabel,
            Initiator = source,
            Nonce = request.Nonce,
            SetupId = request.PathId,
        });
    }

    public void Remove(int link, uint label)
    {
        if (node.PathEnds.FirstOrDefault(p => p.Link.Id == link && p.InLabel == label) is { } end)
            _ = node.RemovePathAsync(end.Id);
        else
            node.Switch.Labels.Remove(link, label);
    }

    public uint PriceOnto(int outLink) => node.Price;
}
