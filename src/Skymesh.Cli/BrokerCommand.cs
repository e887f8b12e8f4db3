using System.CommandLine;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Cli;

internal static class BrokerCommand
{
    public static Command Create()
    {
        var listen = new Option<string>("--listen") { Description = "Address and port to listen on.", DefaultValueFactory = _ => "127.0.0.1:8787" };
        var auth = new Option<string[]>("--auth")
        {
            Description = "Login schemes offered, in order: open, secret:FILE (shared secret read from FILE), cert (TLS client certificates), key (node keys: the id is the node's address, the credential a signed timestamp). Repeat or separate with commas. The default, key,open, lets nodes log in under their proven addresses and people under any other name; an id shaped like a node address (64 lowercase hex digits) only ever logs in with key, and no login takes an id from a connection that proved more (key or cert over secret over open).",
            DefaultValueFactory = _ => ["key", "open"],
            AllowMultipleArgumentsPerToken = true,
        };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "PEM certificate of the broker; enables TLS." };
        var tlsKey = new Option<string?>("--tls-key") { Description = "PEM private key for --tls-cert." };
        var tlsCa = new Option<string?>("--tls-ca") { Description = "PEM bundle of authorities that client certificates must chain to (needed by --auth cert)." };
        var tlsSelfSigned = new Option<string?>("--tls-self-signed")
        {
            Description = "Serve TLS with a self-signed certificate kept in FILE (certificate and private key as PEM, owner-only), made on first use; plain TCP stays open on the same port. Prints the fingerprint that clients pin.",
            HelpName = "FILE",
        };
        var tlsPlaintext = new Option<bool>("--tls-plaintext") { Description = "With --tls-cert, also serve plain TCP on the same port (told apart by the first byte)." };
        var name = new Option<string>("--name")
        {
            Description = "The broker's name, which key credentials are signed for: a credential made for one broker is refused by a broker with another name.",
            DefaultValueFactory = _ => SsmpBrokerOptions.DefaultServerName,
        };
        var noAnonymous = new Option<bool>("--no-anonymous") { Description = "Refuse the anonymous identifier '.'." };
        var maxConnections = new Option<int>("--max-connections") { Description = "Connections open at once.", DefaultValueFactory = _ => 100_000 }.Within(1, 10_000_000);
        var maxSubscriptions = new Option<int>("--max-subscriptions") { Description = "Subscriptions per connection.", DefaultValueFactory = _ => 10_000 }.Within(1, 10_000_000);
        var maxQueued = new Option<int>("--max-queued-bytes") { Description = "Bytes queued towards one connection before it is dropped as a slow consumer.", DefaultValueFactory = _ => SsmpBrokerOptions.DefaultMaxQueuedBytes }.Within(1024, int.MaxValue);
        var loginTimeout = new Option<double>("--login-timeout") { Description = "Seconds a new connection has to log in.", DefaultValueFactory = _ => 10 }.Within(0.001, 86_400, "seconds");
        var pingInterval = new Option<double>("--ping-interval") { Description = "Seconds of client silence before the broker sends PING.", DefaultValueFactory = _ => 30 }.Within(0.001, 86_400, "seconds");
        var pongTimeout = new Option<double>("--pong-timeout") { Description = "Further seconds of silence after the PING before the broker closes the connection.", DefaultValueFactory = _ => 30 }.Within(0.001, 86_400, "seconds");
        var statsInterval = new Option<double>("--stats-interval") { Description = "Seconds between one-line traffic summaries; 0 for none.", DefaultValueFactory = _ => 0 }.Within(0, 86_400, "seconds");
        var receiveBuffer = new Option<int>("--receive-buffer-size") { Description = "Bytes a busy connection reads at once (an idle one holds no buffer).", DefaultValueFactory = _ => new SsmpBrokerOptions().ReceiveBufferSize }.Within(256, 64 << 20);

        var monitor = new Option<string?>("--monitor")
        {
            Description = "Serve the broker's counters over HTTP on this address (GET /stats as JSON, /metrics for Prometheus, /healthz), e.g. 127.0.0.1:8788; read them with `skymesh broker stats`. Off by default.",
            HelpName = "address:port",
        };
        var command = new Command("broker", "Run an SSMP broker until SIGINT or SIGTERM; `skymesh broker stats` reads a running one's counters.")
        {
            monitor, listen, auth, name, tlsCert, tlsKey, tlsCa, tlsSelfSigned, tlsPlaintext, noAnonymous, maxConnections, maxSubscriptions, maxQueued,
            loginTimeout, pingInterval, pongTimeout, statsInterval, receiveBuffer,
        };
        LogSettings.AddOptionsTo(command);
        command.Subcommands.Add(CreateStats());
        command.SetAction(async (parse, cancellationToken) =>
        {
            var serverName = parse.GetValue(name)!;
            if (!Skymesh.Ssmp.Codec.SsmpGrammar.IsValidId(serverName))
                throw new UsageException($"--name: '{serverName}' is not an SSMP identifier (1 to 64 of letters, digits and . : @ / _ - + = ~).");
            var options = new SsmpBrokerOptions
            {
                Listen = CliSupport.ParseEndPoint(parse.GetValue(listen)!, "--listen"),
                ServerName = serverName,
                AllowAnonymous = !parse.GetValue(noAnonymous),
                MaxConnections = parse.GetValue(maxConnections),
                MaxSubscriptionsPerConnection = parse.GetValue(maxSubscriptions),
                MaxQueuedBytesPerConnection = parse.GetValue(maxQueued),
                LoginTimeout = Seconds(parse.GetValue(loginTimeout), "--login-timeout"),
                PingInterval = Seconds(parse.GetValue(pingInterval), "--ping-interval"),
                PongTimeout = Seconds(parse.GetValue(pongTimeout), "--pong-timeout"),
                ReceiveBufferSize = parse.GetValue(receiveBuffer),
            };
            options.Tls = LoadTls(parse.GetValue(tlsCert), parse.GetValue(tlsKey), parse.GetValue(tlsCa), parse.GetValue(tlsSelfSigned), parse.GetValue(tlsPlaintext));
            foreach (var scheme in parse.GetValue(auth)!.SelectMany(a => a.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)))
                options.Authenticators.Add(ParseScheme(scheme));
            using var logging = LogSettings.From(parse).CreateFactory();
            SsmpBroker broker;
            try
            {
                broker = new SsmpBroker(options, logging);
                broker.Start();
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                throw new UsageException(CliSupport.Reason(e));
            }
            if (options.Tls is { } tls)
                Console.WriteLine($"broker tls fingerprint {BrokerCertificate.Fingerprint(tls.ServerCertificate)}");
            using var signals = CliSupport.UntilSignal(cancellationToken);
            await using (broker)
            {
                await using var monitoring = parse.GetValue(monitor) is { } address
                    ? await BrokerMonitor.StartAsync(broker, CliSupport.ParseEndPoint(address, "--monitor"), serverName)
                    : null;
                if (monitoring is not null)
                    Console.WriteLine($"monitor: http://{monitoring.EndPoint}/stats  http://{monitoring.EndPoint}/metrics");
                try
                {
                    var every = parse.GetValue(statsInterval);
                    if (every < 0 || !double.IsFinite(every))
                        throw new UsageException("--stats-interval must be 0 or a positive number of seconds.");
                    if (every == 0)
                        await Task.Delay(Timeout.Infinite, signals.Token);
                    else
                        await PrintStatsAsync(broker, TimeSpan.FromSeconds(every), signals.Token);
                }
                catch (OperationCanceledException)
                {
                }
            }
            return 0;
        });
        return command;
    }

    private static Command CreateStats()
    {
        var monitor = new Option<string>("--monitor")
        {
            Description = "The broker's monitor address, as given to `skymesh broker --monitor` (default: $SKYMESH_BROKER_MONITOR, else 127.0.0.1:8788).",
            DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SKYMESH_BROKER_MONITOR") is { Length: > 0 } env ? env : "127.0.0.1:8788",
            HelpName = "address:port",
        };
        var json = new Option<bool>("--json") { Description = "Print the monitor's JSON instead of a summary." };
        var command = new Command("stats", "Show a running broker's counters: connections, topics, traffic, queued bytes, drops.") { monitor, json };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var address = parse.GetValue(monitor)!;
            var (host, port) = CliSupport.ParseHostPort(address, "--monitor");
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            string body;
            try
            {
                body = await http.GetStringAsync(new Uri($"http://{(host.Contains(':', StringComparison.Ordinal) ? $"[{host}]" : host)}:{port}/stats"), cancellationToken);
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                throw new InvalidOperationException($"cannot reach a broker's monitor at {address}: {e.Message} (is the broker running with --monitor {address}?)", e);
            }
            if (parse.GetValue(json))
            {
                Console.WriteLine(body);
                return 0;
            }
            var stats = System.Text.Json.JsonSerializer.Deserialize<BrokerStats>(body, BrokerMonitor.Json)
                ?? throw new InvalidOperationException($"the monitor at {address} answered nothing");
            var c = stats.Counters;
            Console.WriteLine($"broker {stats.Name} on {stats.Listen}, up {TimeSpan.FromSeconds(Math.Floor(stats.UptimeSeconds))}");
            Console.WriteLine($"connections  {c.ConnectionsOpen:N0} open ({c.LoggedIn:N0} logged in), {c.ConnectionsAccepted:N0} accepted in all");
            Console.WriteLine($"topics       {c.Topics:N0}");
            Console.WriteLine($"traffic      {c.RequestsReceived:N0} requests in, {c.EventsQueued:N0} events out; {c.BytesReceived:N0} bytes in, {c.BytesSent:N0} out");
            Console.WriteLine($"queued       {c.QueuedBytes:N0} bytes towards clients now");
            Console.WriteLine($"drops        {c.DisconnectsFor(DisconnectReason.SlowConsumer):N0} slow consumers, {c.BadRequests:N0} bad requests, {c.UcastNotFound:N0} UCASTs to nobody, "
                + $"{c.DisconnectsFor(DisconnectReason.LoginRefused):N0} logins refused, {c.DisconnectsFor(DisconnectReason.ConnectionLimit):N0} over the connection limit");
            return 0;
        });
        return command;
    }

    private static async Task PrintStatsAsync(SsmpBroker broker, TimeSpan every, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(every);
        var last = broker.Snapshot();
        while (await timer.WaitForNextTickAsync(cancellationToken))
        {
            var now = broker.Snapshot();
            var seconds = every.TotalSeconds;
            var slow = now.DisconnectsFor(DisconnectReason.SlowConsumer);
            Console.WriteLine(
                $"stats: {now.ConnectionsOpen} connections, {now.Topics} topics, " +
                $"{(now.RequestsReceived - last.RequestsReceived) / seconds:0} requests/s, {(now.EventsQueued - last.EventsQueued) / seconds:0} events/s, " +
                $"{now.BadRequests} bad requests, {slow} slow consumers dropped");
            last = now;
        }
    }

    private static TimeSpan Seconds(double value, string option) =>
        value > 0 && double.IsFinite(value) ? TimeSpan.FromSeconds(value) : throw new UsageException($"{option} must be a positive number of seconds.");

    internal static ISsmpAuthenticator ParseScheme(string scheme)
    {
        if (scheme == "open")
            return new OpenAuthenticator();
        if (scheme == "cert")
            return new CertAuthenticator();
        if (scheme == "key")
            return new KeyAuthenticator();
        if (scheme.StartsWith("secret:", StringComparison.Ordinal) && scheme.Length > "secret:".Length)
        {
            try
            {
                return SecretAuthenticator.FromFile(scheme["secret:".Length..]);
            }
            catch (ArgumentException e)
            {
                throw new UsageException($"--auth: {CliSupport.Reason(e)}");
            }
        }
        throw new UsageException($"--auth: unknown scheme '{scheme}'; use open, secret:FILE, cert or key.");
    }

    private static SsmpTlsOptions? LoadTls(string? certPath, string? keyPath, string? caPath, string? selfSignedPath, bool plaintext)
    {
        if (selfSignedPath is not null && (certPath is not null || keyPath is not null))
            throw new UsageException("--tls-self-signed makes its own certificate: give it without --tls-cert and --tls-key.");
        if (certPath is null && selfSignedPath is null)
        {
            if (keyPath is not null || caPath is not null)
                throw new UsageException("--tls-key and --tls-ca need --tls-cert (or, for --tls-ca, --tls-self-signed).");
            if (plaintext)
                throw new UsageException("--tls-plaintext needs --tls-cert: without TLS every connection is plain already.");
            return null;
        }
        try
        {
            X509Certificate2 certificate;
            if (selfSignedPath is not null)
            {
                try
                {
                    certificate = BrokerCertificate.LoadOrCreate(selfSignedPath);
                }
                catch (BrokerCertificateException e)
                {
                    throw new UsageException($"--tls-self-signed: {e.Message}");
                }
                // A self-signed broker is for clients that pin it, beside plain ones on the same port.
                plaintext = true;
            }
            else
            {
                certificate = X509Certificate2.CreateFromPemFile(certPath!, keyPath);
            }
            X509Certificate2Collection? authorities = null;
            if (caPath is not null)
            {
                authorities = [];
                authorities.ImportFromPemFile(caPath);
                if (authorities.Count == 0)
                    throw new UsageException($"--tls-ca: '{caPath}' holds no certificate.");
            }
            return new SsmpTlsOptions { ServerCertificate = certificate, ClientCertificateAuthorities = authorities, AllowPlaintext = plaintext };
        }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"Cannot load the TLS certificate or key: {e.Message}");
        }
    }
}
