using System.Globalization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Skymesh.Control.Discovery;
using Skymesh.Control.Topology;
using Skymesh.Identity;

namespace Skymesh.Node;

/// <summary>The local API's service discovery (docs/node.md, "Services"): what other nodes offer, and the exit a SOCKS server picks by itself.</summary>
public sealed partial class NodeApi
{
    private void MapServices()
    {
        // GET /api/services?kind=&name=&maxPrice=&limit=
        _app.MapGet("/api/services", async (HttpContext context) =>
        {
            var agent = RequireAgent();
            var query = ParseServiceQuery(context.Request.Query);
            var offers = await agent.FindServicesAsync(query, context.RequestAborted);
            return Results.Json(offers.Select(ServiceInfo.Of).ToList(), Json);
        });
    }

    private static ServiceQuery ParseServiceQuery(IQueryCollection parameters)
    {
        var query = new ServiceQuery();
        if (parameters["kind"].ToString() is { Length: > 0 } kindName)
        {
            query = ServiceEntry.TryParseKind(kindName, out var kind)
                ? query with { Kind = kind }
                : throw new NodeRequestException(NodeError.Invalid, $"\"kind\": \"{kindName}\" is not a service kind (exit, socks, vpn or app)");
        }
        if (parameters["name"].ToString() is { Length: > 0 } name)
            query = query with { Name = name };
        if (parameters["maxPrice"].ToString() is { Length: > 0 } cap)
        {
            query = ulong.TryParse(cap, NumberStyles.None, CultureInfo.InvariantCulture, out var maxPrice)
                ? query with { MaxPrice = maxPrice }
                : throw new NodeRequestException(NodeError.Invalid, $"\"maxPrice\": \"{cap}\" is not a price (a whole number of micro-units per MiB)");
        }
        if (parameters["limit"].ToString() is { Length: > 0 } most)
        {
            query = int.TryParse(most, NumberStyles.None, CultureInfo.InvariantCulture, out var limit) && limit is >= 1 and <= ServiceQuery.MaxLimit
                ? query with { Limit = limit }
                : throw new NodeRequestException(NodeError.Invalid, $"\"limit\": \"{most}\" is not a number of offers from 1 to {ServiceQuery.MaxLimit}");
        }
        return query;
    }

    /// <summary>
    /// <c>"exit": "auto"</c>: the cheapest offer of kind exit or socks this node reaches (the service's price and the
    /// relays' on the way; ties to the lower latency), within <paramref name="maxPrice"/>. When this node has no path to it
    /// yet, the cheapest path is opened (and returned); when that fails, the next offer is tried, three nodes at most.
    /// </summary>
    private async Task<(NodeAddress Exit, ServiceInfo Picked, PathInfo? Opened)> PickExitAsync(ulong? maxPrice, CancellationToken cancellationToken)
    {
        if (Control is null)
            throw new NodeRequestException(NodeError.Conflict, "\"exit\": \"auto\" picks from the services other nodes offer, and this node has no control plane to hear them (set \"broker\" in node.json)");
        var agent = RequireAgent();
        var offers = new List<ServiceOffer>();
        foreach (var kind in new[] { ServiceKind.Exit, ServiceKind.Socks })
            offers.AddRange(await agent.FindServicesAsync(new ServiceQuery { Kind = kind, MaxPrice = maxPrice }, cancellationToken));
        var candidates = offers.OrderBy(o => o.TotalPrice).ThenBy(o => o.RttMicroseconds).ThenBy(o => o.Hops)
            .DistinctBy(o => o.Node).Take(3).ToList();
        if (candidates.Count == 0)
            throw new NodeRequestException(NodeError.NotFound, "\"exit\": \"auto\": no node this one reaches offers an exit or socks service"
                + (maxPrice is { } cap ? $" within {cap:N0} per MiB" : "") + " (skymesh services lists what is offered)");
        var (picked, opened) = await ReachOneAsync(candidates, PathPolicy.LowestPrice, "\"exit\": \"auto\"", "cheapest exit(s)", cancellationToken);
        return (picked.Node, ServiceInfo.Of(picked), opened);
    }

    /// <summary>
    /// The first of <paramref name="candidates"/> (in order) this node has a path to, or can open one to by
    /// <paramref name="policy"/>; the path opened (null when one was there). When every open fails, the last refusal says why.
    /// </summary>
    private async Task<(ServiceOffer Offer, PathInfo? Opened)> ReachOneAsync(IReadOnlyList<ServiceOffer> candidates, PathPolicy policy, string asked, string what,
        CancellationToken cancellationToken)
    {
        var agent = RequireAgent();
        NodeRequestException? failed = null;
        foreach (var offer in candidates)
        {
            if (Node.FindPath(offer.Node) is not null)
                return (offer, null);
            try
            {
                return (offer, WithHops(await agent.OpenPathAsync(offer.Node, new PathQuery { Policy = policy }, cancellationToken)));
            }
            catch (NodeRequestException e) when (e.Error is NodeError.NotFound or NodeError.Refused or NodeError.Timeout)
            {
                failed = e;
            }
        }
        throw new NodeRequestException(failed!.Error, $"{asked}: no path could be opened to the {candidates.Count} {what}; the last said: {failed.Message}");
    }
}

/// <summary>
/// A service another node offers, and what reaching it costs from this node: <see cref="Price"/> is the service's own per
/// MiB, <see cref="PathPrice"/> the relays' on the cheapest path, <see cref="TotalPrice"/> both.
/// </summary>
/// <param name="Name">An app's name; null for other kinds.</param>
/// <param name="Port">An app's port on its node; null for other kinds.</param>
/// <param name="MaxMbps">Mbit/s one user gets at most; 0: no limit.</param>
/// <param name="MaxSessions">Users at once at most; 0: no limit.</param>
/// <param name="RttMicroseconds">The path's links' announced round trips, summed.</param>
/// <param name="Path">The nodes of the path, this node first.</param>
public sealed record ServiceInfo(
    string Node, string Kind, string? Name, int? Port, uint Price, string? Region, uint MaxMbps, int MaxSessions, DateTimeOffset Expires,
    int Hops, ulong RttMicroseconds, ulong PathPrice, ulong TotalPrice, IReadOnlyList<string> Path)
{
    public static ServiceInfo Of(ServiceOffer offer)
    {
        ArgumentNullException.ThrowIfNull(offer);
        var app = offer.Kind == ServiceKind.App;
        return new ServiceInfo(offer.Node.ToString(), offer.Service.KindName, app ? offer.Name : null, app ? offer.Port : null, offer.PricePerMiB,
            offer.Region.Length > 0 ? offer.Region : null, offer.MaxMbps, offer.MaxSessions, offer.Expires, offer.Hops, offer.RttMicroseconds,
            offer.PathPrice, offer.TotalPrice, [.. offer.Path.Select(n => n.ToString())]);
    }
}

/// <summary>What this node offers in its service record, and what it knows of others' offers.</summary>
/// <param name="Published">Service records this node signed and published since its agent joined the bus.</param>
/// <param name="Known">Offers of other nodes in unexpired records this node holds; null when it keeps none (it asks a dedicated finder) or has no agent yet.</param>
/// <param name="Nodes">The nodes those offers come from.</param>
public sealed record ServicesStatus(IReadOnlyList<ServiceConfig> Offered, long Published, int? Known, int? Nodes);
