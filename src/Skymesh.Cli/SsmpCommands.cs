using System.CommandLine;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Skymesh.Identity;
using Skymesh.Ssmp.Client;
using Skymesh.Ssmp.Codec;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Cli;

/// <summary>
/// <c>skymesh ssmp pub|sub|ucast|bcast|req</c>: a small SSMP client for people and scripts, to watch a topic, send a
/// message or call a service on any SSMP broker.
/// </summary>
internal static class SsmpCommands
{
    private static readonly Option<string> Server = new("--server", "-s")
    {
        Description = "The broker, HOST:PORT (default: $SKYMESH_BROKER, else 127.0.0.1:8787).",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SKYMESH_BROKER") is { Length: > 0 } env ? env : "127.0.0.1:8787",
        HelpName = "host:port",
    };

    private static readonly Option<string?> Id = new("--id")
    {
        Description = "The id to log in as (default: cli- and 8 random hex digits; with --key, the key's node address).",
    };

    private static readonly Option<string?> Secret = new("--secret")
    {
        Description = "Log in with the secret scheme, the shared secret read from this file.",
        HelpName = "file",
    };

    private static readonly Option<string?> Key = new("--key")
    {
        Description = "Log in with the key scheme as the node whose key file this is (e.g. a node's node.key).",
        HelpName = "file",
    };

    private static readonly Option<string> Name = new("--name")
    {
        Description = "The broker's name, which a key login is signed for (its --name).",
        DefaultValueFactory = _ => Ssmp.Broker.SsmpBrokerOptions.DefaultServerName,
    };

    private static readonly Option<bool> Tls = new("--tls") { Description = "Connect with TLS, checking the broker's certificate against the system's authorities." };

    private static readonly Option<string?> TlsCa = new("--tls-ca")
    {
        Description = "Connect with TLS, checking the broker's certificate against the authorities in this PEM file.",
        HelpName = "file",
    };

    private static readonly Option<bool> Json = new("--json") { Description = "Print one JSON object per line." };

    public static Command Create()
    {
        var command = new Command("ssmp", "A small SSMP client: watch topics, publish, send to one client, call a service.");
        command.Subcommands.Add(CreateSub());
        command.Subcommands.Add(CreatePub());
        command.Subcommands.Add(CreateUcast());
        command.Subcommands.Add(CreateBcast());
        command.Subcommands.Add(CreateReq());
        return command;
    }

    private static Command WithConnection(Command command)
    {
        foreach (var option in new Option[] { Server, Id, Secret, Key, Name, Tls, TlsCa })
            command.Options.Add(option);
        return command;
    }

    private static Argument<string> MessageArgument() => new("message")
    {
        Description = "The payload as UTF-8 text, 1 to 1024 bytes; '-' sends each line read from standard input as one message.",
    };

    private static Command CreateSub()
    {
        var topics = new Argument<string[]>("topic") { Description = "The topics to subscribe to.", Arity = ArgumentArity.OneOrMore };
        var presence = new Option<bool>("--presence") { Description = "Also show who subscribes and unsubscribes (first every current subscriber)." };
        var count = new Option<int>("--count", "-c") { Description = "Stop after this many messages; 0 runs until Ctrl+C.", DefaultValueFactory = _ => 0 }.Within(0, int.MaxValue);
        var command = WithConnection(new Command("sub", "Subscribe to topics and print what arrives — MCAST, BCAST, UCASTs to this id and, with --presence, who comes and goes — one line each.")
        {
            topics, presence, count, Json,
        });
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var signals = CliSupport.UntilSignal(cancellationToken);
            await using var client = await ConnectAsync(parse, signals.Token);
            foreach (var topic in parse.GetValue(topics)!)
            {
                CheckTopic(topic);
                await client.SubscribeAsync(topic, parse.GetValue(presence), signals.Token);
            }
            Console.Error.WriteLine($"skymesh: subscribed as {client.Id} to {string.Join(", ", parse.GetValue(topics)!)} (Ctrl+C to stop)");
            var json = parse.GetValue(Json);
            var wanted = parse.GetValue(count);
            var seen = 0;
            try
            {
                await foreach (var e in client.Events.ReadAllAsync(signals.Token))
                {
                    Console.WriteLine(json ? JsonLine(e) : TextLine(e));
                    if (!e.Presence && ++seen == wanted)
                        break;
                }
            }
            catch (OperationCanceledException) when (signals.Token.IsCancellationRequested)
            {
            }
            return 0;
        });
        return command;
    }

    private static Command CreatePub()
    {
        var topic = new Argument<string>("topic") { Description = "The topic to publish on (its subscribers but the sender get it)." };
        var message = MessageArgument();
        var command = WithConnection(new Command("pub", "Publish a message on a topic (MCAST).") { topic, message });
        command.SetAction(async (parse, cancellationToken) =>
        {
            var name = parse.GetValue(topic)!;
            CheckTopic(name);
            await using var client = await ConnectAsync(parse, cancellationToken);
            var sent = await SendAllAsync(parse.GetValue(message)!, payload => client.McastAsync(name, payload, cancellationToken), cancellationToken);
            Console.Error.WriteLine($"skymesh: published {sent} message(s) on {name}");
            return 0;
        });
        return command;
    }

    private static Command CreateUcast()
    {
        var to = new Argument<string>("to") { Description = "The id of the client to send to." };
        var message = MessageArgument();
        var command = WithConnection(new Command("ucast", "Send a message to one client by its id (UCAST); fails if it is not connected.") { to, message });
        command.SetAction(async (parse, cancellationToken) =>
        {
            var recipient = parse.GetValue(to)!;
            if (!SsmpGrammar.IsValidId(recipient) || recipient == ".")
                throw new UsageException($"<to>: '{recipient}' is not an SSMP id (1 to 64 of letters, digits and . : @ / _ - + = ~).");
            await using var client = await ConnectAsync(parse, cancellationToken);
            var sent = await SendAllAsync(parse.GetValue(message)!, payload => client.UcastAsync(recipient, payload, cancellationToken), cancellationToken);
            Console.Error.WriteLine($"skymesh: sent {sent} message(s) to {recipient}");
            return 0;
        });
        return command;
    }

    private static Command CreateBcast()
    {
        var message = MessageArgument();
        var topics = new Option<string[]>("--topic") { Description = "Topics to subscribe to first: BCAST reaches every client sharing a topic with the sender.", Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = true, Required = true };
        var command = WithConnection(new Command("bcast", "Send a message to every client that shares a topic with this one (BCAST).") { message, topics });
        command.SetAction(async (parse, cancellationToken) =>
        {
            await using var client = await ConnectAsync(parse, cancellationToken);
            foreach (var topic in parse.GetValue(topics)!)
            {
                CheckTopic(topic);
                await client.SubscribeAsync(topic, cancellationToken: cancellationToken);
            }
            var sent = await SendAllAsync(parse.GetValue(message)!, payload => client.BcastAsync(payload, cancellationToken), cancellationToken);
            Console.Error.WriteLine($"skymesh: broadcast {sent} message(s)");
            return 0;
        });
        return command;
    }

    private static Command CreateReq()
    {
        var to = new Argument<string>("to") { Description = "The id of the service to call." };
        var method = new Argument<string>("method") { Description = "The method (1 to 64 SSMP identifier characters)." };
        var body = new Argument<string?>("body") { Description = "The request body as UTF-8 text ('-' reads all of standard input); empty when left out.", Arity = ArgumentArity.ZeroOrOne };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for each attempt's answer.", DefaultValueFactory = _ => 2 }.Within(0.01, 600, "seconds");
        var attempts = new Option<int>("--attempts") { Description = "Attempts in all (a retry re-sends the same request id, so the service runs it once).", DefaultValueFactory = _ => 3 }.Within(1, 100);
        var command = WithConnection(new Command("req", "Call a service over SSMP (docs/ssmp-rpc.md) and print its answer.") { to, method, body, timeout, attempts, Json });
        command.SetAction(async (parse, cancellationToken) =>
        {
            var name = parse.GetValue(method)!;
            if (name.Length is < 1 or > 64 || !SsmpGrammar.IsValidId(name))
                throw new UsageException($"<method>: '{name}' is not a method name (1 to 64 of letters, digits and . : @ / _ - + = ~).");
            var text = parse.GetValue(body) switch
            {
                null => "",
                "-" => await Console.In.ReadToEndAsync(cancellationToken),
                var given => given,
            };
            var options = ClientOptions(parse);
            await using var peer = await ConnectGuardedAsync(() => SsmpPeer.ConnectAsync(options, cancellationToken: cancellationToken), options);
            var call = new SsmpCallOptions { AttemptTimeout = TimeSpan.FromSeconds(parse.GetValue(timeout)), Attempts = parse.GetValue(attempts) };
            try
            {
                var answer = await peer.CallAsync(parse.GetValue(to)!, name, Encoding.UTF8.GetBytes(text), call, cancellationToken);
                if (parse.GetValue(Json))
                    Console.WriteLine(JsonSerializer.Serialize(new { status = 0, body = Encoding.UTF8.GetString(answer.Span) }));
                else
                    Console.WriteLine(Encoding.UTF8.GetString(answer.Span));
                return 0;
            }
            catch (SsmpRpcException e)
            {
                if (parse.GetValue(Json))
                    Console.WriteLine(JsonSerializer.Serialize(new { status = e.Status, error = e.Message }));
                throw new InvalidOperationException($"{parse.GetValue(to)} {name}: {e.Status} {e.Message}", e);
            }
        });
        return command;
    }

    private static async Task<int> SendAllAsync(string message, Func<byte[], Task> send, CancellationToken cancellationToken)
    {
        if (message != "-")
        {
            await send(Payload(message));
            return 1;
        }
        var sent = 0;
        while (await Console.In.ReadLineAsync(cancellationToken) is { } line)
        {
            if (line.Length == 0)
                continue;
            await send(Payload(line));
            sent++;
        }
        return sent;
    }

    private static byte[] Payload(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        if (bytes.Length is < 1 or > SsmpGrammar.MaxPayloadLength)
            throw new UsageException($"a message is 1 to {SsmpGrammar.MaxPayloadLength} bytes in SSMP, not {bytes.Length}; larger ones go through `skymesh ssmp req` (docs/ssmp-rpc.md)");
        return bytes;
    }

    private static void CheckTopic(string topic)
    {
        if (!SsmpGrammar.IsValidId(topic) || topic == ".")
            throw new UsageException($"'{topic}' is not a topic name (1 to 64 of letters, digits and . : @ / _ - + = ~).");
    }

    private static async Task<SsmpClient> ConnectAsync(ParseResult parse, CancellationToken cancellationToken)
    {
        var options = ClientOptions(parse);
        return await ConnectGuardedAsync(() => SsmpClient.ConnectAsync(options, cancellationToken), options);
    }

    private static async Task<T> ConnectGuardedAsync<T>(Func<Task<T>> connect, SsmpClientOptions options)
    {
        try
        {
            return await connect();
        }
        catch (Exception e) when (e is SsmpException or System.Net.Sockets.SocketException or IOException or TimeoutException or System.Security.Authentication.AuthenticationException)
        {
            throw new InvalidOperationException($"cannot log into the SSMP broker at {options.Host}:{options.Port} as {(options.Key is { } k ? k.Address.ToString() : options.Id)}: {e.Message}", e);
        }
    }

    private static SsmpClientOptions ClientOptions(ParseResult parse)
    {
        var (host, port) = CliSupport.ParseHostPort(parse.GetValue(Server)!, "--server");
        var options = new SsmpClientOptions
        {
            Host = host,
            Port = port,
            Id = parse.GetValue(Id) ?? $"cli-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}",
            Reconnect = false,
            ServerName = parse.GetValue(Name)!,
        };
        if (options.Id != "." && !SsmpGrammar.IsValidId(options.Id))
            throw new UsageException($"--id: '{options.Id}' is not an SSMP id (1 to 64 of letters, digits and . : @ / _ - + = ~).");
        if (parse.GetValue(Secret) is { } secretFile)
        {
            if (parse.GetValue(Key) is not null)
                throw new UsageException("--secret and --key are two ways to log in; give one.");
            options.Scheme = "secret";
            try
            {
                options.Credential = Ssmp.Broker.SecretAuthenticator.ReadSecretFile(secretFile);
            }
            catch (ArgumentException e)
            {
                throw new UsageException($"--secret: {CliSupport.Reason(e)}");
            }
        }
        else if (parse.GetValue(Key) is { } keyFile)
        {
            options.Key = NodeKeyFile.Load(keyFile);
            options.Scheme = "key";
            options.Id = parse.GetValue(Id) ?? "";
        }
        if (parse.GetValue(TlsCa) is { } caFile)
            options.Tls = TlsWithAuthorities(host, caFile);
        else if (parse.GetValue(Tls))
            options.Tls = new SslClientAuthenticationOptions { TargetHost = host };
        return options;
    }

    private static SslClientAuthenticationOptions TlsWithAuthorities(string host, string caFile)
    {
        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(caFile);
        }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--tls-ca: cannot read '{caFile}': {e.Message}");
        }
        if (authorities.Count == 0)
            throw new UsageException($"--tls-ca: '{caFile}' holds no certificate.");
        return new SslClientAuthenticationOptions
        {
            TargetHost = host,
            CertificateChainPolicy = Policy(authorities),
        };

        static X509ChainPolicy Policy(X509Certificate2Collection authorities)
        {
            var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust };
            policy.CustomTrustStore.AddRange(authorities);
            return policy;
        }
    }

    private static string TextLine(SsmpEvent e)
    {
        var payload = e.Payload.IsEmpty ? "" : " " + Printable(e.Payload.Span);
        return e.Target is null ? $"{e.From} {e.VerbToken}{payload}" : $"{e.From} {e.VerbToken} {e.Target}{payload}";
    }

    private static string JsonLine(SsmpEvent e)
    {
        var text = IsText(e.Payload.Span);
        return JsonSerializer.Serialize(new EventLine(e.From, e.VerbToken, e.Target, e.Presence,
            text ? Encoding.UTF8.GetString(e.Payload.Span) : null, text ? null : Convert.ToHexStringLower(e.Payload.Span)), EventLineJson.Default.EventLine);
    }

    /// <summary>A payload as one printable line: its text when it is UTF-8 without control characters, else hex.</summary>
    private static string Printable(ReadOnlySpan<byte> payload) => IsText(payload) ? Encoding.UTF8.GetString(payload) : "hex:" + Convert.ToHexStringLower(payload);

    private static bool IsText(ReadOnlySpan<byte> payload)
    {
        if (!System.Text.Unicode.Utf8.IsValid(payload))
            return false;
        foreach (var b in payload)
        {
            if (b < 0x20 && b != (byte)'\t')
                return false;
        }
        return true;
    }
}

internal sealed record EventLine(string From, string Verb, string? Target, bool Presence, string? Payload, string? PayloadHex);

[System.Text.Json.Serialization.JsonSerializable(typeof(EventLine))]
[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
internal sealed partial class EventLineJson : System.Text.Json.Serialization.JsonSerializerContext;
