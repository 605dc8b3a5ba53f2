using LatentDiffusion.Abstractions;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// Prompt text to <see cref="PromptChunks"/> for any tokenizer and encoder length, as AUTOMATIC1111 (and
/// stable-diffusion.cpp after it) handle long prompts: the prompt's tokens are cut into chunks of positions − 2 (75 for
/// CLIP), each chunk gets its own start and end token and padding, and <c>BREAK</c> ends a chunk early. A plain prompt
/// that fits one chunk is exactly the tokenizer's <see cref="ITokenizer.EncodePadded"/>, as before. Stateless apart
/// from the tokenizer; one per tokenizer and length, usable by any pipeline (SDXL runs one per text encoder).
/// </summary>
internal sealed class PromptChunker
{
    private readonly ITokenizer _tokenizer;
    private readonly int _positions;
    private int[]? _empty;

    /// <param name="tokenizer">The tokenizer of the text encoder.</param>
    /// <param name="positions">The text encoder's length (77 for CLIP).</param>
    public PromptChunker(ITokenizer tokenizer, int positions)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentOutOfRangeException.ThrowIfLessThan(positions, 3);
        _tokenizer = tokenizer;
        _positions = positions;
    }

    /// <summary>Prompt tokens per chunk (positions − 2).</summary>
    public int ChunkLength => _positions - 2;

    /// <summary>The chunk of an empty prompt: start, end and pad tokens (what a shorter prompt is padded with).</summary>
    public int[] EmptyChunk => _empty ??= _tokenizer.EncodePadded("", _positions).Ids;

    /// <summary>
    /// The chunks of <paramref name="text"/> under <paramref name="options"/>' prompt syntax and truncation. A cut is a
    /// warning that names <paramref name="what"/> (and <paramref name="encoder"/>, when a model has several) and quotes at
    /// most <see cref="MaxQuoted"/> characters of what was dropped; several chunks are a debug message.
    /// </summary>
    public PromptChunks Tokenize(string text, GenerationOptions options, ILogger logger, string what, string? encoder = null)
    {
        var chunks = Tokenize(text, options.PromptSyntax, options.TruncateLongPrompts);
        string of = encoder is null ? "" : " of " + encoder;
        if (chunks.DroppedIds.Length > 0)
            logger.LogWarning("The {What} is longer than {Max} tokens{Of}; {Count} tokens were dropped: \"{Dropped}\"", what, _positions, of,
                chunks.DroppedIds.Length, Abbreviate(chunks.DroppedText));
        else if (chunks.Count > 1)
            logger.LogDebug("The {What} is encoded in {Chunks} chunks of {Length} tokens{Of}.", what, chunks.Count, ChunkLength, of);
        return chunks;
    }

    /// <summary>
    /// <paramref name="chunks"/> padded with <see cref="EmptyChunk"/> to <paramref name="count"/> chunks; the empty prompt
    /// is tokenized only when padding is needed (a prompt that fits costs no second tokenizer call).
    /// </summary>
    public PromptChunks Pad(PromptChunks chunks, int count) => chunks.Count >= count ? chunks : chunks.PadTo(count, EmptyChunk);

    /// <summary>How many chunks ready embeddings <c>[batch, chunks × positions, hidden]</c> hold; 1 when their length is not a multiple of the positions.</summary>
    public int ChunksIn(Tensor embeddings)
        => embeddings.dim() == 3 && embeddings.shape[1] % _positions == 0 ? (int)(embeddings.shape[1] / _positions) : 1;

    /// <summary>The most characters of dropped prompt text a warning quotes.</summary>
    internal const int MaxQuoted = 80;

    /// <summary>At most <see cref="MaxQuoted"/> characters of <paramref name="text"/> (whole characters), then "..." if cut.</summary>
    internal static string Abbreviate(string text)
    {
        if (text.Length <= MaxQuoted) return text;
        int cut = MaxQuoted;
        if (char.IsHighSurrogate(text[cut - 1])) cut--;
        return text[..cut] + "...";
    }

    /// <summary>
    /// The chunks of <paramref name="prompt"/>. With <paramref name="truncate"/> only the first chunk is kept (the
    /// reference pipeline's truncation) and what was cut is in <see cref="PromptChunks.DroppedIds"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The prompt's A1111 syntax holds a weight that is not a number.</exception>
    public PromptChunks Tokenize(string prompt, PromptSyntax syntax, bool truncate)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var fragments = syntax == PromptSyntax.A1111 ? PromptAttentionParser.Parse(prompt) : [new PromptFragment(prompt, 1.0)];
        bool plain = fragments is [{ IsBreak: false, Weight: 1.0 } only] && only.Text == prompt;
        if (plain)
        {
            // Today's path, id for id: the tokenizer pads (and, asked to, truncates) itself.
            var padded = _tokenizer.EncodePadded(prompt, _positions);
            if (!padded.Truncated || truncate)
                return new PromptChunks([padded.Ids], null, padded.DroppedIds, padded.DroppedText);
        }

        var chunks = new List<int[]>();
        var weights = new List<double[]>();
        var ids = new List<int>();
        var chunkWeights = new List<double>();
        var contents = new List<int[]>();
        var (bos, eos, pad) = SpecialIds();

        void Close()
        {
            int n = ids.Count;
            contents.Add([.. ids]);
            chunks.Add([bos, .. ids, eos, .. Enumerable.Repeat(pad, ChunkLength - n)]);
            weights.Add([1.0, .. chunkWeights, 1.0, .. Enumerable.Repeat(1.0, ChunkLength - n)]);
            ids.Clear();
            chunkWeights.Clear();
        }

        foreach (var fragment in fragments)
        {
            if (fragment.IsBreak) { Close(); continue; }
            if (fragment.Text.Length == 0) continue;
            var encoded = _tokenizer.Encode(fragment.Text);
            if (encoded.Length < 2)
                throw new InvalidOperationException($"The tokenizer ({_tokenizer.GetType().Name}) returned {encoded.Length} ids for '{fragment.Text}'; ITokenizer.Encode returns the start token, the text's tokens and the end token.");
            for (int i = 1; i < encoded.Length - 1; i++)
            {
                if (ids.Count == ChunkLength) Close();
                ids.Add(encoded[i]);
                chunkWeights.Add(fragment.Weight);
            }
        }
        if (ids.Count > 0 || chunks.Count == 0) Close();

        if (truncate && chunks.Count > 1)
        {
            // The reference keeps the first positions − 2 tokens; the rest is reported.
            return new PromptChunks([chunks[0]], [weights[0]], contents.Skip(1).SelectMany(c => c).ToArray(), "");
        }
        return new PromptChunks(chunks, weights);
    }

    /// <summary>The start, end and pad ids, read from the tokenizer's padded empty prompt.</summary>
    private (int Bos, int Eos, int Pad) SpecialIds()
    {
        var empty = EmptyChunk;
        if (empty.Length != _positions)
            throw new InvalidOperationException($"The tokenizer ({_tokenizer.GetType().Name}) padded the empty prompt to {empty.Length} ids; {_positions} were asked for.");
        return (empty[0], empty[1], empty[2]);
    }
}
