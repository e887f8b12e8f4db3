using System.Security.Cryptography;
using System.Text;
using Skymesh.Identity;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node;

/// <summary>What the local API is told to install: one end of a path (docs/node.md).</summary>
public sealed record PathSpec
{
    /// <summary>The node at the other end of the path.</summary>
    public required NodeAddress Peer { get; init; }

    /// <summary>The neighbour the path leaves by (and comes back from).</summary>
    public required NodeAddress Via { get; init; }

    /// <summary>The label the next hop reads this path's messages on.</summary>
    public required uint OutLabel { get; init; }

    /// <summary>The label this node reads the path's incoming messages on (reserved on the link to <see cref="Via"/>); null reserves one.</summary>
    public uint? InLabel { get; init; }

    /// <summary>The source of the path (opens odd stream ids); the destination end says false.</summary>
    public bool Initiator { get; init; } = true;

    /// <summary>32 random bytes both ends share; the end-to-end keys are derived from it and the two nodes' keys.</summary>
    public required byte[] Nonce { get; init; }

    /// <summary>The control plane's id of the path, when it set the path up (null for paths installed by hand).</summary>
    public Guid? SetupId { get; init; }
}

/// <summary>A path as the local API lists it.</summary>
public sealed record PathInfo(
    int Id, string Peer, string Via, int OutLink, uint OutLabel, int InLink, uint InLabel, bool Initiator, string State,
    int OpenStreams, long MessagesSent, long MessagesReceived, long MessagesDropped, DateTimeOffset Created, string? Error)
{
    /// <summary>For a path this node set up through the control plane: every node on it and the labels it switches on.</summary>
    public IReadOnlyList<PathHop>? Hops { get; init; }

    /// <summary>Times the path was moved onto another route around a link that went down, streams and all.</summary>
    public int Repairs { get; init; }

    /// <summary>What the relays charge together per MiB, as they announced it (known to a node that keeps the mesh's graph).</summary>
    public ulong? Price { get; init; }

    /// <summary>The reliable streams open on the path, together: null when there are none.</summary>
    public PathStreams? Streams { get; init; }
}

/// <summary>The reliable streams of one path, summed (the round trip is the largest of theirs).</summary>
/// <param name="Window">Congestion windows summed, in bytes.</param>
public sealed record PathStreams(int Count, double RttMs, long Retransmissions, long Window, long BytesSent, long BytesReceived, long InFlight)
{
    public static PathStreams? Of(IReadOnlyList<StreamCounters> streams) => streams.Count == 0 ? null : new(
        streams.Count, streams.Max(s => s.SmoothedRtt.TotalMilliseconds), streams.Sum(s => s.SegmentsRetransmitted), streams.Sum(s => s.CongestionWindow),
        streams.Sum(s => s.BytesSent), streams.Sum(s => s.BytesReceived), streams.Sum(s => s.BytesInFlight));
}

/// <summary>
/// One node of a path as its source set it up: the label it takes the path's messages in on from the source's side
/// (<see cref="ForwardIn"/>) and from the destination's side (<see cref="BackIn"/>); 0 where there is none (the source
/// has no forward-in label, the destination no back-in label of its own).
/// </summary>
public sealed record PathHop(string Node, uint ForwardIn, uint BackIn);

/// <summary>One end of a path on this node: the endpoint, its channel, and the label entry that feeds it.</summary>
internal sealed class NodePath
{
    public required int Id { get; init; }

    public required PathSpec Spec { get; set; }

    public required Link Link { get; set; }

    public required uint InLabel { get; set; }

    public required int SinkId { get; set; }

    public required LinkPathChannel Channel { get; set; }

    public required PathEndpoint Endpoint { get; init; }

    public required DateTimeOffset Created { get; init; }

    /// <summary>Times the control plane moved the path onto another route (under the node's path lock).</summary>
    public int Repairs { get; set; }

    public CancellationTokenSource Stop { get; } = new();

    public List<Task> Loops { get; } = [];

    public PathInfo Info()
    {
        var counters = Endpoint.Counters;
        var broken = Endpoint.BrokenBy;
        var state = broken is not null ? "broken" : Link.State == LinkState.Up ? "up" : "link down";
        return new PathInfo(Id, Spec.Peer.ToString(), Spec.Via.ToString(), Link.Id, Spec.OutLabel, Link.Id, InLabel, Spec.Initiator,
            state, Endpoint.OpenStreams, counters.MessagesSent, counters.MessagesReceived, counters.MessagesDropped, Created, broken?.Message)
        {
            Repairs = Repairs,
            Streams = PathStreams.Of(Endpoint.StreamCounters()),
        };
    }

    /// <summary>
    /// The end-to-end keys: HKDF-SHA256 over the static ECDH secret of the two nodes, salted with the path's
    /// nonce, info naming both ends (source first); 64 bytes, source→destination key then destination→source.
    /// </summary>
    public static PathCipher CreateCipher(NodeKey key, PathSpec spec)
    {
        Span<byte> shared = stackalloc byte[32];
        Span<byte> keys = stackalloc byte[64];
        key.DeriveSharedSecret(spec.Peer, shared);
        var (source, destination) = spec.Initiator ? (key.Address, spec.Peer) : (spec.Peer, key.Address);
        var info = Encoding.ASCII.GetBytes($"skymesh path keys v1 {source} {destination}");
        HKDF.DeriveKey(HashAlgorithmName.SHA256, shared, keys, spec.Nonce, info);
        var forward = keys[..32];
        var backward = keys[32..];
        var cipher = spec.Initiator ? new PathCipher(forward, backward) : new PathCipher(backward, forward);
        CryptographicOperations.ZeroMemory(shared);
        CryptographicOperations.ZeroMemory(keys);
        return cipher;
    }
}
