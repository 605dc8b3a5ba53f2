using LatentDiffusion.Pipelines;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// <see cref="PipelineOptions.FreeWeightsAfterUse"/>: the one generation frees the text encoders once the prompt is
/// encoded and the UNet before the VAE decodes, and gives the same image as a pipeline that keeps them.
/// </summary>
public class FreeWeightsAfterUseTests
{
    // Non-square, two images, guided: the paths a one-shot CLI run takes.
    private static readonly GenerationOptions Options = new() { Steps = 3, Seed = 5, Width = 64, Height = 48, ImagesPerPrompt = 2, GuidanceScale = 7.5 };

    [Test]
    public async Task EachPartIsFreedWhenItsPhaseEndsAndTheImageIsUnchanged()
    {
        using var kept = GeneratedModel.Pipeline.Generate("a red circle", Options);

        await using var pipeline = await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, new PipelineOptions { FreeWeightsAfterUse = true });
        var text = Weights(pipeline.TextEncoder);
        var unet = Weights(pipeline.UNet);
        var vae = Weights(pipeline.Vae);
        var seenAtSteps = new List<(bool TextFreed, bool UNetAlive)>();
        using var freed = pipeline.Generate("a red circle", Options with
        {
            OnStep = _ =>
            {
                seenAtSteps.Add((text.All(p => p.IsInvalid), unet.All(p => !p.IsInvalid)));
                return null;
            },
        });

        Assert.That(seenAtSteps, Is.Not.Empty.And.All.EqualTo((true, true)), "while denoising: the text encoder is freed, the UNet is not");
        Assert.That(unet.All(p => p.IsInvalid), "the UNet is freed once the latents are denoised");
        Assert.That(vae.All(p => !p.IsInvalid), "the VAE stays until the pipeline is disposed");
        Assert.That(freed.Pixels.equal(kept.Pixels).all().item<bool>(), "the same image as with every weight kept");

        await pipeline.DisposeAsync();
        Assert.That(vae.All(p => p.IsInvalid));
    }

    [Test]
    public async Task ASecondGenerationIsRefusedByName()
    {
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, new PipelineOptions { FreeWeightsAfterUse = true });
        using (pipeline.Generate("a cat", Options with { ImagesPerPrompt = 1 })) { }

        var e = Assert.Throws<InvalidOperationException>(() => pipeline.Generate("a cat", Options))!;
        Assert.That(e.Message, Does.Contain("FreeWeightsAfterUse").And.Contain("Load the pipeline again"));
        Assert.ThrowsAsync<InvalidOperationException>(() => pipeline.GenerateAsync("a cat", Options));
        // The freed weights cannot be changed either (they would be used after being freed).
        Assert.That(Assert.Throws<InvalidOperationException>(() => _ = pipeline.Loras)!.Message, Does.Contain("FreeWeightsAfterUse"));
        Assert.That(Assert.Throws<InvalidOperationException>(() => pipeline.LoadTextualInversion("any.safetensors", "<x>"))!.Message, Does.Contain("FreeWeightsAfterUse"));
    }

    [Test]
    public void APipelineOverComponentsItDoesNotOwnRefusesTheOption()
    {
        var shared = GeneratedModel.Pipeline;
        var e = Assert.Throws<ArgumentException>(() => new StableDiffusionPipeline(shared.Tokenizer, shared.TextEncoder, shared.UNet, shared.Vae, shared.Scheduler,
            new PipelineOptions { FreeWeightsAfterUse = true }, leaveComponentsOpen: true))!;
        Assert.That(e.Message, Does.Contain("FreeWeightsAfterUse").And.Contain("leaveComponentsOpen"));
        Assert.That(Weights(shared.TextEncoder).Concat(Weights(shared.UNet)).All(p => !p.IsInvalid), "the caller's components are untouched");
    }

    [Test]
    public async Task SdxlFreesBothTextEncodersAndGivesTheSameImage()
    {
        string folder = Fixtures.PathOf("tiny-sdxl");
        var options = new GenerationOptions { Steps = 2, Seed = 9, Width = 64, Height = 48, GuidanceScale = 5 };
        GenerationResult kept;
        await using (var normal = await StableDiffusionPipeline.LoadAsync(folder)) kept = normal.Generate("a photo of a cat", options);
        using var _ = kept;

        await using var pipeline = await StableDiffusionPipeline.LoadAsync(folder, new PipelineOptions { FreeWeightsAfterUse = true });
        var text = Weights(pipeline.TextEncoder).Concat(Weights(pipeline.TextEncoder2!)).ToList();
        var unet = Weights(pipeline.UNet);
        using var freed = pipeline.Generate("a photo of a cat", options);

        Assert.That(text.All(p => p.IsInvalid) && unet.All(p => p.IsInvalid));
        Assert.That(freed.Pixels.equal(kept.Pixels).all().item<bool>());
    }

    private static List<Tensor> Weights(object component) => ((nn.Module)component).parameters().Cast<Tensor>().ToList();
}
