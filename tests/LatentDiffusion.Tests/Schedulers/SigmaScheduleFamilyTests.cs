using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using static LatentDiffusion.Tests.Schedulers.ScheduleFormulas;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// Schedule families as ComfyUI / A1111 name them, on the sigma samplers: by name suffix (<c>euler-sgm_uniform</c>) or
/// the <c>schedule</c> override; expected sigmas from ComfyUI's definitions written out here.
/// </summary>
[TestFixture]
public sealed class SigmaScheduleFamilyTests
{
    /// <summary>ComfyUI's sigma(t): exp of log σ interpolated linearly between neighbouring training steps.</summary>
    private static double SigmaAt(double t, float[] full)
    {
        int lo = (int)Math.Floor(t), hi = (int)Math.Ceiling(t);
        double w = t - lo;
        return Math.Exp((1 - w) * Math.Log(full[lo]) + w * Math.Log(full[hi]));
    }

    private static double[] Expected(string family, float[] full, int steps) => family switch
    {
        "simple" => [.. Enumerable.Range(0, steps).Select(x => (double)full[999 - (int)(x * (1000.0 / steps))]), 0],
        "ddim_uniform" => [.. Enumerable.Range(0, 1000).Where(x => x >= 1 && (x - 1) % (1000 / steps) == 0).Reverse().Select(x => (double)full[x]), 0],
        "sgm_uniform" => [.. Linspace(999, 0, steps + 1).Take(steps).Select(t => SigmaAt(t, full)), 0],
        _ => [.. Linspace(999, 0, steps).Select(t => SigmaAt(t, full)), 0],
    };

    [TestCase("simple", 4, new[] { 999, 749, 499, 249 })]
    [TestCase("ddim_uniform", 4, new[] { 751, 501, 251, 1 })]
    [TestCase("ddim_uniform", 7, new[] { 995, 853, 711, 569, 427, 285, 143, 1 })]
    public void IndexPickingFamiliesTakeTheModelsOwnSigmas(string family, int steps, int[] indices)
    {
        var scheduler = SchedulerRegistry.Create($"euler-{family}", Sd15);
        var full = ModelSigmas(scheduler);
        using var run = scheduler.Start(steps);
        Assert.That(run.Sigmas, Is.EqualTo(indices.Select(i => (double)full[i]).Append(0)), "sigmas (ddim_uniform may take more steps, as ComfyUI)");
        AssertClose(run.Timesteps, indices.Select(i => (double)i).ToArray(), 1e-4, "timesteps");
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var name in new[] { "euler", "euler-a", "heun", "lms", "kdpm2", "kdpm2-a", "dpm++2s-a", "dpm++sde" })
            foreach (var family in new[] { "normal", "simple", "sgm_uniform", "ddim_uniform" })
                foreach (var steps in new[] { 1, 5, 20 })
                    yield return new TestCaseData(name, family, steps).SetName($"CustomFamily({name},{family},{steps})");
    }

    [TestCaseSource(nameof(Cases))]
    public void CustomFamily(string name, string family, int steps)
    {
        var bySuffix = SchedulerRegistry.Create($"{name}-{family.Replace('_', '-')}", Sd15);
        var byOverride = SchedulerRegistry.Create(name, Sd15, new Dictionary<string, string> { ["schedule"] = family });
        var full = ModelSigmas(bySuffix);
        var expected = Expected(family, full, steps);
        using var run = bySuffix.Start(steps);
        using var run2 = byOverride.Start(steps);
        Assert.That(run2.Sigmas, Is.EqualTo(run.Sigmas), "suffix and override agree");
        // The order-2 samplers visit the step sigmas at even positions (plus midpoints or repeats in between).
        int n = expected.Length - 1;
        var primary = name is "heun" or "kdpm2" or "kdpm2-a" or "dpm++sde"
            ? run.Sigmas!.Where((_, i) => i == 0 || i % 2 == 1).Take(n).ToArray()
            : name == "dpm++2s-a" ? run.Sigmas!.Where((_, i) => i % 2 == 0).Take(n).ToArray() : run.Sigmas!.Take(n).ToArray();
        AssertClose(primary, expected.Take(n).Select(v => (double)(float)v).ToArray(), 2e-6, "step sigmas");
        Assert.That(run.Sigmas![^1], Is.Zero, "final sigma");
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(4, CPU);
        var x = Denoise(run, torch.randn([2, 4, 6, 10], generator: g) * run.InitNoiseSigma);
        Assert.That(x.isfinite().all().item<bool>(), Is.True);
    }

    [Test]
    public void ReferenceSpacingsByNameSuffix()
    {
        // Euler ancestral has no use_*_sigmas keys in the reference: the family rides as the "schedule" key.
        var eulerA = SchedulerRegistry.Create("euler-a-karras", Sd15);
        Assert.That(SchedulerRegistry.A1111NameOf("euler-a-karras"), Is.EqualTo("Euler a Karras"));
        Assert.That(SchedulerRegistry.ClassNameOf("euler-a-karras"), Is.EqualTo("EulerAncestralDiscreteScheduler"));
        var full = ModelSigmas(eulerA);
        using (var run = eulerA.Start(10))
            AssertClose(run.Sigmas!, [.. Karras(full[1], full[901], 10).Select(v => (double)(float)v), 0], 1e-7, "Euler a Karras sigmas");
        // Classes with the keys get them set (all three, so a model's use_karras_sigmas cannot clash).
        var karrasConfig = SchedulerConfig.Parse("""{"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear", "use_karras_sigmas": true}""", "karras model config");
        var dpm = SchedulerRegistry.Create("dpm++2m-sde-exponential", karrasConfig);
        Assert.That(dpm.Config.Bool("use_exponential_sigmas", false), Is.True);
        Assert.That(dpm.Config.Bool("use_karras_sigmas", true), Is.False);
        Assert.That(SchedulerRegistry.Create("heun-beta", Sd15).Config.Bool("use_beta_sigmas", false), Is.True);
        Assert.That(SchedulerRegistry.Create("edm-euler-exponential", null).Config.String("sigma_schedule", null), Is.EqualTo("exponential"));
        Assert.That(SchedulerRegistry.A1111NameOf("euler-sgm_uniform"), Is.EqualTo("Euler SGM Uniform"));
    }

    [Test]
    public void FromConfigTakesTheScheduleOverrideToo()
    {
        // The pipeline applies overrides to the model's own scheduler through FromConfig (an SDXL config is Euler).
        var scheduler = SchedulerRegistry.FromConfig(Sdxl, new Dictionary<string, string> { ["schedule"] = "sgm_uniform" });
        using var run = scheduler.Start(4);
        using var expected = SchedulerRegistry.Create("euler-sgm_uniform", Sdxl).Start(4);
        Assert.That(scheduler.ClassName, Is.EqualTo("EulerDiscreteScheduler"));
        Assert.That(run.Sigmas, Is.EqualTo(expected.Sigmas));
        var full = ModelSigmas(scheduler);
        AssertClose(run.Sigmas!, [.. Expected("sgm_uniform", full, 4).Select(v => (double)(float)v)], 2e-6, "sigmas");
    }

    [Test]
    public void EulerAncestralIgnoresSpacingKeysItDoesNotHave()
    {
        // The reference's EulerAncestralDiscreteScheduler has no use_karras_sigmas: a DPM++ Karras config swapped in
        // (from_config) keeps it unused. Only the explicit schedule family changes Euler a's sigmas.
        var karrasConfig = SchedulerConfig.Parse("""{"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "use_karras_sigmas": true}""", "karras model config");
        var plainConfig = SchedulerConfig.Parse("""{"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}""", "plain model config");
        using var swapped = SchedulerRegistry.Create("euler-a", karrasConfig).Start(10);
        using var plain = SchedulerRegistry.Create("euler-a", plainConfig).Start(10);
        Assert.That(swapped.Sigmas, Is.EqualTo(plain.Sigmas));
        using var karras = SchedulerRegistry.Create("euler-a-karras", plainConfig).Start(10);
        Assert.That(karras.Sigmas, Is.Not.EqualTo(plain.Sigmas));
    }

    [Test]
    public void SchedulesAClassCannotTakeAreRefused()
    {
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("ddim-karras", Sd15));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("dpm++2m-sgm_uniform", Sd15));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("edm-euler-beta", null));
        var e = Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create("euler", Sd15, new Dictionary<string, string> { ["schedule"] = "align_your_steps" }))!;
        Assert.That(e.Message, Does.Contain("sgm_uniform"));
        Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create("euler-foo", Sd15));
        Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create("euler-simple", Sd15, new Dictionary<string, string> { ["use_karras_sigmas"] = "true" }));
        // A config that carries the family and a contradicting spacing is refused when the schedule is built.
        var both = SchedulerConfig.Parse("""{"_class_name": "EulerDiscreteScheduler", "schedule": "simple", "use_karras_sigmas": true}""", "both");
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.FromConfig(both).Start(5));
    }

    [TestCase("euler-sgm_uniform")]
    [TestCase("heun-simple")]
    [TestCase("dpm++2s-a-normal")]
    public void Img2ImgEntersAtTheBeginSigma(string name)
    {
        var scheduler = SchedulerRegistry.Create(name, Sd15);
        using var scope = NewDisposeScope();
        using var run = scheduler.Start(10, new torch.Generator(1, CPU));
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 10, 0.5);
        var original = torch.ones(2, 4, 6, 10);
        var noisy = run.AddNoise(original, torch.ones(2, 4, 6, 10), timesteps[0]);
        AssertTensor.MaxAbsClose(noisy, original + (float)run.Sigmas![begin], 0, "noised to sigma[begin]");
        Assert.That(Denoise(run, noisy, timesteps).isfinite().all().item<bool>(), Is.True);
    }
}
