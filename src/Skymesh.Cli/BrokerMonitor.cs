using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Cli;

/// <summary>What <c>GET /stats</c> on a broker's monitor answers (and <c>skymesh broker stats</c> prints).</summary>
public sealed record BrokerStats(string Name, string Listen, DateTimeOffset Started, double UptimeSeconds, BrokerMetricsSnapshot Counters);

/// <summary>
/// A broker's read-only monitoring port (<c>skymesh broker --monitor ADDR</c>): <c>/stats</c> as JSON,
/// <c>/metrics</c> in the Prometheus text format, <c>/healthz</c>. It answers GET only and changes nothing.
/// </summary>
internal sealed class BrokerMonitor : IAsyncDisposable
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        WriteIndented = false,
    };

    private readonly WebApplication _app;

    private BrokerMonitor(WebApplication app, IPEndPoint endPoint)
    {
        _app = app;
        EndPoint = endPoint;
    }

    public IPEndPoint EndPoint { get; }

    public static async Task<BrokerMonitor> StartAsync(SsmpBroker broker, IPEndPoint listen, string name)
    {
        var started = DateTimeOffset.UtcNow;
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(listen);
            k.Limits.MaxRequestBodySize = 0;
        });
        var app = builder.Build();
        app.Use(async (context, next) =>
        {
            if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
            {
                context.Response.StatusCode = 405;
                await context.Response.WriteAsync("the broker's monitor only answers GET\n");
                return;
            }
            await next(context);
        });
        BrokerStats Stats() => new(name, broker.LocalEndPoint.ToString(), started, (DateTimeOffset.UtcNow - started).TotalSeconds, broker.Snapshot());
        app.MapGet("/healthz", () => Results.Text("ok\n"));
        app.MapGet("/stats", () => Results.Json(Stats(), Json));
        app.MapGet("/metrics", (HttpContext context) =>
        {
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            return context.Response.WriteAsync(Render(Stats()));
        });
        try
        {
            await app.StartAsync();
        }
        catch (IOException e)
        {
            await app.DisposeAsync();
            throw new UsageException($"--monitor: cannot listen on {listen}: {e.Message}");
        }
        var address = app.Urls.Select(u => new Uri(u)).First();
        return new BrokerMonitor(app, new IPEndPoint(IPAddress.Parse(address.Host.Trim('[', ']')), address.Port));
    }

    /// <summary>The counters in the Prometheus text format.</summary>
    public static string Render(BrokerStats stats)
    {
        var c = stats.Counters;
        var text = new StringBuilder();
        void Metric(string name, string type, string help, long value)
        {
            text.Append(CultureInfo.InvariantCulture, $"# HELP skymesh_broker_{name} {help}\n# TYPE skymesh_broker_{name} {type}\n");
            text.Append(CultureInfo.InvariantCulture, $"skymesh_broker_{name} {value}\n");
        }
        Metric("uptime_seconds", "gauge", "Seconds since the broker started.", (long)stats.UptimeSeconds);
        Metric("connections_accepted_total", "counter", "Connections accepted.", c.ConnectionsAccepted);
        Metric("connections", "gauge", "Connections open now.", c.ConnectionsOpen);
        Metric("logged_in", "gauge", "Connections logged in now.", c.LoggedIn);
        Metric("topics", "gauge", "Topics with at least one subscriber.", c.Topics);
        Metric("requests_total", "counter", "Requests received.", c.RequestsReceived);
        Metric("events_total", "counter", "Events queued towards clients.", c.EventsQueued);
        Metric("received_bytes_total", "counter", "Bytes read from clients.", c.BytesReceived);
        Metric("sent_bytes_total", "counter", "Bytes written to clients.", c.BytesSent);
        Metric("queued_bytes", "gauge", "Bytes queued towards clients, not yet written.", c.QueuedBytes);
        Metric("bad_requests_total", "counter", "Requests that broke the grammar (each closes its connection).", c.BadRequests);
        Metric("ucast_not_found_total", "counter", "UCASTs to an id that was not connected.", c.UcastNotFound);
        Metric("key_logins_total", "counter", "Logins accepted through the key scheme.", c.KeyLoginsAccepted);
        void ByReason<TReason>(string name, string help, IReadOnlyDictionary<TReason, long> counts)
            where TReason : struct, Enum
        {
            text.Append(CultureInfo.InvariantCulture, $"# HELP skymesh_broker_{name} {help}\n# TYPE skymesh_broker_{name} counter\n");
            foreach (var (reason, count) in counts.OrderBy(d => d.Key))
                text.Append(CultureInfo.InvariantCulture, $"skymesh_broker_{name}{{reason=\"{JsonNamingPolicy.SnakeCaseLower.ConvertName(reason.ToString())}\"}} {count}\n");
        }
        ByReason("disconnects_total", "Connections closed, by reason.", c.Disconnects);
        ByReason("key_login_failures_total", "Key logins refused, by reason.", c.KeyLoginFailures);
        return text.ToString();
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
