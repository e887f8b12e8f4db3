using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Logging;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Mesh.Apps;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;
using Skymesh.Node.Control;

namespace Skymesh.Node;

/// <summary>
/// The node's local API: JSON over HTTP on a loopback address (docs/node.md), and <c>/metrics</c> in the
/// Prometheus text format. The CLI and the dashboard use it; the control plane calls the same
/// <see cref="MeshNode"/> methods.
/// </summary>
public sealed partial class NodeApi : IAsyncDisposable
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        // Read by people and scripts, never embedded in HTML: keep quotes and '+' readable.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    private readonly WebApplication _app;
    private readonly ILogger _logger;
    private readonly Skymesh.Dashboard.DashboardNodes _dashboardNodes;

    private NodeApi(WebApplication app, NodeReadModel read, NodeExchange? exchange)
    {
        _app = app;
        Exchange = exchange;
        ReadModel = read;
        Node = read.Node;
        Control = read.Control;
        _logger = read.Node.LoggerFactory.CreateLogger("Skymesh.Node.Api");
        _dashboardNodes = new Skymesh.Dashboard.DashboardNodes(read.Node.Options.DataDir, read.Node.Time);
    }

    /// <summary>What the API answers its queries from (the same the dashboard and the simulator read).</summary>
    public NodeReadModel ReadModel { get; }

    /// <summary>The node's control plane, when it has a broker (logged in or still connecting).</summary>
    public Control.ControlPlane? Control { get; }

    /// <summary>The node's control agent while it is logged into the broker.</summary>
    public Control.ControlAgent? Agent => Control?.Agent;

    private Control.ControlAgent RequireAgent() => ReadModel.RequireAgent();

    public MeshNode Node { get; }

    /// <summary>Where the API listens (the real port when the configuration asked for port 0).</summary>
    public IPEndPoint EndPoint { get; private set; } = new(IPAddress.Loopback, 0);

    internal static async Task<NodeApi> StartAsync(NodeReadModel read, IPEndPoint listen, NodeExchange? exchange = null)
    {
        ArgumentNullException.ThrowIfNull(read);
        var node = read.Node;
        var builder = WebApplication.CreateSlimBuilder();
        // The host's own logs (Kestrel, lifetime) are not the node's: the node logs what matters itself.
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(listen);
            // Every request this API takes is a few hundred bytes of JSON: anything larger is refused (413) before
            // it is read, so no client can make the node hold megabytes for it.
            k.Limits.MaxRequestBodySize = MaxRequestBody;
            k.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
        });
        var app = builder.Build();
        var api = new NodeApi(app, read, exchange) { Token = ApiToken.LoadOrCreate(node.Options.DataDir) };
        api.Map();
        try
        {
            await app.StartAsync();
        }
        catch (IOException e)
        {
            await app.DisposeAsync();
            throw new InvalidOperationException($"Cannot start the local API on {listen}: {e.Message}", e);
        }
        var address = app.Urls.Select(u => new Uri(u)).First();
        api.EndPoint = new IPEndPoint(IPAddress.Parse(address.Host.Trim('[', ']')), address.Port);
        try
        {
            ApiToken.Publish(api.EndPoint.Port, api.Token);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The CLI then needs --token or --data-dir; the API itself is unaffected.
        }
        return api;
    }

    /// <summary>Largest request body the API reads.</summary>
    public const int MaxRequestBody = 64 * 1024;

    /// <summary>The secret every request but <c>/metrics</c> and <c>/healthz</c> must carry (never logged).</summary>
    public string Token { get; private init; } = "";

    /// <summary>
    /// Only the node's owner may drive it. A web page the owner visits can make the browser send requests here; so
    /// a request must name this API by an IP address or <c>localhost</c> in <c>Host</c> (a page that rebinds its
    /// own name to 127.0.0.1 still sends that name), must not come from another origin, must carry the token (which
    /// no page can read), and must send its body as JSON (a form or <c>text/plain</c> post needs no preflight).
    /// </summary>
    private async Task GuardAsync(HttpContext context, Func<Task> next)
    {
        var request = context.Request;
        var host = request.Host.Host;
        if (string.IsNullOrEmpty(host) || (!IPAddress.TryParse(host.Trim('[', ']'), out _) && !string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase)))
        {
            await ProblemAsync(context, 403, "Forbidden", $"the local API answers only requests addressed to an IP address or localhost, not \"{host}\"");
            return;
        }
        var origin = request.Headers.Origin.ToString();
        if (origin.Length > 0 && !string.Equals(origin, $"http://{request.Host}", StringComparison.OrdinalIgnoreCase))
        {
            await ProblemAsync(context, 403, "Forbidden", $"requests from the web page {origin} are not allowed");
            return;
        }
        var path = request.Path.Value ?? "";
        Skymesh.Dashboard.DashboardAssets.AddSecurityHeaders(context.Response);
        if (path == LoginPath)
        {
            await SignInAsync(context);
            return;
        }
        if (path is not ("/metrics" or "/healthz"))
        {
            var authorization = request.Headers.Authorization.ToString();
            var presented = authorization.StartsWith(ApiToken.Scheme + " ", StringComparison.Ordinal) ? authorization.AsSpan(ApiToken.Scheme.Length + 1).Trim() : default;
            var signedIn = presented.IsEmpty && request.Cookies.TryGetValue(CookieName(context), out var cookie) && ApiToken.Matches(cookie, Token);
            if (!signedIn && !ApiToken.Matches(presented, Token))
            {
                context.Response.Headers.WWWAuthenticate = ApiToken.Scheme;
                if (!path.StartsWith("/api/", StringComparison.Ordinal) && HttpMethods.IsGet(request.Method))
                {
                    await NotSignedInAsync(context);
                    return;
                }
                await ProblemAsync(context, 401, "Unauthorized", presented.IsEmpty
                    ? $"the local API needs the node's token (Authorization: Bearer …; the CLI reads it from {ApiToken.FileName} in the data directory, or --token)"
                    : "wrong token");
                return;
            }
        }
        if (HttpMethods.IsPost(request.Method) || HttpMethods.IsPut(request.Method) || HttpMethods.IsPatch(request.Method)
            || (HttpMethods.IsDelete(request.Method) && request.ContentLength > 0))
        {
            if (!request.HasJsonContentType())
            {
                await ProblemAsync(context, 415, "Unsupported Media Type", "requests that change the node send their body as application/json");
                return;
            }
        }
        await next();
    }

    /// <summary>Where a browser signs in: <c>/login?token=…</c>, the address <c>skymesh dashboard</c> and the demo print.</summary>
    public const string LoginPath = "/login";

    /// <summary>The address that signs a browser in to this node's dashboard (it carries the token: show it to the owner only).</summary>
    public string DashboardAddress => $"http://{EndPoint}{LoginPath}?token={Uri.EscapeDataString(Token)}";

    // Browsers keep cookies per host, not per port: each node's on its own name, so two nodes on one machine do not
    // sign each other out.
    private static string CookieName(HttpContext context) => $"skymesh-{context.Connection.LocalPort}";

    /// <summary>
    /// The token in the address signs the browser in: a cookie the page's scripts cannot read (HttpOnly), that no other
    /// site's page sends (SameSite=Strict), and the browser is sent on to the page, so the token leaves its address bar.
    /// </summary>
    private async Task SignInAsync(HttpContext context)
    {
        var token = context.Request.Query["token"].ToString();
        if (!HttpMethods.IsGet(context.Request.Method) || !ApiToken.Matches(token, Token))
        {
            await NotSignedInAsync(context, token.Length > 0 ? "That address carries a wrong token (the node's token changes only when its api.token file is removed)." : null);
            return;
        }
        context.Response.Cookies.Append(CookieName(context), Token, new CookieOptions
        {
            HttpOnly = true,
            SameSite = SameSiteMode.Strict,
            Path = "/",
            IsEssential = true,
            MaxAge = TimeSpan.FromDays(30),
        });
        context.Response.Headers.CacheControl = "no-store";
        context.Response.Redirect("/", permanent: false);
    }

    private static async Task ServeDashboardAsync(HttpContext context, string name)
    {
        if (!await Skymesh.Dashboard.DashboardAssets.TryServeAsync(context, name))
            await ProblemAsync(context, 404, "Not Found", $"the dashboard has no file {name}");
    }

    private static Task NotSignedInAsync(HttpContext context, string? why = null)
    {
        context.Response.StatusCode = 401;
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync(
            "Skymesh node dashboard: not signed in.\n\n" + (why is null ? "" : why + "\n\n")
            + "Open the address the node gives you, with its token in it: run `skymesh dashboard` beside the node (it reads the\n"
            + "token from the node's data directory), or use the address `skymesh demo` printed. Nothing here is shown without it.\n");
    }

    /// <summary>The HTTP status of a node error: the one place where node failures become HTTP.</summary>
    private static int StatusOf(NodeError error) => error switch
    {
        NodeError.NotFound => 404,
        NodeError.Conflict => 409,
        NodeError.TooMany => 429,
        NodeError.Refused => 502,
        NodeError.Unavailable => 503,
        NodeError.Timeout => 504,
        _ => 400,
    };

    /// <summary>An error as RFC 7807 problem details.</summary>
    private static Task ProblemAsync(HttpContext context, int status, string title, string detail)
    {
        context.Response.StatusCode = status;
        return context.Response.WriteAsJsonAsync(new ApiProblem(title, status, detail), Json, "application/problem+json");
    }

    private void Map()
    {
        var node = Node;
        _app.Use((context, next) => GuardAsync(context, () => next(context)));
        _app.Use(async (context, next) =>
        {
            try
            {
                await next(context);
            }
            catch (Exception e) when (e is NodeRequestException or NoPathException or ServiceRefusedException or PathBrokenException or JsonException
                or InvalidOperationException or ArgumentException or BadHttpRequestException or NodeConfigException or NoRouteException)
            {
                if (context.Response.HasStarted)
                    return;
                var status = e switch
                {
                    NodeRequestException r => StatusOf(r.Error),
                    NoRouteException => 404,
                    BadHttpRequestException b => b.StatusCode,
                    NoPathException => 404,
                    ServiceRefusedException or PathBrokenException => 502,
                    InvalidOperationException => 409,
                    _ => 400,
                };
                var detail = e switch
                {
                    JsonException => $"bad JSON: {e.Message}",
                    BadHttpRequestException { StatusCode: 413 } => $"the request body is larger than {MaxRequestBody:N0} bytes",
                    _ => e.Message,
                };
                await ProblemAsync(context, status, ReasonPhrases.GetReasonPhrase(status), detail);
            }
            catch (Exception e) when (e is not OperationCanceledException || !context.RequestAborted.IsCancellationRequested)
            {
                // A failure nobody foresaw: the node logs it and goes on, and the caller learns what it was.
                Log.RequestFailed(_logger, context.Request.Method, context.Request.Path.Value ?? "", e);
                if (!context.Response.HasStarted)
                    await ProblemAsync(context, 500, "Internal Server Error", $"the node failed to handle {context.Request.Method} {context.Request.Path}: {e.Message} (its log has the details)");
            }
        });
        _app.MapGet("/healthz", () => Results.Text("ok\n"));
        _app.MapGet("/api/events", StreamEventsAsync);

        // The dashboard: its page and files, the nodes it steers, and those nodes' APIs through this one.
        _app.MapGet("/", (HttpContext context) => ServeDashboardAsync(context, "index.html"));
        _app.MapGet("/assets/{name}", (string name, HttpContext context) => ServeDashboardAsync(context, name));
        _app.MapGet("/api/dashboard/nodes", async (HttpContext context) =>
        {
            var nodes = await _dashboardNodes.ProbeAsync(context.RequestAborted);
            return Results.Json(nodes, Json);
        });
        _app.MapPost("/api/dashboard/nodes", async (HttpContext context) =>
        {
            var request = await Read<DashboardNodeRequest>(context);
            var added = _dashboardNodes.Add(request.Name, request.Api, request.Token);
            return Results.Json(new Skymesh.Dashboard.DashboardNodeInfo(added.Name, added.Api, false, null), Json);
        });
        _app.MapDelete("/api/dashboard/nodes/{name}", (string name) =>
            _dashboardNodes.Remove(name) ? Results.NoContent() : throw new NodeRequestException(NodeError.NotFound, $"the dashboard lists no node \"{name}\""));
        _app.Map("/nodes/{name}/{**rest}", async (string name, string? rest, HttpContext context) =>
        {
            var other = _dashboardNodes.Find(name) ?? throw new NodeRequestException(NodeError.NotFound, $"the dashboard lists no node \"{name}\" (add it on the Nodes page or with `skymesh dashboard add`)");
            if (rest is null || !rest.StartsWith("api/", StringComparison.Ordinal))
                throw new NodeRequestException(NodeError.NotFound, "only a node's API (/nodes/NAME/api/…) is reached through the dashboard");
            await _dashboardNodes.ProxyAsync(context, other, rest);
        });

        // The owner's decisions and settings (docs/dashboard.md).
        _app.MapGet("/api/decisions", () => Results.Json(node.Operator.View(), Json));
        _app.MapPost("/api/decisions/{id:long}", async (long id, HttpContext context) =>
        {
            var request = await Read<DecisionRequest>(context);
            return Results.Json(node.Operator.Decide(id, request.Choice ?? throw Missing("choice"), request.Value), Json);
        });
        _app.MapPut("/api/decisions/policies", async (HttpContext context) =>
        {
            var request = await Read<PoliciesRequest>(context);
            var current = node.Operator.Policies;
            return Results.Json(node.Operator.SetPolicies(new Operator.DecisionPolicies(
                request.Neighbours ?? current.Neighbours, request.Credit ?? current.Credit, request.Exits ?? current.Exits, request.Price ?? current.Price,
                request.MaxPathPrice is { } cap ? (cap < 0 ? null : (ulong)cap) : current.MaxPathPrice)), Json);
        });
        _app.MapGet("/api/neighbours", () => Results.Json(node.Operator.Neighbours(), Json));
        _app.MapPut("/api/neighbours/{address}", async (string address, HttpContext context) =>
        {
            var request = await Read<NeighbourRequest>(context);
            return Results.Json(node.Operator.SetNeighbour(ParseAddress(address, "address"), request.CreditLimit, request.Suspended), Json);
        });
        _app.MapGet("/api/blocks", () => Results.Json(node.Operator.Blocked, Json));
        _app.MapPost("/api/blocks", async (HttpContext context) =>
        {
            var request = await Read<BlockRequest>(context);
            var blocked = ParseAddress(request.Node ?? throw Missing("node"), "node");
            node.Operator.Block(blocked);
            return Results.Json(node.Operator.Blocked, Json);
        });
        _app.MapDelete("/api/blocks/{address}", (string address) =>
            node.Operator.Unblock(ParseAddress(address, "address")) ? Results.NoContent() : throw new NodeRequestException(NodeError.NotFound, $"{address} is not blocked"));
        _app.MapPut("/api/interfaces/{name}", async (string name, HttpContext context) =>
        {
            var request = await Read<InterfaceRequest>(context);
            node.SetInterfaceUp(name, request.Up ?? throw Missing("up"));
            return Results.Json(ReadModel.Interfaces().First(i => i.Name == name), Json);
        });
        _app.MapGet("/api/settings", () => Results.Json(node.Operator.Settings, Json));
        _app.MapPut("/api/settings", async (HttpContext context) =>
        {
            var request = await Read<SettingsRequest>(context);
            return Results.Json(node.Operator.SetSettings(request.Price, request.CreditLimit, request.Exits, request.Services), Json);
        });

        _app.MapGet("/api/node", () => Results.Json(ReadModel.Status(), Json));
        _app.MapGet("/api/interfaces", () => Results.Json(ReadModel.Interfaces(), Json));
        _app.MapGet("/api/links", () => Results.Json(ReadModel.Links(), Json));
        _app.MapPost("/api/links", async (HttpContext context) =>
        {
            var request = await Read<LinkRequest>(context);
            NodeAddress? expected = request.Peer is null ? null : ParseAddress(request.Peer, "peer");
            // Through a relay named by the caller: a neighbour of both, which carries the link's datagrams.
            if (request.Via is not null)
            {
                if (request.Endpoint is not null || expected is null)
                    throw new NodeRequestException(NodeError.Invalid, "a link through a relay (via) names the peer, and no endpoint");
                var relayed = await node.Nat.RelayAsync(expected.Value, ParseAddress(request.Via, "via"), context.RequestAborted);
                return Results.Json(ReadModel.Link(relayed), Json);
            }
            // A node with no address given: through the NATs, by hole punching with the control bus as the rendezvous.
            if (request.Endpoint is null && expected is { } punchTo)
            {
                var punched = await node.Nat.PunchAsync(punchTo, context.RequestAborted);
                return Results.Json(ReadModel.Link(punched), Json);
            }
            var remote = NodeOptions.ParseEndPoint(request.Endpoint ?? throw Missing("endpoint (or peer, to link through NATs)"), "\"endpoint\"");
            var nic = request.Interface ?? node.Interfaces.Keys.First();
            var link = await node.ConnectAsync(nic, remote, expected, context.RequestAborted);
            return Results.Json(link.Info(), Json);
        });
        _app.MapDelete("/api/links/{id:int}", (int id) =>
        {
            var link = node.Switch.GetLink(id) ?? throw new NodeRequestException(NodeError.NotFound, $"no link {id}");
            node.Switch.Disconnect(link, "closed by the operator");
            return Results.NoContent();
        });

        _app.MapGet("/api/labels", () => Results.Json(ReadModel.Labels(), Json));
        _app.MapPost("/api/labels", async (HttpContext context) =>
        {
            var request = await Read<LabelRequest>(context);
            var inLink = node.ResolveLink(request.Link ?? throw Missing("link"));
            if (request.Forward is null)
            {
                if (request.Label is not null)
                    throw new NodeRequestException(NodeError.Invalid, "to reserve a label leave \"label\" out; to install one give \"forward\"");
                var reserved = node.ReserveLabel(inLink);
                return Results.Json(new LabelReply(inLink.Id, inLink.Peer?.ToString(), reserved, "reserved"), Json);
            }
            var outLink = node.ResolveLink(request.Forward.Link ?? throw Missing("forward.link"));
            var outLabel = request.Forward.Label ?? throw Missing("forward.label");
            var label = request.Label ?? node.ReserveLabel(inLink);
            node.InstallForward(inLink, label, outLink, outLabel, request.Forward.Billable ?? true);
            return Results.Json(new LabelReply(inLink.Id, inLink.Peer?.ToString(), label, $"forward to link {outLink.Id} label {outLabel}"), Json);
        });
        _app.MapDelete("/api/labels/{link:int}/{label:long}", (int link, long label) =>
            label is > 0 and <= uint.MaxValue && node.RemoveLabel(link, (uint)label)
                ? Results.NoContent()
                : throw new NodeRequestException(NodeError.NotFound, $"no label {label} on link {link}"));

        _app.MapGet("/api/paths", () => Results.Json(ReadModel.Paths(), Json));
        _app.MapPost("/api/paths", async (HttpContext context) =>
        {
            var request = await Read<PathRequest>(context);
            var spec = new PathSpec
            {
                Peer = ParseAddress(request.Peer ?? throw Missing("peer"), "peer"),
                Via = ParseAddress(request.Via ?? throw Missing("via"), "via"),
                OutLabel = request.OutLabel ?? throw Missing("outLabel"),
                InLabel = request.InLabel,
                Initiator = request.Initiator ?? true,
                Nonce = ParseNonce(request.Nonce ?? throw Missing("nonce")),
            };
            return Results.Json(node.InstallPath(spec), Json);
        });
        _app.MapDelete("/api/paths/{id:int}", async (int id, HttpContext context) =>
        {
            // A path the control plane set up is released at every hop; one installed by hand only here.
            if (Agent is not null && await Agent.ClosePathAsync(id, context.RequestAborted))
                return Results.NoContent();
            return await node.RemovePathAsync(id) ? Results.NoContent() : throw new NodeRequestException(NodeError.NotFound, $"no path {id}");
        });
        _app.MapPost("/api/paths/open", async (HttpContext context) =>
        {
            var agent = RequireAgent();
            var request = await Read<OpenPathRequest>(context);
            var to = ParseAddress(request.To ?? throw Missing("to"), "to");
            var query = new Skymesh.Control.Topology.PathQuery
            {
                Policy = request.Policy?.ToLowerInvariant() switch
                {
                    null or "latency" => Skymesh.Control.Topology.PathPolicy.LowestLatency,
                    "price" => Skymesh.Control.Topology.PathPolicy.LowestPrice,
                    "bandwidth" => Skymesh.Control.Topology.PathPolicy.MostBandwidth,
                    _ => throw new NodeRequestException(NodeError.Invalid, $"\"policy\": \"{request.Policy}\" is not latency, price or bandwidth"),
                },
                MinHops = request.MinHops ?? 1,
                MaxHops = request.MaxHops ?? 10,
                MaxPrice = request.MaxPrice,
                Avoid = (request.Avoid ?? []).Select(a => ParseAddress(a, "avoid")).ToHashSet(),
                Via = request.Via?.Select(a => ParseAddress(a, "via")).ToList(),
            };
            return Results.Json(WithHops(await agent.OpenPathAsync(to, query, context.RequestAborted)), Json);
        });
        _app.MapPost("/api/traceroute", async (HttpContext context) =>
        {
            var agent = RequireAgent();
            var request = await Read<TraceRequest>(context);
            var to = ParseAddress(request.To ?? throw Missing("to"), "to");
            return Results.Json(await agent.TraceAsync(to, Math.Clamp(request.Probes ?? 3, 1, 10), context.RequestAborted), Json);
        });
        _app.MapGet("/api/balance", () => Results.Json(ReadModel.Balance(), Json));
        _app.MapGet("/api/nodes", () => Results.Json(ReadModel.Mesh(), Json));
        MapServices();

        _app.MapPost("/api/ping", async (HttpContext context) =>
        {
            var request = await Read<PingRequest>(context);
            var to = ParseAddress(request.To ?? throw Missing("to"), "to");
            var timeout = TimeSpan.FromMilliseconds(Math.Clamp(request.TimeoutMs ?? 2000, 1, 60_000));
            var size = request.Size ?? 64;
            var opened = await EnsurePathAsync(to, context.RequestAborted);
            var rtt = await node.PingAsync(to, size, timeout, context.RequestAborted);
            return Results.Json(new PingReply(to.ToString(), rtt.TotalMicroseconds, size, opened), Json);
        });

        _app.MapGet("/api/apps", () => Results.Json(ReadModel.Apps(), Json));
        _app.MapPost("/api/forwards", async (HttpContext context) =>
        {
            var request = await Read<ForwardRequest>(context);
            var listen = NodeOptions.ParseEndPoint(request.Listen ?? throw Missing("listen"), "\"listen\"");
            var to = ParseAddress(request.To ?? throw Missing("to"), "to");
            var target = MeshNode.CheckTarget(request.Target ?? throw Missing("target"));
            var opened = await EnsurePathAsync(to, context.RequestAborted);
            var (id, app) = node.StartForward(listen, to, target);
            await RunAppAsync(context, id, app, request.Detach == true, opened);
        });
        _app.MapPost("/api/socks", async (HttpContext context) =>
        {
            var request = await Read<SocksRequest>(context);
            var listen = NodeOptions.ParseEndPoint(request.Listen ?? throw Missing("listen"), "\"listen\"");
            NodeAddress exit;
            PathInfo? opened;
            ServiceInfo? picked = null;
            if (string.Equals(request.Exit, "auto", StringComparison.OrdinalIgnoreCase))
            {
                // The cheapest exit the services of the mesh offer (docs/node.md, "Services").
                (exit, picked, opened) = await PickExitAsync(request.MaxPrice, context.RequestAborted);
            }
            else
            {
                if (request.MaxPrice is not null)
                    throw new NodeRequestException(NodeError.Invalid, "\"maxPrice\" caps what \"exit\": \"auto\" may pick; a named exit is taken at its price");
                exit = request.Exit is { } e ? ParseAddress(e, "exit")
                    : node.SolePathPeer() ?? throw new NodeRequestException(NodeError.Invalid, "name the exit node (\"exit\", or \"auto\" for the cheapest offered): this node has paths to none or to several nodes");
                opened = await EnsurePathAsync(exit, context.RequestAborted);
            }
            var (id, app) = node.StartSocks(listen, exit);
            await RunAppAsync(context, id, app, request.Detach == true, opened, picked);
        });
        _app.MapDelete("/api/apps/{id:int}", async (int id) =>
            await node.StopApp(id) ? Results.NoContent() : throw new NodeRequestException(NodeError.NotFound, $"no app {id}"));

        MapExchange();
        MapVpn();

        _app.MapGet("/metrics", (HttpContext context) =>
        {
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            return context.Response.WriteAsync(NodeMetrics.Render(node, Control));
        });
    }

    /// <summary>
    /// Ping and the apps reach a node over a path: when there is none yet, one is opened by the node's default policy
    /// (lowest latency) and returned so the caller can say which; null when a path was already there.
    /// </summary>
    private async Task<PathInfo?> EnsurePathAsync(NodeAddress to, CancellationToken cancellationToken)
    {
        if (to == Node.Address)
            throw new NodeRequestException(NodeError.Invalid, $"{to} is this node itself; name another node");
        if (Node.FindPath(to) is not null)
            return null;
        if (Control is null)
            throw new NoPathException($"This node has no path to {to}, and no control plane to open one: set \"broker\" in node.json (then `skymesh path open` finds one), or install a path by hand along known nodes (`skymesh path static`).");
        var agent = Agent ?? throw new NodeRequestException(NodeError.Unavailable, $"This node has no path to {to}, and its control plane is not connected yet to open one ({Control.LastError ?? "connecting"}); try again shortly.");
        return WithHops(await agent.OpenPathAsync(to, null, cancellationToken));
    }

    /// <summary>A path just opened as the read model shows it: with every hop and its labels.</summary>
    private PathInfo WithHops(PathInfo opened) => ReadModel.Paths().FirstOrDefault(p => p.Id == opened.Id) ?? opened;

    /// <summary>
    /// An app started by a request lives as long as the request: the response is a line of JSON per event
    /// (listening, then each finished connection), and the app stops when the client goes away — so an app
    /// whose CLI was killed does not linger. With "detach" the app stays until DELETE /api/apps/{id}.
    /// </summary>
    private async Task RunAppAsync(HttpContext context, int id, TcpAppListener app, bool detach, PathInfo? opened, ServiceInfo? picked = null)
    {
        var started = new AppEvent("listening", id, app.LocalEndPoint.ToString(), null, null, 0, 0, null) { Opened = opened, Picked = picked };
        if (detach)
        {
            await context.Response.WriteAsJsonAsync(started, Json);
            return;
        }
        var events = Channel.CreateBounded<AppEvent>(new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.DropOldest });
        void OnEnded(AppConnection c) => events.Writer.TryWrite(new AppEvent("connection", id, null, c.Client, c.Target, c.BytesUp, c.BytesDown, c.Error));
        app.ConnectionEnded += OnEnded;
        context.Response.ContentType = "application/x-ndjson";
        try
        {
            await WriteLine(context, started);
            await foreach (var e in events.Reader.ReadAllAsync(context.RequestAborted))
                await WriteLine(context, e);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // The client went away: the app goes with it.
        }
        finally
        {
            app.ConnectionEnded -= OnEnded;
            await Node.StopApp(id);
        }
    }

    private readonly CancellationTokenSource _stopping = new();

    /// <summary>How often an idle event stream sends a comment line, so proxies and clients see it is alive.</summary>
    private static readonly TimeSpan EventKeepalive = TimeSpan.FromSeconds(15);

    /// <summary>
    /// <c>GET /api/events</c>: the node's events as Server-Sent Events (docs/node.md, "Events"). Each is
    /// <c>id: N</c>, <c>event: Kind</c>, <c>data: {json}</c>. A client that reconnects with <c>Last-Event-ID</c> (or
    /// <c>?after=N</c>) gets exactly the events after N; if some already left the ring, a <c>missed</c> event says how
    /// many first. Without either, the stream starts with every event still held. <c>?follow=false</c> ends the
    /// response after those instead of waiting for new ones.
    /// </summary>
    private async Task StreamEventsAsync(HttpContext context)
    {
        var request = context.Request;
        var after = 0L;
        var resume = request.Headers["Last-Event-ID"].ToString();
        if (resume.Length == 0)
            resume = request.Query["after"].ToString();
        if (resume.Length > 0 && (!long.TryParse(resume, NumberStyles.None, CultureInfo.InvariantCulture, out after)))
            throw new NodeRequestException(NodeError.Invalid, $"\"{resume}\" is not an event number");
        var follow = request.Query["follow"].ToString() is not ("false" or "0");
        var log = Node.Events;
        var response = context.Response;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        using var ended = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping.Token);
        var token = ended.Token;
        try
        {
            await response.StartAsync(token);
            while (true)
            {
                var events = log.Since(after, out var missed);
                var text = new StringBuilder();
                if (missed > 0)
                    text.Append(CultureInfo.InvariantCulture, $"event: missed\ndata: {{\"missed\":{missed}}}\n\n");
                foreach (var e in events)
                {
                    text.Append(CultureInfo.InvariantCulture, $"id: {e.Sequence}\nevent: {e.Kind}\ndata: ");
                    text.Append(JsonSerializer.Serialize(e, Json)).Append("\n\n");
                    after = e.Sequence;
                }
                if (text.Length > 0)
                {
                    await response.WriteAsync(text.ToString(), token);
                    await response.Body.FlushAsync(token);
                }
                if (!follow)
                    return;
                var next = log.WaitAsync(after, token);
                using (var idle = CancellationTokenSource.CreateLinkedTokenSource(token))
                {
                    var keepalive = Task.Delay(EventKeepalive, Node.Time, idle.Token);
                    if (await Task.WhenAny(next, keepalive) == keepalive && !token.IsCancellationRequested)
                    {
                        await response.WriteAsync(": keepalive\n\n", token);
                        await response.Body.FlushAsync(token);
                    }
                    await idle.CancelAsync();
                }
                token.ThrowIfCancellationRequested();
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // The client went away, or the node is stopping.
        }
    }

    private static async Task WriteLine(HttpContext context, AppEvent e)
    {
        await context.Response.WriteAsync(JsonSerializer.Serialize(e, Json) + "\n", context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }

    private static async Task<T> Read<T>(HttpContext context)
        where T : class
    {
        try
        {
            return await JsonSerializer.DeserializeAsync<T>(context.Request.Body, Json, context.RequestAborted)
                ?? throw new NodeRequestException(NodeError.Invalid, "the request body is empty; send a JSON object");
        }
        catch (JsonException e)
        {
            throw new NodeRequestException(NodeError.Invalid, $"bad JSON{(e.Path is { Length: > 0 } p ? $" at {p}" : "")}: {e.Message.Split(" Path:", 2)[0]}");
        }
    }

    private static NodeRequestException Missing(string field) => new(NodeError.Invalid, $"\"{field}\" is missing");

    private static NodeAddress ParseAddress(string text, string field) =>
        NodeAddress.TryParse(text, out var address) ? address : throw new NodeRequestException(NodeError.Invalid, $"\"{field}\": \"{text}\" is not a node address (64 lowercase hex digits)");

    private static byte[] ParseNonce(string hex)
    {
        try
        {
            var bytes = Convert.FromHexString(hex);
            return bytes.Length == 32 ? bytes : throw new NodeRequestException(NodeError.Invalid, "\"nonce\" is 64 hex digits (32 bytes)");
        }
        catch (FormatException)
        {
            throw new NodeRequestException(NodeError.Invalid, "\"nonce\" is 64 hex digits (32 bytes)");
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 650, Level = LogLevel.Error, Message = "The local API failed to handle {Method} {Path}")]
        public static partial void RequestFailed(ILogger logger, string method, string path, Exception exception);
    }

    public async ValueTask DisposeAsync()
    {
        ApiToken.Withdraw(EndPoint.Port, Token);
        // Long-lived responses (event streams, apps tied to their request) end now rather than hold the shutdown.
        await _stopping.CancelAsync();
        await _app.StopAsync();
        await _app.DisposeAsync();
        _dashboardNodes.Dispose();
    }
}

/// <summary>An error of the local API: RFC 7807 problem details (<c>application/problem+json</c>).</summary>
public sealed record ApiProblem(string Title, int Status, string Detail);

public sealed record NodeStatus(
    string Address, DateTimeOffset Started, IReadOnlyList<string> Interfaces, int Links, int Paths, int Labels,
    long Forwarded, long Delivered, long ForwardDrops, long BadFrames, long UnknownLabels, IReadOnlyList<string> Exits, string? Broker,
    string Control = "none", string? ControlError = null)
{
    /// <summary>How this node reaches the control bus: null without one.</summary>
    public BusRoute? Bus { get; init; }

    /// <summary>What this node relays of the control bus for its neighbours.</summary>
    public BusRelayCounters? Relay { get; init; }

    /// <summary>This node's address as neighbours see it, and the kind of NAT in front of it.</summary>
    public NatInfo? Nat { get; init; }

    /// <summary>What this node relays of links between others (nodes behind NATs that cannot reach each other).</summary>
    public LinkRelayCounters? LinkRelay { get; init; }

    /// <summary>What this node offers the mesh, and what it knows of others' offers.</summary>
    public ServicesStatus? Services { get; init; }
}

/// <summary>
/// How a node reaches the control bus: <c>direct</c> (over IP to the broker) or <c>via-neighbours</c>; for the latter the
/// neighbour its tunnel goes through, the relays between it and the broker, and the broker key it trusts.
/// </summary>
public sealed record BusRoute(string Mode, string? Via, int? Hops, string? BrokerPin, string? Problem)
{
    /// <summary>The kind of bus: <c>ssmp</c> (a broker, whose TLS key is pinned when reached through neighbours) or <c>nats</c> (a cluster; every message signed).</summary>
    public string Kind { get; init; } = "ssmp";
}

public sealed record InterfaceInfo(string Name, string Local, int Mtu, long FramesSent, long FramesReceived, long BytesSent, long BytesReceived, long SendDrops, long ReceiveDrops)
{
    /// <summary>False while its owner holds it down (no links on it).</summary>
    public bool Up { get; init; } = true;
}

public sealed record LabelEntry(int InLink, string? InPeer, uint InLabel, string Action, int? OutLink, string? OutPeer, uint? OutLabel, int? Path, double IdleSeconds);

public sealed record LabelReply(int Link, string? Peer, uint Label, string Action);

/// <param name="Size">The bytes the ping datagram really had.</param>
/// <param name="Opened">The path this ping had opened first, when there was none.</param>
public sealed record PingReply(string To, double RttMicroseconds, int Size, PathInfo? Opened = null);

public sealed record AppEvent(string Event, int App, string? Listen, string? Client, string? Target, long BytesUp, long BytesDown, string? Error)
{
    /// <summary>On <c>listening</c>: the path the app had opened first to its destination, when there was none.</summary>
    public PathInfo? Opened { get; init; }

    /// <summary>On <c>listening</c> of a SOCKS server asked for <c>"exit": "auto"</c>: the offer it picked.</summary>
    public ServiceInfo? Picked { get; init; }
}

public sealed record AppInfo(int Id, string Kind, string Listen, string Destination, string? Target, long Accepted, long Active, long Failed)
{
    public static AppInfo Of(int id, TcpAppListener app) => app switch
    {
        TcpForwarder f => new AppInfo(id, "forward", f.LocalEndPoint.ToString(), f.Destination.ToString(), f.Target, f.Accepted, f.Active, f.Failed),
        Socks5Server s => new AppInfo(id, "socks", s.LocalEndPoint.ToString(), s.Exit.ToString(), null, s.Accepted, s.Active, s.Failed),
        _ => new AppInfo(id, "?", app.LocalEndPoint.ToString(), "", null, app.Accepted, app.Active, app.Failed),
    };
}

public sealed record LinkRequest(string? Interface, string? Endpoint, string? Peer, string? Via = null);

/// <param name="Billable">False when the next hop is the path's end (settlement pays only for forwarding); default true.</param>
public sealed record LabelTarget(string? Link, uint? Label, bool? Billable = null);

public sealed record LabelRequest(string? Link, uint? Label, LabelTarget? Forward);

public sealed record PathRequest(string? Peer, string? Via, uint? OutLabel, uint? InLabel, bool? Initiator, string? Nonce);

public sealed record PingRequest(string? To, int? Size, int? TimeoutMs);

public sealed record TraceRequest(string? To, int? Probes);

public sealed record OpenPathRequest(string? To, string? Policy, int? MinHops, int? MaxHops, ulong? MaxPrice, IReadOnlyList<string>? Avoid, IReadOnlyList<string>? Via);

public sealed record MeshLinkInfo(string Peer, uint RttMicroseconds, uint LossPpm, uint CapacityKbps, uint Price, string State);

public sealed record MeshNodeInfo(string Address, ulong Sequence, DateTimeOffset Expires, IReadOnlyList<MeshLinkInfo> Links);

public sealed record ForwardRequest(string? Listen, string? To, string? Target, bool? Detach);

/// <param name="Exit">The exit node's address; <c>auto</c> for the cheapest exit or socks service offered (docs/node.md, "Services").</param>
/// <param name="MaxPrice">With <c>auto</c>: the most the exit may cost per MiB in all, its price and the relays'.</param>
public sealed record SocksRequest(string? Listen, string? Exit, bool? Detach, ulong? MaxPrice = null);

public sealed record DashboardNodeRequest(string? Name, string? Api, string? Token);

/// <param name="Value">For <c>raise</c>: the new credit limit, in micro-units.</param>
public sealed record DecisionRequest(string? Choice, long? Value);

/// <param name="MaxPathPrice">The cap per MiB; a negative number removes it.</param>
public sealed record PoliciesRequest(string? Neighbours, string? Credit, string? Exits, string? Price, long? MaxPathPrice);

public sealed record NeighbourRequest(long? CreditLimit, bool? Suspended);

public sealed record BlockRequest(string? Node);

public sealed record InterfaceRequest(bool? Up);

/// <param name="Services">What the node offers in its service record, replacing every offer (an empty list withdraws them all).</param>
public sealed record SettingsRequest(uint? Price, long? CreditLimit, IReadOnlyList<string>? Exits, IReadOnlyList<ServiceConfig>? Services = null);
