using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using Microsoft.Extensions.Logging;
using NUnit.Framework;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>
/// An SDXL load is the SD 1.x/2.x load: it reports each component's load time and the peak memory (the details
/// <c>ldm --verbose</c> promises in docs/cli.md), and compares each component's weights with its config once
/// (<see cref="Loading.LoadOnceTests"/>), from a folder and from a single file.
/// </summary>
public class SdxlLoadLogTests
{
    [TestCase("tiny-sdxl")]
    [TestCase("tiny-sdxl.safetensors")]
    public void EachComponentIsCheckedOnceAndItsLoadTimeLogged(string model)
    {
        var log = new ListLogger();
        using var factory = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Information));
        // Synchronously, on this thread: the check and build counters are per thread.
        int checks = WeightLoader.ChecksMade, built = WeightLoader.ModulesBuilt;
        using (ModelLoader.Load(Fixtures.PathOf(model), new PipelineOptions { ConfigDirectory = Fixtures.PathOf("tiny-sdxl"), LoggerFactory = factory }, CancellationToken.None)) { }
        Assert.That(WeightLoader.ModulesBuilt - built, Is.EqualTo(4), "two text encoders, UNet, VAE");
        Assert.That(WeightLoader.ChecksMade - checks, Is.EqualTo(4), "one name and shape check per component");
        var lines = log.Messages;
        foreach (var component in new[] { "text encoder", "text encoder 2", "UNet", "VAE" })
            Assert.That(lines, Has.Some.StartsWith($"Loaded the {component} in ").And.Contains("peak RSS so far"), $"{component}:\n{string.Join("\n", lines)}");
    }
}
