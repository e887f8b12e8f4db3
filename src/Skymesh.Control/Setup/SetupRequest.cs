using System.Buffers.Binary;
using Skymesh.Identity;

namespace Skymesh.Control.Setup;

/// <summary>Why a setup request was refused before any hop looked at its policy.</summary>
public enum SetupRequestError
{
    None,
    Malformed,
    BadSignature,
    Expired,
    FromTheFuture,
}

/// <summary>
/// The source's signed request to set up a path (docs/control-plane.md): the same bytes go to every hop, in
/// parallel, and each hop checks the one signature. It names every node from the source to the destination,
/// a price cap per hop, and the nonce both ends salt the end-to-end keys with.
/// <code>
/// "SKP1" | path id(16) | replaces(16) | issued ms(8) | lifetime s(2) | max price per hop(4) | nonce(32) | hops(1)
///        | (hops + 1) × node(32), source first, destination last
///        | BIP340 signature(64) by the source, purpose "path-setup", over everything before it
/// </code>
/// </summary>
public sealed class SetupRequest
{
    public const string SignaturePurpose = "path-setup";

    public const int MaxHops = 16;

    private const int HeaderLength = 4 + 16 + 16 + 8 + 2 + 4 + 32 + 1;
    private static ReadOnlySpan<byte> Magic => "SKP1"u8;

    private SetupRequest(Guid pathId, Guid replaces, DateTimeOffset issued, TimeSpan lifetime, uint maxPricePerHop, byte[] nonce, IReadOnlyList<NodeAddress> nodes, byte[] bytes)
    {
        PathId = pathId;
        Replaces = replaces;
        Issued = issued;
        Lifetime = lifetime;
        MaxPricePerHop = maxPricePerHop;
        Nonce = nonce;
        Nodes = nodes;
        Bytes = bytes;
    }

    /// <summary>Names the path in every later message (commit, release, close, broken); also the idempotency key.</summary>
    public Guid PathId { get; }

    /// <summary>
    /// The path this one repairs (empty for a new path): its two ends move their endpoint onto this path, so
    /// streams continue with their keys and state, and the old path's hops are released.
    /// </summary>
    public Guid Replaces { get; }

    public DateTimeOffset Issued { get; }

    /// <summary>How long the request may be acted on (setup must finish within it; retries reuse it).</summary>
    public TimeSpan Lifetime { get; }

    public DateTimeOffset Expires => Issued + Lifetime;

    /// <summary>Most a relay may charge per MiB for this path; a relay asking more refuses.</summary>
    public uint MaxPricePerHop { get; }

    /// <summary>32 bytes that salt the end-to-end key derivation of the two ends.</summary>
    public byte[] Nonce { get; }

    /// <summary>Source first, destination last.</summary>
    public IReadOnlyList<NodeAddress> Nodes { get; }

    public NodeAddress Source => Nodes[0];

    public NodeAddress Destination => Nodes[^1];

    public int Hops => Nodes.Count - 1;

    public byte[] Bytes { get; }

    public static SetupRequest Create(NodeKey source, Guid pathId, DateTimeOffset issued, TimeSpan lifetime, uint maxPricePerHop, ReadOnlySpan<byte> nonce, IReadOnlyList<NodeAddress> nodes, Guid replaces = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(nodes);
        if (nodes.Count < 2 || nodes.Count - 1 > MaxHops)
            throw new ArgumentException($"A path has 1 to {MaxHops} hops.", nameof(nodes));
        if (nodes[0] != source.Address)
            throw new ArgumentException("The first node of a path is its source, the signer.", nameof(nodes));
        if (nodes.Distinct().Count() != nodes.Count)
            throw new ArgumentException("A path visits each node once.", nameof(nodes));
        if (nonce.Length != 32)
            throw new ArgumentException("The nonce is 32 bytes.", nameof(nonce));
        if (lifetime <= TimeSpan.Zero || lifetime.TotalSeconds > ushort.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(lifetime), lifetime, "1 s to 18 h.");
        var length = HeaderLength + nodes.Count * NodeAddress.Length;
        var bytes = new byte[length + NodeKey.SignatureLength];
        var span = bytes.AsSpan();
        Magic.CopyTo(span);
        pathId.TryWriteBytes(span[4..20], bigEndian: true, out _);
        replaces.TryWriteBytes(span[20..36], bigEndian: true, out _);
        BinaryPrimitives.WriteInt64BigEndian(span[36..], issued.ToUnixTimeMilliseconds());
        BinaryPrimitives.WriteUInt16BigEndian(span[44..], (ushort)Math.Ceiling(lifetime.TotalSeconds));
        BinaryPrimitives.WriteUInt32BigEndian(span[46..], maxPricePerHop);
        nonce.CopyTo(span[50..]);
        span[82] = (byte)(nodes.Count - 1);
        for (var i = 0; i < nodes.Count; i++)
            nodes[i].WriteTo(span.Slice(HeaderLength + i * NodeAddress.Length));
        source.Sign(SignaturePurpose, span[..length], span[length..]);
        return TryParse(bytes, out var request) == SetupRequestError.None ? request! : throw new InvalidOperationException("A request just built does not parse.");
    }

    /// <summary>Reads the fields; the signature is checked by <see cref="Verify"/>.</summary>
    public static SetupRequestError TryParse(ReadOnlySpan<byte> bytes, out SetupRequest? request)
    {
        request = null;
        if (bytes.Length < HeaderLength + 2 * NodeAddress.Length + NodeKey.SignatureLength || !bytes.StartsWith(Magic))
            return SetupRequestError.Malformed;
        var hops = bytes[82];
        if (hops is 0 or > MaxHops || bytes.Length != HeaderLength + (hops + 1) * NodeAddress.Length + NodeKey.SignatureLength)
            return SetupRequestError.Malformed;
        var issuedMs = BinaryPrimitives.ReadInt64BigEndian(bytes[36..]);
        var lifetime = BinaryPrimitives.ReadUInt16BigEndian(bytes[44..]);
        if (issuedMs is < 0 or > 253_402_300_799_999 || lifetime == 0)
            return SetupRequestError.Malformed;
        var nodes = new NodeAddress[hops + 1];
        for (var i = 0; i <= hops; i++)
        {
            if (!NodeAddress.TryFromBytes(bytes.Slice(HeaderLength + i * NodeAddress.Length, NodeAddress.Length), out nodes[i]))
                return SetupRequestError.Malformed;
        }
        if (nodes.Distinct().Count() != nodes.Length)
            return SetupRequestError.Malformed;
        request = new SetupRequest(new Guid(bytes[4..20], bigEndian: true), new Guid(bytes[20..36], bigEndian: true), DateTimeOffset.FromUnixTimeMilliseconds(issuedMs),
            TimeSpan.FromSeconds(lifetime), BinaryPrimitives.ReadUInt32BigEndian(bytes[46..]), bytes.Slice(50, 32).ToArray(), nodes, bytes.ToArray());
        return SetupRequestError.None;
    }

    /// <summary>Checks the source's signature (about 0.23 ms).</summary>
    public bool Verify()
    {
        var signed = Bytes.Length - NodeKey.SignatureLength;
        return Source.Verify(SignaturePurpose, Bytes.AsSpan(0, signed), Bytes.AsSpan(signed));
    }

    /// <summary>The full check a hop makes before looking at its policy: form, time window, signature.</summary>
    public static SetupRequestError Check(ReadOnlySpan<byte> bytes, DateTimeOffset now, TimeSpan clockTolerance, out SetupRequest? request)
    {
        var error = TryParse(bytes, out request);
        if (error != SetupRequestError.None)
            return error;
        if (request!.Expires <= now)
            return SetupRequestError.Expired;
        if (request.Issued > now + clockTolerance)
            return SetupRequestError.FromTheFuture;
        return request.Verify() ? SetupRequestError.None : SetupRequestError.BadSignature;
    }
}
