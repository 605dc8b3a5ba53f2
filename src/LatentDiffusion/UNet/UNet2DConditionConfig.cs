using System.Text.Json;
using LatentDiffusion.Layers;
using LatentDiffusion.Formats;

namespace LatentDiffusion.UNet;

/// <summary>
/// The architecture of a <see cref="UNet2DConditionModel"/>, as the reference's <c>unet/config.json</c> describes it.
/// Per-block settings are held expanded to one value per down block (in down-block order), the way the reference
/// expands a single value. Defaults are the reference's defaults, except <see cref="SampleSize"/> (64, Stable Diffusion 1.x).
/// </summary>
public sealed record UNet2DConditionConfig
{
    /// <summary>The down-block types this library implements.</summary>
    public static readonly IReadOnlyList<string> SupportedDownBlockTypes = ["CrossAttnDownBlock2D", "DownBlock2D"];

    /// <summary>The up-block types this library implements.</summary>
    public static readonly IReadOnlyList<string> SupportedUpBlockTypes = ["CrossAttnUpBlock2D", "UpBlock2D"];

    /// <summary>Latent channels taken in (<c>in_channels</c>).</summary>
    public int InChannels { get; init; } = 4;

    /// <summary>Channels predicted (<c>out_channels</c>).</summary>
    public int OutChannels { get; init; } = 4;

    /// <summary>The latent side the model was trained at (<c>sample_size</c>).</summary>
    public int SampleSize { get; init; } = 64;

    /// <summary>Map the input from [0, 1] to [-1, 1] before the first convolution (<c>center_input_sample</c>).</summary>
    public bool CenterInputSample { get; init; }

    /// <summary>Order the sinusoidal timestep features cosine first (<c>flip_sin_to_cos</c>).</summary>
    public bool FlipSinToCos { get; init; } = true;

    /// <summary>Shift of the frequency denominator of the timestep features (<c>freq_shift</c>).</summary>
    public double FreqShift { get; init; }

    /// <summary>Down-block types, from the full-resolution block down (<c>down_block_types</c>).</summary>
    public IReadOnlyList<string> DownBlockTypes { get; init; } = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"];

    /// <summary>The middle block's type, or null for none (<c>mid_block_type</c>).</summary>
    public string? MidBlockType { get; init; } = "UNetMidBlock2DCrossAttn";

    /// <summary>Up-block types, from the lowest resolution up (<c>up_block_types</c>).</summary>
    public IReadOnlyList<string> UpBlockTypes { get; init; } = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];

    /// <summary>Per down block: the transformer's first attention attends to the context instead of itself (<c>only_cross_attention</c>).</summary>
    public IReadOnlyList<bool> OnlyCrossAttention { get; init; } = [false, false, false, false];

    /// <summary>Channels of each resolution level (<c>block_out_channels</c>).</summary>
    public IReadOnlyList<int> BlockOutChannels { get; init; } = [320, 640, 1280, 1280];

    /// <summary>Per down block: residual layers (<c>layers_per_block</c>); the mirrored up block has one more.</summary>
    public IReadOnlyList<int> LayersPerBlock { get; init; } = [2, 2, 2, 2];

    /// <summary>Padding of the stride-2 down-sampling convolution (<c>downsample_padding</c>).</summary>
    public int DownsamplePadding { get; init; } = 1;

    /// <summary>Divisor of the middle block's residual outputs (<c>mid_block_scale_factor</c>).</summary>
    public double MidBlockScaleFactor { get; init; } = 1.0;

    /// <summary>Activation of the residual blocks and the time embedding (<c>act_fn</c>).</summary>
    public string ActFn { get; init; } = "silu";

    /// <summary>Groups of every group normalisation (<c>norm_num_groups</c>).</summary>
    public int NormNumGroups { get; init; } = 32;

    /// <summary>Epsilon of the residual blocks' and the output's group normalisation (<c>norm_eps</c>).</summary>
    public double NormEps { get; init; } = 1e-5;

    /// <summary>Per down block: width of the text context (<c>cross_attention_dim</c>).</summary>
    public IReadOnlyList<int> CrossAttentionDim { get; init; } = [1280, 1280, 1280, 1280];

    /// <summary>Per down block: transformer layers in each spatial transformer (<c>transformer_layers_per_block</c>).</summary>
    public IReadOnlyList<int> TransformerLayersPerBlock { get; init; } = [1, 1, 1, 1];

    /// <summary>
    /// Per down block: attention heads. The reference's config calls this <c>attention_head_dim</c> for historical
    /// reasons, but for this model it is the number of heads (the head width is the block's channels over it).
    /// </summary>
    public IReadOnlyList<int> AttentionHeads { get; init; } = [8, 8, 8, 8];

    /// <summary>Spatial transformers project in and out with linear layers instead of 1x1 convolutions (<c>use_linear_projection</c>).</summary>
    public bool UseLinearProjection { get; init; }

    /// <summary>Compute attention in float32 when the model runs in a half-precision dtype (<c>upcast_attention</c>).</summary>
    public bool UpcastAttention { get; init; }

    /// <summary>Kernel of the input convolution (<c>conv_in_kernel</c>).</summary>
    public int ConvInKernel { get; init; } = 3;

    /// <summary>Kernel of the output convolution (<c>conv_out_kernel</c>).</summary>
    public int ConvOutKernel { get; init; } = 3;

    /// <summary>Width of the time embedding, or null for four times the first block's channels (<c>time_embedding_dim</c>).</summary>
    public int? TimeEmbeddingDim { get; init; }

    /// <summary>Activation applied once to the time embedding before the blocks, or null (<c>time_embedding_act_fn</c>).</summary>
    public string? TimeEmbeddingActFn { get; init; }

    /// <summary>Activation after the time embedding's second linear layer, or null (<c>timestep_post_act</c>).</summary>
    public string? TimestepPostAct { get; init; }

    /// <summary>Width of an extra condition added to the timestep features (guidance embedding of distilled models), or null (<c>time_cond_proj_dim</c>).</summary>
    public int? TimeCondProjDim { get; init; }

    /// <summary>
    /// Added conditioning of the time embedding (<c>addition_embed_type</c>): null for none (SD 1.x/2.x), or
    /// <c>"text_time"</c> (SDXL: the pooled text embedding and the micro-conditioning time ids, see
    /// <see cref="AdditionTimeEmbedDim"/>).
    /// </summary>
    public string? AdditionEmbedType { get; init; }

    /// <summary>With <c>"text_time"</c>: width of the sinusoidal features of each time id (<c>addition_time_embed_dim</c>).</summary>
    public int? AdditionTimeEmbedDim { get; init; }

    /// <summary>
    /// With <c>"text_time"</c>: input width of the added embedding, the pooled text width plus the number of time ids times
    /// <see cref="AdditionTimeEmbedDim"/> (<c>projection_class_embeddings_input_dim</c>; 2816 = 1280 + 6 × 256 for SDXL base).
    /// </summary>
    public int? ProjectionClassEmbeddingsInputDim { get; init; }

    /// <summary>Number of resolution levels.</summary>
    public int BlockCount => BlockOutChannels.Count;

    /// <summary>The width of the time embedding the residual blocks receive.</summary>
    public int TimeEmbedDim => TimeEmbeddingDim ?? BlockOutChannels[0] * 4;

    /// <summary>
    /// Reads a diffusers <c>unet/config.json</c>. Every key that changes the computation is either honoured or, when its
    /// value selects something this library does not implement, refused.
    /// </summary>
    /// <exception cref="NotSupportedException">A value selects an architecture variant this library does not implement.</exception>
    /// <exception cref="InvalidDataException">A value has the wrong type, or the lists disagree in length.</exception>
    public static UNet2DConditionConfig FromJson(JsonConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        string[] activations = [.. Activation.Supported];

        // Conditioning and architecture variants outside Stable Diffusion 1.x/2.x that the reference can build.
        c.RequireOneOf("time_embedding_type", "positional");
        c.RequireOneOf("class_embed_type", "null");
        c.RequireOneOf("num_class_embeds", "null");
        c.RequireOneOf("class_embeddings_concat", "false");
        c.RequireOneOf("addition_embed_type", "null", "text_time");
        c.RequireOneOf("encoder_hid_dim", "null");
        c.RequireOneOf("encoder_hid_dim_type", "null");
        c.RequireOneOf("dual_cross_attention", "false");
        c.RequireOneOf("resnet_time_scale_shift", "default");
        c.RequireOneOf("attention_type", "default");
        // The reference itself refuses this key (its meaning is carried by attention_head_dim).
        c.RequireOneOf("num_attention_heads", "null");
        c.RequireOneOf("reverse_transformer_layers_per_block", "null");
        c.RequireOneOf("mid_block_type", "UNetMidBlock2DCrossAttn", "null");
        c.RequireOneOf("act_fn", activations);
        c.RequireOneOf("time_embedding_act_fn", ["null", .. activations]);
        c.RequireOneOf("timestep_post_act", ["null", .. activations]);
        if (c.Root.TryGetProperty("norm_num_groups", out var groups) && groups.ValueKind == JsonValueKind.Null)
            throw new NotSupportedException($"Config '{c.Source}': 'norm_num_groups' = null is not supported (supported: an integer); the residual blocks need group normalisation.");
        // Keys read by the reference only for block types refused below (ResnetDownsampleBlock2D, SimpleCrossAttn*),
        // only with the conditioning refused above, or only in training (dropout), so they do not change this model:
        // resnet_skip_time_act, resnet_out_scale_factor, cross_attention_norm, mid_block_only_cross_attention,
        // addition_embed_type_num_heads, dropout.

        var defaults = new UNet2DConditionConfig();
        var down = c.StringArray("down_block_types") ?? [.. defaults.DownBlockTypes];
        int n = down.Length;
        var up = c.StringArray("up_block_types") ?? [.. defaults.UpBlockTypes];
        down = down.Select(t => CheckBlockType(c, "down_block_types", t, SupportedDownBlockTypes)).ToArray();
        up = up.Select(t => CheckBlockType(c, "up_block_types", t, SupportedUpBlockTypes)).ToArray();

        if (c.Root.TryGetProperty("transformer_layers_per_block", out var tl) && tl.ValueKind == JsonValueKind.Array
            && tl.EnumerateArray().Any(e => e.ValueKind == JsonValueKind.Array))
            throw new NotSupportedException($"Config '{c.Source}': 'transformer_layers_per_block' = {tl.GetRawText()} is not supported (supported: an integer, or one integer per block).");

        var config = new UNet2DConditionConfig
        {
            InChannels = c.Int("in_channels", defaults.InChannels),
            OutChannels = c.Int("out_channels", defaults.OutChannels),
            SampleSize = c.Int("sample_size", defaults.SampleSize),
            CenterInputSample = c.Bool("center_input_sample", false),
            FlipSinToCos = c.Bool("flip_sin_to_cos", defaults.FlipSinToCos),
            FreqShift = c.Double("freq_shift", defaults.FreqShift),
            DownBlockTypes = down,
            // An explicit null means no middle block; an absent key means the default one.
            MidBlockType = c.Root.TryGetProperty("mid_block_type", out _) ? c.String("mid_block_type", null) : defaults.MidBlockType,
            UpBlockTypes = up,
            OnlyCrossAttention = c.BoolArray("only_cross_attention", n) ?? Enumerable.Repeat(false, n).ToArray(),
            BlockOutChannels = c.IntArray("block_out_channels") ?? [.. defaults.BlockOutChannels],
            LayersPerBlock = c.IntArray("layers_per_block", n) ?? Enumerable.Repeat(2, n).ToArray(),
            DownsamplePadding = c.Int("downsample_padding", defaults.DownsamplePadding),
            MidBlockScaleFactor = c.Double("mid_block_scale_factor", defaults.MidBlockScaleFactor),
            ActFn = c.String("act_fn", defaults.ActFn)!,
            NormNumGroups = c.Int("norm_num_groups", defaults.NormNumGroups),
            NormEps = c.Double("norm_eps", defaults.NormEps),
            CrossAttentionDim = c.IntArray("cross_attention_dim", n) ?? Enumerable.Repeat(1280, n).ToArray(),
            TransformerLayersPerBlock = c.IntArray("transformer_layers_per_block", n) ?? Enumerable.Repeat(1, n).ToArray(),
            AttentionHeads = c.IntArray("attention_head_dim", n) ?? Enumerable.Repeat(8, n).ToArray(),
            UseLinearProjection = c.Bool("use_linear_projection", false),
            UpcastAttention = c.Bool("upcast_attention", false),
            ConvInKernel = c.Int("conv_in_kernel", defaults.ConvInKernel),
            ConvOutKernel = c.Int("conv_out_kernel", defaults.ConvOutKernel),
            TimeEmbeddingDim = c.Has("time_embedding_dim") ? c.Int("time_embedding_dim", 0) : null,
            TimeEmbeddingActFn = c.String("time_embedding_act_fn", null),
            TimestepPostAct = c.String("timestep_post_act", null),
            TimeCondProjDim = c.Has("time_cond_proj_dim") ? c.Int("time_cond_proj_dim", 0) : null,
            AdditionEmbedType = c.String("addition_embed_type", null),
            AdditionTimeEmbedDim = c.Has("addition_time_embed_dim") ? c.Int("addition_time_embed_dim", 0) : null,
            ProjectionClassEmbeddingsInputDim = c.Has("projection_class_embeddings_input_dim") ? c.Int("projection_class_embeddings_input_dim", 0) : null,
        };
        config.Validate(c.Source);
        return config;
    }

    /// <summary>
    /// The config as diffusers writes <c>unet/config.json</c> (<c>_class_name</c> <c>UNet2DConditionModel</c>, every key
    /// <see cref="FromJson"/> reads, and the keys of the variants this library refuses set to their neutral values), so
    /// diffusers and this library both load it. A per-block list whose entries are all equal is written as one value.
    /// </summary>
    public System.Text.Json.Nodes.JsonObject ToJson()
    {
        static System.Text.Json.Nodes.JsonNode PerBlock<T>(IReadOnlyList<T> values)
            => values.Distinct().Count() == 1 ? System.Text.Json.Nodes.JsonValue.Create(values[0])! : new System.Text.Json.Nodes.JsonArray([.. values.Select(v => System.Text.Json.Nodes.JsonValue.Create(v))]);
        static System.Text.Json.Nodes.JsonArray List<T>(IEnumerable<T> values) => new([.. values.Select(v => System.Text.Json.Nodes.JsonValue.Create(v))]);
        return new System.Text.Json.Nodes.JsonObject
        {
            ["_class_name"] = "UNet2DConditionModel",
            ["_diffusers_version"] = ConfigJson.DiffusersVersion,
            ["act_fn"] = ActFn,
            ["addition_embed_type"] = AdditionEmbedType,
            ["addition_embed_type_num_heads"] = 64,
            ["addition_time_embed_dim"] = AdditionTimeEmbedDim,
            ["attention_head_dim"] = PerBlock(AttentionHeads),
            ["attention_type"] = "default",
            ["block_out_channels"] = List(BlockOutChannels),
            ["center_input_sample"] = CenterInputSample,
            ["class_embed_type"] = null,
            ["class_embeddings_concat"] = false,
            ["conv_in_kernel"] = ConvInKernel,
            ["conv_out_kernel"] = ConvOutKernel,
            ["cross_attention_dim"] = PerBlock(CrossAttentionDim),
            ["cross_attention_norm"] = null,
            ["down_block_types"] = List(DownBlockTypes),
            ["downsample_padding"] = DownsamplePadding,
            ["dropout"] = 0.0,
            ["dual_cross_attention"] = false,
            ["encoder_hid_dim"] = null,
            ["encoder_hid_dim_type"] = null,
            ["flip_sin_to_cos"] = FlipSinToCos,
            ["freq_shift"] = IntegerWhenWhole(FreqShift),
            ["in_channels"] = InChannels,
            ["layers_per_block"] = PerBlock(LayersPerBlock),
            ["mid_block_only_cross_attention"] = null,
            ["mid_block_scale_factor"] = IntegerWhenWhole(MidBlockScaleFactor),
            ["mid_block_type"] = MidBlockType,
            ["norm_eps"] = NormEps,
            ["norm_num_groups"] = NormNumGroups,
            ["num_attention_heads"] = null,
            ["num_class_embeds"] = null,
            ["only_cross_attention"] = PerBlock(OnlyCrossAttention),
            ["out_channels"] = OutChannels,
            ["projection_class_embeddings_input_dim"] = ProjectionClassEmbeddingsInputDim,
            ["resnet_out_scale_factor"] = 1.0,
            ["resnet_skip_time_act"] = false,
            ["resnet_time_scale_shift"] = "default",
            ["reverse_transformer_layers_per_block"] = null,
            ["sample_size"] = SampleSize,
            ["time_cond_proj_dim"] = TimeCondProjDim,
            ["time_embedding_act_fn"] = TimeEmbeddingActFn,
            ["time_embedding_dim"] = TimeEmbeddingDim,
            ["time_embedding_type"] = "positional",
            ["timestep_post_act"] = TimestepPostAct,
            ["transformer_layers_per_block"] = PerBlock(TransformerLayersPerBlock),
            ["up_block_types"] = List(UpBlockTypes),
            ["upcast_attention"] = UpcastAttention,
            ["use_linear_projection"] = UseLinearProjection,
        };
    }

    /// <summary>Reads and parses a <c>config.json</c> file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NotSupportedException">A value selects an architecture variant this library does not implement.</exception>
    /// <exception cref="InvalidDataException">The file is malformed.</exception>
    public static UNet2DConditionConfig Load(string path) => FromJson(JsonConfig.Load(path));

    private static string CheckBlockType(JsonConfig c, string key, string type, IReadOnlyList<string> supported)
    {
        // The reference treats a "UNetRes" prefix as an alias of the plain block.
        string plain = type.StartsWith("UNetRes", StringComparison.Ordinal) ? type[7..] : type;
        if (!supported.Contains(plain))
            throw new NotSupportedException($"Config '{c.Source}': '{key}' contains \"{type}\", which is not supported (supported: {string.Join(", ", supported)}).");
        return plain;
    }

    /// <summary>Checks that the per-block lists agree with each other and the sizes are usable.</summary>
    /// <param name="source">Where the config came from, for messages.</param>
    /// <remarks>Every size-like value must lie within <see cref="ModelLimits"/>; <c>norm_eps</c> must be positive and finite.</remarks>
    /// <exception cref="InvalidDataException">The configuration is inconsistent, or a value is out of its range.</exception>
    /// <exception cref="NotSupportedException">A block type or activation is not implemented.</exception>
    public void Validate(string source = "(in code)")
    {
        int n = DownBlockTypes.Count;
        void Need(bool ok, string message)
        {
            if (!ok) throw new InvalidDataException($"Config '{source}': {message}");
        }
        Need(n > 0, "'down_block_types' is empty.");
        Need(UpBlockTypes.Count == n, $"'up_block_types' has {UpBlockTypes.Count} entries but 'down_block_types' has {n}.");
        Need(BlockOutChannels.Count == n, $"'block_out_channels' has {BlockOutChannels.Count} entries but 'down_block_types' has {n}.");
        foreach (var (name, count) in new[] { ("only_cross_attention", OnlyCrossAttention.Count), ("layers_per_block", LayersPerBlock.Count),
                     ("cross_attention_dim", CrossAttentionDim.Count), ("transformer_layers_per_block", TransformerLayersPerBlock.Count), ("attention_head_dim", AttentionHeads.Count) })
            Need(count == n, $"'{name}' has {count} entries but 'down_block_types' has {n}.");
        // Sizes first (ModelLimits), so nothing below divides by zero or overflows.
        ModelLimits.Check(source, "down_block_types (number of levels)", n, 1, ModelLimits.MaxLevels);
        ModelLimits.Check(source, "in_channels", InChannels, 1, ModelLimits.MaxChannels);
        ModelLimits.Check(source, "out_channels", OutChannels, 1, ModelLimits.MaxChannels);
        ModelLimits.Check(source, "norm_num_groups", NormNumGroups, 1, ModelLimits.MaxChannels);
        ModelLimits.Check(source, "sample_size", SampleSize, 1, ModelLimits.MaxLatentSampleSize);
        ModelLimits.Check(source, "conv_in_kernel", ConvInKernel, 1, ModelLimits.MaxKernel);
        ModelLimits.Check(source, "conv_out_kernel", ConvOutKernel, 1, ModelLimits.MaxKernel);
        ModelLimits.Check(source, "downsample_padding", DownsamplePadding, 0, ModelLimits.MaxKernel);
        foreach (int ch in BlockOutChannels) ModelLimits.Check(source, "block_out_channels", ch, 1, ModelLimits.MaxChannels);
        foreach (int l in LayersPerBlock) ModelLimits.Check(source, "layers_per_block", l, 1, ModelLimits.MaxLayers);
        foreach (int l in TransformerLayersPerBlock) ModelLimits.Check(source, "transformer_layers_per_block", l, 1, ModelLimits.MaxLayers);
        foreach (int d in CrossAttentionDim) ModelLimits.Check(source, "cross_attention_dim", d, 1, ModelLimits.MaxChannels);
        if (TimeEmbeddingDim is int timeDim) ModelLimits.Check(source, "time_embedding_dim", timeDim, 1, ModelLimits.MaxFeedForward);
        if (TimeCondProjDim is int condDim) ModelLimits.Check(source, "time_cond_proj_dim", condDim, 1, ModelLimits.MaxChannels);
        long blocks = MidBlockType is null ? 0 : 2 + TransformerLayersPerBlock[n - 1];
        for (int i = 0; i < n; i++)
        {
            long depth = DownBlockTypes[i] == "CrossAttnDownBlock2D" ? TransformerLayersPerBlock[i] : 0;
            blocks += LayersPerBlock[i] * (1 + depth);
            int mirrored = n - 1 - i;
            long upDepth = UpBlockTypes[i] == "CrossAttnUpBlock2D" ? TransformerLayersPerBlock[mirrored] : 0;
            blocks += (LayersPerBlock[mirrored] + 1L) * (1 + upDepth);
        }
        Need(blocks <= ModelLimits.MaxBlocks, $"'layers_per_block' and 'transformer_layers_per_block' describe {blocks:N0} residual and transformer blocks, more than the {ModelLimits.MaxBlocks:N0} accepted.");
        ModelLimits.PositiveFinite(source, "norm_eps", NormEps);
        Need(double.IsFinite(FreqShift), $"'freq_shift' = {FreqShift} must be a finite number.");
        Need(double.IsFinite(MidBlockScaleFactor) && MidBlockScaleFactor != 0, $"'mid_block_scale_factor' = {MidBlockScaleFactor} must be a finite non-zero number (the middle block's outputs are divided by it).");
        Need(BlockOutChannels.All(ch => ch % NormNumGroups == 0), $"every 'block_out_channels' entry must be a positive multiple of 'norm_num_groups' ({NormNumGroups}).");
        Need(AttentionHeads.All(h => h > 0), "'attention_head_dim' entries must be positive.");
        for (int i = 0; i < n; i++)
            Need(BlockOutChannels[i] >= AttentionHeads[i], $"block {i} has {BlockOutChannels[i]} channels, fewer than its {AttentionHeads[i]} attention heads.");
        Need(ConvInKernel % 2 == 1 && ConvOutKernel % 2 == 1, "'conv_in_kernel' and 'conv_out_kernel' must be odd.");
        Need(TimeEmbedDim > 0, "'time_embedding_dim' must be positive.");
        Need(TimeCondProjDim is null or > 0, "'time_cond_proj_dim' must be positive.");
        if (AdditionEmbedType is not null and not "text_time")
            throw new NotSupportedException($"Config '{source}': 'addition_embed_type' = \"{AdditionEmbedType}\" is not supported (supported: text_time, null).");
        if (AdditionEmbedType == "text_time")
        {
            Need(AdditionTimeEmbedDim is not null, "'addition_embed_type' is \"text_time\" but 'addition_time_embed_dim' is missing (SDXL: 256).");
            Need(ProjectionClassEmbeddingsInputDim is not null, "'addition_embed_type' is \"text_time\" but 'projection_class_embeddings_input_dim' is missing (SDXL base: 2816 = 1280 + 6 x 256).");
            ModelLimits.Check(source, "addition_time_embed_dim", AdditionTimeEmbedDim!.Value, 1, ModelLimits.MaxChannels);
            ModelLimits.Check(source, "projection_class_embeddings_input_dim", ProjectionClassEmbeddingsInputDim!.Value, 1, ModelLimits.MaxFeedForward);
            Need(ProjectionClassEmbeddingsInputDim > AdditionTimeEmbedDim,
                $"'projection_class_embeddings_input_dim' ({ProjectionClassEmbeddingsInputDim}) must exceed 'addition_time_embed_dim' ({AdditionTimeEmbedDim}): it is the pooled text width plus the time ids' features.");
        }
        foreach (var t in DownBlockTypes)
            if (!SupportedDownBlockTypes.Contains(t)) throw new NotSupportedException($"Config '{source}': down block type \"{t}\" is not supported (supported: {string.Join(", ", SupportedDownBlockTypes)}).");
        foreach (var t in UpBlockTypes)
            if (!SupportedUpBlockTypes.Contains(t)) throw new NotSupportedException($"Config '{source}': up block type \"{t}\" is not supported (supported: {string.Join(", ", SupportedUpBlockTypes)}).");
        if (MidBlockType is not null and not "UNetMidBlock2DCrossAttn")
            throw new NotSupportedException($"Config '{source}': 'mid_block_type' = \"{MidBlockType}\" is not supported (supported: UNetMidBlock2DCrossAttn, null).");
        foreach (var (key, act) in new[] { ("act_fn", ActFn), ("time_embedding_act_fn", TimeEmbeddingActFn), ("timestep_post_act", TimestepPostAct) })
            if (act is not null && !Activation.Supported.Contains(act))
                throw new NotSupportedException($"Config '{source}': '{key}' = \"{act}\" is not supported (supported: {string.Join(", ", Activation.Supported)}).");
    }

    // diffusers' defaults for these are Python ints (freq_shift 0, mid_block_scale_factor 1), and that is how it writes them.
    private static System.Text.Json.Nodes.JsonNode IntegerWhenWhole(double value)
        => value == Math.Floor(value) && Math.Abs(value) < int.MaxValue ? System.Text.Json.Nodes.JsonValue.Create((int)value) : System.Text.Json.Nodes.JsonValue.Create(value);
}
