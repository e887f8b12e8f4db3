using System.Net;
using Skymesh.Control.Discovery;
using Skymesh.Control.Topology;
using Skymesh.Identity;

namespace Skymesh.Node.Tests;

/// <summary>
/// Nodes announce signed service records on a real SSMP broker; others list them with what reaching each costs, a
/// dedicated finder answers the same query, and a SOCKS server picks the cheapest exit by itself.
/// </summary>
public sealed class ServiceDiscoveryTests : MeshWithBroker
{
    // A node offers a VPN only with a "vpn" section; serving is not started here (a TUN device needs CAP_NET_ADMIN).
    private const string Vpn200 = """, "vpn": { "serve": false }, "services": [ { "kind": "vpn", "price": 200, "region": "eu-west", "maxMbps": 50, "maxSessions": 10 } ]""";
    private const string Vpn300AndWeb = """, "vpn": { "serve": false }, "services": [ { "kind": "vpn", "price": 300 }, { "kind": "app", "name": "web", "port": 8080, "price": 1 } ]""";

    private async Task<TestNode> StartAsync(string? extraJson = null)
    {
        var node = await TestNode.StartAsync(extraJson, broker: Broker.LocalEndPoint);
        Nodes.Add(node);
        return node;
    }

    /// <summary>Reads until <paramref name="done"/> holds, within the bound (nothing on the wire says when a record has arrived).</summary>
    private static async Task<T> UntilAsync<T>(Func<Task<T>> read, Func<T, bool> done, string what)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(25));
        var deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            var value = await read();
            if (done(value))
                return value;
            if (DateTime.UtcNow > deadline)
                throw new Xunit.Sdk.XunitException($"{what} did not happen within {Bound.TotalSeconds} s");
            await timer.WaitForNextTickAsync(Ct);
        }
    }

    private static Task<List<ServiceInfo>> Vpns(TestNode node, ulong? maxPrice = null) => node.Client.ServicesAsync("vpn", maxPrice: maxPrice, cancellationToken: Ct);

    /// <summary>client - relay (price 5) - cheap (vpn 200); client - dear (vpn 300, app web): the cheap one is two hops away.</summary>
    private async Task<(TestNode Client, TestNode Relay, TestNode Cheap, TestNode Dear)> MeshAsync()
    {
        var client = await StartAsync();
        var relay = await StartAsync(""", "price": 5""");
        var cheap = await StartAsync(Vpn200);
        var dear = await StartAsync(Vpn300AndWeb);
        await client.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await relay.LinkToAsync(cheap).WaitAsync(Bound, Ct);
        await client.LinkToAsync(dear).WaitAsync(Bound, Ct);
        return (client, relay, cheap, dear);
    }

    [Fact]
    public async Task Two_vpn_offers_are_listed_cheapest_in_all_first_with_their_path_costs_and_filtered_by_price_kind_and_name()
    {
        var (client, relay, cheap, dear) = await MeshAsync();
        var vpns = await UntilAsync(() => Vpns(client), v => v.Count == 2, "listing both vpn offers");

        // 200 + the relay's 5 over two hops comes before 300 next door.
        Assert.Equal([cheap.Address, dear.Address], vpns.Select(v => v.Node));
        var first = vpns[0];
        Assert.Equal(("vpn", 200u, "eu-west", 50u, 10), (first.Kind, first.Price, first.Region, first.MaxMbps, first.MaxSessions));
        Assert.Equal((2, 5ul, 205ul), (first.Hops, first.PathPrice, first.TotalPrice));
        Assert.Equal([client.Address, relay.Address, cheap.Address], first.Path);
        Assert.True(first.RttMicroseconds > 0);
        Assert.True(first.Expires > DateTimeOffset.UtcNow);
        Assert.Equal((1, 0ul, 300ul, (string?)null), (vpns[1].Hops, vpns[1].PathPrice, vpns[1].TotalPrice, vpns[1].Region));

        // The cap counts the service and the relays.
        Assert.Equal([cheap.Address], (await Vpns(client, maxPrice: 250)).Select(v => v.Node));
        Assert.Empty(await Vpns(client, maxPrice: 204));
        // Kinds and names.
        var web = Assert.Single(await client.Client.ServicesAsync("app", cancellationToken: Ct));
        Assert.Equal((dear.Address, "web", 8080, 1ul), (web.Node, web.Name, web.Port, web.TotalPrice));
        Assert.Equal(3, (await client.Client.ServicesAsync(cancellationToken: Ct)).Count);
        Assert.Single(await client.Client.ServicesAsync(name: "web", cancellationToken: Ct));
        Assert.Empty(await client.Client.ServicesAsync("exit", cancellationToken: Ct));
        var bad = await Assert.ThrowsAsync<NodeApiException>(() => client.Client.ServicesAsync("ftp", cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.BadRequest, bad.Status);
        Assert.Contains("not a service kind", bad.Message, StringComparison.Ordinal);

        // Status and metrics say what is offered and held.
        var status = await client.Client.StatusAsync(Ct);
        Assert.Equal((3, 2), (status.Services!.Known, status.Services.Nodes));
        Assert.Equal("vpn", Assert.Single((await cheap.Client.StatusAsync(Ct)).Services!.Offered).Kind);
        var metrics = await cheap.Client.MetricsAsync(Ct);
        Assert.Matches(@"skymesh_service_records_published_total [1-9]", metrics);
        // A node that offers nothing publishes nothing.
        Assert.Contains("skymesh_service_records_published_total 0\n", await relay.Client.MetricsAsync(Ct), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Offers_withdrawn_by_the_owner_or_of_a_node_that_left_disappear_and_an_exit_offer_needs_exit_rules()
    {
        var (client, _, cheap, dear) = await MeshAsync();
        await UntilAsync(() => Vpns(client), v => v.Count == 2, "listing both vpn offers");

        // The owner withdraws the dear node's offers: an empty record goes out at once.
        var settings = await dear.Client.SetSettingsAsync(new SettingsRequest(null, null, null, []), Ct);
        Assert.Empty(settings.Services);
        await UntilAsync(() => client.Client.ServicesAsync(cancellationToken: Ct), v => v.Count == 1 && v[0].Node == cheap.Address, "the withdrawal reaching the client");
        Assert.Empty(client.Agent!.Services.RecordOf(dear.Node.Address)!.Entries);

        // And offers again, changed: heard at once too.
        await dear.Client.SetSettingsAsync(new SettingsRequest(null, null, null, [new ServiceConfig { Kind = "exit", Price = 7 }]), Ct);
        var exit = await UntilAsync(() => client.Client.ServicesAsync("exit", cancellationToken: Ct), v => v.Count == 1, "the new exit offer");
        Assert.Equal((dear.Address, 7ul), (exit[0].Node, exit[0].TotalPrice));
        // Taking the exit rules away while an exit is offered is refused with the reason; bad offers are refused by field.
        var refused = await Assert.ThrowsAsync<NodeApiException>(() => dear.Client.SetSettingsAsync(new SettingsRequest(null, null, []), Ct));
        Assert.Equal(HttpStatusCode.BadRequest, refused.Status);
        Assert.Contains("exit rules", refused.Message, StringComparison.Ordinal);
        var badOffer = await Assert.ThrowsAsync<NodeApiException>(() => dear.Client.SetSettingsAsync(new SettingsRequest(null, null, null, [new ServiceConfig { Kind = "app", Name = "web" }]), Ct));
        Assert.Contains("services[0].port", badOffer.Message, StringComparison.Ordinal);

        // The cheap node stops: its presence ends, and its record is forgotten with its links.
        await cheap.DisposeAsync();
        await UntilAsync(() => Vpns(client), v => v.Count == 0, "the stopped node's offer going away");
        Assert.Null(client.Agent!.Services.RecordOf(cheap.Node.Address));
    }

    [Fact]
    public async Task An_offer_whose_record_expires_without_a_refresh_is_no_longer_listed()
    {
        // Records refresh once an hour here, so nothing but the short record below changes what the client holds.
        var client = await StartAsync(""", "announceSeconds": 3600""");
        var vpn = await StartAsync(""", "announceSeconds": 3600""" + Vpn200);
        await client.LinkToAsync(vpn).WaitAsync(Bound, Ct);
        await UntilAsync(() => Vpns(client), v => v.Count == 1, "listing the vpn offer");

        // The node's last record, as if it then went silent without leaving: valid for two seconds.
        var last = ServiceRecord.Create(vpn.Node.Key, vpn.Agent!.Services.RecordOf(vpn.Node.Address)!.Sequence + 1, DateTimeOffset.UtcNow, TimeSpan.FromSeconds(2),
            [new ServiceEntry(ServiceKind.Vpn, PricePerMiB: 1)]);
        using var carrier = NodeKey.Generate();
        await using var bus = await Skymesh.Ssmp.Client.SsmpClient.ConnectAsync(new Skymesh.Ssmp.Client.SsmpClientOptions { Port = Broker.LocalEndPoint.Port, Key = carrier }, Ct);
        await bus.McastAsync(RouteTopics.Services, last.Bytes, Ct);
        await UntilAsync(() => Vpns(client), v => v.Count == 1 && v[0].Price == 1, "the short record being taken");
        await UntilAsync(() => Vpns(client), v => v.Count == 0, "the expired offer going away");
    }

    [Fact]
    public async Task Forged_expired_future_stale_replayed_and_malformed_records_on_the_topic_are_refused_counted_and_not_listed()
    {
        var client = await StartAsync(""", "announceSeconds": 3600""");
        var vpn = await StartAsync(""", "announceSeconds": 3600""" + Vpn200);
        await client.LinkToAsync(vpn).WaitAsync(Bound, Ct);
        await UntilAsync(() => Vpns(client), v => v.Count == 1, "listing the vpn offer");
        // Two records of the node in turn; the client holds the second.
        var older = vpn.Agent!.Services.RecordOf(vpn.Node.Address)!;
        var latest = (await vpn.Agent.AnnounceServicesAsync(Ct))!;
        await UntilAsync(() => Task.FromResult(client.Agent!.Services.RecordOf(vpn.Node.Address)?.Sequence), s => s == latest.Sequence, "the client taking the latest record");

        using var mallory = NodeKey.Generate();
        var now = DateTimeOffset.UtcNow;
        var free = new ServiceEntry(ServiceKind.Vpn, PricePerMiB: 0);
        var forged = ServiceRecord.Create(mallory, latest.Sequence + 1, now, TimeSpan.FromMinutes(5), [free]).Bytes;
        vpn.Node.Address.WriteTo(forged.AsSpan(4));
        var expired = ServiceRecord.Create(mallory, 1, now.AddHours(-1), TimeSpan.FromMinutes(1), [free]).Bytes;
        var future = ServiceRecord.Create(mallory, 1, now.AddHours(1), TimeSpan.FromMinutes(5), [free]).Bytes;
        await using var bus = await Skymesh.Ssmp.Client.SsmpClient.ConnectAsync(new Skymesh.Ssmp.Client.SsmpClientOptions { Port = Broker.LocalEndPoint.Port, Key = mallory }, Ct);
        foreach (var record in new[] { forged, expired, future, older.Bytes, latest.Bytes, "SKS1 not a record"u8.ToArray() })
            await bus.McastAsync(RouteTopics.Services, record, Ct);

        string[] counted = ["bad_signature", "expired", "from_the_future", "stale", "replayed", "malformed"];
        var metrics = await UntilAsync(() => client.Client.MetricsAsync(Ct),
            m => counted.All(reason => m.Contains($"skymesh_service_records_refused_total{{reason=\"{reason}\"}} 1\n", StringComparison.Ordinal)), "counting every refusal");
        Assert.Contains("skymesh_control_unproven_senders_total 0", metrics, StringComparison.Ordinal);
        var listed = Assert.Single(await Vpns(client));
        Assert.Equal((vpn.Address, 200u), (listed.Node, listed.Price));
        Assert.Null(client.Agent!.Services.RecordOf(mallory.Address));
    }

    [Fact]
    public async Task Nodes_that_use_a_finder_ask_it_and_hear_no_records_themselves()
    {
        using var finderKey = NodeKey.Generate();
        var finderBus = await Skymesh.Control.Bus.Ssmp.SsmpControlBus.ConnectAsync("127.0.0.1", Broker.LocalEndPoint.Port, finderKey, cancellationToken: Ct);
        await using var finder = await RouteFinderService.StartAsync(finderBus, cancellationToken: Ct);
        var usesFinder = $$""", "finder": "{{finderKey.Address}}" """;
        var client = await StartAsync(usesFinder);
        var relay = await StartAsync(usesFinder + """, "price": 5""");
        var cheap = await StartAsync(usesFinder + Vpn200);
        var dear = await StartAsync(usesFinder + Vpn300AndWeb);
        await client.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await relay.LinkToAsync(cheap).WaitAsync(Bound, Ct);
        await client.LinkToAsync(dear).WaitAsync(Bound, Ct);

        var vpns = await UntilAsync(() => client.Agent!.FindServicesAsync(new ServiceQuery { Kind = ServiceKind.Vpn }, Ct), v => v.Count == 2, "the finder listing both vpn offers");
        Assert.Equal([cheap.Node.Address, dear.Node.Address], vpns.Select(v => v.Node));
        Assert.Equal((2, 5ul, 205ul, 200u, "eu-west"), (vpns[0].Hops, vpns[0].PathPrice, vpns[0].TotalPrice, vpns[0].PricePerMiB, vpns[0].Region));
        Assert.Equal([client.Node.Address, relay.Node.Address, cheap.Node.Address], vpns[0].Path);
        Assert.Equal([cheap.Node.Address], (await client.Agent!.FindServicesAsync(new ServiceQuery { Kind = ServiceKind.Vpn, MaxPrice = 250 }, Ct)).Select(v => v.Node));
        var api = await client.Client.ServicesAsync("app", "web", cancellationToken: Ct);
        Assert.Equal(dear.Address, Assert.Single(api).Node);
        Assert.True(finder.ServiceQueries >= 3);
        Assert.Equal(2, finder.Services.Matching(ServiceKind.Vpn).Count);
        // The nodes keep no records but their own; the client offers nothing, so it holds none.
        Assert.Equal(0, client.Agent.Services.Count);
        Assert.Null((await client.Client.StatusAsync(Ct)).Services!.Known);

        // A node that leaves is forgotten by the finder.
        await cheap.DisposeAsync();
        await UntilAsync(() => Task.FromResult(finder.Services.RecordOf(cheap.Node.Address)), r => r is null, "the finder forgetting the stopped node");
    }

    [Fact]
    public async Task Socks_with_exit_auto_picks_the_cheapest_exit_opens_the_cheapest_path_and_carries_a_connection()
    {
        // client - dear exit (500) next door; client - relay (10) - cheap exit (100): 110 in all wins.
        var client = await StartAsync();
        var dear = await StartAsync(""", "services": [ { "kind": "exit", "price": 500 } ]""");
        var relay = await StartAsync(""", "price": 10""");
        var cheap = await StartAsync(""", "services": [ { "kind": "socks", "price": 100 } ]""");
        await client.LinkToAsync(dear).WaitAsync(Bound, Ct);
        await client.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await relay.LinkToAsync(cheap).WaitAsync(Bound, Ct);
        await UntilAsync(async () => (await client.Client.ServicesAsync("exit", cancellationToken: Ct)).Count + (await client.Client.ServicesAsync("socks", cancellationToken: Ct)).Count,
            n => n == 2, "listing both exits");

        // A cap below both is refused with the reason.
        var none = await Assert.ThrowsAsync<NodeApiException>(async () =>
        {
            await foreach (var _ in client.Client.RunAppAsync("socks", new SocksRequest("127.0.0.1:0", "auto", true, 50), Ct))
            {
            }
        });
        Assert.Equal(HttpStatusCode.NotFound, none.Status);
        Assert.Contains("within 50", none.Message, StringComparison.Ordinal);

        await using var web = TcpTarget.Http("hello through the cheapest exit");
        await using var events = client.Client.RunAppAsync("socks", new SocksRequest("127.0.0.1:0", "auto", false), Ct).GetAsyncEnumerator(Ct);
        Assert.True(await events.MoveNextAsync());
        var listening = events.Current;
        Assert.Equal("listening", listening.Event);
        Assert.Equal((cheap.Address, "socks", 110ul), (listening.Picked!.Node, listening.Picked.Kind, listening.Picked.TotalPrice));
        Assert.Equal(cheap.Address, listening.Opened!.Peer);
        Assert.Equal(relay.Address, listening.Opened.Via);

        using var http = new HttpClient(new SocketsHttpHandler { Proxy = new WebProxy($"socks5://{listening.Listen}"), UseProxy = true }) { Timeout = Bound };
        Assert.Equal("hello through the cheapest exit", await http.GetStringAsync($"http://{web.Target}/", Ct));
        Assert.Equal(1, cheap.Node.Exit.Served);
        Assert.Equal(0, dear.Node.Exit.Served);
    }
}
