using LatentDiffusion.Formats;

namespace LatentDiffusion.Text;

/// <summary>The activation between a CLIP layer's two MLP projections.</summary>
public enum ClipActivation
{
    /// <summary><c>x * sigmoid(1.702 x)</c>, OpenAI CLIP (SD 1.x).</summary>
    QuickGelu,

    /// <summary>The exact (erf) GELU, OpenCLIP (SD 2.x).</summary>
    Gelu,
}

/// <summary>The shape of a CLIP text encoder, as <c>text_encoder/config.json</c> gives it (transformers' <c>CLIPTextConfig</c>).</summary>
/// <param name="VocabSize">Number of token embeddings.</param>
/// <param name="HiddenSize">Width of the hidden states.</param>
/// <param name="IntermediateSize">Width of each layer's MLP.</param>
/// <param name="NumAttentionHeads">Attention heads per layer.</param>
/// <param name="NumHiddenLayers">Number of transformer layers.</param>
/// <param name="MaxPositionEmbeddings">Number of positions (77).</param>
/// <param name="LayerNormEps">Epsilon of every layer norm.</param>
/// <param name="HiddenAct">The MLP activation.</param>
public sealed record ClipTextConfig(int VocabSize, int HiddenSize, int IntermediateSize, int NumAttentionHeads, int NumHiddenLayers,
    int MaxPositionEmbeddings = 77, double LayerNormEps = 1e-5, ClipActivation HiddenAct = ClipActivation.QuickGelu)
{
    /// <summary>Width of one attention head.</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>
    /// Output width of the <c>text_projection</c> of a <c>CLIPTextModelWithProjection</c> (SDXL's second encoder), or
    /// null for a plain <c>CLIPTextModel</c>, which has none. Read from <c>projection_dim</c> when <c>architectures</c>
    /// names <c>CLIPTextModelWithProjection</c>.
    /// </summary>
    public int? ProjectionDim { get; init; }

    /// <summary>
    /// The end token id the pooled output is taken at (<c>eos_token_id</c>, reference default 49407). The value 2, which
    /// the public SD and SDXL configs carry, selects the reference's legacy rule: the position of the highest id.
    /// </summary>
    public int EosTokenId { get; init; } = 49407;

    /// <summary>
    /// Reads the config. The sizes that fix the weights' shapes are required; <c>max_position_embeddings</c>,
    /// <c>layer_norm_eps</c> and <c>hidden_act</c> default as in the reference.
    /// </summary>
    /// <remarks>Sizes must lie within <see cref="ModelLimits"/> (<see cref="ModelLimits.MaxVocabulary"/>, <see cref="ModelLimits.MaxChannels"/>,
    /// <see cref="ModelLimits.MaxFeedForward"/>, <see cref="ModelLimits.MaxLayers"/>, <see cref="ModelLimits.MaxPositions"/>);
    /// <c>layer_norm_eps</c> must be positive and finite.</remarks>
    /// <exception cref="InvalidDataException">A required key is missing, or a value is of the wrong type or out of range.</exception>
    /// <exception cref="NotSupportedException"><c>hidden_act</c> is not <c>quick_gelu</c> or <c>gelu</c>, or <c>model_type</c> is not a CLIP text model.</exception>
    public static ClipTextConfig FromJson(JsonConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.RequireOneOf("model_type", "clip_text_model");
        config.RequireOneOf("hidden_act", "quick_gelu", "gelu");
        var result = new ClipTextConfig(
            VocabSize: Required(config, "vocab_size", ModelLimits.MaxVocabulary),
            HiddenSize: Required(config, "hidden_size", ModelLimits.MaxChannels),
            IntermediateSize: Required(config, "intermediate_size", ModelLimits.MaxFeedForward),
            NumAttentionHeads: Required(config, "num_attention_heads", ModelLimits.MaxChannels),
            NumHiddenLayers: Required(config, "num_hidden_layers", ModelLimits.MaxLayers),
            MaxPositionEmbeddings: ModelLimits.Check(config.Source, "max_position_embeddings", Positive(config, "max_position_embeddings", config.Int("max_position_embeddings", 77)), 1, ModelLimits.MaxPositions),
            LayerNormEps: config.Double("layer_norm_eps", 1e-5),
            HiddenAct: config.String("hidden_act", "quick_gelu") == "gelu" ? ClipActivation.Gelu : ClipActivation.QuickGelu)
        {
            EosTokenId = config.Int("eos_token_id", 49407),
            ProjectionDim = (config.StringArray("architectures") ?? []).Contains("CLIPTextModelWithProjection")
                ? ModelLimits.Check(config.Source, "projection_dim", Positive(config, "projection_dim", config.Int("projection_dim", 512)), 1, ModelLimits.MaxChannels)
                : null,
        };
        if (result.HiddenSize % result.NumAttentionHeads != 0)
            throw new InvalidDataException($"Config '{config.Source}': hidden_size {result.HiddenSize} is not divisible by num_attention_heads {result.NumAttentionHeads}.");
        ModelLimits.PositiveFinite(config.Source, "layer_norm_eps", result.LayerNormEps);
        return result;
    }

    /// <summary>
    /// The config as transformers writes <c>text_encoder/config.json</c> for a <c>CLIPTextModel</c> (<c>architectures</c>,
    /// <c>model_type</c> <c>clip_text_model</c>), loadable by transformers and by <see cref="FromJson"/>.
    /// </summary>
    /// <param name="bosTokenId">The tokenizer's start token id.</param>
    /// <param name="eosTokenId">The tokenizer's end token id (transformers pools the output at it).</param>
    /// <param name="padTokenId">The tokenizer's pad token id.</param>
    /// <param name="dtype">The dtype the weights are saved in, as transformers names it (<c>float32</c>, <c>float16</c>, ...).</param>
    public System.Text.Json.Nodes.JsonObject ToJson(int bosTokenId = 49406, int eosTokenId = 49407, int padTokenId = 49407, string dtype = "float32")
        => new()
        {
            ["architectures"] = new System.Text.Json.Nodes.JsonArray(ProjectionDim is null ? "CLIPTextModel" : "CLIPTextModelWithProjection"),
            ["attention_dropout"] = 0.0,
            ["bos_token_id"] = bosTokenId,
            ["dropout"] = 0.0,
            ["eos_token_id"] = eosTokenId,
            ["hidden_act"] = HiddenAct == ClipActivation.Gelu ? "gelu" : "quick_gelu",
            ["hidden_size"] = HiddenSize,
            ["initializer_factor"] = 1.0,
            ["initializer_range"] = 0.02,
            ["intermediate_size"] = IntermediateSize,
            ["layer_norm_eps"] = LayerNormEps,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["model_type"] = "clip_text_model",
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["pad_token_id"] = padTokenId,
            ["projection_dim"] = ProjectionDim ?? HiddenSize,
            ["torch_dtype"] = dtype,
            ["vocab_size"] = VocabSize,
        };

    private static int Required(JsonConfig config, string key, int max)
    {
        if (!config.Has(key)) throw new InvalidDataException($"Config '{config.Source}': required key '{key}' is missing (a CLIP text encoder config needs it).");
        return ModelLimits.Check(config.Source, key, Positive(config, key, config.Int(key, 0)), 1, max);
    }

    private static int Positive(JsonConfig config, string key, int value)
        => value > 0 ? value : throw new InvalidDataException($"Config '{config.Source}': '{key}' = {value}, expected a positive integer.");
}
