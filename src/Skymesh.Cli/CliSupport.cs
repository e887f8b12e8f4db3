using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace Skymesh.Cli;

/// <summary>A bad argument value: printed as one line, exit code 2.</summary>
public sealed class UsageException : Exception
{
    public UsageException(string message)
        : base(message)
    {
    }

    public UsageException()
    {
    }

    public UsageException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

internal static class CliSupport
{
    /// <summary>Parses <c>host:port</c> (IPv4, <c>[v6]:port</c>, or <c>localhost:port</c>).</summary>
    public static IPEndPoint ParseEndPoint(string value, string option)
    {
        if (value.StartsWith("localhost:", StringComparison.OrdinalIgnoreCase))
            value = "127.0.0.1:" + value["localhost:".Length..];
        if (!IPEndPoint.TryParse(value, out var endPoint) || value.LastIndexOf(':') < 0 || endPoint.Port is < 0 or > 65535)
            throw new UsageException($"{option}: '{value}' is not an address:port such as 127.0.0.1:8787");
        return endPoint;
    }

    public static (string Host, int Port) ParseHostPort(string value, string option)
    {
        var colon = value.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
            throw new UsageException($"{option}: '{value}' is not HOST:PORT with a port from 1 to 65535.");
        return (value[..colon].Trim('[', ']'), port);
    }

    /// <summary>
    /// A token cancelled by the first SIGINT or SIGTERM (the process then shuts down cleanly instead of dying);
    /// dispose the result to restore the default handling.
    /// </summary>
    public static SignalScope UntilSignal(CancellationToken linked) => new(linked);

    public sealed class SignalScope : IDisposable
    {
        private readonly CancellationTokenSource _cts;
        private readonly PosixSignalRegistration[] _registrations;

        public SignalScope(CancellationToken linked)
        {
            _cts = CancellationTokenSource.CreateLinkedTokenSource(linked);
            _registrations =
            [
                PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle),
                PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle),
            ];
        }

        public CancellationToken Token => _cts.Token;

        private void Handle(PosixSignalContext context)
        {
            context.Cancel = true;
            _cts.Cancel();
        }

        public void Dispose()
        {
            foreach (var r in _registrations)
                r.Dispose();
            _cts.Dispose();
        }
    }

    /// <summary>An exception's message for one line of output, without the "(Parameter 'x')" that ArgumentException appends.</summary>
    public static string Reason(Exception e) => Skymesh.Node.NodeConfigException.Reason(e);

    /// <summary>Refuses a value outside [min, max] at parse time, naming the option.</summary>
    public static Option<T> Within<T>(this Option<T> option, T min, T max, string? unit = null)
        where T : struct, System.Numerics.INumber<T>
    {
        option.Validators.Add(result => OutOfRange(() => result.GetValueOrDefault<T>(), min, max, option.Name, unit, result.AddError));
        return option;
    }

    /// <inheritdoc cref="Within{T}(Option{T}, T, T, string?)"/>
    public static Option<T?> Within<T>(this Option<T?> option, T min, T max, string? unit = null)
        where T : struct, System.Numerics.INumber<T>
    {
        option.Validators.Add(result => OutOfRange(() => result.GetValueOrDefault<T?>(), min, max, option.Name, unit, result.AddError));
        return option;
    }

    /// <inheritdoc cref="Within{T}(Option{T}, T, T, string?)"/>
    public static Argument<T> Within<T>(this Argument<T> argument, T min, T max, string? unit = null)
        where T : struct, System.Numerics.INumber<T>
    {
        argument.Validators.Add(result => OutOfRange(() => result.GetValueOrDefault<T>(), min, max, $"<{argument.Name}>", unit, result.AddError));
        return argument;
    }

    /// <summary>Adds one error naming <paramref name="name"/> when the value given is outside [min, max]; nothing when none was given or it did not parse (that has its own error).</summary>
    private static void OutOfRange<T>(Func<T?> read, T min, T max, string name, string? unit, Action<string> error)
        where T : struct, System.Numerics.INumber<T>
    {
        T? given;
        try
        {
            given = read();
        }
        catch (InvalidOperationException)
        {
            return;
        }
        if (given is { } value && !(value >= min && value <= max))
            error($"{name}: {value.ToString(null, CultureInfo.InvariantCulture)} is not from {min.ToString(null, CultureInfo.InvariantCulture)} to {max.ToString(null, CultureInfo.InvariantCulture)}{(unit is null ? "" : " " + unit)}.");
    }

    /// <summary>The <c>--log-level</c> option: trace, debug, information, warning, error, critical or none, in any case.</summary>
    public static Option<LogLevel> LogLevelOption() => new("--log-level")
    {
        Description = "Least level logged: trace, debug, information, warning, error, critical or none.",
        DefaultValueFactory = _ => LogLevel.Information,
        HelpName = "level",
        CustomParser = result =>
        {
            var text = result.Tokens.Count == 1 ? result.Tokens[0].Value : "";
            if (Enum.TryParse<LogLevel>(text, ignoreCase: true, out var level) && Enum.IsDefined(level) && !char.IsAsciiDigit(text.FirstOrDefault()))
                return level;
            if (text.ToLowerInvariant() is "info")
                return LogLevel.Information;
            if (text.ToLowerInvariant() is "warn")
                return LogLevel.Warning;
            result.AddError($"--log-level: '{text}' is not one of trace, debug, information, warning, error, critical, none.");
            return LogLevel.Information;
        },
    };

    /// <summary>Console logging for commands without log options (demo, bench): dated lines at <paramref name="level"/>.</summary>
    public static ILoggerFactory Logging(LogLevel level) => new LogSettings(level).CreateFactory();

    /// <summary>Restricts a string option to the given words, refusing anything else with one line that lists them.</summary>
    public static Option<string> AcceptOnly(this Option<string> option, params string[] words)
    {
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<string>();
            if (!words.Contains(value, StringComparer.Ordinal))
                result.AddError($"{option.Name}: '{value}' is not one of {string.Join(", ", words)}.");
        });
        return option;
    }
}
