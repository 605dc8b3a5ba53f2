using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Adapters;

/// <summary>LoRA files written by the tests for a model at hand, with seeded random weights (kohya names unless asked otherwise).</summary>
internal static class TestLoras
{
    /// <summary>The Linear and Conv2d modules of a pipeline's UNet and text encoder, by kohya name prefix.</summary>
    public static IEnumerable<(string Kohya, string Peft, nn.Module Module)> Modules(StableDiffusionPipeline pipeline)
    {
        foreach (var (path, module) in ((nn.Module)pipeline.UNet).named_modules())
            if (module is Linear or Conv2d) yield return ("lora_unet_" + path.Replace('.', '_'), "unet." + path, module);
        foreach (var (path, module) in ((nn.Module)pipeline.TextEncoder).named_modules())
            if (module is Linear or Conv2d) yield return ("lora_te_text_model_" + path.Replace('.', '_'), "text_encoder.text_model." + path, module);
    }

    /// <summary>
    /// A kohya LoRA for every module <paramref name="include"/> accepts (all by default): rank <paramref name="rank"/>, the
    /// given alpha, convolutions with the module's kernel in the down projection and a 1x1 up projection.
    /// </summary>
    public static string WriteKohya(StableDiffusionPipeline pipeline, string path, long seed = 1, int rank = 4, double alpha = 2,
        Func<string, bool>? include = null, double magnitude = 0.2)
    {
        var tensors = new Dictionary<string, Tensor>();
        using var generator = new Generator((ulong)seed);
        foreach (var (name, _, module) in Modules(pipeline))
        {
            if (include is not null && !include(name)) continue;
            var (down, up) = Weights(module, rank, generator, magnitude);
            tensors[name + ".lora_down.weight"] = down;
            tensors[name + ".lora_up.weight"] = up;
            tensors[name + ".alpha"] = tensor((float)alpha);
        }
        Save(path, tensors);
        return path;
    }

    /// <summary>Random down and up projections that fit <paramref name="module"/>.</summary>
    public static (Tensor Down, Tensor Up) Weights(nn.Module module, int rank, Generator generator, double magnitude = 0.2) => module switch
    {
        Linear l => (randn([rank, l.in_features], generator: generator) * magnitude, randn([l.out_features, rank], generator: generator) * magnitude),
        Conv2d c => (randn([rank, c.in_channels, c.kernel_size[0], c.kernel_size[1]], generator: generator) * magnitude,
            randn([c.out_channels, rank, 1, 1], generator: generator) * magnitude),
        _ => throw new ArgumentException(module.GetType().Name),
    };

    /// <summary>Writes and frees the tensors.</summary>
    public static void Save(string path, Dictionary<string, Tensor> tensors)
    {
        SafetensorsWriter.Save(path, tensors);
        foreach (var t in tensors.Values) t.Dispose();
    }

    /// <summary>Every weight of the UNet and the text encoder, cloned.</summary>
    public static Dictionary<string, Tensor> Snapshot(StableDiffusionPipeline pipeline)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var (name, p) in ((nn.Module)pipeline.UNet).named_parameters()) result["unet." + name] = p.detach().clone();
        foreach (var (name, p) in ((nn.Module)pipeline.TextEncoder).named_parameters()) result["text." + name] = p.detach().clone();
        return result;
    }
}
