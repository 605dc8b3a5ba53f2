using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Loading;
using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Runtime;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>Builds a pipeline from what is on disk: a diffusers folder or a single-file checkpoint.</summary>
internal static partial class ModelLoader
{
    public static StableDiffusionPipeline Load(string path, PipelineOptions options, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        // Components combine folder and file names; a full path keeps a relative model path from being applied twice.
        path = Path.GetFullPath(path);
        var logger = options.LoggerFactory?.CreateLogger("LatentDiffusion.Loading") ?? (ILogger)NullLogger.Instance;
        if (options.Threads is { } threads) TorchThreads.Validate(threads);
        TorchRuntime.EnsureInitialized(options.Runtime, logger);
        TorchThreads.Apply(options.Threads);
        var device = DeviceSpec.Parse(options.Device);
        var dtype = options.DType;
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new ArgumentException($"DType {dtype} is not supported: use Float32, Float16 or BFloat16.");
        if (dtype == ScalarType.Float16 && device.type == TorchSharp.DeviceType.CPU)
            logger.LogWarning("float16 on the CPU is several times slower per step than float32 (libtorch has few half-precision CPU kernels): use float32 on the CPU, float16 on a GPU.");
        var vaeDtype = options.UpcastVae ? ScalarType.Float32 : dtype;
        if (options.WeightDType is { } weightDtype && weightDtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new ArgumentException($"WeightDType {weightDtype} is not supported: use Float16, BFloat16 or Float32 (or null: the DType).");
        // The parts built below hold their linear and convolution weights in WeightDType (see ModuleBuilder).
        using var storage = WeightStorage.Use(options.WeightDType);

        if (Directory.Exists(path)) return LoadFolder(path, options, device, dtype, vaeDtype, logger, ct);
        // LdmCheckpoint.Open refuses pickled checkpoints (.ckpt, .pt, .pth, .bin) by name.
        if (File.Exists(path)) return LoadSingleFile(path, options, device, dtype, vaeDtype, logger, ct);
        throw new FileNotFoundException($"Model not found: '{path}' is neither a diffusers folder nor a .safetensors file.", path);
    }

    private static StableDiffusionPipeline LoadFolder(string dir, PipelineOptions options, Device device, ScalarType dtype, ScalarType vaeDtype, ILogger logger, CancellationToken ct)
    {
        var index = DiffusersFolder.Open(dir);
        logger.LogInformation("Loading diffusers pipeline {Folder} ({Class})", dir, index.ClassName);
        if (index.IsStableDiffusionXL) return LoadXlFolder(index, options, device, dtype, vaeDtype, logger, ct);
        var tokenizer = ClipTokenizer.FromDirectory(index.ComponentDirectory("tokenizer"));
        var scheduler = SchedulerRegistry.FromConfig(JsonConfig.Load(index.ComponentFile("scheduler", "scheduler_config.json")));
        string textDir = index.ComponentDirectory("text_encoder"), unetDir = index.ComponentDirectory("unet"), vaeDir = index.ComponentDirectory("vae");
        string textWeights = index.WeightsFile("text_encoder", "model", options.Variant, logger);
        string unetWeights = index.WeightsFile("unet", "diffusion_pytorch_model", options.Variant, logger);
        string vaeWeights = index.WeightsFile("vae", "diffusion_pytorch_model", options.Variant, logger);
        // Every config is read, range-checked and compared with its weights' header before any component is built; the
        // files stay open, so the components are then built from the same headers without opening or checking them again.
        var textConfig = JsonConfig.Load(index.ComponentFile("text_encoder", "config.json"));
        var unetConfig = UNet2DConditionConfig.Load(index.ComponentFile("unet", "config.json"));
        var vaeConfig = AutoencoderKLConfig.Load(index.ComponentFile("vae", "config.json"));
        string textName = $"text encoder from '{textDir}'", unetName = $"unet from '{unetDir}'", vaeName = $"vae (AutoencoderKL) from '{vaeDir}'";
        using var textFile = SafetensorsFile.Open(textWeights);
        using var unetFile = SafetensorsFile.Open(unetWeights);
        using var vaeFile = SafetensorsFile.Open(vaeWeights);
        var parts = new PartSources(new TextSource(AllTensors(textFile), textConfig, textName), null,
            unetConfig, AllTensors(unetFile), unetName, vaeConfig, AutoencoderKL.WeightMap(vaeFile), vaeName);
        return CheckAndBuild(parts, () => CheckWidths(ClipTextConfig.FromJson(textConfig), unetConfig, dir), options, device, dtype, vaeDtype, logger, ct,
            (text, _, unet, vae) => new StableDiffusionPipeline(tokenizer, text!, unet, vae, scheduler, options));
    }

    private static StableDiffusionPipeline LoadSingleFile(string file, PipelineOptions options, Device device, ScalarType dtype, ScalarType vaeDtype, ILogger logger, CancellationToken ct)
    {
        using var checkpoint = LdmCheckpoint.Open(file, options.ConfigDirectory);
        logger.LogInformation("Loading single-file checkpoint {File}", file);
        ReportUnusedTensors(checkpoint, logger);
        if (checkpoint.IsStableDiffusionXL) return LoadXlSingleFile(checkpoint, options, device, dtype, vaeDtype, logger, ct);
        var tokenizer = SingleFileTokenizers.Load(file, checkpoint.TextEncoderLayout, options, logger, ct);
        var scheduler = SchedulerRegistry.FromConfig(checkpoint.SchedulerConfig);
        // Every config is read, range-checked and compared with the header before any component is built (once: the
        // components are then built without checking again).
        var unetConfig = UNet2DConditionConfig.FromJson(checkpoint.UNetConfig);
        var vaeConfig = AutoencoderKLConfig.FromJson(checkpoint.VaeConfig);
        string textName = $"text_encoder from '{file}'", unetName = $"unet from '{file}'", vaeName = $"vae from '{file}'";
        var parts = new PartSources(new TextSource(checkpoint.TextEncoderWeights, checkpoint.TextEncoderConfig, textName), null,
            unetConfig, checkpoint.UNetWeights, unetName, vaeConfig, checkpoint.VaeWeights, vaeName);
        return CheckAndBuild(parts, () => CheckWidths(ClipTextConfig.FromJson(checkpoint.TextEncoderConfig), unetConfig, file), options, device, dtype, vaeDtype, logger, ct,
            (text, _, unet, vae) => new StableDiffusionPipeline(tokenizer, text!, unet, vae, scheduler, options));
    }

    // One text encoder's weights (by the module's names), config and name for messages.
    private sealed record TextSource(IReadOnlyDictionary<string, TensorRef> Weights, JsonConfig Config, string Name);

    // Every part's weights, config and name: a folder's files or a single file's slices. Text2 is SDXL's second encoder;
    // Text is null for a refiner.
    private sealed record PartSources(TextSource? Text, TextSource? Text2, UNet2DConditionConfig UNetConfig, IReadOnlyDictionary<string, TensorRef> UNetWeights,
        string UNetName, AutoencoderKLConfig VaeConfig, IReadOnlyDictionary<string, TensorRef> VaeWeights, string VaeName);

    /// <summary>
    /// Checks every part's weights against its config, and the parts against each other (<paramref name="checkWidths"/>),
    /// before anything is built (once: the parts are then built without checking again); then builds them one by one,
    /// timed, with the cancellation checked between them, and composes the pipeline. When anything fails, the
    /// constructor included (a LoRA of <see cref="PipelineOptions.Loras"/> that does not fit), nothing built is kept.
    /// </summary>
    private static StableDiffusionPipeline CheckAndBuild(PartSources p, Action checkWidths, PipelineOptions options, Device device, ScalarType dtype,
        ScalarType vaeDtype, ILogger logger, CancellationToken ct, Func<ITextEncoder?, ITextEncoder?, IUNet, IVae, StableDiffusionPipeline> compose)
    {
        if (p.Text is { } t) ClipTextModel.CheckWeights(t.Weights, t.Config, t.Name);
        if (p.Text2 is { } t2) ClipTextModel.CheckWeights(t2.Weights, t2.Config, t2.Name);
        UNet2DConditionModel.CheckWeights(p.UNetConfig, p.UNetWeights, p.UNetName);
        checkWidths();
        AutoencoderKL.CheckWeights(p.VaeConfig, p.VaeWeights, p.VaeName);
        ct.ThrowIfCancellationRequested();
        ITextEncoder? text = null, text2 = null; IUNet? unet = null; IVae? vae = null;
        try
        {
            if (p.Text is { } first) text = Timed(logger, "text encoder", () => ClipTextModel.LoadPrechecked(first.Weights, first.Config, device, dtype, first.Name));
            if (p.Text2 is { } second) text2 = Timed(logger, "text encoder 2", () => ClipTextModel.LoadPrechecked(second.Weights, second.Config, device, dtype, second.Name));
            ct.ThrowIfCancellationRequested();
            unet = Timed(logger, "UNet", () => UNet2DConditionModel.LoadPrechecked(p.UNetConfig, p.UNetWeights, device, dtype, p.UNetName));
            ct.ThrowIfCancellationRequested();
            vae = options.VaeFile is null ? Timed(logger, "VAE", () => AutoencoderKL.LoadPrechecked(p.VaeConfig, p.VaeWeights, device, vaeDtype, p.VaeName))
                : LoadVaeFile(options.VaeFile, p.VaeConfig, device, vaeDtype);
            return compose(text, text2, unet, vae);
        }
        catch
        {
            text?.Dispose(); text2?.Dispose(); unet?.Dispose(); vae?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Refuses tensors of a loaded component that have no place in it (another model variant) and warns about the other
    /// tensors no component uses, beyond those single files commonly carry (<see cref="LdmCheckpoint.IsKnownExtra"/>).
    /// </summary>
    private static void ReportUnusedTensors(LdmCheckpoint checkpoint, ILogger logger)
    {
        var unsupported = checkpoint.UnsupportedKeys;
        if (unsupported.Count > 0)
            throw new InvalidDataException($"'{checkpoint.File.Path}' holds {unsupported.Count} tensor(s) of the UNet, VAE or text encoder that the model has no place for " +
                $"(a variant this library does not implement?): {Sample(unsupported)}.");
        var unexpected = checkpoint.UnexpectedKeys;
        if (unexpected.Count > 0)
            logger.LogWarning("{Count} tensor(s) in {File} belong to no component and are ignored: {Names}", unexpected.Count, checkpoint.File.Path, Sample(unexpected));
    }

    // Builds and loads one component, logging how long it took and the process's peak memory so far.
    private static T Timed<T>(ILogger logger, string component, Func<T> load)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        var result = load();
        logger.LogInformation("Loaded the {Component} in {Seconds:F1} s (peak RSS so far {PeakGb:F2} GB)", component,
            System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds, PeakMemory.PeakResidentBytes / 1e9);
        return result;
    }

    // The pipeline checks this too, but only once both models are built.
    private static void CheckWidths(ClipTextConfig text, UNet2DConditionConfig unet, string model)
    {
        if (text.HiddenSize != unet.CrossAttentionDim[0])
            throw new InvalidDataException($"'{model}': the text encoder's hidden_size ({text.HiddenSize}) does not match the UNet's cross_attention_dim ({unet.CrossAttentionDim[0]}).");
    }

    private static Dictionary<string, TensorRef> AllTensors(SafetensorsFile file)
        => file.Entries.Keys.ToDictionary(k => k, k => TensorRef.Direct(file, k), StringComparer.Ordinal);

    private static string Sample(IReadOnlyList<string> names)
        => string.Join(", ", names.Take(5).Select(Printable)) + (names.Count > 5 ? $", ... ({names.Count - 5} more)" : "");

    // A tensor name as a message may quote it: control characters replaced, long names cut.
    private static string Printable(string name)
        => "'" + string.Concat(name.Take(120).Select(c => char.IsControl(c) ? '?' : c)) + (name.Length > 120 ? "...'" : "'");
}
