using LatentDiffusion.Adapters;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Adapters;

/// <summary>
/// The LoRA cases of reference-phase2 (README "Phase 2"): tiny-sd15 with the kohya LoRA, the same LoRA in the PEFT format,
/// two LoRAs combined; text encoder and UNet within 1e-4 relative, images within 2e-3 max abs. Every test loads its own
/// pipeline, as every reference case started from a fresh one.
/// </summary>
public class LoraParityTests
{
    internal const string Kohya = "lora/tiny-sd15-lora-kohya.safetensors";
    internal const string Kohya2 = "lora/tiny-sd15-lora2-kohya.safetensors";
    internal const string Peft = "lora/tiny-sd15-lora-peft/pytorch_lora_weights.safetensors";
    internal const string Prompt = "a photograph of an astronaut riding a horse";

    internal static StableDiffusionPipeline LoadTinySd15() => StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15")).GetAwaiter().GetResult();

    /// <summary>The reference's call: PNDM from tiny-sd15's own scheduler file, 8 steps, 128x128, guidance 7.5, seed 42.</summary>
    internal static GenerationOptions Options(IReadOnlyList<LoraWeight>? loras = null) => new()
    {
        Steps = 8, Width = 128, Height = 128, GuidanceScale = 7.5, Seed = 42, Loras = loras,
    };

    [Test]
    public void TextEncoderWithTheKohyaLoraMatchesTheReference()
    {
        using var pipeline = LoadTinySd15();
        using var ids = Fixtures.ExpectedPhase2("lora/sd15/text/input_ids");
        using var expected = Fixtures.ExpectedPhase2("lora/sd15/text/last_hidden_state");
        using (var before = pipeline.TextEncoder.Encode(ids))
            Assert.That((before - expected).abs().max().item<float>(), Is.GreaterThan(1e-2), "the LoRA changes the text encoder's output");
        pipeline.Loras.Load(Fixtures.PathOf(Kohya), "kohya");
        using var actual = pipeline.TextEncoder.Encode(ids);
        AssertTensor.RelativeClose(actual, expected, 1e-4, "text encoder with the kohya LoRA");
    }

    [TestCase(1.0, "noise_pred_t500")]
    [TestCase(0.5, "noise_pred_t500_scale0.5")]
    public void UNetWithTheKohyaLoraMatchesTheReference(double scale, string key)
    {
        using var pipeline = LoadTinySd15();
        pipeline.Loras.Load(Fixtures.PathOf(Kohya), "kohya", scale);
        using var sample = Fixtures.ExpectedPhase2("lora/sd15/unet/sample");
        using var context = Fixtures.ExpectedPhase2("lora/sd15/unet/encoder_hidden_states");
        using var expected = Fixtures.ExpectedPhase2("lora/sd15/unet/" + key);
        using var timestep = tensor(new long[] { 500, 500 });
        using var actual = pipeline.UNet.Forward(sample, timestep, context);
        AssertTensor.RelativeClose(actual, expected, 1e-4, $"UNet with the kohya LoRA at scale {scale}");
    }

    [Test]
    public void Float16UNetWithTheLoraRunsCloseToTheReferenceAndUnfusesExactly()
    {
        using var pipeline = StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15"), new PipelineOptions { DType = ScalarType.Float16 }).GetAwaiter().GetResult();
        var before = TestLoras.Snapshot(pipeline);
        pipeline.Loras.Load(Fixtures.PathOf(Kohya), "kohya");
        using var sample = Fixtures.ExpectedPhase2("lora/sd15/unet/sample");
        using var context = Fixtures.ExpectedPhase2("lora/sd15/unet/encoder_hidden_states");
        using var expected = Fixtures.ExpectedPhase2("lora/sd15/unet/noise_pred_t500");
        using var timestep = tensor(new long[] { 500, 500 });
        using var unfused = pipeline.UNet.Forward(sample, timestep, context);
        Assert.That(unfused.dtype, Is.EqualTo(ScalarType.Float16));
        AssertTensor.RelativeClose(unfused, expected, 1e-2, "float16 UNet with the LoRA at run time");
        pipeline.Loras.Fuse();
        using var fused = pipeline.UNet.Forward(sample, timestep, context);
        AssertTensor.RelativeClose(fused, expected, 1e-2, "float16 UNet with the LoRA fused");
        pipeline.Loras.Unfuse();
        var after = TestLoras.Snapshot(pipeline);
        foreach (var (name, weight) in before)
            Assert.That(LoraBehaviourTests.Same(weight, after[name]), Is.True, $"{name} is restored exactly in float16");
    }

    [Test]
    public async Task WithoutALoraTheImageIsTheReferenceContrastCase()
    {
        using var pipeline = LoadTinySd15();
        using var result = await pipeline.GenerateAsync(Prompt, Options());
        using var expected = Fixtures.ExpectedPhase2("lora/sd15/none/42/image");
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, "lora/sd15/none/42");
    }

    [TestCase(Kohya, 1.0, "lora/sd15/kohya/1.0/42")]
    [TestCase(Kohya, 0.5, "lora/sd15/kohya/0.5/42")]
    [TestCase(Peft, 1.0, "lora/sd15/peft/1.0/42")]
    public async Task ImageWithOneLoraMatchesTheReference(string file, double scale, string key)
    {
        using var pipeline = LoadTinySd15();
        pipeline.Loras.Load(Fixtures.PathOf(file), "lora");
        // The scale chosen per generation applies to the text encoder's LoRA layers too, as cross_attention_kwargs does.
        using var result = await pipeline.GenerateAsync(Prompt, Options([new LoraWeight("lora", scale)]));
        using var expected = Fixtures.ExpectedPhase2(key + "/image");
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, key);
    }

    [Test]
    public async Task TwoLorasWithTheirOwnScalesMatchTheReference()
    {
        using var pipeline = LoadTinySd15();
        pipeline.Loras.Load(Fixtures.PathOf(Kohya), "a");
        pipeline.Loras.Load(Fixtures.PathOf(Kohya2), "b");
        using var result = await pipeline.GenerateAsync(Prompt, Options([new LoraWeight("a", 0.8), new LoraWeight("b", 0.6)]));
        using var expected = Fixtures.ExpectedPhase2("lora/sd15/combo/42/image");
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, "lora/sd15/combo/42");
    }

    [Test]
    public async Task PipelineOptionsLoadTheLorasWithTheirScales()
    {
        var options = new PipelineOptions
        {
            Loras = [new LoraSource(Fixtures.PathOf(Kohya), 0.8) { Name = "a" }, new LoraSource(Fixtures.PathOf(Kohya2), 0.6)],
        };
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15"), options);
        Assert.That(pipeline.Loras.Loaded.Select(a => (a.Name, a.Scale)), Is.EqualTo(new[] { ("a", 0.8), ("tiny-sd15-lora2-kohya", 0.6) }));
        using var result = await pipeline.GenerateAsync(Prompt, Options());
        using var expected = Fixtures.ExpectedPhase2("lora/sd15/combo/42/image");
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, "lora/sd15/combo/42 through PipelineOptions.Loras");
    }

    [Test]
    public async Task FusedLoraMatchesTheReferenceAndTheUnfusedRun()
    {
        using var pipeline = LoadTinySd15();
        pipeline.Loras.Load(Fixtures.PathOf(Kohya), "kohya", 0.5);
        using var unfused = await pipeline.GenerateAsync(Prompt, Options());
        pipeline.Loras.Fuse("kohya");
        Assert.That(pipeline.Loras.Loaded.Single().IsFused, Is.True);
        using var fused = await pipeline.GenerateAsync(Prompt, Options());
        using var expected = Fixtures.ExpectedPhase2("lora/sd15/kohya/0.5/42/image");
        AssertTensor.MaxAbsClose(fused.Pixels, expected, 2e-3, "fused at 0.5");
        // The reference measured 3.2e-6 between its fused and unfused images.
        AssertTensor.MaxAbsClose(fused.Pixels, unfused.Pixels, 1e-4, "fused against unfused");
    }

    [Test]
    public void PeftFolderLoadsItsWeightsFileAndEqualsTheKohyaFile()
    {
        using var pipeline = LoadTinySd15();
        var peft = pipeline.Loras.Load(Fixtures.PathOf("lora", "tiny-sd15-lora-peft"));
        Assert.That((peft.Name, peft.Format, peft.ModuleCount), Is.EqualTo(("tiny-sd15-lora-peft", LoraFormat.Peft, 307)));
        var kohya = pipeline.Loras.Load(Fixtures.PathOf(Kohya), "kohya");
        Assert.That((kohya.Format, kohya.ModuleCount), Is.EqualTo((LoraFormat.Kohya, 307)));
        using var sample = Fixtures.ExpectedPhase2("lora/sd15/unet/sample");
        using var context = Fixtures.ExpectedPhase2("lora/sd15/unet/encoder_hidden_states");
        using var timestep = tensor(new long[] { 500, 500 });
        using var scopeA = pipeline.Loras.Use([new LoraWeight("tiny-sd15-lora-peft")]);
        using var viaPeft = pipeline.UNet.Forward(sample, timestep, context);
        scopeA.Dispose();
        using var scopeB = pipeline.Loras.Use([new LoraWeight("kohya")]);
        using var viaKohya = pipeline.UNet.Forward(sample, timestep, context);
        AssertTensor.RelativeClose(viaPeft, viaKohya, 1e-6, "the PEFT file against the kohya file");
    }
}
