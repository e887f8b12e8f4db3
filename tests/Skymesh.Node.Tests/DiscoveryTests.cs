using System.Net;
using System.Net.Sockets;
using Skymesh.Control.Discovery;
using Skymesh.Identity;
using Skymesh.Mesh.Links;

namespace Skymesh.Node.Tests;

/// <summary>LAN discovery by signed beacons, broadcast on the loopback network.</summary>
public sealed class DiscoveryTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static int FreeUdpPort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    [Fact]
    public async Task Two_nodes_with_beacons_find_each_other_and_link_and_forged_beacons_are_ignored()
    {
        var port = FreeUdpPort();
        var discovery = $$""", "discovery": { "beacons": true, "address": "127.255.255.255:{{port}}", "intervalSeconds": 0.2 }""";
        await using var a = await TestNode.StartAsync(discovery);
        var linked = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        a.Node.Switch.LinkUp += l => linked.TrySetResult(l);
        await using var b = await TestNode.StartAsync(discovery);

        var link = await linked.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        Assert.Equal(b.Node.Address, link.Peer);
        Assert.True(a.Node.Beacons!.Sent > 0 && b.Node.Beacons!.Heard + a.Node.Beacons.Heard > 0);

        // A beacon claiming B's identity but signed by another key is ignored and counted.
        using var mallory = NodeKey.Generate();
        var forged = Beacon.Create(mallory, 9, DateTimeOffset.UtcNow).Bytes;
        b.Node.Address.WriteTo(forged.AsSpan(4));
        using var sender = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { EnableBroadcast = true };
        var forgeries = 0;
        var allIgnored = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        a.Node.Beacons.BeaconIgnored += reason =>
        {
            if (reason == BeaconError.BadSignature && Interlocked.Increment(ref forgeries) == 3)
                allIgnored.TrySetResult();
        };
        for (var i = 0; i < 3; i++)
            sender.SendTo(forged, new IPEndPoint(IPAddress.Parse("127.255.255.255"), port));
        await allIgnored.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        Assert.Single(a.Node.Switch.Links, l => l.State == LinkState.Up);
    }

    [Fact]
    public void Beacons_are_off_unless_enabled_and_need_a_udp_interface()
    {
        var off = NodeOptions.Parse("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:0" } ] }""", "/tmp");
        Assert.Null(off.Discovery);
        var on = NodeOptions.Parse("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:0" } ], "discovery": { "beacons": true } }""", "/tmp");
        Assert.Equal(new IPEndPoint(IPAddress.Broadcast, 7399), on.Discovery!.Address);
        var error = Assert.Throws<NodeConfigException>(() => NodeOptions.Parse("""{ "interfaces": [ { "type": "tcp", "listen": "127.0.0.1:0" } ], "discovery": { "beacons": true } }""", "/tmp"));
        Assert.Equal("$.discovery.interface", error.Field);
    }

    [Theory]
    [InlineData(0, BeaconError.None)]
    [InlineData(-2, BeaconError.Stale)]
    [InlineData(2, BeaconError.Stale)]
    public void A_beacon_is_checked_for_time_and_signature(int minutes, BeaconError expected)
    {
        using var key = NodeKey.Generate();
        using var other = NodeKey.Generate();
        var now = new DateTimeOffset(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);
        var beacon = Beacon.Create(key, 7400, now.AddMinutes(minutes));
        Assert.Equal(expected, Beacon.Check(beacon.Bytes, other.Address, now, TimeSpan.FromMinutes(1), out _));
        Assert.Equal(BeaconError.Own, Beacon.Check(beacon.Bytes, key.Address, now, TimeSpan.FromMinutes(1), out _));
        Assert.Equal(BeaconError.Malformed, Beacon.Check(beacon.Bytes.AsSpan(1), other.Address, now, TimeSpan.FromMinutes(1), out _));
    }
}
