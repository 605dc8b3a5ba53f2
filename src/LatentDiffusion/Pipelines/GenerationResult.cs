using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>The images of one generation. Dispose it to release the images and tensors.</summary>
public sealed class GenerationResult : IDisposable
{
    /// <summary>Creates a result whose images all came from one seed; takes ownership of everything passed.</summary>
    public GenerationResult(IReadOnlyList<Image<Rgb24>> images, Tensor pixels, Tensor? latents, long seed)
        : this(images, pixels, latents, Enumerable.Repeat(seed, images.Count).ToArray())
    {
        Seed = seed;
    }

    /// <summary>Creates a result with each image's seed and, optionally, the time each phase took; takes ownership of everything passed.</summary>
    /// <exception cref="ArgumentException"><paramref name="seeds"/> does not have one seed per image.</exception>
    public GenerationResult(IReadOnlyList<Image<Rgb24>> images, Tensor pixels, Tensor? latents, IReadOnlyList<long> seeds, GenerationTimings? timings = null)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(seeds);
        if (seeds.Count != images.Count) throw new ArgumentException($"{seeds.Count} seed(s) for {images.Count} image(s); give one per image.", nameof(seeds));
        Images = images; Pixels = pixels; Latents = latents; Seeds = seeds; Timings = timings;
        Seed = seeds.Count > 0 ? seeds[0] : -1;
    }

    /// <summary>The images, 8-bit RGB (round(x·255) of <see cref="Pixels"/>).</summary>
    public IReadOnlyList<Image<Rgb24>> Images { get; }

    /// <summary>The images as float32 <c>[batch, height, width, 3]</c> in [0, 1] on the CPU (the reference's <c>output_type="np"</c>).</summary>
    public Tensor Pixels { get; }

    /// <summary>The final latents when <see cref="GenerationOptions.ReturnLatents"/> was set.</summary>
    public Tensor? Latents { get; }

    /// <summary>The first image's seed (the one given, or the one picked); -1 when explicit generators were passed.</summary>
    public long Seed { get; }

    /// <summary>
    /// Each image's seed: <c>Seed + i</c> for image i (a one-image generation with that seed makes the same image);
    /// -1 for images drawn from explicit generators.
    /// </summary>
    public IReadOnlyList<long> Seeds { get; }

    /// <summary>How long each phase of the generation took; null when the result was not made by a pipeline.</summary>
    public GenerationTimings? Timings { get; }

    /// <summary>
    /// Image <paramref name="index"/> as raw 8-bit RGB bytes (row by row, 3 bytes a pixel, no padding): a copy that
    /// needs no ImageSharp types.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">There is no image <paramref name="index"/>.</exception>
    public byte[] GetRgbBytes(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Images.Count);
        var image = Images[index];
        var bytes = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(bytes);
        return bytes;
    }

    /// <summary>Image <paramref name="index"/> as an <see cref="RgbImage"/> (a copy of its pixels, no ImageSharp types).</summary>
    /// <exception cref="ArgumentOutOfRangeException">There is no image <paramref name="index"/>.</exception>
    public RgbImage ToRgbImage(int index)
    {
        var bytes = GetRgbBytes(index);
        return new RgbImage(Images[index].Width, Images[index].Height, bytes);
    }

    /// <summary>Releases images and tensors.</summary>
    public void Dispose()
    {
        foreach (var i in Images) i.Dispose();
        Pixels.Dispose();
        Latents?.Dispose();
    }
}
