using System.Net;
using System.Net.Sockets;
using Microsoft.Playwright;
using Skymesh.Identity;
using Skymesh.Node;
using Skymesh.Node.Tests;
using Skymesh.Ssmp.Broker;
using static Microsoft.Playwright.Assertions;

namespace Skymesh.Dashboard.Tests;

/// <summary>
/// The dashboard in a real headless chromium, against real nodes on loopback UDP with a real SSMP broker: what a person
/// sees on it and what their clicks do to the mesh (docs/dashboard.md).
/// </summary>
public sealed class DashboardTests(Chromium chromium) : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private static readonly LocatorAssertionsToHaveAttributeOptions Long = new() { Timeout = 30_000 };

    private readonly List<TestNode> _nodes = [];
    private SsmpBroker? _broker;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private SsmpBroker Broker
    {
        get
        {
            if (_broker is null)
            {
                var options = new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) };
                options.Authenticators.Add(new KeyAuthenticator());
                _broker = new SsmpBroker(options);
                _broker.Start();
            }
            return _broker;
        }
    }

    private async Task<TestNode> StartAsync(string? extraJson = null, bool control = true)
    {
        var node = await TestNode.StartAsync(extraJson, broker: control ? Broker.LocalEndPoint : null);
        _nodes.Add(node);
        return node;
    }

    /// <summary>The demo's mesh: a chain A–B–C–D and a node E linked to both ends; every node knows every link.</summary>
    private async Task<TestNode[]> DemoMeshAsync()
    {
        var nodes = new TestNode[5];
        for (var i = 0; i < nodes.Length; i++)
            nodes[i] = await StartAsync();
        foreach (var (a, b) in DemoLinks)
            await nodes[a].LinkToAsync(nodes[b]).WaitAsync(Bound, Ct);
        await UntilAsync(() => nodes.All(n => n.Agent!.Graph.NodeCount == 5 && DemoLinks.All(l => n.Agent.Graph.RecordOf(nodes[l.A].Node.Address)?.TryGetUpLinkTo(nodes[l.B].Node.Address, out _) == true)),
            "every node learning the whole mesh");
        return nodes;
    }

    private static readonly (int A, int B)[] DemoLinks = [(0, 1), (1, 2), (2, 3), (4, 0), (4, 3)];

    /// <summary>A browser signed in to <paramref name="node"/>'s dashboard by the address it prints, on page <paramref name="route"/>.</summary>
    private async Task<IPage> SignInAsync(TestNode node, string route = "overview", int width = 1280)
    {
        var page = await chromium.NewPageAsync(width);
        var response = await page.GotoAsync(node.Api.DashboardAddress);
        Assert.Equal(200, response!.Status);
        // The token left the address bar: the browser holds a cookie instead.
        Assert.DoesNotContain("token", page.Url, StringComparison.Ordinal);
        await Expect(page.Locator("#connection")).ToHaveAttributeAsync("data-state", "connected", Long);
        await page.GotoAsync($"http://{node.Api.EndPoint}/#/{route}");
        return page;
    }

    private static string EdgeSelector(TestNode a, TestNode b)
    {
        var (x, y) = string.CompareOrdinal(a.Address, b.Address) < 0 ? (a.Address, b.Address) : (b.Address, a.Address);
        return $"svg#map line.edge[data-a='{x}'][data-b='{y}']";
    }

    [Fact]
    public async Task A_page_without_the_token_gets_nothing()
    {
        var node = await StartAsync(control: false);
        var root = $"http://{node.Api.EndPoint}";
        using var http = new HttpClient();
        foreach (var path in new[] { "/", "/assets/app.js", "/api/node", "/api/decisions", "/login?token=not-the-token", "/nodes/x/api/node" })
        {
            using var response = await http.GetAsync(root + path, Ct);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.DoesNotContain(node.Address, await response.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
        }

        // In a browser: the page says how to sign in and shows nothing of the node.
        var page = await chromium.NewPageAsync();
        var refused = await page.GotoAsync(root + "/");
        Assert.Equal(401, refused!.Status);
        Assert.Contains("not signed in", await page.ContentAsync(), StringComparison.Ordinal);
        Assert.DoesNotContain(node.Address, await page.ContentAsync(), StringComparison.Ordinal);

        // The address the node prints signs it in; a page of another origin still cannot steer it.
        var signedIn = await SignInAsync(node);
        await Expect(signedIn.Locator("body")).ToContainTextAsync(node.Address[..8]);
        using var withForeignOrigin = new HttpRequestMessage(HttpMethod.Post, root + "/api/blocks") { Content = new StringContent("{}", System.Text.Encoding.UTF8, "application/json") };
        withForeignOrigin.Headers.Add("Origin", "http://evil.example");
        withForeignOrigin.Headers.Add("Cookie", $"skymesh-{node.Api.EndPoint.Port}={node.Api.Token}");
        using var refusedForeign = await http.SendAsync(withForeignOrigin, Ct);
        Assert.Equal(HttpStatusCode.Forbidden, refusedForeign.StatusCode);
    }

    [Fact]
    public async Task The_map_shows_every_node_and_link_of_the_mesh()
    {
        var nodes = await DemoMeshAsync();
        var page = await SignInAsync(nodes[0], "topology");
        await Expect(page.Locator("svg#map g.node")).ToHaveCountAsync(5, new() { Timeout = 30_000 });
        await Expect(page.Locator($"svg#map g.node[data-address='{nodes[0].Address}']")).ToHaveAttributeAsync("data-self", "true");
        foreach (var (a, b) in DemoLinks)
            await Expect(page.Locator(EdgeSelector(nodes[a], nodes[b]))).ToHaveAttributeAsync("data-state", "up", Long);
        // No link that does not exist: B and D are not neighbours.
        await Expect(page.Locator(EdgeSelector(nodes[1], nodes[3]))).ToHaveCountAsync(0);
        await Chromium.ScreenshotAsync(page, "topology");

        // Every page renders without an error toast.
        foreach (var route in new[] { "overview", "links", "paths", "payments", "events", "decisions", "nodes" })
        {
            await page.GotoAsync($"http://{nodes[0].Api.EndPoint}/#/{route}");
            await Expect(page.Locator("#connection")).ToHaveAttributeAsync("data-state", "connected", Long);
            // Pages other tests show fuller (paths, links, decisions) keep those tests' pictures.
            if (route is "overview" or "payments" or "events" or "nodes")
                await Chromium.ScreenshotAsync(page, route);
        }
        await Expect(page.Locator("#toast:visible")).ToHaveCountAsync(0);
    }

    [Fact]
    public async Task A_path_opened_by_clicking_its_hops_comes_up_with_its_label_at_every_hop()
    {
        var nodes = await DemoMeshAsync();
        var (a, b, c, d) = (nodes[0], nodes[1], nodes[2], nodes[3]);
        var page = await SignInAsync(a, "topology");
        await Expect(page.Locator("svg#map g.node")).ToHaveCountAsync(5, new() { Timeout = 30_000 });

        // The lowest-latency path to D would go through E; the person picks the long way, hop by hop.
        await page.Locator("#pick-path").ClickAsync();
        foreach (var hop in new[] { b, c, d })
            await page.Locator($"svg#map g.node[data-address='{hop.Address}']").ClickAsync();
        await Expect(page.Locator("#picked-hops")).ToContainTextAsync(d.Address[..8]);
        await page.Locator("#open-picked").ClickAsync();

        // The node opened exactly that path, and every relay switches it on the labels the page shows.
        var path = await UntilAsync(async () => (await a.Client.PathsAsync(Ct)).FirstOrDefault(p => p.Peer == d.Address && p.State == "up"), "the path coming up");
        Assert.Equal([a.Address, b.Address, c.Address, d.Address], path.Hops!.Select(h => h.Node));
        Assert.NotNull(b.Node.Switch.Labels.List().FirstOrDefault(e => e.InLabel == path.Hops![1].ForwardIn));
        Assert.NotNull(c.Node.Switch.Labels.List().FirstOrDefault(e => e.InLabel == path.Hops![2].ForwardIn));

        await page.GotoAsync($"http://{a.Api.EndPoint}/#/paths");
        var row = page.Locator($"#paths-table [data-path-id='{path.Id}']").First;
        await Expect(row.Locator(".path-state")).ToContainTextAsync("up", new() { Timeout = 30_000 });
        foreach (var hop in path.Hops!)
        {
            var shown = page.Locator($"[data-path-id='{path.Id}'] .hop[data-node='{hop.Node}']").First;
            await Expect(shown.Locator(".label-forward")).ToHaveTextAsync(hop.ForwardIn == 0 ? "—" : hop.ForwardIn.ToString(System.Globalization.CultureInfo.InvariantCulture));
            await Expect(shown.Locator(".label-back")).ToHaveTextAsync(hop.BackIn == 0 ? "—" : hop.BackIn.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        await Chromium.ScreenshotAsync(page, "paths");
    }

    [Fact]
    public async Task Cutting_a_link_turns_it_red_on_the_map_and_the_path_repair_shows()
    {
        var nodes = await DemoMeshAsync();
        var (a, b, c, d, e) = (nodes[0], nodes[1], nodes[2], nodes[3], nodes[4]);
        var path = await a.Client.OpenPathAsync(d.Address, via: [b.Address, c.Address], cancellationToken: Ct);
        var page = await SignInAsync(a, "topology");
        var cutEdge = page.Locator(EdgeSelector(b, c));
        await Expect(cutEdge).ToHaveAttributeAsync("data-state", "up", Long);
        await Expect(cutEdge).ToHaveClassAsync(new System.Text.RegularExpressions.Regex(@"\bon-path\b"), new() { Timeout = 30_000 });

        // B drops its link to C: the map shows it down, and the path moves around it through E.
        var link = b.Node.FindLink(c.Node.Address)!;
        await b.Client.DropLinkAsync(link.Id, Ct);
        await Expect(cutEdge).ToHaveAttributeAsync("data-state", "down", Long);
        await Chromium.ScreenshotAsync(page, "topology-cut");

        await page.GotoAsync($"http://{a.Api.EndPoint}/#/paths");
        var row = page.Locator($"#paths-table [data-path-id='{path.Id}']").First;
        await Expect(row.Locator(".path-repairs")).ToHaveTextAsync("1", new() { Timeout = 30_000 });
        await Expect(page.Locator($"[data-path-id='{path.Id}'] .hop[data-node='{e.Address}']").First).ToBeVisibleAsync(new() { Timeout = 30_000 });
        var repaired = (await a.Client.PathsAsync(Ct)).Single(p => p.Id == path.Id);
        Assert.Equal(1, repaired.Repairs);
        Assert.Equal([a.Address, e.Address, d.Address], repaired.Hops!.Select(h => h.Node));
    }

    [Fact]
    public async Task Accepting_a_pending_neighbour_brings_its_link_up_and_refusing_one_keeps_it_down()
    {
        var node = await StartAsync("""
            , "decisions": { "neighbours": "ask" }
            """, control: false);
        var welcome = await StartAsync(control: false);
        var stranger = await StartAsync(control: false);
        var page = await SignInAsync(node, "decisions");

        // A node that is not a configured peer asks to link: a decision waits, live on the page, and no link comes up.
        var asking = welcome.LinkToAsync(node);
        await UntilAsync(() => node.Node.Operator.Waiting.Count == 1, "the stranger's Hello becoming a decision");
        var decision = page.Locator($".decision[data-kind='neighbour'][data-peer='{welcome.Address}']").First;
        await Expect(decision).ToBeVisibleAsync(new() { Timeout = 30_000 });
        await Expect(page.Locator("#pending-count")).ToHaveTextAsync("1");
        Assert.Null(node.Node.FindLink(welcome.Node.Address));
        await Chromium.ScreenshotAsync(page, "decisions");
        await decision.Locator("button[data-choice='accept']").ClickAsync();
        await UntilAsync(() => node.Node.FindLink(welcome.Node.Address) is not null, "the accepted neighbour's link coming up");
        await page.GotoAsync($"http://{node.Api.EndPoint}/#/links");
        await Expect(page.Locator($"#links-table tr[data-peer='{welcome.Address}'] .link-state").First).ToContainTextAsync("up", new() { Timeout = 30_000 });
        _ = await asking.ContinueWith(t => t.IsFaulted, TaskScheduler.Default);

        // Another asks and is refused: its handshakes go unanswered and it never links.
        await page.GotoAsync($"http://{node.Api.EndPoint}/#/decisions");
        using var trying = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var attempt = stranger.Node.ConnectAsync(stranger.Node.Interfaces.Keys.First(), node.UdpEndPoint, node.Node.Address, trying.Token);
        await UntilAsync(() => node.Node.Operator.Waiting.Any(d => d.Peer == stranger.Address), "the second stranger's Hello becoming a decision");
        var refusal = page.Locator($".decision[data-kind='neighbour'][data-peer='{stranger.Address}']").First;
        await Expect(refusal).ToBeVisibleAsync(new() { Timeout = 30_000 });
        var refusedBefore = node.Node.Switch.NeighboursRefused;
        await refusal.Locator("button[data-choice='refuse']").ClickAsync();
        await UntilAsync(() => node.Node.Operator.View().Recent.Any(d => d.Peer == stranger.Address && d.Choice == "refuse"), "the refusal being taken");
        // The stranger keeps trying (a Hello a second) until its attempt times out; every one is refused.
        await Assert.ThrowsAnyAsync<Exception>(() => attempt);
        Assert.True(node.Node.Switch.NeighboursRefused > refusedBefore);
        Assert.Null(node.Node.FindLink(stranger.Node.Address));
        Assert.Null(stranger.Node.FindLink(node.Node.Address));
        Assert.Empty(node.Node.Operator.Waiting);
    }

    [Fact]
    public async Task Raising_a_credit_limit_on_the_page_lifts_a_suspension()
    {
        // The source runs no control agent, so it never signs a receipt; the relay charges 100,000 per MiB, gives credit
        // for 1,000 and asks its owner when a neighbour reaches its limit.
        var source = await StartAsync(control: false);
        var relay = await StartAsync("""
            , "price": 100000, "creditLimit": 1000, "decisions": { "credit": "ask" }
            """);
        var destination = await StartAsync();
        await source.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await relay.LinkToAsync(destination).WaitAsync(Bound, Ct);
        await StaticPath.InstallAsync([source.Client, relay.Client, destination.Client], Ct).WaitAsync(Bound, Ct);
        var page = await SignInAsync(relay, "decisions");

        // Datagrams of a kilobyte until the relay suspends the source.
        while (!relay.Node.Operator.Waiting.Any(d => d.Peer == source.Address))
        {
            try
            {
                await source.Node.PingAsync(destination.Node.Address, 1200, TimeSpan.FromSeconds(1), Ct);
            }
            catch (NodeRequestException e) when (e.Error == NodeError.Timeout)
            {
                // Suspended: the relay dropped it.
            }
        }
        var asked = relay.Node.Operator.Waiting.Single(d => d.Peer == source.Address);
        Assert.Equal("credit", asked.Kind);
        Assert.Equal("suspended", (await relay.Client.BalanceAsync(Ct)).Neighbours.Single(n => n.Neighbour == source.Address).Credit);

        var decision = page.Locator($".decision[data-kind='credit'][data-peer='{source.Address}']").First;
        await Expect(decision).ToBeVisibleAsync(new() { Timeout = 30_000 });
        await Chromium.ScreenshotAsync(page, "decision-credit");
        await decision.Locator("input[name='value']").FillAsync("1000000000");
        await decision.Locator("button[data-choice='raise']").ClickAsync();

        await UntilAsync(async () => (await relay.Client.BalanceAsync(Ct)).Neighbours.Single(n => n.Neighbour == source.Address).Credit == "normal", "the source back to normal");
        Assert.Equal(1_000_000_000, (await relay.Client.NeighboursAsync(Ct)).Single(n => n.Peer == source.Address).CreditLimit);
        // The relay forwards for it again, without limit.
        Assert.Null(relay.Node.FindLink(source.Node.Address)!.ForwardAllowance);
        await page.GotoAsync($"http://{relay.Api.EndPoint}/#/links");
        await Expect(page.Locator($"#links-table tr[data-peer='{source.Address}'] .credit-state").First).ToContainTextAsync("normal", new() { Timeout = 30_000 });
        await Chromium.ScreenshotAsync(page, "links");
    }

    [Fact]
    public async Task One_dashboard_steers_another_node_through_its_list()
    {
        var home = await StartAsync(control: false);
        var roof = await StartAsync(control: false);
        var page = await SignInAsync(home, "nodes");
        await page.Locator("#add-node-name").FillAsync("roof");
        await page.Locator("#add-node-api").FillAsync(roof.Api.EndPoint.ToString());
        await page.Locator("#add-node-token").FillAsync(roof.Api.Token);
        await page.Locator("#add-node").ClickAsync();
        await Expect(page.Locator("#node-select option[value='roof']")).ToHaveCountAsync(1, new() { Timeout = 30_000 });

        // Switched to the roof node, the page shows and steers it: blocking a node there blocks it on the roof node.
        await page.Locator("#node-select").SelectOptionAsync("roof");
        await Expect(page.Locator("body")).ToContainTextAsync(roof.Address[..8], new() { Timeout = 30_000 });
        var someone = NodeKey.Generate().Address.ToString();
        var status = await page.EvaluateAsync<int>("""
            async (node) => (await fetch('/nodes/roof/api/blocks', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ node }) })).status
            """, someone);
        Assert.Equal(200, status);
        Assert.Contains(someone, roof.Node.Operator.Blocked);
        Assert.Empty(home.Node.Operator.Blocked);
        // The roof node's token never reaches the browser.
        Assert.DoesNotContain(roof.Api.Token, await page.ContentAsync(), StringComparison.Ordinal);
    }

    private static Task UntilAsync(Func<bool> condition, string what) => UntilAsync(() => Task.FromResult(condition()), what);

    private static async Task UntilAsync(Func<Task<bool>> condition, string what) =>
        await UntilAsync(async () => await condition() ? (object?)true : null, what);

    /// <summary>Asks again on every event of any node until <paramref name="probe"/> answers, within <see cref="Bound"/>.</summary>
    private static async Task<T> UntilAsync<T>(Func<Task<T?>> probe, string what)
        where T : class
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        deadline.CancelAfter(Bound);
        using var tick = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        try
        {
            while (true)
            {
                if (await probe() is { } found)
                    return found;
                await tick.WaitForNextTickAsync(deadline.Token);
            }
        }
        catch (OperationCanceledException) when (!Ct.IsCancellationRequested)
        {
            throw new Xunit.Sdk.XunitException($"{what} did not happen within {Bound.TotalSeconds} s");
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes)
            await node.DisposeAsync();
        if (_broker is not null)
            await _broker.DisposeAsync();
    }
}
