using System.CommandLine;
using System.Globalization;
using System.Reflection;
using Microsoft.Extensions.Logging;
using Skymesh.Bench;

namespace Skymesh.Cli;

/// <summary><c>skymesh bench …</c>: load generators whose results go into docs/benchmarks.md.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var command = new Command("bench", "Run a load generator and print one JSON line per workload.");
        command.Subcommands.Add(CreateSsmp());
        command.Subcommands.Add(CreateControl());
        command.Subcommands.Add(CreateMesh());
        command.Subcommands.Add(CreateExchange());
        return command;
    }

    private static Command CreateExchange()
    {
        var defaults = new ExchangeBenchOptions();
        var commands = new Option<int>("--commands") { Description = "Commands in the measured stream.", DefaultValueFactory = _ => defaults.Commands }.Within(1, int.MaxValue);
        var owners = new Option<int>("--owners") { Description = "Account owners.", DefaultValueFactory = _ => defaults.Owners }.Within(1, 10_000_000);
        var seed = new Option<int>("--seed") { Description = "Seed of the command stream.", DefaultValueFactory = _ => defaults.Seed };
        var rate = new Option<double>("--latency-rate") { Description = "Commands offered per second in the latency run; 0 skips it.", DefaultValueFactory = _ => defaults.LatencyRate }.Within(0, 1e9);
        var repeat = new Option<int>("--repeat") { Description = "Measured throughput runs (the median is reported).", DefaultValueFactory = _ => defaults.Repeat }.Within(1, 100);
        var journal = new Option<string?>("--journal") { Description = "Also run the stream journaled into this new file (group commit, fsync), then recover from it." };
        var journalPostgres = new Option<string?>("--journal-postgres") { Description = "Run the journaled pass on PostgreSQL instead: a connection string (Npgsql), e.g. \"Host=127.0.0.1;Port=5432;Username=me;Database=db\"." };
        var journalName = new Option<string>("--journal-name") { Description = "Name of the PostgreSQL journal (its table is exchange_journal_NAME); it must be new.", DefaultValueFactory = _ => defaults.JournalName };
        var commitEvery = new Option<int>("--commit-every") { Description = "Commands per group commit of the journaled run.", DefaultValueFactory = _ => defaults.CommitEvery }.Within(1, 1_000_000);
        var showCommits = new Option<bool>("--show-commits") { Description = "Print \"committed N\" after every commit of the journaled run (for crash tests)." };
        var api = new Option<bool>("--api") { Description = "Measure the exchange service end to end over SSMP instead: session-authenticated and signed orders, market-data fan-out." };
        var apiDefaults = new ExchangeApiBenchOptions();
        var seconds = new Option<double>("--seconds") { Description = "With --api: seconds each phase runs.", DefaultValueFactory = _ => apiDefaults.Seconds }.Within(0.5, 3600, "seconds");
        var traders = new Option<int>("--traders") { Description = "With --api: traders, each its own SSMP connection.", DefaultValueFactory = _ => apiDefaults.Traders }.Within(1, 1000);
        var window = new Option<int>("--window") { Description = "With --api: requests each trader keeps in flight.", DefaultValueFactory = _ => apiDefaults.Window }.Within(1, 100_000);
        var warmup = new Option<double>("--warmup") { Description = "With --api: seconds each timed phase runs before it is measured.", DefaultValueFactory = _ => apiDefaults.Warmup }.Within(0, 3600, "seconds");
        var signedRequests = new Option<int>("--signed-requests") { Description = "With --api: pre-signed orders in the signed phase; 0 skips it.", DefaultValueFactory = _ => apiDefaults.SignedRequests }.Within(0, 10_000_000);
        var subscribers = new Option<int>("--subscribers") { Description = "With --api: market-data subscribers; 0 skips the fan-out phase.", DefaultValueFactory = _ => apiDefaults.Subscribers }.Within(0, 100_000);
        var command = new Command("exchange", "Measure the matching engine on exchange-core's command mix: throughput and allocation on one thread, latency at a fixed offered rate; one JSON line.")
        {
            commands, owners, seed, rate, repeat, journal, journalPostgres, journalName, commitEvery, showCommits, api, seconds, warmup, traders, window, signedRequests, subscribers,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (parse.GetValue(api))
            {
                return await ExchangeApiBench.RunAsync(new ExchangeApiBenchOptions
                {
                    Seconds = parse.GetValue(seconds),
                    Warmup = parse.GetValue(warmup),
                    Traders = parse.GetValue(traders),
                    Window = parse.GetValue(window),
                    SignedRequests = parse.GetValue(signedRequests),
                    Subscribers = parse.GetValue(subscribers),
                }, Console.Out, cancellationToken);
            }
            var options = new ExchangeBenchOptions
            {
                Commands = parse.GetValue(commands),
                Owners = parse.GetValue(owners),
                Seed = parse.GetValue(seed),
                LatencyRate = parse.GetValue(rate),
                Repeat = parse.GetValue(repeat),
                Journal = parse.GetValue(journal),
                JournalPostgres = parse.GetValue(journalPostgres),
                JournalName = parse.GetValue(journalName)!,
                CommitEvery = parse.GetValue(commitEvery),
                ShowCommits = parse.GetValue(showCommits),
            };
            if (options.CommitEvery < 1)
                throw new UsageException("--commit-every must be at least 1.");
            if (options.Commands < 1000 || options.Owners < 2 || options.Repeat < 1 || !(options.LatencyRate >= 0))
                throw new UsageException("--commands must be at least 1,000, --owners at least 2, --repeat at least 1 and --latency-rate not negative.");
            try
            {
                return ExchangeBench.Run(options, Console.Out);
            }
            catch (BenchException e)
            {
                throw new UsageException(e.Message);
            }
        });
        return command;
    }

    private static Command CreateControl()
    {
        var defaults = new ControlBenchOptions();
        var maxHops = new Option<int>("--max-hops") { Description = "Path setup is measured for 1 to this many hops.", DefaultValueFactory = _ => defaults.MaxHops }.Within(1, 16);
        var setups = new Option<int>("--setups") { Description = "Paths set up (and closed) per hop count.", DefaultValueFactory = _ => defaults.Setups }.Within(1, 1_000_000);
        var idleNodes = new Option<int>("--idle-nodes") { Description = "Nodes of the idle mesh whose control traffic is measured; 0 skips it.", DefaultValueFactory = _ => defaults.IdleNodes }.Within(0, 100_000);
        var idleSeconds = new Option<double>("--idle-seconds") { Description = "Seconds the idle mesh is measured.", DefaultValueFactory = _ => defaults.IdleTime.TotalSeconds }.Within(0.1, 86_400, "seconds");
        var bus = new Option<string>("--bus")
        {
            Description = "Measure path setup over ssmp (the embedded broker), nats (a three-server nats-server cluster the bench starts), or both, side by side in one run.",
            DefaultValueFactory = _ => "ssmp",
        }.AcceptOnly("ssmp", "nats", "both");
        var command = new Command("control", "Measure the control plane: path setup latency for 1..N hops (p50/p99) and an idle node's control traffic; one JSON line each.")
        {
            maxHops, setups, idleNodes, idleSeconds, bus,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var seconds = parse.GetValue(idleSeconds);
            if (!double.IsFinite(seconds) || seconds < 1)
                throw new UsageException("--idle-seconds must be at least 1.");
            var options = new ControlBenchOptions
            {
                MaxHops = parse.GetValue(maxHops),
                Setups = parse.GetValue(setups),
                IdleNodes = parse.GetValue(idleNodes),
                IdleTime = TimeSpan.FromSeconds(seconds),
                Buses = parse.GetValue(bus) switch { "both" => ["ssmp", "nats"], var one => [one!] },
            };
            using var signals = CliSupport.UntilSignal(cancellationToken);
            try
            {
                return await ControlBench.RunAsync(options, Console.Out, signals.Token);
            }
            catch (BenchException e)
            {
                throw new UsageException(e.Message);
            }
            catch (OperationCanceledException) when (signals.Token.IsCancellationRequested)
            {
                return 130;
            }
        });
        return command;
    }

    private static Command CreateSsmp()
    {
        var defaults = new SsmpBenchOptions();
        var workload = new Option<string[]>("--workload")
        {
            Description = "Workloads to run, in order: ucast, fanout, latency, idle. Repeat or separate with commas.",
            DefaultValueFactory = _ => ["ucast", "fanout", "latency"],
            AllowMultipleArgumentsPerToken = true,
        };
        var connections = new Option<int?>("--connections")
        {
            Description = $"ucast: connections, each sending and receiving (default {defaults.Connections}); idle: idle connections (default {defaults.IdleConnections}).",
        }.Within(1, 1_000_000);
        var messages = new Option<int>("--messages") { Description = "ucast: UCASTs each connection sends.", DefaultValueFactory = _ => defaults.MessagesPerConnection }.Within(1, int.MaxValue);
        var subscribers = new Option<int>("--subscribers") { Description = "fanout: subscribers of the topic.", DefaultValueFactory = _ => defaults.Subscribers }.Within(1, 100_000);
        var fanoutMessages = new Option<int>("--fanout-messages") { Description = "fanout: MCASTs the publisher sends (each reaches every subscriber).", DefaultValueFactory = _ => defaults.FanoutMessages }.Within(1, int.MaxValue);
        var latencyPairs = new Option<int>("--latency-pairs") { Description = "latency: sender/receiver pairs.", DefaultValueFactory = _ => defaults.LatencyPairs }.Within(1, 10_000);
        var latencySamples = new Option<int>("--latency-samples") { Description = "latency: messages measured per pair.", DefaultValueFactory = _ => defaults.LatencySamples }.Within(1, int.MaxValue);
        var latencyRate = new Option<double>("--latency-rate") { Description = "latency: messages per second per pair (one in flight at a time).", DefaultValueFactory = _ => defaults.LatencyRate }.Within(0, 1e9);
        var idleWarmup = new Option<int>("--idle-warmup") { Description = "idle: connections opened before the first memory reading, not counted.", DefaultValueFactory = _ => defaults.IdleWarmupConnections }.Within(0, 1_000_000);
        var idleRounds = new Option<int>("--idle-rounds") { Description = "idle: keepalive rounds (PING and PONG) the idle connections are held through, memory read after each.", DefaultValueFactory = _ => defaults.IdleKeepaliveRounds }.Within(0, 1000);
        var idlePing = new Option<double>("--idle-ping-interval") { Description = "idle: seconds between PINGs of the brokers this bench starts (at least 1).", DefaultValueFactory = _ => defaults.IdlePingInterval.TotalSeconds }.Within(1, 3600, "seconds");
        var payloadSize = new Option<int>("--payload-size") { Description = "Payload bytes per message.", DefaultValueFactory = _ => defaults.PayloadSize };
        var batch = new Option<int>("--batch") { Description = "Requests per socket write.", DefaultValueFactory = _ => defaults.Batch }.Within(1, 100_000);
        var warmup = new Option<double>("--warmup") { Description = "Fraction of each workload sent first and not measured (0 for none).", DefaultValueFactory = _ => defaults.Warmup };
        var broker = new Option<string>("--broker")
        {
            Description = "Where the Skymesh broker runs: process (a `skymesh broker` child, fresh per workload) or inproc (inside this process).",
            DefaultValueFactory = _ => "process",
        };
        broker.AcceptOnlyFromAmong("process", "inproc");
        var target = new Option<string?>("--target") { Description = "Use the SSMP broker already listening at host:port instead of starting one." };
        var targetPid = new Option<int?>("--target-pid") { Description = "Process id of the --target broker, to report its CPU time and memory." }.Within(1, int.MaxValue);
        var receiveBuffer = new Option<int?>("--broker-receive-buffer") { Description = "Receive buffer in bytes of the broker's busy connections (default: the broker's own)." }.Within(256, 64 << 20);
        var nats = new Option<bool>("--nats") { Description = "Also run every workload against nats-server (started on a free loopback port), in the same run." };
        var natsServer = new Option<string>("--nats-server") { Description = "The nats-server executable.", DefaultValueFactory = _ => defaults.NatsServerPath };
        var timeout = new Option<double>("--timeout") { Description = "Seconds a workload may take at most.", DefaultValueFactory = _ => defaults.Timeout.TotalSeconds }.Within(1, 86_400, "seconds");
        var repeat = new Option<int>("--repeat") { Description = "ucast and fanout: measured runs on the same connections; the median is reported.", DefaultValueFactory = _ => defaults.Repeat }.Within(1, 100);
        var seed = new Option<int>("--seed") { Description = "Seed of the random peer choice.", DefaultValueFactory = _ => defaults.Seed };

        var command = new Command("ssmp", "Load-test the SSMP broker: ucast (the original 100 x 10,000 benchmark), fanout, latency, idle memory; optionally beside nats-server.")
        {
            workload, connections, messages, subscribers, fanoutMessages, latencyPairs, latencySamples, latencyRate, idleWarmup, idleRounds, idlePing,
            payloadSize, batch, warmup, broker, target, targetPid, receiveBuffer, nats, natsServer, timeout, repeat, seed,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var workloads = ParseWorkloads(parse.GetValue(workload)!);
            var targetValue = parse.GetValue(target);
            var brokerValue = parse.GetValue(broker)!;
            var timeoutSeconds = parse.GetValue(timeout);
            if (!(timeoutSeconds > 0) || !double.IsFinite(timeoutSeconds))
                throw new UsageException("--timeout must be a positive number of seconds.");
            var connectionCount = parse.GetValue(connections);
            var receiveBufferSize = parse.GetValue(receiveBuffer);
            if (targetValue is not null && parse.GetResult(broker) is { Implicit: false })
                throw new UsageException("--target and --broker exclude each other: --target uses a broker that is already running.");
            if (targetValue is null && parse.GetValue(targetPid) is not null)
                throw new UsageException("--target-pid needs --target.");
            if (targetValue is not null && receiveBufferSize is not null)
                throw new UsageException("--broker-receive-buffer applies to a broker the bench starts, not to --target.");
            var mode = targetValue is not null ? BrokerMode.External : brokerValue == "inproc" ? BrokerMode.InProcess : BrokerMode.Process;
            using var logging = CliSupport.Logging(LogLevel.Warning);
            var options = new SsmpBenchOptions
            {
                Workloads = workloads,
                Broker = mode,
                BrokerLaunch = mode == BrokerMode.Process ? BrokerLaunch(receiveBufferSize) : null,
                Target = targetValue is null ? null : CliSupport.ParseEndPoint(targetValue, "--target"),
                TargetProcessId = parse.GetValue(targetPid),
                Nats = parse.GetValue(nats),
                NatsServerPath = parse.GetValue(natsServer)!,
                Connections = connectionCount ?? defaults.Connections,
                IdleConnections = connectionCount ?? defaults.IdleConnections,
                MessagesPerConnection = parse.GetValue(messages),
                Subscribers = parse.GetValue(subscribers),
                FanoutMessages = parse.GetValue(fanoutMessages),
                LatencyPairs = parse.GetValue(latencyPairs),
                LatencySamples = parse.GetValue(latencySamples),
                LatencyRate = parse.GetValue(latencyRate),
                IdleWarmupConnections = parse.GetValue(idleWarmup),
                IdleKeepaliveRounds = parse.GetValue(idleRounds),
                IdlePingInterval = TimeSpan.FromSeconds(parse.GetValue(idlePing)),
                PayloadSize = parse.GetValue(payloadSize),
                Batch = parse.GetValue(batch),
                Warmup = parse.GetValue(warmup),
                Timeout = TimeSpan.FromSeconds(timeoutSeconds),
                BrokerReceiveBufferSize = receiveBufferSize,
                Repeat = parse.GetValue(repeat),
                Seed = parse.GetValue(seed),
                LoggerFactory = logging,
            };
            try
            {
                options.Validate();
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }
            try
            {
                return await SsmpBench.RunAsync(options, Console.Out, cancellationToken);
            }
            catch (BenchException e)
            {
                Console.Error.WriteLine($"skymesh: {e.Message}");
                return 1;
            }
            catch (System.Net.Sockets.SocketException e)
            {
                Console.Error.WriteLine($"skymesh: the benchmark lost its connection to the target: {e.Message}");
                return 1;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                Console.Error.WriteLine("skymesh: benchmark interrupted.");
                return 130;
            }
        });
        return command;
    }

    private static List<BenchWorkload> ParseWorkloads(string[] values)
    {
        var workloads = new List<BenchWorkload>();
        foreach (var name in values.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)))
        {
            if (!Enum.TryParse<BenchWorkload>(name, ignoreCase: true, out var w) || !Enum.IsDefined(w) || char.IsDigit(name[0]))
                throw new UsageException($"--workload: unknown workload '{name}'; use ucast, fanout, latency or idle.");
            if (!workloads.Contains(w))
                workloads.Add(w);
        }
        if (workloads.Count == 0)
            throw new UsageException("--workload: name at least one of ucast, fanout, latency, idle.");
        return workloads;
    }

    private static Command CreateMesh()
    {
        var defaults = new MeshBenchOptions();
        var duration = new Option<double>("--duration") { Description = "Seconds each throughput run is measured (relay, raw UDP).", DefaultValueFactory = _ => defaults.Duration.TotalSeconds }.Within(0.1, 3600, "seconds");
        var warmup = new Option<double>("--warmup") { Description = "Seconds each run goes before it is measured.", DefaultValueFactory = _ => defaults.Warmup.TotalSeconds };
        var payloadSize = new Option<int>("--payload-size") { Description = "Bytes of each relayed message and raw datagram.", DefaultValueFactory = _ => defaults.PayloadSize };
        var window = new Option<int>("--window") { Description = "Relay run: messages the sender keeps in flight at most.", DefaultValueFactory = _ => defaults.Window }.Within(1, 1_000_000);
        var skipIperf = new Option<bool>("--skip-iperf") { Description = "Skip the iperf3 runs (direct loopback and through 3 hops)." };
        var iperfSeconds = new Option<int>("--iperf-seconds") { Description = "Seconds of each iperf3 run.", DefaultValueFactory = _ => defaults.IperfSeconds }.Within(1, 3600);
        var iperfParallel = new Option<int>("--iperf-parallel") { Description = "Streams of the extra multi-stream 3-hop iperf3 run (0 or 1 skips it).", DefaultValueFactory = _ => defaults.IperfParallel }.Within(0, 128);
        var iperf3 = new Option<string>("--iperf3") { Description = "The iperf3 executable (Debian's iperf3 is installed with apt-get when missing).", DefaultValueFactory = _ => defaults.Iperf3Path };
        var skipLatency = new Option<bool>("--skip-latency") { Description = "Skip the per-hop latency measurement." };
        var chainMtu = new Option<int?>("--chain-mtu") { Description = "MTU of the UDP interfaces of the iperf3 chain (default: loopback's largest frame; 1400 is what nodes use across the Internet)." };
        var skipVpn = new Option<bool>("--skip-vpn") { Description = "Skip iperf3 and ping through the VPN over the 3 hops (it needs root for its TUN devices)." };
        var probes = new Option<int>("--probes") { Description = "Latency: timestamped probes per route (via the relay, and direct).", DefaultValueFactory = _ => defaults.Probes }.Within(1, 1_000_000);
        var probeInterval = new Option<double>("--probe-interval") { Description = "Latency: milliseconds between probes.", DefaultValueFactory = _ => defaults.ProbeInterval.TotalMilliseconds }.Within(0.01, 10_000, "ms");
        var latencyLoad = new Option<double>("--latency-load") { Description = "Latency: background load as a fraction of the measured relay rate.", DefaultValueFactory = _ => defaults.LatencyLoad }.Within(0, 1);
        var timeout = new Option<double>("--timeout") { Description = "Seconds any one step may take (a node start, a link, an iperf3 run beyond its length).", DefaultValueFactory = _ => defaults.Timeout.TotalSeconds }.Within(1, 86_400, "seconds");
        var lossDefaults = new LossBenchOptions();
        var loss = new Option<string?>("--loss")
        {
            Description = "Instead of the rest: one forwarded stream over 3 impaired UDP hops, at each of these losses per hop (e.g. 0,0.05,0.1,0.15,0.2), beside the Mathis bound; --duration is per point.",
        };
        var duplicate = new Option<double>("--duplicate") { Description = "--loss: share of datagrams each hop duplicates.", DefaultValueFactory = _ => lossDefaults.Duplication }.Within(0, 1);
        var reorder = new Option<double>("--reorder") { Description = "--loss: share of datagrams each hop delays 1 ms more (reordering).", DefaultValueFactory = _ => lossDefaults.Reordering }.Within(0, 1);
        var delay = new Option<double>("--delay") { Description = "--loss: milliseconds each hop adds to every datagram.", DefaultValueFactory = _ => lossDefaults.Delay.TotalMilliseconds }.Within(0, 10_000, "ms");
        var mtu = new Option<int>("--mtu") { Description = "--loss: MTU of the nodes' UDP interfaces.", DefaultValueFactory = _ => lossDefaults.Mtu }.Within(576, 65_507);
        var onlyRecovery = new Option<bool>("--recovery-only") { Description = "--loss: skip the points with link recovery off." };

        var command = new Command("mesh", "Measure the mesh data plane: relay messages/s beside raw UDP datagrams/s, iperf3 through 3 hops beside direct loopback, added latency per hop; or, with --loss, throughput over lossy hops.")
        {
            duration, warmup, payloadSize, window, skipIperf, iperfSeconds, iperfParallel, iperf3, skipLatency, skipVpn, chainMtu, probes, probeInterval, latencyLoad, timeout,
            loss, duplicate, reorder, delay, mtu, onlyRecovery,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (parse.GetValue(loss) is { } losses)
            {
                LossBenchOptions lossOptions;
                try
                {
                    lossOptions = new LossBenchOptions
                    {
                        Launch = SkymeshLaunch(),
                        Losses = [.. losses.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(l =>
                            double.TryParse(l, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v)
                                ? v : throw new ArgumentException($"--loss: \"{l}\" is not a share such as 0.05."))],
                        Duplication = parse.GetValue(duplicate),
                        Reordering = parse.GetValue(reorder),
                        Delay = Seconds(parse.GetValue(delay) / 1000, "--delay"),
                        Mtu = parse.GetValue(mtu),
                        Duration = Seconds(parse.GetValue(duration), "--duration"),
                        CompareWithoutRecovery = !parse.GetValue(onlyRecovery),
                        Timeout = Seconds(parse.GetValue(timeout), "--timeout"),
                    };
                    lossOptions.Validate();
                }
                catch (ArgumentException e)
                {
                    throw new UsageException(e.Message);
                }
                using var lossSignals = CliSupport.UntilSignal(cancellationToken);
                try
                {
                    return await LossBench.RunAsync(lossOptions, Console.Out, lossSignals.Token);
                }
                catch (Exception e) when (e is BenchException or Skymesh.Node.NodeApiException or TimeoutException)
                {
                    Console.Error.WriteLine($"skymesh: {e.Message}");
                    return 1;
                }
            }
            MeshBenchOptions options;
            try
            {
                options = new MeshBenchOptions
                {
                    Launch = SkymeshLaunch(),
                    Duration = Seconds(parse.GetValue(duration), "--duration"),
                    Warmup = Seconds(parse.GetValue(warmup), "--warmup"),
                    PayloadSize = parse.GetValue(payloadSize),
                    Window = parse.GetValue(window),
                    SkipIperf = parse.GetValue(skipIperf),
                    IperfSeconds = parse.GetValue(iperfSeconds),
                    IperfParallel = parse.GetValue(iperfParallel),
                    Iperf3Path = parse.GetValue(iperf3)!,
                    SkipLatency = parse.GetValue(skipLatency),
                    SkipVpn = parse.GetValue(skipVpn),
                    ChainMtu = parse.GetValue(chainMtu),
                    Probes = parse.GetValue(probes),
                    ProbeInterval = Seconds(parse.GetValue(probeInterval) / 1000, "--probe-interval"),
                    LatencyLoad = parse.GetValue(latencyLoad),
                    Timeout = Seconds(parse.GetValue(timeout), "--timeout"),
                };
                options.Validate();
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }
            // Ctrl+C and SIGTERM cancel the run, so that every child (nodes, iperf3) is killed on the way out.
            using var signals = CliSupport.UntilSignal(cancellationToken);
            try
            {
                return await MeshBench.RunAsync(options, Console.Out, signals.Token);
            }
            catch (BenchException e)
            {
                Console.Error.WriteLine($"skymesh: {e.Message}");
                return 1;
            }
            catch (Skymesh.Node.NodeApiException e)
            {
                Console.Error.WriteLine($"skymesh: a node refused a bench step: {e.Message}");
                return 1;
            }
            catch (Skymesh.Mesh.Links.LinkFailedException e)
            {
                Console.Error.WriteLine($"skymesh: a link of the bench failed: {e.Message}");
                return 1;
            }
            catch (OperationCanceledException) when (signals.Token.IsCancellationRequested)
            {
                Console.Error.WriteLine("skymesh: benchmark interrupted.");
                return 130;
            }
        });
        return command;
    }

    private static TimeSpan Seconds(double value, string option)
    {
        if (!double.IsFinite(value) || value < 0 || value > 86_400)
            throw new UsageException($"{option} must be a number of seconds between 0 and 86400; got {value.ToString(CultureInfo.InvariantCulture)}.");
        return TimeSpan.FromSeconds(value);
    }

    /// <summary>
    /// This same program as a child process. Through <c>dotnet skymesh.dll</c> the process path is the dotnet host,
    /// so the entry assembly goes first.
    /// </summary>
    private static SkymeshLaunch SkymeshLaunch()
    {
        var host = Environment.ProcessPath ?? throw new UsageException("Cannot tell which executable is running, so cannot start `skymesh` children.");
        var prefix = new List<string>();
        if (Path.GetFileNameWithoutExtension(host).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
        {
            var entry = Path.Combine(AppContext.BaseDirectory, "skymesh.dll");
            if (!File.Exists(entry))
                throw new UsageException($"Cannot find {entry} to start `skymesh` children.");
            prefix.Add(entry);
        }
        return new SkymeshLaunch(host, prefix);
    }

    /// <summary>This same program, run as <c>skymesh broker</c> on a port of the kernel's choosing.</summary>
    private static BrokerLaunch BrokerLaunch(int? receiveBufferSize)
    {
        SkymeshLaunch launch;
        try
        {
            launch = SkymeshLaunch();
        }
        catch (UsageException e)
        {
            throw new UsageException($"{e.Message} Use --broker inproc or --target.");
        }
        var arguments = new List<string>(launch.Prefix) { "broker", "--listen", "127.0.0.1:0", "--log-level", "Information" };
        if (receiveBufferSize is { } size)
            arguments.AddRange(["--receive-buffer-size", size.ToString(CultureInfo.InvariantCulture)]);
        return new BrokerLaunch(launch.FileName, arguments);
    }
}
