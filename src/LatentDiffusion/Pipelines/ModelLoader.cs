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
        var textTensors = AllTensors(textFile);
        var unetTensors = AllTensors(unetFile);
        var vaeTensors = AutoencoderKL.WeightMap(vaeFile);
        ClipTextModel.CheckWeights(textTensors, textConfig, textName);
        UNet2DConditionModel.CheckWeights(unetConfig, unetTensors, unetName);
        CheckWidths(ClipTextConfig.FromJson(textConfig), unetConfig, dir);
        AutoencoderKL.CheckWeights(vaeConfig, vaeTensors, vaeName);
        ct.ThrowIfCancellationRequested();
        ITextEncoder? text = null; IUNet? unet = null; IVae? vae = null;
        try
        {
            text = Timed(logger, "text encoder", () => ClipTextModel.LoadPrechecked(textTensors, textConfig, device, dtype, textName));
            ct.ThrowIfCancellationRequested();
            unet = Timed(logger, "UNet", () => UNet2DConditionModel.LoadPrechecked(unetConfig, unetTensors, device, dtype, unetName));
            ct.ThrowIfCancellationRequested();
            vae = options.VaeFile is null ? Timed(logger, "VAE", () => AutoencoderKL.LoadPrechecked(vaeConfig, vaeTensors, device, vaeDtype, vaeName))
                : LoadVaeFile(options.VaeFile, vaeConfig, device, vaeDtype);
            return new StableDiffusionPipeline(tokenizer, text, unet, vae, scheduler, options);
        }
        catch
        {
            // The constructor can still fail (a LoRA of PipelineOptions.Loras that does not fit): nothing built is kept.
            text?.Dispose(); unet?.Dispose(); vae?.Dispose();
            throw;
        }
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
        ClipTextModel.CheckWeights(checkpoint.TextEncoderWeights, checkpoint.TextEncoderConfig, textName);
        UNet2DConditionModel.CheckWeights(unetConfig, checkpoint.UNetWeights, unetName);
        CheckWidths(ClipTextConfig.FromJson(checkpoint.TextEncoderConfig), unetConfig, file);
        AutoencoderKL.CheckWeights(vaeConfig, checkpoint.VaeWeights, vaeName);
        ct.ThrowIfCancellationRequested();
        ITextEncoder? text = null; IUNet? unet = null; IVae? vae = null;
        try
        {
            text = Timed(logger, "text encoder", () => ClipTextModel.LoadPrechecked(checkpoint.TextEncoderWeights, checkpoint.TextEncoderConfig, device, dtype, textName));
            ct.ThrowIfCancellationRequested();
            unet = Timed(logger, "UNet", () => UNet2DConditionModel.LoadPrechecked(unetConfig, checkpoint.UNetWeights, device, dtype, unetName));
            ct.ThrowIfCancellationRequested();
            vae = options.VaeFile is null ? Timed(logger, "VAE", () => AutoencoderKL.LoadPrechecked(vaeConfig, checkpoint.VaeWeights, device, vaeDtype, vaeName))
                : LoadVaeFile(options.VaeFile, vaeConfig, device, vaeDtype);
            return new StableDiffusionPipeline(tokenizer, text, unet, vae, scheduler, options);
        }
        catch
        {
            // The constructor can still fail (a LoRA of PipelineOptions.Loras that does not fit): nothing built is kept.
            text?.Dispose(); unet?.Dispose(); vae?.Dispose();
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
