using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Advanced;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace LatentDiffusion.Pipelines;

/// <summary>A rectangle of an image: columns [X1, X2), rows [Y1, Y2).</summary>
internal readonly record struct CropRegion(int X1, int Y1, int X2, int Y2)
{
    /// <summary>X2 − X1.</summary>
    public int Width => X2 - X1;

    /// <summary>Y2 − Y1.</summary>
    public int Height => Y2 - Y1;
}

/// <summary>
/// The reference's <c>padding_mask_crop</c>: inpaint only the part of the image around the mask, at the generation's
/// size, then paste the result back into the original image through the (soft) mask. The region is the bounding box of
/// the mask's non-black pixels grown by the padding and widened to the generation's aspect ratio; the crop is resized
/// into the generation's size keeping its aspect ratio (the gap filled with its edge rows or columns); the generated
/// image is resized back to the region (keeping the aspect ratio, the excess cropped) and blended over the original with
/// the mask as the weight.
/// </summary>
internal static class MaskCrop
{
    /// <summary>
    /// The region to inpaint (the reference's <c>get_crop_region</c>): every non-black pixel of <paramref name="mask"/>,
    /// <paramref name="pad"/> pixels around them (within the image), grown to the aspect ratio of
    /// <paramref name="width"/>×<paramref name="height"/> where the image allows.
    /// </summary>
    /// <exception cref="ArgumentException">The mask has no non-black pixel (there is nothing to crop to).</exception>
    public static CropRegion Region(Image<Rgb24> mask, int width, int height, int pad)
    {
        int w = mask.Width, h = mask.Height;
        var gray = InpaintMask.GrayAt(mask, w, h);
        int left = w, right = -1, top = h, bottom = -1;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                if (gray[y * w + x] == 0) continue;
                left = Math.Min(left, x); right = Math.Max(right, x);
                top = Math.Min(top, y); bottom = Math.Max(bottom, y);
            }
        if (right < 0)
            throw new ArgumentException("PaddingMaskCrop needs a mask with something to repaint: the mask is black everywhere, so there is no region to crop to.");

        int x1 = Math.Max(left - pad, 0), y1 = Math.Max(top - pad, 0);
        int x2 = Math.Min(right + 1 + pad, w), y2 = Math.Min(bottom + 1 + pad, h);
        double ratioCrop = (double)(x2 - x1) / (y2 - y1);
        double ratioProcessing = (double)width / height;
        if (ratioCrop > ratioProcessing)
        {
            // Taller: grow the rows, centred, shifted back inside the image.
            int diff = (int)((x2 - x1) / ratioProcessing - (y2 - y1));
            y1 -= diff / 2;
            y2 += diff - diff / 2;
            if (y2 >= h) { int over = y2 - h; y2 -= over; y1 -= over; }
            if (y1 < 0) { y2 -= y1; y1 = 0; }
            if (y2 >= h) y2 = h;
        }
        else
        {
            int diff = (int)((y2 - y1) * ratioProcessing - (x2 - x1));
            x1 -= diff / 2;
            x2 += diff - diff / 2;
            if (x2 >= w) { int over = x2 - w; x2 -= over; x1 -= over; }
            if (x1 < 0) { x2 -= x1; x1 = 0; }
            if (x2 >= w) x2 = w;
        }
        return new CropRegion(x1, y1, x2, y2);
    }

    /// <summary>
    /// <paramref name="image"/> cropped to <paramref name="region"/> and fitted into width×height keeping its aspect
    /// ratio, centred, the uncovered rows or columns filled with copies of the nearest edge (the reference's resize mode
    /// <c>fill</c>). A new image; the caller disposes it.
    /// </summary>
    public static Image<Rgb24> CropAndFill(Image<Rgb24> image, CropRegion region, int width, int height)
    {
        using var cropped = image.Clone(c => c.Crop(new Rectangle(region.X1, region.Y1, region.Width, region.Height)));
        double ratio = (double)width / height, sourceRatio = (double)cropped.Width / cropped.Height;
        int srcW = ratio < sourceRatio ? width : cropped.Width * height / cropped.Height;
        int srcH = ratio >= sourceRatio ? height : cropped.Height * width / cropped.Width;
        using var resized = Resize(cropped, Math.Max(srcW, 1), Math.Max(srcH, 1));
        var result = new Image<Rgb24>(width, height);
        int ox = width / 2 - srcW / 2, oy = height / 2 - srcH / 2;
        Paste(resized, result, ox, oy);
        if (ratio < sourceRatio && oy > 0)
        {
            // The rows above and below the fitted image continue its first and last rows.
            var first = EdgeLine(resized, rows: true, atStart: true);
            var last = EdgeLine(resized, rows: true, atStart: false);
            for (int y = 0; y < oy; y++)
            {
                for (int x = 0; x < width; x++) result[x, y] = first[x];
                if (oy + srcH + y < height)
                    for (int x = 0; x < width; x++) result[x, oy + srcH + y] = last[x];
            }
        }
        else if (ratio > sourceRatio && ox > 0)
        {
            var first = EdgeLine(resized, rows: false, atStart: true);
            var last = EdgeLine(resized, rows: false, atStart: false);
            for (int x = 0; x < ox; x++)
            {
                for (int y = 0; y < height; y++) result[x, y] = first[y];
                if (ox + srcW + x < width)
                    for (int y = 0; y < height; y++) result[ox + srcW + x, y] = last[y];
            }
        }
        return result;
    }

    /// <summary>
    /// The reference's <c>apply_overlay</c>: <paramref name="generated"/> resized into <paramref name="region"/> (keeping
    /// its aspect ratio, centred, the excess cropped) and blended over <paramref name="original"/> with the gray value of
    /// <paramref name="mask"/> as the weight (white: the generated pixel, black: the original); outside the region the
    /// original. A new image of the original's size; the caller disposes it.
    /// </summary>
    public static Image<Rgb24> Overlay(Image<Rgb24> original, Image<Rgb24> mask, Image<Rgb24> generated, CropRegion region)
    {
        int w = original.Width, h = original.Height;
        var weight = InpaintMask.GrayAt(mask, w, h);
        using var fitted = ResizeAndCrop(generated, region.Width, region.Height);
        var result = original.Clone();
        var fittedRows = new Rgb24[fitted.Height][];
        for (int y = 0; y < fitted.Height; y++)
        {
            fittedRows[y] = new Rgb24[fitted.Width];
            fitted.DangerousGetPixelRowMemory(y).Span.CopyTo(fittedRows[y]);
        }
        result.ProcessPixelRows(rows =>
        {
            for (int y = region.Y1; y < region.Y2; y++)
            {
                var row = rows.GetRowSpan(y);
                var source = fittedRows[y - region.Y1];
                for (int x = region.X1; x < region.X2; x++)
                {
                    float a = weight[y * w + x] / 255f;
                    var o = row[x];
                    var g = source[x - region.X1];
                    row[x] = new Rgb24(Blend(g.R, o.R, a), Blend(g.G, o.G, a), Blend(g.B, o.B, a));
                }
            }
        });
        return result;
    }

    private static byte Blend(byte generated, byte original, float a)
        => (byte)Math.Clamp(MathF.Round(generated * a + original * (1 - a)), 0, 255);

    /// <summary>The reference's resize mode <c>crop</c>: fit so that width×height is covered, centred, the excess cut off.</summary>
    private static Image<Rgb24> ResizeAndCrop(Image<Rgb24> image, int width, int height)
    {
        double ratio = (double)width / height, sourceRatio = (double)image.Width / image.Height;
        int srcW = ratio > sourceRatio ? width : image.Width * height / image.Height;
        int srcH = ratio <= sourceRatio ? height : image.Height * width / image.Width;
        using var resized = Resize(image, Math.Max(srcW, 1), Math.Max(srcH, 1));
        var result = new Image<Rgb24>(width, height);
        Paste(resized, result, width / 2 - srcW / 2, height / 2 - srcH / 2);
        return result;
    }

    private static Image<Rgb24> Resize(Image<Rgb24> image, int width, int height)
        => image.Width == width && image.Height == height ? image.Clone()
            : image.Clone(c => c.Resize(new ResizeOptions { Size = new Size(width, height), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Lanczos3 }));

    /// <summary>Copies <paramref name="source"/> into <paramref name="target"/> with its top left at (x, y), clipped to the target.</summary>
    private static void Paste(Image<Rgb24> source, Image<Rgb24> target, int x, int y)
    {
        for (int sy = 0; sy < source.Height; sy++)
        {
            int ty = y + sy;
            if (ty < 0 || ty >= target.Height) continue;
            var from = source.DangerousGetPixelRowMemory(sy).Span;
            var to = target.DangerousGetPixelRowMemory(ty).Span;
            for (int sx = 0; sx < source.Width; sx++)
            {
                int tx = x + sx;
                if (tx >= 0 && tx < target.Width) to[tx] = from[sx];
            }
        }
    }

    /// <summary>
    /// The edge line the reference fills a gap with: PIL resizing a zero-wide box at the image's edge to the gap, which
    /// with its Lanczos filter weighs the three lines nearest the edge at distances 0.5, 1.5 and 2.5.
    /// </summary>
    private static Rgb24[] EdgeLine(Image<Rgb24> source, bool rows, bool atStart)
    {
        int count = rows ? source.Height : source.Width, length = rows ? source.Width : source.Height;
        int taps = Math.Min(3, count);
        var weights = Enumerable.Range(0, taps).Select(k => Lanczos3(k + 0.5)).ToArray();
        double total = weights.Sum();
        var line = new Rgb24[length];
        for (int i = 0; i < length; i++)
        {
            double r = 0, g = 0, b = 0;
            for (int k = 0; k < taps; k++)
            {
                int index = atStart ? k : count - 1 - k;
                var p = rows ? source[i, index] : source[index, i];
                r += weights[k] * p.R; g += weights[k] * p.G; b += weights[k] * p.B;
            }
            line[i] = new Rgb24(ToByte(r / total), ToByte(g / total), ToByte(b / total));
        }
        return line;
    }

    private static double Lanczos3(double x)
    {
        if (x == 0) return 1;
        if (Math.Abs(x) >= 3) return 0;
        double px = Math.PI * x;
        return 3 * Math.Sin(px) * Math.Sin(px / 3) / (px * px);
    }

    private static byte ToByte(double v) => (byte)Math.Clamp(Math.Round(v), 0, 255);
}
