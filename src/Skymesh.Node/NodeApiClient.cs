using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Skymesh.Mesh.Links;

namespace Skymesh.Node;

/// <summary>One item of a node's event stream: an event, or how many events the reader missed.</summary>
public sealed record EventStreamItem(Events.NodeEvent? Event, long Missed);

/// <summary>An error answered by a node's local API, with its message.</summary>
public sealed class NodeApiException : Exception
{
    public NodeApiException()
    {
    }

    public NodeApiException(string message)
        : base(message)
    {
    }

    public NodeApiException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public NodeApiException(HttpStatusCode status, string message)
        : base(message)
    {
        Status = status;
    }

    public HttpStatusCode Status { get; }
}

/// <summary>A client of one node's local API (what the CLI uses).</summary>
public sealed partial class NodeApiClient : IDisposable
{
    private readonly HttpClient _http;

    /// <param name="token">The node's API token; when null, the one the node at <paramref name="address"/> published for this user (<see cref="ApiToken.Find"/>).</param>
    public NodeApiClient(string address, TimeSpan? timeout = null, string? token = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(address);
        Address = address;
        _http = new HttpClient { BaseAddress = new Uri($"http://{address}/"), Timeout = timeout ?? TimeSpan.FromSeconds(30) };
        Token = token ?? ApiToken.Find(address);
        if (Token is { } found)
            _http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue(ApiToken.Scheme, found);
    }

    public string Address { get; }

    /// <summary>The token this client presents (null when it found none).</summary>
    public string? Token { get; }

    /// <summary>The address that signs a browser in to the node's dashboard, or null without a token.</summary>
    public string? DashboardAddress => Token is null ? null : $"http://{Address}{NodeApi.LoginPath}?token={Uri.EscapeDataString(Token)}";

    public Task DropLinkAsync(int id, CancellationToken cancellationToken = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"api/links/{id}"), cancellationToken);

    public Task<Operator.DecisionsView> DecisionsAsync(CancellationToken cancellationToken = default) => GetAsync<Operator.DecisionsView>("api/decisions", cancellationToken);

    public Task<Operator.DecisionInfo> DecideAsync(long id, string choice, long? value = null, CancellationToken cancellationToken = default) =>
        PostAsync<Operator.DecisionInfo>($"api/decisions/{id}", new DecisionRequest(choice, value), cancellationToken);

    public Task<Operator.DecisionPolicies> SetPoliciesAsync(PoliciesRequest request, CancellationToken cancellationToken = default) =>
        SendJsonAsync<Operator.DecisionPolicies>(HttpMethod.Put, "api/decisions/policies", request, cancellationToken);

    public Task<List<Operator.NeighbourView>> NeighboursAsync(CancellationToken cancellationToken = default) => GetAsync<List<Operator.NeighbourView>>("api/neighbours", cancellationToken);

    public Task<Operator.NeighbourView> SetNeighbourAsync(string peer, long? creditLimit, bool? suspended, CancellationToken cancellationToken = default) =>
        SendJsonAsync<Operator.NeighbourView>(HttpMethod.Put, $"api/neighbours/{peer}", new NeighbourRequest(creditLimit, suspended), cancellationToken);

    public Task<List<string>> BlocksAsync(CancellationToken cancellationToken = default) => GetAsync<List<string>>("api/blocks", cancellationToken);

    public Task<List<string>> BlockAsync(string node, CancellationToken cancellationToken = default) => PostAsync<List<string>>("api/blocks", new BlockRequest(node), cancellationToken);

    public Task UnblockAsync(string node, CancellationToken cancellationToken = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"api/blocks/{node}"), cancellationToken);

    public Task<InterfaceInfo> SetInterfaceAsync(string name, bool up, CancellationToken cancellationToken = default) =>
        SendJsonAsync<InterfaceInfo>(HttpMethod.Put, $"api/interfaces/{Uri.EscapeDataString(name)}", new InterfaceRequest(up), cancellationToken);

    public Task<Operator.NodeSettings> SettingsAsync(CancellationToken cancellationToken = default) => GetAsync<Operator.NodeSettings>("api/settings", cancellationToken);

    public Task<Operator.NodeSettings> SetSettingsAsync(SettingsRequest request, CancellationToken cancellationToken = default) =>
        SendJsonAsync<Operator.NodeSettings>(HttpMethod.Put, "api/settings", request, cancellationToken);

    public Task<List<Skymesh.Dashboard.DashboardNodeInfo>> DashboardNodesAsync(CancellationToken cancellationToken = default) =>
        GetAsync<List<Skymesh.Dashboard.DashboardNodeInfo>>("api/dashboard/nodes", cancellationToken);

    public Task<Skymesh.Dashboard.DashboardNodeInfo> AddDashboardNodeAsync(string name, string api, string token, CancellationToken cancellationToken = default) =>
        PostAsync<Skymesh.Dashboard.DashboardNodeInfo>("api/dashboard/nodes", new DashboardNodeRequest(name, api, token), cancellationToken);

    public Task RemoveDashboardNodeAsync(string name, CancellationToken cancellationToken = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"api/dashboard/nodes/{Uri.EscapeDataString(name)}"), cancellationToken);

    public Task<NodeStatus> StatusAsync(CancellationToken cancellationToken = default) => GetAsync<NodeStatus>("api/node", cancellationToken);

    public Task<List<LinkInfo>> LinksAsync(CancellationToken cancellationToken = default) => GetAsync<List<LinkInfo>>("api/links", cancellationToken);

    public Task<List<InterfaceInfo>> InterfacesAsync(CancellationToken cancellationToken = default) => GetAsync<List<InterfaceInfo>>("api/interfaces", cancellationToken);

    public Task<List<LabelEntry>> LabelsAsync(CancellationToken cancellationToken = default) => GetAsync<List<LabelEntry>>("api/labels", cancellationToken);

    public Task<List<PathInfo>> PathsAsync(CancellationToken cancellationToken = default) => GetAsync<List<PathInfo>>("api/paths", cancellationToken);

    public Task<List<AppInfo>> AppsAsync(CancellationToken cancellationToken = default) => GetAsync<List<AppInfo>>("api/apps", cancellationToken);

    public Task<string> MetricsAsync(CancellationToken cancellationToken = default) => SendAsync(new HttpRequestMessage(HttpMethod.Get, "metrics"), cancellationToken);

    public Task<LabelReply> ReserveLabelAsync(string link, CancellationToken cancellationToken = default) =>
        PostAsync<LabelReply>("api/labels", new LabelRequest(link, null, null), cancellationToken);

    public Task<LabelReply> ForwardLabelAsync(string inLink, uint? inLabel, string outLink, uint outLabel, CancellationToken cancellationToken = default, bool billable = true) =>
        PostAsync<LabelReply>("api/labels", new LabelRequest(inLink, inLabel, new LabelTarget(outLink, outLabel, billable)), cancellationToken);

    public Task RemoveLabelAsync(int link, uint label, CancellationToken cancellationToken = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"api/labels/{link}/{label}"), cancellationToken);

    public Task<PathInfo> InstallPathAsync(PathRequest request, CancellationToken cancellationToken = default) =>
        PostAsync<PathInfo>("api/paths", request, cancellationToken);

    public Task RemovePathAsync(int id, CancellationToken cancellationToken = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"api/paths/{id}"), cancellationToken);

    public Task<PingReply> PingAsync(string to, int size = 64, int timeoutMs = 2000, CancellationToken cancellationToken = default) =>
        PostAsync<PingReply>("api/ping", new PingRequest(to, size, timeoutMs), cancellationToken);

    /// <summary>
    /// Links to a neighbour at <paramref name="endpoint"/>; with none, to <paramref name="peer"/> through NATs by hole
    /// punching (through a relay both know when that finds no way); or, given <paramref name="via"/>, through that relay.
    /// </summary>
    public Task<LinkInfo> ConnectAsync(string? nic, string? endpoint, string? peer, CancellationToken cancellationToken = default, string? via = null) =>
        PostAsync<LinkInfo>("api/links", new LinkRequest(nic, endpoint, peer, via), cancellationToken);

    /// <summary>Asks the node's control plane for a path to <paramref name="to"/> and sets it up.</summary>
    public Task<PathInfo> OpenPathAsync(string to, string? policy = null, int? minHops = null, int? maxHops = null, ulong? maxPrice = null,
        IReadOnlyList<string>? avoid = null, IReadOnlyList<string>? via = null, CancellationToken cancellationToken = default) =>
        PostAsync<PathInfo>("api/paths/open", new OpenPathRequest(to, policy, minHops, maxHops, maxPrice, avoid, via), cancellationToken);

    /// <summary>Hop by hop round trips to <paramref name="to"/> along the path the control plane would choose.</summary>
    public Task<List<Control.TraceHop>> TraceAsync(string to, int probes = 3, CancellationToken cancellationToken = default) =>
        PostAsync<List<Control.TraceHop>>("api/traceroute", new TraceRequest(to, probes), cancellationToken);

    /// <summary>This node's ledger balance and its books with each neighbour.</summary>
    public Task<Control.BalanceInfo> BalanceAsync(CancellationToken cancellationToken = default) => GetAsync<Control.BalanceInfo>("api/balance", cancellationToken);

    /// <summary>The mesh as this node's control plane knows it: every node's latest announcement.</summary>
    public Task<List<MeshNodeInfo>> MeshAsync(CancellationToken cancellationToken = default) => GetAsync<List<MeshNodeInfo>>("api/nodes", cancellationToken);

    /// <summary>What other nodes offer that this node reaches, cheapest in all first (<c>GET /api/services</c>).</summary>
    /// <param name="kind">exit, socks, vpn or app; null for every kind.</param>
    /// <param name="name">An app's name; null for any.</param>
    /// <param name="maxPrice">The most an offer may cost per MiB, its price and the relays' on the way.</param>
    public Task<List<ServiceInfo>> ServicesAsync(string? kind = null, string? name = null, ulong? maxPrice = null, CancellationToken cancellationToken = default)
    {
        var query = new List<string>();
        if (kind is not null)
            query.Add("kind=" + Uri.EscapeDataString(kind));
        if (name is not null)
            query.Add("name=" + Uri.EscapeDataString(name));
        if (maxPrice is { } cap)
            query.Add("maxPrice=" + cap.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return GetAsync<List<ServiceInfo>>("api/services" + (query.Count > 0 ? "?" + string.Join('&', query) : ""), cancellationToken);
    }

    public Task StopAppAsync(int id, CancellationToken cancellationToken = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"api/apps/{id}"), cancellationToken);

    /// <summary>
    /// Starts an app (forward or SOCKS) and reads its events as they come; the app runs until the enumeration
    /// stops (the request is then closed and the node stops the app).
    /// </summary>
    public async IAsyncEnumerable<AppEvent> RunAppAsync(string kind, object request, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var message = new HttpRequestMessage(HttpMethod.Post, $"api/{kind}") { Content = JsonContent.Create(request, request.GetType(), options: NodeApi.Json) };
        using var http = new HttpClient { BaseAddress = _http.BaseAddress, Timeout = Timeout.InfiniteTimeSpan };
        http.DefaultRequestHeaders.Authorization = _http.DefaultRequestHeaders.Authorization;
        using var response = await Send(http, message, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        await using var body = await response.Content.ReadAsStreamAsync(cancellationToken);
        using var reader = new StreamReader(body);
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (line.Length > 0)
                yield return JsonSerializer.Deserialize<AppEvent>(line, NodeApi.Json)!;
        }
    }

    /// <summary>
    /// Reads the node's event stream (<c>GET /api/events</c>): the events after number <paramref name="after"/> (all the
    /// node still holds when 0), then — with <paramref name="follow"/> — each new one as it happens. An item with
    /// <see cref="EventStreamItem.Missed"/> above 0 says that many events had already left the node's ring.
    /// </summary>
    public async IAsyncEnumerable<EventStreamItem> EventsAsync(long after = 0, bool follow = true, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var message = new HttpRequestMessage(HttpMethod.Get, $"api/events?follow={(follow ? "true" : "false")}");
        if (after > 0)
            message.Headers.Add("Last-Event-ID", after.ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var http = new HttpClient { BaseAddress = _http.BaseAddress, Timeout = Timeout.InfiniteTimeSpan };
        http.DefaultRequestHeaders.Authorization = _http.DefaultRequestHeaders.Authorization;
        using var response = await Send(http, message, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        await using var body = await response.Content.ReadAsStreamAsync(cancellationToken);
        using var reader = new StreamReader(body);
        string? kind = null;
        var data = new System.Text.StringBuilder();
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (line.Length == 0)
            {
                // The end of one event (docs: id, event and data lines, then a blank line).
                if (data.Length > 0)
                {
                    yield return kind == "missed"
                        ? new EventStreamItem(null, JsonDocument.Parse(data.ToString()).RootElement.GetProperty("missed").GetInt64())
                        : new EventStreamItem(JsonSerializer.Deserialize<Events.NodeEvent>(data.ToString(), NodeApi.Json), 0);
                }
                kind = null;
                data.Clear();
            }
            else if (line.StartsWith("event: ", StringComparison.Ordinal))
            {
                kind = line["event: ".Length..];
            }
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                data.Append(line.AsSpan("data: ".Length));
            }
        }
    }

    private async Task<T> GetAsync<T>(string path, CancellationToken cancellationToken)
    {
        var text = await SendAsync(new HttpRequestMessage(HttpMethod.Get, path), cancellationToken);
        return JsonSerializer.Deserialize<T>(text, NodeApi.Json)!;
    }

    private Task<T> PostAsync<T>(string path, object body, CancellationToken cancellationToken) => SendJsonAsync<T>(HttpMethod.Post, path, body, cancellationToken);

    private async Task<T> SendJsonAsync<T>(HttpMethod method, string path, object body, CancellationToken cancellationToken)
    {
        var text = await SendAsync(new HttpRequestMessage(method, path) { Content = JsonContent.Create(body, body.GetType(), options: NodeApi.Json) }, cancellationToken);
        return JsonSerializer.Deserialize<T>(text, NodeApi.Json)!;
    }

    private async Task<string> SendAsync(HttpRequestMessage message, CancellationToken cancellationToken)
    {
        using (message)
        {
            using var response = await Send(_http, message, HttpCompletionOption.ResponseContentRead, cancellationToken);
            return await response.Content.ReadAsStringAsync(cancellationToken);
        }
    }

    private async Task<HttpResponseMessage> Send(HttpClient http, HttpRequestMessage message, HttpCompletionOption completion, CancellationToken cancellationToken)
    {
        HttpResponseMessage response;
        try
        {
            response = await http.SendAsync(message, completion, cancellationToken);
        }
        catch (HttpRequestException e)
        {
            throw new NodeApiException($"Cannot reach the node's local API at {Address}: {e.Message} (is `skymesh node` running, and is --api its address?)", e);
        }
        if (response.IsSuccessStatusCode)
            return response;
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(cancellationToken);
            string error;
            try
            {
                error = JsonSerializer.Deserialize<ApiProblem>(text, NodeApi.Json)?.Detail ?? text;
            }
            catch (JsonException)
            {
                error = text.Length > 0 ? text : response.ReasonPhrase ?? "error";
            }
            throw new NodeApiException(response.StatusCode, $"{Address}: {error}");
        }
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>
/// Installs a path by hand along a chain of nodes whose local APIs are reachable (until the control plane
/// sets paths up itself): labels are reserved on every hop first, then the relays' entries and the two
/// ends are installed, in both directions. Any failure removes what was installed.
/// </summary>
public static class StaticPath
{
    /// <summary>The source's path (its id is what <c>skymesh path remove</c> takes) and the destination's.</summary>
    public sealed record Result(PathInfo Source, PathInfo Destination, IReadOnlyList<string> Nodes);

    public static async Task<Result> InstallAsync(IReadOnlyList<NodeApiClient> chain, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(chain);
        if (chain.Count < 2)
            throw new ArgumentException("A path needs at least two nodes: the source and the destination.", nameof(chain));
        var k = chain.Count - 1;
        var addresses = new string[chain.Count];
        for (var i = 0; i <= k; i++)
            addresses[i] = (await chain[i].StatusAsync(cancellationToken)).Address;
        if (addresses.Distinct().Count() != addresses.Length)
            throw new ArgumentException("A node appears twice in the chain.", nameof(chain));

        var undo = new List<Func<Task>>();
        try
        {
            // Labels each node reads the path on: from the previous hop (forward) and from the next (back).
            var forwardIn = new uint[chain.Count];
            var backIn = new uint[chain.Count];
            for (var i = 1; i < k; i++)
            {
                forwardIn[i] = (await chain[i].ReserveLabelAsync(addresses[i - 1], cancellationToken)).Label;
                backIn[i] = (await chain[i].ReserveLabelAsync(addresses[i + 1], cancellationToken)).Label;
            }
            forwardIn[k] = (await chain[k].ReserveLabelAsync(addresses[k - 1], cancellationToken)).Label;
            backIn[0] = (await chain[0].ReserveLabelAsync(addresses[1], cancellationToken)).Label;

            for (var i = 1; i < k; i++)
            {
                var node = chain[i];
                var fwd = await node.ForwardLabelAsync(addresses[i - 1], forwardIn[i], addresses[i + 1], forwardIn[i + 1], cancellationToken, billable: i + 1 < k);
                undo.Add(() => node.RemoveLabelAsync(fwd.Link, fwd.Label));
                var back = await node.ForwardLabelAsync(addresses[i + 1], backIn[i], addresses[i - 1], backIn[i - 1], cancellationToken, billable: i > 1);
                undo.Add(() => node.RemoveLabelAsync(back.Link, back.Label));
            }
            var nonce = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
            var destination = await chain[k].InstallPathAsync(new PathRequest(addresses[0], addresses[k - 1], backIn[k - 1], forwardIn[k], false, nonce), cancellationToken);
            undo.Add(() => chain[k].RemovePathAsync(destination.Id));
            var source = await chain[0].InstallPathAsync(new PathRequest(addresses[k], addresses[1], forwardIn[1], backIn[0], true, nonce), cancellationToken);
            return new Result(source, destination, addresses);
        }
        catch
        {
            foreach (var step in Enumerable.Reverse(undo))
            {
                try
                {
                    await step();
                }
                catch (NodeApiException)
                {
                    // Best effort: entries left behind expire on their own.
                }
            }
            throw;
        }
    }
}
