using System.Diagnostics;
using System.Globalization;

namespace Skymesh.Bench;

/// <summary>What /proc says about a process: resident memory, CPU time, and the open-files limit.</summary>
internal static class ProcessProbe
{
    /// <summary>VmRSS of <paramref name="pid"/> in KiB, from /proc/PID/status; null when it cannot be read.</summary>
    public static long? ResidentKib(int pid) => StatusField(pid, "VmRSS:");

    private static long? StatusField(int pid, string field)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (!line.StartsWith(field, StringComparison.Ordinal))
                    continue;
                var value = line.AsSpan(field.Length).Trim();
                var space = value.IndexOf(' ');
                return long.Parse(space < 0 ? value : value[..space], NumberStyles.None, CultureInfo.InvariantCulture);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
        }
        return null;
    }

    /// <summary>User plus system CPU time of <paramref name="pid"/>; null when the process cannot be read.</summary>
    public static TimeSpan? CpuTime(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            return process.TotalProcessorTime;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    /// <summary>
    /// Idle time of the whole machine in seconds, summed over all CPUs (idle plus iowait from the first line of
    /// /proc/stat). Unlike the busy fields, which the kernel samples at each tick and undercounts for bursty
    /// loads, idle time is measured from timestamps, so CPUs x wall time minus idle is the machine's busy time.
    /// </summary>
    public static double? MachineIdleSeconds()
    {
        try
        {
            using var reader = new StreamReader("/proc/stat");
            var line = reader.ReadLine();
            if (line is null || !line.StartsWith("cpu ", StringComparison.Ordinal))
                return null;
            var f = line[4..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 5)
                return null;
            return (double.Parse(f[3], NumberStyles.None, CultureInfo.InvariantCulture) + double.Parse(f[4], NumberStyles.None, CultureInfo.InvariantCulture)) / UserHz;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }

    /// <summary>CPU seconds (user plus system) of every process on the machine, by pid, with its name.</summary>
    public static Dictionary<int, (string Name, double Seconds)> AllProcessesCpu()
    {
        var all = new Dictionary<int, (string, double)>();
        foreach (var directory in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                continue;
            try
            {
                // pid (comm) state ppid ... utime is field 14 and stime field 15; comm may hold spaces, so count from ')'.
                var stat = File.ReadAllText(Path.Combine(directory, "stat"));
                var open = stat.IndexOf('(', StringComparison.Ordinal);
                var close = stat.LastIndexOf(')');
                if (open < 0 || close < open)
                    continue;
                var fields = stat[(close + 2)..].Split(' ');
                if (fields.Length < 13)
                    continue;
                var ticks = double.Parse(fields[11], NumberStyles.None, CultureInfo.InvariantCulture)
                    + double.Parse(fields[12], NumberStyles.None, CultureInfo.InvariantCulture);
                all[pid] = (stat[(open + 1)..close], ticks / UserHz);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
            {
                // The process ended meanwhile.
            }
        }
        return all;
    }

    /// <summary>Ticks per second of /proc/stat; 100 on every Linux architecture .NET runs on.</summary>
    private const double UserHz = 100;

    /// <summary>The soft RLIMIT_NOFILE of this process (children inherit it), from /proc/self/limits.</summary>
    public static long? OpenFilesLimit()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/limits"))
            {
                if (!line.StartsWith("Max open files", StringComparison.Ordinal))
                    continue;
                var fields = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length > 0 && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var soft))
                    return soft;
                return long.MaxValue; // "unlimited"
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return null;
    }

    /// <summary>The CPU model as lscpu prints it ("model name" in /proc/cpuinfo).</summary>
    public static string CpuModel()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (line.StartsWith("model name", StringComparison.Ordinal))
                    return line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return "unknown";
    }
}
