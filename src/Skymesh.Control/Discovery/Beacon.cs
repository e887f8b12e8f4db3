using System.Buffers.Binary;
using Skymesh.Identity;

namespace Skymesh.Control.Discovery;

/// <summary>Why a beacon was ignored.</summary>
public enum BeaconError
{
    None,
    Malformed,
    BadSignature,
    Stale,
    Own,
}

/// <summary>
/// A node's signed "I am here" on a LAN (docs/control-plane.md): broadcast by nodes that enable discovery,
/// it names the node and the UDP port of its mesh interface; a listener links to the sender at the datagram's
/// source address and that port, expecting that node (the link handshake proves it).
/// <code>"SKB1" | node(32) | port(2) | issued ms(8) | BIP340 signature(64), purpose "lan-beacon"</code>
/// </summary>
public sealed class Beacon
{
    public const string SignaturePurpose = "lan-beacon";
    public const int Length = 4 + 32 + 2 + 8 + NodeKey.SignatureLength;
    private const int SignedLength = Length - NodeKey.SignatureLength;
    private static ReadOnlySpan<byte> Magic => "SKB1"u8;

    private Beacon(NodeAddress node, int port, DateTimeOffset issued, byte[] bytes)
    {
        Node = node;
        Port = port;
        Issued = issued;
        Bytes = bytes;
    }

    public NodeAddress Node { get; }

    public int Port { get; }

    public DateTimeOffset Issued { get; }

    public byte[] Bytes { get; }

    public static Beacon Create(NodeKey key, int port, DateTimeOffset issued)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        var bytes = new byte[Length];
        Magic.CopyTo(bytes);
        key.Address.WriteTo(bytes.AsSpan(4));
        BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(36), (ushort)port);
        BinaryPrimitives.WriteInt64BigEndian(bytes.AsSpan(38), issued.ToUnixTimeMilliseconds());
        key.Sign(SignaturePurpose, bytes.AsSpan(0, SignedLength), bytes.AsSpan(SignedLength));
        return new Beacon(key.Address, port, DateTimeOffset.FromUnixTimeMilliseconds(issued.ToUnixTimeMilliseconds()), bytes);
    }

    /// <summary>
    /// Checks a received beacon: form, not our own, issued within <paramref name="tolerance"/> of now, then the
    /// signature (last: it is the expensive check).
    /// </summary>
    public static BeaconError Check(ReadOnlySpan<byte> bytes, NodeAddress self, DateTimeOffset now, TimeSpan tolerance, out Beacon? beacon)
    {
        beacon = null;
        if (bytes.Length != Length || !bytes.StartsWith(Magic) || !NodeAddress.TryFromBytes(bytes.Slice(4, 32), out var node))
            return BeaconError.Malformed;
        var port = BinaryPrimitives.ReadUInt16BigEndian(bytes[36..]);
        var issuedMs = BinaryPrimitives.ReadInt64BigEndian(bytes[38..]);
        if (port == 0 || issuedMs is < 0 or > 253_402_300_799_999)
            return BeaconError.Malformed;
        if (node == self)
            return BeaconError.Own;
        var issued = DateTimeOffset.FromUnixTimeMilliseconds(issuedMs);
        if ((issued - now).Duration() > tolerance)
            return BeaconError.Stale;
        if (!node.Verify(SignaturePurpose, bytes[..SignedLength], bytes[SignedLength..]))
            return BeaconError.BadSignature;
        beacon = new Beacon(node, port, issued, bytes.ToArray());
        return BeaconError.None;
    }
}
