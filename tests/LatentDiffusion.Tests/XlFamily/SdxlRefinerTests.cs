using System.Text.Json.Nodes;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Loading;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Loading;
using LatentDiffusion.UNet;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>
/// An SDXL refiner: only the second text encoder, <c>requires_aesthetics_score</c>, 5 time ids. Built from tiny-sdxl's
/// second encoder and a UNet of the refiner's shape (context 32 wide, 24 + 5 x 8 = 64 added inputs) with seeded weights.
/// </summary>
public class SdxlRefinerTests
{
    private string _dir = "";

    [SetUp]
    public void CreateRefinerFolder()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ld-refiner-" + Guid.NewGuid().ToString("N"));
        HostileFile.CopyFolder(Fixtures.PathOf("tiny-sdxl"), _dir);
        Directory.Delete(Path.Combine(_dir, "text_encoder"), recursive: true);
        Directory.Delete(Path.Combine(_dir, "tokenizer"), recursive: true);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "model_index.json")))!.AsObject();
        index["_class_name"] = "StableDiffusionXLImg2ImgPipeline";
        index["text_encoder"] = new JsonArray(null, null);
        index["tokenizer"] = new JsonArray(null, null);
        index["force_zeros_for_empty_prompt"] = false;
        index["requires_aesthetics_score"] = true;
        File.WriteAllText(Path.Combine(_dir, "model_index.json"), index.ToJsonString());

        var config = UNet2DConditionConfig.Load(Fixtures.PathOf("tiny-sdxl", "unet", "config.json")) with
        {
            CrossAttentionDim = [32, 32, 32],
            ProjectionClassEmbeddingsInputDim = 64,
        };
        File.WriteAllText(Path.Combine(_dir, "unet", "config.json"), config.ToJson().ToJsonString());
        manual_seed(11);
        using var unet = new UNet2DConditionModel(config, CPU, ScalarType.Float32);
        var weights = unet.state_dict().ToDictionary(p => p.Key, p => p.Value);
        SafetensorsWriter.Save(Path.Combine(_dir, "unet", "diffusion_pytorch_model.safetensors"), weights);
    }

    [TearDown]
    public void DeleteRefinerFolder()
    {
        // Without the fixtures SetUp stops (the test is skipped) before the folder exists.
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Test]
    public async Task ARefinerFolderLoadsWithOneEncoderAndConditionsOnTheAestheticScore()
    {
        await using var loaded = await StableDiffusionPipeline.LoadAsync(_dir);
        Assert.That(loaded.IsStableDiffusionXL);
        Assert.That(loaded.XLOptions, Is.EqualTo(new StableDiffusionXLOptions { ForceZerosForEmptyPrompt = false, RequiresAestheticsScore = true }));
        Assert.That(loaded.TextEncoder, Is.SameAs(loaded.TextEncoder2), "a refiner's only encoder is the second");
        Assert.That(ModelInfo.Describe(_dir).Components.Select(c => c.Name), Is.EqualTo(new[] { "text_encoder_2", "unet", "vae" }));

        using var recording = new RecordingUNet(loaded.UNet);
        using var refiner = new StableDiffusionPipeline(null, null, loaded.Tokenizer2!, loaded.TextEncoder2!, recording, loaded.Vae, loaded.Scheduler,
            loaded.XLOptions, leaveComponentsOpen: true);
        using var start = await TinyModelsForRefiner.BaseLatents();
        using var result = await refiner.GenerateAsync("a red car", new GenerationOptions
        {
            Steps = 8, GuidanceScale = 5, Seed = 3, DenoisingStart = 0.5, Latents = start, AestheticScore = 7, NegativeAestheticScore = 2,
            CropsCoordsTopLeft = (4, 8),
        });
        Assert.That(result.Pixels.shape, Is.EqualTo(new long[] { 1, 64, 64, 3 }));
        Assert.That(recording.TimeIds, Has.Count.EqualTo(4), "the 4 timesteps below 500");
        // [negative; positive]: original (64, 64), the crop, then the aesthetic score; the negative crop defaults to (0, 0).
        Assert.That(recording.TimeIds[0], Is.EqualTo(new float[] { 64, 64, 0, 0, 2, 64, 64, 4, 8, 7 }));
    }

    [Test]
    public void ABaseUNetBehindARefinersSettingsIsRefused()
    {
        var tiny = Pipelines.TinyModels.Get("tiny-sdxl");
        var e = Assert.Throws<ArgumentException>(() => new StableDiffusionPipeline(null, null, tiny.Tokenizer2!, tiny.TextEncoder2!, tiny.UNet, tiny.Vae, tiny.Scheduler,
            new StableDiffusionXLOptions { RequiresAestheticsScore = true }, leaveComponentsOpen: true));
        Assert.That(e!.Message, Does.Contain("cross_attention_dim").Or.Contain("projection_class_embeddings_input_dim"));
        e = Assert.Throws<ArgumentException>(() => new StableDiffusionPipeline(tiny.Tokenizer, tiny.TextEncoder, tiny.Tokenizer2!, tiny.TextEncoder2!, tiny.UNet, tiny.Vae, tiny.Scheduler,
            new StableDiffusionXLOptions { RequiresAestheticsScore = true }, leaveComponentsOpen: true));
        Assert.That(e!.Message, Does.Contain("projection_class_embeddings_input_dim").And.Contain("72").And.Contain("64"));
        Assert.Throws<ArgumentException>(() => new StableDiffusionPipeline(tiny.Tokenizer, null, tiny.Tokenizer2!, tiny.TextEncoder2!, tiny.UNet, tiny.Vae, tiny.Scheduler, leaveComponentsOpen: true));
    }

    private static class TinyModelsForRefiner
    {
        /// <summary>The latents tiny-sdxl hands over at the middle of an 8-step schedule.</summary>
        public static async Task<Tensor> BaseLatents()
        {
            using var first = await Pipelines.TinyModels.Get("tiny-sdxl").GenerateAsync("a red car",
                new GenerationOptions { Steps = 8, GuidanceScale = 5, Seed = 3, Width = 64, Height = 64, DenoisingEnd = 0.5, ReturnLatents = true });
            return first.Latents!.clone();
        }
    }
}
