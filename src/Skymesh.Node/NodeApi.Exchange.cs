using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.WebUtilities;
using Skymesh.Exchange.Service;

namespace Skymesh.Node;

/// <summary>
/// The node's account on an exchange (docs/dashboard.md, "Exchange"): what the dashboard's Exchange page shows and does,
/// each an exchange API call (docs/exchange-api.md) made as the node's address. An exchange's refusal comes back with
/// its HTTP-like status (4xx) and its <c>code</c> and <c>message</c>; an exchange that cannot be reached is 503.
/// </summary>
public sealed partial class NodeApi
{
    /// <summary>The node's account on the exchange node.json's <c>exchange</c> names; null without one.</summary>
    public NodeExchange? Exchange { get; }

    private const int ExchangeLists = 50;

    private void MapExchange()
    {
        // Written here, not returned: a handler of HttpContext alone is a RequestDelegate, whose result nobody writes.
        _app.MapGet("/api/exchange", async (HttpContext context) => await context.Response.WriteAsJsonAsync(
            Exchange is { } exchange ? await ExchangeViewAsync(exchange, context.RequestAborted) : NotConfiguredView(), Json));
        _app.MapGet("/api/exchange/book", (HttpContext context) => ExchangeAsync(context, async (exchange, cancellationToken) =>
        {
            var market = context.Request.Query["market"].ToString();
            if (market.Length == 0)
                throw Missing("market");
            var depthText = context.Request.Query["depth"].ToString();
            var depth = 20;
            if (depthText.Length > 0 && !int.TryParse(depthText, NumberStyles.None, CultureInfo.InvariantCulture, out depth))
                throw new NodeRequestException(NodeError.Invalid, $"\"depth\": \"{depthText}\" is not a number of levels");
            return await exchange.BookAsync(market, Math.Clamp(depth, 1, 1000), cancellationToken);
        }));
        _app.MapPost("/api/exchange/orders", (HttpContext context) => ExchangeAsync(context, async (exchange, cancellationToken) =>
        {
            var request = await Read<ExchangeOrderRequest>(context);
            var type = request.Type ?? "limit";
            var answer = await exchange.CallAsync("order.place", new
            {
                market = request.Market ?? throw Missing("market"),
                side = request.Side ?? throw Missing("side"),
                type,
                quantity = request.Quantity ?? throw Missing("quantity"),
                price = type == "market" ? null : request.Price,
                timeInForce = string.IsNullOrEmpty(request.TimeInForce) ? null : request.TimeInForce,
                clientOrderId = string.IsNullOrEmpty(request.ClientOrderId) ? null : request.ClientOrderId,
                postOnly = request.PostOnly,
            }, cancellationToken);
            return answer.GetProperty("order");
        }));
        _app.MapDelete("/api/exchange/orders/{id:long}", (long id, HttpContext context) => ExchangeAsync(context, async (exchange, cancellationToken) =>
            (await exchange.CallAsync("order.cancel", new { orderId = id }, cancellationToken)).GetProperty("order")));
        _app.MapPost("/api/exchange/deposit-address", (HttpContext context) => ExchangeAsync(context, async (exchange, cancellationToken) =>
        {
            var request = await Read<ExchangeAssetRequest>(context);
            return WithoutRateLimit(await exchange.CallAsync("deposit.address", new { asset = request.Asset ?? throw Missing("asset") }, cancellationToken));
        }));
        _app.MapPost("/api/exchange/withdrawals", (HttpContext context) => ExchangeAsync(context, async (exchange, cancellationToken) =>
        {
            var request = await Read<ExchangeWithdrawalRequest>(context);
            var answer = await exchange.CallAsync("withdraw", new
            {
                asset = request.Asset ?? throw Missing("asset"),
                address = request.Address ?? throw Missing("address"),
                amount = request.Amount ?? throw Missing("amount"),
                // Without a key of the caller's, a new one: the same request sent again is then a second withdrawal.
                key = string.IsNullOrEmpty(request.Key) ? $"node-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8))}" : request.Key,
            }, cancellationToken);
            return answer.GetProperty("withdrawal");
        }));
        _app.MapPost("/api/exchange/withdrawals/{id:long}/approve", (long id, HttpContext context) => ExchangeAsync(context, async (exchange, cancellationToken) =>
            (await exchange.CallAsync("admin.approve", new { id }, cancellationToken)).GetProperty("withdrawal")));
        _app.MapPost("/api/exchange/withdrawals/{id:long}/reject", (long id, HttpContext context) => ExchangeAsync(context, async (exchange, cancellationToken) =>
        {
            var request = await Read<ExchangeRejectRequest>(context);
            var reason = string.IsNullOrWhiteSpace(request.Reason) ? null : request.Reason.Trim();
            return (await exchange.CallAsync("admin.reject", new { id, reason }, cancellationToken)).GetProperty("withdrawal");
        }));
    }

    /// <summary>
    /// Runs one exchange request for the API: its answer as JSON, or the exchange's refusal as problem details carrying
    /// the exchange's <c>code</c> and <c>message</c>.
    /// </summary>
    private async Task ExchangeAsync(HttpContext context, Func<NodeExchange, CancellationToken, Task<object>> call)
    {
        if (Exchange is not { } exchange)
        {
            await ExchangeProblemAsync(context, 409, "not_configured",
                "this node trades on no exchange: add an \"exchange\" section to node.json (docs/dashboard.md, \"Exchange\") and restart it");
            return;
        }
        object answer;
        try
        {
            answer = await call(exchange, context.RequestAborted);
        }
        catch (ExchangeApiException e)
        {
            // The exchange's own refusals keep their 4xx; its failures inside are the gateway's (502), its stop 503.
            var status = e.Status is >= 400 and < 500 and not 408 ? e.Status : e.Status == 503 ? 503 : 502;
            await ExchangeProblemAsync(context, status, e.Code, e.Message);
            return;
        }
        catch (ExchangeUnreachableException e)
        {
            await ExchangeProblemAsync(context, 503, "exchange_unreachable", e.Message);
            return;
        }
        await context.Response.WriteAsJsonAsync(answer, Json);
    }

    private static Task ExchangeProblemAsync(HttpContext context, int status, string code, string message)
    {
        context.Response.StatusCode = status;
        return context.Response.WriteAsJsonAsync(new ExchangeProblem(ReasonPhrases.GetReasonPhrase(status), status, message, code, message), Json, "application/problem+json");
    }

    /// <summary>Everything the Exchange page shows at once; the parts that fail say why instead of failing the whole.</summary>
    private static async Task<ExchangeView> ExchangeViewAsync(NodeExchange exchange, CancellationToken cancellationToken)
    {
        var view = new ExchangeView(true)
        {
            Service = exchange.Options.Service,
            Broker = exchange.Options.Broker,
            Name = exchange.Options.Name,
            Account = exchange.Account,
            Login = exchange.LoginId,
        };
        if (!exchange.LoggedIn)
            return view with { Error = $"exchange unreachable: {exchange.LastError ?? $"connecting to the broker {exchange.Options.Broker}"}" };

        // Every call at once: they travel over one connection and the exchange answers them in parallel.
        var markets = Settle(exchange.CallAsync("markets", null, cancellationToken));
        var balances = Settle(exchange.CallAsync("balances", null, cancellationToken));
        var orders = Settle(exchange.CallAsync("orders", new { status = "open", limit = 1000 }, cancellationToken));
        var fills = Settle(exchange.CallAsync("fills", new { limit = ExchangeLists }, cancellationToken));
        var deposits = Settle(exchange.CallAsync("deposits", new { limit = ExchangeLists }, cancellationToken));
        var withdrawals = Settle(exchange.CallAsync("withdrawals", new { limit = ExchangeLists }, cancellationToken));
        var held = Settle(exchange.CallAsync("admin.withdrawals", new { state = "held", limit = ExchangeLists }, cancellationToken));
        var parts = new[] { markets, balances, orders, fills, deposits, withdrawals, held };
        await Task.WhenAll(parts);

        string? error = null;
        foreach (var part in parts)
        {
            var failure = part.Result.Error;
            if (failure is null || failure is ExchangeApiException { Code: "not_operator" })
                continue;
            if (failure is ExchangeUnreachableException || error is null)
                error = failure is ExchangeApiException api ? $"{api.Message} ({api.Code})" : failure.Message;
            if (failure is ExchangeUnreachableException)
                break;
        }
        static JsonElement? Field(Task<(JsonElement? Value, Exception? Error)> part, string name) =>
            part.Result.Value is { } value && value.TryGetProperty(name, out var field) ? field : null;
        var frozen = Field(balances, "frozen") is { ValueKind: JsonValueKind.True };
        var isOperator = held.Result.Value is not null;
        return view with
        {
            Connected = !parts.Any(p => p.Result.Error is ExchangeUnreachableException),
            Error = error,
            Markets = Field(markets, "markets"),
            Assets = Field(markets, "assets"),
            Balances = Field(balances, "balances"),
            Frozen = frozen,
            OpenOrders = Field(orders, "orders"),
            RecentFills = Field(fills, "fills"),
            Deposits = Field(deposits, "deposits"),
            Withdrawals = Field(withdrawals, "withdrawals"),
            Operator = isOperator,
            PendingApprovals = isOperator ? Field(held, "withdrawals") : null,
        };
    }

    private static async Task<(JsonElement? Value, Exception? Error)> Settle(Task<JsonElement> call)
    {
        try
        {
            return (await call, null);
        }
        catch (Exception e) when (e is ExchangeApiException or ExchangeUnreachableException)
        {
            return (null, e);
        }
    }

    /// <summary>An answer without the rate-limit bucket every account answer ends with (the page has no use for it).</summary>
    private static Dictionary<string, JsonElement> WithoutRateLimit(JsonElement answer) =>
        answer.EnumerateObject().Where(p => p.Name != "rateLimit").ToDictionary(p => p.Name, p => p.Value);

    private ExchangeView NotConfiguredView()
    {
        var broker = Node.Options.Broker is { } own && NodeOptions.NatsServers(own) is null ? own : "127.0.0.1:8787";
        return new ExchangeView(false)
        {
            Example = $$"""
                "exchange": {
                  "service": "<the exchange's id: what `skymesh exchange serve` prints, also in its directory's exchange.id>",
                  "broker": "{{broker}}"
                }
                """,
        };
    }
}

/// <summary>An exchange's refusal as problem details: the exchange's <paramref name="Code"/> and <paramref name="Message"/> beside them.</summary>
public sealed record ExchangeProblem(string Title, int Status, string Detail, string Code, string Message);

/// <summary>
/// <c>GET /api/exchange</c>: the node's account on its exchange. The lists are the exchange API's own objects
/// (docs/exchange-api.md, section 6); a part the exchange did not answer is left out and <see cref="Error"/> says why.
/// </summary>
public sealed record ExchangeView(bool Configured)
{
    public string? Service { get; init; }

    public string? Broker { get; init; }

    /// <summary>The exchange's topic prefix.</summary>
    public string? Name { get; init; }

    /// <summary>The account: the node's address, which signs every request.</summary>
    public string? Account { get; init; }

    /// <summary>The node's broker login for the exchange (an open id: the requests are signed).</summary>
    public string? Login { get; init; }

    /// <summary>The exchange answered.</summary>
    public bool Connected { get; init; }

    public string? Error { get; init; }

    public JsonElement? Markets { get; init; }

    public JsonElement? Assets { get; init; }

    public JsonElement? Balances { get; init; }

    /// <summary>The account owes a reversed deposit: it may only cancel orders until it is repaid.</summary>
    public bool Frozen { get; init; }

    public JsonElement? OpenOrders { get; init; }

    public JsonElement? RecentFills { get; init; }

    public JsonElement? Deposits { get; init; }

    public JsonElement? Withdrawals { get; init; }

    /// <summary>The account is one of the exchange's operators (<c>admin.withdrawals</c> answered).</summary>
    public bool Operator { get; init; }

    /// <summary>Withdrawals of every account waiting for an operator (operators only).</summary>
    public JsonElement? PendingApprovals { get; init; }

    /// <summary>Without an <c>exchange</c> section: what to add to node.json.</summary>
    public string? Example { get; init; }
}

public sealed record ExchangeOrderRequest(string? Market, string? Side, string? Quantity, string? Price, string? Type, string? TimeInForce, string? ClientOrderId, bool? PostOnly);

public sealed record ExchangeAssetRequest(string? Asset);

/// <param name="Key">The idempotency key: the same key again answers the same withdrawal (a new one is made when absent).</param>
public sealed record ExchangeWithdrawalRequest(string? Asset, string? Address, string? Amount, string? Key);

public sealed record ExchangeRejectRequest(string? Reason);
