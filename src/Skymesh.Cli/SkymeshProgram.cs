using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.RegularExpressions;
using Skymesh.Identity;
using Skymesh.Node;

namespace Skymesh.Cli;

/// <summary>
/// The <c>skymesh</c> program: its commands, and the one place where every failure becomes one line on stderr and an
/// exit code — 0 done, 1 failed while running (a node that cannot be reached, a ping unanswered), 2 bad input (an
/// argument, a configuration, a key file, or a request the node refused as invalid).
/// </summary>
public static partial class SkymeshProgram
{
    /// <summary>Set to 1 to have an unexpected failure print its stack trace after its one line.</summary>
    public const string DebugVariable = "SKYMESH_DEBUG";

    /// <summary>
    /// "skymesh 0.1.0 (commit 9c61801a2b3c, .NET 10.0.12, linux-x64)": the release, the commit it was built from (the
    /// SDK appends it to the informational version from git), the runtime and the platform.
    /// </summary>
    public static string VersionLine
    {
        get
        {
            var informational = typeof(SkymeshProgram).Assembly
                .GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
                .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion ?? "0.0.0";
            var plus = informational.IndexOf('+', StringComparison.Ordinal);
            var version = plus < 0 ? informational : informational[..plus];
            var commit = plus < 0 ? "unknown" : informational[(plus + 1)..];
            if (commit.Length > 12)
                commit = commit[..12];
            return $"skymesh {version} (commit {commit}, .NET {Environment.Version}, {System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier})";
        }
    }

    public static RootCommand CreateRoot()
    {
        var root = new RootCommand("skymesh — the Skymesh mesh networking stack: SSMP broker, nodes, tools and benchmarks.");
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(BrokerCommand.Create());
        foreach (var command in NodeCommands.Create())
            root.Subcommands.Add(command);
        root.Subcommands.Add(NodeCommands.CreateServices());
        foreach (var command in InitCommand.Create())
            root.Subcommands.Add(command);
        root.Subcommands.Add(SsmpCommands.Create());
        root.Subcommands.Add(CompletionCommand.Create());
        root.Subcommands.Add(FinderCommand.Create());
        root.Subcommands.Add(ExchangeCommands.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(SimCommand.Create());
        return root;
    }

    public static async Task<int> RunAsync(string[] args)
    {
        // `skymesh`, `skymesh help [COMMAND…]` and `skymesh version` do what a person expects of them.
        args = args switch
        {
            [] or ["help"] => ["--help"],
            ["help", .. var rest] => [.. rest, "--help"],
            _ => args,
        };
        if (args is ["version"] or ["--version"])
        {
            Console.WriteLine(VersionLine);
            return 0;
        }
        var parse = CreateRoot().Parse(args);
        if (parse.Errors.Count > 0)
        {
            // One line with the reason, not a page of help: scripts and people both read it. An unknown word says so,
            // rather than that some command is missing.
            var error = parse.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal)) ?? parse.Errors[0];
            Console.Error.WriteLine($"skymesh: {Plain(error)} (try --help)");
            return 2;
        }
        try
        {
            // Long-running commands handle SIGINT/SIGTERM themselves (CliSupport.UntilSignal) so they can shut down cleanly.
            return await parse.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e)
        {
            var (line, code) = Describe(e);
            Console.Error.WriteLine($"skymesh: {line}");
            if (code == 1 && !IsExpected(e) && Environment.GetEnvironmentVariable(DebugVariable) == "1")
                Console.Error.WriteLine(e);
            return code;
        }
    }

    /// <summary>The one line and the exit code a failure ends the program with.</summary>
    internal static (string Line, int Code) Describe(Exception e) => e switch
    {
        UsageException or NodeConfigException or NodeKeyFileException => (OneLine(e.Message), 2),
        NodeApiException { Status: var status } when (int)status is >= 400 and < 500 and not 408 and not 429 => (OneLine(e.Message), 2),
        _ when IsExpected(e) => (OneLine(CliSupport.Reason(e)), 1),
        _ => ($"unexpected failure ({e.GetType().Name}): {OneLine(e.Message)} (set {DebugVariable}=1 to see where)", 1),
    };

    private static bool IsExpected(Exception e) =>
        e is ArgumentException or InvalidOperationException or IOException or UnauthorizedAccessException or NodeApiException
            or System.Net.Sockets.SocketException or TimeoutException or Ssmp.Client.SsmpException;

    private static string OneLine(string text)
    {
        var newline = text.IndexOfAny(['\r', '\n']);
        return newline < 0 ? text : text[..newline].TrimEnd();
    }

    /// <summary>A parse error in the program's words: the option and the value, not .NET's type names.</summary>
    private static string Plain(ParseError error)
    {
        var message = OneLine(error.Message);
        var match = CannotParse().Match(message);
        if (!match.Success)
            return message;
        var (value, kind, name, type) = (match.Groups["value"].Value, match.Groups["kind"].Value, match.Groups["name"].Value, match.Groups["type"].Value);
        var what = type switch
        {
            "System.Int32" or "System.Int64" or "System.Nullable`1[System.Int32]" or "System.Nullable`1[System.Int64]" => "a whole number",
            "System.UInt32" or "System.UInt64" or "System.Nullable`1[System.UInt32]" or "System.Nullable`1[System.UInt64]" => "a whole number of 0 or more",
            "System.Double" or "System.Nullable`1[System.Double]" => "a number",
            _ => "a value of the right kind",
        };
        if (error.SymbolResult is ArgumentResult argument)
            name = argument.Argument.Name;
        return kind == "option" ? $"{name}: '{value}' is not {what}." : $"<{name}>: '{value}' is not {what}.";
    }

    [GeneratedRegex("^Cannot parse argument '(?<value>.*)' for (?<kind>option|command|argument) '(?<name>[^']*)' as expected type '(?<type>[^']*)'")]
    private static partial Regex CannotParse();
}
