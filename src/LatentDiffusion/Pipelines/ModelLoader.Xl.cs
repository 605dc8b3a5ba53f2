using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Loading;
using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>SDXL from a diffusers folder (<c>StableDiffusionXLPipeline</c>, <c>StableDiffusionXLImg2ImgPipeline</c>).</summary>
internal static partial class ModelLoader
{
    private static StableDiffusionPipeline LoadXlFolder(DiffusersFolder index, PipelineOptions options, Device device, ScalarType dtype, ScalarType vaeDtype, ILogger logger, CancellationToken ct)
    {
        string dir = index.Root;
        bool hasFirst = index.HasComponent("text_encoder");
        var settings = XlSettings(index.Index);
        var tokenizer = hasFirst ? ClipTokenizer.FromDirectory(index.ComponentDirectory("tokenizer")) : null;
        var tokenizer2 = ClipTokenizer.FromDirectory(index.ComponentDirectory("tokenizer_2"));
        var scheduler = SchedulerRegistry.FromConfig(JsonConfig.Load(index.ComponentFile("scheduler", "scheduler_config.json")));
        string unetDir = index.ComponentDirectory("unet"), vaeDir = index.ComponentDirectory("vae"), text2Dir = index.ComponentDirectory("text_encoder_2");
        string? textDir = hasFirst ? index.ComponentDirectory("text_encoder") : null;
        string? textWeights = hasFirst ? index.WeightsFile("text_encoder", "model", options.Variant, logger) : null;
        string text2Weights = index.WeightsFile("text_encoder_2", "model", options.Variant, logger);
        string unetWeights = index.WeightsFile("unet", "diffusion_pytorch_model", options.Variant, logger);
        string vaeWeights = index.WeightsFile("vae", "diffusion_pytorch_model", options.Variant, logger);

        // Every config is read, range-checked and compared with its weights' header before any component is built; the
        // files stay open, so the components are then built from the same headers without opening or checking them again.
        var textConfig = hasFirst ? JsonConfig.Load(index.ComponentFile("text_encoder", "config.json")) : null;
        var text2Config = JsonConfig.Load(index.ComponentFile("text_encoder_2", "config.json"));
        var unetConfig = UNet2DConditionConfig.Load(index.ComponentFile("unet", "config.json"));
        var vaeConfig = AutoencoderKLConfig.Load(index.ComponentFile("vae", "config.json"));
        string textName = $"text encoder from '{textDir}'", text2Name = $"text encoder 2 from '{text2Dir}'", unetName = $"unet from '{unetDir}'", vaeName = $"vae (AutoencoderKL) from '{vaeDir}'";
        using var textFile = hasFirst ? SafetensorsFile.Open(textWeights!) : null;
        using var text2File = SafetensorsFile.Open(text2Weights);
        using var unetFile = SafetensorsFile.Open(unetWeights);
        using var vaeFile = SafetensorsFile.Open(vaeWeights);
        var parts = new PartSources(textFile is null ? null : new TextSource(AllTensors(textFile), textConfig!, textName), new TextSource(AllTensors(text2File), text2Config, text2Name),
            unetConfig, AllTensors(unetFile), unetName, vaeConfig, AutoencoderKL.WeightMap(vaeFile), vaeName);
        return CheckAndBuild(parts, () => CheckXlWidths(textConfig is null ? null : ClipTextConfig.FromJson(textConfig), ClipTextConfig.FromJson(text2Config), unetConfig, settings, dir),
            options, device, dtype, XlVaeDtype(vaeConfig, dtype, vaeDtype, logger), logger, ct,
            (text, text2, unet, vae) => new StableDiffusionPipeline(tokenizer, text, tokenizer2, text2!, unet, vae, scheduler, settings, options));
    }

    private static StableDiffusionPipeline LoadXlSingleFile(LdmCheckpoint checkpoint, PipelineOptions options, Device device, ScalarType dtype, ScalarType vaeDtype, ILogger logger, CancellationToken ct)
    {
        string file = checkpoint.File.Path;
        bool hasFirst = checkpoint.HasFirstTextEncoder;
        var (tokenizer, tokenizer2) = XlTokenizers(file, options, hasFirst, logger, ct);
        var settings = XlSettings(checkpoint.PipelineConfig!);
        var scheduler = SchedulerRegistry.FromConfig(checkpoint.SchedulerConfig);
        // Every config is read, range-checked and compared with the header before any component is built.
        var unetConfig = UNet2DConditionConfig.FromJson(checkpoint.UNetConfig);
        var vaeConfig = AutoencoderKLConfig.FromJson(checkpoint.VaeConfig);
        string textName = $"text_encoder from '{file}'", text2Name = $"text_encoder_2 from '{file}'", unetName = $"unet from '{file}'", vaeName = $"vae from '{file}'";
        var parts = new PartSources(hasFirst ? new TextSource(checkpoint.TextEncoderWeights, checkpoint.TextEncoderConfig, textName) : null,
            new TextSource(checkpoint.TextEncoder2Weights!, checkpoint.TextEncoder2Config!, text2Name),
            unetConfig, checkpoint.UNetWeights, unetName, vaeConfig, checkpoint.VaeWeights, vaeName);
        return CheckAndBuild(parts, () => CheckXlWidths(hasFirst ? ClipTextConfig.FromJson(checkpoint.TextEncoderConfig) : null, ClipTextConfig.FromJson(checkpoint.TextEncoder2Config!), unetConfig, settings, file),
            options, device, dtype, XlVaeDtype(vaeConfig, dtype, vaeDtype, logger), logger, ct,
            (text, text2, unet, vae) => new StableDiffusionPipeline(tokenizer, text, tokenizer2, text2!, unet, vae, scheduler, settings, options));
    }

    private static (ClipTokenizer? First, ClipTokenizer Second) XlTokenizers(string file, PipelineOptions options, bool hasFirst, ILogger logger, CancellationToken ct)
    {
        string? config = options.ConfigDirectory;
        string? second = config is null ? null : Path.Combine(config, "tokenizer_2");
        var first = hasFirst ? SingleFileTokenizers.Load(file, TextEncoderLayout.Clip, options, logger, ct, "<|endoftext|>", "SDXL") : null;
        if (options.TokenizerDirectory is null && second is not null && Directory.Exists(second)) return (first, ClipTokenizer.FromDirectory(second));
        return (first, SingleFileTokenizers.Load(file, TextEncoderLayout.Clip, options, logger, ct, "!", "SDXL"));
    }

    /// <summary>The SDXL settings of a <c>model_index.json</c>, with the reference's defaults (base: zeros, no aesthetic score).</summary>
    internal static StableDiffusionXLOptions XlSettings(JsonConfig modelIndex) => new()
    {
        ForceZerosForEmptyPrompt = modelIndex.Bool("force_zeros_for_empty_prompt", true),
        RequiresAestheticsScore = modelIndex.Bool("requires_aesthetics_score", false),
    };

    /// <summary>
    /// The VAE's dtype: float32 when the weights are float16 and the VAE's config says <c>force_upcast</c>, as the
    /// reference SDXL pipelines upcast it (SDXL's VAE overflows in half precision); otherwise as asked.
    /// </summary>
    internal static ScalarType XlVaeDtype(AutoencoderKLConfig vae, ScalarType dtype, ScalarType vaeDtype, ILogger logger)
    {
        if (vaeDtype != ScalarType.Float16 || !vae.ForceUpcast) return vaeDtype;
        logger.LogInformation("The SDXL VAE runs in float32 (its config says force_upcast: it overflows in float16)");
        return ScalarType.Float32;
    }

    // The pipeline checks these too, but only once every model is built.
    private static void CheckXlWidths(ClipTextConfig? text, ClipTextConfig text2, UNet2DConditionConfig unet, StableDiffusionXLOptions settings, string model)
    {
        if (text2.ProjectionDim is not int projection)
            throw new InvalidDataException($"'{model}': text_encoder_2 must be a CLIPTextModelWithProjection (its config's 'architectures'), for SDXL's pooled text embedding.");
        int context = (text?.HiddenSize ?? 0) + text2.HiddenSize;
        if (context != unet.CrossAttentionDim[0])
            throw new InvalidDataException($"'{model}': the text encoders' hidden sizes ({(text is null ? "" : text.HiddenSize + " + ")}{text2.HiddenSize} = {context}) do not match the UNet's cross_attention_dim ({unet.CrossAttentionDim[0]}).");
        if (unet.AdditionEmbedType != "text_time")
            throw new InvalidDataException($"'{model}': an SDXL pipeline needs a UNet with 'addition_embed_type' \"text_time\"; this one has {(unet.AdditionEmbedType is null ? "none" : $"\"{unet.AdditionEmbedType}\"")}.");
        int ids = settings.RequiresAestheticsScore ? 5 : 6;
        int expected = projection + ids * unet.AdditionTimeEmbedDim!.Value;
        if (expected != unet.ProjectionClassEmbeddingsInputDim)
            throw new InvalidDataException($"'{model}': the UNet's 'projection_class_embeddings_input_dim' is {unet.ProjectionClassEmbeddingsInputDim}, but text_encoder_2's projection_dim {projection} + " +
                $"{ids} time ids x 'addition_time_embed_dim' {unet.AdditionTimeEmbedDim} = {expected} (model_index.json 'requires_aesthetics_score' is {(settings.RequiresAestheticsScore ? "true" : "false")}).");
    }
}
