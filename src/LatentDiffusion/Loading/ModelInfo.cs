using LatentDiffusion.Formats;
using LatentDiffusion.Loading.SingleFile;

namespace LatentDiffusion.Loading;

/// <summary>One component of a model as described by its files.</summary>
/// <param name="Name">unet, vae, text_encoder or (SDXL) text_encoder_2.</param>
/// <param name="DTypes">The stored dtypes (safetensors names, e.g. F16).</param>
/// <param name="Parameters">Number of stored values.</param>
/// <param name="Tensors">Number of stored tensors.</param>
public sealed record ComponentInfo(string Name, IReadOnlyList<string> DTypes, long Parameters, int Tensors);

/// <summary>What a model on disk is, read from headers and configs without loading any weights.</summary>
/// <param name="Path">The model's path.</param>
/// <param name="Format">"diffusers folder" or "single-file checkpoint".</param>
/// <param name="Architecture">The family, from the UNet config.</param>
/// <param name="PredictionType">epsilon, v_prediction or sample.</param>
/// <param name="Scheduler">The scheduler class.</param>
/// <param name="Components">Per-component dtypes and sizes.</param>
public sealed record ModelInfo(string Path, string Format, string Architecture, string PredictionType, string Scheduler, IReadOnlyList<ComponentInfo> Components)
{
    /// <summary>Describes a diffusers folder or a single-file checkpoint.</summary>
    /// <exception cref="FileNotFoundException">Nothing at <paramref name="path"/>.</exception>
    public static ModelInfo Describe(string path, string? configDirectory = null)
    {
        if (Directory.Exists(path))
        {
            var folder = DiffusersFolder.Open(path);
            var unet = JsonConfig.Load(folder.ComponentFile("unet", "config.json"));
            var scheduler = JsonConfig.Load(folder.ComponentFile("scheduler", "scheduler_config.json"));
            var components = new List<ComponentInfo>();
            foreach (var (name, stem) in new[] { ("text_encoder", "model"), ("text_encoder_2", "model"), ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model") })
            {
                if (!folder.HasComponent(name)) continue;
                using var file = SafetensorsFile.Open(folder.WeightsFile(name, stem, null, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance));
                components.Add(Summarize(name, file.Entries.Values));
            }
            return new ModelInfo(path, "diffusers folder", Family(unet), scheduler.String("prediction_type", "epsilon")!, scheduler.String("_class_name", "?")!, components);
        }
        if (File.Exists(path))
        {
            using var checkpoint = LdmCheckpoint.Open(path, configDirectory);
            var components = new List<ComponentInfo>();
            if (checkpoint.HasFirstTextEncoder) components.Add(Summarize("text_encoder", checkpoint.TextEncoderWeights.Values.Select(r => r.File.Entries[r.Key])));
            if (checkpoint.TextEncoder2Weights is { } second) components.Add(Summarize("text_encoder_2", second.Values.Select(r => r.File.Entries[r.Key])));
            components.Add(Summarize("unet", checkpoint.UNetWeights.Values.Select(r => r.File.Entries[r.Key])));
            components.Add(Summarize("vae", checkpoint.VaeWeights.Values.Select(r => r.File.Entries[r.Key])));
            return new ModelInfo(path, "single-file checkpoint (LDM layout)", Family(checkpoint.UNetConfig),
                checkpoint.SchedulerConfig.String("prediction_type", "epsilon")!, checkpoint.SchedulerConfig.String("_class_name", "?")!, components);
        }
        throw new FileNotFoundException($"Model not found: '{path}'.", path);
    }

    private static ComponentInfo Summarize(string name, IEnumerable<SafetensorsEntry> entries)
    {
        var list = entries.ToList();
        return new ComponentInfo(name, list.Select(e => e.DType).Distinct().OrderBy(d => d).ToList(), list.Sum(e => e.ElementCount), list.Count);
    }

    private static string Family(JsonConfig unet)
    {
        // SDXL is told by its added conditioning (text embeds and time ids); the refiner's 5 time ids carry an aesthetic score.
        if (unet.String("addition_embed_type", null) == "text_time")
        {
            int added = unet.Int("projection_class_embeddings_input_dim", 0), perId = unet.Int("addition_time_embed_dim", 0);
            string role = perId > 0 && added == 1280 + 5 * perId ? "refiner" : perId > 0 && added == 1280 + 6 * perId ? "base" : $"projection_class_embeddings_input_dim {added}";
            return $"Stable Diffusion XL ({role}, cross_attention_dim {CrossAttentionDim(unet)})";
        }
        int cross = CrossAttentionDim(unet);
        return cross switch
        {
            768 => "Stable Diffusion 1.x (cross_attention_dim 768)",
            1024 => "Stable Diffusion 2.x (cross_attention_dim 1024)",
            _ => $"Stable Diffusion-style UNet (cross_attention_dim {cross}, block_out_channels [{string.Join(", ", unet.IntArray("block_out_channels") ?? [])}])",
        };
    }

    // A per-block list's first entry, or the single value.
    private static int CrossAttentionDim(JsonConfig unet)
        => !unet.Root.TryGetProperty("cross_attention_dim", out var v) ? 0
            : v.ValueKind == System.Text.Json.JsonValueKind.Array ? (v.GetArrayLength() > 0 && v[0].TryGetInt32(out int first) ? first : 0)
            : unet.Int("cross_attention_dim", 0);

    /// <summary>Human-readable lines, as <c>ldm info</c> prints them.</summary>
    public IEnumerable<string> Lines()
    {
        static string DType(string d) => d switch { "F16" => "float16", "F32" => "float32", "BF16" => "bfloat16", "I64" => "int64", _ => d };
        yield return $"model:        {Path}";
        yield return $"format:       {Format}";
        yield return $"architecture: {Architecture}";
        yield return $"scheduler:    {Scheduler} ({PredictionType})";
        foreach (var c in Components)
            yield return $"{c.Name + ":",-13} {c.Parameters:N0} parameters in {c.Tensors} tensors, {string.Join("/", c.DTypes.Select(DType))}";
        yield return $"total:        {Components.Sum(c => c.Parameters):N0} parameters";
    }
}
