using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// An 8-bit RGB image as raw bytes (row by row, 3 bytes a pixel: R, G, B, no padding), for apps that do not use the
/// ImageSharp version this library is built on: see <see cref="GenerationOptions.InitImagePixels"/> and
/// <see cref="GenerationResult.ToRgbImage"/>.
/// </summary>
public sealed record RgbImage
{
    /// <summary>Wraps <paramref name="pixels"/> (not copied).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A side is not positive.</exception>
    /// <exception cref="ArgumentException"><paramref name="pixels"/> is not <c>width · height · 3</c> bytes long.</exception>
    public RgbImage(int width, int height, byte[] pixels)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentNullException.ThrowIfNull(pixels);
        if ((long)width * height * 3 != pixels.LongLength)
            throw new ArgumentException($"An RGB image of {width}x{height} needs {(long)width * height * 3} bytes; got {pixels.LongLength}.", nameof(pixels));
        Width = width;
        Height = height;
        Pixels = pixels;
    }

    /// <summary>The width in pixels.</summary>
    public int Width { get; }

    /// <summary>The height in pixels.</summary>
    public int Height { get; }

    /// <summary>The pixels: <c>Width · Height · 3</c> bytes, R, G, B, row by row from the top left.</summary>
    public byte[] Pixels { get; }

    /// <summary>A copy as an ImageSharp image.</summary>
    internal Image<Rgb24> ToImage() => Image.LoadPixelData<Rgb24>(Pixels, Width, Height);
}
