using LatentDiffusion.Formats;

namespace LatentDiffusion.Loading.SingleFile;

/// <summary>
/// A single-file Stable Diffusion checkpoint in the original LDM/CompVis layout (<c>model.diffusion_model.*</c>,
/// <c>first_stage_model.*</c>, and <c>cond_stage_model.transformer.*</c> for SD 1.x or <c>cond_stage_model.model.*</c>
/// for SD 2.x) or SDXL's SGM layout (the same UNet and VAE names plus <c>label_emb</c>, and
/// <c>conditioner.embedders.0.transformer.*</c> / <c>conditioner.embedders.1.model.*</c> for its two text encoders), presented as the three components a diffusers folder holds: each component's weights under the
/// reference's parameter names, and its config. Only the header is read; tensors are read when a
/// <see cref="TensorRef"/> is loaded, so the file stays open until this object is disposed.
/// </summary>
/// <remarks>
/// <para>Tensors no component uses are listed in <see cref="UnclaimedKeys"/>. Expected there (see
/// <see cref="IsKnownExtra"/>): EMA copies of the UNet (<c>model_ema.*</c>; like the reference's default, the non-EMA
/// weights are used), the training-time noise schedule buffers (<c>betas</c>, <c>alphas_cumprod</c>, <c>posterior_*</c>,
/// <c>sqrt_*</c>, <c>logvar</c>, ...), the text encoder's <c>position_ids</c> buffer, and for SD 2.x OpenCLIP's last
/// residual block, <c>text_projection</c> and <c>logit_scale</c>, which Stable Diffusion does not use.
/// <see cref="UnexpectedKeys"/> lists the rest.</para>
/// <para>Configs are inferred from tensor shapes (<see cref="CheckpointConfigInference"/>); a diffusers folder given as
/// <c>configDirectory</c> overrides them key by key with its <c>unet/config.json</c>, <c>vae/config.json</c>,
/// <c>text_encoder/config.json</c> and <c>scheduler/scheduler_config.json</c> (what shapes cannot tell: head counts of
/// non-standard models, v-prediction, sample size).</para>
/// </remarks>
public sealed class LdmCheckpoint : IDisposable
{
    private static readonly HashSet<string> KnownExtras = new(StringComparer.Ordinal)
    {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights",
        "cond_stage_model.transformer.text_model.embeddings.position_ids", "cond_stage_model.transformer.embeddings.position_ids",
        "cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale", "cond_stage_model.model.attn_mask",
        "conditioner.embedders.0.transformer.text_model.embeddings.position_ids", "conditioner.embedders.1.model.logit_scale",
        "conditioner.embedders.0.model.logit_scale", "conditioner.embedders.1.model.attn_mask", "conditioner.embedders.0.model.attn_mask",
    };

    private const string SdxlPrefix = "conditioner.embedders.";
    private const string SdxlRefinerOpenClipPrefix = "conditioner.embedders.0.model.";

    private readonly bool _ownsFile;
    private readonly int _textLayers;

    /// <summary>The open checkpoint file.</summary>
    public SafetensorsFile File { get; }

    /// <summary>How the text encoder is stored (SD 1.x CLIP or SD 2.x OpenCLIP); <see cref="TextEncoderLayout.Clip"/> for SDXL, refiners included (the family of its first tokenizer).</summary>
    public TextEncoderLayout TextEncoderLayout { get; }

    /// <summary>True for SD 2.x conventions: an OpenCLIP text encoder or 1024-wide cross-attention.</summary>
    public bool IsStableDiffusion2 { get; }

    /// <summary>The UNet's weights under the reference <c>UNet2DConditionModel</c> names.</summary>
    public IReadOnlyDictionary<string, TensorRef> UNetWeights { get; }

    /// <summary>The VAE's weights under the current reference <c>AutoencoderKL</c> names (attention as <c>to_q</c> ... <c>to_out.0</c>, linear).</summary>
    public IReadOnlyDictionary<string, TensorRef> VaeWeights { get; }

    /// <summary>
    /// The text encoder's weights under the reference <c>CLIPTextModel</c> names without the <c>text_model.</c> prefix. For
    /// SDXL the first encoder (CLIP ViT-L); for an SDXL refiner, which has only one, the same as <see cref="TextEncoder2Weights"/>.
    /// </summary>
    public IReadOnlyDictionary<string, TensorRef> TextEncoderWeights { get; }

    /// <summary>True for an SDXL checkpoint (<c>conditioner.embedders.*</c> text encoders, <c>label_emb</c> added conditioning).</summary>
    public bool IsStableDiffusionXL { get; }

    /// <summary>False for an SDXL refiner, whose only text encoder is the second one.</summary>
    public bool HasFirstTextEncoder { get; }

    /// <summary>SDXL: the OpenCLIP text encoder's weights under the reference <c>CLIPTextModelWithProjection</c> names (with <c>text_projection.weight</c>); null otherwise.</summary>
    public IReadOnlyDictionary<string, TensorRef>? TextEncoder2Weights { get; }

    /// <summary>SDXL: the second text encoder's config (inferred, overridden by the config folder's <c>text_encoder_2/config.json</c>); null otherwise.</summary>
    public JsonConfig? TextEncoder2Config { get; }

    /// <summary>
    /// SDXL: the pipeline settings a <c>model_index.json</c> would hold (<c>force_zeros_for_empty_prompt</c>,
    /// <c>requires_aesthetics_score</c>; inferred from whether the file is a refiner, overridden by the config folder's
    /// <c>model_index.json</c>); null otherwise.
    /// </summary>
    public JsonConfig? PipelineConfig { get; }

    /// <summary>Every tensor of the file that no component uses, sorted.</summary>
    public IReadOnlyList<string> UnclaimedKeys { get; }

    /// <summary>The <see cref="UnclaimedKeys"/> that are not known extras (<see cref="IsKnownExtra"/>): worth a warning.</summary>
    public IReadOnlyList<string> UnexpectedKeys => UnclaimedKeys.Where(k => !IsKnownExtra(k) && !IsUnusedOpenClipBlock(k)).ToList();

    /// <summary>
    /// The <see cref="UnexpectedKeys"/> inside a component this library loads (<c>model.diffusion_model.*</c>, the VAE's
    /// <c>first_stage_model.encoder.*</c>, <c>decoder.*</c>, <c>quant_conv.*</c>, <c>post_quant_conv.*</c>, and the text
    /// encoder's transformer): tensors of a model variant it does not implement (for example a class-conditional UNet's
    /// <c>label_emb</c>), which loading refuses rather than ignores. The other unexpected keys (LoRA weights, training
    /// leftovers, names outside the known prefixes) do not change the model; loading reports them as a warning.
    /// </summary>
    public IReadOnlyList<string> UnsupportedKeys => UnexpectedKeys.Where(IsInLoadedComponent).ToList();

    private static bool IsInLoadedComponent(string key)
        => key.StartsWith(UNetKeyMap.Prefix, StringComparison.Ordinal)
           || LoadedVaeParts.Any(p => key.StartsWith(VaeKeyMap.Prefix + p, StringComparison.Ordinal))
           || key.StartsWith(ClipKeyMap.ClipPrefix, StringComparison.Ordinal)
           || key.StartsWith(SdxlPrefix, StringComparison.Ordinal)
           || key.StartsWith(ClipKeyMap.OpenClipPrefix + "transformer.", StringComparison.Ordinal);

    private static readonly string[] LoadedVaeParts = ["encoder.", "decoder.", "quant_conv.", "post_quant_conv."];

    /// <summary>The UNet's config (inferred, overridden by the config folder's <c>unet/config.json</c>).</summary>
    public JsonConfig UNetConfig { get; }

    /// <summary>The VAE's config (inferred, overridden by the config folder's <c>vae/config.json</c>).</summary>
    public JsonConfig VaeConfig { get; }

    /// <summary>The text encoder's config (inferred, overridden by the config folder's <c>text_encoder/config.json</c>).</summary>
    public JsonConfig TextEncoderConfig { get; }

    /// <summary>The scheduler's config (the reference's default, overridden by the config folder's <c>scheduler/scheduler_config.json</c>).</summary>
    public JsonConfig SchedulerConfig { get; }

    private LdmCheckpoint(SafetensorsFile file, bool ownsFile, string? configDirectory)
    {
        File = file;
        _ownsFile = ownsFile;
        string path = file.Path;

        if (!IsSingleFile(file)) throw NotSingleFile(file);
        if (!file.Entries.Keys.Any(k => k.StartsWith(VaeKeyMap.Prefix, StringComparison.Ordinal)))
            throw new InvalidDataException($"'{path}' has a UNet ('{UNetKeyMap.Prefix}*') but no VAE: expected tensors named '{VaeKeyMap.Prefix}*'.");
        IsStableDiffusionXL = file.Entries.Keys.Any(k => k.StartsWith(SdxlPrefix, StringComparison.Ordinal));
        if (IsStableDiffusionXL) TextEncoderLayout = TextEncoderLayout.Clip;
        else TextEncoderLayout = ClipKeyMap.Detect(file)
            ?? throw new InvalidDataException($"'{path}' has a UNet ('{UNetKeyMap.Prefix}*') but no text encoder: expected tensors named '{ClipKeyMap.ClipPrefix}*' (SD 1.x CLIP), '{ClipKeyMap.OpenClipPrefix}transformer.*' (SD 2.x OpenCLIP) or '{SdxlPrefix}*' (SDXL).");

        string? Config(params string[] parts) => configDirectory is null ? null : Path.Combine([configDirectory, .. parts]);
        if (configDirectory is not null && !Directory.Exists(configDirectory))
            throw new DirectoryNotFoundException($"Config folder '{configDirectory}' (for the single-file checkpoint '{path}') does not exist.");

        // A config folder may say how many OpenCLIP blocks to keep; read it before mapping.
        string? textConfigPath = Config("text_encoder", "config.json");
        int? textLayers = null;
        if (!IsStableDiffusionXL && TextEncoderLayout == TextEncoderLayout.OpenClip && textConfigPath is not null && System.IO.File.Exists(textConfigPath))
        {
            var given = JsonConfig.Load(textConfigPath);
            if (given.Has("num_hidden_layers"))
            {
                int layers = given.Int("num_hidden_layers", 0), stored = ClipKeyMap.StoredLayerCount(file, TextEncoderLayout);
                if (layers < 1 || layers > stored)
                    throw new InvalidDataException($"Config '{textConfigPath}': 'num_hidden_layers' is {layers}, but '{path}' stores {stored} text encoder layers.");
                textLayers = layers;
            }
        }

        var claimed = new HashSet<string>(StringComparer.Ordinal);
        UNetWeights = UNetKeyMap.Map(file, claimed, IsStableDiffusionXL);
        VaeWeights = VaeKeyMap.Map(file, claimed);
        if (IsStableDiffusionXL)
        {
            // Base: CLIP ViT-L as embedder 0, OpenCLIP bigG as embedder 1. Refiner: OpenCLIP bigG alone, as embedder 0.
            var first = ClipKeyMap.MapSdxlFirst(file, claimed);
            string openClip = file.Entries.Keys.Any(k => k.StartsWith(ClipKeyMap.SdxlOpenClipPrefix, StringComparison.Ordinal)) ? ClipKeyMap.SdxlOpenClipPrefix
                : file.Entries.Keys.Any(k => k.StartsWith(SdxlRefinerOpenClipPrefix, StringComparison.Ordinal)) ? SdxlRefinerOpenClipPrefix
                : throw new InvalidDataException($"'{path}' is an SDXL checkpoint ('{SdxlPrefix}*' tensors) without its OpenCLIP text encoder: expected tensors named '{ClipKeyMap.SdxlOpenClipPrefix}*' (base) or '{SdxlRefinerOpenClipPrefix}*' (refiner).");
            TextEncoder2Weights = ClipKeyMap.MapSdxlOpenClip(file, openClip, claimed);
            HasFirstTextEncoder = first is not null;
            TextEncoderWeights = first ?? TextEncoder2Weights;
        }
        else
        {
            TextEncoderWeights = ClipKeyMap.Map(file, TextEncoderLayout, claimed, textLayers);
            HasFirstTextEncoder = true;
        }
        _textLayers = TextEncoderWeights.Keys.Count(k => k.StartsWith("encoder.layers.", StringComparison.Ordinal) && k.EndsWith(".layer_norm1.weight", StringComparison.Ordinal));
        UnclaimedKeys = file.Entries.Keys.Where(k => !claimed.Contains(k)).Order(StringComparer.Ordinal).ToList();

        string? toK = UNetWeights.Keys.FirstOrDefault(k => k.EndsWith(".attn2.to_k.weight", StringComparison.Ordinal));
        IsStableDiffusion2 = !IsStableDiffusionXL && (TextEncoderLayout == TextEncoderLayout.OpenClip || (toK is not null && UNetWeights[toK].Shape[1] == 1024));

        JsonConfig unet, vae, text, scheduler;
        JsonConfig? text2 = null, pipeline = null;
        if (IsStableDiffusionXL)
        {
            text2 = CheckpointConfigInference.InferSdxlTextEncoder2(TextEncoder2Weights!, path);
            unet = CheckpointConfigInference.InferSdxlUNet(UNetWeights, text2.Int("projection_dim", 1280), HasFirstTextEncoder ? 6 : 5, path);
            vae = CheckpointConfigInference.InferSdxlVae(VaeWeights, path);
            text = HasFirstTextEncoder ? CheckpointConfigInference.InferTextEncoder(TextEncoderWeights, TextEncoderLayout.Clip, path) : text2;
            scheduler = CheckpointConfigInference.SdxlDefaultScheduler(path);
            pipeline = CheckpointConfigInference.SdxlPipelineConfig(refiner: !HasFirstTextEncoder, path);
        }
        else
        {
            unet = CheckpointConfigInference.InferUNet(UNetWeights, IsStableDiffusion2, path);
            vae = CheckpointConfigInference.InferVae(VaeWeights, path);
            text = CheckpointConfigInference.InferTextEncoder(TextEncoderWeights, TextEncoderLayout, path);
            scheduler = CheckpointConfigInference.DefaultScheduler(path);
        }
        if (configDirectory is not null)
        {
            // The UNet's input width comes from its weights: an inpainting file (9 channels) loads with an ordinary folder's configs.
            unet = CheckpointConfigInference.Overlay(unet, Config("unet", "config.json")!, ["in_channels"]);
            vae = CheckpointConfigInference.Overlay(vae, Config("vae", "config.json")!);
            if (text2 is not null) text2 = CheckpointConfigInference.Overlay(text2, Config("text_encoder_2", "config.json")!);
            text = HasFirstTextEncoder ? CheckpointConfigInference.Overlay(text, textConfigPath!) : text2!;
            scheduler = CheckpointConfigInference.Overlay(scheduler, Config("scheduler", "scheduler_config.json")!);
            if (pipeline is not null) pipeline = CheckpointConfigInference.Overlay(pipeline, Config("model_index.json")!);
        }
        UNetConfig = unet;
        VaeConfig = vae;
        TextEncoderConfig = text;
        TextEncoder2Config = text2;
        SchedulerConfig = scheduler;
        PipelineConfig = pipeline;
    }

    /// <summary>True when <paramref name="file"/> holds a UNet in the original layout (<c>model.diffusion_model.*</c> tensors).</summary>
    public static bool IsSingleFile(SafetensorsFile file)
        => file.Entries.Keys.Any(k => k.StartsWith(UNetKeyMap.Prefix, StringComparison.Ordinal));

    /// <summary>True when the file at <paramref name="path"/> is a safetensors file holding a UNet in the original layout.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file.</exception>
    public static bool IsSingleFile(string path)
    {
        using var file = SafetensorsFile.Open(path);
        return IsSingleFile(file);
    }

    /// <summary>Opens a single-file checkpoint and maps its components (reads the header only).</summary>
    /// <param name="path">The <c>.safetensors</c> checkpoint.</param>
    /// <param name="configDirectory">Optional diffusers folder whose component configs override the inferred ones.</param>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="DirectoryNotFoundException"><paramref name="configDirectory"/> does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file, or not in the original layout; the message says what was expected.</exception>
    /// <exception cref="NotSupportedException">A pickled PyTorch checkpoint (<c>.ckpt</c>, <c>.pt</c>, <c>.pth</c>, <c>.bin</c>), which is never read.</exception>
    public static LdmCheckpoint Open(string path, string? configDirectory = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (PickledExtensions.Any(e => path.EndsWith(e, StringComparison.OrdinalIgnoreCase)))
            throw new NotSupportedException($"'{path}' is a pickled PyTorch checkpoint; only .safetensors files are loaded (pickles can run code). Convert it to .safetensors first.");
        var file = SafetensorsFile.Open(path);
        try { return new LdmCheckpoint(file, ownsFile: true, configDirectory); }
        catch { file.Dispose(); throw; }
    }

    private static readonly string[] PickledExtensions = [".ckpt", ".pt", ".pth", ".bin"];

    /// <summary>Maps the components of an already open file, which stays owned by the caller.</summary>
    /// <inheritdoc cref="Open(string, string?)"/>
    public static LdmCheckpoint FromFile(SafetensorsFile file, string? configDirectory = null) => new(file, ownsFile: false, configDirectory);

    /// <summary>
    /// True for tensors that single-file checkpoints commonly carry and Stable Diffusion inference does not use:
    /// EMA weights, noise-schedule buffers, <c>position_ids</c>, OpenCLIP's projection and logit scale. (OpenCLIP
    /// residual blocks past the ones kept are expected as well; <see cref="UnexpectedKeys"/> accounts for them.)
    /// </summary>
    public static bool IsKnownExtra(string key)
        => KnownExtras.Contains(key) || key.StartsWith("model_ema.", StringComparison.Ordinal);

    private bool IsUnusedOpenClipBlock(string key)
    {
        const string blocks = ClipKeyMap.OpenClipPrefix + "transformer.resblocks.";
        if (TextEncoderLayout != TextEncoderLayout.OpenClip || !key.StartsWith(blocks, StringComparison.Ordinal)) return false;
        string rest = key[blocks.Length..];
        int dot = rest.IndexOf('.');
        return dot > 0 && int.TryParse(rest[..dot], out int layer) && layer >= _textLayers;
    }

    private static InvalidDataException NotSingleFile(SafetensorsFile file)
    {
        string sample = string.Join(", ", file.Entries.Keys.Order(StringComparer.Ordinal).Take(3).Select(k => $"'{k}'"));
        string hint = file.Entries.Keys.Any(k => k.StartsWith("down_blocks.", StringComparison.Ordinal) || k.StartsWith("encoder.down_blocks.", StringComparison.Ordinal) || k.StartsWith("text_model.", StringComparison.Ordinal))
            ? " It looks like one component of a diffusers folder; load the folder instead." : "";
        return new InvalidDataException(
            $"'{file.Path}' is not a single-file Stable Diffusion checkpoint in the original LDM layout: expected tensors named " +
            $"'{UNetKeyMap.Prefix}*' (UNet), '{VaeKeyMap.Prefix}*' (VAE) and '{ClipKeyMap.ClipPrefix}*' or '{ClipKeyMap.OpenClipPrefix}*' (text encoder), " +
            $"but it has {file.Entries.Count} tensor(s){(sample.Length > 0 ? " such as " + sample : "")}.{hint}");
    }

    /// <summary>Closes the file when this object opened it.</summary>
    public void Dispose()
    {
        if (_ownsFile) File.Dispose();
    }
}
