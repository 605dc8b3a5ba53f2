using LatentDiffusion.Abstractions;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// Prompt text to the context the UNet attends to: the reference's <c>encode_prompt</c> for a prompt that fits the text
/// encoder, and AUTOMATIC1111's chunks and attention weights beyond it (<see cref="PromptChunker"/>,
/// <see cref="PromptChunks.Encode"/>).
/// </summary>
internal sealed class PromptEncoder(ITokenizer tokenizer, ITextEncoder textEncoder, ILogger logger)
{
    // For the encoder's life: it caches the empty chunk that pads the shorter of prompt and negative prompt.
    private readonly PromptChunker _chunker = new(tokenizer, textEncoder.MaxPositions);

    /// <summary>
    /// The prompt's hidden states and, with guidance, the negative prompt's, with the same number of chunks: the one with
    /// fewer is padded with empty-prompt chunks, as AUTOMATIC1111 pads. Ready embeddings in <paramref name="options"/>
    /// are returned as given (and count for the padding when their length is a whole number of chunks). The negative
    /// prompt is encoded without clip skip, as in the reference.
    /// </summary>
    public (Tensor Positive, Tensor? Negative) Encode(string prompt, GenerationOptions options, bool guidance)
    {
        var positive = options.PromptEmbeddings is null ? _chunker.Tokenize(prompt, options, logger, "prompt") : null;
        var negative = guidance && options.NegativePromptEmbeddings is null ? _chunker.Tokenize(options.NegativePrompt ?? "", options, logger, "negative prompt") : null;
        int count = Math.Max(positive?.Count ?? _chunker.ChunksIn(options.PromptEmbeddings!),
            !guidance ? 0 : negative?.Count ?? _chunker.ChunksIn(options.NegativePromptEmbeddings!));
        var positiveStates = positive is null ? options.PromptEmbeddings! : Encode(_chunker.Pad(positive, count), options.ClipSkip);
        if (!guidance) return (positiveStates, null);
        var negativeStates = negative is null ? options.NegativePromptEmbeddings! : Encode(_chunker.Pad(negative, count), 0);
        return (positiveStates, negativeStates);
    }

    // Each chunk through the text encoder, with clip skip.
    private Tensor Encode(PromptChunks chunks, int clipSkip) => chunks.Encode(ids => textEncoder.Encode(ids, clipSkip), textEncoder.Device);
}
