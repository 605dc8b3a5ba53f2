using LatentDiffusion.Integration;
using LatentDiffusion.Pipelines;
using LatentDiffusion.UNet;
using Microsoft.Extensions.AI;
using NUnit.Framework;
using TorchSharp;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>Disposing a pipeline while it generates: the run ends cleanly, the weights outlive every running step.</summary>
public class PipelineDisposalTests
{
    private static readonly GenerationOptions Quick = new() { Steps = 3, Seed = 1, Width = 64, Height = 64 };

    // Each test disposes its pipeline, so it loads its own instead of the shared one.
    private static StableDiffusionPipeline Load() => StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15")).GetAwaiter().GetResult();

    private static bool WeightsReleased(StableDiffusionPipeline pipeline) => ((UNet2DConditionModel)pipeline.UNet).parameters().All(p => p.IsInvalid);

    [Test]
    public async Task GeneratingAfterDisposalThrowsObjectDisposed()
    {
        var pipeline = Load();
        pipeline.Dispose();
        pipeline.Dispose();
        Assert.That(WeightsReleased(pipeline), Is.True);
        Assert.Throws<ObjectDisposedException>(() => pipeline.Generate("a cat", Quick));
        Assert.That(async () => await pipeline.GenerateAsync("a cat", Quick), Throws.InstanceOf<ObjectDisposedException>());
        await pipeline.DisposeAsync();
    }

    [Test]
    public async Task DisposingFromAnotherThreadInsideAUNetPassStopsTheRunAndWaitsForIt()
    {
        var pipeline = Load();
        var unet = (UNet2DConditionModel)pipeline.UNet;
        Task? disposal = null;
        bool weightsAliveWhileRunning = false;
        var blocksAfterDisposal = new List<string>();
        unet.BlockFinished = name =>
        {
            if (disposal is null && name == "down_blocks.1")
            {
                disposal = Task.Run(pipeline.Dispose);
                SpinWait.SpinUntil(() => pipeline.IsDisposeRequested);
                // Disposal has begun on another thread and must now wait for this run.
                weightsAliveWhileRunning = !unet.parameters().Any(p => p.IsInvalid);
            }
            else if (disposal is not null)
            {
                blocksAfterDisposal.Add(name);
            }
        };
        var error = Assert.Throws<ObjectDisposedException>(() => pipeline.Generate("a cat", Quick));
        Assert.That(error!.Message, Does.Contain("disposed while this generation ran"));
        Assert.That(disposal, Is.Not.Null);
        await disposal!;
        Assert.That(weightsAliveWhileRunning, Is.True, "the weights were freed under a running step");
        Assert.That(blocksAfterDisposal, Is.Empty, "the run went on after disposal began");
        Assert.That(WeightsReleased(pipeline), Is.True, "disposal returned without releasing the weights");
    }

    [Test]
    public void DisposingFromTheStepCallbackDoesNotDeadlock()
    {
        var pipeline = Load();
        bool releasedInsideCallback = true;
        var options = Quick with
        {
            OnStep = a =>
            {
                if (a.Step == 1)
                {
                    pipeline.Dispose();
                    releasedInsideCallback = WeightsReleased(pipeline);
                }
                return null;
            },
        };
        Assert.Throws<ObjectDisposedException>(() => pipeline.Generate("a cat", options));
        Assert.That(releasedInsideCallback, Is.False, "the weights were freed while the run that disposed was still running");
        Assert.That(WeightsReleased(pipeline), Is.True, "the run released the weights when it ended");
    }

    [Test]
    public async Task DisposeAsyncWaitsForARunningGenerateAsync()
    {
        var pipeline = Load();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var resume = new ManualResetEventSlim();
        var options = Quick with
        {
            OnStep = a =>
            {
                if (a.Step == 1) { started.SetResult(); resume.Wait(); }
                return null;
            },
        };
        var generation = pipeline.GenerateAsync("a cat", options);
        await started.Task;
        var disposal = pipeline.DisposeAsync().AsTask();
        SpinWait.SpinUntil(() => pipeline.IsDisposeRequested);
        Assert.That(disposal.IsCompleted, Is.False, "disposal finished while a generation was running");
        Assert.That(WeightsReleased(pipeline), Is.False);
        resume.Set();
        Assert.That(async () => await generation, Throws.InstanceOf<ObjectDisposedException>());
        await disposal;
        Assert.That(WeightsReleased(pipeline), Is.True);
    }

    [Test]
    public async Task ADisposedImageGeneratorThrowsObjectDisposed()
    {
#pragma warning disable MEAI001 // IImageGenerator is marked experimental by Microsoft.Extensions.AI.
        var pipeline = Load();
        IImageGenerator generator = new LatentDiffusionImageGenerator(pipeline, Quick, ownsPipeline: true);
        generator.Dispose();
        Assert.That(WeightsReleased(pipeline), Is.True, "the owned pipeline is disposed");
        Assert.That(async () => await generator.GenerateAsync(new ImageGenerationRequest("a cat")), Throws.InstanceOf<ObjectDisposedException>());

        var shared = TinyModels.Get("tiny-sd15");
        IImageGenerator borrowing = new LatentDiffusionImageGenerator(shared, Quick);
        borrowing.Dispose();
        Assert.That(async () => await borrowing.GenerateAsync(new ImageGenerationRequest("a cat")), Throws.InstanceOf<ObjectDisposedException>());
        Assert.That(WeightsReleased(shared), Is.False, "a borrowed pipeline stays usable");
        await Task.CompletedTask;
#pragma warning restore MEAI001
    }
}
