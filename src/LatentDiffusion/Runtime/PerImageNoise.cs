using static TorchSharp.torch;

namespace LatentDiffusion.Runtime;

/// <summary>
/// Gaussian noise for a batch whose images each have their own generator (the reference's list of generators): the
/// pipeline's initial latents and the schedulers' per-step noise draw through it, so image i of a batch is the image a
/// one-image generation with generator i makes.
/// </summary>
internal static class PerImageNoise
{
    /// <summary>Row i of a <c>[n, ...]</c> float32 CPU draw from generator i, as the reference's <c>randn_tensor</c> with a list of generators.</summary>
    public static Tensor Randn(long[] shape, IReadOnlyList<Generator> generators)
    {
        if (shape.Length == 0 || shape[0] != generators.Count)
            throw new InvalidOperationException($"A draw of shape [{string.Join(", ", shape)}] does not have one row per generator ({generators.Count}).");
        long[] row = [1, .. shape[1..]];
        using var scope = NewDisposeScope();
        var rows = generators.Select(g => randn(row, ScalarType.Float32, CPU, generator: g)).ToArray();
        return cat(rows, 0).MoveToOuterDisposeScope();
    }
}
