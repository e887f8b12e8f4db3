using System.Buffers.Binary;
using System.Net;

namespace Skymesh.Node.Vpn;

/// <summary>
/// The little of IPv4 and IPv6 the VPN reads and writes: addresses, the transport and its destination port, TCP's
/// MSS option on SYNs (clamped so that segments fit the tunnel), and ICMP "too big" answers a router would send.
/// Extension headers of IPv6 are not followed: a packet that has them is carried, but its port reads as unknown.
/// </summary>
public static class IpPacket
{
    public const byte Tcp = 6;
    public const byte Udp = 17;
    public const byte Icmp = 1;
    public const byte Icmp6 = 58;

    /// <summary>The smallest MTU an IPv6 link may have (RFC 8200); a tunnel smaller than it carries IPv4 only.</summary>
    public const int MinIpv6Mtu = 1280;

    /// <summary>4 or 6 for a packet whose header is whole; 0 otherwise (too short, another version, a length that lies).</summary>
    public static int Version(ReadOnlySpan<byte> packet)
    {
        if (packet.Length >= 20 && packet[0] >> 4 == 4)
        {
            var headerLength = (packet[0] & 0x0f) * 4;
            var total = BinaryPrimitives.ReadUInt16BigEndian(packet[2..]);
            return headerLength >= 20 && total >= headerLength && total <= packet.Length ? 4 : 0;
        }
        if (packet.Length >= 40 && packet[0] >> 4 == 6)
            return 40 + BinaryPrimitives.ReadUInt16BigEndian(packet[4..]) <= packet.Length ? 6 : 0;
        return 0;
    }

    public static ReadOnlySpan<byte> Source(ReadOnlySpan<byte> packet, int version) => version == 4 ? packet.Slice(12, 4) : packet.Slice(8, 16);

    public static ReadOnlySpan<byte> Destination(ReadOnlySpan<byte> packet, int version) => version == 4 ? packet.Slice(16, 4) : packet.Slice(24, 16);

    /// <summary>The transport protocol (TCP 6, UDP 17, ICMP 1, ICMPv6 58…).</summary>
    public static byte Protocol(ReadOnlySpan<byte> packet, int version) => version == 4 ? packet[9] : packet[6];

    /// <summary>Where the transport header starts; -1 for a later IPv4 fragment (no transport header in it).</summary>
    public static int TransportOffset(ReadOnlySpan<byte> packet, int version)
    {
        if (version == 6)
            return 40;
        var fragmentOffset = BinaryPrimitives.ReadUInt16BigEndian(packet[6..]) & 0x1fff;
        return fragmentOffset != 0 ? -1 : (packet[0] & 0x0f) * 4;
    }

    /// <summary>The TCP or UDP destination port; 0 for other transports, later fragments, and truncated headers.</summary>
    public static int DestinationPort(ReadOnlySpan<byte> packet, int version)
    {
        var protocol = Protocol(packet, version);
        if (protocol is not Tcp and not Udp)
            return 0;
        var offset = TransportOffset(packet, version);
        return offset < 0 || offset + 4 > packet.Length ? 0 : BinaryPrimitives.ReadUInt16BigEndian(packet[(offset + 2)..]);
    }

    /// <summary>The packet's total length as its header says (IPv4 total length, IPv6 40 + payload length).</summary>
    public static int Length(ReadOnlySpan<byte> packet, int version) =>
        version == 4 ? BinaryPrimitives.ReadUInt16BigEndian(packet[2..]) : 40 + BinaryPrimitives.ReadUInt16BigEndian(packet[4..]);

    public static IPAddress Address(ReadOnlySpan<byte> bytes) => new(bytes);

    /// <summary>
    /// Lowers the MSS option of a TCP SYN to what fits a tunnel of <paramref name="mtu"/> bytes (less the IP and TCP
    /// headers), fixing the checksum; true when it changed the packet. Hosts behind the tunnel then never send
    /// segments the tunnel would have to refuse.
    /// </summary>
    public static bool ClampMss(Span<byte> packet, int version, int mtu)
    {
        if (Protocol(packet, version) != Tcp)
            return false;
        var tcp = TransportOffset(packet, version);
        if (tcp < 0 || tcp + 20 > packet.Length || (packet[tcp + 13] & 0x02) == 0)
            return false;
        var dataOffset = (packet[tcp + 12] >> 4) * 4;
        if (dataOffset < 20 || tcp + dataOffset > packet.Length)
            return false;
        var limit = mtu - (version == 4 ? 40 : 60);
        if (limit <= 0)
            return false;
        var options = packet.Slice(tcp + 20, dataOffset - 20);
        for (var i = 0; i < options.Length;)
        {
            var kind = options[i];
            if (kind == 0)
                break;
            if (kind == 1)
            {
                i++;
                continue;
            }
            if (i + 1 >= options.Length || options[i + 1] < 2 || i + options[i + 1] > options.Length)
                break;
            if (kind == 2 && options[i + 1] == 4)
            {
                var mss = BinaryPrimitives.ReadUInt16BigEndian(options[(i + 2)..]);
                if (mss <= limit)
                    return false;
                BinaryPrimitives.WriteUInt16BigEndian(options[(i + 2)..], (ushort)limit);
                // RFC 1624: HC' = ~(~HC + ~m + m')
                var checksum = packet.Slice(tcp + 16, 2);
                var sum = (uint)(ushort)~BinaryPrimitives.ReadUInt16BigEndian(checksum) + (ushort)~mss + (uint)limit;
                sum = (sum & 0xffff) + (sum >> 16);
                sum = (sum & 0xffff) + (sum >> 16);
                BinaryPrimitives.WriteUInt16BigEndian(checksum, (ushort)~sum);
                return true;
            }
            i += options[i + 1];
        }
        return false;
    }

    /// <summary>
    /// Writes into <paramref name="answer"/> the ICMP message a router sends back for <paramref name="packet"/> when
    /// its next link carries at most <paramref name="mtu"/> bytes: IPv4 "fragmentation needed" (when the packet says
    /// don't fragment) or ICMPv6 "packet too big", from the packet's destination to its source. Returns the length
    /// written, or 0 when no answer is due (IPv4 without DF, an ICMP error itself).
    /// </summary>
    public static int WriteTooBig(ReadOnlySpan<byte> packet, int version, int mtu, Span<byte> answer)
    {
        if (version == 4)
        {
            var dontFragment = (packet[6] & 0x40) != 0;
            if (!dontFragment || IsIcmpError(packet, version))
                return 0;
            var headerLength = (packet[0] & 0x0f) * 4;
            var quoted = Math.Min(packet.Length, headerLength + 8);
            var length = 20 + 8 + quoted;
            if (answer.Length < length)
                return 0;
            var ip = answer[..20];
            ip.Clear();
            ip[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)length);
            ip[8] = 64;
            ip[9] = Icmp;
            packet.Slice(16, 4).CopyTo(ip[12..]);
            packet.Slice(12, 4).CopyTo(ip[16..]);
            BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum(ip, 0));
            var icmp = answer[20..length];
            icmp.Clear();
            icmp[0] = 3;
            icmp[1] = 4;
            BinaryPrimitives.WriteUInt16BigEndian(icmp[6..], (ushort)Math.Min(mtu, 0xffff));
            packet[..quoted].CopyTo(icmp[8..]);
            BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], Checksum(icmp, 0));
            return length;
        }
        if (IsIcmpError(packet, version))
            return 0;
        var copy = Math.Min(packet.Length, MinIpv6Mtu - 48);
        var total = 48 + copy;
        if (answer.Length < total)
            return 0;
        var header = answer[..40];
        header.Clear();
        header[0] = 0x60;
        BinaryPrimitives.WriteUInt16BigEndian(header[4..], (ushort)(8 + copy));
        header[6] = Icmp6;
        header[7] = 64;
        packet.Slice(24, 16).CopyTo(header[8..]);
        packet.Slice(8, 16).CopyTo(header[24..]);
        var message = answer[40..total];
        message.Clear();
        message[0] = 2;
        BinaryPrimitives.WriteUInt32BigEndian(message[4..], (uint)Math.Max(mtu, MinIpv6Mtu));
        packet[..copy].CopyTo(message[8..]);
        BinaryPrimitives.WriteUInt16BigEndian(message[2..], Checksum(message, PseudoHeaderSum(header[8..24], header[24..40], (uint)message.Length, Icmp6)));
        return total;
    }

    /// <summary>Whether the packet is an ICMP error (never answered with another).</summary>
    private static bool IsIcmpError(ReadOnlySpan<byte> packet, int version)
    {
        var protocol = Protocol(packet, version);
        var offset = TransportOffset(packet, version);
        if (offset < 0 || offset >= packet.Length)
            return false;
        return protocol == Icmp ? packet[offset] is 3 or 4 or 5 or 11 or 12 : protocol == Icmp6 && packet[offset] < 128;
    }

    private static uint PseudoHeaderSum(ReadOnlySpan<byte> source, ReadOnlySpan<byte> destination, uint length, byte protocol)
    {
        uint sum = 0;
        for (var i = 0; i < source.Length; i += 2)
            sum += BinaryPrimitives.ReadUInt16BigEndian(source[i..]);
        for (var i = 0; i < destination.Length; i += 2)
            sum += BinaryPrimitives.ReadUInt16BigEndian(destination[i..]);
        return sum + (length >> 16) + (length & 0xffff) + protocol;
    }

    /// <summary>The Internet checksum (RFC 1071) of <paramref name="data"/>, starting from <paramref name="initial"/>.</summary>
    public static ushort Checksum(ReadOnlySpan<byte> data, uint initial)
    {
        ulong sum = initial;
        var i = 0;
        for (; i + 1 < data.Length; i += 2)
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        if (i < data.Length)
            sum += (uint)data[i] << 8;
        while (sum >> 16 != 0)
            sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }
}
