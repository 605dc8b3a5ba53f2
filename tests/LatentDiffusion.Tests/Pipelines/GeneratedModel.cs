using LatentDiffusion.Shapes;
using System.Text.Json.Nodes;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Text;
using LatentDiffusion.Training;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// A small SD 1.x-style pipeline that the test code builds, for tests that need some model but not the reference's
/// (behaviour, bad input, the CLI, leaks): seeded random weights, saved as float16 with our own
/// <see cref="DiffusersPipelineWriter"/> into a temporary folder once per run, so these tests run without the fixtures.
/// Like tiny-sd15: 64x64 images over 8x8x4 latents (a 4-level VAE), a 77-token CLIP tokenizer (the built-in shapes
/// vocabulary), a cross-attention UNet, and tiny-sd15's PNDM scheduler config (PLMS, <c>skip_prk_steps</c>, epsilon).
/// </summary>
public static class GeneratedModel
{
    private static readonly Lazy<string> FolderLazy = new(Create);
    private static readonly Lazy<StableDiffusionPipeline> PipelineLazy = new(() => StableDiffusionPipeline.LoadAsync(Folder).GetAwaiter().GetResult());

    /// <summary>The pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), written on first use.</summary>
    public static string Folder => FolderLazy.Value;

    /// <summary>The folder loaded once (float32, CPU) and shared by read-only tests.</summary>
    public static StableDiffusionPipeline Pipeline => PipelineLazy.Value;

    /// <summary>A tokenizer folder: the shapes vocabulary (byte-level, so any text encodes) with CLIP's 77 tokens.</summary>
    public static string WriteTokenizer(string dir)
    {
        ShapesVocabulary.Write(dir);
        string configPath = Path.Combine(dir, "tokenizer_config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["model_max_length"] = ClipTokenizer.DefaultMaxLength;
        File.WriteAllText(configPath, config.ToJsonString());
        return dir;
    }

    /// <summary>A seeded VAE like tiny-sd15's in shape: 4 levels (a factor of 8), 4 latent channels.</summary>
    public static AutoencoderKL CreateVae(long seed = 12)
    {
        var vae = new AutoencoderKL(new AutoencoderKLConfig
        {
            BlockOutChannels = [16, 16, 32, 32],
            DownBlockTypes = [.. Enumerable.Repeat(AutoencoderKLConfig.DownEncoderBlock2D, 4)],
            UpBlockTypes = [.. Enumerable.Repeat(AutoencoderKLConfig.UpDecoderBlock2D, 4)],
            LayersPerBlock = 1,
            NormNumGroups = 8,
            SampleSize = 64,
        }, CPU, ScalarType.Float32);
        ModelInitializer.Initialize(vae, seed);
        return vae;
    }

    private static string Create()
    {
        string root = Path.Combine(Path.GetTempPath(), "ld-generated-" + Guid.NewGuid().ToString("N"));
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(root, recursive: true); } catch (IOException) { } };
        string tokenizerDir = WriteTokenizer(Path.Combine(root, "tokenizer-source"));
        var tokenizer = ClipTokenizer.FromDirectory(tokenizerDir);
        using var textEncoder = new ClipTextModel(new ClipTextConfig(tokenizer.VocabularySize, 32, 64, 4, 2), CPU, ScalarType.Float32);
        using var unet = new UNet2DConditionModel(Training.TinyTrainingModels.UNetConfig(sampleSize: 8, [32, 64]), CPU, ScalarType.Float32);
        using var vae = CreateVae();
        ModelInitializer.Initialize(textEncoder, 10);
        ModelInitializer.Initialize(unet, 11);
        string folder = Path.Combine(root, "tiny-generated");
        DiffusersPipelineWriter.Save(folder, tokenizerDir, textEncoder, unet, vae, TinyConfigs.Sd15Scheduler);
        return folder;
    }
}
