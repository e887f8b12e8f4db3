using System.Buffers.Binary;
using System.Net;

namespace Skymesh.Node.Vpn;

/// <summary>Why a packet was not carried; each reason is counted (<c>skymesh_vpn_dropped_total{reason}</c>).</summary>
public enum VpnDrop
{
    /// <summary>Not an IPv4 or IPv6 packet with a whole header.</summary>
    Malformed,

    /// <summary>From a node that has no session with this server.</summary>
    NoSession,

    /// <summary>A client's packet from an address that is not the one it was given (nor one of its site networks).</summary>
    Spoofed,

    /// <summary>To a destination the server's exit policy does not allow.</summary>
    NotAllowed,

    /// <summary>Larger than the path carries now (answered with ICMP "too big" when the sender asked not to fragment).</summary>
    TooBig,

    /// <summary>To an address no session (or, on a client, the tunnel) owns.</summary>
    NoRoute,

    /// <summary>The path refused it (its link queue full, the path down): a router's queue drop.</summary>
    PathRefused,

    /// <summary>The host refused it (the TUN device's queue).</summary>
    HostRefused,
}

/// <summary>Packets and bytes each way, and drops by reason, for one VPN end.</summary>
public sealed class VpnCounters
{
    private readonly long[] _drops = new long[Enum.GetValues<VpnDrop>().Length];
    private long _packetsToMesh;
    private long _bytesToMesh;
    private long _packetsFromMesh;
    private long _bytesFromMesh;

    public long PacketsToMesh => Interlocked.Read(ref _packetsToMesh);

    public long BytesToMesh => Interlocked.Read(ref _bytesToMesh);

    public long PacketsFromMesh => Interlocked.Read(ref _packetsFromMesh);

    public long BytesFromMesh => Interlocked.Read(ref _bytesFromMesh);

    public void Sent(int bytes)
    {
        Interlocked.Increment(ref _packetsToMesh);
        Interlocked.Add(ref _bytesToMesh, bytes);
    }

    public void Received(int bytes)
    {
        Interlocked.Increment(ref _packetsFromMesh);
        Interlocked.Add(ref _bytesFromMesh, bytes);
    }

    public void Drop(VpnDrop reason) => Interlocked.Increment(ref _drops[(int)reason]);

    public long Dropped(VpnDrop reason) => Interlocked.Read(ref _drops[(int)reason]);

    /// <summary>Drops by reason, in camel case, leaving out the reasons with none.</summary>
    public IReadOnlyDictionary<string, long> Drops() =>
        Enum.GetValues<VpnDrop>().Where(r => Dropped(r) > 0).ToDictionary(r => char.ToLowerInvariant(r.ToString()[0]) + r.ToString()[1..], Dropped);
}

/// <summary>An IP address as a number, for lookups on the packet path without allocating.</summary>
internal static class AddressKey
{
    public static UInt128 Of(ReadOnlySpan<byte> address) =>
        address.Length == 4 ? BinaryPrimitives.ReadUInt32BigEndian(address) : BinaryPrimitives.ReadUInt128BigEndian(address);

    public static UInt128 Of(IPAddress address) => Of(address.GetAddressBytes());

    /// <summary>The <paramref name="index"/>-th address of <paramref name="network"/>.</summary>
    public static IPAddress Nth(IPNetwork network, long index)
    {
        var bytes = network.BaseAddress.GetAddressBytes();
        if (bytes.Length == 4)
        {
            BinaryPrimitives.WriteUInt32BigEndian(bytes, BinaryPrimitives.ReadUInt32BigEndian(bytes) + (uint)index);
            return new IPAddress(bytes);
        }
        BinaryPrimitives.WriteUInt128BigEndian(bytes, BinaryPrimitives.ReadUInt128BigEndian(bytes) + (UInt128)index);
        return new IPAddress(bytes);
    }

    /// <summary>How many host addresses the network holds for clients (its size less the network address, the server's and, on IPv4, broadcast).</summary>
    public static long Hosts(IPNetwork network)
    {
        var bits = (network.BaseAddress.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128) - network.PrefixLength;
        return bits >= 62 ? long.MaxValue / 2 : (1L << bits) - (network.BaseAddress.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 3 : 2);
    }
}
