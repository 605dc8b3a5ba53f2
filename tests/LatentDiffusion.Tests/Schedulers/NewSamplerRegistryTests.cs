using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using static LatentDiffusion.Tests.Schedulers.ScheduleFormulas;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// Every short name added for issue 12 through the registry: swapped into the real SD 1.5, SD 2 and SDXL scheduler
/// configs (the reference's X.from_config(model config)), by class name through FromConfig, and entered for img2img at
/// several strengths on batch-2, non-square latents.
/// </summary>
[TestFixture]
public sealed class NewSamplerRegistryTests
{
    private static readonly string[] Added =
    [
        "dpm++2m-sde", "dpm++3m-sde", "dpm++3m-sde-karras", "dpm++2s-a", "tcd", "dpm++sde", "dpm++sde-karras", "edm-euler", "edm-dpm++2m", "edm-dpm++2m-sde",
    ];

    [Test]
    public void TheAddedNamesAreRegistered() => Assert.That(SchedulerRegistry.Names, Is.SupersetOf(Added));

    public static IEnumerable<TestCaseData> Names() => Added.Select(n => new TestCaseData(n).SetName($"Registry({n})"));

    [TestCaseSource(nameof(Names))]
    public void SwapsIntoRealModelConfigsAndDenoises(string name)
    {
        foreach (var (model, label) in new[] { (Sd15, "SD 1.5"), (Sd2, "SD 2"), (Sdxl, "SDXL") })
        {
            var scheduler = SchedulerRegistry.Create(name, model);
            Assert.That(scheduler.ClassName, Is.EqualTo(SchedulerRegistry.ClassNameOf(name)), label);
            // The same class by _class_name, with the name's defining settings as overrides, gives the same schedule.
            var node = System.Text.Json.Nodes.JsonNode.Parse(scheduler.Config.Root.GetRawText())!.AsObject();
            var fromConfig = SchedulerRegistry.FromConfig(SchedulerConfig.Parse(node.ToJsonString(), label));
            using var scope = NewDisposeScope();
            using var g = new torch.Generator(8, CPU);
            using var run = scheduler.Start(6, g);
            using var run2 = fromConfig.Start(6);
            Assert.That(run2.Timesteps, Is.EqualTo(run.Timesteps), $"{label}: FromConfig timesteps");
            Assert.That(run2.Sigmas, Is.EqualTo(run.Sigmas), $"{label}: FromConfig sigmas");
            var x = Denoise(run, torch.randn([2, 4, 6, 10], generator: g) * run.InitNoiseSigma);
            Assert.That(x.shape, Is.EqualTo(new long[] { 2, 4, 6, 10 }));
            Assert.That(x.isfinite().all().item<bool>(), Is.True, $"{label}: finite");
        }
    }

    [TestCaseSource(nameof(Names))]
    public void EntersImg2ImgAtSeveralStrengths(string name)
    {
        var scheduler = SchedulerRegistry.Create(name, Sd15);
        foreach (var strength in new[] { 0.3, 0.6, 1.0 })
        {
            using var scope = NewDisposeScope();
            using var g = new torch.Generator(2, CPU);
            using var run = scheduler.Start(8, g);
            var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 8, strength);
            int expectedBegin = (8 - (int)(8 * strength)) * run.Order;
            Assert.That(begin, Is.EqualTo(Math.Min(expectedBegin, run.Timesteps.Count)), $"strength {strength}");
            var original = torch.randn([2, 4, 6, 10], generator: new torch.Generator(1, CPU));
            var noise = torch.randn([2, 4, 6, 10], generator: new torch.Generator(3, CPU));
            var noisy = run.AddNoise(original, noise, timesteps[0]);
            // Each family noises to its own parametrisation of the begin step's noise level.
            Tensor expected = name == "tcd"
                ? ((DiffusionScheduler)scheduler).AddNoise(original, noise, torch.tensor(new[] { (long)timesteps[0], (long)timesteps[0] }))
                : name.StartsWith("dpm++2m") || name.StartsWith("dpm++3m")
                    ? original / Math.Sqrt(run.Sigmas![begin] * run.Sigmas![begin] + 1) + noise * (run.Sigmas![begin] / Math.Sqrt(run.Sigmas![begin] * run.Sigmas![begin] + 1))
                    : original + noise * (float)run.Sigmas![begin];
            AssertTensor.RelativeClose(noisy, expected, 1e-6, $"strength {strength}: noised");
            var x = Denoise(run, noisy, timesteps);
            Assert.That(x.isfinite().all().item<bool>(), Is.True, $"strength {strength}: finite");
        }
    }
}
