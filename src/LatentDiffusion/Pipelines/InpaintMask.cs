using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// The inpainting mask as the reference's mask processor prepares it (an image processor that resizes, converts to
/// grayscale and binarises, without normalising): white (and every gray of at least half intensity) marks what is
/// repainted, black what is kept.
/// </summary>
internal static class InpaintMask
{
    /// <summary>The gray value of a pixel as PIL's <c>convert("L")</c> computes it (ITU-R 601-2 luma, rounded).</summary>
    public static byte Luma(Rgb24 p) => (byte)((p.R * 19595 + p.G * 38470 + p.B * 7471 + 0x8000) >> 16);

    /// <summary>
    /// The mask condition <c>[1, 1, height, width]</c> float32 on the CPU, every value 0 or 1: the mask resized to the
    /// generation's size (Lanczos, as the init image), turned gray, scaled to [0, 1] and binarised (values below 0.5
    /// become 0, the others 1).
    /// </summary>
    public static Tensor ToCondition(Image<Rgb24> mask, int width, int height)
    {
        var gray = GrayAt(mask, width, height);
        var data = new float[gray.Length];
        for (int i = 0; i < gray.Length; i++) data[i] = gray[i] / 255f >= 0.5f ? 1f : 0f;
        return tensor(data, new long[] { 1, 1, height, width });
    }

    /// <summary>
    /// The condition at the latent grid, <c>[1, 1, height / f, width / f]</c>: nearest-neighbour sampling as the reference's
    /// <c>interpolate</c> with its default mode.
    /// </summary>
    public static Tensor ToLatentGrid(Tensor condition, int latentHeight, int latentWidth)
        => nn.functional.interpolate(condition, size: [latentHeight, latentWidth], mode: InterpolationMode.Nearest);

    /// <summary>The gray values of <paramref name="image"/> resized to width×height (Lanczos when the size differs), row by row.</summary>
    public static byte[] GrayAt(Image<Rgb24> image, int width, int height)
    {
        Image<Rgb24> source = image;
        if (image.Width != width || image.Height != height)
            source = image.Clone(c => c.Resize(new ResizeOptions { Size = new SixLabors.ImageSharp.Size(width, height), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Lanczos3 }));
        try
        {
            var gray = new byte[width * height];
            source.ProcessPixelRows(rows =>
            {
                for (int y = 0; y < rows.Height; y++)
                {
                    var row = rows.GetRowSpan(y);
                    for (int x = 0; x < row.Length; x++) gray[y * width + x] = Luma(row[x]);
                }
            });
            return gray;
        }
        finally
        {
            if (!ReferenceEquals(source, image)) source.Dispose();
        }
    }
}
