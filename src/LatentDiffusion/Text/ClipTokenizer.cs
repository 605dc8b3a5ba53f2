using System.Text;
using System.Text.Json;
using LatentDiffusion.Abstractions;
using Microsoft.ML.Tokenizers;

namespace LatentDiffusion.Text;

/// <summary>
/// The CLIP byte-level BPE tokenizer of Stable Diffusion, matching the reference <c>CLIPTokenizer</c>: special tokens are
/// cut out of the raw text first, the rest is normalised (NFC, white space collapsed, lower case), split into words by
/// CLIP's pattern, and each word is BPE-encoded over UTF-8 bytes with the <c>&lt;/w&gt;</c> end-of-word suffix.
/// </summary>
public sealed class ClipTokenizer : ITokenizer
{
    /// <summary>The number of positions of every CLIP text encoder Stable Diffusion uses.</summary>
    public const int DefaultMaxLength = 77;

    private const string EndOfWord = "</w>";
    private const string DefaultBos = "<|startoftext|>", DefaultEos = "<|endoftext|>";

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<int, string> _idToToken;
    private readonly Dictionary<string, int> _addedTokens;
    private readonly HashSet<int> _specialIds;
    // Textual-inversion tokens of several vectors: the token stands for all its ids (diffusers' maybe_convert_prompt).
    private readonly Dictionary<string, int[]> _expansions;

    /// <summary>Id of the start token <c>&lt;|startoftext|&gt;</c>.</summary>
    public int BosTokenId { get; }

    /// <summary>Id of the end token <c>&lt;|endoftext|&gt;</c>.</summary>
    public int EosTokenId { get; }

    /// <summary>Id of the pad token: <c>&lt;|endoftext|&gt;</c> for SD 1.x, <c>!</c> (0) for SD 2.x.</summary>
    public int PadTokenId { get; }

    /// <summary>The pad token's text.</summary>
    public string PadToken { get; }

    /// <summary>The tokenizer's <c>model_max_length</c> (77 for the CLIP text encoders).</summary>
    public int MaxLength { get; }

    /// <summary>Number of entries in the vocabulary (49,408 for CLIP).</summary>
    public int VocabularySize => _idToToken.Count;

    /// <summary>Where the tokenizer was loaded from, for messages.</summary>
    public string Source { get; }

    private ClipTokenizer(string source, Dictionary<string, int> vocab, IReadOnlyList<string> merges, Dictionary<string, int> addedTokens, SpecialTokenNames names, int maxLength)
    {
        Source = source;
        _vocab = vocab;
        _expansions = new Dictionary<string, int[]>(StringComparer.Ordinal);
        _idToToken = new Dictionary<int, string>(vocab.Count);
        foreach (var (token, id) in vocab) _idToToken[id] = token;
        foreach (var (token, id) in addedTokens) _idToToken[id] = token;

        int Resolve(string token, string role) => addedTokens.TryGetValue(token, out int a) ? a : vocab.TryGetValue(token, out int v) ? v
            : throw new InvalidDataException($"Tokenizer '{source}': the {role} token '{token}' is not in the vocabulary.");
        BosTokenId = Resolve(names.Bos, "start (bos)");
        EosTokenId = Resolve(names.Eos, "end (eos)");
        PadTokenId = Resolve(names.Pad, "pad");
        int unkId = Resolve(names.Unk, "unknown (unk)");
        PadToken = names.Pad;
        MaxLength = maxLength;

        // The reference registers bos, eos, unk and pad as special tokens, which are matched in the raw text.
        _addedTokens = new Dictionary<string, int>(addedTokens, StringComparer.Ordinal);
        foreach (var (token, id) in new[] { (names.Bos, BosTokenId), (names.Eos, EosTokenId), (names.Unk, unkId), (names.Pad, PadTokenId) })
            _addedTokens.TryAdd(token, id);
        _specialIds = [.. _addedTokens.Values];

        _bpe = BpeTokenizer.Create(new BpeOptions(vocab)
        {
            Merges = merges,
            EndOfWordSuffix = EndOfWord,
            ContinuingSubwordPrefix = null,
            ByteLevel = true,
            UnknownToken = names.Unk,
            FuseUnknownTokens = false,
        });
    }

    private sealed record SpecialTokenNames(string Bos, string Eos, string Unk, string Pad);

    /// <summary>A copy of <paramref name="from"/> that also knows <paramref name="names"/> (ids from its vocabulary size on).</summary>
    private ClipTokenizer(ClipTokenizer from, IReadOnlyList<string> names)
    {
        Source = from.Source;
        _bpe = from._bpe;
        _vocab = from._vocab;
        _specialIds = from._specialIds;
        BosTokenId = from.BosTokenId;
        EosTokenId = from.EosTokenId;
        PadTokenId = from.PadTokenId;
        PadToken = from.PadToken;
        MaxLength = from.MaxLength;
        _idToToken = new Dictionary<int, string>(from._idToToken);
        _addedTokens = new Dictionary<string, int>(from._addedTokens, StringComparer.Ordinal);
        _expansions = new Dictionary<string, int[]>(from._expansions, StringComparer.Ordinal);
        int first = from.VocabularySize;
        for (int i = 0; i < names.Count; i++)
        {
            _idToToken[first + i] = names[i];
            _addedTokens[names[i]] = first + i;
        }
        if (names.Count > 1) _expansions[names[0]] = Enumerable.Range(first, names.Count).ToArray();
    }

    /// <summary>
    /// A tokenizer that also knows <paramref name="token"/>, for a textual-inversion embedding of
    /// <paramref name="vectorCount"/> vectors, as the reference's <c>load_textual_inversion</c> adds it: the names
    /// <c>token</c>, <c>token_1</c>, ..., <c>token_{n-1}</c> get the ids <see cref="VocabularySize"/> onwards, are matched in
    /// the raw text before the BPE (like the reference's added tokens), and <c>token</c> in a prompt stands for all
    /// <paramref name="vectorCount"/> ids (the reference rewrites it to <c>token token_1 ...</c> before tokenizing). This
    /// tokenizer is unchanged.
    /// </summary>
    /// <exception cref="ArgumentException">The token is empty or white space, or one of the names is already in the vocabulary or among the added tokens.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="vectorCount"/> is less than 1.</exception>
    public ClipTokenizer WithAddedToken(string token, int vectorCount = 1)
    {
        ArgumentNullException.ThrowIfNull(token);
        ArgumentOutOfRangeException.ThrowIfLessThan(vectorCount, 1);
        if (string.IsNullOrWhiteSpace(token) || token.Trim() != token)
            throw new ArgumentException($"The token '{token}' is empty or starts or ends with white space; a textual-inversion token is one word, such as '<my-style>'.", nameof(token));
        var names = new List<string> { token };
        for (int i = 1; i < vectorCount; i++) names.Add($"{token}_{i}");
        foreach (var name in names)
        {
            if (_addedTokens.TryGetValue(name, out int added))
                throw new ArgumentException($"The token '{name}' is already an added token of the tokenizer (id {added}); choose another token name.", nameof(token));
            if (_vocab.TryGetValue(name, out int id))
                throw new ArgumentException($"The token '{name}' is already in the tokenizer's vocabulary (id {id}); choose another token name.", nameof(token));
        }
        return new ClipTokenizer(this, names);
    }

    /// <summary>
    /// The ids <paramref name="token"/> stands for when it is written in a prompt: one id for a vocabulary or added
    /// token, all of a textual-inversion token's ids for one of several vectors; null when it is not a whole token.
    /// </summary>
    public IReadOnlyList<int>? IdsOf(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_expansions.TryGetValue(token, out var many)) return many;
        if (_addedTokens.TryGetValue(token, out int added)) return [added];
        return _vocab.TryGetValue(token, out int id) ? [id] : null;
    }

    /// <summary>
    /// The tokenizer of a model on disk: a diffusers folder's <c>tokenizer/</c>, or for a single-file checkpoint (which
    /// carries none) the <c>tokenizer/</c> of <paramref name="configDirectory"/>, a diffusers folder of the same family.
    /// For a single file without one, <c>SingleFileTokenizer.LoadAsync</c> (in <c>LatentDiffusion.Loading.SingleFile</c>)
    /// finds the tokenizer in the Hugging Face cache or downloads it, as loading a pipeline does.
    /// </summary>
    /// <exception cref="ArgumentException">A single file and no <paramref name="configDirectory"/>.</exception>
    /// <exception cref="FileNotFoundException">Nothing at <paramref name="modelPath"/>.</exception>
    public static ClipTokenizer ForModel(string modelPath, string? configDirectory = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelPath);
        if (Directory.Exists(modelPath)) return FromDirectory(Path.Combine(modelPath, "tokenizer"));
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"Model not found: '{modelPath}'.", modelPath);
        if (configDirectory is null)
            throw new ArgumentException($"'{modelPath}' is a single-file checkpoint, which carries no tokenizer: pass configDirectory, a diffusers folder of the same family (its tokenizer/), " +
                "or use SingleFileTokenizer.LoadAsync (LatentDiffusion.Loading.SingleFile), which finds CLIP's tokenizer in the Hugging Face cache or downloads it once, as StableDiffusionPipeline.LoadAsync does.");
        return FromDirectory(Path.Combine(configDirectory, "tokenizer"));
    }

    /// <summary>
    /// Loads a diffusers <c>tokenizer</c> folder: <c>tokenizer.json</c> when present, otherwise <c>vocab.json</c> +
    /// <c>merges.txt</c>; special tokens and <c>model_max_length</c> from <c>tokenizer_config.json</c> and
    /// <c>special_tokens_map.json</c> when present (CLIP's defaults otherwise: pad <c>&lt;|endoftext|&gt;</c>, 77).
    /// </summary>
    /// <exception cref="FileNotFoundException">The folder has neither <c>tokenizer.json</c> nor <c>vocab.json</c> and <c>merges.txt</c>.</exception>
    /// <exception cref="InvalidDataException">A file is malformed, or a special token is not in the vocabulary.</exception>
    /// <exception cref="NotSupportedException"><c>tokenizer.json</c> holds something other than a CLIP-style BPE model.</exception>
    public static ClipTokenizer FromDirectory(string tokenizerDir) => FromDirectoryWithPad(tokenizerDir, padToken: null);

    /// <summary>
    /// <see cref="FromDirectory(string)"/> with the pad token set to <paramref name="padToken"/> when given, whatever the
    /// folder's own files say: one vocabulary serves text encoders that pad differently (SDXL's second pads with <c>!</c>).
    /// </summary>
    internal static ClipTokenizer FromDirectoryWithPad(string tokenizerDir, string? padToken)
    {
        if (!Directory.Exists(tokenizerDir))
            throw new FileNotFoundException($"Tokenizer folder '{tokenizerDir}' does not exist (looked for tokenizer.json, or vocab.json and merges.txt, in it).", tokenizerDir);
        var (names, maxLength) = ReadSpecialTokens(tokenizerDir);
        if (padToken is not null) names = names with { Pad = padToken };
        string json = Path.Combine(tokenizerDir, "tokenizer.json");
        if (File.Exists(json)) return FromTokenizerJson(json, names, maxLength);
        string vocab = Path.Combine(tokenizerDir, "vocab.json"), merges = Path.Combine(tokenizerDir, "merges.txt");
        bool hasVocab = File.Exists(vocab), hasMerges = File.Exists(merges);
        if (!hasVocab || !hasMerges)
        {
            string missing = !hasVocab && !hasMerges ? "vocab.json and merges.txt" : !hasVocab ? "vocab.json" : "merges.txt";
            throw new FileNotFoundException(
                $"Tokenizer folder '{tokenizerDir}' has no tokenizer.json and is missing {missing} (a CLIP tokenizer needs tokenizer.json, or vocab.json and merges.txt).",
                !hasVocab ? vocab : merges);
        }
        return FromVocabAndMerges(vocab, merges, names.Pad, maxLength, names);
    }

    /// <summary>Builds the tokenizer from the classic <c>vocab.json</c> + <c>merges.txt</c> pair.</summary>
    /// <param name="vocabPath">The vocabulary (token → id JSON object).</param>
    /// <param name="mergesPath">The BPE merges, one pair per line, after an optional <c>#version</c> line.</param>
    /// <param name="padToken">The pad token (<c>&lt;|endoftext|&gt;</c> for SD 1.x, <c>!</c> for SD 2.x).</param>
    /// <param name="maxLength">The length prompts are padded or truncated to.</param>
    public static ClipTokenizer FromVocabAndMerges(string vocabPath, string mergesPath, string padToken = DefaultEos, int maxLength = DefaultMaxLength)
        => FromVocabAndMerges(vocabPath, mergesPath, padToken, maxLength, null);

    private static ClipTokenizer FromVocabAndMerges(string vocabPath, string mergesPath, string padToken, int maxLength, SpecialTokenNames? names)
    {
        var vocab = ReadVocab(vocabPath);
        var merges = ReadMerges(mergesPath);
        names = (names ?? new SpecialTokenNames(DefaultBos, DefaultEos, DefaultEos, padToken)) with { Pad = padToken };
        return new ClipTokenizer(Path.GetDirectoryName(Path.GetFullPath(vocabPath)) ?? vocabPath, vocab, merges, new Dictionary<string, int>(), names, maxLength);
    }

    private static ClipTokenizer FromTokenizerJson(string path, SpecialTokenNames names, int maxLength)
    {
        using var doc = ParseJson(path);
        var root = doc.RootElement;
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"Tokenizer file '{path}' has no \"model\" object.");
        string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "BPE";
        string suffix = model.TryGetProperty("end_of_word_suffix", out var s) && s.ValueKind == JsonValueKind.String ? s.GetString()! : "";
        if (type != "BPE" || suffix != EndOfWord)
            throw new NotSupportedException($"Tokenizer file '{path}' holds a {type} model with end_of_word_suffix '{suffix}'; only CLIP's byte-level BPE with '{EndOfWord}' is supported.");
        if (!model.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"Tokenizer file '{path}': model.vocab is missing or not an object.");
        var vocab = ReadVocab(v, path);
        if (!model.TryGetProperty("merges", out var m) || m.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"Tokenizer file '{path}': model.merges is missing or not an array.");
        var merges = new List<string>(m.GetArrayLength());
        foreach (var e in m.EnumerateArray())
        {
            // tokenizers writes merges either as "a b" strings (older) or as ["a", "b"] pairs (newer).
            if (e.ValueKind == JsonValueKind.String) merges.Add(e.GetString()!);
            else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2 && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String)
                merges.Add(e[0].GetString() + " " + e[1].GetString());
            else throw new InvalidDataException($"Tokenizer file '{path}': merge entry {e.GetRawText()} is neither \"a b\" nor [\"a\", \"b\"].");
        }
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var at) && at.ValueKind == JsonValueKind.Array)
            foreach (var e in at.EnumerateArray())
                if (e.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String && e.TryGetProperty("id", out var id) && id.TryGetInt32(out int idv))
                    added[c.GetString()!] = idv;
        return new ClipTokenizer(Path.GetDirectoryName(Path.GetFullPath(path)) ?? path, vocab, merges, added, names, maxLength);
    }

    /// <summary>Tokenizes <paramref name="text"/>: start token, the text's tokens, end token; no padding, no truncation.</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int> { BosTokenId };
        AppendContent(text, ids);
        ids.Add(EosTokenId);
        return [.. ids];
    }

    /// <summary>
    /// Tokenizes <paramref name="text"/> to exactly <paramref name="maxLength"/> ids, as the reference pipeline does
    /// (<c>padding="max_length", truncation=True</c>): a prompt too long keeps its first <c>maxLength - 2</c> tokens and
    /// the end token stays last; a short one is followed by the pad token.
    /// </summary>
    public TokenizedPrompt EncodePadded(string text, int maxLength = DefaultMaxLength)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 2);
        var content = new List<int>();
        AppendContent(text, content);
        int keep = Math.Min(content.Count, maxLength - 2);
        var ids = new int[maxLength];
        ids[0] = BosTokenId;
        content.CopyTo(0, ids, 1, keep);
        ids[keep + 1] = EosTokenId;
        for (int i = keep + 2; i < maxLength; i++) ids[i] = PadTokenId;
        int[] dropped = content.Skip(keep).ToArray();
        return new TokenizedPrompt(ids, dropped, dropped.Length > 0 ? Decode(dropped) : "");
    }

    /// <summary>
    /// Turns ids back into text: end-of-word markers become spaces and the byte-level characters become UTF-8 again.
    /// Special tokens (start, end, pad) are left out unless <paramref name="skipSpecialTokens"/> is false.
    /// </summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        var bytes = new List<byte>();
        var sb = new StringBuilder();
        void Flush() { sb.Append(Encoding.UTF8.GetString(bytes.ToArray())); bytes.Clear(); }
        foreach (int id in ids)
        {
            if (!_idToToken.TryGetValue(id, out var token)) throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is not in the vocabulary of '{Source}'.");
            if (_specialIds.Contains(id))
            {
                if (skipSpecialTokens) continue;
                Flush();
                sb.Append(token);
                continue;
            }
            if (!_vocab.ContainsKey(token) && _addedTokens.ContainsKey(token))
            {
                // An added (textual-inversion) token is a whole word of its own.
                Flush();
                sb.Append(token).Append(' ');
                continue;
            }
            bool endOfWord = token.EndsWith(EndOfWord, StringComparison.Ordinal);
            foreach (char c in endOfWord ? token[..^EndOfWord.Length] : token)
                bytes.Add(ByteLevel.TryGetByte(c, out byte b) ? b : (byte)'?');
            if (endOfWord) bytes.Add((byte)' ');
        }
        Flush();
        return sb.ToString().TrimEnd(' ');
    }

    private void AppendContent(string text, List<int> ids)
    {
        foreach (var (segment, specialId) in SplitOnAddedTokens(text))
        {
            if (specialId is int sid)
            {
                if (_expansions.TryGetValue(segment, out var many)) ids.AddRange(many);
                else ids.Add(sid);
                continue;
            }
            foreach (var word in ClipPreTokenizer.Split(ClipNormalizer.Instance.Normalize(segment)))
                ids.AddRange(_bpe.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
        }
    }

    /// <summary>Cuts added/special tokens out of the raw text, leftmost first and longest first at one position, as the reference does.</summary>
    private IEnumerable<(string Segment, int? Id)> SplitOnAddedTokens(string text)
    {
        int start = 0, i = 0;
        while (i < text.Length)
        {
            string? best = null;
            foreach (var token in _addedTokens.Keys)
                if (token.Length > (best?.Length ?? 0) && i + token.Length <= text.Length && string.CompareOrdinal(text, i, token, 0, token.Length) == 0)
                    best = token;
            if (best is null) { i++; continue; }
            if (i > start) yield return (text[start..i], null);
            yield return (best, _addedTokens[best]);
            i += best.Length;
            start = i;
        }
        if (start < text.Length) yield return (text[start..], null);
    }

    private static (SpecialTokenNames Names, int MaxLength) ReadSpecialTokens(string dir)
    {
        string? bos = null, eos = null, unk = null, pad = null;
        int maxLength = DefaultMaxLength;
        // special_tokens_map.json is read last: the reference lets it override tokenizer_config.json.
        foreach (string file in new[] { "tokenizer_config.json", "special_tokens_map.json" })
        {
            string path = Path.Combine(dir, file);
            if (!File.Exists(path)) continue;
            using var doc = ParseJson(path);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"Tokenizer file '{path}' is not a JSON object.");
            bos = TokenText(root, "bos_token", path) ?? bos;
            eos = TokenText(root, "eos_token", path) ?? eos;
            unk = TokenText(root, "unk_token", path) ?? unk;
            pad = TokenText(root, "pad_token", path) ?? pad;
            if (root.TryGetProperty("model_max_length", out var ml) && ml.ValueKind == JsonValueKind.Number)
            {
                // Tokenizers saved without a limit carry a huge placeholder (1e30); CLIP's 77 is then the real limit.
                double value = ml.GetDouble();
                if (value < 2 || value != Math.Floor(value))
                    throw new InvalidDataException($"Tokenizer file '{path}': model_max_length = {ml.GetRawText()} is not an integer of at least 2.");
                maxLength = value <= 1_000_000 ? (int)value : DefaultMaxLength;
            }
        }
        return (new SpecialTokenNames(bos ?? DefaultBos, eos ?? DefaultEos, unk ?? DefaultEos, pad ?? DefaultEos), maxLength);
    }

    private static string? TokenText(JsonElement root, string key, string path)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String) return c.GetString();
        throw new InvalidDataException($"Tokenizer file '{path}': '{key}' is {v.GetRawText()}, expected a string or an object with \"content\".");
    }

    private static Dictionary<string, int> ReadVocab(string path)
    {
        using var doc = ParseJson(path);
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"Vocabulary file '{path}' is not a JSON object.");
        return ReadVocab(doc.RootElement, path);
    }

    private static Dictionary<string, int> ReadVocab(JsonElement obj, string path)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in obj.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw new InvalidDataException($"Vocabulary '{path}': token '{p.Name}' has id {p.Value.GetRawText()}, expected a non-negative integer.");
            vocab[p.Name] = id;
        }
        if (vocab.Count == 0) throw new InvalidDataException($"Vocabulary '{path}' is empty.");
        return vocab;
    }

    private static List<string> ReadMerges(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"BPE merges file not found: {path}", path);
        var merges = new List<string>();
        int lineNo = 0;
        foreach (var raw in File.ReadLines(path, Encoding.UTF8))
        {
            lineNo++;
            string line = raw.TrimEnd('\r');
            if (line.Length == 0 || (lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            var parts = line.Split(' ');
            if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
                throw new InvalidDataException($"Merges file '{path}', line {lineNo}: '{line}' is not a pair of tokens separated by one space.");
            merges.Add(line);
        }
        return merges;
    }

    private static JsonDocument ParseJson(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file not found: {path}", path);
        try { return JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new InvalidDataException($"Tokenizer file '{path}' is not valid JSON: {e.Message}", e); }
    }
}
