using System.CommandLine;
using System.Net;
using System.Text;
using Microsoft.Extensions.Logging;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;

namespace Skymesh.Cli;

/// <summary>
/// <c>skymesh demo chat</c>: starts a broker and a few clients and prints the SSMP traffic between them as it flows.
/// </summary>
internal static class ChatDemoCommand
{
    public static Command Create()
    {
        var listen = new Option<string>("--listen") { Description = "Where the demo broker listens (a free port is taken if this one is busy).", DefaultValueFactory = _ => "127.0.0.1:8787" };
        var duration = new Option<double>("--duration") { Description = "Seconds to run; 0 runs until Ctrl+C.", DefaultValueFactory = _ => 12 }.Within(0, 86_400, "seconds");
        var interval = new Option<double>("--interval") { Description = "Seconds between rounds of chat.", DefaultValueFactory = _ => 1 }.Within(0.01, 3600, "seconds");
        var command = new Command("chat", "Start an SSMP broker and three clients, and show live SSMP traffic between them.") { listen, duration, interval };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var seconds = parse.GetValue(duration);
            var every = parse.GetValue(interval);
            if (seconds < 0 || !double.IsFinite(seconds))
                throw new UsageException("--duration must be 0 or a positive number of seconds.");
            if (every <= 0 || !double.IsFinite(every))
                throw new UsageException("--interval must be a positive number of seconds.");
            return await RunAsync(CliSupport.ParseEndPoint(parse.GetValue(listen)!, "--listen"), seconds, TimeSpan.FromSeconds(every), cancellationToken);
        });
        return command;
    }

    private static async Task<int> RunAsync(IPEndPoint listen, double seconds, TimeSpan interval, CancellationToken cancellationToken)
    {
        using var logging = CliSupport.Logging(LogLevel.Information);
        var broker = StartBroker(listen, logging);
        await using var _ = broker;
        var port = broker.LocalEndPoint.Port;
        Console.WriteLine($"SSMP broker on 127.0.0.1:{port}. Join the chat yourself from another terminal:");
        Console.WriteLine($"    nc 127.0.0.1 {port}");
        Console.WriteLine("    LOGIN me open");
        Console.WriteLine("    SUBSCRIBE chat PRESENCE");
        Console.WriteLine("    MCAST chat hello everyone");
        Console.WriteLine();

        var output = new object();
        void Show(string who, SsmpEvent e)
        {
            lock (output)
                Console.WriteLine($"  {who,-6} <- {Describe(e)}");
        }

        await using var carol = await Connect(port, "carol", Show);
        await carol.SubscribeAsync("chat", presence: true, cancellationToken);
        await using var alice = await Connect(port, "alice", Show);
        await alice.SubscribeAsync("chat", cancellationToken: cancellationToken);
        await using var bob = await Connect(port, "bob", Show);
        await bob.SubscribeAsync("chat", cancellationToken: cancellationToken);

        using var signals = CliSupport.UntilSignal(cancellationToken);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(signals.Token);
        if (seconds > 0)
            stop.CancelAfter(TimeSpan.FromSeconds(seconds));
        var round = 0;
        try
        {
            while (!stop.IsCancellationRequested)
            {
                round++;
                lock (output)
                    Console.WriteLine($"round {round}: alice UCASTs bob, bob MCASTs chat, carol BCASTs");
                await alice.UcastAsync("bob", $"hello bob, this is alice (#{round})", stop.Token);
                await bob.McastAsync("chat", $"bob to everyone on chat (#{round})", stop.Token);
                await carol.BcastAsync(Encoding.UTF8.GetBytes($"carol to everyone who shares a topic (#{round})"), stop.Token);
                try
                {
                    await alice.UcastAsync("dave", "is anyone called dave here?", stop.Token);
                }
                catch (SsmpException e) when (e.Code == 404)
                {
                    lock (output)
                        Console.WriteLine("  alice  <- 404: nobody is logged in as dave");
                }
                await Task.Delay(interval, stop.Token);
            }
        }
        catch (OperationCanceledException)
        {
        }
        await bob.UnsubscribeAsync("chat", CancellationToken.None);
        await Task.Delay(100, CancellationToken.None);
        var m = broker.Snapshot();
        Console.WriteLine();
        Console.WriteLine($"broker: {m.ConnectionsAccepted} connections, {m.RequestsReceived} requests, {m.EventsQueued} events delivered, {m.BadRequests} bad requests.");
        return 0;
    }

    private static SsmpBroker StartBroker(IPEndPoint listen, ILoggerFactory logging)
    {
        var broker = new SsmpBroker(new SsmpBrokerOptions { Listen = listen }, logging);
        try
        {
            broker.Start();
            return broker;
        }
        catch (InvalidOperationException) when (listen.Port != 0)
        {
            Console.WriteLine($"{listen} is busy; taking a free port instead.");
            broker = new SsmpBroker(new SsmpBrokerOptions { Listen = new IPEndPoint(listen.Address, 0) }, logging);
            broker.Start();
            return broker;
        }
    }

    private static Task<SsmpClient> Connect(int port, string id, Action<string, SsmpEvent> show) =>
        SsmpClient.ConnectAsync(new SsmpClientOptions
        {
            Port = port,
            Id = id,
            OnEvent = e => show(id, e),
        });

    private static string Describe(SsmpEvent e) => e.Verb switch
    {
        Ssmp.Codec.SsmpVerb.Subscribe => $"{e.From} joined {e.Target}{(e.Presence ? " (watching presence)" : "")}",
        Ssmp.Codec.SsmpVerb.Unsubscribe => $"{e.From} left {e.Target}",
        Ssmp.Codec.SsmpVerb.Bcast => $"{e.From} BCAST \"{e.PayloadText}\"",
        _ => $"{e.From} {e.VerbToken} {e.Target} \"{e.PayloadText}\"",
    };
}
