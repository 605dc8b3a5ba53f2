using System.Text.Json.Nodes;
using LatentDiffusion.Formats;
using LatentDiffusion.Loading;
using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Loading;
using LatentDiffusion.Tests.Pipelines;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>SDXL from a diffusers folder and from the original single file: the same model, and clear refusals.</summary>
public class SdxlLoadingTests
{
    private static string SingleFile => Fixtures.PathOf("tiny-sdxl.safetensors");

    private string _temp = "";

    [SetUp]
    public void CreateTemp() => Directory.CreateDirectory(_temp = Path.Combine(Path.GetTempPath(), "ld-sdxl-" + Guid.NewGuid().ToString("N")));

    [TearDown]
    public void DeleteTemp() => Directory.Delete(_temp, recursive: true);

    private static void AssertSameWeights(nn.Module a, nn.Module b, string what)
    {
        var left = a.state_dict();
        var right = b.state_dict();
        Assert.That(right.Keys.Order(), Is.EqualTo(left.Keys.Order()), what + ": names");
        foreach (var (name, value) in left)
        {
            Assert.That(right[name].shape, Is.EqualTo(value.shape), $"{what}: {name} shape");
            Assert.That(value.eq(right[name]).all().item<bool>(), Is.True, $"{what}: {name} differs");
        }
    }

    [Test]
    public async Task TheSingleFileIsExactlyTheFolder()
    {
        var folder = TinyModels.Get("tiny-sdxl");
        using var single = await StableDiffusionPipeline.LoadAsync(SingleFile, new PipelineOptions { ConfigDirectory = Fixtures.PathOf("tiny-sdxl") });
        Assert.That(single.IsStableDiffusionXL);
        AssertSameWeights((nn.Module)single.TextEncoder, (nn.Module)folder.TextEncoder, "text_encoder");
        AssertSameWeights((nn.Module)single.TextEncoder2!, (nn.Module)folder.TextEncoder2!, "text_encoder_2");
        AssertSameWeights((nn.Module)single.UNet, (nn.Module)folder.UNet, "unet");
        AssertSameWeights((nn.Module)single.Vae, (nn.Module)folder.Vae, "vae");
        Assert.That(single.Scheduler.ClassName, Is.EqualTo("EulerDiscreteScheduler"));
        Assert.That(single.XLOptions, Is.EqualTo(folder.XLOptions));

        var c = SdxlPipelineParityTests.Case("sdxl/txt2img/euler/42");
        string prompt = c.GetProperty("call").GetProperty("prompt").GetString()!;
        var options = SdxlPipelineParityTests.Options(c) with { CustomScheduler = null };
        using var fromFile = await single.GenerateAsync(prompt, options);
        using var fromFolder = await folder.GenerateAsync(prompt, options);
        AssertTensor.MaxAbsClose(fromFile.Pixels, fromFolder.Pixels, 0, "single file versus folder");
        using var expected = SdxlFixtures.Expected("sdxl/txt2img/euler/42/image");
        AssertTensor.MaxAbsClose(fromFile.Pixels, expected, 2e-3, "single file versus the reference");
    }

    [Test]
    public void TheSingleFileIsDetectedAndItsConfigsInferredFromTheKeys()
    {
        using var checkpoint = LdmCheckpoint.Open(SingleFile);
        Assert.That(checkpoint.IsStableDiffusionXL);
        Assert.That(checkpoint.HasFirstTextEncoder);
        Assert.That(checkpoint.UnexpectedKeys, Is.Empty);
        Assert.That(checkpoint.UNetWeights.Keys, Does.Contain("add_embedding.linear_1.weight").And.Contain("add_embedding.linear_2.bias"));
        Assert.That(checkpoint.TextEncoder2Weights!["text_projection.weight"].Shape, Is.EqualTo(new long[] { 24, 32 }), "the transpose of [hidden, projection]");
        Assert.That(checkpoint.TextEncoder2Weights.Keys, Does.Contain("encoder.layers.3.self_attn.v_proj.bias"), "every OpenCLIP block is kept");
        var unet = UNet2DConditionConfig.FromJson(checkpoint.UNetConfig);
        Assert.That(unet.AdditionEmbedType, Is.EqualTo("text_time"));
        Assert.That(unet.ProjectionClassEmbeddingsInputDim, Is.EqualTo(72));
        Assert.That(unet.AdditionTimeEmbedDim, Is.EqualTo(8), "(72 - 24) / 6");
        Assert.That(unet.TransformerLayersPerBlock, Is.EqualTo(new[] { 1, 1, 2 }));
        Assert.That(unet.CrossAttentionDim[0], Is.EqualTo(48));
        Assert.That(unet.UseLinearProjection);
        var text2 = ClipTextConfig.FromJson(checkpoint.TextEncoder2Config!);
        Assert.That(text2.ProjectionDim, Is.EqualTo(24));
        Assert.That(text2.NumHiddenLayers, Is.EqualTo(4));
        Assert.That(text2.HiddenAct, Is.EqualTo(ClipActivation.Gelu));
        Assert.That(ClipTextConfig.FromJson(checkpoint.TextEncoderConfig).HiddenAct, Is.EqualTo(ClipActivation.QuickGelu));
        Assert.That(AutoencoderKLConfig.FromJson(checkpoint.VaeConfig).ScalingFactor, Is.EqualTo(0.13025));
        Assert.That(checkpoint.SchedulerConfig.String("_class_name", null), Is.EqualTo("EulerDiscreteScheduler"));
        Assert.That(checkpoint.PipelineConfig!.Bool("force_zeros_for_empty_prompt", false));
        // The inferred text encoder 2 loads the file's weights (heads are the one thing the shapes cannot tell).
        Assert.DoesNotThrow(() => ClipTextModel.CheckWeights(checkpoint.TextEncoder2Weights, checkpoint.TextEncoder2Config!, "te2"));
    }

    [Test]
    public void ABrokenOpenClipEncoderIsRefusedNamingTheTensor()
    {
        string path = Path.Combine(_temp, "bad.safetensors");
        // A text_projection that is not a matrix.
        HostileFile.Copy(SingleFile, path, (header, _) => header["conditioner.embedders.1.model.text_projection"]!["shape"] = new JsonArray(32, 24, 1));
        var e = Assert.Throws<InvalidDataException>(() => LdmCheckpoint.Open(path).Dispose());
        Assert.That(e!.Message, Does.Contain("conditioner.embedders.1.model.text_projection").And.Contain("matrix"));

        // No text_projection at all: the loader names the missing weight.
        HostileFile.Copy(SingleFile, path, (header, _) => header.Remove("conditioner.embedders.1.model.text_projection"));
        var load = Assert.ThrowsAsync<InvalidDataException>(() => StableDiffusionPipeline.LoadAsync(path, new PipelineOptions { ConfigDirectory = Fixtures.PathOf("tiny-sdxl") }));
        Assert.That(load!.Message, Does.Contain("text_projection"));

        // The OpenCLIP encoder missing entirely.
        HostileFile.Copy(SingleFile, path, (header, _) =>
        {
            foreach (var key in header.Select(p => p.Key).Where(k => k.StartsWith("conditioner.embedders.1.", StringComparison.Ordinal)).ToList()) header.Remove(key);
        });
        e = Assert.Throws<InvalidDataException>(() => LdmCheckpoint.Open(path).Dispose());
        Assert.That(e!.Message, Does.Contain("conditioner.embedders.1.model"));
    }

    [Test]
    public void AnUnknownTensorInsideAnSdxlEncoderIsRefused()
    {
        string path = Path.Combine(_temp, "extra.safetensors");
        HostileFile.Copy(SingleFile, path, extras: TestSafetensorsWriter.Zeros("conditioner.embedders.1.model.transformer.resblocks.0.ls_1.gamma", "F16", [32]));
        var e = Assert.ThrowsAsync<InvalidDataException>(() => StableDiffusionPipeline.LoadAsync(path, new PipelineOptions { ConfigDirectory = Fixtures.PathOf("tiny-sdxl") }));
        Assert.That(e!.Message, Does.Contain("ls_1.gamma"));
    }

    [Test]
    public void BadSdxlFoldersAreRefusedBeforeAnyWeightIsBuilt()
    {
        string dir = Path.Combine(_temp, "m");
        HostileFile.CopyFolder(Fixtures.PathOf("tiny-sdxl"), dir);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "model_index.json")))!.AsObject();

        // A refiner's setting on a base UNet: 24 + 5 x 8 = 64, not 72.
        index["requires_aesthetics_score"] = true;
        File.WriteAllText(Path.Combine(dir, "model_index.json"), index.ToJsonString());
        var e = Assert.ThrowsAsync<InvalidDataException>(() => StableDiffusionPipeline.LoadAsync(dir));
        Assert.That(e!.Message, Does.Contain("projection_class_embeddings_input_dim").And.Contain("72").And.Contain("64"));

        // text_encoder_2 as a plain CLIPTextModel: no pooled projection.
        index.Remove("requires_aesthetics_score");
        File.WriteAllText(Path.Combine(dir, "model_index.json"), index.ToJsonString());
        string te2 = Path.Combine(dir, "text_encoder_2", "config.json");
        var config = JsonNode.Parse(File.ReadAllText(te2))!.AsObject();
        config["architectures"] = new JsonArray("CLIPTextModel");
        File.WriteAllText(te2, config.ToJsonString());
        var error = Assert.CatchAsync(() => StableDiffusionPipeline.LoadAsync(dir));
        Assert.That(error, Is.InstanceOf<InvalidDataException>());
        Assert.That(error!.Message, Does.Contain("text_projection"));

        // model_index.json naming a class the component cannot be.
        config["architectures"] = new JsonArray("CLIPTextModelWithProjection");
        File.WriteAllText(te2, config.ToJsonString());
        index["text_encoder_2"] = new JsonArray("transformers", "T5EncoderModel");
        File.WriteAllText(Path.Combine(dir, "model_index.json"), index.ToJsonString());
        var unsupported = Assert.Throws<NotSupportedException>(() => DiffusersFolder.Open(dir));
        Assert.That(unsupported!.Message, Does.Contain("text_encoder_2").And.Contain("T5EncoderModel"));

        // A first encoder without its tokenizer.
        index["text_encoder_2"] = new JsonArray("transformers", "CLIPTextModelWithProjection");
        index["tokenizer"] = new JsonArray(null, null);
        File.WriteAllText(Path.Combine(dir, "model_index.json"), index.ToJsonString());
        var invalid = Assert.Throws<InvalidDataException>(() => DiffusersFolder.Open(dir));
        Assert.That(invalid!.Message, Does.Contain("tokenizer"));
    }

    [Test]
    public void AFloat16SdxlKeepsItsVaeInFloat32AsForceUpcastSays()
    {
        using var pipeline = StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sdxl"), new PipelineOptions { DType = ScalarType.Float16 }).GetAwaiter().GetResult();
        Assert.That(pipeline.UNet.DType, Is.EqualTo(ScalarType.Float16));
        Assert.That(pipeline.TextEncoder2!.DType, Is.EqualTo(ScalarType.Float16));
        Assert.That(pipeline.Vae.DType, Is.EqualTo(ScalarType.Float32));
    }

    [Test]
    public async Task AStandaloneVaeFileReplacesTheModelsVaeInEitherLayout()
    {
        // The original layout, as sdxl_vae.safetensors stores it: the single file's first_stage_model.* without the prefix.
        string original = Path.Combine(_temp, "sdxl_vae.safetensors");
        HostileFile.Copy(SingleFile, original, (header, _) =>
        {
            foreach (var key in header.Select(p => p.Key).ToList())
            {
                var value = header[key]!;
                header.Remove(key);
                if (key.StartsWith("first_stage_model.", StringComparison.Ordinal)) header[key["first_stage_model.".Length..]] = value.DeepClone();
            }
        });
        var folder = TinyModels.Get("tiny-sdxl");
        foreach (var file in new[] { original, Fixtures.PathOf("tiny-sdxl", "vae", "diffusion_pytorch_model.safetensors") })
        {
            using var pipeline = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sdxl"), new PipelineOptions { VaeFile = file });
            AssertSameWeights((nn.Module)pipeline.Vae, (nn.Module)folder.Vae, Path.GetFileName(file));
        }
        // A file that is not a VAE of this shape is refused, naming it.
        var e = Assert.ThrowsAsync<InvalidDataException>(() => StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sdxl"), new PipelineOptions { VaeFile = SingleFile }));
        Assert.That(e!.Message, Does.Contain("not a VAE file"));
        e = Assert.ThrowsAsync<InvalidDataException>(() => StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sdxl"), new PipelineOptions { VaeFile = Fixtures.PathOf("tiny-sdxl", "unet", "diffusion_pytorch_model.safetensors") }));
        Assert.That(e!.Message, Does.Contain("VAE file"));
    }

    [Test]
    public void ModelInfoNamesTheFamily()
    {
        var folder = ModelInfo.Describe(Fixtures.PathOf("tiny-sdxl"));
        Assert.That(folder.Architecture, Does.StartWith("Stable Diffusion XL"));
        Assert.That(folder.Components.Select(c => c.Name), Is.EqualTo(new[] { "text_encoder", "text_encoder_2", "unet", "vae" }));
        var single = ModelInfo.Describe(SingleFile);
        Assert.That(single.Architecture, Does.StartWith("Stable Diffusion XL"));
        Assert.That(single.Components.Select(c => c.Name), Is.EqualTo(new[] { "text_encoder", "text_encoder_2", "unet", "vae" }));
        Assert.That(single.Scheduler, Is.EqualTo("EulerDiscreteScheduler"));
        Assert.That(ModelInfo.Describe(Fixtures.PathOf("tiny-sd15")).Architecture, Does.Not.Contain("XL"));
    }
}
