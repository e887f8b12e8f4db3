using System.Net;
using Microsoft.Playwright;
using Skymesh.Node;
using Skymesh.Node.Tests;
using Skymesh.Node.Vpn;
using Skymesh.Ssmp.Broker;
using static Microsoft.Playwright.Assertions;

namespace Skymesh.Dashboard.Tests;

/// <summary>
/// The dashboard's Services page in a real headless chromium, against real nodes on loopback UDP with a real SSMP broker:
/// the offers other nodes announce, with their prices and path costs, filtered on the page; and the VPN — connecting to
/// an offer (and the API's refusals shown in its words), the session, disconnecting, serving, a client of this node, and
/// stopping. The kernel's side of the VPN (a TUN device, routes) needs CAP_NET_ADMIN and would change the test host's
/// network: the nodes get an in-memory device and a host that accepts every change, as the node's own VPN tests do, so
/// everything else — the API, the paths, the session streams, the server's addresses — is real.
/// </summary>
public sealed class ServicesPageTests(Chromium chromium) : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    /// <summary>A node that offers a VPN for 120 per MiB (not serving it until the test says so).</summary>
    private const string VpnOffer = """
        , "exits": ["10.0.9.0/24:*"], "vpn": { "serve": false },
          "services": [ { "kind": "vpn", "price": 120, "region": "eu-west", "maxMbps": 50 } ]
        """;

    /// <summary>A node that offers to be an exit for 30 per MiB (its exit rules are the test node's 127.0.0.1:*).</summary>
    private const string ExitOffer = """, "services": [ { "kind": "exit", "price": 30 } ]""";

    private readonly List<TestNode> _nodes = [];
    private readonly List<IPage> _pages = [];
    private SsmpBroker? _broker;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static LocatorAssertionsToHaveTextOptions Text => new() { Timeout = 30_000 };

    private static LocatorAssertionsToContainTextOptions Contains => new() { Timeout = 30_000 };

    private static LocatorAssertionsToHaveCountOptions Count => new() { Timeout = 30_000 };

    private static LocatorAssertionsToBeVisibleOptions Visible => new() { Timeout = 30_000 };

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

    /// <summary>A node on the broker whose VPN uses an in-memory device and a host that takes every change.</summary>
    private async Task<TestNode> StartAsync(string? extraJson = null)
    {
        var node = await TestNode.StartAsync(extraJson, broker: Broker.LocalEndPoint);
        _nodes.Add(node);
        node.Node.Vpn.OpenTun = name => new Skymesh.Tests.SilentTun(name);
        node.Node.Vpn.Host = new Skymesh.Tests.AcceptingHost();
        return node;
    }

    private async Task<IPage> SignInAsync(TestNode node)
    {
        var page = await chromium.NewPageAsync(1280, 1400);
        _pages.Add(page);
        var response = await page.GotoAsync(node.Api.DashboardAddress);
        Assert.Equal(200, response!.Status);
        await Expect(page.Locator("#connection")).ToHaveAttributeAsync("data-state", "connected", new() { Timeout = 30_000 });
        await page.GotoAsync($"http://{node.Api.EndPoint}/#/services");
        await Expect(page.Locator("#nav-services")).ToHaveAttributeAsync("aria-current", "page");
        return page;
    }

    private static ILocator OfferRow(IPage page, TestNode node, string kind) =>
        page.Locator($"#services-table tr[data-node='{node.Address}'][data-kind='{kind}']");

    [Fact]
    public async Task The_services_page_lists_offers_cheapest_first_with_their_price_and_path_cost_and_the_filters_hide_what_does_not_match()
    {
        // home – vpn (120, next door); home – relay (5 per MiB forwarded) – exit (30): the exit costs 35 in all.
        var home = await StartAsync();
        var vpn = await StartAsync(VpnOffer);
        var relay = await StartAsync(""", "price": 5""");
        var exit = await StartAsync(ExitOffer);
        await home.LinkToAsync(vpn).WaitAsync(Bound, Ct);
        await home.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await relay.LinkToAsync(exit).WaitAsync(Bound, Ct);
        await UntilAsync(async () => (await home.Client.ServicesAsync(cancellationToken: Ct)).Count == 2, "both offers reaching the node");
        var page = await SignInAsync(home);

        var rows = page.Locator("#services-table tbody tr[data-node]");
        await Expect(rows).ToHaveCountAsync(2, Count);
        await Expect(rows.Nth(0)).ToHaveAttributeAsync("data-node", exit.Address);
        await Expect(rows.Nth(1)).ToHaveAttributeAsync("data-node", vpn.Address);

        var vpnRow = OfferRow(page, vpn, "vpn");
        await Expect(vpnRow.Locator(".c-service")).ToHaveTextAsync("VPN");
        await Expect(vpnRow.Locator(".c-price")).ToHaveTextAsync("120 µ/MiB");
        await Expect(vpnRow.Locator(".c-path-price")).ToHaveTextAsync("0 µ/MiB");
        await Expect(vpnRow.Locator(".c-total")).ToHaveTextAsync("120 µ/MiB");
        await Expect(vpnRow.Locator(".c-hop-count")).ToHaveTextAsync("1");
        await Expect(vpnRow.Locator(".c-region")).ToHaveTextAsync("eu-west");
        await Expect(vpnRow.Locator(".c-limits")).ToHaveTextAsync("50 Mbit/s");
        await Expect(vpnRow.Locator("button[data-action='vpn-connect']")).ToBeEnabledAsync();

        var exitRow = OfferRow(page, exit, "exit");
        await Expect(exitRow.Locator(".c-price")).ToHaveTextAsync("30 µ/MiB");
        await Expect(exitRow.Locator(".c-path-price")).ToHaveTextAsync("5 µ/MiB");
        await Expect(exitRow.Locator(".c-total")).ToHaveTextAsync("35 µ/MiB");
        await Expect(exitRow.Locator(".c-hop-count")).ToHaveTextAsync("2");
        var hops = exitRow.Locator(".c-path .hop");
        await Expect(hops).ToHaveCountAsync(3);
        await Expect(hops.Nth(0)).ToHaveAttributeAsync("data-node", home.Address);
        await Expect(hops.Nth(1)).ToHaveAttributeAsync("data-node", relay.Address);
        await Expect(hops.Nth(2)).ToHaveAttributeAsync("data-node", exit.Address);
        // Only a VPN is connected to from here.
        await Expect(exitRow.Locator("button")).ToHaveCountAsync(0);

        // This node offers nothing and holds both offers (from the status).
        await Expect(page.Locator("#services-own-table")).ToContainTextAsync("This node offers nothing", Contains);
        await Expect(page.Locator("#services-own-summary")).ToContainTextAsync("holds 2 offers of 2 other nodes", Contains);
        await Chromium.ScreenshotAsync(page, "services");

        // Exits only: the VPN's row goes; VPNs only: the exit's.
        await page.Locator("#services-kind").SelectOptionAsync("exit");
        await Expect(vpnRow).ToHaveCountAsync(0, Count);
        await Expect(rows).ToHaveCountAsync(1);
        await Expect(exitRow).ToBeVisibleAsync();
        await page.Locator("#services-kind").SelectOptionAsync("vpn");
        await Expect(exitRow).ToHaveCountAsync(0, Count);
        await Expect(vpnRow).ToBeVisibleAsync();

        // Every kind at most 100 in all: the exit (35) stays, the VPN (120) goes; at most 34, nothing is left.
        await page.Locator("#services-kind").SelectOptionAsync("");
        await page.Locator("#services-max-price").FillAsync("100");
        await page.Locator("#services-max-price").PressAsync("Enter");
        await Expect(vpnRow).ToHaveCountAsync(0, Count);
        await Expect(exitRow).ToBeVisibleAsync();
        await page.Locator("#services-max-price").FillAsync("34");
        await page.Locator("#services-max-price").PressAsync("Enter");
        await Expect(rows).ToHaveCountAsync(0, Count);
        await Expect(page.Locator("#services-table tbody")).ToContainTextAsync("No offer matches the filters.");
        await Expect(page.Locator("#toast:visible")).ToHaveCountAsync(0);

        // The VPN node's own page shows what it offers.
        var vpnPage = await SignInAsync(vpn);
        var offered = vpnPage.Locator("#services-own-table tr[data-kind='vpn']");
        await Expect(offered.Locator(".c-price")).ToHaveTextAsync("120 µ/MiB", Text);
        await Expect(offered.Locator(".c-region")).ToHaveTextAsync("eu-west");
    }

    [Fact]
    public async Task Connecting_to_a_vpn_offer_on_the_page_shows_the_apis_refusals_then_the_session_and_serving_shows_the_clients()
    {
        var home = await StartAsync();
        var vpn = await StartAsync(VpnOffer);
        await home.LinkToAsync(vpn).WaitAsync(Bound, Ct);
        await UntilAsync(async () => (await home.Client.ServicesAsync("vpn", cancellationToken: Ct)).Count == 1, "the vpn offer reaching the node");
        var page = await SignInAsync(home);

        // Nothing on yet: not connected, not serving, and mesh IPv6 off with the address it would have.
        await Expect(page.Locator("#vpn-client-state")).ToHaveTextAsync("not connected", Text);
        await Expect(page.Locator("#vpn-server-state")).ToHaveTextAsync("not serving", Text);
        var meshAddress = (await home.Client.VpnAsync(Ct)).MeshAddress;
        await Expect(page.Locator("#vpn-ipv6-off")).ToHaveTextAsync($"off, would be {meshAddress}", Text);
        await Expect(page.Locator("#vpn-ipv6-state")).ToHaveTextAsync("off");

        // Connect with nothing to route: the API's 400, in its words, beside the options; no session.
        var connect = OfferRow(page, vpn, "vpn").Locator("button[data-action='vpn-connect']");
        var error = page.Locator("#vpn-connect-error");
        await connect.ClickAsync();
        await Expect(error).ToBeVisibleAsync(Visible);
        await Expect(error).ToContainTextAsync("say what goes through the VPN");
        Assert.Null(home.Node.Vpn.Client);

        // A network to route, but the node offers a VPN it does not serve yet: the server's refusal is shown.
        await page.Locator("#vpn-routes").FillAsync("10.0.9.0/24");
        await connect.ClickAsync();
        await Expect(error).ToContainTextAsync("does not serve the VPN", Contains);
        Assert.Null(home.Node.Vpn.Client);
        await Expect(page.Locator("#toast:visible")).ToHaveCountAsync(0);

        // It serves: Connect brings the session up, and the page shows it.
        await vpn.Node.Vpn.ServeAsync(new VpnServeOptions(), Ct);
        await connect.ClickAsync();
        await Expect(page.Locator("#vpn-client-state")).ToHaveTextAsync("connected", Text);
        await Expect(error).ToBeHiddenAsync();
        var facts = page.Locator("#vpn-client-facts");
        await Expect(facts.Locator(".f-server")).ToHaveTextAsync(vpn.Address);
        await Expect(facts.Locator(".f-routes")).ToHaveTextAsync("10.0.9.0/24");
        await Expect(facts.Locator(".f-address")).ToContainTextAsync("10.99.0.");
        await Expect(facts.Locator(".f-address")).ToHaveTextAsync(home.Node.Vpn.Client!.Status().Address);
        await Expect(facts.Locator(".f-mtu")).ToContainTextAsync("bytes");
        await Expect(page.Locator("#vpn-connect-result")).ToContainTextAsync($"Connected to the VPN of {vpn.Address[..8]}");
        var session = Assert.Single(vpn.Node.Vpn.Server!.Sessions);
        Assert.Equal(home.Node.Address, session.Peer);
        // Connected: the offers' Connect buttons wait for a disconnect.
        await Expect(connect).ToBeDisabledAsync();
        await Expect(page.Locator("#vpn-connect-cheapest")).ToBeDisabledAsync();

        await page.Locator("#vpn-disconnect").ClickAsync();
        await Expect(page.Locator("#vpn-client-state")).ToHaveTextAsync("not connected", Text);
        Assert.Null(home.Node.Vpn.Client);
        await UntilAsync(() => Task.FromResult(vpn.Node.Vpn.Server!.Sessions.Count == 0), "the server ending the session");

        // The cheapest VPN, everything through it: the page says which offer was chosen and at what price.
        await page.Locator("#vpn-default-route").CheckAsync();
        await page.Locator("#vpn-connect-cheapest").ClickAsync();
        await Expect(page.Locator("#vpn-connect-result")).ToContainTextAsync($"Chose {vpn.Address[..8]}… at 120 µ/MiB in all", Contains);
        await Expect(page.Locator("#vpn-client-state")).ToHaveTextAsync("connected", Text);
        await Expect(facts.Locator(".f-routes")).ToContainTextAsync("everything", Contains);
        Assert.True(home.Node.Vpn.Client!.Options.DefaultRoute);
        await page.Locator("#vpn-client").ScrollIntoViewIfNeededAsync();
        await Chromium.ScreenshotAsync(page, "services-connected");
        await page.Locator("#vpn-disconnect").ClickAsync();
        await Expect(page.Locator("#vpn-client-state")).ToHaveTextAsync("not connected", Text);

        // Serving from the page: a pool the API refuses is shown beside the form; a good one starts the server.
        await page.Locator("#vpn-serve-pool").FillAsync("10.98.0.0/31");
        await page.Locator("#vpn-serve").ClickAsync();
        await Expect(page.Locator("#vpn-serve-error")).ToContainTextAsync("too small", Contains);
        Assert.Null(home.Node.Vpn.Server);
        await page.Locator("#vpn-serve-pool").FillAsync("10.98.0.0/24");
        await page.Locator("#vpn-serve-nat").UncheckAsync();
        await page.Locator("#vpn-serve").ClickAsync();
        await Expect(page.Locator("#vpn-server-state")).ToHaveTextAsync("serving", Text);
        await Expect(page.Locator("#vpn-server-facts .f-pool")).ToHaveTextAsync("10.98.0.0/24");
        await Expect(page.Locator("#vpn-server-facts .f-nat")).ToContainTextAsync("no");
        Assert.False(home.Node.Vpn.Server!.Options.Nat);

        // Another node connects to it: its session shows in the table, and goes when it disconnects.
        await vpn.Client.VpnConnectAsync(new VpnConnectRequest(home.Address, ["10.98.0.0/24"], false, false, null, null), Ct);
        var client = page.Locator($"#vpn-sessions tr[data-node='{vpn.Address}']");
        await Expect(client.Locator(".c-address")).ToContainTextAsync("10.98.0.", Contains);
        await Expect(page.Locator("#vpn-server-facts .f-sessions")).ToHaveTextAsync("1 of at most 64", Text);
        await Expect(page.Locator("#notice")).ToBeHiddenAsync(new() { Timeout = 30_000 });
        await page.Locator("#vpn-server").ScrollIntoViewIfNeededAsync();
        await Chromium.ScreenshotAsync(page, "services-vpn");
        await vpn.Client.VpnDisconnectAsync(Ct);
        await Expect(client).ToHaveCountAsync(0, Count);

        await page.Locator("#vpn-stop-serving").ClickAsync();
        await Expect(page.Locator("#vpn-server-state")).ToHaveTextAsync("not serving", Text);
        Assert.Null(home.Node.Vpn.Server);
        await Expect(page.Locator("#toast:visible")).ToHaveCountAsync(0);
    }

    /// <summary>Asks again every 50 ms until <paramref name="condition"/> holds, within <see cref="Bound"/>.</summary>
    private static async Task UntilAsync(Func<Task<bool>> condition, string what)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        deadline.CancelAfter(Bound);
        using var tick = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
        try
        {
            while (!await condition())
                await tick.WaitForNextTickAsync(deadline.Token);
        }
        catch (OperationCanceledException) when (!Ct.IsCancellationRequested)
        {
            throw new Xunit.Sdk.XunitException($"{what} did not happen within {Bound.TotalSeconds} s");
        }
    }

    public async ValueTask DisposeAsync()
    {
        // The pages first: they would go on asking the nodes below as those stop.
        foreach (var page in _pages)
            await page.Context.CloseAsync();
        foreach (var node in _nodes)
            await node.DisposeAsync();
        if (_broker is not null)
            await _broker.DisposeAsync();
    }
}
