using LatentDiffusion.Abstractions;
using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using static TorchSharp.torch;

namespace LatentDiffusion.Loading;

/// <summary>Builds a pipeline from what is on disk: a diffusers folder or a single-file checkpoint.</summary>
internal static class ModelLoader
{
    public static StableDiffusionPipeline Load(string path, PipelineOptions options, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        // Components combine folder and file names; a full path keeps a relative model path from being applied twice.
        path = Path.GetFullPath(path);
        var logger = options.LoggerFactory?.CreateLogger("LatentDiffusion.Loading") ?? (ILogger)NullLogger.Instance;
        TorchRuntime.EnsureInitialized(options.Runtime, logger);
        var device = DeviceSpec.Parse(options.Device);
        var dtype = options.DType;
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new ArgumentException($"DType {dtype} is not supported: use Float32, Float16 or BFloat16.");
        if (dtype == ScalarType.Float16 && device.type == TorchSharp.DeviceType.CPU)
            logger.LogWarning("float16 on the CPU is several times slower per step than float32 (libtorch has few half-precision CPU kernels): use float32 on the CPU, float16 on a GPU.");
        var vaeDtype = options.UpcastVae ? ScalarType.Float32 : dtype;

        if (Directory.Exists(path)) return LoadFolder(path, options, device, dtype, vaeDtype, logger, ct);
        if (File.Exists(path))
        {
            if (path.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".pt", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase))
                throw new NotSupportedException($"'{path}' is a pickled PyTorch checkpoint; only .safetensors files are loaded (pickles can run code). Convert it to .safetensors first.");
            return LoadSingleFile(path, options, device, dtype, vaeDtype, logger, ct);
        }
        throw new FileNotFoundException($"Model not found: '{path}' is neither a diffusers folder nor a .safetensors file.", path);
    }

    private static StableDiffusionPipeline LoadFolder(string dir, PipelineOptions options, Device device, ScalarType dtype, ScalarType vaeDtype, ILogger logger, CancellationToken ct)
    {
        var index = DiffusersFolder.Open(dir);
        logger.LogInformation("Loading diffusers pipeline {Folder} ({Class})", dir, index.ClassName);
        var tokenizer = ClipTokenizer.FromDirectory(index.ComponentDirectory("tokenizer"));
        var scheduler = SchedulerRegistry.FromConfig(JsonConfig.Load(index.ComponentFile("scheduler", "scheduler_config.json")));
        ct.ThrowIfCancellationRequested();
        ITextEncoder? text = null; IUNet? unet = null;
        try
        {
            text = ClipTextModel.Load(index.ComponentDirectory("text_encoder"), device, dtype, index.WeightsFile("text_encoder", "model", options.Variant, logger));
            ct.ThrowIfCancellationRequested();
            unet = UNet2DConditionModel.Load(index.ComponentDirectory("unet"), device, dtype, index.WeightsFile("unet", "diffusion_pytorch_model", options.Variant, logger));
            ct.ThrowIfCancellationRequested();
            var vae = AutoencoderKL.Load(index.ComponentDirectory("vae"), device, vaeDtype, index.WeightsFile("vae", "diffusion_pytorch_model", options.Variant, logger));
            return new StableDiffusionPipeline(tokenizer, text, unet, vae, scheduler, options);
        }
        catch
        {
            text?.Dispose(); unet?.Dispose();
            throw;
        }
    }

    private static StableDiffusionPipeline LoadSingleFile(string file, PipelineOptions options, Device device, ScalarType dtype, ScalarType vaeDtype, ILogger logger, CancellationToken ct)
    {
        using var checkpoint = LdmCheckpoint.Open(file, options.ConfigDirectory);
        logger.LogInformation("Loading single-file checkpoint {File}", file);
        var tokenizer = ClipTokenizer.ForModel(file, options.ConfigDirectory);
        var scheduler = SchedulerRegistry.FromConfig(checkpoint.SchedulerConfig);
        ITextEncoder? text = null; IUNet? unet = null;
        try
        {
            text = ClipTextModel.Load(checkpoint.TextEncoderWeights, checkpoint.TextEncoderConfig, device, dtype, $"text_encoder from '{file}'");
            ct.ThrowIfCancellationRequested();
            unet = UNet2DConditionModel.Load(checkpoint.UNetConfig, checkpoint.UNetWeights, device, dtype, $"unet from '{file}'");
            ct.ThrowIfCancellationRequested();
            var vae = AutoencoderKL.Load(AutoencoderKLConfig.FromJson(checkpoint.VaeConfig), checkpoint.VaeWeights, device, vaeDtype, $"vae from '{file}'");
            return new StableDiffusionPipeline(tokenizer, text, unet, vae, scheduler, options);
        }
        catch
        {
            text?.Dispose(); unet?.Dispose();
            throw;
        }
    }
}
