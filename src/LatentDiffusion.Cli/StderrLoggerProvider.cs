using Microsoft.Extensions.Logging;

namespace LatentDiffusion.Cli;

/// <summary>
/// Writes log messages as single lines (<c>warning: ...</c>) to the tool's error stream, so that standard output
/// holds only results.
/// </summary>
internal sealed class StderrLoggerProvider(TextWriter writer) : ILoggerProvider
{
    private readonly Lock _lock = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public void Dispose() { }

    private void Write(LogLevel level, string message)
    {
        string label = level switch
        {
            LogLevel.Trace or LogLevel.Debug => "debug",
            LogLevel.Information => "info",
            LogLevel.Warning => "warning",
            // "error: " starts the one line that says why the tool failed; logged errors are reports, not that line.
            _ => "logged error",
        };
        lock (_lock) writer.WriteLine($"{label}: {message.ReplaceLineEndings(" ")}");
    }

    private sealed class Logger(StderrLoggerProvider owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            string message = formatter(state, exception);
            if (exception is not null) message += " (" + ErrorMessage.Describe(exception) + ")";
            owner.Write(logLevel, message);
        }
    }
}
