using System.Reflection;
using LatentDiffusion.Runtime;
using SixLabors.ImageSharp;

namespace LatentDiffusion.Cli;

/// <summary>Turns any exception into the one plain line <c>ldm</c> prints after <c>error: </c>.</summary>
internal static class ErrorMessage
{
    /// <summary>The exception that says what went wrong: wrappers (aggregate, type initializer, reflection) taken off.</summary>
    public static Exception Unwrap(Exception e)
    {
        while (true)
        {
            switch (e)
            {
                case AggregateException a when a.Flatten().InnerExceptions.Count > 0: e = a.Flatten().InnerExceptions[0]; break;
                case TypeInitializationException { InnerException: { } inner }: e = inner; break;
                case TargetInvocationException { InnerException: { } inner }: e = inner; break;
                default: return e;
            }
        }
    }

    /// <summary>Whether the exception is about the user's input or environment (a file, a value, a device), not a bug.</summary>
    public static bool IsUserError(Exception e) => e is ArgumentException or FileNotFoundException or DirectoryNotFoundException
        or InvalidDataException or NotSupportedException or TorchRuntimeException or UnknownImageFormatException or IOException
        or UnauthorizedAccessException or KeyNotFoundException or FormatException or System.Text.Json.JsonException
        or DllNotFoundException;

    /// <summary>
    /// One line: the unwrapped exception's message without .NET's parameter decorations, followed by the messages of
    /// its inner exceptions that it does not already contain. Exceptions that are not input errors are named by type.
    /// </summary>
    public static string Describe(Exception e)
    {
        e = Unwrap(e);
        var parts = new List<string>();
        for (var x = e; x is not null; x = x.InnerException is { } inner ? Unwrap(inner) : null)
        {
            string text = Plain(x);
            if (text.Length > 0 && !parts.Any(p => p.Contains(text, StringComparison.Ordinal))) parts.Add(text);
        }
        string message = parts.Count == 0 ? e.GetType().Name : string.Join(": ", parts.Select(p => p.TrimEnd('.')));
        if (parts.Count > 0 && parts[^1].EndsWith('.')) message += ".";
        return IsUserError(e) ? message : $"unexpected {e.GetType().Name}: {message}";
    }

    /// <summary>The command-line parser's messages on one line, with .NET type names said in words.</summary>
    public static string DescribeParseErrors(IEnumerable<string> messages)
        => string.Join("; ", messages.Select(m => string.Join(' ', m
                .Replace("'System.Int32'", "a whole number", StringComparison.Ordinal)
                .Replace("'System.Int64'", "a whole number", StringComparison.Ordinal)
                .Replace("'System.Double'", "a number", StringComparison.Ordinal)
                .Replace("'System.Boolean'", "true or false", StringComparison.Ordinal)
                .ReplaceLineEndings(" ").Split(' ', StringSplitOptions.RemoveEmptyEntries)).TrimEnd('.'))
            .Where(m => m.Length > 0));

    // ArgumentException appends " (Parameter 'x')" and ArgumentOutOfRangeException a line "Actual value was v.";
    // the value is kept, the rest is noise on a command line.
    private static string Plain(Exception e)
    {
        string text = e.Message;
        if (e is ArgumentException { ParamName: { } param })
        {
            int at = text.IndexOf($" (Parameter '{param}')", StringComparison.Ordinal);
            if (at >= 0) text = text[..at];
            if (e is ArgumentOutOfRangeException { ActualValue: { } actual } && !text.Contains($"{actual}", StringComparison.Ordinal))
                text = $"{text.TrimEnd('.')}; got {actual}.";
        }
        return string.Join(' ', text.ReplaceLineEndings(" ").Split(' ', StringSplitOptions.RemoveEmptyEntries));
    }
}
