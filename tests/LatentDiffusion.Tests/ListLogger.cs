using Microsoft.Extensions.Logging;

namespace LatentDiffusion.Tests;

/// <summary>A logger, and the provider of itself for a <see cref="LoggerFactory"/>, that keeps every entry: for tests of what the library logs.</summary>
internal sealed class ListLogger : ILogger, ILoggerProvider
{
    private readonly List<(LogLevel Level, string Message)> _entries = new();

    /// <summary>A copy of the entries so far, oldest first.</summary>
    public List<(LogLevel Level, string Message)> Entries
    {
        get { lock (_entries) return _entries.ToList(); }
    }

    /// <summary>The messages so far, oldest first.</summary>
    public List<string> Messages => Entries.Select(e => e.Message).ToList();

    public ILogger CreateLogger(string categoryName) => this;

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_entries) _entries.Add((logLevel, formatter(state, exception)));
    }

    public void Dispose() { }
}
