using LatentDiffusion.Layers;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>
/// The CLIP text transformer of Stable Diffusion (transformers' <c>CLIPTextModel</c>): token and position embeddings,
/// pre-norm causal transformer layers, and a final layer norm. Parameter names are the reference's without the
/// <c>text_model.</c> prefix (<c>embeddings.token_embedding.weight</c>, <c>encoder.layers.0.self_attn.q_proj.weight</c>,
/// <c>final_layer_norm.weight</c>, ...). With a <see cref="ClipTextConfig.ProjectionDim"/> it is transformers'
/// <c>CLIPTextModelWithProjection</c> (SDXL's second encoder): the same, plus <c>text_projection.weight</c>.
/// </summary>
public sealed class ClipTextModel : nn.Module<Tensor, Tensor>, ITextEncoder
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private const string ReferencePrefix = "text_model.";
    private const string PositionIdsBuffer = "embeddings.position_ids";

    private readonly ClipTextEmbeddings _embeddings;
    private readonly ClipEncoder _encoder;
    private readonly LayerNorm _finalLayerNorm;
    private readonly nn.Module<Tensor, Tensor>? _textProjection;

    /// <summary>The architecture.</summary>
    public ClipTextConfig Config { get; }

    /// <inheritdoc/>
    public int HiddenSize => Config.HiddenSize;

    /// <inheritdoc/>
    public int MaxPositions => Config.MaxPositionEmbeddings;

    /// <summary>
    /// Rows of the token embedding table: the config's <c>vocab_size</c>, plus the textual-inversion vectors appended
    /// with <see cref="AddTokenEmbeddings"/>. Token ids must be below it.
    /// </summary>
    public int VocabularySize => (int)_embeddings.TokenCount;

    /// <summary>
    /// Grows the token embedding table by the rows of <paramref name="vectors"/> (<c>[hidden]</c> or <c>[n, hidden]</c>,
    /// any floating dtype and device; converted to the model's), as the reference's <c>load_textual_inversion</c> does with
    /// <c>resize_token_embeddings</c>, and returns the id of the first new row (the old <see cref="VocabularySize"/>). The
    /// tokenizer must give the new token(s) these ids (<see cref="ClipTokenizer.WithAddedToken"/> does when its
    /// vocabulary size equals this one's). Not to be called while the model encodes on another thread.
    /// </summary>
    /// <exception cref="ArgumentException">The vectors are not floating point, not of rank 1 or 2, empty, not of width
    /// <see cref="HiddenSize"/>, or not finite.</exception>
    public int AddTokenEmbeddings(Tensor vectors)
    {
        ArgumentNullException.ThrowIfNull(vectors);
        if (!vectors.is_floating_point())
            throw new ArgumentException($"Token embeddings must be floating point; got {vectors.dtype}.", nameof(vectors));
        if (vectors.dim() is not (1 or 2) || vectors.shape[^1] != HiddenSize || (vectors.dim() == 2 && vectors.shape[0] == 0))
            throw new ArgumentException($"Token embeddings must be [{HiddenSize}] or [n, {HiddenSize}] (n ≥ 1, the text encoder's hidden size); got [{string.Join(", ", vectors.shape)}].", nameof(vectors));
        using (var check = NewDisposeScope())
            if (!vectors.isfinite().all().item<bool>())
                throw new ArgumentException("Token embeddings hold NaN or infinite values.", nameof(vectors));
        int first = VocabularySize;
        using var rows = vectors.dim() == 1 ? vectors.unsqueeze(0) : vectors.alias();
        _embeddings.AppendTokens(rows);
        return first;
    }

    /// <summary>Drops the token embedding rows from <paramref name="vocabularySize"/> on: undoes <see cref="AddTokenEmbeddings"/> when a load that grew it fails later.</summary>
    internal void RemoveTokenEmbeddingsFrom(int vocabularySize) => _embeddings.TruncateTokens(vocabularySize);

    /// <inheritdoc/>
    public int PooledSize => Config.ProjectionDim ?? Config.HiddenSize;

    /// <inheritdoc/>
    public Device Device { get; }

    /// <inheritdoc/>
    public ScalarType DType { get; }

    /// <summary>Builds the model with uninitialised weights directly on <paramref name="device"/> in <paramref name="dtype"/>; load weights before use.</summary>
    public ClipTextModel(ClipTextConfig config, Device device, ScalarType dtype) : base(nameof(ClipTextModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config;
        Device = device;
        DType = dtype;
        _embeddings = new ClipTextEmbeddings(config, device, dtype);
        _encoder = new ClipEncoder(config, device, dtype);
        _finalLayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        register_module("embeddings", _embeddings);
        register_module("encoder", _encoder);
        register_module("final_layer_norm", _finalLayerNorm);
        if (config.ProjectionDim is int projection)
        {
            _textProjection = ModuleBuilder.Linear(config.HiddenSize, projection, hasBias: false, device: device, dtype: dtype);
            register_module("text_projection", _textProjection);
        }
    }

    /// <summary>
    /// Loads <c>config.json</c> and the weights of a diffusers <c>text_encoder</c> folder. Weights come from
    /// <paramref name="weightsPath"/> when given (for example a <c>model.fp16.safetensors</c> variant), otherwise from
    /// <c>model.safetensors</c> in the folder.
    /// </summary>
    /// <exception cref="FileNotFoundException">The config or the weights file is missing.</exception>
    /// <exception cref="InvalidDataException">The config is invalid, or the weights do not match it (missing, unexpected or wrongly shaped tensors).</exception>
    /// <exception cref="NotSupportedException">The config asks for something not implemented (for example another <c>hidden_act</c>).</exception>
    public static ClipTextModel Load(string textEncoderDir, Device device, ScalarType dtype, string? weightsPath = null)
    {
        ArgumentNullException.ThrowIfNull(textEncoderDir);
        var config = JsonConfig.Load(Path.Combine(textEncoderDir, "config.json"));
        weightsPath ??= Path.Combine(textEncoderDir, "model.safetensors");
        if (!File.Exists(weightsPath))
            throw new FileNotFoundException($"Text encoder weights not found: looked for '{weightsPath}' (text encoder folder '{textEncoderDir}'; only .safetensors weights are read).", weightsPath);
        using var file = SafetensorsFile.Open(weightsPath);
        var weights = file.Entries.Keys.ToDictionary(k => k, k => TensorRef.Direct(file, k), StringComparer.Ordinal);
        return Load(weights, config, device, dtype, $"text encoder from '{textEncoderDir}'");
    }

    /// <summary>
    /// Builds the model described by <paramref name="config"/> and loads it from tensors that are already located (for
    /// example inside a single-file checkpoint). Names may carry the reference's <c>text_model.</c> prefix or not; the
    /// <c>embeddings.position_ids</c> buffer, when present, is ignored (positions are always 0..n-1).
    /// </summary>
    /// <exception cref="InvalidDataException">The config is invalid, or the tensors do not match it.</exception>
    /// <exception cref="NotSupportedException">The config asks for something not implemented.</exception>
    public static ClipTextModel Load(IReadOnlyDictionary<string, TensorRef> weights, JsonConfig config, Device device, ScalarType dtype, string? description = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(config);
        var cfg = ClipTextConfig.FromJson(config);
        string component = description ?? $"text encoder (config '{config.Source}')";
        var named = StripReferencePrefix(weights, component);
        // Names and shapes are checked against the config before the model is allocated.
        var model = WeightLoader.BuildChecked(d => new ClipTextModel(cfg, d, dtype), device, named, component, ignoredExtras: [PositionIdsBuffer]);
        model.eval();
        return model;
    }

    /// <summary>As <see cref="Load(IReadOnlyDictionary{string, TensorRef}, JsonConfig, Device, ScalarType, string?)"/> for weights that <see cref="CheckWeights"/> has accepted.</summary>
    internal static ClipTextModel LoadPrechecked(IReadOnlyDictionary<string, TensorRef> weights, JsonConfig config, Device device, ScalarType dtype, string component)
    {
        var cfg = ClipTextConfig.FromJson(config);
        var model = WeightLoader.BuildPrechecked(d => new ClipTextModel(cfg, d, dtype), device, StripReferencePrefix(weights, component), component);
        model.eval();
        return model;
    }

    /// <summary>Checks that <paramref name="weights"/> fit the model <paramref name="config"/> describes, building only its skeleton on the <c>meta</c> device.</summary>
    /// <exception cref="InvalidDataException">The config is invalid, or a weight is missing, unexpected, of the wrong shape or not floating-point.</exception>
    internal static void CheckWeights(IReadOnlyDictionary<string, TensorRef> weights, JsonConfig config, string component)
    {
        var cfg = ClipTextConfig.FromJson(config);
        using var skeleton = new ClipTextModel(cfg, new Device(DeviceType.META), ScalarType.Float32);
        WeightLoader.Check(skeleton, StripReferencePrefix(weights, component), component, ignoredExtras: [PositionIdsBuffer]);
    }

    private static Dictionary<string, TensorRef> StripReferencePrefix(IReadOnlyDictionary<string, TensorRef> weights, string component)
    {
        var named = new Dictionary<string, TensorRef>(StringComparer.Ordinal);
        foreach (var (key, value) in weights)
        {
            string name = key.StartsWith(ReferencePrefix, StringComparison.Ordinal) ? key[ReferencePrefix.Length..] : key;
            if (!named.TryAdd(name, value))
                throw new InvalidDataException($"Cannot load {component}: tensor '{name}' is given twice, with and without the '{ReferencePrefix}' prefix ({named[name]} and {value}).");
        }
        return named;
    }

    /// <summary>The last hidden state of <paramref name="inputIds"/> (<see cref="Encode"/> with no clip skip).</summary>
    public override Tensor forward(Tensor inputIds) => Encode(inputIds, 0);

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The ids are not an integer <c>[batch, positions]</c> tensor with at most
    /// <see cref="MaxPositions"/> positions and values inside the vocabulary, or <paramref name="clipSkip"/> is negative
    /// or more than the number of layers.</exception>
    public Tensor Encode(Tensor inputIds, int clipSkip = 0)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (clipSkip < 0 || clipSkip > Config.NumHiddenLayers)
            throw new ArgumentOutOfRangeException(nameof(clipSkip), clipSkip, $"clip skip must be between 0 and the number of layers ({Config.NumHiddenLayers}).");
        using var scope = NewDisposeScope();
        var h = Embed(inputIds);
        int layers = Config.NumHiddenLayers - clipSkip;
        if (layers > 0) h = _encoder.Forward(h, layers);
        return _finalLayerNorm.forward(h).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>The pooled output is taken at each row's end token: with <see cref="ClipTextConfig.EosTokenId"/> 2 (the
    /// public SD/SDXL configs) at the highest id, as the reference's legacy rule does, otherwise at the first
    /// <c>eos_token_id</c>.</remarks>
    /// <exception cref="ArgumentException">The ids are invalid (as for <see cref="Encode"/>).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fromEnd"/> is not between 1 and the number of layers + 1.</exception>
    public TextEncoderOutput EncodeHiddenStates(Tensor inputIds, int fromEnd, bool pooled)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (fromEnd < 1 || fromEnd > Config.NumHiddenLayers + 1)
            throw new ArgumentOutOfRangeException(nameof(fromEnd), fromEnd, $"the hidden state from the end must be between 1 and the number of layers + 1 ({Config.NumHiddenLayers + 1}).");
        using var scope = NewDisposeScope();
        var embedded = Embed(inputIds);
        int until = Config.NumHiddenLayers + 1 - fromEnd;
        var hidden = _encoder.Forward(embedded, 0, until);
        Tensor? pooledOutput = null;
        if (pooled)
        {
            var last = _encoder.Forward(hidden, until, Config.NumHiddenLayers);
            var normed = _finalLayerNorm.forward(last);
            var ids = inputIds.to(ScalarType.Int64, Device);
            var positions = Config.EosTokenId == 2 ? ids.argmax(-1) : ids.eq(Config.EosTokenId).to(ScalarType.Int32).argmax(-1);
            var rows = arange(ids.shape[0], dtype: ScalarType.Int64, device: Device);
            pooledOutput = normed[rows, positions];
            if (_textProjection is not null) pooledOutput = _textProjection.call(pooledOutput);
            pooledOutput = pooledOutput.MoveToOuterDisposeScope();
        }
        return new TextEncoderOutput(hidden.MoveToOuterDisposeScope(), pooledOutput);
    }

    /// <summary>Checks the ids and returns their token plus position embeddings.</summary>
    private Tensor Embed(Tensor inputIds)
    {
        if (inputIds.dim() != 2)
            throw new ArgumentException($"Token ids must be [batch, positions]; got [{string.Join(", ", inputIds.shape)}].", nameof(inputIds));
        if (inputIds.dtype is not (ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte))
            throw new ArgumentException($"Token ids must be integers; got {inputIds.dtype}.", nameof(inputIds));
        if (inputIds.shape[1] > Config.MaxPositionEmbeddings || inputIds.shape[1] == 0)
            throw new ArgumentException($"Token ids have {inputIds.shape[1]} positions; the text encoder takes 1 to {Config.MaxPositionEmbeddings}.", nameof(inputIds));

        using var scope = NewDisposeScope();
        var ids = inputIds.to(ScalarType.Int64, Device);
        if (ids.numel() > 0)
        {
            long min = ids.min().item<long>(), max = ids.max().item<long>();
            int vocabulary = VocabularySize;
            if (min < 0 || max >= vocabulary)
                throw new ArgumentException($"Token ids must be in [0, {vocabulary}); got values from {min} to {max}.", nameof(inputIds));
        }
        return _embeddings.forward(ids).MoveToOuterDisposeScope();
    }
}
