using System.CommandLine;
using Microsoft.Extensions.Logging;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Control.Bus;
using Skymesh.Node.Hosting;

namespace Skymesh.Cli;

/// <summary><c>skymesh finder</c>: a dedicated route finder for a large mesh (docs/control-plane.md).</summary>
internal static class FinderCommand
{
    public static Command Create()
    {
        var broker = new Option<string>("--broker") { Description = "The control bus: an SSMP broker (host:port) or a NATS cluster (nats://host:port[,nats://host:port…]).", DefaultValueFactory = _ => "127.0.0.1:8787" };
        var name = new Option<string>("--name") { Description = "The broker's name, which the key login signs.", DefaultValueFactory = _ => Ssmp.Broker.SsmpBrokerOptions.DefaultServerName };
        var dataDir = new Option<string>("--data-dir") { Description = "Where the finder keeps its key (finder.key, created on first run).", DefaultValueFactory = _ => "." };
        var statsInterval = new Option<double>("--stats-interval") { Description = "Seconds between one-line summaries; 0 for none.", DefaultValueFactory = _ => 60 }.Within(0, 86_400, "seconds");
        var command = new Command("finder", "Run a dedicated route finder: it keeps the mesh's graph and services from the announcements and answers path and service queries over the control bus, so nodes configured with \"finder\" keep none.")
        {
            broker, name, dataDir, statsInterval,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var where = parse.GetValue(broker)!;
            using var logging = CliSupport.Logging(LogLevel.Information);
            var connector = ControlBusConnectors.For(where, parse.GetValue(name)!, logging: logging)
                ?? throw new UsageException($"--broker: '{where}' is neither host:port nor nats://host:port[,nats://host:port…]");
            var every = parse.GetValue(statsInterval);
            Directory.CreateDirectory(parse.GetValue(dataDir)!);
            using var key = NodeKeyFile.LoadOrCreate(Path.Combine(parse.GetValue(dataDir)!, "finder.key"));
            using var signals = CliSupport.UntilSignal(cancellationToken);
            IControlBus bus;
            try
            {
                bus = await connector.ConnectAsync(key, signals.Token);
            }
            catch (ControlBusException e)
            {
                throw new InvalidOperationException($"Cannot join the control bus at {where}: {e.Message}", e);
            }
            await using var finder = await RouteFinderService.StartAsync(bus, cancellationToken: signals.Token);
            Console.WriteLine($"route finder {key.Address} on the control bus {bus.Describe}; nodes set \"finder\": \"{key.Address}\" in node.json to use it");
            try
            {
                while (!signals.Token.IsCancellationRequested)
                {
                    await Task.Delay(every > 0 ? TimeSpan.FromSeconds(every) : Timeout.InfiniteTimeSpan, signals.Token);
                    Console.WriteLine($"{DateTime.UtcNow:HH:mm:ss} {finder.Graph.NodeCount} nodes known, {finder.Graph.Accepted} announcements accepted, {finder.Queries} queries answered; "
                        + $"{finder.Services.Matching().Count} services offered by {finder.Services.Matching().Select(m => m.Record.Node).Distinct().Count()} nodes, {finder.ServiceQueries} service queries answered");
                }
            }
            catch (OperationCanceledException)
            {
            }
            return 0;
        });
        return command;
    }
}
