using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;
using Skymesh.Control.Topology;
using Skymesh.Node.Control;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Node.Tests;

/// <summary>
/// Nodes with no broker address reach the control bus through their neighbours (docs/control-plane.md, "Control
/// through the mesh"): a real broker serving TLS beside plaintext, one node on it directly, the others through the
/// link-local channels of their links, their SSMP sessions inside TLS to the broker.
/// </summary>
public sealed class BusThroughMeshTests() : MeshWithBroker(Certificate)
{
    private static readonly System.Security.Cryptography.X509Certificates.X509Certificate2 Certificate = BrokerCertificate.CreateEphemeral();
    private static readonly System.Security.Cryptography.X509Certificates.X509Certificate2 Impostor = BrokerCertificate.CreateEphemeral();

    private static string Fingerprint => BrokerCertificate.Fingerprint(Certificate);

    private async Task<TestNode> ViaNeighboursAsync(string? extraJson = null)
    {
        var node = await TestNode.StartAsync(extraJson, bus: MeshBusConnector.Setting);
        Nodes.Add(node);
        return node;
    }

    private static async Task<Control.ControlAgent> JoinedAsync(TestNode node) =>
        await node.Host.WaitForControlAsync(Ct).WaitAsync(Bound, Ct);

    /// <summary>Polls the node's status until <paramref name="condition"/> holds; fails with the last status.</summary>
    private static async Task<NodeStatus> UntilStatus(TestNode node, Func<NodeStatus, bool> condition, string what)
    {
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        var deadline = DateTime.UtcNow + Bound;
        NodeStatus status;
        while (!condition(status = node.Host.Read.Status()))
        {
            if (DateTime.UtcNow > deadline)
                throw new Xunit.Sdk.XunitException($"{what} did not happen within {Bound.TotalSeconds} s: control {status.Control} ({status.ControlError}), bus {status.Bus}");
            await poll.WaitForNextTickAsync(Ct);
        }
        return status;
    }

    [Fact]
    public async Task The_end_of_a_line_joins_through_three_relays_announces_and_opens_a_path_to_the_other_end()
    {
        var a = await StartNodeAsync();
        var b = await ViaNeighboursAsync();
        var c = await ViaNeighboursAsync();
        var d = await ViaNeighboursAsync();
        await a.LinkToAsync(b).WaitAsync(Bound, Ct);
        await b.LinkToAsync(c).WaitAsync(Bound, Ct);
        await c.LinkToAsync(d).WaitAsync(Bound, Ct);

        await JoinedAsync(d);
        var status = await UntilStatus(d, s => s.Bus?.Via == c.Address && s.Control == "connected", "d on the bus through c");
        Assert.Equal("via-neighbours", status.Bus!.Mode);
        // a splices to the broker, b and c relay: three nodes carry d's bytes.
        Assert.Equal(3, status.Bus.Hops);
        Assert.Equal(Fingerprint, status.Bus.BrokerPin);
        Assert.Equal(Fingerprint, File.ReadAllText(Path.Combine(d.DataDirectory, "broker.pin")).Trim());
        Assert.Equal("direct", a.Host.Read.Status().Bus!.Mode);

        // Everyone's announcements reach a, so a finds the whole line and opens a path to d that carries pings.
        await UntilGraph(a, g => g.NodeCount == 4 && g.Neighbours(c.Node.Address).Count == 2 && g.Neighbours(d.Node.Address).Count == 1, "a learning the line");
        var path = await a.Agent!.OpenPathAsync(d.Node.Address, null, Ct);
        Assert.Equal(b.Address, path.Via);
        Assert.True(await a.Node.PingAsync(d.Node.Address, 512, TimeSpan.FromSeconds(5), Ct) > TimeSpan.Zero);

        // a relays every tunnel (b's, c's, d's), b those of c and d, c d's; each is counted and shown.
        Assert.Equal(3, a.Host.Read.Status().Relay!.TunnelsOpen);
        Assert.Equal(2, b.Host.Read.Status().Relay!.TunnelsOpen);
        Assert.Equal(1, c.Host.Read.Status().Relay!.TunnelsOpen);
        Assert.Equal(0, d.Host.Read.Status().Relay!.TunnelsOpen);
        var metrics = await a.Client.MetricsAsync(Ct);
        Assert.Contains("skymesh_bus_relay_tunnels 3\n", metrics, StringComparison.Ordinal);
        Assert.Contains($"skymesh_bus_relay_bytes_total{{neighbour=\"{b.Address}\",direction=\"up\"}} ", metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_node_whose_relay_goes_away_rejoins_through_another_neighbour()
    {
        var a = await StartNodeAsync();
        var b = await ViaNeighboursAsync();
        var c = await ViaNeighboursAsync();
        var d = await ViaNeighboursAsync();
        await a.LinkToAsync(b).WaitAsync(Bound, Ct);
        await a.LinkToAsync(c).WaitAsync(Bound, Ct);
        await b.LinkToAsync(d).WaitAsync(Bound, Ct);
        await c.LinkToAsync(d).WaitAsync(Bound, Ct);
        await JoinedAsync(b);
        await JoinedAsync(c);
        await JoinedAsync(d);
        var before = await UntilStatus(d, s => s.Control == "connected" && s.Bus?.Via is not null, "d on the bus");
        Assert.Equal(2, before.Bus!.Hops);
        var (gone, other) = before.Bus.Via == b.Address ? (b, c) : (c, b);

        await gone.StopAsync();

        var after = await UntilStatus(d, s => s.Control == "connected" && s.Bus?.Via == other.Address, "d back on the bus through the other neighbour");
        Assert.Equal(2, after.Bus!.Hops);
        // Back on the bus means announcing again: a hears d's new record, with the link to the relay that went away down.
        await UntilGraph(a, g => g.Neighbours(d.Node.Address).Count == 1 && g.Neighbours(d.Node.Address).Single().Peer == other.Node.Address, "a hearing d's new links");
    }

    [Fact]
    public async Task A_neighbour_posing_as_the_broker_is_refused_before_the_node_says_who_it_is()
    {
        var keyLogins = Broker.Snapshot().KeyLoginsAccepted;
        var impostor = await TestNode.StartAsync();
        Nodes.Add(impostor);
        var handshakes = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        // The impostor answers for the bus itself and ends the node's TLS with a certificate of its own.
        impostor.Node.Channels.Register(BusRelay.Service, async (_, verb, stream, token) =>
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(verb == "status" ? $"ok hops=0 upstream=- name={SsmpBrokerOptions.DefaultServerName}\n" : "ok\n"), token);
            if (!verb.StartsWith("tunnel", StringComparison.Ordinal))
            {
                await stream.CompleteAsync(token);
                return;
            }
            await using var tls = new SslStream(stream.AsStream());
            var heard = 0;
            try
            {
                // On TLS 1.3 the server's side completes before the client has checked the certificate; the node then
                // hangs up without a byte of SSMP — no LOGIN, so no credential to replay at the real broker.
                await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = Impostor }, token);
                var buffer = new byte[4096];
                int n;
                while ((n = await tls.ReadAsync(buffer, token)) > 0)
                    heard += n;
            }
            catch (Exception e) when (e is AuthenticationException or IOException)
            {
            }
            handshakes.TrySetResult($"{heard} bytes of SSMP");
        });
        var victim = await ViaNeighboursAsync($", \"brokerPin\": \"{Fingerprint}\"");
        await victim.LinkToAsync(impostor).WaitAsync(Bound, Ct);

        Assert.Equal("0 bytes of SSMP", await handshakes.Task.WaitAsync(Bound, Ct));
        var status = await UntilStatus(victim, s => s.Bus?.Problem is not null && s.ControlError is not null, "the victim saying why it is not on the bus");
        Assert.Equal("connecting", status.Control);
        Assert.Contains(BrokerCertificate.Fingerprint(Impostor), status.Bus!.Problem, StringComparison.Ordinal);
        Assert.Contains(Fingerprint, status.Bus.Problem, StringComparison.Ordinal);
        Assert.Equal(keyLogins, Broker.Snapshot().KeyLoginsAccepted);
    }

    [Fact]
    public async Task Bytes_a_relay_slips_into_a_tunnel_are_refused_by_the_broker_and_never_reach_anyone()
    {
        var a = await StartNodeAsync();
        var relay = await TestNode.StartAsync();
        Nodes.Add(relay);
        var victim = await ViaNeighboursAsync();
        var inject = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var broker = Broker.LocalEndPoint;
        var forged = Encoding.ASCII.GetBytes($"MCAST {Control.ControlAgent.Topic} forged by the relay\n");
        // A relay that tunnels honestly until told, then writes a plaintext SSMP request of its own into the victim's tunnel.
        relay.Node.Channels.Register(BusRelay.Service, async (_, verb, stream, token) =>
        {
            if (!verb.StartsWith("tunnel", StringComparison.Ordinal))
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"ok hops=0 upstream=- name={SsmpBrokerOptions.DefaultServerName}\n"), token);
                await stream.CompleteAsync(token);
                return;
            }
            using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(broker, token);
            await using var upstream = new NetworkStream(socket, ownsSocket: false);
            await using var down = stream.AsStream();
            await stream.WriteAsync("ok\n"u8.ToArray(), token);
            var toBroker = down.CopyToAsync(upstream, token);
            var toNode = upstream.CopyToAsync(down, token);
            await inject.Task.WaitAsync(token);
            await upstream.WriteAsync(forged, token);
            await Task.WhenAny(toBroker, toNode);
        });
        // Someone on the topic the forgery aims at, who hears the victim join and leave.
        await using var watcher = await SsmpClient.ConnectAsync(new SsmpClientOptions { Port = broker.Port, Id = "watcher", Scheme = "open" }, Ct);
        await watcher.SubscribeAsync(Control.ControlAgent.Topic, presence: true, Ct);
        await victim.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await JoinedAsync(victim);
        var victimId = victim.Address;

        inject.TrySetResult();

        // The broker processes a connection's bytes in order: had it taken the forgery, the watcher would hear it
        // before the victim's leave. It hears the leave (the broker dropped a session whose TLS no longer checks out).
        var heard = new List<string>();
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        bound.CancelAfter(Bound);
        try
        {
            await foreach (var e in watcher.Events.ReadAllAsync(bound.Token))
            {
                heard.Add(e.ToString());
                if (e.From == victimId && e.Verb == SsmpVerb.Unsubscribe)
                    break;
            }
        }
        catch (OperationCanceledException) when (!Ct.IsCancellationRequested)
        {
            Assert.Fail("the victim never left the bus; the watcher heard:\n" + string.Join("\n", heard));
        }
        Assert.DoesNotContain(heard, p => p.Contains("forged", StringComparison.Ordinal));
    }
}

/// <summary>Links made by hole punching, with the control bus as the rendezvous (across real NATs: MeshWithoutInternetTests).</summary>
public sealed class HolePunchTests : MeshWithBroker
{
    [Fact]
    public async Task Neighbours_say_where_they_see_a_node_and_two_nodes_link_by_their_candidates_through_the_bus()
    {
        var a = await StartNodeAsync();
        var b = await StartNodeAsync();
        var c = await StartNodeAsync();
        await a.LinkToAsync(c).WaitAsync(Bound, Ct);
        await b.LinkToAsync(c).WaitAsync(Bound, Ct);
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        while (a.Node.Nat.Info().Observers == 0 || b.Node.Nat.Info().Observers == 0)
            await poll.WaitForNextTickAsync(Ct);
        // On loopback nobody translates: c sees each node at the address it is bound to.
        var nat = (await a.Client.StatusAsync(Ct)).Nat!;
        Assert.Equal(a.UdpEndPoint.ToString(), nat.Reflexive);
        Assert.Equal("none", nat.Type);

        // a knows only b's node address; the bus carries the candidates both ways and both dial.
        Skymesh.Mesh.Links.LinkInfo link;
        try
        {
            link = await a.Client.ConnectAsync(null, null, b.Address, Ct);
        }
        catch (NodeApiException e)
        {
            string Describe(TestNode n) => $"{n.Address[..8]}: counts {string.Join(",", n.Logs.Counts.Select(kv => $"{kv.Key}={kv.Value}"))} handshakeFailures {n.Node.Switch.HandshakeFailures} drops {n.Node.Switch.HelloDrops} bad {n.Node.Switch.BadFrames} links {string.Join(";", n.Node.Switch.Links.Select(l => $"{l.Id}:{l.Remote}:{l.State}:{l.IsInitiator}:{l.DownReason}"))}";
            throw new Xunit.Sdk.XunitException(e.Message + "\n" + Describe(a) + "\n" + Describe(b));
        }
        Assert.Equal(b.Address, link.Peer);
        Assert.Equal("punched", link.How);
        Assert.Equal(b.UdpEndPoint.ToString(), link.Remote);
        Assert.Single(a.Node.Switch.Links, l => l.Peer == b.Node.Address);
        Assert.Contains(await a.Client.LinksAsync(Ct), l => l.Peer == b.Address && l.How == "punched");
    }

    [Fact]
    public async Task A_peer_given_by_its_address_alone_is_linked_through_the_bus_and_linked_again_when_the_link_drops()
    {
        var a = await StartNodeAsync();
        var b = await TestNode.StartAsync($$""", "peers": [ { "address": "{{a.Address}}" } ]""", broker: Broker.LocalEndPoint);
        Nodes.Add(b);
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        Skymesh.Mesh.Links.Link? link;
        while ((link = b.Node.FindLink(a.Node.Address)) is null)
            await poll.WaitForNextTickAsync(Ct);
        Assert.Equal("punched", b.Host.Read.Link(link).How);
        Assert.Equal(a.UdpEndPoint, link.Remote);

        // The link goes down (a drops it): b meets a again by itself.
        a.Node.Switch.Disconnect(a.Node.FindLink(b.Node.Address)!, "dropped by the test");
        Skymesh.Mesh.Links.Link? again;
        while ((again = b.Node.FindLink(a.Node.Address)) is null || again == link)
            await poll.WaitForNextTickAsync(Ct);
        Assert.Equal(Skymesh.Mesh.Links.LinkState.Up, again.State);
        Assert.Single(a.Node.Switch.Links, l => l.Peer == b.Node.Address && l.State == Skymesh.Mesh.Links.LinkState.Up);
    }

    [Fact]
    public async Task Punching_to_a_node_not_on_the_bus_says_so()
    {
        var a = await StartNodeAsync();
        var stranger = Skymesh.Identity.NodeKey.Generate().Address.ToString();
        var error = await Assert.ThrowsAsync<NodeApiException>(() => a.Client.ConnectAsync(null, null, stranger, Ct));
        Assert.Equal(HttpStatusCode.NotFound, error.Status);
        Assert.Contains("did not take part in hole punching", error.Message, StringComparison.Ordinal);
    }
}

/// <summary>Two nodes that list each other as peers dial each other at the same moment.</summary>
public sealed class CrossingDialTests
{
    [Fact]
    public async Task Two_nodes_dialling_each_other_at_once_get_one_link_well_before_a_handshake_would_time_out()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var a = await TestNode.StartAsync();
        await using var b = await TestNode.StartAsync();
        for (var round = 0; round < 12; round++)
        {
            var started = DateTime.UtcNow;
            var fromA = a.LinkToAsync(b);
            var fromB = b.LinkToAsync(a);
            var links = await Task.WhenAll(fromA, fromB).WaitAsync(TimeSpan.FromSeconds(30), ct);
            // Without the crossing rule each waits for the other's answer until the 10 s handshake timeout.
            Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5), $"round {round}: {DateTime.UtcNow - started} to link");
            Assert.Equal(b.Node.Address, links[0].Peer);
            Assert.Equal(a.Node.Address, links[1].Peer);
            // Both ends settle on one link within the same bound (the dial that gave way can still be closing, and its
            // end's answer coming up, for a moment after both calls returned).
            using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
            static int Up(TestNode n) => n.Node.Switch.Links.Count(l => l.State == Skymesh.Mesh.Links.LinkState.Up);
            while ((Up(a) != 1 || Up(b) != 1) && DateTime.UtcNow - started < TimeSpan.FromSeconds(5))
                await poll.WaitForNextTickAsync(ct);
            Assert.Single(a.Node.Switch.Links, l => l.State == Skymesh.Mesh.Links.LinkState.Up);
            Assert.Single(b.Node.Switch.Links, l => l.State == Skymesh.Mesh.Links.LinkState.Up);
            a.Node.Switch.Disconnect(a.Node.Switch.Links.Single(l => l.State == Skymesh.Mesh.Links.LinkState.Up), "next round");
            while (b.Node.Switch.Links.Any())
                await poll.WaitForNextTickAsync(ct);
        }
    }
}
