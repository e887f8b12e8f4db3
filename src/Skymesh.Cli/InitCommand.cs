using System.CommandLine;
using System.Net;
using Skymesh.Identity;
using Skymesh.Node;

namespace Skymesh.Cli;

/// <summary><c>skymesh init</c> and <c>skymesh address</c>: a first node in one command, and its address without starting it.</summary>
internal static class InitCommand
{
    public static IEnumerable<Command> Create() => [CreateInit(), CreateAddress()];

    private static Command CreateInit()
    {
        var dataDir = new Option<string>("--data-dir") { Description = "Directory for node.json and the key (created if needed).", DefaultValueFactory = _ => "." };
        var listen = new Option<string>("--listen") { Description = "UDP address and port of the node's interface.", DefaultValueFactory = _ => "0.0.0.0:7400" };
        var api = new Option<string>("--api") { Description = "Address and port of the local API (keep it on loopback).", DefaultValueFactory = _ => "127.0.0.1:7300" };
        var broker = new Option<string?>("--broker") { Description = "SSMP broker of the control plane (HOST:PORT); without it the node has no control agent." };
        var json = new Option<bool>("--json") { Description = "Print the node's address and the files written as JSON." };
        var command = new Command("init", "Write a commented node.json with sensible defaults and create the node's key; refuses to overwrite either.")
        {
            dataDir, listen, api, broker, json,
        };
        command.SetAction(parse =>
        {
            var dir = Path.GetFullPath(parse.GetValue(dataDir)!);
            var config = Path.Combine(dir, "node.json");
            var keyFile = Path.Combine(dir, "node.key");
            Endpoint(parse.GetValue(listen)!, "--listen");
            Endpoint(parse.GetValue(api)!, "--api");
            var brokerAddress = parse.GetValue(broker);
            if (brokerAddress is not null && !IsHostPort(brokerAddress))
                throw new UsageException($"--broker: '{brokerAddress}' is not HOST:PORT with a port from 1 to 65535.");
            if (File.Exists(config))
                throw new UsageException($"{config} exists; init never overwrites it (remove it first, or use --data-dir).");
            if (File.Exists(keyFile) || Directory.Exists(keyFile))
                throw new UsageException($"{keyFile} exists; init never overwrites a key (it is the node's identity).");
            try
            {
                Directory.CreateDirectory(dir);
                using var key = NodeKeyFile.LoadOrCreate(keyFile, out _);
                File.WriteAllText(config, Template(parse.GetValue(listen)!, parse.GetValue(api)!, brokerAddress));
                // The configuration as written must be one the node accepts.
                NodeOptions.Load(config);
                if (parse.GetValue(json))
                {
                    Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new { address = key.Address.ToString(), config, key = keyFile }, NodeApi.Json));
                    return 0;
                }
                Console.WriteLine($"node {key.Address}");
                Console.WriteLine($"  wrote {config} and {keyFile} (owner-only)");
                Console.WriteLine($"  start it: skymesh node --config {config}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or NodeKeyFileException or NodeConfigException)
            {
                throw new UsageException(CliSupport.Reason(e));
            }
            return 0;
        });
        return command;
    }

    private static Command CreateAddress()
    {
        var dataDir = new Option<string?>("--data-dir") { Description = "The node's data directory (its node.key)." };
        var config = new Option<string?>("--config") { Description = "The node's node.json (its dataDir holds node.key); node.json here when neither is given." };
        var json = new Option<bool>("--json") { Description = "Print {\"address\": …} instead of the bare address." };
        var command = new Command("address", "Print a node's address from its key, without starting it.") { dataDir, config, json };
        command.SetAction(parse =>
        {
            string keyFile;
            try
            {
                keyFile = parse.GetValue(dataDir) is { } dir
                    ? Path.Combine(Path.GetFullPath(dir), "node.key")
                    : NodeOptions.Load(parse.GetValue(config) ?? "node.json").KeyFile;
            }
            catch (NodeConfigException e)
            {
                throw new UsageException($"{parse.GetValue(config) ?? "node.json"}: {e.Message}");
            }
            try
            {
                using var key = NodeKeyFile.Load(keyFile);
                Console.WriteLine(parse.GetValue(json) ? System.Text.Json.JsonSerializer.Serialize(new { address = key.Address.ToString() }, NodeApi.Json) : key.Address.ToString());
            }
            catch (NodeKeyFileException e)
            {
                throw new UsageException(e.Message + (File.Exists(keyFile) ? "" : " (skymesh init creates one)"));
            }
            return 0;
        });
        return command;
    }

    private static bool IsHostPort(string value)
    {
        var colon = value.LastIndexOf(':');
        return colon > 0 && int.TryParse(value.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port)
            && port is > 0 and <= 65535 && !value.AsSpan(0, colon).ContainsAny(" \"\\");
    }

    private static void Endpoint(string value, string option)
    {
        if (!IPEndPoint.TryParse(value, out var endPoint) || endPoint.Port == 0 || !value.Contains(':', StringComparison.Ordinal))
            throw new UsageException($"{option}: '{value}' is not ADDRESS:PORT with a port from 1 to 65535.");
    }

    private static string Template(string listen, string api, string? broker) => $$"""
        // A Skymesh node (docs/node.md has every field). Start it with: skymesh node --config node.json
        {
          // The local API and /metrics; keep it on loopback. Its token is created at first start (api.token, owner-only).
          "api": "{{api}}",

          // The SSMP broker of the control plane, for announcements, paths and repair. Without one the node still
          // forwards, on paths made by hand (skymesh path static).
          {{(broker is null ? "// \"broker\": \"127.0.0.1:8787\"," : $"\"broker\": \"{broker}\",")}}

          // Where the node meets its neighbours. Add more (UDP or TCP) as needed.
          "interfaces": [
            { "name": "lan", "type": "udp", "listen": "{{listen}}", "mtu": 1400 }
          ],

          // Static neighbours, linked at start and relinked when a link drops. A neighbour's address comes from
          // `skymesh address` on its machine, e.g.
          //   { "address": "<64 hex digits>", "endpoint": "192.0.2.7:7400", "interface": "lan" }
          "peers": [],

          // Where this node lets paths out to ordinary TCP (an exit): e.g. "127.0.0.1:*". None by default.
          "exits": [],

          // What this node charges to forward one MiB (micro-units); 0 forwards for free.
          "price": 0
        }

        """;
}
