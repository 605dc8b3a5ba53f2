using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Training;

/// <summary>What <see cref="ShapeJudge"/> sees in a picture. Shape, colour, size and position are null when no shape was found.</summary>
/// <param name="Shape">The shape kind.</param>
/// <param name="Color">The palette colour nearest to the shape's median colour.</param>
/// <param name="Size">The size, from the longer side of the shape's box.</param>
/// <param name="Position">The position whose anchor is nearest to the centre of the shape's box.</param>
/// <param name="Background">The palette colour nearest to the median of the border pixels.</param>
/// <param name="RegionPixels">Pixels of the shape region (largest connected set of pixels closer to the shape colour than to the background).</param>
/// <param name="FillRatio">Region pixels over the area of the region's bounding box.</param>
/// <param name="Balance">Mean row of the region relative to its box (0 top, 1 bottom); about 0.5 for symmetric shapes, 0.67 for the triangle.</param>
/// <param name="Confidence">
/// A heuristic in [0, 1]: the smallest of the margins of the colour, shape and position decisions (1 = far from any
/// decision boundary, 0 = on one). 0 when no shape was found.
/// </param>
public sealed record JudgeVerdict(ShapeKind? Shape, ShapeColor? Color, ShapeSize? Size, ShapePosition? Position, ShapeColor Background,
    int RegionPixels, double FillRatio, double Balance, double Confidence)
{
    /// <summary>Whether a shape region was found at all.</summary>
    public bool Found => Shape is not null;
}

/// <summary>
/// A deterministic, CPU-only reader of generated shape pictures: which colour, shape, size and position a picture shows,
/// measured with simple geometry, so that a text-to-image model trained on <see cref="ShapesDataset"/> can be scored.
/// </summary>
/// <remarks>
/// Steps: the background is the per-channel median of the border pixels; a first region is the largest 4-connected set
/// of pixels at least <see cref="CandidateDistance"/> away from it; the shape colour is that region's median. Then every
/// pixel is projected on the background→shape colour line (0 = background, 1 = shape) and the final region is the
/// largest 4-connected set above one half, which ignores anti-aliasing and isolated noise. Shape: a triangle when the
/// region's mass sits low in its box (<see cref="JudgeVerdict.Balance"/> &gt; 0.58), otherwise by fill ratio of the
/// box (square ≥ 0.89 &gt; circle ≥ 0.64 &gt; diamond). Position: nearest anchor to the box centre; size: the box's longer
/// side against the midpoint of the two nominal sides.
/// </remarks>
public static class ShapeJudge
{
    /// <summary>Distance in RGB ([0, 1] per channel) from the background above which a pixel may belong to the shape in the first pass.</summary>
    public const double CandidateDistance = 0.2;

    private const double TriangleBalance = 0.58, SquareFill = 0.89, CircleFill = 0.64;

    /// <summary>Judges an 8-bit RGB picture of any size (square pictures are expected; positions are relative to width and height).</summary>
    public static JudgeVerdict Judge(Image<Rgb24> image)
    {
        ArgumentNullException.ThrowIfNull(image);
        int w = image.Width, h = image.Height, n = w * h;
        var planes = new float[3 * n];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                var px = image[x, y];
                int p = y * w + x;
                planes[p] = px.R / 255f;
                planes[n + p] = px.G / 255f;
                planes[2 * n + p] = px.B / 255f;
            }
        return Judge(planes, w, h);
    }

    /// <summary>Judges a picture tensor [3, H, W] with values in [0, 1] (any dtype or device; it is copied to the CPU).</summary>
    public static JudgeVerdict Judge(Tensor image01)
    {
        ArgumentNullException.ThrowIfNull(image01);
        if (image01.dim() != 3 || image01.shape[0] != 3)
            throw new ArgumentException($"Expected a picture tensor [3, H, W], got [{string.Join(", ", image01.shape)}].", nameof(image01));
        using var cpu = image01.detach().to(ScalarType.Float32, torch.CPU).contiguous();
        return Judge(cpu.data<float>().ToArray(), (int)image01.shape[2], (int)image01.shape[1]);
    }

    /// <summary>Judges channel planes (R, G, B; row-major) with values in [0, 1].</summary>
    public static JudgeVerdict Judge(float[] planes, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(planes);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 3);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 3);
        int n = width * height;
        if (planes.Length != 3 * n) throw new ArgumentException($"Expected {3 * n} values for {width}x{height} RGB planes, got {planes.Length}.", nameof(planes));

        var border = new List<int>(2 * (width + height));
        for (int x = 0; x < width; x++) { border.Add(x); border.Add((height - 1) * width + x); }
        for (int y = 1; y < height - 1; y++) { border.Add(y * width); border.Add(y * width + width - 1); }
        var bg = MedianColor(planes, n, border);
        var background = ShapePalette.Nearest(bg.R, bg.G, bg.B).Color;
        JudgeVerdict Nothing() => new(null, null, null, null, background, 0, 0, 0, 0);

        var candidate = new bool[n];
        for (int p = 0; p < n; p++)
            candidate[p] = Distance(planes, n, p, bg) >= CandidateDistance;
        var first = LargestComponent(candidate, width, height);
        if (first.Count == 0) return Nothing();
        var fg = MedianColor(planes, n, first);

        double dr = fg.R - bg.R, dg = fg.G - bg.G, db = fg.B - bg.B, len2 = dr * dr + dg * dg + db * db;
        if (len2 < CandidateDistance * CandidateDistance / 4) return Nothing();
        var mask = new bool[n];
        for (int p = 0; p < n; p++)
        {
            double t = ((planes[p] - bg.R) * dr + (planes[n + p] - bg.G) * dg + (planes[2 * n + p] - bg.B) * db) / len2;
            mask[p] = t > 0.5;
        }
        var region = LargestComponent(mask, width, height);
        if (region.Count == 0) return Nothing();

        int minX = int.MaxValue, maxX = -1, minY = int.MaxValue, maxY = -1;
        double sumY = 0;
        foreach (int p in region)
        {
            int x = p % width, y = p / width;
            minX = Math.Min(minX, x); maxX = Math.Max(maxX, x);
            minY = Math.Min(minY, y); maxY = Math.Max(maxY, y);
            sumY += y;
        }
        int bw = maxX - minX + 1, bh = maxY - minY + 1;
        double fill = region.Count / (double)(bw * bh);
        double balance = (sumY / region.Count - minY + 0.5) / bh;

        ShapeKind shape;
        double shapeMargin;
        if (balance > TriangleBalance) { shape = ShapeKind.Triangle; shapeMargin = (balance - TriangleBalance) / 0.08; }
        else
        {
            double balanceMargin = (TriangleBalance - balance) / 0.08;
            (shape, double fillMargin) = fill >= SquareFill ? (ShapeKind.Square, (fill - SquareFill) / 0.1)
                : fill >= CircleFill ? (ShapeKind.Circle, Math.Min(SquareFill - fill, fill - CircleFill) / 0.1)
                : (ShapeKind.Diamond, (CircleFill - fill) / 0.1);
            shapeMargin = Math.Min(balanceMargin, fillMargin);
        }

        var shapeRgb = MedianColor(planes, n, region);
        var (color, c1, c2) = ShapePalette.Nearest(shapeRgb.R, shapeRgb.G, shapeRgb.B);
        double colorMargin = c2 > 0 ? 1 - c1 / c2 : 0;

        double cx = (minX + maxX + 1) / 2.0 / width, cy = (minY + maxY + 1) / 2.0 / height;
        ShapePosition position = ShapePosition.Center;
        double d1 = double.MaxValue, d2 = double.MaxValue;
        foreach (var candidatePosition in Enum.GetValues<ShapePosition>())
        {
            var (ax, ay) = ShapesDataset.Anchor(candidatePosition);
            double d = Math.Sqrt((cx - ax) * (cx - ax) + (cy - ay) * (cy - ay));
            if (d < d1) { d2 = d1; d1 = d; position = candidatePosition; }
            else if (d < d2) d2 = d;
        }
        double positionMargin = d2 > 0 ? 1 - d1 / d2 : 0;

        double side = Math.Max(bw / (double)width, bh / (double)height);
        var size = side >= (ShapesDataset.SmallSide + ShapesDataset.LargeSide) / 2 ? ShapeSize.Large : ShapeSize.Small;

        double confidence = Math.Clamp(Math.Min(Math.Min(shapeMargin, colorMargin), positionMargin), 0, 1);
        return new JudgeVerdict(shape, color, size, position, background, region.Count, fill, balance, confidence);
    }

    private static double Distance(float[] planes, int n, int p, (double R, double G, double B) c)
    {
        double r = planes[p] - c.R, g = planes[n + p] - c.G, b = planes[2 * n + p] - c.B;
        return Math.Sqrt(r * r + g * g + b * b);
    }

    private static (double R, double G, double B) MedianColor(float[] planes, int n, List<int> pixels)
    {
        double Median(int channel)
        {
            var values = pixels.Select(p => planes[channel * n + p]).Order().ToArray();
            int m = values.Length / 2;
            return values.Length % 2 == 1 ? values[m] : (values[m - 1] + values[m]) / 2.0;
        }
        return (Median(0), Median(1), Median(2));
    }

    /// <summary>The pixels of the largest 4-connected set of true pixels (the first found on a tie, scanning row by row).</summary>
    private static List<int> LargestComponent(bool[] mask, int width, int height)
    {
        var seen = new bool[mask.Length];
        var best = new List<int>();
        var stack = new Stack<int>();
        for (int start = 0; start < mask.Length; start++)
        {
            if (!mask[start] || seen[start]) continue;
            var component = new List<int>();
            seen[start] = true;
            stack.Push(start);
            while (stack.Count > 0)
            {
                int p = stack.Pop();
                component.Add(p);
                int x = p % width, y = p / width;
                void Visit(int q) { if (mask[q] && !seen[q]) { seen[q] = true; stack.Push(q); } }
                if (x > 0) Visit(p - 1);
                if (x + 1 < width) Visit(p + 1);
                if (y > 0) Visit(p - width);
                if (y + 1 < height) Visit(p + width);
            }
            if (component.Count > best.Count) best = component;
        }
        return best;
    }
}
