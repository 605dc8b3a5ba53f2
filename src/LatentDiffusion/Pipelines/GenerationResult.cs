using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>The images of one generation. Dispose it to release the images and tensors.</summary>
public sealed class GenerationResult : IDisposable
{
    /// <summary>Creates a result; takes ownership of everything passed.</summary>
    public GenerationResult(IReadOnlyList<Image<Rgb24>> images, Tensor pixels, Tensor? latents, long seed)
    {
        Images = images; Pixels = pixels; Latents = latents; Seed = seed;
    }

    /// <summary>The images, 8-bit RGB (round(x·255) of <see cref="Pixels"/>).</summary>
    public IReadOnlyList<Image<Rgb24>> Images { get; }

    /// <summary>The images as float32 <c>[batch, height, width, 3]</c> in [0, 1] on the CPU (the reference's <c>output_type="np"</c>).</summary>
    public Tensor Pixels { get; }

    /// <summary>The final latents when <see cref="GenerationOptions.ReturnLatents"/> was set.</summary>
    public Tensor? Latents { get; }

    /// <summary>The seed used (the one given, or the one picked); -1 when an explicit generator was passed.</summary>
    public long Seed { get; }

    /// <summary>Releases images and tensors.</summary>
    public void Dispose()
    {
        foreach (var i in Images) i.Dispose();
        Pixels.Dispose();
        Latents?.Dispose();
    }
}
