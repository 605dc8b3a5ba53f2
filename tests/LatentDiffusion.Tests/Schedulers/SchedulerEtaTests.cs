using LatentDiffusion.Pipelines;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// <see cref="GenerationOptions.Eta"/> as the reference's prepare_extra_step_kwargs treats it: passed to the schedulers
/// whose step takes <c>eta</c> (DDIM only, in the reference's sources) and ignored by every other one.
/// </summary>
[TestFixture]
public sealed class SchedulerEtaTests
{
    private static async Task<Tensor> Generate(string? scheduler, double eta)
    {
        var pipeline = TinyModels.Get("tiny-sd15");
        using var result = await pipeline.GenerateAsync("a cat", new GenerationOptions
        {
            Steps = 3, Seed = 5, Width = 64, Height = 64, Scheduler = scheduler, Eta = eta, ReturnLatents = true,
        });
        return result.Latents!.clone();
    }

    public static IEnumerable<string> NonDdimNames() => SchedulerRegistry.Names.Where(n => n != "ddim");

    /// <summary>Every scheduler but DDIM runs with η set and gives exactly what it gives without it.</summary>
    [TestCaseSource(nameof(NonDdimNames))]
    public async Task EtaIsIgnoredBySchedulersWhoseStepDoesNotTakeIt(string name)
    {
        using var with = await Generate(name, 1.0);
        using var without = await Generate(name, 0.0);
        AssertTensor.MaxAbsClose(with, without, 0, $"{name} with eta = 1");
    }

    /// <summary>The model's own scheduler (PNDM for SD 1.5) ignores η too.</summary>
    [Test]
    public async Task EtaIsIgnoredByTheModelsOwnNonDdimScheduler()
    {
        Assert.That(TinyModels.Get("tiny-sd15").Scheduler.ClassName, Is.EqualTo("PNDMScheduler"));
        using var with = await Generate(null, 0.5);
        using var without = await Generate(null, 0.0);
        AssertTensor.MaxAbsClose(with, without, 0, "PNDM with eta = 0.5");
    }

    /// <summary>DDIM still takes it: η = 1 adds fresh noise every step.</summary>
    [Test]
    public async Task DdimStillTakesEta()
    {
        using var with = await Generate("ddim", 1.0);
        using var without = await Generate("ddim", 0.0);
        Assert.That((with - without).abs().max().item<float>(), Is.GreaterThan(1e-3f));
    }
}
