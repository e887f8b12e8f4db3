using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Skymesh.EndToEnd.Tests;

/// <summary>
/// A node (no broker) and the files the bad inputs need: keys that are unsafe, corrupt or a directory, configurations
/// with one wrong field each. Shared by every case of <see cref="BadInputTests"/>.
/// </summary>
public sealed class BadInputWorld : IAsyncLifetime
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("skymesh-bad-").FullName;

    public string Api { get; private set; } = "";

    public string Address { get; private set; } = "";

    /// <summary>A node that exists (its key was made) but that the running node has never heard of.</summary>
    public string Other { get; private set; } = "";

    private Skymesh? _node;

    public async ValueTask InitializeAsync()
    {
        var (code, output) = await Skymesh.RunAsync("init", "--data-dir", Path.Combine(Dir, "good"), "--listen", $"127.0.0.1:{FreePort(SocketType.Dgram)}", "--api", $"127.0.0.1:{FreePort(SocketType.Stream)}");
        Assert.True(code == 0, output);
        var good = Path.Combine(Dir, "good");
        var (otherCode, other) = await Skymesh.RunAsync("init", "--data-dir", Path.Combine(Dir, "otherkey"), "--json");
        Assert.True(otherCode == 0, other);
        Other = Regex.Match(other, "\"address\":\"([0-9a-f]{64})\"").Groups[1].Value;
        Assert.Equal(64, Other.Length);
        var goodConfig = File.ReadAllText(Path.Combine(good, "node.json"));
        Api = Regex.Match(goodConfig, "\"api\": \"([^\"]+)\"").Groups[1].Value;

        // Copies of the good node with one thing wrong each; their ports are never bound (each stops before).
        Variant("key644", goodConfig, key =>
        {
            if (!OperatingSystem.IsWindows())
                File.SetUnixFileMode(key, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        });
        Variant("keycorrupt", goodConfig, key => File.WriteAllText(key, "not a key\n"));
        Variant("keydir", goodConfig, key =>
        {
            File.Delete(key);
            Directory.CreateDirectory(key);
        });
        Config("datadirfile", First(goodConfig, "{", "{ \"dataDir\": \"node.json\","));
        Config("datadirunder", First(goodConfig, "{", "{ \"dataDir\": \"node.json/below\","));
        Config("deadafter", First(goodConfig, "{", "{ \"deadAfterSeconds\": 0,"));
        Config("price", goodConfig.Replace("\"price\": 0", "\"price\": -3", StringComparison.Ordinal));
        Config("mtu", goodConfig.Replace("\"mtu\": 1400", "\"mtu\": \"big\"", StringComparison.Ordinal));
        Config("settlenone", First(goodConfig, "{", "{ \"settlement\": { \"asset\": \"SKY\" },"));
        Config("settlelimit", First(goodConfig, "{", "{ \"settlement\": { \"exchange\": \"ex\", \"limit\": -1 },"));
        Config("settlefile", First(goodConfig, "{", "{ \"settlement\": { \"exchange\": \"node.json\" },"));
        Config("settleasset", First(goodConfig, "{", "{ \"settlement\": { \"exchange\": \"ex\", \"asset\": \"DOGE\" },"));
        Directory.CreateDirectory(Path.Combine(Dir, "empty"));

        _node = Skymesh.Start("node", "--config", Path.Combine(good, "node.json"));
        var line = await _node.WaitForLineAsync("node ", TimeSpan.FromSeconds(60));
        while (!line.StartsWith("node ", StringComparison.Ordinal))
            line = await _node.WaitForLineAsync("node ", TimeSpan.FromSeconds(60));
        Address = line.Split(' ')[1];
        await _node.WaitForLineAsync("local API:", TimeSpan.FromSeconds(60));
    }

    private static string First(string text, string what, string with)
    {
        var at = text.IndexOf(what, StringComparison.Ordinal);
        return text[..at] + with + text[(at + what.Length)..];
    }

    private void Variant(string name, string config, Action<string> spoilKey)
    {
        var dir = Config(name, config);
        File.Copy(Path.Combine(Dir, "good", "node.key"), Path.Combine(dir, "node.key"));
        spoilKey(Path.Combine(dir, "node.key"));
    }

    private string Config(string name, string config)
    {
        var dir = Path.Combine(Dir, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "node.json"), config);
        return dir;
    }

    public static int FreePort(SocketType type)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, type, type == SocketType.Stream ? ProtocolType.Tcp : ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    public async ValueTask DisposeAsync()
    {
        if (_node is not null)
            await _node.DisposeAsync();
        Directory.Delete(Dir, recursive: true);
    }
}

/// <summary>Bad input anywhere — arguments, configuration, key files, requests the node refuses — gives one line and an exit code, never a stack trace.</summary>
public sealed class BadInputTests(BadInputWorld world) : IClassFixture<BadInputWorld>
{
    public static TheoryData<string, int, string> Cases => new()
    {
        // The node's own files.
        { "node --config {dir}/key644/node.json", 2, "chmod 600" },
        { "node --config {dir}/keycorrupt/node.json", 2, "it is not a Skymesh node key" },
        { "node --config {dir}/keydir/node.json", 2, "is a directory, not a file" },
        { "node --config {dir}/datadirfile/node.json", 2, "$.dataDir: " },
        { "node --config {dir}/datadirunder/node.json", 2, "$.dataDir: cannot create the data directory" },
        { "node --config {dir}/deadafter/node.json", 2, "$.deadAfterSeconds: must be more than 0 and at most 86400 seconds, not 0" },
        { "node --config {dir}/price/node.json", 2, "$.price: must be a whole number from 0 to 4294967295" },
        { "node --config {dir}/mtu/node.json", 2, "$.interfaces[0].mtu: must be a whole number" },
        { "node --config {dir}/missing.json", 2, "Cannot read the node configuration" },
        { "node --config {dir}/settlenone/node.json", 2, "$.settlement.exchange: must name the exchange's directory" },
        { "node --config {dir}/settlelimit/node.json", 2, "$.settlement.limit: must be positive" },
        { "node --config {dir}/settlefile/node.json", 2, "$.settlement.exchange: cannot open the exchange in" },
        { "node --config {dir}/settleasset/node.json", 2, "$.settlement.asset: cannot settle on the exchange in" },
        { "node --config {dir}/good/node.json --log-level Loud", 2, "--log-level: 'Loud' is not one of trace, debug, information, warning, error, critical, none." },
        { "node --config {dir}/good/node.json --log-file {dir}/nowhere/log.txt", 2, "--log-file: cannot open" },
        { "address --data-dir {dir}/empty", 2, "skymesh init creates one" },
        { "init --data-dir {dir}/new1 --api 127.0.0.1:99999", 2, "--api: '127.0.0.1:99999' is not ADDRESS:PORT" },
        { "init --data-dir {dir}/new2 --api 127.0.0.1", 2, "--api: '127.0.0.1' is not ADDRESS:PORT" },
        { "init --data-dir {dir}/good", 2, "init never overwrites it" },

        // Arguments, before any node is asked.
        { "nosuchcmd", 2, "Unrecognized command or argument 'nosuchcmd'" },
        { "status --api 127.0.0.1", 2, "--api: '127.0.0.1' is not HOST:PORT" },
        { "status --api 127.0.0.1:99999", 2, "--api: '127.0.0.1:99999' is not HOST:PORT" },
        { "ping {other} -c -1", 2, "--count: -1 is not from 0 to" },
        { "ping {other} -c abc", 2, "--count: 'abc' is not a whole number." },
        { "ping {other} --timeout 0", 2, "--timeout: 0 is not from 0.001 to 60 seconds." },
        { "ping {other} -s 5", 2, "--size: 5 is not from 9 to 65535." },
        { "traceroute {other} -q 0", 2, "--probes: 0 is not from 1 to 10." },
        { "path open {other} --max-hops 0", 2, "--max-hops: 0 is not from 1 to 16." },
        { "path remove abc", 2, "<id>: 'abc' is not a whole number." },
        { "events --after -1", 2, "--after: -1 is not from 0 to" },
        { "broker --listen 127.0.0.1:99999", 2, "--listen: '127.0.0.1:99999' is not an address:port" },
        { "broker --max-connections 0", 2, "--max-connections: 0 is not from 1 to" },
        { "completion tcsh", 2, "tcsh" },
        { "ssmp pub \"no spaces\" hi", 2, "'no spaces' is not a topic name" },
        { "demo --nodes 11", 2, "--nodes: 11 is not from 2 to 10." },
        { "exchange ledger deposit --dir {dir}/ex --owner alice --amount 1.0000001", 2, "--amount: '1.0000001' is not a positive amount of SKY with at most 6 decimal places." },
        { "exchange ledger deposit --dir {dir}/ex --owner alice --amount 1 --asset DOGE", 2, "--asset: this exchange has no DOGE" },
        { "exchange ledger withdraw --dir {dir}/ex --owner alice --amount 1", 1, "refused: alice has only 0.000000 SKY available" },
        { "exchange ledger balances --dir {dir}/good/node.json", 1, "node.json" },
        { "exchange serve --dir {dir}/served --btc-rpc not-a-url", 2, "--btc-rpc: 'not-a-url' is not a URL." },
        { "exchange serve --dir {dir}/served --confirmations SKY=zero", 2, "--confirmations: 'zero' is not a valid value for SKY." },
        { "exchange serve --dir {dir}/served --operator nobody", 2, "--operator: 'nobody' is not an account address (64 hex digits)." },
        { "exchange order buy 1 SKY/BTC --price 0.001 --broker 127.0.0.1:1", 1, "cannot log into the SSMP broker at 127.0.0.1:1" },

        // Requests the running node refuses, and services that are not there.
        { "links add notanendpoint --api {api}", 2, "\"endpoint\": \"notanendpoint\" is not an address:port" },
        { "links add 127.0.0.1:9 --peer xyz --api {api}", 2, "\"peer\": \"xyz\" is not a node address" },
        { "socks --listen 127.0.0.1:99999 --exit {other} --api {api}", 2, "\"listen\"" },
        { "socks --exit auto --api {api}", 2, "no control plane to hear them" },
        { "socks --exit {other} --max-price 5 --api {api}", 2, "--max-price: caps what --exit auto may pick" },
        { "services --api {api}", 2, "this node has no control plane" },
        { "services --kind ftp --api {api}", 2, "ftp" },
        { "settings --services nope --api {api}", 2, "--services: not a JSON list of services" },
        { "settings --services [{\"kind\":\"app\",\"name\":\"web\"}] --api {api}", 2, "services[0].port: is missing" },
        { "ping {self} -c 1 --api {api}", 2, "is this node itself" },
        { "ping {other} -c 1 --api {api}", 2, "no control plane to open one" },
        { "forward --listen 127.0.0.1:0 --to {other} --target 127.0.0.1:80 --api {api}", 2, "no control plane to open one" },
        { "path open {other} --api {api}", 2, "this node has no control plane" },
        { "labels reserve --link 9 --api {api}", 2, "no link 9" },
        { "path remove 99 --api {api}", 2, "no path 99" },
        { "status --api {api} --token wrong", 2, "token" },
        { "status --api 127.0.0.1:1", 1, "Cannot reach the node's local API at 127.0.0.1:1" },
        { "broker stats --monitor 127.0.0.1:1", 1, "cannot reach a broker's monitor at 127.0.0.1:1" },
        { "ssmp pub news hi --server 127.0.0.1:1", 1, "cannot log into the SSMP broker at 127.0.0.1:1" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Bad_input_gives_one_line_and_the_exit_code(string arguments, int code, string expected)
    {
        var args = Split(arguments.Replace("{dir}", world.Dir, StringComparison.Ordinal)
            .Replace("{api}", world.Api, StringComparison.Ordinal)
            .Replace("{self}", world.Address, StringComparison.Ordinal)
            .Replace("{other}", world.Other, StringComparison.Ordinal));
        var (exit, output) = await Skymesh.RunAsync(args);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.True(lines.Length == 1, $"expected one line from skymesh {arguments}, got:\n{output}");
        Assert.StartsWith("skymesh: ", lines[0], StringComparison.Ordinal);
        Assert.Contains(expected, lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter '", lines[0], StringComparison.Ordinal);
        Assert.Equal(code, exit);
    }

    /// <summary>Splits a command line on spaces, keeping "quoted words" together.</summary>
    private static string[] Split(string line) =>
        [.. Regex.Matches(line, "\"([^\"]*)\"|(\\S+)").Select(m => m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value)];
}

/// <summary>The program's help: every command documented, no option listed twice.</summary>
public sealed class HelpTests
{
    private static IEnumerable<Command> All(Command command) => command.Subcommands.SelectMany(All).Prepend(command);

    [Fact]
    public void No_help_lists_an_option_twice()
    {
        var root = global::Skymesh.Cli.SkymeshProgram.CreateRoot();
        foreach (var command in All(root))
        {
            var output = new StringWriter();
            var path = new List<string>();
            for (var c = command; c is not null && c != root; c = c.Parents.OfType<Command>().FirstOrDefault())
                path.Insert(0, c.Name);
            var parse = root.Parse([.. path, "--help"]);
            parse.Invoke(new InvocationConfiguration { Output = output });
            var options = output.ToString().Split('\n')
                .SkipWhile(l => !l.StartsWith("Options:", StringComparison.Ordinal)).Skip(1)
                .TakeWhile(l => l.StartsWith("  ", StringComparison.Ordinal))
                .Select(l => l.Trim().Split(' ')[0].TrimEnd(','))
                .Where(o => o.StartsWith('-'))
                .ToList();
            var twice = options.GroupBy(o => o).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
            Assert.True(twice.Count == 0, $"skymesh {string.Join(' ', path)} --help lists {string.Join(", ", twice)} more than once:\n{output}");
            Assert.False(string.IsNullOrWhiteSpace(command.Description), $"skymesh {string.Join(' ', path)} has no description");
        }
    }
}

/// <summary>The documents a user reads: every relative link in the README and docs/ leads somewhere that exists.</summary>
public sealed partial class DocumentLinkTests
{
    [Fact]
    public void Every_relative_link_in_the_readme_and_docs_resolves_and_so_does_its_anchor()
    {
        var root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Skymesh.slnx")))
            root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("not inside the repository");
        var documents = Directory.GetFiles(Path.Combine(root, "docs"), "*.md").Append(Path.Combine(root, "README.md")).ToList();
        Assert.Contains(documents, d => d.EndsWith("ssmp.md", StringComparison.Ordinal));
        Assert.Contains(documents, d => d.EndsWith("architecture.md", StringComparison.Ordinal));
        var broken = new List<string>();
        var checkedLinks = 0;
        foreach (var document in documents)
        {
            foreach (Match link in Link().Matches(File.ReadAllText(document)))
            {
                var target = link.Groups[1].Value;
                if (target.Contains("://", StringComparison.Ordinal) || target.StartsWith("mailto:", StringComparison.Ordinal))
                    continue;
                checkedLinks++;
                var (file, anchor) = target.IndexOf('#') is var hash and >= 0 ? (target[..hash], target[(hash + 1)..]) : (target, null);
                var path = file.Length == 0 ? document : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(document)!, file));
                if (!File.Exists(path) && !Directory.Exists(path))
                {
                    broken.Add($"{Path.GetFileName(document)}: {target} (no such file)");
                    continue;
                }
                if (anchor is not null && File.Exists(path) && !File.ReadLines(path).Where(l => l.StartsWith('#')).Select(Slug).Contains(anchor))
                    broken.Add($"{Path.GetFileName(document)}: {target} (no such heading)");
            }
        }
        Assert.True(checkedLinks > 20, $"only {checkedLinks} links found: is the pattern right?");
        Assert.True(broken.Count == 0, "broken links:\n" + string.Join('\n', broken));
    }

    /// <summary>A heading's anchor as Markdown renderers make it: lower case, punctuation dropped, spaces as hyphens.</summary>
    private static string Slug(string heading)
    {
        var text = heading.TrimStart('#').Trim().ToLowerInvariant();
        return string.Concat(text.Where(c => char.IsLetterOrDigit(c) || c is ' ' or '-' or '_')).Replace(' ', '-');
    }

    [GeneratedRegex(@"\]\(([^)\s]+)\)")]
    private static partial Regex Link();
}
