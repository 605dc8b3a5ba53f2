using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Loading;

/// <summary>
/// Loading a pipeline compares each component's weights with its config once: the up-front check of every component
/// (before any is built) is the only one; building them does not check again (a skeleton of the SD 1.5 UNet takes
/// about half a second to build and compare).
/// </summary>
public class LoadOnceTests
{
    [Test]
    public void AFolderIsCheckedOncePerComponent()
    {
        int checks = WeightLoader.ChecksMade, built = WeightLoader.ModulesBuilt;
        using (ModelLoader.Load(GeneratedModel.Folder, new PipelineOptions(), CancellationToken.None)) { }
        Assert.That(WeightLoader.ModulesBuilt - built, Is.EqualTo(3), "text encoder, UNet, VAE");
        Assert.That(WeightLoader.ChecksMade - checks, Is.EqualTo(3), "one name and shape check per component");
    }

    [Test]
    public void ASingleFileIsCheckedOncePerComponent()
    {
        // The fixtures first: without them the test is skipped before anything is created.
        string tokenizer = Fixtures.PathOf("tiny-sd15", "tokenizer");
        string config = Path.Combine(Path.GetTempPath(), "ld-loadonce-" + Guid.NewGuid().ToString("N"));
        try
        {
            HostileFile.CopyFolder(tokenizer, Path.Combine(config, "tokenizer"));
            int checks = WeightLoader.ChecksMade, built = WeightLoader.ModulesBuilt;
            using (ModelLoader.Load(Fixtures.PathOf("tiny-sd15.safetensors"), new PipelineOptions { ConfigDirectory = config }, CancellationToken.None)) { }
            Assert.That(WeightLoader.ModulesBuilt - built, Is.EqualTo(3), "text encoder, UNet, VAE");
            Assert.That(WeightLoader.ChecksMade - checks, Is.EqualTo(3), "one name and shape check per component");
        }
        finally
        {
            if (Directory.Exists(config)) Directory.Delete(config, recursive: true);
        }
    }

    [Test]
    public void BuildCheckedStillChecksOnce()
    {
        // The public single-component path checks on its own (once), since nothing has checked before it.
        int checks = WeightLoader.ChecksMade;
        using (var unet = LatentDiffusion.UNet.UNet2DConditionModel.Load(Path.Combine(GeneratedModel.Folder, "unet"), TorchSharp.torch.CPU, TorchSharp.torch.ScalarType.Float32)) { }
        Assert.That(WeightLoader.ChecksMade - checks, Is.EqualTo(1));
    }
}
