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
            throw new UsageException($"{option}: '{value}' is not a host:port such as 127.0.0.1:8787");
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
    public static string Reason(Exception e) => e is ArgumentException a && a.ParamName is { } name
        ? a.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal)
        : e.Message;

    public static ILoggerFactory Logging(LogLevel level) => LoggerFactory.Create(b => b
        .SetMinimumLevel(level)
        .AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
        }));
}
