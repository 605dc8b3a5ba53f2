using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Shapes;

/// <summary>What <see cref="ShapeJudge"/> sees in a picture. Shape, colour, size and position are null when no shape was found.</summary>
/// <param name="Shape">The shape kind.</param>
/// <param name="Color">The palette colour nearest to the shape's median colour.</param>
/// <param name="Size">The size, from the longer side of the shape's box.</param>
/// <param name="Position">The position whose anchor is nearest to the centre of the shape's box.</param>
/// <param name="Background">The palette colour nearest to the median of the border pixels.</param>
/// <param name="RegionPixels">Pixels of the shape region (largest connected set of pixels closer to the shape colour than to the background).</param>
/// <param name="FillRatio">Region pixels over the area of the region's bounding box.</param>
/// <param name="ShapeError">
/// How far the region is from the best-fitting ideal shape: the mean squared difference of coverage over the fitted
/// window, per region pixel (0 for a clean rendering; grows with blur, noise, and malformed shapes).
/// </param>
/// <param name="Confidence">
/// A heuristic in [0, 1]: the smallest of the margins of the colour, shape and position decisions (1 = far from any
/// decision boundary, 0 = on one). 0 when no shape was found.
/// </param>
public sealed record JudgeVerdict(ShapeKind? Shape, ShapeColor? Color, ShapeSize? Size, ShapePosition? Position, ShapeColor Background,
    int RegionPixels, double FillRatio, double ShapeError, double Confidence)
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
/// largest 4-connected set above one half, which ignores anti-aliasing and isolated noise. Shape: each ideal shape is
/// drawn with the region's area and centroid, sharp and softened by 3×3 and 5×5 box blurs, at three scales around
/// that area, and compared with the observed coverage; the kind of the closest drawing wins. Template fitting was
/// chosen over single measures (fill ratio of the box, extents) because soft edges, as a small model draws them, round
/// a small square's corners enough to pass for a circle and a diamond's tips enough to pass for one too. Position:
/// nearest anchor to the centre of the region's box; size: the box's longer side against the midpoint of the two
/// nominal sides.
/// </remarks>
public static class ShapeJudge
{
    /// <summary>Distance in RGB ([0, 1] per channel) from the background above which a pixel may belong to the shape in the first pass.</summary>
    public const double CandidateDistance = 0.2;

    private static readonly double[] Scales = [0.92, 1.0, 1.08];
    private static readonly int[] BlurRadii = [0, 1, 2];

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
        double sumX = 0, sumY = 0;
        foreach (int p in region)
        {
            int x = p % width, y = p / width;
            minX = Math.Min(minX, x); maxX = Math.Max(maxX, x);
            minY = Math.Min(minY, y); maxY = Math.Max(maxY, y);
            sumX += x + 0.5; sumY += y + 0.5;
        }
        int bw = maxX - minX + 1, bh = maxY - minY + 1;
        double fill = region.Count / (double)(bw * bh);
        var (shape, shapeError, shapeMargin) = FitShape(planes, n, width, height, bg, (dr, dg, db, len2),
            region.Count, sumX / region.Count, sumY / region.Count, minX, maxX, minY, maxY);

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
        return new JudgeVerdict(shape, color, size, position, background, region.Count, fill, shapeError, confidence);
    }

    /// <summary>
    /// Compares the observed coverage (projection on the background→shape line, clamped to [0, 1]) in the region's box
    /// grown by 4 pixels with every ideal shape of the same area and centroid, and returns the closest kind, its error
    /// per region pixel, and a margin (1 − best / runner-up kind's error).
    /// </summary>
    private static (ShapeKind Shape, double Error, double Margin) FitShape(float[] planes, int n, int width, int height,
        (double R, double G, double B) bg, (double R, double G, double B, double Len2) line, int area, double cx, double cy,
        int minX, int maxX, int minY, int maxY)
    {
        const int grow = 4;
        int x0 = Math.Max(0, minX - grow), x1 = Math.Min(width - 1, maxX + grow), y0 = Math.Max(0, minY - grow), y1 = Math.Min(height - 1, maxY + grow);
        int ww = x1 - x0 + 1, wh = y1 - y0 + 1;
        var observed = new double[ww * wh];
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++)
            {
                int p = y * width + x;
                double t = ((planes[p] - bg.R) * line.R + (planes[n + p] - bg.G) * line.G + (planes[2 * n + p] - bg.B) * line.B) / line.Len2;
                observed[(y - y0) * ww + (x - x0)] = Math.Clamp(t, 0, 1);
            }

        var errors = new Dictionary<ShapeKind, double>();
        var template = new double[ww * wh];
        foreach (var kind in Enum.GetValues<ShapeKind>())
        {
            double best = double.MaxValue;
            // The side that gives the region's area; the triangle's centroid sits a sixth of its height below its box centre.
            double areaFactor = kind switch { ShapeKind.Square => 1, ShapeKind.Circle => Math.PI / 4, _ => 0.5 };
            foreach (double scale in Scales)
            {
                double r = Math.Sqrt(area / areaFactor) * scale / 2;
                double ccy = kind == ShapeKind.Triangle ? cy - r / 3 : cy;
                DrawCoverage(template, ww, wh, x0, y0, kind, cx, ccy, r);
                foreach (int blur in BlurRadii)
                {
                    var candidate = blur == 0 ? template : BoxBlur(template, ww, wh, blur);
                    double sse = 0;
                    for (int i = 0; i < observed.Length; i++) { double d = observed[i] - candidate[i]; sse += d * d; }
                    best = Math.Min(best, sse);
                }
            }
            errors[kind] = best;
        }
        var ranked = errors.OrderBy(e => e.Value).ToList();
        double margin = ranked[1].Value > 0 ? 1 - ranked[0].Value / ranked[1].Value : 0;
        return (ranked[0].Key, ranked[0].Value / Math.Max(area, 1), margin);
    }

    private static void DrawCoverage(double[] target, int ww, int wh, int x0, int y0, ShapeKind kind, double cx, double cy, double r)
    {
        const int ss = 4;
        for (int y = 0; y < wh; y++)
            for (int x = 0; x < ww; x++)
            {
                int inside = 0;
                double px = x0 + x, py = y0 + y;
                if (px + 1 >= cx - r && px <= cx + r && py + 1 >= cy - r && py <= cy + r)
                    for (int j = 0; j < ss; j++)
                        for (int i = 0; i < ss; i++)
                            if (ShapesDataset.Inside(kind, px + (i + 0.5) / ss - cx, py + (j + 0.5) / ss - cy, r)) inside++;
                target[y * ww + x] = inside / (double)(ss * ss);
            }
    }

    private static double[] BoxBlur(double[] source, int ww, int wh, int radius)
    {
        var result = new double[source.Length];
        for (int y = 0; y < wh; y++)
            for (int x = 0; x < ww; x++)
            {
                double sum = 0;
                for (int dy = -radius; dy <= radius; dy++)
                    for (int dx = -radius; dx <= radius; dx++)
                        sum += source[Math.Clamp(y + dy, 0, wh - 1) * ww + Math.Clamp(x + dx, 0, ww - 1)];
                result[y * ww + x] = sum / ((2 * radius + 1) * (2 * radius + 1));
            }
        return result;
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
