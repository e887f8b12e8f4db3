using System.Net;
using Skymesh.Control.Topology;
using Skymesh.Exchange;
using Skymesh.Exchange.Matching;
using Skymesh.Identity;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Node.Tests;

/// <summary>A real SSMP broker with key logins on loopback, and the nodes of one test whose agents use it.</summary>
public abstract class MeshWithBroker : IAsyncDisposable
{
    protected static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    /// <param name="certificate">A TLS certificate the broker also serves (beside plaintext on the same port), for nodes that reach it through neighbours.</param>
    protected MeshWithBroker(System.Security.Cryptography.X509Certificates.X509Certificate2? certificate = null)
    {
        _certificate = certificate;
        Broker = StartBroker(0);
    }

    private readonly System.Security.Cryptography.X509Certificates.X509Certificate2? _certificate;

    protected SsmpBroker Broker { get; private set; }

    private SsmpBroker StartBroker(int port)
    {
        var options = new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, port) };
        if (_certificate is not null)
            options.Tls = new SsmpTlsOptions { ServerCertificate = _certificate, AllowPlaintext = true };
        options.Authenticators.Add(new KeyAuthenticator());
        // People (and impostors) log in by name; node addresses stay reserved to key logins.
        options.Authenticators.Add(new OpenAuthenticator());
        var broker = new SsmpBroker(options);
        broker.Start();
        return broker;
    }

    /// <summary>Stops the broker (every agent loses its connection) and starts a fresh one on the same port.</summary>
    protected async Task RestartBrokerAsync()
    {
        var port = Broker.LocalEndPoint.Port;
        await Broker.DisposeAsync();
        Broker = StartBroker(port);
    }

    protected List<TestNode> Nodes { get; } = [];

    protected static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask DisposeAsync()
    {
        foreach (var node in Nodes)
            await node.DisposeAsync();
        await Broker.DisposeAsync();
        GC.SuppressFinalize(this);
    }

    protected async Task<TestNode> StartNodeAsync()
    {
        var node = await TestNode.StartAsync(broker: Broker.LocalEndPoint);
        Nodes.Add(node);
        return node;
    }

    /// <summary>Completes when <paramref name="node"/>'s graph satisfies <paramref name="condition"/>.</summary>
    protected static async Task UntilGraph(TestNode node, Func<TopologyGraph, bool> condition, string what)
    {
        var graph = node.Agent!.Graph;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void Check(LinkAnnouncement _)
        {
            if (condition(graph))
                done.TrySetResult();
        }
        graph.RecordAccepted += Check;
        try
        {
            Check(null!);
            await done.Task.WaitAsync(Bound, Ct);
        }
        catch (TimeoutException)
        {
            throw new Xunit.Sdk.XunitException($"{what} did not happen within {Bound.TotalSeconds} s; the graph holds {graph.NodeCount} nodes");
        }
        finally
        {
            graph.RecordAccepted -= Check;
        }
    }
}

/// <summary>Nodes with control agents on a real SSMP broker: they learn the mesh from each other's announcements and set paths up.</summary>
public sealed class ControlPlaneTests : MeshWithBroker
{
    private async Task<TestNode[]> ChainAsync(int count)
    {
        for (var i = 0; i < count; i++)
            await StartNodeAsync();
        for (var i = 0; i + 1 < count; i++)
            await Nodes[i].LinkToAsync(Nodes[i + 1]).WaitAsync(Bound, Ct);
        return [.. Nodes];
    }

    [Fact]
    public async Task Six_nodes_learn_the_mesh_and_open_a_four_hop_path_that_carries_pings()
    {
        var nodes = await ChainAsync(6);
        var source = nodes[0];
        var target = nodes[4];

        // Every node's links, as both ends announce them, reach the source.
        await UntilGraph(source, g => g.NodeCount == 6 && Enumerable.Range(0, 5).All(i => g.Neighbours(nodes[i].Node.Address).Any(n => n.Peer == nodes[i + 1].Node.Address)),
            "learning all six nodes and five links");

        var path = await source.Agent!.OpenPathAsync(target.Node.Address, null, Ct);
        Assert.Equal(target.Address, path.Peer);
        Assert.Equal(nodes[1].Address, path.Via);
        Assert.Equal("up", path.State);

        // The path carries traffic both ways, through three relays that each hold two entries.
        var rtt = await source.Node.PingAsync(target.Node.Address, 64, TimeSpan.FromSeconds(5), Ct);
        Assert.True(rtt > TimeSpan.Zero);
        foreach (var relay in nodes[1..4])
            Assert.Equal(2, relay.Node.Switch.Labels.List().Count);
        Assert.Single(target.Node.Paths);

        // Closing releases every hop.
        Assert.True(await source.Agent.ClosePathAsync(path.Id, Ct));
        foreach (var relay in nodes[1..4])
            Assert.Empty(relay.Node.Switch.Labels.List());
        Assert.Empty(target.Node.Paths);
        Assert.Empty(source.Node.Paths);
    }

    [Fact]
    public async Task Path_open_through_the_api_honours_avoid_and_reports_no_route()
    {
        var nodes = await ChainAsync(3);
        await UntilGraph(nodes[0], g => g.Neighbours(nodes[1].Node.Address).Count == 2, "learning the chain");
        var opened = await nodes[0].Client.OpenPathAsync(nodes[2].Address, cancellationToken: Ct);
        Assert.Equal(nodes[2].Address, opened.Peer);
        var error = await Assert.ThrowsAsync<NodeApiException>(() => nodes[0].Client.OpenPathAsync(nodes[2].Address, avoid: [nodes[1].Address], cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.NotFound, error.Status);
        Assert.Contains("No path", error.Message, StringComparison.Ordinal);
        var listed = await nodes[0].Client.MeshAsync(Ct);
        Assert.Equal(3, listed.Count);
    }

    [Fact]
    public async Task Traceroute_measures_every_hop_and_leaves_nothing_behind()
    {
        var nodes = await ChainAsync(4);
        await UntilGraph(nodes[0], g => g.Neighbours(nodes[2].Node.Address).Count == 2 && g.Neighbours(nodes[3].Node.Address).Count == 1, "learning the chain");
        var hops = await nodes[0].Client.TraceAsync(nodes[3].Address, probes: 2, cancellationToken: Ct);
        Assert.Equal([nodes[1].Address, nodes[2].Address, nodes[3].Address], hops.Select(h => h.Node));
        Assert.All(hops, h => Assert.Equal(2, h.RoundTripsMicroseconds.Count));
        Assert.All(hops, h => Assert.Null(h.Error));
        Assert.All(hops, h => Assert.True(h.AnnouncedLinkRttMicroseconds > 0));
        foreach (var node in nodes)
        {
            Assert.Empty(node.Node.Paths);
            Assert.Empty(node.Node.Switch.Labels.List());
        }
    }

    [Fact]
    public async Task A_broker_restart_leaves_paths_working_and_the_agents_announce_again()
    {
        var nodes = await ChainAsync(3);
        await UntilGraph(nodes[0], g => g.Neighbours(nodes[1].Node.Address).Count == 2, "learning the chain");
        await nodes[0].Agent!.OpenPathAsync(nodes[2].Node.Address, null, Ct);
        var before = nodes[0].Agent!.Graph.Accepted;

        await RestartBrokerAsync();

        // The data plane never needed the broker: the path still carries pings.
        Assert.True(await nodes[0].Node.PingAsync(nodes[2].Node.Address, 64, TimeSpan.FromSeconds(5), Ct) > TimeSpan.Zero);
        // The agents log in again and re-announce; a new path can be set up through the new broker.
        await UntilGraph(nodes[0], g => g.Accepted >= before + 2, "hearing announcements through the new broker");
        var second = await nodes[2].Agent!.OpenPathAsync(nodes[0].Node.Address, null, Ct);
        Assert.Equal("up", second.State);
        Assert.Equal(2, nodes[0].Node.Paths.Count);
    }

    [Fact]
    public async Task A_forged_announcement_on_the_topic_is_refused_and_counted()
    {
        var nodes = await ChainAsync(2);
        await UntilGraph(nodes[0], g => g.NodeCount == 2, "learning both nodes");
        using var mallory = NodeKey.Generate();
        var record = LinkAnnouncement.Create(mallory, long.MaxValue, DateTimeOffset.UtcNow, TimeSpan.FromMinutes(2),
            [new AnnouncedLink(nodes[0].Node.Address, 1, 0, 1, 0, AnnouncedLinkState.Up)]).Bytes;
        nodes[1].Node.Address.WriteTo(record.AsSpan(4));
        await using var client = await Skymesh.Ssmp.Client.SsmpClient.ConnectAsync(new Skymesh.Ssmp.Client.SsmpClientOptions { Port = Broker.LocalEndPoint.Port, Key = mallory }, Ct);
        await client.McastAsync(Control.ControlAgent.Topic, record, Ct);
        // The broker delivers in order: a second, genuine message after the forgery means the forgery was handled.
        await nodes[1].Agent!.AnnounceAsync(Ct);
        await UntilGraph(nodes[0], g => g.Refused(AnnouncementError.BadSignature) == 1, "refusing the forgery");
        Assert.Equal(2, nodes[0].Agent!.Graph.NodeCount);
    }
}

/// <summary>Repair: a link under a path is cut mid-transfer and the stream carries on over another route.</summary>
public sealed class RepairTests : MeshWithBroker
{
    [Theory]
    [InlineData("relay-relay")]
    [InlineData("relay-destination")]
    [InlineData("source-relay")]
    public async Task A_cut_link_is_repaired_around_and_the_stream_over_it_loses_nothing(string cut)
    {
        // S-1-2-D and S-4-D: the path goes S-1-2-D, then one of its links is cut — in the middle, the destination's
        // own (cut at the destination, as DELETE /api/links does), or the source's own.
        for (var i = 0; i < 5; i++)
            await StartNodeAsync();
        var (s, n1, n2, d, n4) = (Nodes[0], Nodes[1], Nodes[2], Nodes[3], Nodes[4]);
        await s.LinkToAsync(n1).WaitAsync(Bound, Ct);
        await n1.LinkToAsync(n2).WaitAsync(Bound, Ct);
        await n2.LinkToAsync(d).WaitAsync(Bound, Ct);
        await s.LinkToAsync(n4).WaitAsync(Bound, Ct);
        await n4.LinkToAsync(d).WaitAsync(Bound, Ct);
        await UntilGraph(s, g => g.Neighbours(d.Node.Address).Count == 2 && g.Neighbours(n1.Node.Address).Count == 2 && g.Neighbours(n4.Node.Address).Count == 2,
            "learning both routes");

        var opened = await s.Agent!.OpenPathAsync(d.Node.Address, new PathQuery { Via = [n1.Node.Address, n2.Node.Address] }, Ct);
        Assert.Equal(n1.Address, opened.Via);

        await using var echo = TcpTarget.Echo();
        var (_, forwarder) = s.Node.StartForward(new IPEndPoint(IPAddress.Loopback, 0), d.Node.Address, echo.Target);
        using var client = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await client.ConnectAsync(forwarder.LocalEndPoint, Ct);
        var data = System.Security.Cryptography.RandomNumberGenerator.GetBytes(8 << 20);
        var sending = Task.Run(async () =>
        {
            for (var offset = 0; offset < data.Length; offset += 65536)
                await client.SendAsync(data.AsMemory(offset, 65536), System.Net.Sockets.SocketFlags.None, Ct);
            client.Shutdown(System.Net.Sockets.SocketShutdown.Send);
        }, Ct);
        var received = new MemoryStream();
        var buffer = new byte[65536];
        var cutDone = false;
        while (true)
        {
            var n = await client.ReceiveAsync(buffer, System.Net.Sockets.SocketFlags.None, Ct).AsTask().WaitAsync(Bound, Ct);
            if (n == 0)
                break;
            received.Write(buffer, 0, n);
            if (!cutDone && received.Length > 1 << 20)
            {
                // Mid-transfer: one node drops a link under the path (both ends see it go down at once).
                var (at, other) = cut switch
                {
                    "relay-relay" => (n1, n2),
                    "relay-destination" => (d, n2),
                    _ => (s, n1),
                };
                at.Node.Switch.Disconnect(at.Node.FindLink(other.Node.Address)!, "cut by the test");
                cutDone = true;
            }
        }
        await sending.WaitAsync(Bound, Ct);
        Assert.True(cutDone);
        Assert.Equal(data.Length, received.Length);
        Assert.Equal(System.Security.Cryptography.SHA256.HashData(data), System.Security.Cryptography.SHA256.HashData(received.ToArray()));

        // The source's path end now goes through node 4, and the old relays hold nothing for it.
        var path = Assert.Single(s.Node.Paths);
        Assert.Equal(n4.Address, path.Via);
        Assert.Equal("up", path.State);
        Assert.Equal(0, forwarder.Failed);
        Assert.Equal(2, n4.Node.Switch.Labels.List().Count);
        Assert.Empty(n1.Node.Switch.Labels.List());
        // One path end at the destination: the same one, moved onto the new route (no stale end beside it).
        var atD = Assert.Single(d.Node.Paths);
        Assert.Equal(n4.Address, atD.Via);
        Assert.Equal("up", atD.State);
    }

    [Fact]
    public async Task A_path_left_broken_with_no_route_is_repaired_by_itself_when_a_route_comes_back()
    {
        // S-1-D only: cutting 1-D leaves no route, so the path breaks; a new link S-D brings one back.
        for (var i = 0; i < 3; i++)
            await StartNodeAsync();
        var (s, n1, d) = (Nodes[0], Nodes[1], Nodes[2]);
        await s.LinkToAsync(n1).WaitAsync(Bound, Ct);
        await n1.LinkToAsync(d).WaitAsync(Bound, Ct);
        await UntilGraph(s, g => g.Neighbours(d.Node.Address).Count == 1 && g.Neighbours(n1.Node.Address).Count == 2, "learning the chain");
        var opened = await s.Agent!.OpenPathAsync(d.Node.Address, null, Ct);
        Assert.True((await s.Client.PingAsync(d.Address, cancellationToken: Ct)).RttMicroseconds > 0);

        n1.Node.Switch.Disconnect(n1.Node.FindLink(d.Node.Address)!, "cut by the test");
        await Until(() => s.Node.Paths.Single().State == "broken", "the path showing broken");
        await Assert.ThrowsAsync<NodeApiException>(() => s.Client.PingAsync(d.Address, cancellationToken: Ct));

        await s.LinkToAsync(d).WaitAsync(Bound, Ct);
        await Until(() => s.Node.Paths.Single().State == "up", "the path repaired onto the new link");
        var path = Assert.Single(s.Node.Paths);
        Assert.Equal(opened.Id, path.Id);
        Assert.Equal(d.Address, path.Via);
        Assert.True((await s.Client.PingAsync(d.Address, cancellationToken: Ct)).RttMicroseconds > 0);
    }

    /// <summary>Polls a condition that no event signals, within the bound.</summary>
    private static async Task Until(Func<bool> condition, string what)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        var deadline = DateTime.UtcNow + Bound;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
                throw new Xunit.Sdk.XunitException($"{what} did not happen within {Bound.TotalSeconds} s");
            await timer.WaitForNextTickAsync(Ct);
        }
    }
}

/// <summary>A dedicated route finder: nodes configured with it keep no graph and still open paths.</summary>
public sealed class FinderTests : MeshWithBroker
{
    [Fact]
    public async Task Nodes_using_a_finder_open_paths_without_keeping_the_graph()
    {
        using var finderKey = NodeKey.Generate();
        var bus = await Skymesh.Control.Bus.Ssmp.SsmpControlBus.ConnectAsync("127.0.0.1", Broker.LocalEndPoint.Port, finderKey, cancellationToken: Ct);
        await using var finder = await RouteFinderService.StartAsync(bus, cancellationToken: Ct);
        var nodes = new List<TestNode>();
        for (var i = 0; i < 4; i++)
        {
            var node = await TestNode.StartAsync($$""", "finder": "{{finderKey.Address}}" """, broker: Broker.LocalEndPoint);
            Nodes.Add(node);
            nodes.Add(node);
        }
        for (var i = 0; i + 1 < 4; i++)
            await nodes[i].LinkToAsync(nodes[i + 1]).WaitAsync(Bound, Ct);

        await FinderLearnsAsync(finder, nodes, linkEnds: 6);

        var path = await nodes[0].Agent!.OpenPathAsync(nodes[3].Node.Address, null, Ct);
        Assert.Equal(nodes[1].Address, path.Via);
        Assert.True(await nodes[0].Node.PingAsync(nodes[3].Node.Address, 64, TimeSpan.FromSeconds(5), Ct) > TimeSpan.Zero);
        Assert.True(finder.Queries >= 1);
        // The nodes never heard each other's announcements: each graph holds at most its own record.
        Assert.All(nodes, n => Assert.True(n.Agent!.UsesFinder && n.Agent.Graph.NodeCount <= 1));

        // A node that leaves is forgotten by the finder (its membership ends).
        var gone = nodes[3].Node.Address;
        var forgotten = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        finder.Graph.NodeForgotten += n =>
        {
            if (n == gone)
                forgotten.TrySetResult();
        };
        await nodes[3].DisposeAsync();
        await forgotten.Task.WaitAsync(Bound, Ct);
        Assert.Null(finder.Graph.RecordOf(gone));
    }

    [Fact]
    public async Task A_finder_that_starts_after_the_nodes_learns_them_at_once_not_after_a_refresh()
    {
        // Records refresh once an hour here: a finder that starts late learns the mesh only because its hello on the
        // bus makes every node announce again.
        using var finderKey = NodeKey.Generate();
        var nodes = new List<TestNode>();
        for (var i = 0; i < 3; i++)
        {
            var node = await TestNode.StartAsync($$""", "finder": "{{finderKey.Address}}", "announceSeconds": 3600 """, broker: Broker.LocalEndPoint);
            Nodes.Add(node);
            nodes.Add(node);
        }
        await nodes[0].LinkToAsync(nodes[1]).WaitAsync(Bound, Ct);
        await nodes[1].LinkToAsync(nodes[2]).WaitAsync(Bound, Ct);

        var bus = await Skymesh.Control.Bus.Ssmp.SsmpControlBus.ConnectAsync("127.0.0.1", Broker.LocalEndPoint.Port, finderKey, cancellationToken: Ct);
        await using var finder = await RouteFinderService.StartAsync(bus, cancellationToken: Ct);
        await FinderLearnsAsync(finder, nodes, linkEnds: 4);
        var path = await nodes[0].Agent!.OpenPathAsync(nodes[2].Node.Address, null, Ct);
        Assert.Equal(nodes[1].Address, path.Via);
    }

    /// <summary>Waits until the finder's graph holds <paramref name="linkEnds"/> usable link ends among <paramref name="nodes"/>.</summary>
    private static async Task FinderLearnsAsync(RouteFinderService finder, List<TestNode> nodes, int linkEnds)
    {
        var learned = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void Check(LinkAnnouncement _)
        {
            if (nodes.Sum(n => finder.Graph.Neighbours(n.Node.Address).Count) == linkEnds)
                learned.TrySetResult();
        }
        finder.Graph.RecordAccepted += Check;
        Check(null!);
        await learned.Task.WaitAsync(Bound, Ct);
    }
}

/// <summary>Settlement between nodes: receipts over SSMP, the ledger, and credit that throttles a neighbour who does not pay.</summary>
public sealed class SettlementTests : MeshWithBroker
{
    [Fact]
    public async Task With_the_broker_gone_receipts_still_reach_a_paid_relay_over_the_link_and_nobody_is_throttled()
    {
        var (source, relay, destination) = await PaidChainAsync();
        // The broker goes away for good; 4 MiB then cross the relay, and the source's signed receipts must still
        // reach it (before, they went only through the broker: the relay would see a growing debt and throttle).
        await Broker.DisposeAsync();
        await EchoThroughAsync(source, relay, destination, 4 << 20);
        var fromSource = Assert.Single((await relay.Client.BalanceAsync(Ct)).Neighbours, n => n.Neighbour == source.Address);
        Assert.Equal("normal", fromSource.Credit);
        Assert.Equal(0, fromSource.CreditDrops);
    }

    [Fact]
    public async Task Settlement_carries_on_across_restarts_of_the_payer_and_of_both_and_every_byte_is_paid_once()
    {
        var (source, relay, destination) = await PaidChainAsync();
        await EchoThroughAsync(source, relay, destination, 2 << 20);
        var relayDir = relay.DataDirectory;
        var sourceDir = source.DataDirectory;

        // The payer restarts: it learns from the relay, when their link comes up, where its receipts stood.
        await source.StopAsync();
        Nodes.Remove(source);
        source = await TestNode.StartAsync(broker: Broker.LocalEndPoint, dir: sourceDir);
        Nodes.Add(source);
        await RejoinAsync(source, relay, destination);
        await EchoThroughAsync(source, relay, destination, 2 << 20, coveredBytes: 4 << 20);

        // Both restart: the relay remembers from its ledger what the source had paid, and hands it back.
        await relay.Agent!.Settlement.SettleAsync(Ct);
        await relay.StopAsync();
        await source.StopAsync();
        Nodes.Remove(relay);
        Nodes.Remove(source);
        relay = await TestNode.StartAsync(""", "price": 1000""", broker: Broker.LocalEndPoint, dir: relayDir);
        source = await TestNode.StartAsync(broker: Broker.LocalEndPoint, dir: sourceDir);
        Nodes.Add(relay);
        Nodes.Add(source);
        await relay.LinkToAsync(destination).WaitAsync(Bound, Ct);
        await RejoinAsync(source, relay, destination);
        await EchoThroughAsync(source, relay, destination, 2 << 20, coveredBytes: 6 << 20);

        // 6 MiB forwarded for the source in all, paid once: about 6,000 micro-units on the relay's ledger, not less
        // (receipts refused after a restart) and not more (paid twice).
        await relay.Agent!.Settlement.SettleAsync(Ct);
        var paid = relay.Agent.Settlement.Ledger.SettledOf(source.Node.Address, relay.Node.Address).Amount;
        Assert.InRange(paid, 6000, 6600);
        foreach (var reason in new[] { Skymesh.Control.Settlement.ReceiptError.Stale, Skymesh.Control.Settlement.ReceiptError.Replayed, Skymesh.Control.Settlement.ReceiptError.NonMonotonic })
            Assert.True(relay.Agent.Settlement.Book.Refused(reason) == 0, $"{relay.Agent.Settlement.Book.Refused(reason)} receipt(s) refused: {reason}");
    }

    [Fact]
    public async Task A_relay_that_drops_the_traffic_it_was_handed_is_not_paid_for_it()
    {
        var (source, relay, destination) = await PaidChainAsync();
        long paidBytes = 0;
        relay.Agent!.Settlement.Book.ReceiptAccepted += r =>
        {
            if (r.Payer == source.Node.Address)
                Interlocked.Exchange(ref paidBytes, Math.Max(Interlocked.Read(ref paidBytes), r.ForwardedBytes));
        };
        await using var sink = TcpTarget.Echo();
        var (_, forwarder) = source.Node.StartForward(new IPEndPoint(IPAddress.Loopback, 0), destination.Node.Address, sink.Target);
        using var client = new System.Net.Sockets.TcpClient();
        await client.ConnectAsync(forwarder.LocalEndPoint, Ct);
        var stream = client.GetStream();
        var chunk = new byte[65536];
        var handedOver = source.Node.FindLink(relay.Node.Address)!;
        var forwardedForSource = relay.Node.FindLink(source.Node.Address)!;
        // 1 MiB crosses, then the relay deletes its forwarding entries: what the source goes on handing it (new data
        // and retransmissions) goes nowhere.
        for (var i = 0; i < 16; i++)
            await stream.WriteAsync(chunk, Ct);
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        var deadline = System.Diagnostics.Stopwatch.StartNew();
        while (forwardedForSource.ForwardedForPeer < 1 << 20)
        {
            Assert.True(deadline.Elapsed < Bound, "the first MiB never crossed the relay");
            await poll.WaitForNextTickAsync(Ct);
        }
        foreach (var entry in relay.Node.Switch.Labels.List())
            relay.Node.Switch.Labels.Remove(entry.InLink, entry.InLabel);
        var dropped = forwardedForSource.ForwardedForPeer;
        var writing = Task.Run(async () =>
        {
            try
            {
                for (var i = 0; i < 64; i++)
                    await stream.WriteAsync(chunk, Ct);
            }
            catch (IOException)
            {
                // The path is declared lost and the connection reset: expected.
            }
        }, Ct);
        // Until the source has handed over at least one more segment (64 KiB on loopback) than the relay forwarded, and
        // two receipt rounds later.
        deadline.Restart();
        while (handedOver.BillableSent < dropped + (64 << 10) && deadline.Elapsed < TimeSpan.FromSeconds(20))
            await poll.WaitForNextTickAsync(Ct);
        var signed = source.Agent!.Settlement.Signer.Signed;
        var rounds = 0;
        while (rounds++ < 150 && source.Agent.Settlement.Signer.Signed < signed + 2 && handedOver.State == Mesh.Links.LinkState.Up)
            await poll.WaitForNextTickAsync(Ct);

        // Paid for what the relay forwarded, not for what it was handed.
        Assert.True(handedOver.BillableSent >= forwardedForSource.ForwardedForPeer + (64 << 10),
            $"the relay was never handed traffic it dropped: handed {handedOver.BillableSent:N0}, forwarded {forwardedForSource.ForwardedForPeer:N0}");
        Assert.True(Interlocked.Read(ref paidBytes) <= forwardedForSource.ForwardedForPeer,
            $"paid for {Interlocked.Read(ref paidBytes):N0} bytes, forwarded {forwardedForSource.ForwardedForPeer:N0}, handed {handedOver.BillableSent:N0}");
        client.Close();
        await writing;
    }

    [Fact]
    public async Task A_relay_settling_on_an_exchange_is_paid_from_the_payers_account_there()
    {
        var exchange = Directory.CreateTempSubdirectory("skymesh-exchange-").FullName;
        var (source, relay, destination) = await PaidChainAsync($$""", "price": 1000, "settlement": { "exchange": "{{exchange}}", "asset": "SKY" }""", source =>
        {
            // One SKY in the source's account before the relay (which then holds the exchange open) starts.
            using var store = ExchangeStore.Open(exchange);
            Assert.Equal(RejectReason.None, store.Deposit(source.Address, "SKY", 1_000_000, "fund").Rejected);
        });
        // The echo's way back is the destination's traffic: its receipts reach the relay too, a little later.
        var fromDestination = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.Agent!.Settlement.Book.ReceiptAccepted += r =>
        {
            if (r.Payer == destination.Node.Address)
                fromDestination.TrySetResult();
        };
        await EchoThroughAsync(source, relay, destination, 4 << 20);
        await fromDestination.Task.WaitAsync(Bound, Ct);
        await relay.Agent.Settlement.SettleAsync(Ct);

        var books = await relay.Client.BalanceAsync(Ct);
        Assert.StartsWith($"exchange {exchange}", books.Ledger, StringComparison.Ordinal);
        var paid = relay.Agent.Settlement.Ledger.SettledOf(source.Node.Address, relay.Node.Address).Amount;
        Assert.True(paid >= 4000, $"paid {paid}");
        // Balances on the exchange are real: what the relay has there is what the source paid it (SKY: a unit a micro-unit).
        Assert.Equal(paid, books.Balance);
        // The destination has no account there, so its receipts are refused.
        Assert.True(books.SettlementsRefused > 0);
        Assert.Equal(0, relay.Agent.Settlement.Ledger.SettledOf(destination.Node.Address, relay.Node.Address).Amount);

        await relay.StopAsync();
        Nodes.Remove(relay);
        using var after = ExchangeStore.Open(exchange);
        Assert.Equal(1_000_000 - paid, after.Available(source.Address, "SKY"));
        Assert.Equal(paid, after.Available(relay.Address, "SKY"));
        after.CheckConservation();
    }

    [Fact]
    public async Task A_relay_settling_on_the_exchange_service_is_paid_there_from_the_payers_account()
    {
        // The exchange runs as a service on the mesh's broker; a funder's account holds SKY from the start.
        var directory = Directory.CreateTempSubdirectory("skymesh-exchange-").FullName;
        using var exchangeKey = NodeKey.Generate();
        using var funderKey = NodeKey.Generate();
        using (var store = ExchangeStore.Open(directory))
            Assert.Equal(RejectReason.None, store.Deposit(funderKey.Address.ToString(), "SKY", 5_000_000, "fund").Rejected);
        await using var service = await Skymesh.Exchange.Service.ExchangeService.StartAsync(
            new Skymesh.Exchange.Service.ExchangeServiceOptions { Directory = directory }, [],
            new Ssmp.Client.SsmpClientOptions { Port = Broker.LocalEndPoint.Port, Key = exchangeKey, Scheme = "key" }, cancellationToken: Ct);
        await using var funder = await Skymesh.Exchange.Client.ExchangeClient.ConnectAsync(new Skymesh.Exchange.Client.ExchangeClientOptions
        {
            Broker = new Ssmp.Client.SsmpClientOptions { Port = Broker.LocalEndPoint.Port },
            Exchange = service.Id,
            Key = funderKey,
        }, Ct);

        var (source, relay, destination) = await PaidChainAsync(
            $$""", "price": 1000, "exchange": { "service": "{{service.Id}}", "broker": "{{Broker.LocalEndPoint}}" }, "settlement": { "service": true }""");
        await funder.CallAsync("transfer", new { to = source.Address, asset = "SKY", amount = "1", key = "fund-source" }, Ct);
        await EchoThroughAsync(source, relay, destination, 4 << 20);

        // The relay hands its receipts to the exchange (once its connection there is up) and is paid on its account.
        long paid;
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        var deadline = System.Diagnostics.Stopwatch.StartNew();
        while ((paid = relay.Agent!.Settlement.Ledger.SettledOf(source.Node.Address, relay.Node.Address).Amount) < 4000)
        {
            Assert.True(deadline.Elapsed < Bound, "the relay was never paid on the exchange service");
            await relay.Agent.Settlement.SettleAsync(Ct);
            await poll.WaitForNextTickAsync(Ct);
        }
        var books = await relay.Client.BalanceAsync(Ct);
        Assert.StartsWith("exchange service ", books.Ledger, StringComparison.Ordinal);
        Assert.Equal(paid, books.Balance);
        // The exchange's own record: the pair paid as far as the relay says, from the source's account.
        var position = await funder.CallAsync("settled", new { payer = source.Address, payee = relay.Address }, Ct);
        Assert.Equal(paid, position.GetProperty("amount").GetInt64());
        var again = await funder.CallAsync("transfer", new { to = source.Address, asset = "SKY", amount = "1", key = "fund-source" }, Ct);
        Assert.True(again.GetProperty("already").GetBoolean());
    }

    [Fact]
    public async Task A_payer_whose_exchange_account_cannot_pay_is_suspended()
    {
        // The relay charges 100,000 per MiB and lets a neighbour owe 2,000 beyond what the exchange paid; the source's
        // account there is empty.
        var exchange = Directory.CreateTempSubdirectory("skymesh-exchange-").FullName;
        var (source, relay, destination) = await PaidChainAsync(
            $$""", "price": 100000, "creditLimit": 1000000, "settlement": { "exchange": "{{exchange}}", "limit": 2000 }""");
        var receipted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.Agent!.Settlement.Book.ReceiptAccepted += r =>
        {
            if (r.Payer == source.Node.Address)
                receipted.TrySetResult();
        };
        await using var stream = await StreamUntilSuspendedAsync(source, relay, destination);
        await receipted.Task.WaitAsync(Bound, Ct);
        await relay.Agent.Settlement.SettleAsync(Ct);

        // The source's receipts were good (signed, accepted); the exchange would not pay them.
        var books = await relay.Client.BalanceAsync(Ct);
        var fromSource = Assert.Single(books.Neighbours, n => n.Neighbour == source.Address);
        Assert.Equal("suspended", fromSource.Credit);
        Assert.True(fromSource.ReceiptedAmount > 0);
        Assert.Equal(0, fromSource.SettledToUs);
        Assert.True(books.SettlementsRefused > 0);
        var refusedEvents = new List<Events.NodeEvent>();
        await foreach (var item in relay.Client.EventsAsync(follow: false, cancellationToken: Ct))
        {
            if (item.Event is { Kind: Events.NodeEventKind.SettlementRefused } e)
                refusedEvents.Add(e);
        }
        Assert.Contains(refusedEvents, e => e.Peer == source.Address && e.Detail.Contains("account is short", StringComparison.Ordinal));
    }

    /// <summary>A restarted source links to the relay again and opens a path to the destination.</summary>
    private async Task RejoinAsync(TestNode source, TestNode relay, TestNode destination)
    {
        await source.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await UntilGraph(source, g => g.Neighbours(relay.Node.Address).Count == 2, "learning the chain again");
        await source.Agent!.OpenPathAsync(destination.Node.Address, null, Ct);
    }

    /// <summary>
    /// Source, a relay charging 1,000 micro-units per MiB (or as <paramref name="relayJson"/> says, once
    /// <paramref name="beforeRelay"/> has seen the source), destination; a path open from source to destination.
    /// </summary>
    private async Task<(TestNode Source, TestNode Relay, TestNode Destination)> PaidChainAsync(string relayJson = """, "price": 1000""", Action<TestNode>? beforeRelay = null)
    {
        var source = await StartNodeAsync();
        beforeRelay?.Invoke(source);
        var relay = await TestNode.StartAsync(relayJson, broker: Broker.LocalEndPoint);
        Nodes.Add(relay);
        var destination = await StartNodeAsync();
        await source.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await relay.LinkToAsync(destination).WaitAsync(Bound, Ct);
        await UntilGraph(source, g => g.Neighbours(relay.Node.Address).Count == 2, "learning the chain");
        await source.Agent!.OpenPathAsync(destination.Node.Address, null, Ct);
        return (source, relay, destination);
    }

    /// <summary>Sends <paramref name="size"/> bytes to an echo beside the destination and back; completes once the relay has accepted a receipt covering them.</summary>
    private static async Task EchoThroughAsync(TestNode source, TestNode relay, TestNode destination, int size, long? coveredBytes = null)
    {
        var covered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.Agent!.Settlement.Book.ReceiptAccepted += r =>
        {
            if (r.Payer == source.Node.Address && r.ForwardedBytes >= (coveredBytes ?? size))
                covered.TrySetResult();
        };
        await using var echo = TcpTarget.Echo();
        var (_, forwarder) = source.Node.StartForward(new IPEndPoint(IPAddress.Loopback, 0), destination.Node.Address, echo.Target);
        using (var client = new System.Net.Sockets.TcpClient())
        {
            await client.ConnectAsync(forwarder.LocalEndPoint, Ct);
            var stream = client.GetStream();
            var data = new byte[size];
            var reading = Task.Run(async () =>
            {
                var buffer = new byte[65536];
                long got = 0;
                while (got < data.Length)
                    got += await stream.ReadAsync(buffer, Ct);
            }, Ct);
            await stream.WriteAsync(data, Ct);
            await reading.WaitAsync(Bound, Ct);
        }
        await covered.Task.WaitAsync(Bound, Ct);
    }

    [Fact]
    public async Task Receipts_flow_and_balances_move_as_traffic_crosses_a_paid_relay()
    {
        // 4 MiB through the relay, which charges 1,000 micro-units per MiB.
        var (source, relay, destination) = await PaidChainAsync();
        await EchoThroughAsync(source, relay, destination, 4 << 20);

        var books = await relay.Client.BalanceAsync(Ct);
        var fromSource = Assert.Single(books.Neighbours, n => n.Neighbour == source.Address);
        Assert.True(fromSource.ReceiptedBytes >= 4 << 20, $"receipted {fromSource.ReceiptedBytes}");
        Assert.True(fromSource.ReceiptedAmount >= 4000, $"amount {fromSource.ReceiptedAmount}");
        Assert.Equal("normal", fromSource.Credit);
        // The relay's next hops were the path's two ends, which deliver: it owes nobody, so it signed nothing.
        Assert.Equal(0, relay.Agent!.Settlement.Signer.Signed);
        // Nothing was refused as invalid (two receipts arriving closer than 50 ms apart are merely skipped: TooFrequent).
        foreach (var reason in Enum.GetValues<Skymesh.Control.Settlement.ReceiptError>().Where(r => r is not (Skymesh.Control.Settlement.ReceiptError.None or Skymesh.Control.Settlement.ReceiptError.TooFrequent)))
            Assert.True(relay.Agent.Settlement.Book.Refused(reason) == 0, $"{relay.Agent.Settlement.Book.Refused(reason)} receipt(s) refused: {reason}");

        // Settling moves the amount on the relay's ledger from the source to the relay.
        await relay.Agent.Settlement.SettleAsync(Ct);
        Assert.True(relay.Agent.Settlement.Ledger.BalanceOf(relay.Node.Address) >= 4000);
        // The echo came back through the relay too: the destination pays for that direction.
        var ledger = relay.Agent.Settlement.Ledger;
        Assert.True(ledger.BalanceOf(source.Node.Address) <= -4000);
        Assert.Equal(-ledger.BalanceOf(relay.Node.Address), ledger.BalanceOf(source.Node.Address) + ledger.BalanceOf(destination.Node.Address));
        Assert.True((await relay.Client.BalanceAsync(Ct)).Balance >= 4000);
    }

    [Fact]
    public async Task A_neighbour_that_sends_no_receipts_goes_over_its_credit_and_is_suspended()
    {
        // The source runs no control agent, so it never signs a receipt; the relay charges 100,000 per MiB
        // and gives credit for 1,000.
        var source = await TestNode.StartAsync();
        Nodes.Add(source);
        var relay = await TestNode.StartAsync(""", "price": 100000, "creditLimit": 1000""", broker: Broker.LocalEndPoint);
        Nodes.Add(relay);
        var destination = await StartNodeAsync();
        await source.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await relay.LinkToAsync(destination).WaitAsync(Bound, Ct);
        await StaticPath.InstallAsync([source.Client, relay.Client, destination.Client], Ct).WaitAsync(Bound, Ct);

        await using var stream = await StreamUntilSuspendedAsync(source, relay, destination);

        // Suspended: what the source sends now is dropped at the relay and counted, and the API says so.
        var dropsBefore = relay.Node.FindLink(source.Node.Address)!.CreditDrops;
        Assert.True(await source.Node.PingAsync(destination.Node.Address, 64, TimeSpan.FromSeconds(1), Ct).ContinueWith(t => t.IsFaulted, TaskScheduler.Default));
        Assert.True(relay.Node.FindLink(source.Node.Address)!.CreditDrops > dropsBefore);
        var books = await relay.Client.BalanceAsync(Ct);
        var fromSource = Assert.Single(books.Neighbours, n => n.Neighbour == source.Address);
        Assert.Equal("suspended", fromSource.Credit);
        Assert.Equal(0, fromSource.AllowedBytesPerSecond);
        Assert.True(fromSource.OwedToUs > 1000);
        Assert.Contains($"skymesh_link_credit_drops_total{{link=\"{relay.Node.FindLink(source.Node.Address)!.Id}\",peer=\"{source.Address}\"}} ", await relay.Client.MetricsAsync(Ct), StringComparison.Ordinal);
    }

    /// <summary>Streams from the source to an echo beside the destination through the relay until the relay suspends the source.</summary>
    private static async Task<SuspendingStream> StreamUntilSuspendedAsync(TestNode source, TestNode relay, TestNode destination)
    {
        var suspended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        relay.Agent!.Settlement.Credit.StateChanged += (status, _) =>
        {
            if (status.Neighbour == source.Node.Address && status.State == Skymesh.Control.Settlement.CreditState.Suspended)
                suspended.TrySetResult();
        };
        var sink = TcpTarget.Echo();
        var (_, forwarder) = source.Node.StartForward(new IPEndPoint(IPAddress.Loopback, 0), destination.Node.Address, sink.Target);
        var client = new System.Net.Sockets.TcpClient();
        await client.ConnectAsync(forwarder.LocalEndPoint, Ct);
        var writing = Task.Run(async () =>
        {
            var chunk = new byte[16384];
            try
            {
                while (!suspended.Task.IsCompleted)
                    await client.GetStream().WriteAsync(chunk, Ct);
            }
            catch (IOException)
            {
                // The path gave up: fine, the relay has decided by then.
            }
        }, Ct);
        var stream = new SuspendingStream(sink, client, writing);
        try
        {
            await suspended.Task.WaitAsync(Bound, Ct);
            return stream;
        }
        catch
        {
            await stream.DisposeAsync();
            throw;
        }
    }

    /// <summary>The echo, the connection and the writer of <see cref="StreamUntilSuspendedAsync"/>; disposing closes the connection and waits for the writer.</summary>
    private sealed class SuspendingStream(TcpTarget sink, System.Net.Sockets.TcpClient client, Task writing) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            client.Close();
            await writing.WaitAsync(Bound, Ct);
            await sink.DisposeAsync();
        }
    }
}

/// <summary>What the control bus refuses is counted where an operator looks.</summary>
public sealed class ControlBusMetricsTests : MeshWithBroker
{
    [Fact]
    public async Task Announcements_and_receipts_from_a_login_that_is_not_a_node_are_refused_and_counted_in_metrics()
    {
        var node = await StartNodeAsync();
        await using var stranger = await Skymesh.Ssmp.Client.SsmpClient.ConnectAsync(
            new Skymesh.Ssmp.Client.SsmpClientOptions { Port = Broker.LocalEndPoint.Port, Id = "mallory" }, Ct);
        await stranger.McastAsync(RouteTopics.Links, "a forged announcement", Ct);
        await stranger.UcastAsync(node.Address, "SKR1 a forged receipt", Ct);
        // Nothing on the wire says when the node has read them: poll its metrics, within the bound.
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        var deadline = DateTime.UtcNow + Bound;
        var metrics = await node.Client.MetricsAsync(Ct);
        while (!metrics.Contains("skymesh_control_unproven_senders_total 2", StringComparison.Ordinal) && DateTime.UtcNow < deadline)
        {
            await timer.WaitForNextTickAsync(Ct);
            metrics = await node.Client.MetricsAsync(Ct);
        }
        Assert.Contains("skymesh_control_unproven_senders_total 2", metrics, StringComparison.Ordinal);
        Assert.Contains("skymesh_control_dropped_events_total 0", metrics, StringComparison.Ordinal);
    }
}
