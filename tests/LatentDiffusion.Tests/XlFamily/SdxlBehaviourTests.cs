using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>SDXL behaviour beyond the reference cases: sizes, batches, the expert hand-off, options that do not fit.</summary>
public class SdxlBehaviourTests
{
    private static StableDiffusionPipeline Tiny => TinyModels.Get("tiny-sdxl");

    private static GenerationOptions Quick(long seed) => new() { Steps = 4, GuidanceScale = 5, Width = 64, Height = 64, Seed = seed };

    [Test]
    public async Task BaseThenRefinerHandOffWithTheSameModelIsTheFullRun()
    {
        // With one model as both experts, denoising_end 0.5 then denoising_start 0.5 from the returned latents must be the
        // uninterrupted run: the first half keeps the timesteps at or above 500, the second starts where they stop.
        var options = new GenerationOptions { Steps = 8, GuidanceScale = 5, Width = 64, Height = 48, Seed = 9, NegativePrompt = "blurry" };
        using var full = await Tiny.GenerateAsync("a red car", options);
        var steps = new List<int>();
        using var first = await Tiny.GenerateAsync("a red car", options with { DenoisingEnd = 0.5, ReturnLatents = true, OnStep = a => { steps.Add(a.TotalSteps); return null; } });
        Assert.That(steps.Distinct(), Is.EqualTo(new[] { 4 }), "the first expert runs the 4 timesteps >= 500 of 876, 751, ..., 1");
        steps.Clear();
        using var second = await Tiny.GenerateAsync("a red car", options with { DenoisingStart = 0.5, Latents = first.Latents, OnStep = a => { steps.Add(a.TotalSteps); return null; } });
        Assert.That(steps.Distinct(), Is.EqualTo(new[] { 4 }), "the second expert runs the other 4");
        AssertTensor.MaxAbsClose(second.Pixels, full.Pixels, 1e-5, "hand-off versus the full run");

        // The second expert takes the image size from the latents handed over, as the reference does, not its default.
        using var third = await Tiny.GenerateAsync("a red car", options with { Width = null, Height = null, DenoisingStart = 0.5, Latents = first.Latents });
        AssertTensor.MaxAbsClose(third.Pixels, full.Pixels, 1e-5, "hand-off without the size repeated");
    }

    [Test]
    public async Task DenoisingStartFromAnImageEncodesItAndAddsNoNoise()
    {
        using var made = await Tiny.GenerateAsync("a cat", Quick(1));
        using var image = PipelineParityTests.ToImage(made.Pixels[0]);
        var options = new GenerationOptions { Steps = 8, GuidanceScale = 5, Seed = 6, InitImage = image, DenoisingStart = 0.5, Strength = 0.01 };
        var steps = new List<int>();
        using var fromImage = await Tiny.GenerateAsync("a dog", options with { OnStep = a => { steps.Add(a.TotalSteps); return null; } });
        Assert.That(steps.Distinct(), Is.EqualTo(new[] { 4 }), "the 4 timesteps below 500; Strength is ignored");
        // The same start as latents: the image's posterior sampled with the seed's generator, scaled, and nothing added.
        Tensor start;
        using (var _ = no_grad())
        using (var pixels = LatentDiffusion.Pipelines.ImageConversion.ToTensor(image, 64, 64))
        using (var posterior = Tiny.Vae.Encode(pixels))
        using (var generator = new Generator(6))
            start = posterior.Sample(generator) * Tiny.Vae.ScalingFactor;
        using var fromLatents = await Tiny.GenerateAsync("a dog", options with { InitImage = null, Latents = start });
        AssertTensor.MaxAbsClose(fromImage.Pixels, fromLatents.Pixels, 1e-5, "image start versus the same latents");
        start.Dispose();
    }

    [Test]
    public async Task ANonSquareImageIsConditionedOnItsOwnHeightAndWidth()
    {
        var options = new GenerationOptions { Steps = 3, GuidanceScale = 5, Width = 96, Height = 64, Seed = 3 };
        using var plain = await Tiny.GenerateAsync("a lighthouse", options);
        Assert.That(plain.Pixels.shape, Is.EqualTo(new long[] { 1, 64, 96, 3 }));
        // The defaults are (height, width): giving them explicitly changes nothing, swapping them changes the image.
        using var explicitSizes = await Tiny.GenerateAsync("a lighthouse", options with { OriginalSize = (64, 96), TargetSize = (64, 96) });
        using var swapped = await Tiny.GenerateAsync("a lighthouse", options with { OriginalSize = (96, 64), TargetSize = (96, 64) });
        AssertTensor.MaxAbsClose(explicitSizes.Pixels, plain.Pixels, 0, "explicit default sizes");
        Assert.That((swapped.Pixels - plain.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-3f), "swapped sizes must condition differently");
    }

    [Test]
    public async Task EachImageOfABatchIsTheSingleImageOfItsSeed()
    {
        using var batch = await Tiny.GenerateAsync("a cat", Quick(20) with { ImagesPerPrompt = 2, NegativePrompt = "ugly", Prompt2 = "oil painting" });
        Assert.That(batch.Images, Has.Count.EqualTo(2));
        for (int i = 0; i < 2; i++)
        {
            using var single = await Tiny.GenerateAsync("a cat", Quick(20 + i) with { NegativePrompt = "ugly", Prompt2 = "oil painting" });
            AssertTensor.MaxAbsClose(batch.Pixels[i..(i + 1)], single.Pixels, 1e-5, $"image {i} of the batch");
        }
    }

    [Test]
    public async Task BatchesWorkWithZeroedNegativesAndImageToImage()
    {
        using var init = await Tiny.GenerateAsync("a cat", Quick(1));
        using var image = PipelineParityTests.ToImage(init.Pixels[0]);
        using var batch = await Tiny.GenerateAsync("a dog", new GenerationOptions { Steps = 4, Strength = 0.5, GuidanceScale = 5, InitImage = image, ImagesPerPrompt = 3, Seed = 2 });
        Assert.That(batch.Pixels.shape, Is.EqualTo(new long[] { 3, 64, 64, 3 }));
        using var single = await Tiny.GenerateAsync("a dog", new GenerationOptions { Steps = 4, Strength = 0.5, GuidanceScale = 5, InitImage = image, Seed = 4 });
        AssertTensor.MaxAbsClose(batch.Pixels[2..3], single.Pixels, 1e-5, "image 2 of the img2img batch");
    }

    [Test]
    public void OptionsThatDoNotFitAreRefusedBeforeAnyWork()
    {
        // The models first: without the fixtures the test is skipped here, not inside an Assert.Throws.
        _ = Tiny;
        var sd15 = TinyModels.Get("tiny-sd15");
        Assert.Throws<ArgumentException>(() => Tiny.Generate("x", Quick(1) with { DenoisingStart = 0.5 }), "a denoising start needs a start");
        Assert.Throws<ArgumentOutOfRangeException>(() => Tiny.Generate("x", Quick(1) with { DenoisingEnd = 1.0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tiny.Generate("x", Quick(1) with { DenoisingEnd = 0.3, DenoisingStart = 0.6, Latents = zeros(1, 4, 8, 8) }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tiny.Generate("x", Quick(1) with { OriginalSize = (0, 64) }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tiny.Generate("x", Quick(1) with { CropsCoordsTopLeft = (-1, 0) }));
        var e = Assert.Throws<ArgumentException>(() => Tiny.Generate("x", Quick(1) with { PromptEmbeddings = zeros(1, 77, 48) }));
        Assert.That(e!.Message, Does.Contain("PooledPromptEmbeddings"));
        e = Assert.Throws<ArgumentException>(() => Tiny.Generate("x", Quick(1) with { PromptEmbeddings = zeros(1, 77, 32), PooledPromptEmbeddings = zeros(1, 24) }));
        Assert.That(e!.Message, Does.Contain("48"));
        e = Assert.Throws<ArgumentException>(() => sd15.Generate("x", new GenerationOptions { Steps = 1, Prompt2 = "y" }));
        Assert.That(e!.Message, Does.Contain("SDXL"));
    }

    [Test]
    public async Task ReadyEmbeddingsReproduceTheEncodedPrompt()
    {
        var conditioner = SdxlConditioning.Conditioner(Tiny);
        using var scope = NewDisposeScope();
        var (context, added) = conditioner.Encode("a boat", new GenerationOptions { NegativePrompt = "fog" }, 1, true, 64, 64, false, ScalarType.Float32, CPU);
        using var encoded = await Tiny.GenerateAsync("a boat", Quick(5) with { NegativePrompt = "fog" });
        using var given = await Tiny.GenerateAsync(null!, Quick(5) with
        {
            PromptEmbeddings = context[1..2], PooledPromptEmbeddings = added.TextEmbeds[1..2],
            NegativePromptEmbeddings = context[0..1], NegativePooledPromptEmbeddings = added.TextEmbeds[0..1],
        });
        AssertTensor.MaxAbsClose(given.Pixels, encoded.Pixels, 0, "ready embeddings");
    }

    [Test]
    public void ClipSkipCountsFromThePenultimateLayerAndLeavesTheNegativeAlone()
    {
        var xl = SdxlConditioning.Conditioner(Tiny, new StableDiffusionXLOptions { ForceZerosForEmptyPrompt = false });
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (context, added) = xl.Encode("a boat", new GenerationOptions { ClipSkip = 1 }, 1, true, 64, 64, false, ScalarType.Float32, CPU);
        Tensor Hidden(string text, int fromEnd) => cat([
            Tiny.TextEncoder.EncodeHiddenStates(Ids(Tiny.Tokenizer, text), fromEnd, false).HiddenStates,
            Tiny.TextEncoder2!.EncodeHiddenStates(Ids(Tiny.Tokenizer2!, text), fromEnd, false).HiddenStates], -1);
        // clip_skip 1 reads hidden_states[-3] of both encoders; the pooled output stays the last layer's.
        AssertTensor.MaxAbsClose(context[1..2], Hidden("a boat", 3), 0, "positive with clip skip 1");
        AssertTensor.MaxAbsClose(added.TextEmbeds[1..2], Tiny.TextEncoder2!.EncodeHiddenStates(Ids(Tiny.Tokenizer2!, "a boat"), 2, true).Pooled!, 0, "pooled");
        // No negative prompt and force_zeros_for_empty_prompt false: the empty prompt, encoded without clip skip.
        AssertTensor.MaxAbsClose(context[0..1], Hidden("", 2), 0, "negative: the encoded empty prompt");
    }

    private static Tensor Ids(LatentDiffusion.Abstractions.ITokenizer tokenizer, string text)
        => tensor(tokenizer.EncodePadded(text, 77).Ids.Select(i => (long)i).ToArray(), new long[] { 1, 77 });

    [Test]
    public void TimeIdsFollowTheReferenceRules()
    {
        var xl = SdxlConditioning.Conditioner(Tiny, new StableDiffusionXLOptions());
        var o = new GenerationOptions { OriginalSize = (256, 192), CropsCoordsTopLeft = (16, 32), NegativeOriginalSize = (64, 64) };
        // Text to image: a negative original size without a negative target size leaves the negative half as the positive.
        var (p, n) = xl.TimeIds(o, 128, 96, imageToImage: false);
        Assert.That(p, Is.EqualTo(new double[] { 256, 192, 16, 32, 96, 128 }));
        Assert.That(n, Is.EqualTo(p));
        // Image to image: the missing negative target is the target, and the negative half keeps the positive crop.
        (_, n) = xl.TimeIds(o with { NegativeCropsCoordsTopLeft = (1, 1) }, 128, 96, imageToImage: true);
        Assert.That(n, Is.EqualTo(new double[] { 64, 64, 16, 32, 96, 128 }));
        // Both negative sizes in text to image: the negative crop is used.
        (_, n) = xl.TimeIds(o with { NegativeTargetSize = (32, 32), NegativeCropsCoordsTopLeft = (1, 2) }, 128, 96, imageToImage: false);
        Assert.That(n, Is.EqualTo(new double[] { 64, 64, 1, 2, 32, 32 }));
        // A refiner conditions on the aesthetic scores instead of the target size.
        var refiner = new SdxlConditioner(null, null, Tiny.Tokenizer2!, Tiny.TextEncoder2!, new StableDiffusionXLOptions { RequiresAestheticsScore = true }, NullLogger.Instance);
        (p, n) = refiner.TimeIds(o, 128, 96, imageToImage: true);
        Assert.That(p, Is.EqualTo(new double[] { 256, 192, 16, 32, 6.0 }));
        Assert.That(n, Is.EqualTo(new double[] { 64, 64, 0, 0, 2.5 }));
    }
}
