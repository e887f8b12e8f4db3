using System.CommandLine;
using Skymesh.Cli;

var root = new RootCommand("skymesh — the Skymesh mesh networking stack: SSMP broker, nodes, tools and benchmarks.");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(BrokerCommand.Create());
root.Subcommands.Add(BenchCommand.Create());

var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    // One line with the reason, not a page of help: scripts and people both read it.
    Console.Error.WriteLine($"skymesh: {parse.Errors[0].Message} (try --help)");
    return 2;
}
try
{
    // Without this, System.CommandLine catches the UsageException itself and prints a stack trace with exit code 1.
    return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (UsageException e)
{
    Console.Error.WriteLine($"skymesh: {e.Message}");
    return 2;
}
