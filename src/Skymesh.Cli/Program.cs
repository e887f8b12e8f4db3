using System.CommandLine;
using Skymesh.Cli;

var root = new RootCommand("skymesh — the Skymesh mesh networking stack: SSMP broker, nodes, tools and benchmarks.");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(BrokerCommand.Create());
foreach (var command in NodeCommands.Create())
    root.Subcommands.Add(command);
foreach (var command in InitCommand.Create())
    root.Subcommands.Add(command);
root.Subcommands.Add(FinderCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(SimCommand.Create());

// `skymesh`, `skymesh help [COMMAND…]` and `skymesh version` do what a person expects of them.
args = args switch
{
    [] or ["help"] => ["--help"],
    ["help", .. var rest] => [.. rest, "--help"],
    ["version"] => ["--version"],
    _ => args,
};
var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    // One line with the reason, not a page of help: scripts and people both read it. An unknown word says so,
    // rather than that some command is missing.
    var error = parse.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal)) ?? parse.Errors[0];
    Console.Error.WriteLine($"skymesh: {error.Message} (try --help)");
    return 2;
}
try
{
    // Long-running commands handle SIGINT/SIGTERM themselves (CliSupport.UntilSignal) so they can shut down cleanly.
    return await parse.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null, EnableDefaultExceptionHandler = false });
}
catch (UsageException e)
{
    Console.Error.WriteLine($"skymesh: {e.Message}");
    return 2;
}
catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException or Skymesh.Node.NodeApiException or Skymesh.Node.NodeConfigException)
{
    Console.Error.WriteLine($"skymesh: {CliSupport.Reason(e)}");
    return 1;
}
