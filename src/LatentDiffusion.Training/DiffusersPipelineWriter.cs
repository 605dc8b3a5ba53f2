using System.Text.Json.Nodes;
using LatentDiffusion.Formats;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Training;

/// <summary>
/// Saves a Stable Diffusion pipeline as a diffusers folder (<c>model_index.json</c>, <c>text_encoder</c>, <c>tokenizer</c>,
/// <c>unet</c>, <c>vae</c>, <c>scheduler</c>) that both <see cref="Pipelines.StableDiffusionPipeline.LoadAsync"/> and
/// diffusers' <c>StableDiffusionPipeline.from_pretrained</c> load. Tensor names are the modules' parameter names, which
/// are the reference's state-dict names (the text encoder's get transformers' <c>text_model.</c> prefix).
/// </summary>
public static class DiffusersPipelineWriter
{
    /// <summary>
    /// Writes the pipeline into <paramref name="directory"/>. Everything is written into a sibling temporary folder first
    /// and moved into place at the end, so a failure never leaves a half-written model where a model was.
    /// </summary>
    /// <param name="directory">The pipeline folder to create.</param>
    /// <param name="tokenizerDirectory">A tokenizer folder (<c>vocab.json</c>, <c>merges.txt</c>, ...), copied as is.</param>
    /// <param name="textEncoder">The text encoder.</param>
    /// <param name="unet">The UNet.</param>
    /// <param name="vae">The autoencoder.</param>
    /// <param name="schedulerConfig">The scheduler config (with <c>_class_name</c>), written as <c>scheduler/scheduler_config.json</c>.</param>
    /// <param name="saveAs">The dtype of the saved weights (default float16, as published models); null keeps each model's dtype.</param>
    /// <param name="overwrite">Replace <paramref name="directory"/> when it exists and is not empty.</param>
    /// <exception cref="IOException"><paramref name="directory"/> exists, is not empty and <paramref name="overwrite"/> is false.</exception>
    /// <exception cref="DirectoryNotFoundException">The tokenizer folder does not exist.</exception>
    public static void Save(string directory, string tokenizerDirectory, ClipTextModel textEncoder, UNet2DConditionModel unet, AutoencoderKL vae,
        JsonConfig schedulerConfig, ScalarType? saveAs = ScalarType.Float16, bool overwrite = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentException.ThrowIfNullOrEmpty(tokenizerDirectory);
        ArgumentNullException.ThrowIfNull(textEncoder);
        ArgumentNullException.ThrowIfNull(unet);
        ArgumentNullException.ThrowIfNull(vae);
        ArgumentNullException.ThrowIfNull(schedulerConfig);
        if (!Directory.Exists(tokenizerDirectory)) throw new DirectoryNotFoundException($"Tokenizer folder not found: {tokenizerDirectory}");
        string target = Path.GetFullPath(directory).TrimEnd(Path.DirectorySeparatorChar);
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any() && !overwrite)
            throw new IOException($"'{target}' already exists and is not empty; pass overwrite: true to replace it.");
        if (File.Exists(target)) throw new IOException($"'{target}' is a file.");
        string? schedulerClass = schedulerConfig.String("_class_name", null)
            ?? throw new InvalidDataException($"Scheduler config '{schedulerConfig.Source}' has no '_class_name'; diffusers needs it to pick the scheduler.");

        var tokenizer = ClipTokenizer.FromDirectory(tokenizerDirectory);
        string temp = $"{target}.tmp-{Guid.NewGuid():N}";
        Directory.CreateDirectory(temp);
        try
        {
            WriteComponent(Path.Combine(temp, "text_encoder"), "model.safetensors",
                textEncoder.Config.ToJson(tokenizer.BosTokenId, tokenizer.EosTokenId, tokenizer.PadTokenId, TransformersDTypeName(saveAs ?? textEncoder.DType)),
                textEncoder, "text_model.", saveAs);
            WriteComponent(Path.Combine(temp, "unet"), "diffusion_pytorch_model.safetensors", unet.Config.ToJson(), unet, "", saveAs);
            WriteComponent(Path.Combine(temp, "vae"), "diffusion_pytorch_model.safetensors", vae.Config.ToJson(), vae, "", saveAs);

            var schedulerDir = Directory.CreateDirectory(Path.Combine(temp, "scheduler")).FullName;
            ConfigJson.Write(Path.Combine(schedulerDir, "scheduler_config.json"), JsonNode.Parse(schedulerConfig.Root.GetRawText())!);

            var tokenizerOut = Directory.CreateDirectory(Path.Combine(temp, "tokenizer")).FullName;
            foreach (var file in Directory.GetFiles(tokenizerDirectory))
                File.Copy(file, Path.Combine(tokenizerOut, Path.GetFileName(file)));

            ConfigJson.Write(Path.Combine(temp, "model_index.json"), ModelIndex(schedulerClass));

            if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
            Directory.Move(temp, target);
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>
    /// The module's parameters and buffers by name (with <paramref name="prefix"/>), detached and copied to the CPU in
    /// <paramref name="dtype"/> (null: as held). The caller owns the returned tensors.
    /// </summary>
    public static Dictionary<string, Tensor> StateDict(nn.Module module, string prefix = "", ScalarType? dtype = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using var noGrad = no_grad();
        foreach (var (name, p) in module.named_parameters())
            result[prefix + name] = Copy(p, dtype);
        foreach (var (name, b) in module.named_buffers())
            result[prefix + name] = Copy(b, dtype);
        return result;
    }

    private static Tensor Copy(Tensor t, ScalarType? dtype)
    {
        var target = t.is_floating_point() && dtype is { } d ? d : t.dtype;
        var copy = t.detach().to(target, CPU, copy: true).contiguous();
        copy.DetachFromDisposeScope();
        return copy;
    }

    private static void WriteComponent(string dir, string weightsFile, JsonObject config, nn.Module module, string prefix, ScalarType? saveAs)
    {
        Directory.CreateDirectory(dir);
        ConfigJson.Write(Path.Combine(dir, "config.json"), config);
        var tensors = StateDict(module, prefix, saveAs);
        try
        {
            SafetensorsWriter.Save(Path.Combine(dir, weightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    private static JsonObject ModelIndex(string schedulerClass) => new()
    {
        ["_class_name"] = "StableDiffusionPipeline",
        ["_diffusers_version"] = ConfigJson.DiffusersVersion,
        ["feature_extractor"] = new JsonArray(null, null),
        ["image_encoder"] = new JsonArray(null, null),
        ["requires_safety_checker"] = false,
        ["safety_checker"] = new JsonArray(null, null),
        ["scheduler"] = new JsonArray("diffusers", schedulerClass),
        ["text_encoder"] = new JsonArray("transformers", "CLIPTextModel"),
        ["tokenizer"] = new JsonArray("transformers", "CLIPTokenizer"),
        ["unet"] = new JsonArray("diffusers", "UNet2DConditionModel"),
        ["vae"] = new JsonArray("diffusers", "AutoencoderKL"),
    };

    private static string TransformersDTypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float64 => "float64",
        _ => "float32",
    };
}
