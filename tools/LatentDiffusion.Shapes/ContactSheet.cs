using System.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Shapes;

/// <summary>
/// Writes a grid of pictures to one PNG for eyeballing a model's outputs. No font library is available, so captions are
/// not drawn: they go to a sidecar markdown table next to the PNG (same name, <c>.md</c>), one row per picture with its
/// grid row and column.
/// </summary>
public static class ContactSheet
{
    /// <summary>Gap between cells, in pixels.</summary>
    public const int Gap = 2;

    /// <summary>
    /// Saves <paramref name="items"/> left to right, top to bottom, <paramref name="columns"/> per row, each in a cell as
    /// large as the largest picture, on a grey canvas; writes the captions to <c>Path.ChangeExtension(path, ".md")</c>.
    /// </summary>
    /// <returns>The path of the markdown sidecar.</returns>
    public static string Save(string path, IReadOnlyList<(string Caption, Image<Rgb24> Image)> items, int columns)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(items);
        ArgumentOutOfRangeException.ThrowIfLessThan(columns, 1);
        if (items.Count == 0) throw new ArgumentException("A contact sheet needs at least one picture.", nameof(items));
        string sidecar = Path.ChangeExtension(path, ".md");
        if (string.Equals(Path.GetFullPath(sidecar), Path.GetFullPath(path), StringComparison.Ordinal))
            throw new ArgumentException($"The contact sheet '{path}' would be overwritten by its caption table; give it a .png name.", nameof(path));
        int cellW = items.Max(i => i.Image.Width), cellH = items.Max(i => i.Image.Height);
        int cols = Math.Min(columns, items.Count), rows = (items.Count + columns - 1) / columns;
        using var sheet = new Image<Rgb24>(Gap + cols * (cellW + Gap), Gap + rows * (cellH + Gap), new Rgb24(128, 128, 128));
        var md = new StringBuilder("| # | row | column | caption |\n|---|---|---|---|\n");
        for (int k = 0; k < items.Count; k++)
        {
            var (caption, image) = items[k];
            int row = k / columns, col = k % columns;
            int ox = Gap + col * (cellW + Gap), oy = Gap + row * (cellH + Gap);
            for (int y = 0; y < image.Height; y++)
                for (int x = 0; x < image.Width; x++)
                    sheet[ox + x, oy + y] = image[x, y];
            md.Append("| ").Append(k).Append(" | ").Append(row).Append(" | ").Append(col).Append(" | ")
              .Append((caption ?? "").Replace("|", "\\|").Replace('\n', ' ')).Append(" |\n");
        }
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        sheet.SaveAsPng(path);
        File.WriteAllText(sidecar, md.ToString(), new UTF8Encoding(false));
        return sidecar;
    }
}
