using Skymesh.Mesh.Paths;

namespace Skymesh.Node.Vpn;

/// <summary>
/// The packet path from a TUN device onto the mesh, shared by the VPN's ends and mesh IPv6: read a packet, find its
/// path, send it as a path datagram when it fits, else answer "too big" as a router would.
/// </summary>
internal static class TunPump
{
    /// <summary>Where a packet read from the device goes: its path (null: dropped for <paramref name="reason"/>), its MTU, and the session counting it.</summary>
    public delegate PathEndpoint? Router(ReadOnlySpan<byte> packet, int version, out int mtu, out VpnCounters? session, out VpnDrop reason);

    /// <summary>Reads <paramref name="tun"/> until it is closed, sending each packet as a datagram of <paramref name="kind"/> where <paramref name="route"/> says.</summary>
    public static void Run(ITunDevice tun, byte kind, VpnCounters counters, Router route)
    {
        var buffer = GC.AllocateUninitializedArray<byte>(65_536 + 1, pinned: true);
        var answer = new byte[1_500];
        buffer[0] = kind;
        while (true)
        {
            var n = tun.Read(buffer.AsSpan(1));
            if (n <= 0)
                return;
            var packet = buffer.AsSpan(1, n);
            var version = IpPacket.Version(packet);
            if (version == 0)
            {
                counters.Drop(VpnDrop.Malformed);
                continue;
            }
            if (route(packet, version, out var mtu, out var session, out var reason) is not { } endpoint)
            {
                counters.Drop(reason);
                session?.Drop(reason);
                continue;
            }
            var result = Send(tun, endpoint, buffer.AsSpan(0, n + 1), version, mtu, answer);
            if (result is { } drop)
            {
                counters.Drop(drop);
                session?.Drop(drop);
                continue;
            }
            counters.Sent(n);
            session?.Sent(n);
        }
    }

    /// <summary>
    /// Sends <paramref name="datagram"/> (a kind byte, then an IP packet) on <paramref name="endpoint"/> when the packet fits
    /// both <paramref name="mtu"/> and the path, its SYN's MSS clamped to that; otherwise writes the ICMP "too big" answer
    /// back into <paramref name="tun"/>. Null when sent, else why not.
    /// </summary>
    public static VpnDrop? Send(ITunDevice tun, PathEndpoint endpoint, Span<byte> datagram, int version, int mtu, byte[] answer)
    {
        var packet = datagram[1..];
        mtu = Math.Min(mtu, endpoint.Datagrams.MaxDatagramSize - 1);
        if (packet.Length > mtu)
        {
            var length = IpPacket.WriteTooBig(packet, version, mtu, answer);
            if (length > 0)
                tun.Write(answer.AsSpan(0, length));
            return VpnDrop.TooBig;
        }
        IpPacket.ClampMss(packet, version, mtu);
        return endpoint.Datagrams.TrySend(datagram) ? null : VpnDrop.PathRefused;
    }
}
