using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// A prompt as a text encoder takes it: one or more chunks of exactly the encoder's positions (start token, up to
/// positions − 2 prompt tokens, end token, pad tokens), each token with its attention weight. Immutable.
/// </summary>
internal sealed class PromptChunks
{
    /// <param name="ids">The chunks' token ids, each of the encoder's length.</param>
    /// <param name="weights">The weight of every id (1 for the start, end and pad tokens), or null when all are 1.</param>
    /// <param name="droppedIds">Tokens cut off when the prompt was truncated to one chunk (empty otherwise).</param>
    /// <param name="droppedText">Those tokens as text, when the tokenizer gave it (empty otherwise).</param>
    public PromptChunks(IReadOnlyList<int[]> ids, IReadOnlyList<double[]>? weights, int[]? droppedIds = null, string? droppedText = null)
    {
        if (ids.Count == 0) throw new ArgumentException("A prompt has at least one chunk.", nameof(ids));
        if (weights is not null && (weights.Count != ids.Count || weights.Where((w, i) => w.Length != ids[i].Length).Any()))
            throw new ArgumentException("Every id needs a weight.", nameof(weights));
        Ids = ids;
        Weights = weights is not null && weights.Any(w => w.Any(x => x != 1.0)) ? weights : null;
        DroppedIds = droppedIds ?? [];
        DroppedText = droppedText ?? "";
    }

    /// <summary>The chunks' ids.</summary>
    public IReadOnlyList<int[]> Ids { get; }

    /// <summary>The weight of every id, or null when every weight is 1 (nothing to reweigh).</summary>
    public IReadOnlyList<double[]>? Weights { get; }

    /// <summary>Number of chunks.</summary>
    public int Count => Ids.Count;

    /// <summary>Tokens cut off by truncation (empty unless the prompt was truncated).</summary>
    public int[] DroppedIds { get; }

    /// <summary>The cut-off tokens as text (may be empty even when tokens were cut).</summary>
    public string DroppedText { get; }

    /// <summary>These chunks followed by <paramref name="empty"/> (an empty prompt's chunk) until there are <paramref name="count"/>.</summary>
    public PromptChunks PadTo(int count, int[] empty)
    {
        if (count <= Count) return this;
        var ids = Ids.Concat(Enumerable.Repeat(empty, count - Count)).ToList();
        var weights = Weights?.Concat(Enumerable.Repeat(Enumerable.Repeat(1.0, empty.Length).ToArray(), count - Count)).ToList();
        return new PromptChunks(ids, weights, DroppedIds, DroppedText);
    }

    /// <summary>
    /// The hidden states <c>[1, chunks × positions, hidden]</c>: each chunk through <paramref name="encode"/> on its own
    /// (ids <c>[1, positions]</c> int64 on <paramref name="device"/>), then, as AUTOMATIC1111 does for a chunk with
    /// weights, every position's hidden state multiplied by its weight and the whole chunk rescaled so that its mean
    /// equals the mean before weighting; the chunks concatenated along the tokens. Chunks whose weights are all 1 are
    /// exactly what <paramref name="encode"/> returned (the weighting would multiply them by exactly 1).
    /// </summary>
    public Tensor Encode(Func<Tensor, Tensor> encode, Device device)
    {
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>(Count);
        for (int c = 0; c < Count; c++)
        {
            var ids = tensor(Ids[c].Select(i => (long)i).ToArray(), [1, Ids[c].Length], ScalarType.Int64).to(device);
            var hidden = encode(ids);
            if (Weights is { } all && all[c].Any(w => w != 1.0)) hidden = Reweigh(hidden, all[c]);
            parts.Add(hidden);
        }
        return (parts.Count == 1 ? parts[0] : cat(parts, 1)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A chunk's mean counts as zero below this fraction of its mean absolute value: it is then rounding noise (a text
    /// encoder whose final layer norm has no shift gives a mean of exactly 0 in exact arithmetic, about 1e-8 of the
    /// values in float32, and 0 or -1e-8 on another CPU's kernels), and a ratio of two such means is noise too.
    /// </summary>
    internal const double NegligibleMean = 1e-4;

    /// <summary>
    /// A1111's emphasis ("Original"): z × w, then × mean(z) / mean(z × w), in float32 (its weights are float32). When
    /// either mean is negligible (<see cref="NegligibleMean"/>), the rescaling is left out (z × w): A1111's ratio would be
    /// rounding noise there, a zero or NaN or huge factor that changes from one CPU to another.
    /// </summary>
    private static Tensor Reweigh(Tensor hidden, double[] weights)
    {
        var z = hidden.to(ScalarType.Float32);
        var w = tensor(weights.Select(x => (float)x).ToArray(), [1, weights.Length, 1]).to(z.device);
        var originalMean = z.mean();
        var weighted = z * w;
        var newMean = weighted.mean();
        double negligible = NegligibleMean * z.abs().mean().item<float>();
        if (!(Math.Abs(originalMean.item<float>()) > negligible && Math.Abs(newMean.item<float>()) > negligible)) return weighted.to(hidden.dtype);
        return (weighted * (originalMean / newMean)).to(hidden.dtype);
    }
}
