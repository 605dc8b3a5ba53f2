using LatentDiffusion.Pipelines;
using Microsoft.Extensions.Logging;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

public class PipelineBehaviourTests
{
    // Some small model, not the reference's: the generated one runs without the fixtures.
    private static StableDiffusionPipeline Sd15 => GeneratedModel.Pipeline;

    private static readonly GenerationOptions Quick = new() { Steps = 2, Seed = 1, Width = 64, Height = 64 };

    private sealed class Recorder<T> : IProgress<T>
    {
        public List<T> Items { get; } = new();
        public void Report(T value) => Items.Add(value);
    }

    [Test]
    public void ReportsEveryStepInOrder()
    {
        var progress = new Recorder<DiffusionProgress>();
        // The model's PNDM (PLMS) scheduler runs steps + 1 model evaluations, as the reference's progress bar counts them.
        using var _ = Sd15.Generate("a cat", Quick with { Steps = 3 }, progress);
        Assert.That(progress.Items.Select(p => p.Step), Is.EqualTo(new[] { 1, 2, 3, 4 }));
        Assert.That(progress.Items.Select(p => p.TotalSteps), Is.All.EqualTo(4));
        Assert.That(progress.Items.Select(p => p.Elapsed), Is.Ordered);
    }

    [Test]
    public void CancellationBetweenStepsThrowsAndLeaksNothing()
    {
        using var cts = new CancellationTokenSource();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var options = Quick with { Steps = 5, OnStep = a => { if (a.Step == 2) cts.Cancel(); return null; } };
        Assert.Throws<OperationCanceledException>(() => Sd15.Generate("a cat", options, null, cts.Token));
        Assert.That(DisposeScopeManager.Statistics.ThreadTotalLiveCount, Is.EqualTo(before), "tensors left alive after cancellation");
    }

    [Test]
    public async Task CancelledTokenCancelsTheTask()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.That(async () => await Sd15.GenerateAsync("a cat", Quick, null, cts.Token), Throws.InstanceOf<OperationCanceledException>());
        await Task.CompletedTask;
    }

    [Test]
    public void StepCallbackCanReplaceTheLatents()
    {
        // Zero latents at the last step: the image must be the VAE's decoding of zeros.
        var options = Quick with { OnStep = a => a.Step == a.TotalSteps ? zeros_like(a.Latents) : null };
        using var result = Sd15.Generate("a cat", options);
        using var z = zeros(1, 4, 8, 8);
        using var decoded = Sd15.Vae.Decode(z);
        using var expected = ImageConversion.ToPixels(decoded);
        AssertTensor.MaxAbsClose(result.Pixels, expected, 1e-6, "decode of zero latents");
    }

    [Test]
    public void CallerLatentsEqualTheSeededDraw()
    {
        using var seeded = Sd15.Generate("a cat", Quick with { Seed = 9 });
        using var g = new Generator(9);
        using var noise = randn(new long[] { 1, 4, 8, 8 }, generator: g);
        using var given = Sd15.Generate("a cat", Quick with { Seed = 123, Latents = noise });
        AssertTensor.MaxAbsClose(given.Pixels, seeded.Pixels, 0, "latents = the seed's randn");
    }

    [Test]
    public void PromptEmbeddingsEqualThePrompt()
    {
        using var fromText = Sd15.Generate("a red circle", Quick);
        var ids = Sd15.Tokenizer.EncodePadded("a red circle", 77).Ids.Select(i => (long)i).ToArray();
        using var idTensor = tensor(ids, new long[] { 1, 77 });
        using var embeds = Sd15.TextEncoder.Encode(idTensor);
        using var fromEmbeds = Sd15.Generate("", Quick with { PromptEmbeddings = embeds });
        AssertTensor.MaxAbsClose(fromEmbeds.Pixels, fromText.Pixels, 0, "prompt embeddings");
    }

    [Test]
    public void SeveralImagesPerPromptAreDistinctAndReturnLatents()
    {
        using var result = Sd15.Generate("a cat", Quick with { ImagesPerPrompt = 2, ReturnLatents = true });
        Assert.That(result.Images, Has.Count.EqualTo(2));
        Assert.That(result.Latents!.shape, Is.EqualTo(new long[] { 2, 4, 8, 8 }));
        Assert.That((result.Pixels[0] - result.Pixels[1]).abs().max().item<float>(), Is.GreaterThan(1e-3f));
        Assert.That(result.Images[0].Width, Is.EqualTo(64));
    }

    [Test]
    public void SameSeedSameImage()
    {
        using var a = Sd15.Generate("a cat", Quick with { Seed = 5 });
        using var b = Sd15.Generate("a cat", Quick with { Seed = 5 });
        AssertTensor.MaxAbsClose(a.Pixels, b.Pixels, 0, "same seed");
        Assert.That(a.Seed, Is.EqualTo(5));
    }

    [Test]
    public void MemoryStaysFlatOverOneHundredGenerations()
    {
        // Count live native tensors on this thread: every generation must release everything but its result.
        using (Sd15.Generate("warm up", Quick)) { }
        long baseline = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 100; i++)
        {
            using var r = Sd15.Generate("a small red circle", Quick with { Seed = i, Steps = 1, GuidanceScale = 2 });
        }
        Assert.That(DisposeScopeManager.Statistics.ThreadTotalLiveCount, Is.EqualTo(baseline), "live tensors grew over 100 generations");
    }

    [Test]
    public async Task VaeSlicingAndTilingOptionsKeepThePicture()
    {
        using var plain = Sd15.Generate("a cat", Quick with { ImagesPerPrompt = 2 });
        await using var sliced = await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, new PipelineOptions { VaeSlicing = true, VaeTiling = true });
        Assert.That(((LatentDiffusion.Vae.AutoencoderKL)sliced.Vae).UseSlicing, Is.True);
        Assert.That(((LatentDiffusion.Vae.AutoencoderKL)sliced.Vae).UseTiling, Is.True);
        using var result = sliced.Generate("a cat", Quick with { ImagesPerPrompt = 2 });
        // Slicing only changes the convolutions' batch size; 64x64 is below the tile size, so tiling does not start.
        AssertTensor.MaxAbsClose(result.Pixels, plain.Pixels, 1e-4, "sliced decode");
    }

    [Test]
    public async Task LoadsFromARelativePath()
    {
        string relative = Path.GetRelativePath(Environment.CurrentDirectory, GeneratedModel.Folder);
        Assume.That(Path.IsPathRooted(relative), Is.False);
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(relative);
        using var fromRelative = pipeline.Generate("a cat", Quick);
        using var fromShared = Sd15.Generate("a cat", Quick);
        AssertTensor.MaxAbsClose(fromRelative.Pixels, fromShared.Pixels, 0, "same model through a relative path");
    }

    [Test]
    public async Task WarnsWhenThePromptIsTruncated()
    {
        var log = new ListLogger();
        using var factory = LoggerFactory.Create(b => b.AddProvider(log));
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, new PipelineOptions { LoggerFactory = factory });
        // The dropped part starts with "zebra"; the warning quotes its beginning (at most 80 characters).
        string kept = string.Join(" ", Enumerable.Repeat("a", 75));
        Assert.That(pipeline.Tokenizer.Encode(kept), Has.Length.EqualTo(77), "each 'a' must be one token for this prompt to cut before 'zebra'");
        string prompt = kept + " zebra" + string.Concat(Enumerable.Repeat(" cat", 80));
        using var _ = pipeline.Generate(prompt, Quick with { Steps = 1, TruncateLongPrompts = true });
        Assert.That(log.Messages, Has.Some.Contains("\"zebra").And.Contains("77"));
    }

    [Test]
    public async Task ALongPromptIsNotTruncatedByDefault()
    {
        var log = new ListLogger();
        using var factory = LoggerFactory.Create(b => b.AddProvider(log));
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, new PipelineOptions { LoggerFactory = factory });
        string prompt = string.Join(" ", Enumerable.Repeat("a", 75)) + " zebra" + string.Concat(Enumerable.Repeat(" cat", 80));
        using var chunked = pipeline.Generate(prompt, Quick with { Steps = 1 });
        using var truncated = pipeline.Generate(prompt, Quick with { Steps = 1, TruncateLongPrompts = true });
        Assert.That(log.Messages.Count(m => m.Contains("tokens were dropped")), Is.EqualTo(1), "only the truncating generation warns");
        Assert.That((chunked.Pixels - truncated.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-4f), "the words after the 75th token reach the image");
    }

    [TestCase(0, 64, 64, 0.5, TestName = "steps 0")]
    [TestCase(2, 100, 64, 0.5, TestName = "width not a multiple of 8")]
    [TestCase(2, 64, 0, 0.5, TestName = "height 0")]
    [TestCase(2, 64, 100000, 0.5, TestName = "height absurdly large")]
    public void RejectsBadOptions(int steps, int width, int height, double strength)
    {
        var options = new GenerationOptions { Steps = steps, Width = width, Height = height, Strength = strength };
        Assert.That(() => Sd15.Generate("a cat", options), Throws.InstanceOf<ArgumentException>());
    }

    [TestCase(-0.1)]
    [TestCase(1.5)]
    [TestCase(double.NaN)]
    public void RejectsStrengthOutsideZeroToOne(double strength)
    {
        using var image = new Image<Rgb24>(64, 64);
        Assert.That(() => Sd15.Generate("a cat", Quick with { InitImage = image, Strength = strength }), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void RejectsANullPrompt()
        => Assert.That(() => Sd15.Generate(null!, Quick), Throws.InstanceOf<ArgumentNullException>());

    // As the reference, image-to-image runs int(steps x strength) steps, and none is an error, not the init image re-encoded.
    [TestCase(0.0, 2)]
    [TestCase(0.3, 3)]
    [TestCase(0.09, 10)]
    public void ImageToImageThatLeavesNoStepIsRefusedNamingStrengthAndSteps(double strength, int steps)
    {
        using var image = new Image<Rgb24>(64, 64, new Rgb24(200, 30, 30));
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => Sd15.Generate("a cat", Quick with { InitImage = image, Strength = strength, Steps = steps }));
        Assert.That(error!.ParamName, Is.EqualTo("Strength"));
        Assert.That(error.Message, Does.Contain("leaves no denoising step").And.Contain("raise Strength to at least").And.Contain($"Steps {steps}"));
        Assert.That(async () => await Sd15.GenerateAsync("a cat", Quick with { InitImage = image, Strength = strength, Steps = steps }),
            Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void ImageToImageWithOneStepLeftRunsIt()
    {
        using var image = new Image<Rgb24>(64, 64, new Rgb24(200, 30, 30));
        var progress = new Recorder<DiffusionProgress>();
        using var result = Sd15.Generate("a cat", Quick with { InitImage = image, Strength = 0.1, Steps = 10, Scheduler = "ddim" }, progress);
        Assert.That(progress.Items.Select(p => p.Step), Is.EqualTo(new[] { 1 }));
        Assert.That(result.Images[0].Width, Is.EqualTo(64));
    }
}
