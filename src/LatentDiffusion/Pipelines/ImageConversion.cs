using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>Between ImageSharp images and the tensors the models take, as the reference's image processor does it.</summary>
public static class ImageConversion
{
    /// <summary>
    /// An image to a float32 tensor <c>[1, 3, H, W]</c> in [-1, 1] (x/255·2 − 1). When <paramref name="width"/>/<paramref name="height"/>
    /// differ from the image's size the image is resized first (Lanczos, as the reference); the caller chooses multiples of 8.
    /// </summary>
    public static Tensor ToTensor(Image<Rgb24> image, int width, int height)
    {
        Image<Rgb24> source = image;
        if (image.Width != width || image.Height != height)
            source = image.Clone(c => c.Resize(new ResizeOptions { Size = new SixLabors.ImageSharp.Size(width, height), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Lanczos3 }));
        try
        {
            var data = new float[3 * height * width];
            int plane = height * width;
            source.ProcessPixelRows(rows =>
            {
                for (int y = 0; y < rows.Height; y++)
                {
                    var row = rows.GetRowSpan(y);
                    for (int x = 0; x < row.Length; x++)
                    {
                        int i = y * width + x;
                        data[i] = row[x].R / 255f * 2f - 1f;
                        data[plane + i] = row[x].G / 255f * 2f - 1f;
                        data[2 * plane + i] = row[x].B / 255f * 2f - 1f;
                    }
                }
            });
            return tensor(data, new long[] { 1, 3, height, width });
        }
        finally
        {
            if (!ReferenceEquals(source, image)) source.Dispose();
        }
    }

    /// <summary>Decoded images <c>[B, 3, H, W]</c> in about [-1, 1] to float32 <c>[B, H, W, 3]</c> in [0, 1] on the CPU.</summary>
    public static Tensor ToPixels(Tensor decoded)
    {
        using var scope = NewDisposeScope();
        return (decoded.to(ScalarType.Float32) / 2 + 0.5).clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>One image of <paramref name="pixels"/> (<c>[B, H, W, 3]</c> float in [0, 1]) as 8-bit RGB, round(x·255).</summary>
    public static Image<Rgb24> ToImage(Tensor pixels, int index)
    {
        using var scope = NewDisposeScope();
        var bytes = (pixels[index] * 255).round().clamp(0, 255).to(ScalarType.Byte).contiguous();
        int h = (int)bytes.shape[0], w = (int)bytes.shape[1];
        var data = bytes.data<byte>().ToArray();
        return Image.LoadPixelData<Rgb24>(data, w, h);
    }
}
