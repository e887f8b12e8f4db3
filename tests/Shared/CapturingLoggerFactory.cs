using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Skymesh.Tests;

/// <summary>
/// A logger factory for tests (compiled into each test project that needs it): it counts warnings and errors by event
/// id and keeps every error, so that a test can fail when the code under test logged one — a bug hidden behind
/// "keep serving" still shows.
/// </summary>
internal sealed class CapturingLoggerFactory : ILoggerFactory, ILogger
{
    public ConcurrentQueue<string> Errors { get; } = new();

    public ConcurrentDictionary<int, int> Counts { get; } = new();

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        Counts.AddOrUpdate(eventId.Id, 1, (_, n) => n + 1);
        if (logLevel >= LogLevel.Error)
            Errors.Enqueue($"{logLevel} {eventId.Id}: {formatter(state, exception)} {exception}");
    }
}
