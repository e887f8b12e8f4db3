using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace Skymesh.Cli;

/// <summary>How a long-running command logs: least level, text or JSON lines, and to the console or a file.</summary>
internal sealed record LogSettings(LogLevel Level, bool Json = false, string? File = null)
{
    private static readonly Option<LogLevel> LevelOption = CliSupport.LogLevelOption();

    private static readonly Option<string> FormatOption = new Option<string>("--log-format")
    {
        Description = "text (one line per entry, dated) or json (one JSON object per line).",
        DefaultValueFactory = _ => "text",
        HelpName = "format",
    }.AcceptOnly("text", "json");

    private static readonly Option<string?> FileOption = new("--log-file")
    {
        Description = "Append the log to this file (created owner-only) instead of writing it to the console.",
        HelpName = "path",
    };

    public static void AddOptionsTo(Command command)
    {
        command.Options.Add(LevelOption);
        command.Options.Add(FormatOption);
        command.Options.Add(FileOption);
    }

    public static LogSettings From(ParseResult parse) =>
        new(parse.GetValue(LevelOption), parse.GetValue(FormatOption) == "json", parse.GetValue(FileOption));

    /// <summary>The logger factory these settings describe; a log file that cannot be opened is a usage error.</summary>
    public ILoggerFactory CreateFactory()
    {
        LogFileProvider? file = null;
        if (File is not null)
        {
            try
            {
                file = new LogFileProvider(File, Json);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UsageException($"--log-file: cannot open '{File}': {e.Message}");
            }
        }
        return LoggerFactory.Create(b =>
        {
            b.SetMinimumLevel(Level);
            if (file is not null)
                b.AddProvider(file);
            else if (Json)
                b.AddJsonConsole(o =>
                {
                    o.UseUtcTimestamp = true;
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                });
            else
                b.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.UseUtcTimestamp = true;
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
                });
        });
    }
}

/// <summary>Log entries appended to a file, one line each, written through at once so a crash loses none.</summary>
internal sealed class LogFileProvider : ILoggerProvider
{
    private readonly StreamWriter _writer;
    private readonly bool _json;
    private readonly Lock _gate = new();

    public LogFileProvider(string path, bool json)
    {
        var options = new FileStreamOptions { Mode = FileMode.Append, Access = FileAccess.Write, Share = FileShare.Read };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        _writer = new StreamWriter(new FileStream(path, options), new UTF8Encoding(false)) { AutoFlush = true };
        _json = json;
    }

    public ILogger CreateLogger(string categoryName) => new FileLogger(this, categoryName);

    private void Write(string category, LogLevel level, EventId id, string message, Exception? exception)
    {
        var now = DateTimeOffset.UtcNow;
        string line;
        if (_json)
        {
            line = JsonSerializer.Serialize(new LogLine(now.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture), level.ToString(), category, id.Id, message, exception?.ToString()), LogLineJson.Default.LogLine);
        }
        else
        {
            line = $"{now.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture)} {Short(level)}: {category}[{id.Id}] {message}"
                + (exception is null ? "" : " " + exception.ToString().ReplaceLineEndings(" | "));
        }
        lock (_gate)
        {
            try
            {
                _writer.WriteLine(line);
            }
            catch (IOException)
            {
                // A full disk must not stop the node: the entry is lost, the node goes on.
            }
        }
    }

    private static string Short(LogLevel level) => level switch
    {
        LogLevel.Trace => "trce",
        LogLevel.Debug => "dbug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warn",
        LogLevel.Error => "fail",
        LogLevel.Critical => "crit",
        _ => "none",
    };

    public void Dispose()
    {
        lock (_gate)
            _writer.Dispose();
    }

    private sealed class FileLogger(LogFileProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
                owner.Write(category, logLevel, eventId, formatter(state, exception), exception);
        }
    }
}

internal sealed record LogLine(string Timestamp, string Level, string Category, int EventId, string Message, string? Exception);

[System.Text.Json.Serialization.JsonSerializable(typeof(LogLine))]
[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
internal sealed partial class LogLineJson : System.Text.Json.Serialization.JsonSerializerContext;
