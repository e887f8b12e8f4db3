using System.CommandLine;
using System.Globalization;

namespace Skymesh.Cli;

/// <summary><c>skymesh services</c>: what the nodes of the mesh offer, and what reaching each costs (docs/node.md, "Services").</summary>
internal static partial class NodeCommands
{
    internal static Command CreateServices()
    {
        var kind = new Option<string?>("--kind") { Description = "Only this kind: exit, socks, vpn or app." };
        kind.AcceptOnlyFromAmong("exit", "socks", "vpn", "app");
        var name = new Option<string?>("--name") { Description = "Only apps of this name." };
        var maxPrice = new Option<ulong?>("--max-price") { Description = "The most an offer may cost per MiB in all: the service's price and the relays' on the way, in micro-units." };
        var command = new Command("services", "List the services other nodes offer (exit, socks, vpn, apps) that this node reaches, cheapest in all first, with the path to each.")
        {
            kind, name, maxPrice, Api, Token, DataDir, Json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var client = Client(parse);
            var offers = await client.ServicesAsync(parse.GetValue(kind), parse.GetValue(name), parse.GetValue(maxPrice), cancellationToken);
            if (Print(parse, offers))
                return 0;
            Table(["NODE", "SERVICE", "PRICE", "REGION", "LIMITS", "HOPS", "RTT", "PATH PRICE", "TOTAL/MiB"],
                offers.Select(o => new[]
                {
                    Short(o.Node), o.Name is { } app ? $"app {app}:{o.Port}" : o.Kind, o.Price.ToString("N0", CultureInfo.InvariantCulture), o.Region ?? "-",
                    Limits(o.MaxMbps, o.MaxSessions), o.Hops.ToString(CultureInfo.InvariantCulture), $"{o.RttMicroseconds / 1000.0:0.0} ms",
                    o.PathPrice.ToString("N0", CultureInfo.InvariantCulture), o.TotalPrice.ToString("N0", CultureInfo.InvariantCulture),
                }));
            return 0;
        });
        return command;
    }

    private static string Limits(uint maxMbps, int maxSessions) => (maxMbps, maxSessions) switch
    {
        (0, 0) => "-",
        (_, 0) => $"{maxMbps:N0} Mbit/s",
        (0, _) => $"{maxSessions:N0} sessions",
        _ => $"{maxMbps:N0} Mbit/s, {maxSessions:N0} sessions",
    };
}
