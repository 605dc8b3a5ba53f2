using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;

namespace LatentDiffusion.Cli;

/// <summary>
/// The PNG files <c>ldm generate</c> writes: checked (and their folder created) before any slow work, then each
/// written to a fresh temporary file in the same folder and moved into place, so that no existing file is replaced
/// without --overwrite and no partial or temporary file is left behind.
/// </summary>
internal static class OutputFiles
{
    /// <summary>
    /// The file names for <paramref name="count"/> images written as <paramref name="output"/>; throws when they
    /// cannot be written (not a .png, a folder in the way, an existing file without --overwrite, a folder that cannot
    /// be created or written to). Creates the missing folders.
    /// </summary>
    public static string[] Prepare(string output, int count, bool overwrite)
    {
        if (string.IsNullOrWhiteSpace(output)) throw new ArgumentException("--output is empty.");
        if (!output.EndsWith(".png", StringComparison.OrdinalIgnoreCase)) throw new ArgumentException($"--output must be a .png file; got '{output}'.");
        string full;
        try { full = Path.GetFullPath(output); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new ArgumentException($"--output '{output}' is not a usable path: {e.Message}", e);
        }
        string[] targets = count == 1 ? [output] : Enumerable.Range(0, count).Select(i => Path.ChangeExtension(output, null) + $"-{i}.png").ToArray();
        string folder = Path.GetDirectoryName(full) ?? throw new ArgumentException($"--output '{output}' names no file.");
        CreateFolder(folder);
        foreach (var target in targets)
        {
            if (Directory.Exists(target)) throw new IOException($"The output '{target}' is a folder.");
            if (!overwrite && File.Exists(target)) throw new IOException($"'{target}' already exists; pass --overwrite to replace it.");
        }
        CheckWritable(folder);
        return targets;
    }

    /// <summary>
    /// Writes <paramref name="image"/> as PNG to a new temporary file next to <paramref name="target"/>, then moves it
    /// there (replacing an existing file only when <paramref name="overwrite"/>); on any failure the temporary file is
    /// deleted and <paramref name="target"/> is as it was. <paramref name="parameters"/>, when given, is written as a
    /// <c>parameters</c> text chunk.
    /// </summary>
    public static async Task SaveAsync(Image image, string target, bool overwrite, CancellationToken cancellationToken, string? parameters = null)
    {
        // The generation parameters as a "parameters" text chunk, where AUTOMATIC1111 and the tools that read its images look.
        if (parameters is not null) image.Metadata.GetPngMetadata().TextData.Add(new PngTextData("parameters", parameters, "", ""));
        string folder = Path.GetDirectoryName(Path.GetFullPath(target))!;
        string temporary = TemporaryName(folder, Path.GetFileName(target));
        bool created = false;
        try
        {
            await using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 81920, useAsync: true))
            {
                created = true;
                // Text up to 1 MB stays an uncompressed chunk (tEXt, or iTXt for non-Latin-1 prompts), as the web UI writes it.
                await image.SaveAsPngAsync(stream, new PngEncoder { TextCompressionThreshold = 1 << 20 }, cancellationToken);
            }
            try
            {
                File.Move(temporary, target, overwrite);
            }
            catch (IOException e) when (!overwrite && File.Exists(target))
            {
                throw new IOException($"'{target}' appeared while the image was being made; pass --overwrite to replace it.", e);
            }
        }
        catch
        {
            if (created) TryDelete(temporary);
            throw;
        }
    }

    /// <summary>A name for a temporary file in <paramref name="folder"/>: hidden, unique, ending in .tmp.</summary>
    public static string TemporaryName(string folder, string fileName)
        => Path.Combine(folder, $".{fileName}.{Path.GetRandomFileName().Replace(".", "", StringComparison.Ordinal)}.tmp");

    private static void CreateFolder(string folder)
    {
        if (Directory.Exists(folder)) return;
        for (string? up = folder; up is not null; up = Path.GetDirectoryName(up))
            if (File.Exists(up)) throw new IOException($"Cannot create the output folder '{folder}': '{up}' is a file.");
        try { Directory.CreateDirectory(folder); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Cannot create the output folder '{folder}': {e.Message}", e);
        }
    }

    private static void CheckWritable(string folder)
    {
        string probe = TemporaryName(folder, "ldm-write-check");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Cannot write to the output folder '{folder}': {e.Message}", e);
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
