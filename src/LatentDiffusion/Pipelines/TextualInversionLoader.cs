using LatentDiffusion.Text;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// Teaches one (tokenizer, text encoder) pair a textual-inversion token, as the reference's
/// <c>load_textual_inversion</c> does: everything is checked first, then the encoder's table grows and a tokenizer that
/// knows the token is returned (the given one is immutable). SDXL calls it once per text encoder.
/// </summary>
internal static class TextualInversionLoader
{
    /// <summary>The tokenizer that knows <paramref name="token"/>; <paramref name="encoder"/> has grown by <paramref name="vectors"/>' rows.</summary>
    /// <exception cref="ArgumentException">The token is taken or malformed.</exception>
    /// <exception cref="InvalidDataException">The vectors' width is not the encoder's hidden size.</exception>
    /// <exception cref="InvalidOperationException">The tokenizer and the encoder's table disagree on the vocabulary size.</exception>
    public static ClipTokenizer Add(ClipTokenizer tokenizer, ClipTextModel encoder, Tensor vectors, string token, string source)
    {
        if (vectors.dim() != 2 || vectors.shape[1] != encoder.HiddenSize)
            throw new InvalidDataException($"Textual-inversion embedding '{source}' has vectors of size {vectors.shape[^1]}; this text encoder's hidden size is {encoder.HiddenSize} (the embedding was trained for another model family).");
        if (tokenizer.VocabularySize != encoder.VocabularySize)
            throw new InvalidOperationException($"The tokenizer has {tokenizer.VocabularySize} tokens but the text encoder's embedding table has {encoder.VocabularySize} rows, so a new token's id would not name its row (is the text encoder shared with another pipeline that loaded an embedding?).");
        var taught = tokenizer.WithAddedToken(token, (int)vectors.shape[0]);
        int first = encoder.AddTokenEmbeddings(vectors);
        if (first != tokenizer.VocabularySize)
            throw new InvalidOperationException($"The text encoder gave the new token id {first}; the tokenizer expected {tokenizer.VocabularySize}.");
        return taught;
    }
}
