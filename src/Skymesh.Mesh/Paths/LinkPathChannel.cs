using Skymesh.Mesh.Links;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Paths;

/// <summary>
/// Binds a path endpoint to the data plane: what the endpoint sends goes onto <see cref="OutLink"/> with
/// <see cref="OutLabel"/> (the first hop's label for this path), and what the switch delivers for the
/// path's incoming label is handed to the endpoint. Register it with <see cref="MeshSwitch.RegisterSink"/>
/// and install the incoming label with <see cref="Forwarding.LabelAction.Deliver"/> of that sink id.
/// </summary>
public sealed class LinkPathChannel(Link outLink, uint outLabel) : IPathChannel, IPathSink
{
    public Link OutLink { get; } = outLink;

    public uint OutLabel { get; } = outLabel;

    /// <summary>The endpoint fed with this path's incoming messages; set it before traffic flows.</summary>
    public PathEndpoint? Endpoint { get; set; }

    public int MaxPayload => FrameBuilder.MaxPayload(OutLink.Interface.Mtu, encrypted: true);

    /// <summary>True when the first hop forwards this path's messages (it is not the destination): they count for settlement.</summary>
    public bool Billable { get; init; }

    public bool TrySend(byte type, ReadOnlySpan<byte> payload) => OutLink.TryEnqueue(OutLabel, type, payload, Billable);

    public void OnMessage(Link from, uint label, byte type, ReadOnlySpan<byte> payload) => Endpoint?.OnMessage(type, payload);
}
