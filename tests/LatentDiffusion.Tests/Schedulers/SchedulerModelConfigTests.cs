using System.Text.Json;
using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// The reference's <c>X.from_config(model's scheduler config)</c> path for every short name, with the public SD 1.5,
/// SD 2, SD 2.1 and SDXL scheduler configs, at step counts from 1 to 50, on non-square batch-2 latents.
/// </summary>
[TestFixture]
public sealed class SchedulerModelConfigTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var name in SchedulerRegistry.Names)
            foreach (var config in SchedulerTestKit.ModelConfigs.Keys)
                yield return new TestCaseData(name, config).SetName($"FromModelConfig({name},{config})");
    }

    private static string Normalise(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number => e.GetDouble().ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        JsonValueKind.String => e.GetString()!,
        _ => e.GetRawText(),
    };

    /// <summary>
    /// The effective config takes every key of the model's config that the class has (except the ones the short name
    /// sets, e.g. Karras sigmas), and the run works at 1 to 50 steps: finite, one model call per timestep.
    /// </summary>
    [TestCaseSource(nameof(Cases))]
    public void EveryNameBuildsFromThePublicModelConfigAndRuns(string name, string config)
    {
        var model = SchedulerTestKit.ModelConfig(config);
        var scheduler = SchedulerRegistry.Create(name, model);
        var classDefaults = SchedulerRegistry.FromConfig(JsonConfig.Parse($$"""{"_class_name": "{{scheduler.ClassName}}"}""", "defaults")).Config.Root;
        var nameDefaults = SchedulerRegistry.Create(name, null).Config.Root;
        foreach (var p in model.Root.EnumerateObject())
        {
            if (p.Name.StartsWith('_') || !classDefaults.TryGetProperty(p.Name, out var classDefault)) continue;
            // Keys the short name itself sets (use_karras_sigmas for "-karras", algorithm_type) are not the model's to choose.
            if (Normalise(nameDefaults.GetProperty(p.Name)) != Normalise(classDefault)) continue;
            Assert.That(Normalise(scheduler.Config.Root.GetProperty(p.Name)), Is.EqualTo(Normalise(p.Value)), $"{name} from {config}: {p.Name}");
        }

        foreach (int steps in new[] { 1, 2, 3, 5, 8, 13, 21, 34, 50 })
        {
            using var scope = NewDisposeScope();
            using var g = new torch.Generator((ulong)steps, CPU);
            using var run = scheduler.Start(steps, g);
            var start = SchedulerTestKit.Latents([2, 4, 10, 6], (ulong)steps) * run.InitNoiseSigma;
            var (result, calls) = SchedulerTestKit.Denoise(run, start, run.Timesteps);
            Assert.That(calls, Is.EqualTo(run.Timesteps.Count), $"{steps} steps: calls");
            Assert.That(SchedulerTestKit.AllFinite(result), Is.True, $"{steps} steps: finite");
        }
    }

    /// <summary>SD 1.5's config ("leading", steps_offset 1) as the reference spaces it: 981, 961, …, 1 for DDIM at 50 steps.</summary>
    [Test]
    public void DdimFromSd15UsesLeadingSpacingWithTheOffset()
    {
        var ddim = SchedulerRegistry.Create("ddim", SchedulerTestKit.ModelConfig("sd15"));
        Assert.That(ddim.Config.Bool("clip_sample", true), Is.False, "the model's clip_sample");
        Assert.That(ddim.Config.Bool("set_alpha_to_one", true), Is.False, "the model's set_alpha_to_one");
        using var run = ddim.Start(50);
        Assert.That(run.Timesteps, Is.EqualTo(Enumerable.Range(0, 50).Select(k => 981.0 - 20 * k)));
    }

    /// <summary>PNDM from SD 1.5 (skip_prk_steps): the leading timesteps with the second one repeated, 51 model calls for 50 steps.</summary>
    [Test]
    public void PndmFromSd15RepeatsTheSecondTimestep()
    {
        using var run = SchedulerRegistry.Create("pndm", SchedulerTestKit.ModelConfig("sd15")).Start(50);
        var expected = new List<double> { 981 };
        expected.AddRange(Enumerable.Range(1, 49).Select(k => 981.0 - 20 * k));
        expected.Insert(1, 961);
        Assert.That(run.Timesteps, Is.EqualTo(expected));
    }

    /// <summary>
    /// Euler from SDXL's config ("leading", steps_offset 1): timesteps (0, 33, …, 957)[::-1] + 1; the initial noise sigma
    /// is sqrt(σ_max² + 1) for "leading", as in the reference.
    /// </summary>
    [Test]
    public void EulerFromSdxlUsesLeadingSpacingAndItsInitNoiseSigma()
    {
        var euler = SchedulerRegistry.Create("euler", SchedulerTestKit.ModelConfig("sdxl"));
        using var run = euler.Start(30);
        Assert.That(run.Timesteps, Is.EqualTo(Enumerable.Range(0, 30).Reverse().Select(k => 33.0 * k + 1)));
        double sigmaMax = run.Sigmas![0];
        Assert.That(run.InitNoiseSigma, Is.EqualTo(Math.Sqrt(sigmaMax * sigmaMax + 1)).Within(1e-5));
        Assert.That(run.Sigmas![^1], Is.EqualTo(0));
    }

    /// <summary>The v-prediction of SD 2 / 2.1 carries into every class swapped in.</summary>
    [TestCase("sd2")]
    [TestCase("sd21")]
    public void VPredictionCarriesIntoEveryClass(string config)
    {
        foreach (var name in SchedulerRegistry.Names)
            Assert.That(SchedulerRegistry.Create(name, SchedulerTestKit.ModelConfig(config)).Config.String("prediction_type", null), Is.EqualTo("v_prediction"), name);
    }

    /// <summary>
    /// Keys of the model's config that the class does not have ride along unused, as in the reference: they must not
    /// change the schedule. LMS, PNDM, Heun, KDPM2, DPM++ 2S and DEIS have no rescale_betas_zero_snr (the built-in
    /// model's config sets it), Euler ancestral has no use_karras_sigmas.
    /// </summary>
    [TestCase("lms")]
    [TestCase("pndm")]
    [TestCase("heun")]
    [TestCase("kdpm2")]
    [TestCase("kdpm2-a")]
    [TestCase("dpm++2s")]
    [TestCase("deis")]
    public void ARescaleKeyTheClassDoesNotHaveIsIgnored(string name)
    {
        var withKey = (DiffusionScheduler)SchedulerRegistry.Create(name, SchedulerTestKit.BuiltInModelConfig());
        Assert.That(withKey.Config.Bool("rescale_betas_zero_snr", false), Is.True, "carried along in the config");
        var node = System.Text.Json.Nodes.JsonNode.Parse(SchedulerTestKit.BuiltInModelConfig().Root.GetRawText())!.AsObject();
        node.Remove("rescale_betas_zero_snr");
        var withoutKey = (DiffusionScheduler)SchedulerRegistry.Create(name, JsonConfig.Parse(node.ToJsonString(), "without"));
        Assert.That(withKey.AlphasCumprod, Is.EqualTo(withoutKey.AlphasCumprod));
        Assert.That(withKey.AlphasCumprod[^1], Is.GreaterThan(1e-3f), "the plain SD schedule keeps signal at t = 999");
    }

    [Test]
    public void KarrasSigmasCarriedIntoEulerAncestralAreIgnored()
    {
        var karras = SchedulerRegistry.Create("dpm++2m-karras", SchedulerTestKit.ModelConfig("sd15"));
        using var fromKarras = SchedulerRegistry.Create("euler-a", karras.Config).Start(10);
        using var plain = SchedulerRegistry.Create("euler-a", SchedulerTestKit.ModelConfig("sd15")).Start(10);
        Assert.That(fromKarras.Sigmas, Is.EqualTo(plain.Sigmas));
        Assert.That(fromKarras.Timesteps, Is.EqualTo(plain.Timesteps));
    }
}
