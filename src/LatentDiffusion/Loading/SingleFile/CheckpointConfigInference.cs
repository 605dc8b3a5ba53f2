using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LatentDiffusion.Formats;

namespace LatentDiffusion.Loading.SingleFile;

/// <summary>
/// Reconstructs the <c>config.json</c> a diffusers folder would hold for each component of a single-file checkpoint,
/// from the shapes and names of its (already renamed) weights, as the reference does from the original YAML config.
/// </summary>
/// <remarks>
/// What the tensors cannot tell is filled with the public Stable Diffusion values: attention heads (SD 1.x: 8 heads
/// per block; SD 2.x: heads of width 64, so channels / 64 heads), the text encoder's heads (width 64), the sample size
/// (512-pixel images, 64 latents) and the scheduler (the reference's default: PNDM, scaled-linear betas 0.00085 to
/// 0.012, epsilon prediction). SD 2.x 768-pixel v-prediction checkpoints cannot be told apart from epsilon ones by
/// their tensors; pass a diffusers folder (its <c>scheduler/scheduler_config.json</c>, <c>unet/config.json</c>) to
/// <see cref="LdmCheckpoint.Open"/> to override any inferred value.
/// </remarks>
public static partial class CheckpointConfigInference
{
    /// <summary>The VAE latent scaling factor of SD 1.x and 2.x.</summary>
    public const double VaeScalingFactor = 0.18215;

    /// <summary>The attention head width of SD 2.x's UNet and of CLIP/OpenCLIP text encoders.</summary>
    public const int HeadWidth = 64;

    [GeneratedRegex(@"^down_blocks\.(\d+)\.")]
    private static partial Regex DownLevel();

    [GeneratedRegex(@"^down_blocks\.(\d+)\.resnets\.(\d+)\.")]
    private static partial Regex DownResnet();

    [GeneratedRegex(@"^up_blocks\.(\d+)\.")]
    private static partial Regex UpLevel();

    [GeneratedRegex(@"^down_blocks\.(\d+)\.attentions\.0\.transformer_blocks\.(\d+)\.")]
    private static partial Regex TransformerBlock();

    [GeneratedRegex(@"^encoder\.down_blocks\.(\d+)\.")]
    private static partial Regex VaeDownLevel();

    [GeneratedRegex(@"^encoder\.down_blocks\.0\.resnets\.(\d+)\.")]
    private static partial Regex VaeResnet();

    [GeneratedRegex(@"^encoder\.layers\.(\d+)\.")]
    private static partial Regex TextLayer();

    /// <summary>
    /// The <c>UNet2DConditionModel</c> config for UNet weights named as the reference names them.
    /// </summary>
    /// <param name="unet">The UNet weights (from <see cref="UNetKeyMap.Map(SafetensorsFile, ISet{string}, bool)"/>).</param>
    /// <param name="stableDiffusion2">SD 2.x conventions: heads of width 64 and upcast attention (SD 1.x: 8 heads per block).</param>
    /// <param name="source">Where the weights came from, for the config's <see cref="JsonConfig.Source"/> and messages.</param>
    /// <exception cref="InvalidDataException">A tensor the inference needs is missing, or the levels are irregular.</exception>
    public static JsonConfig InferUNet(IReadOnlyDictionary<string, TensorRef> unet, bool stableDiffusion2, string source)
    {
        int levels = Count(unet.Keys, DownLevel(), source);
        if (levels == 0) throw Missing(source, "UNet", "down_blocks.0.*");
        CheckCount(source, "UNet", "down-block levels", levels, ModelLimits.MaxLevels);
        var resnetsPerLevel = Enumerable.Range(0, levels)
            .Select(l => unet.Keys.Select(k => (Key: k, Match: DownResnet().Match(k))).Where(p => p.Match.Success && Index(p.Match, 1, p.Key, source) == l)
                .Select(p => Index(p.Match, 2, p.Key, source)).DefaultIfEmpty(-1).Max() + 1).ToArray();
        if (resnetsPerLevel.Distinct().Count() != 1)
            throw new InvalidDataException($"Cannot infer the UNet config of '{source}': the levels have different numbers of resnet blocks ({string.Join(", ", resnetsPerLevel)}); pass a config folder.");
        int layersPerBlock = resnetsPerLevel[0];
        var channels = Enumerable.Range(0, levels).Select(l => Dim(unet, $"down_blocks.{l}.resnets.0.conv2.weight", 0, source, "UNet")).ToArray();

        var downTypes = Enumerable.Range(0, levels)
            .Select(l => unet.Keys.Any(k => k.StartsWith($"down_blocks.{l}.attentions.", StringComparison.Ordinal)) ? "CrossAttnDownBlock2D" : "DownBlock2D").ToArray();
        int upLevels = Count(unet.Keys, UpLevel(), source);
        CheckCount(source, "UNet", "up-block levels", upLevels, ModelLimits.MaxLevels);
        var upTypes = Enumerable.Range(0, upLevels)
            .Select(l => unet.Keys.Any(k => k.StartsWith($"up_blocks.{l}.attentions.", StringComparison.Ordinal)) ? "CrossAttnUpBlock2D" : "UpBlock2D").ToArray();
        bool midAttention = unet.Keys.Any(k => k.StartsWith("mid_block.attentions.", StringComparison.Ordinal));

        string? toK = unet.Keys.Where(k => k.EndsWith(".attn2.to_k.weight", StringComparison.Ordinal)).Order(StringComparer.Ordinal).FirstOrDefault();
        string? projIn = unet.Keys.Where(k => k.EndsWith(".proj_in.weight", StringComparison.Ordinal)).Order(StringComparer.Ordinal).FirstOrDefault();
        int? crossAttentionDim = toK is null ? null : Dim(unet, toK, 1, source, "UNet");
        bool linearProjection = projIn is not null && unet[projIn].Shape.Length == 2;

        var depth = Enumerable.Range(0, levels).Select(l => unet.Keys.Select(k => (Key: k, Match: TransformerBlock().Match(k)))
            .Where(p => p.Match.Success && Index(p.Match, 1, p.Key, source) == l).Select(p => Index(p.Match, 2, p.Key, source)).DefaultIfEmpty(0).Max() + 1).ToArray();

        JsonNode heads = stableDiffusion2
            ? new JsonArray(channels.Select(c => (JsonNode)Math.Max(1, c / HeadWidth)).ToArray())
            : JsonValue.Create(8);

        var config = new JsonObject
        {
            ["_class_name"] = "UNet2DConditionModel",
            ["act_fn"] = "silu",
            ["attention_head_dim"] = heads,
            ["block_out_channels"] = Ints(channels),
            ["center_input_sample"] = false,
            ["cross_attention_dim"] = crossAttentionDim,
            ["down_block_types"] = Strings(downTypes),
            ["downsample_padding"] = 1,
            ["dual_cross_attention"] = false,
            ["flip_sin_to_cos"] = true,
            ["freq_shift"] = 0,
            ["in_channels"] = Dim(unet, "conv_in.weight", 1, source, "UNet"),
            ["layers_per_block"] = layersPerBlock,
            ["mid_block_scale_factor"] = 1,
            ["mid_block_type"] = midAttention ? "UNetMidBlock2DCrossAttn" : "UNetMidBlock2D",
            ["norm_eps"] = 1e-5,
            ["norm_num_groups"] = 32,
            ["num_attention_heads"] = null,
            ["only_cross_attention"] = false,
            ["out_channels"] = Dim(unet, "conv_out.weight", 0, source, "UNet"),
            ["resnet_time_scale_shift"] = "default",
            ["sample_size"] = 64,
            ["time_embedding_type"] = "positional",
            ["transformer_layers_per_block"] = depth.Distinct().Count() == 1 ? JsonValue.Create(depth[0]) : Ints(depth),
            ["up_block_types"] = Strings(upTypes),
            ["upcast_attention"] = stableDiffusion2,
            ["use_linear_projection"] = linearProjection,
        };
        return ToConfig(config, $"UNet config inferred from '{source}'");
    }

    /// <summary>The <c>AutoencoderKL</c> config for VAE weights named as the reference names them.</summary>
    /// <exception cref="InvalidDataException">A tensor the inference needs is missing.</exception>
    public static JsonConfig InferVae(IReadOnlyDictionary<string, TensorRef> vae, string source)
    {
        int levels = Count(vae.Keys, VaeDownLevel(), source);
        if (levels == 0) throw Missing(source, "VAE", "encoder.down_blocks.0.*");
        CheckCount(source, "VAE", "encoder levels", levels, ModelLimits.MaxLevels);
        var channels = Enumerable.Range(0, levels).Select(l => Dim(vae, $"encoder.down_blocks.{l}.resnets.0.conv2.weight", 0, source, "VAE")).ToArray();
        var config = new JsonObject
        {
            ["_class_name"] = "AutoencoderKL",
            ["act_fn"] = "silu",
            ["block_out_channels"] = Ints(channels),
            ["down_block_types"] = Strings(Enumerable.Repeat("DownEncoderBlock2D", levels)),
            ["force_upcast"] = true,
            ["in_channels"] = Dim(vae, "encoder.conv_in.weight", 1, source, "VAE"),
            ["latent_channels"] = Dim(vae, "decoder.conv_in.weight", 1, source, "VAE"),
            ["layers_per_block"] = Count(vae.Keys, VaeResnet(), source),
            ["mid_block_add_attention"] = vae.ContainsKey("encoder.mid_block.attentions.0.to_q.weight"),
            ["norm_num_groups"] = 32,
            ["out_channels"] = Dim(vae, "decoder.conv_out.weight", 0, source, "VAE"),
            ["sample_size"] = 512,
            ["scaling_factor"] = VaeScalingFactor,
            ["up_block_types"] = Strings(Enumerable.Repeat("UpDecoderBlock2D", levels)),
            ["use_post_quant_conv"] = vae.ContainsKey("post_quant_conv.weight"),
            ["use_quant_conv"] = vae.ContainsKey("quant_conv.weight"),
        };
        return ToConfig(config, $"VAE config inferred from '{source}'");
    }

    /// <summary>The <c>CLIPTextConfig</c> for text-encoder weights named as the reference names them (without <c>text_model.</c>).</summary>
    /// <param name="text">The text encoder's weights (from <see cref="ClipKeyMap.Map"/>).</param>
    /// <param name="layout">SD 1.x CLIP (<c>quick_gelu</c>) or SD 2.x OpenCLIP (<c>gelu</c>).</param>
    /// <param name="source">Where the weights came from.</param>
    /// <exception cref="InvalidDataException">A tensor the inference needs is missing.</exception>
    public static JsonConfig InferTextEncoder(IReadOnlyDictionary<string, TensorRef> text, TextEncoderLayout layout, string source)
    {
        int hidden = Dim(text, "embeddings.token_embedding.weight", 1, source, "text encoder");
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("CLIPTextModel"),
            ["attention_dropout"] = 0.0,
            ["bos_token_id"] = 0,
            ["eos_token_id"] = 2,
            ["hidden_act"] = layout == TextEncoderLayout.Clip ? "quick_gelu" : "gelu",
            ["hidden_size"] = hidden,
            ["intermediate_size"] = Dim(text, "encoder.layers.0.mlp.fc1.weight", 0, source, "text encoder"),
            ["layer_norm_eps"] = 1e-5,
            ["max_position_embeddings"] = Dim(text, "embeddings.position_embedding.weight", 0, source, "text encoder"),
            ["model_type"] = "clip_text_model",
            ["num_attention_heads"] = Math.Max(1, hidden / HeadWidth),
            ["num_hidden_layers"] = Count(text.Keys, TextLayer(), source),
            ["pad_token_id"] = 1,
            ["projection_dim"] = layout == TextEncoderLayout.Clip ? 768 : 512,
            ["vocab_size"] = Dim(text, "embeddings.token_embedding.weight", 0, source, "text encoder"),
        };
        return ToConfig(config, $"text encoder config inferred from '{source}'");
    }

    /// <summary>The VAE latent scaling factor of SDXL.</summary>
    public const double SdxlVaeScalingFactor = 0.13025;

    /// <summary>
    /// The SDXL <c>UNet2DConditionModel</c> config for UNet weights named as the reference names them: as
    /// <see cref="InferUNet"/> with heads of width 64, plus the <c>text_time</c> added conditioning (time ids of 256
    /// features, the added embedding's input width read from <c>add_embedding.linear_1.weight</c>), the 1024-pixel sample
    /// size and no attention upcast. The width of each time id's features is what the added embedding's input leaves
    /// after the pooled text, shared by the time ids (SDXL: (2816 - 1280) / 6 = 256).
    /// </summary>
    /// <param name="unet">The UNet weights (from <see cref="UNetKeyMap.Map(SafetensorsFile, ISet{string}, bool)"/>).</param>
    /// <param name="pooledWidth">The width of the pooled text embedding (the second encoder's projection).</param>
    /// <param name="timeIds">6 for a base model, 5 for a refiner (aesthetic score instead of the target size).</param>
    /// <param name="source">Where the weights came from.</param>
    /// <exception cref="InvalidDataException">A tensor the inference needs is missing, or the levels are irregular.</exception>
    public static JsonConfig InferSdxlUNet(IReadOnlyDictionary<string, TensorRef> unet, int pooledWidth, int timeIds, string source)
        => With(InferUNet(unet, stableDiffusion2: true, source), c =>
        {
            int input = Dim(unet, "add_embedding.linear_1.weight", 1, source, "UNet");
            c["addition_embed_type"] = "text_time";
            c["addition_time_embed_dim"] = input > pooledWidth && (input - pooledWidth) % timeIds == 0 ? (input - pooledWidth) / timeIds : 256;
            c["projection_class_embeddings_input_dim"] = input;
            c["upcast_attention"] = null;
            c["sample_size"] = 128;
        }, $"SDXL UNet config inferred from '{source}'");

    /// <summary>The SDXL VAE config: as <see cref="InferVae"/> with SDXL's scaling factor (0.13025) and a 1024-pixel sample size.</summary>
    /// <exception cref="InvalidDataException">A tensor the inference needs is missing.</exception>
    public static JsonConfig InferSdxlVae(IReadOnlyDictionary<string, TensorRef> vae, string source)
        => With(InferVae(vae, source), c => { c["scaling_factor"] = SdxlVaeScalingFactor; c["sample_size"] = 1024; }, $"SDXL VAE config inferred from '{source}'");

    /// <summary>
    /// The <c>CLIPTextModelWithProjection</c> config of SDXL's OpenCLIP encoder (<c>gelu</c>, heads of width 64, the
    /// projection width read from <c>text_projection.weight</c>).
    /// </summary>
    /// <exception cref="InvalidDataException">A tensor the inference needs is missing.</exception>
    public static JsonConfig InferSdxlTextEncoder2(IReadOnlyDictionary<string, TensorRef> text, string source)
        => With(InferTextEncoder(text, TextEncoderLayout.OpenClip, source), c =>
        {
            c["architectures"] = new JsonArray("CLIPTextModelWithProjection");
            c["projection_dim"] = Dim(text, "text_projection.weight", 0, source, "text encoder 2");
        }, $"SDXL text encoder 2 config inferred from '{source}'");

    /// <summary>The scheduler SDXL ships with (the public <c>scheduler_config.json</c> of SDXL base: Euler, leading spacing, steps offset 1).</summary>
    public static JsonConfig SdxlDefaultScheduler(string source) => ToConfig(new JsonObject
    {
        ["_class_name"] = "EulerDiscreteScheduler",
        ["beta_end"] = 0.012,
        ["beta_schedule"] = "scaled_linear",
        ["beta_start"] = 0.00085,
        ["interpolation_type"] = "linear",
        ["num_train_timesteps"] = 1000,
        ["prediction_type"] = "epsilon",
        ["steps_offset"] = 1,
        ["timestep_spacing"] = "leading",
        ["trained_betas"] = null,
        ["use_karras_sigmas"] = false,
    }, $"default SDXL scheduler config for '{source}'");

    /// <summary>
    /// The pipeline settings of an SDXL single file (what its <c>model_index.json</c> would say): the base zeroes an empty
    /// negative prompt; a refiner (no first text encoder) is conditioned on aesthetic scores and does not.
    /// </summary>
    public static JsonConfig SdxlPipelineConfig(bool refiner, string source) => ToConfig(new JsonObject
    {
        ["_class_name"] = refiner ? "StableDiffusionXLImg2ImgPipeline" : "StableDiffusionXLPipeline",
        ["force_zeros_for_empty_prompt"] = !refiner,
        ["requires_aesthetics_score"] = refiner,
    }, $"SDXL pipeline settings for '{source}'");

    private static JsonConfig With(JsonConfig config, Action<JsonObject> change, string source)
    {
        var json = JsonNode.Parse(config.Root.GetRawText())!.AsObject();
        change(json);
        return ToConfig(json, source);
    }

    /// <summary>The reference's default scheduler for single-file checkpoints (PNDM, scaled-linear betas, epsilon prediction).</summary>
    public static JsonConfig DefaultScheduler(string source) => ToConfig(new JsonObject
    {
        ["_class_name"] = "PNDMScheduler",
        ["beta_end"] = 0.012,
        ["beta_schedule"] = "scaled_linear",
        ["beta_start"] = 0.00085,
        ["num_train_timesteps"] = 1000,
        ["prediction_type"] = "epsilon",
        ["set_alpha_to_one"] = false,
        ["skip_prk_steps"] = true,
        ["steps_offset"] = 1,
        ["timestep_spacing"] = "leading",
        ["trained_betas"] = null,
    }, $"default scheduler config for '{source}'");

    /// <summary>
    /// <paramref name="inferred"/> with every key of the config file at <paramref name="path"/> taking precedence, or
    /// <paramref name="inferred"/> itself when there is no such file.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not a JSON object.</exception>
    public static JsonConfig Overlay(JsonConfig inferred, string path) => Overlay(inferred, path, []);

    /// <summary>
    /// As <see cref="Overlay(JsonConfig, string)"/>, except that the keys in <paramref name="keepInferred"/> keep the
    /// value inferred from the weights (facts the tensor shapes state, such as an inpainting UNet's 9 input channels
    /// under an ordinary model's config folder).
    /// </summary>
    public static JsonConfig Overlay(JsonConfig inferred, string path, IReadOnlyCollection<string> keepInferred)
    {
        if (!File.Exists(path)) return inferred;
        var given = JsonConfig.Load(path);
        var merged = JsonNode.Parse(inferred.Root.GetRawText())!.AsObject();
        foreach (var property in given.Root.EnumerateObject())
            if (!(keepInferred.Contains(property.Name) && merged.ContainsKey(property.Name)))
                merged[property.Name] = JsonNode.Parse(property.Value.GetRawText());
        return ToConfig(merged, $"{path} (over the {inferred.Source})");
    }

    private static JsonConfig ToConfig(JsonObject config, string source)
    {
        using var doc = JsonDocument.Parse(config.ToJsonString());
        return new JsonConfig(doc.RootElement, source);
    }

    private static int Count(IEnumerable<string> keys, Regex pattern, string source)
        => keys.Select(k => (Key: k, Match: pattern.Match(k))).Where(p => p.Match.Success).Select(p => Index(p.Match, 1, p.Key, source)).DefaultIfEmpty(-1).Max() + 1;

    private static int Index(Match match, int group, string key, string source) => KeyIndex.Parse(match.Groups[group].Value, key, source);

    private static void CheckCount(string source, string component, string what, int count, int max)
    {
        if (count > max)
            throw new InvalidDataException($"Cannot infer the {component} config of '{source}': its tensors name {count} {what}, more than the {max} accepted.");
    }

    // One dimension of a tensor's shape, as the int a config holds (shapes with a zero dimension are free to declare).
    private static int Dim(IReadOnlyDictionary<string, TensorRef> weights, string name, int axis, string source, string component)
    {
        if (!weights.TryGetValue(name, out var w)) throw Missing(source, component, name);
        if (w.Shape.Length <= axis)
            throw new InvalidDataException($"Cannot infer the {component} config of '{source}': tensor {w} has shape [{string.Join(", ", w.Shape)}], with no dimension {axis}.");
        long value = w.Shape[axis];
        return value is > 0 and <= int.MaxValue ? (int)value
            : throw new InvalidDataException($"Cannot infer the {component} config of '{source}': tensor {w} has shape [{string.Join(", ", w.Shape)}]; dimension {axis} must be from 1 to {int.MaxValue}.");
    }

    private static InvalidDataException Missing(string source, string component, string name)
        => new($"Cannot infer the {component} config of '{source}': it has no tensor that maps to '{name}'.");

    private static JsonArray Ints(IEnumerable<int> values) => new(values.Select(v => (JsonNode)v).ToArray());

    private static JsonArray Strings(IEnumerable<string> values) => new(values.Select(v => (JsonNode)v).ToArray());
}
