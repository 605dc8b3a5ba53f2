using LatentDiffusion.Abstractions;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>Prompt text to the context the UNet attends to, as the reference's <c>encode_prompt</c> does it.</summary>
internal sealed class PromptEncoder(ITokenizer tokenizer, ITextEncoder textEncoder, ILogger logger)
{
    /// <summary>Encodes one prompt, warning when it was cut at the tokenizer's length.</summary>
    public Tensor Encode(string prompt, int clipSkip)
    {
        var tokens = tokenizer.EncodePadded(prompt, textEncoder.MaxPositions);
        if (tokens.Truncated)
            logger.LogWarning("The prompt is longer than {Max} tokens; {Count} tokens were dropped: \"{Dropped}\"", textEncoder.MaxPositions,
                tokens.DroppedIds.Length, Abbreviate(tokens.DroppedText));
        using var ids = tensor(tokens.Ids.Select(i => (long)i).ToArray(), new long[] { 1, tokens.Ids.Length }, ScalarType.Int64);
        using var onDevice = ids.to(textEncoder.Device);
        return textEncoder.Encode(onDevice, clipSkip);
    }

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
