using System.Globalization;
using LatentDiffusion.Hub;

namespace LatentDiffusion.Cli;

/// <summary>
/// The progress of <c>ldm pull</c> on standard error: a bar on a terminal, otherwise one line per file. Reports come
/// synchronously from the download (not through <see cref="Progress{T}"/>), so lines appear in order.
/// </summary>
internal abstract class PullProgress : IProgress<ModelHubProgress>
{
    public abstract void Report(ModelHubProgress value);

    /// <summary>Ends the display.</summary>
    public virtual void Done() { }

    /// <summary>A bar on a terminal, plain lines otherwise.</summary>
    public static PullProgress For(TextWriter stderr)
        => ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected ? new PullProgressBar(stderr) : new PullProgressLines(stderr);

    /// <summary>A byte count for people: <c>512 B</c>, <c>3.4 MB</c>, <c>1.72 GB</c>.</summary>
    public static string Size(long bytes) => bytes switch
    {
        < 1000 => string.Create(CultureInfo.InvariantCulture, $"{bytes} B"),
        < 1_000_000 => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1e3:F1} kB"),
        < 1_000_000_000 => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1e6:F1} MB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1e9:F2} GB"),
    };
}

/// <summary>One line per file, when it is complete: <c>[2/9] unet/config.json (1.8 kB)</c>.</summary>
internal sealed class PullProgressLines(TextWriter writer) : PullProgress
{
    private int _lastFile = -1;

    public override void Report(ModelHubProgress p)
    {
        if (p.FileBytesDone < p.FileSize || p.FileIndex == _lastFile) return;
        _lastFile = p.FileIndex;
        writer.WriteLine($"[{p.FileIndex + 1}/{p.FileCount}] {p.File} ({Size(p.FileSize)})");
    }
}

/// <summary>A one-line bar on a terminal, redrawn when the percentage or the file changes.</summary>
internal sealed class PullProgressBar(TextWriter writer) : PullProgress
{
    private (int Percent, int File) _shown = (-1, -1);
    private bool _drawn;

    public override void Report(ModelHubProgress p)
    {
        int percent = p.TotalBytes == 0 ? 100 : (int)(p.BytesDone * 100 / p.TotalBytes);
        if ((percent, p.FileIndex) == _shown) return;
        _shown = (percent, p.FileIndex);
        const int width = 30;
        int filled = percent * width / 100;
        writer.Write($"\r[{new string('#', filled)}{new string('.', width - filled)}] {percent,3}% {Size(p.BytesDone)}/{Size(p.TotalBytes)} {p.FileIndex + 1}/{p.FileCount} {p.File}\u001b[K");
        _drawn = true;
    }

    public override void Done()
    {
        if (_drawn) writer.WriteLine();
    }
}
