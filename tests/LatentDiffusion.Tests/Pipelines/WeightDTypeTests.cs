using LatentDiffusion.Adapters;
using LatentDiffusion.Layers;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using LatentDiffusion.Tests.Adapters;
using LatentDiffusion.Training;
using LatentDiffusion.UNet;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// <see cref="PipelineOptions.WeightDType"/>: float16 weights computed in float32. The fixtures' files are float16, so the
/// pictures must equal float32's bit for bit while the linear and convolution weights take half the memory.
/// </summary>
public class WeightDTypeTests
{
    private static readonly PipelineOptions HalfWeights = new() { WeightDType = ScalarType.Float16 };

    // Non-square, two images, guided.
    private static readonly GenerationOptions Options = new() { Steps = 3, Seed = 4, Width = 64, Height = 48, ImagesPerPrompt = 2, GuidanceScale = 7.5 };

    [TestCase("tiny-sd15")]
    [TestCase("tiny-sdxl")]
    [TestCase("tiny-sd15.safetensors")]
    public async Task Float16WeightsComputedInFloat32GiveFloat32sPictureBitForBit(string model)
    {
        string path = Fixtures.PathOf(model);
        // The single file takes its tokenizer from the folder (there is no hub here).
        string? config = model.EndsWith(".safetensors", StringComparison.Ordinal) ? Fixtures.PathOf("tiny-sd15") : null;
        await using var full = await StableDiffusionPipeline.LoadAsync(path, new PipelineOptions { ConfigDirectory = config });
        await using var half = await StableDiffusionPipeline.LoadAsync(path, HalfWeights with { ConfigDirectory = config });
        using var expected = full.Generate("a photo of a cat", Options);
        using var actual = half.Generate("a photo of a cat", Options);

        Assert.That(actual.Pixels.equal(expected.Pixels).all().item<bool>(), "the same picture as float32");
        foreach (var (part, a, b) in new[] { ("UNet", (object)half.UNet, (object)full.UNet), ("VAE", half.Vae, full.Vae) })
        {
            long halfBytes = Bytes(a), fullBytes = Bytes(b);
            Assert.That(halfBytes, Is.LessThan(fullBytes * 0.6), $"{part}: {halfBytes} bytes of weights against {fullBytes} in float32");
        }
        // The text encoder's linear layers too; its embedding tables stay in float32 (a third of SD 1.5's encoder).
        Assert.That(((nn.Module)half.TextEncoder).modules().OfType<UpcastLinear>().Count(), Is.EqualTo(((nn.Module)full.TextEncoder).modules().OfType<TorchSharp.Modules.Linear>().Count()));
        Assert.That(Bytes(half.TextEncoder), Is.LessThan(Bytes(full.TextEncoder)));
        Assert.That(((nn.Module)half.UNet).modules().OfType<UpcastConv2d>().Count(), Is.GreaterThan(0));
        Assert.That(half.UNet.DType, Is.EqualTo(ScalarType.Float32), "it computes in float32");
    }

    [Test]
    public async Task ALoraOnFloat16WeightsGivesFloat32sPictureAndFusesCloseToIt()
    {
        string lora = Fixtures.PathOf(LoraParityTests.Kohya);
        var options = LoraParityTests.Options([new LoraWeight("kohya", 0.8)]) with { Steps = 3, Width = 64, Height = 48 };
        await using var full = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15"));
        await using var half = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15"), HalfWeights);
        full.Loras.Load(lora, "kohya", 0.8);
        half.Loras.Load(lora, "kohya", 0.8);
        using var plain = half.Generate(LoraParityTests.Prompt, options with { Loras = [] });
        using var expected = full.Generate(LoraParityTests.Prompt, options);
        using var actual = half.Generate(LoraParityTests.Prompt, options);
        Assert.That(actual.Pixels.equal(expected.Pixels).all().item<bool>(), "the LoRA runs in float32 beside float16 weights: float32's picture");
        Assert.That((actual.Pixels - plain.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-2), "the LoRA changes the picture");

        half.Loras.Fuse("kohya");
        using var fused = half.Generate(LoraParityTests.Prompt, options);
        Assert.That((fused.Pixels - expected.Pixels).abs().max().item<float>(), Is.LessThan(2e-2), "fused into float16 weights: within their rounding");
        half.Loras.Unfuse("kohya");
        using var unfused = half.Generate(LoraParityTests.Prompt, options);
        Assert.That(unfused.Pixels.equal(expected.Pixels).all().item<bool>(), "unfusing restores the float16 weights exactly");
    }

    [Test]
    public void AWeightDTypeThatIsNotAFloatingPointOneIsRefusedByName()
    {
        var e = Assert.ThrowsAsync<ArgumentException>(() => StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15"), new PipelineOptions { WeightDType = ScalarType.Int32 }))!;
        Assert.That(e.Message, Does.Contain("WeightDType").And.Contain("Int32"));
    }

    [Test]
    public void ModelsBuiltWithFloat16WeightsOutsideTheLoaderAreInitialisedAndTrainable()
    {
        var config = UNet2DConditionConfig.Load(Fixtures.PathOf("tiny-sd15", "unet", "config.json"));
        UNet2DConditionModel Build()
        {
            using (WeightStorage.Use(ScalarType.Float16)) return new UNet2DConditionModel(config, CPU, ScalarType.Float32);
        }
        manual_seed(3);
        using var first = Build();
        manual_seed(3);
        using var second = Build();
        using var noGrad = no_grad();
        var halves = first.named_parameters().Where(p => p.parameter.dtype == ScalarType.Float16).ToList();
        Assert.That(halves, Is.Not.Empty);
        Assert.That(first.named_parameters().Zip(second.named_parameters()).All(p => p.First.parameter.equal(p.Second.parameter).all().item<bool>()), "drawn from the generator, not left as found");
        Assert.That(halves.All(p => p.parameter.isfinite().all().item<bool>()));

        ModelInitializer.Initialize(first, seed: 9);
        ModelInitializer.Initialize(second, seed: 9);
        Assert.That(first.named_parameters().Zip(second.named_parameters()).All(p => p.First.parameter.equal(p.Second.parameter).all().item<bool>()), "the training initializer covers them");
    }

    private static long Bytes(object component) => ((nn.Module)component).parameters().Sum(p => p.numel() * p.element_size());
}
