using LatentDiffusion.Runtime;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// The CPU generators one generation draws from, as the reference does with a list of generators: image i of a batch
/// draws its initial latents, its VAE posterior sample and noise (image-to-image) and its scheduler noise from its
/// own generator, so it is the image a one-image generation with that generator makes. With a seed, image i's
/// generator is seeded <c>seed + i</c>. One explicit <see cref="GenerationOptions.Generator"/> is one stream for the
/// whole batch (the reference with a single generator).
/// </summary>
internal sealed class ImageGenerators : IDisposable
{
    private readonly Generator[] _owned;

    private ImageGenerators(IReadOnlyList<Generator> generators, IReadOnlyList<long> seeds, Generator[] owned)
    {
        Generators = generators;
        Seeds = seeds;
        _owned = owned;
    }

    /// <summary>One generator per image, or one for the whole batch.</summary>
    public IReadOnlyList<Generator> Generators { get; }

    /// <summary>Each image's seed; -1 for images drawn from a caller's generator.</summary>
    public IReadOnlyList<long> Seeds { get; }

    /// <summary>The first generator (the only one for a single image or a single explicit generator).</summary>
    public Generator First => Generators[0];

    /// <summary>True when each image has its own generator.</summary>
    public bool PerImage => Generators.Count > 1;

    /// <summary>The generators <paramref name="options"/> asks for, for <paramref name="images"/> images.</summary>
    public static ImageGenerators For(GenerationOptions options, int images)
    {
        if (options.Generators is { } given)
            return new ImageGenerators(given.ToArray(), Enumerable.Repeat(-1L, images).ToArray(), []);
        if (options.Generator is { } one)
            return new ImageGenerators([one], Enumerable.Repeat(-1L, images).ToArray(), []);
        long seed = options.Seed ?? Random.Shared.NextInt64(0, 1L << 53);
        var seeds = Enumerable.Range(0, images).Select(i => unchecked(seed + i)).ToArray();
        var owned = seeds.Select(s => new Generator(unchecked((ulong)s))).ToArray();
        return new ImageGenerators(owned, seeds, owned);
    }

    /// <summary>
    /// Unit Gaussian noise of <paramref name="shape"/>, float32 on the CPU: one draw from the single generator, or row i
    /// (<c>shape[0]</c> must be the image count) from generator i.
    /// </summary>
    public Tensor Randn(long[] shape)
    {
        if (!PerImage) return randn(shape, ScalarType.Float32, CPU, generator: First);
        return PerImageNoise.Randn(shape, Generators);
    }

    /// <summary>Disposes the generators made here (not the caller's).</summary>
    public void Dispose()
    {
        foreach (var g in _owned) g.Dispose();
    }
}
