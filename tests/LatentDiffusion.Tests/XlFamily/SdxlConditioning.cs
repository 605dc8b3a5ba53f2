using LatentDiffusion.Abstractions;
using LatentDiffusion.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>What the SDXL conditioning tests build by hand: a conditioner over a pipeline's encoders, one chunk's encoding.</summary>
internal static class SdxlConditioning
{
    /// <summary>A conditioner over <paramref name="pipeline"/>'s two tokenizers and encoders, with its settings or <paramref name="options"/>.</summary>
    public static SdxlConditioner Conditioner(StableDiffusionPipeline pipeline, StableDiffusionXLOptions? options = null)
        => new(pipeline.Tokenizer, pipeline.TextEncoder, pipeline.Tokenizer2!, pipeline.TextEncoder2!, options ?? pipeline.XLOptions!, NullLogger.Instance);

    /// <summary>One chunk of token ids through <paramref name="encoder"/>: the penultimate hidden states (and the pooled output when asked).</summary>
    public static (Tensor Hidden, Tensor? Pooled) EncodeChunk(ITextEncoder encoder, int[] ids, bool pooled)
    {
        using var t = tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]);
        var output = encoder.EncodeHiddenStates(t, 2, pooled);
        return (output.HiddenStates, output.Pooled);
    }
}
