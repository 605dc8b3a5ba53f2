namespace LatentDiffusion.Abstractions;

/// <summary>A prompt tokenized to the text encoder's fixed length, with what truncation dropped (for a warning).</summary>
/// <param name="Ids">Exactly the requested length: start token, the prompt's tokens, end token, then pad tokens.</param>
/// <param name="DroppedIds">The prompt tokens cut to make it fit (empty when nothing was cut).</param>
/// <param name="DroppedText">Those tokens decoded back to text (empty when nothing was cut).</param>
public sealed record TokenizedPrompt(int[] Ids, int[] DroppedIds, string DroppedText)
{
    /// <summary>Whether the prompt was longer than the encoder takes and tokens were dropped.</summary>
    public bool Truncated => DroppedIds.Length > 0;
}
