using System.Net;
using System.Net.Sockets;
using System.Text;
using Skymesh.Mesh.Links;

namespace Skymesh.Node.Tests;

/// <summary>
/// Links relayed by a neighbour of both ends, as nodes behind NATs that no punch gets through use them (across real
/// symmetric NATs: HolePunchThroughNatTests). Here on loopback, asked for by name with <c>via</c>.
/// </summary>
public sealed class RelayedLinkTests : MeshWithBroker
{
    [Fact]
    public async Task Two_nodes_link_through_a_common_neighbour_and_carry_pings_over_it_sealed_end_to_end()
    {
        var a = await StartNodeAsync();
        var b = await StartNodeAsync();
        var relay = await StartNodeAsync();
        await a.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await b.LinkToAsync(relay).WaitAsync(Bound, Ct);

        var link = await a.Client.ConnectAsync(null, null, b.Address, Ct, via: relay.Address);
        Assert.Equal(b.Address, link.Peer);
        Assert.Equal("relayed", link.How);
        Assert.Equal(relay.Address, link.Via);
        Assert.True(link.Encrypted);
        // The link's far end is a port of the relay: its address, not the relay's own mesh port, nor b's.
        var remote = IPEndPoint.Parse(link.Remote);
        Assert.Equal(relay.UdpEndPoint.Address, remote.Address);
        Assert.NotEqual(relay.UdpEndPoint.Port, remote.Port);
        Assert.NotEqual(b.UdpEndPoint.Port, remote.Port);
        // b's end says the same of it.
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        LinkInfo? back;
        while ((back = (await b.Client.LinksAsync(Ct)).FirstOrDefault(l => l.Peer == a.Address && l.State == LinkState.Up)) is null)
            await poll.WaitForNextTickAsync(Ct);
        Assert.Equal("relayed", back.How);
        Assert.Equal(relay.Address, back.Via);
        Assert.Contains("skymesh_nat_links_total{how=\"relayed\"} 1\n", await a.Client.MetricsAsync(Ct), StringComparison.Ordinal);

        // A path of one hop over the relayed link carries pings; every byte of them went through the relay's port.
        await UntilGraph(a, g => g.Neighbours(a.Node.Address).Any(n => n.Peer == b.Node.Address), "both ends announcing the relayed link");
        var carriedBefore = relay.Node.LinkRelay.Counters().Bytes;
        var path = await a.Client.OpenPathAsync(b.Address, maxHops: 1, cancellationToken: Ct);
        Assert.Equal([a.Address, b.Address], path.Hops!.Select(h => h.Node.ToString()));
        for (var i = 0; i < 10; i++)
            Assert.True((await a.Client.PingAsync(b.Address, 1000, cancellationToken: Ct)).RttMicroseconds > 0);
        var counters = relay.Node.LinkRelay.Counters();
        Assert.True(counters.Bytes - carriedBefore > 2 * 10 * 1000, $"the relay carried {counters.Bytes - carriedBefore} bytes for 10 pings of 1000 bytes");
        Assert.Equal(1, counters.Open);
        var status = await relay.Client.StatusAsync(Ct);
        Assert.Equal(1, status.LinkRelay!.Open);
        var metrics = await relay.Client.MetricsAsync(Ct);
        Assert.Contains("skymesh_link_relay_open 1", metrics, StringComparison.Ordinal);

        // Someone who knows the port but not the token is dropped, and counted: a bind with a wrong token, a stray frame.
        var droppedBefore = counters.Dropped;
        using var stranger = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        stranger.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        stranger.SendTo(Encoding.ASCII.GetBytes($"SKYMESH RELAY {new string('0', 32)} a\n"), remote);
        stranger.SendTo(new byte[100], remote);
        while (relay.Node.LinkRelay.Counters().Dropped < droppedBefore + 2)
            await poll.WaitForNextTickAsync(Ct);
        // The ends still talk to each other: the wrong token moved neither.
        Assert.True((await a.Client.PingAsync(b.Address, 64, cancellationToken: Ct)).RttMicroseconds > 0);
    }

    [Fact]
    public async Task A_relay_refuses_more_links_than_its_limit_and_a_relay_that_is_no_neighbour_is_refused_with_the_reason()
    {
        var a = await StartNodeAsync();
        var b = await StartNodeAsync();
        var c = await StartNodeAsync();
        var relay = await TestNode.StartAsync("""
            , "linkRelay": { "maxPerNeighbour": 1 }
            """, broker: Broker.LocalEndPoint);
        Nodes.Add(relay);
        foreach (var n in new[] { a, b, c })
            await n.LinkToAsync(relay).WaitAsync(Bound, Ct);

        Assert.Equal("relayed", (await a.Client.ConnectAsync(null, null, b.Address, Ct, via: relay.Address)).How);
        var refused = await Assert.ThrowsAsync<NodeApiException>(() => a.Client.ConnectAsync(null, null, c.Address, Ct, via: relay.Address));
        Assert.Contains("already has 1 relayed links", refused.Message, StringComparison.Ordinal);
        Assert.Equal(1, relay.Node.LinkRelay.Counters().Refused);

        // b is no neighbour of c: c cannot be asked to relay for it.
        var notNeighbour = await Assert.ThrowsAsync<NodeApiException>(() => b.Client.ConnectAsync(null, null, a.Address, Ct, via: c.Address));
        Assert.Equal(HttpStatusCode.NotFound, notNeighbour.Status);
        Assert.Contains("no UDP link to", notNeighbour.Message, StringComparison.Ordinal);
    }
}
