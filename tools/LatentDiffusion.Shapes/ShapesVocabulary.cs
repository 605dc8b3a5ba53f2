using System.Text;
using System.Text.Json;
using LatentDiffusion.Formats;
using LatentDiffusion.Text;

namespace LatentDiffusion.Shapes;

/// <summary>
/// A small closed CLIP-style byte-level BPE vocabulary for the shapes data set, written as the classic tokenizer folder
/// (<c>vocab.json</c>, <c>merges.txt</c>, <c>tokenizer_config.json</c>, <c>special_tokens_map.json</c>) that
/// <see cref="ClipTokenizer.FromDirectory"/> reads.
/// </summary>
/// <remarks>
/// Every caption word (<see cref="Words"/>) is one <c>word&lt;/w&gt;</c> token. As in CLIP, all 256 byte symbols and their
/// <c>&lt;/w&gt;</c> forms are in the vocabulary, so any other text still tokenizes (word pieces down to single letters).
/// The merges are learned by plain BPE over the word list (most frequent pair first, ties by ordinal order) until every
/// word is a single symbol; <see cref="Write"/> checks the result with the real tokenizer.
/// </remarks>
public static class ShapesVocabulary
{
    /// <summary>The <c>model_max_length</c> written: start token, up to 14 caption tokens, end token.</summary>
    public const int MaxLength = 16;

    /// <summary>The start token.</summary>
    public const string StartToken = "<|startoftext|>";

    /// <summary>The end token, also used as pad and unknown token (as in Stable Diffusion 1.x).</summary>
    public const string EndToken = "<|endoftext|>";

    private const string EndOfWord = "</w>";

    /// <summary>
    /// The whole words of the vocabulary: every word the captions use, a few glue words, and some synonyms a user may type
    /// (these get a token of their own but are not in the training captions).
    /// </summary>
    public static IReadOnlyList<string> Words { get; } = BuildWords();

    /// <summary>Writes the tokenizer folder (created if needed; existing files are replaced) and checks it with <see cref="ClipTokenizer"/>.</summary>
    /// <exception cref="InvalidOperationException">A word does not come out as one token (a bug in the merge learning).</exception>
    public static void Write(string tokenizerDir)
    {
        ArgumentException.ThrowIfNullOrEmpty(tokenizerDir);
        Directory.CreateDirectory(tokenizerDir);
        var (vocab, merges) = Build();
        var utf8 = new UTF8Encoding(false);
        // The library's one JSON file writer (indented, readable escaping), as for every config it saves.
        void WriteJson(string name, object value) => ConfigJson.Write(Path.Combine(tokenizerDir, name), JsonSerializer.SerializeToNode(value)!);
        WriteJson("vocab.json", vocab);
        var sb = new StringBuilder("#version: 0.2\n");
        foreach (var (a, b) in merges) sb.Append(a).Append(' ').Append(b).Append('\n');
        File.WriteAllText(Path.Combine(tokenizerDir, "merges.txt"), sb.ToString(), utf8);
        var special = new Dictionary<string, object>
        {
            ["bos_token"] = StartToken,
            ["eos_token"] = EndToken,
            ["unk_token"] = EndToken,
            ["pad_token"] = EndToken,
        };
        var config = new Dictionary<string, object>(special)
        {
            ["tokenizer_class"] = "CLIPTokenizer",
            ["model_max_length"] = MaxLength,
            ["do_lower_case"] = true,
            ["add_prefix_space"] = false,
            ["errors"] = "replace",
        };
        WriteJson("tokenizer_config.json", config);
        WriteJson("special_tokens_map.json", special);

        var tokenizer = ClipTokenizer.FromDirectory(tokenizerDir);
        foreach (var word in Words)
        {
            var ids = tokenizer.Encode(word);
            if (ids.Length != 3)
                throw new InvalidOperationException($"Tokenizer written to '{tokenizerDir}' splits '{word}' into {ids.Length - 2} tokens; every vocabulary word must be one.");
        }
    }

    /// <summary>
    /// Builds the vocabulary (token → id) and the ordered merges. Ids: the 256 byte symbols, their 256 <c>&lt;/w&gt;</c>
    /// forms, one id per merge result in merge order, then the start and end tokens — CLIP's layout in miniature.
    /// </summary>
    public static (Dictionary<string, int> Vocab, List<(string Left, string Right)> Merges) Build()
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) vocab[ByteLevel.ToChar((byte)b).ToString()] = vocab.Count;
        for (int b = 0; b < 256; b++) vocab[ByteLevel.ToChar((byte)b) + EndOfWord] = vocab.Count;

        // Each word as symbols; the last one carries the end-of-word marker, as the tokenizer splits it.
        var words = Words.Select(w =>
        {
            var symbols = w.Select(c => ByteLevel.ToChar((byte)c).ToString()).ToList();
            symbols[^1] += EndOfWord;
            return symbols;
        }).ToList();

        var merges = new List<(string, string)>();
        while (words.Any(w => w.Count > 1))
        {
            var counts = new Dictionary<(string, string), int>();
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++)
                    counts[(w[i], w[i + 1])] = counts.GetValueOrDefault((w[i], w[i + 1])) + 1;
            var best = counts.OrderByDescending(kv => kv.Value)
                .ThenBy(kv => kv.Key.Item1, StringComparer.Ordinal).ThenBy(kv => kv.Key.Item2, StringComparer.Ordinal).First().Key;
            merges.Add(best);
            string merged = best.Item1 + best.Item2;
            vocab.TryAdd(merged, vocab.Count);
            foreach (var w in words)
                for (int i = 0; i + 1 < w.Count; i++)
                    if (w[i] == best.Item1 && w[i + 1] == best.Item2)
                    {
                        w[i] = merged;
                        w.RemoveAt(i + 1);
                    }
        }
        vocab[StartToken] = vocab.Count;
        vocab[EndToken] = vocab.Count;
        return (vocab, merges);
    }

    private static List<string> BuildWords()
    {
        var words = new List<string>();
        words.AddRange(Enum.GetValues<ShapeKind>().Select(ShapeSpec.Word));
        words.AddRange(Enum.GetValues<ShapeColor>().Select(ShapeSpec.Word));
        words.AddRange(Enum.GetValues<ShapeSize>().Select(ShapeSpec.Word));
        words.AddRange(Enum.GetValues<ShapePosition>().SelectMany(p => ShapeSpec.Phrase(p).Split(' ')));
        words.AddRange(["a", "an", "the", "on", "of", "in", "at", "background", "with", "and", "is", "to",
            "medium", "big", "tiny", "middle", "centre", "shape", "picture", "image"]);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        return [.. words.Where(w => w.Length > 0 && w.All(char.IsAsciiLetterLower) && seen.Add(w))];
    }
}
