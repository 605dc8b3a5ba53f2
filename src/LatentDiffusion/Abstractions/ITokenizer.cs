namespace LatentDiffusion.Abstractions;

/// <summary>
/// Turns prompt text into the token ids a text encoder takes (CLIP's BPE tokenizer, or any replacement). Implementations
/// are immutable and thread-safe: one instance serves concurrent generations.
/// </summary>
public interface ITokenizer
{
    /// <summary>Tokenizes <paramref name="text"/>: start token, the text's tokens, end token; no padding, no truncation.</summary>
    int[] Encode(string text);

    /// <summary>
    /// Tokenizes <paramref name="text"/> to exactly <paramref name="maxLength"/> ids (start token, content, end token, pad
    /// tokens), keeping what truncation dropped so the caller can warn about it.
    /// </summary>
    TokenizedPrompt EncodePadded(string text, int maxLength);
}
