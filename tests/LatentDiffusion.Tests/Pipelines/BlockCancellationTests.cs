using LatentDiffusion.Pipelines;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>Cancellation reaches inside one UNet pass and one VAE decode: the next block does not run, nothing leaks.</summary>
public class BlockCancellationTests
{
    private static StableDiffusionPipeline Sd15 => TinyModels.Get("tiny-sd15");

    private static long LiveTensors => DisposeScopeManager.Statistics.ThreadTotalLiveCount;

    [TestCase("down_blocks.0", 1)]
    [TestCase("mid_block", 5)]
    [TestCase("up_blocks.2", 8)]
    public void TheUNetStopsBeforeTheNextBlock(string cancelAfter, int blocksRun)
    {
        var unet = (UNet2DConditionModel)Sd15.UNet;
        using var generator = new Generator(1);
        using var sample = randn(new long[] { 2, 4, 8, 8 }, generator: generator);
        using var timestep = tensor(500f);
        using var context = randn(new long[] { 2, 77, unet.CrossAttentionDim }, generator: generator);
        using var cts = new CancellationTokenSource();
        var finished = new List<string>();
        long before = LiveTensors;
        unet.BlockFinished = name =>
        {
            finished.Add(name);
            if (name == cancelAfter) cts.Cancel();
        };
        try
        {
            Assert.Throws<OperationCanceledException>(() => unet.Forward(sample, timestep, context, null, cts.Token));
        }
        finally
        {
            unet.BlockFinished = null;
        }
        Assert.That(finished, Has.Count.EqualTo(blocksRun), string.Join(", ", finished));
        Assert.That(finished[^1], Is.EqualTo(cancelAfter), "no block ran after the cancellation");
        Assert.That(LiveTensors, Is.EqualTo(before), "tensors left alive after cancellation");
    }

    [Test]
    public void AnUncancelledTokenChangesNothing()
    {
        var unet = (UNet2DConditionModel)Sd15.UNet;
        using var generator = new Generator(2);
        using var sample = randn(new long[] { 1, 4, 8, 8 }, generator: generator);
        using var timestep = tensor(300f);
        using var context = randn(new long[] { 1, 77, unet.CrossAttentionDim }, generator: generator);
        using var cts = new CancellationTokenSource();
        using var plain = unet.Forward(sample, timestep, context);
        using var withToken = unet.Forward(sample, timestep, context, null, cts.Token);
        AssertTensor.MaxAbsClose(withToken, plain, 0, "UNet output with a token");
    }

    [TestCase("mid_block", 1)]
    [TestCase("up_blocks.1", 3)]
    public void TheVaeDecoderStopsBeforeTheNextBlock(string cancelAfter, int blocksRun)
    {
        var vae = (AutoencoderKL)Sd15.Vae;
        using var generator = new Generator(3);
        using var latents = randn(new long[] { 1, 4, 8, 8 }, generator: generator);
        using var cts = new CancellationTokenSource();
        var finished = new List<string>();
        long before = LiveTensors;
        vae.DecoderModule.BlockFinished = name =>
        {
            finished.Add(name);
            if (name == cancelAfter) cts.Cancel();
        };
        try
        {
            Assert.Throws<OperationCanceledException>(() => vae.Decode(latents, cts.Token));
        }
        finally
        {
            vae.DecoderModule.BlockFinished = null;
        }
        Assert.That(finished, Has.Count.EqualTo(blocksRun), string.Join(", ", finished));
        Assert.That(LiveTensors, Is.EqualTo(before), "tensors left alive after cancellation");
    }

    [Test]
    public void TiledDecodingStopsAfterTheTileInFlight()
    {
        var vae = (AutoencoderKL)Sd15.Vae;
        var (tiling, latentTile, sampleTile) = (vae.UseTiling, vae.TileLatentMinSize, vae.TileSampleMinSize);
        using var generator = new Generator(4);
        // 16x16 latents in tiles of 8 with a stride of 6: nine tiles, each a full decoder pass of five blocks.
        using var latents = randn(new long[] { 1, 4, 16, 16 }, generator: generator);
        using var cts = new CancellationTokenSource();
        var finished = new List<string>();
        long before = LiveTensors;
        vae.UseTiling = true;
        vae.TileLatentMinSize = 8;
        vae.TileSampleMinSize = 8 * vae.ScaleFactor;
        vae.DecoderModule.BlockFinished = name =>
        {
            finished.Add(name);
            if (finished.Count(n => n == "up_blocks.3") == 2) cts.Cancel();
        };
        try
        {
            Assert.Throws<OperationCanceledException>(() => vae.Decode(latents, cts.Token));
        }
        finally
        {
            vae.DecoderModule.BlockFinished = null;
            (vae.UseTiling, vae.TileLatentMinSize, vae.TileSampleMinSize) = (tiling, latentTile, sampleTile);
        }
        Assert.That(finished, Has.Count.EqualTo(2 * 5), "two of the nine tiles decoded, then it stopped");
        Assert.That(LiveTensors, Is.EqualTo(before), "tensors left alive after cancellation");
    }

    [Test]
    public void AGenerationCancelledInsideAUNetPassStopsThere()
    {
        var unet = (UNet2DConditionModel)Sd15.UNet;
        using var cts = new CancellationTokenSource();
        var finished = new List<string>();
        var steps = new List<int>();
        long before = LiveTensors;
        unet.BlockFinished = name =>
        {
            finished.Add(name);
            if (name == "mid_block") cts.Cancel();
        };
        var options = new GenerationOptions { Steps = 3, Seed = 1, Width = 64, Height = 64, OnStep = a => { steps.Add(a.Step); return null; } };
        try
        {
            Assert.Throws<OperationCanceledException>(() => Sd15.Generate("a cat", options, null, cts.Token));
        }
        finally
        {
            unet.BlockFinished = null;
        }
        Assert.That(steps, Is.Empty, "the first step never finished");
        Assert.That(finished, Is.EqualTo(new[] { "down_blocks.0", "down_blocks.1", "down_blocks.2", "down_blocks.3", "mid_block" }));
        Assert.That(LiveTensors, Is.EqualTo(before), "tensors left alive after cancellation");
    }

    [Test]
    public async Task AnAsyncGenerationCancelledInsideAUNetPassEndsAsCancelledWithTheCallersToken()
    {
        var unet = (UNet2DConditionModel)Sd15.UNet;
        using var cts = new CancellationTokenSource();
        unet.BlockFinished = name => { if (name == "down_blocks.1") cts.Cancel(); };
        var options = new GenerationOptions { Steps = 3, Seed = 1, Width = 64, Height = 64 };
        var generation = Sd15.GenerateAsync("a cat", options, null, cts.Token);
        try
        {
            var error = Assert.CatchAsync<OperationCanceledException>(async () => await generation);
            Assert.That(error!.CancellationToken, Is.EqualTo(cts.Token));
            Assert.That(generation.IsCanceled, Is.True, "the task ends as cancelled, not faulted");
        }
        finally
        {
            unet.BlockFinished = null;
        }
        await Task.CompletedTask;
    }
}
