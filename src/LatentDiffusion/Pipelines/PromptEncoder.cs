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
        var chunker = _chunker;
        var positive = options.PromptEmbeddings is null ? Tokenize(chunker, prompt, options, "prompt") : null;
        var negative = guidance && options.NegativePromptEmbeddings is null ? Tokenize(chunker, options.NegativePrompt ?? "", options, "negative prompt") : null;
        int count = Math.Max(positive?.Count ?? ChunksIn(options.PromptEmbeddings!),
            !guidance ? 0 : negative?.Count ?? ChunksIn(options.NegativePromptEmbeddings!));
        var positiveStates = positive is null ? options.PromptEmbeddings! : Encode(Pad(positive, count, chunker), options.ClipSkip);
        if (!guidance) return (positiveStates, null);
        var negativeStates = negative is null ? options.NegativePromptEmbeddings! : Encode(Pad(negative, count, chunker), 0);
        return (positiveStates, negativeStates);
    }

    private PromptChunks Tokenize(PromptChunker chunker, string text, GenerationOptions options, string what)
    {
        var chunks = chunker.Tokenize(text, options.PromptSyntax, options.TruncateLongPrompts);
        if (chunks.DroppedIds.Length > 0)
            logger.LogWarning("The {What} is longer than {Max} tokens; {Count} tokens were dropped: \"{Dropped}\"", what, textEncoder.MaxPositions,
                chunks.DroppedIds.Length, Abbreviate(chunks.DroppedText));
        else if (chunks.Count > 1)
            logger.LogDebug("The {What} is encoded in {Chunks} chunks of {Length} tokens.", what, chunks.Count, chunker.ChunkLength);
        return chunks;
    }

    private static PromptChunks Pad(PromptChunks chunks, int count, PromptChunker chunker) => chunks.Count >= count ? chunks : chunks.PadTo(count, chunker.EmptyChunk);

    private Tensor Encode(PromptChunks chunks, int clipSkip) => chunks.Encode(ids => textEncoder.Encode(ids, clipSkip), textEncoder.Device);

    /// <summary>Whole chunks in ready embeddings <c>[batch, tokens, dim]</c> (1 when the length is not a multiple).</summary>
    private int ChunksIn(Tensor embeddings)
        => embeddings.dim() == 3 && embeddings.shape[1] % textEncoder.MaxPositions == 0 ? (int)(embeddings.shape[1] / textEncoder.MaxPositions) : 1;

    /// <summary>The longest dropped text quoted in the warning, in characters.</summary>
    internal const int MaxQuoted = 80;

    /// <summary>At most <see cref="MaxQuoted"/> characters of <paramref name="text"/> (whole characters), then "..." if cut.</summary>
    internal static string Abbreviate(string text)
    {
        if (text.Length <= MaxQuoted) return text;
        int cut = MaxQuoted;
        if (char.IsHighSurrogate(text[cut - 1])) cut--;
        return text[..cut] + "...";
    }
}
