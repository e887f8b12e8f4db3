using System.CommandLine;

namespace Skymesh.Cli;

/// <summary><c>skymesh bench …</c>: load generators whose results go into docs/benchmarks.md.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var command = new Command("bench", "Run a load generator and print one JSON line per workload.");
        return command;
    }
}
