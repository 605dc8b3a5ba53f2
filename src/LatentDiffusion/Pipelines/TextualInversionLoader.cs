using LatentDiffusion.Text;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// Teaches (tokenizer, text encoder) pairs a textual-inversion token, as the reference's <c>load_textual_inversion</c>
/// does: everything is checked first for every pair, then the encoders' tables grow and tokenizers that know the token
/// are returned (the given ones are immutable). SDXL teaches both pairs at once: if growing one table fails, the tables
/// grown before are cut back, so a failed load changes nothing.
/// </summary>
internal static class TextualInversionLoader
{
    /// <summary>One pair to teach: the vectors go into <paramref name="Encoder"/>'s table, <paramref name="Name"/> is for messages.</summary>
    public sealed record Target(ClipTokenizer Tokenizer, ClipTextModel Encoder, Tensor Vectors, string Name);

    /// <summary>The tokenizer that knows <paramref name="token"/>; <paramref name="encoder"/> has grown by <paramref name="vectors"/>' rows.</summary>
    /// <exception cref="ArgumentException">The token is taken or malformed.</exception>
    /// <exception cref="InvalidDataException">The vectors' width is not the encoder's hidden size.</exception>
    /// <exception cref="InvalidOperationException">The tokenizer and the encoder's table disagree on the vocabulary size.</exception>
    public static ClipTokenizer Add(ClipTokenizer tokenizer, ClipTextModel encoder, Tensor vectors, string token, string source)
    {
        if (vectors.dim() != 2 || vectors.shape[1] != encoder.HiddenSize)
            throw new InvalidDataException($"Textual-inversion embedding '{source}' has vectors of size {vectors.shape[^1]}; this text encoder's hidden size is {encoder.HiddenSize} (the embedding was trained for another model family).");
        return Add([new Target(tokenizer, encoder, vectors, "the text encoder")], token)[0];
    }

    /// <summary>
    /// The tokenizers that know <paramref name="token"/>, in the order of <paramref name="targets"/>; every encoder has
    /// grown by its vectors. The vectors' widths must have been checked.
    /// </summary>
    /// <exception cref="ArgumentException">The token is taken or malformed in one of the tokenizers.</exception>
    /// <exception cref="InvalidOperationException">A tokenizer and its encoder's table disagree on the vocabulary size.</exception>
    public static ClipTokenizer[] Add(IReadOnlyList<Target> targets, string token)
    {
        var taught = new ClipTokenizer[targets.Count];
        for (int i = 0; i < targets.Count; i++)
        {
            var (tokenizer, encoder, vectors, name) = targets[i];
            if (tokenizer.VocabularySize != encoder.VocabularySize)
                throw new InvalidOperationException($"The tokenizer of {name} has {tokenizer.VocabularySize} tokens but its embedding table has {encoder.VocabularySize} rows, so a new token's id would not name its row (is the text encoder shared with another pipeline that loaded an embedding?).");
            taught[i] = tokenizer.WithAddedToken(token, (int)vectors.shape[0]);
        }
        int grown = 0;
        try
        {
            for (; grown < targets.Count; grown++)
            {
                var (tokenizer, encoder, vectors, name) = targets[grown];
                int first = encoder.AddTokenEmbeddings(vectors);
                if (first != tokenizer.VocabularySize)
                {
                    encoder.RemoveTokenEmbeddingsFrom(first);
                    throw new InvalidOperationException($"The text encoder {name} gave the new token id {first}; the tokenizer expected {tokenizer.VocabularySize}.");
                }
            }
        }
        catch
        {
            for (int i = 0; i < grown; i++) targets[i].Encoder.RemoveTokenEmbeddingsFrom(targets[i].Tokenizer.VocabularySize);
            throw;
        }
        return taught;
    }
}
