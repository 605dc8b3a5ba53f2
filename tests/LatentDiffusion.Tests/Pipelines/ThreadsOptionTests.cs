using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary><see cref="PipelineOptions.Threads"/> sets libtorch's CPU thread count when the pipeline loads; a bad count is refused before loading.</summary>
[NonParallelizable]
public class ThreadsOptionTests
{
    [Test]
    public async Task LoadingWithAThreadCountSetsLibtorchsThreadCount()
    {
        int before = TorchThreads.Current;
        int wanted = before == 2 ? 3 : 2;
        try
        {
            await using var pipeline = await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, new PipelineOptions { Threads = wanted });
            Assert.That(TorchThreads.Current, Is.EqualTo(wanted));
        }
        finally
        {
            TorchThreads.Apply(before);
        }
        Assert.That(TorchThreads.Current, Is.EqualTo(before));
    }

    [Test]
    public async Task WithoutAThreadCountLoadingLeavesItAlone()
    {
        int before = TorchThreads.Current;
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, new PipelineOptions());
        Assert.That(TorchThreads.Current, Is.EqualTo(before));
    }

    [TestCase(0)]
    [TestCase(-3)]
    [TestCase(TorchThreads.Max + 1)]
    public void ABadThreadCountIsRefusedBeforeLoading(int threads)
    {
        int before = TorchThreads.Current;
        var e = Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => StableDiffusionPipeline.LoadAsync("/no/such/model", new PipelineOptions { Threads = threads }))!;
        Assert.That(e.Message, Does.Contain("Threads").And.Contain(threads.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.That(TorchThreads.Current, Is.EqualTo(before));
    }
}
