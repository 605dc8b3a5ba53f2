using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using static LatentDiffusion.Tests.Schedulers.ScheduleFormulas;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// Exponential and beta sigmas (<c>use_exponential_sigmas</c>, <c>use_beta_sigmas</c>) on every class the reference
/// has them, Euler's <c>interpolation_type = log_linear</c> and <c>timestep_type = continuous</c>: the expected
/// schedules are computed here in double from the reference's definitions, on SD 1.5's real scheduler config.
/// </summary>
[TestFixture]
public sealed class SigmaSpacingTests
{
    private static readonly string[] SigmaFamily = ["euler", "lms", "heun", "kdpm2", "kdpm2-a"];
    private static readonly string[] Order2 = ["heun", "kdpm2", "kdpm2-a"];

    [Test]
    public void BetaQuantileMatchesAnIndependentSeries()
    {
        Assert.That(BetaSigmas.Quantile(0.5, 0.6, 0.6), Is.EqualTo(0.5).Within(1e-15), "symmetry");
        foreach (var p in new[] { 1e-9, 1e-4, 0.01, 0.1, 0.25, 1 / 3.0, 0.49, 0.75, 0.9, 0.999, 1 - 1e-9 })
            Assert.That(BetaSigmas.Quantile(p, 0.6, 0.6), Is.EqualTo(BetaPpfSymmetric(p, 0.6)).Within(1e-13), $"ppf({p})");
        Assert.That(BetaSigmas.Quantile(0, 0.6, 0.6), Is.Zero);
        Assert.That(BetaSigmas.Quantile(1, 0.6, 0.6), Is.EqualTo(1));
    }

    [Test]
    public void BetaSigmasOfThreeStepsAreTheEndsAndTheMiddle()
    {
        // 1 − linspace(0, 1, 3) = [1, ½, 0] and the symmetric Beta's median is ½: σ_max, (σ_min+σ_max)/2, σ_min.
        var scheduler = SchedulerRegistry.Create("dpm++2m", Sd15, new Dictionary<string, string> { ["use_beta_sigmas"] = "true" });
        var full = ModelSigmas(scheduler);
        using var run = scheduler.Start(3);
        AssertClose(run.Sigmas!, [full[^1], (float)((full[0] + (double)full[^1]) / 2), full[0], 0], 1e-7, "sigmas");
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var name in new[] { "euler", "lms", "heun", "kdpm2", "kdpm2-a", "dpm++2m", "dpm++2s", "unipc", "deis" })
            foreach (var spacing in new[] { "exponential", "beta" })
                foreach (var steps in new[] { 1, 2, 7, 20, 33 })
                    yield return new TestCaseData(name, spacing, steps).SetName($"SpacingMatchesTheFormula({name},{spacing},{steps})");
    }

    [TestCaseSource(nameof(Cases))]
    public void SpacingMatchesTheFormula(string name, string spacing, int steps)
    {
        var scheduler = SchedulerRegistry.Create(name, Sd15, new Dictionary<string, string> { [$"use_{spacing}_sigmas"] = "true" });
        var full = ModelSigmas(scheduler);
        double min, max;
        bool sigmaFamily = SigmaFamily.Contains(name);
        if (sigmaFamily)
        {
            // SD 1.5: "leading" spacing, steps_offset 1: the interpolated sigmas run from σ(t_first) to σ(t_last = 1).
            int ratio = 1000 / steps;
            max = full[(steps - 1) * ratio + 1];
            min = full[1];
        }
        else
        {
            // The exponential integrators convert the model's whole sigma range.
            max = full[^1];
            min = full[0];
        }
        var sigmas = spacing == "beta" ? BetaSchedule(min, max, steps) : Exponential(min, max, steps);
        using var run = scheduler.Start(steps);
        var primary = Order2.Contains(name) ? run.Sigmas!.Where((_, i) => i == 0 || i % 2 == 1).Take(steps).ToArray() : run.Sigmas!.Take(steps).ToArray();
        AssertClose(primary, sigmas.Select(s => (double)(float)s).ToArray(), 1e-7, "sigmas");
        double[] t = sigmas.Select(s => SigmaToT(s, full)).ToArray();
        if (name == "kdpm2" || name == "kdpm2-a")
        {
            var mine = run.Timesteps.Where((_, i) => i % 2 == 0).ToArray();
            AssertClose(mine, t, 1e-6, "timesteps");
        }
        else if (sigmaFamily)
        {
            var mine = name == "heun" ? run.Timesteps.Where((_, i) => i == 0 || i % 2 == 1).ToArray() : run.Timesteps.ToArray();
            AssertClose(mine, t.Select(v => (double)(float)v).ToArray(), 0, "timesteps");
        }
        else
            Assert.That(run.Timesteps, Is.EqualTo(t.Select(Math.Truncate)), "timesteps (int64, truncated)");
        // The final sigma: DEIS repeats its smallest, UniPC and DPM-Solver++ end at 0 by default, the sigma family at 0.
        Assert.That(run.Sigmas![^1], Is.EqualTo(name == "deis" ? (float)sigmas[^1] : 0f), "final sigma");

        using var scope = NewDisposeScope();
        using var g = new torch.Generator(3, CPU);
        // No SetBeginIndex: beta sigmas crowd the ends, so the integer schedules repeat their first timestep at 33 steps
        // (DPM++, UniPC, DEIS); a run called at Timesteps[0] starts at index 0 by itself, exactly as one told to.
        var start = torch.randn([2, 4, 6, 10], generator: g) * run.InitNoiseSigma;
        using var noise1 = new torch.Generator(5, CPU);
        using var seeded = scheduler.Start(steps, noise1);
        var x = Denoise(seeded, start);
        Assert.That(x.isfinite().all().item<bool>(), Is.True, "denoised");
        using var noise2 = new torch.Generator(5, CPU);
        using var fromZero = scheduler.Start(steps, noise2);
        fromZero.SetBeginIndex(0);
        Assert.That((x - Denoise(fromZero, start)).abs().max().item<float>(), Is.Zero, "same as begin index 0");
    }

    [Test]
    public void EulerWithBetaSigmasStepsLikeTheFormula()
    {
        // A whole Euler run on a batch-2, non-square latent, stepped here in double on the formula's sigmas.
        var scheduler = SchedulerRegistry.Create("euler", Sd15, new Dictionary<string, string> { ["use_beta_sigmas"] = "true", ["timestep_spacing"] = "trailing" });
        var full = ModelSigmas(scheduler);
        const int steps = 9;
        var t = Enumerable.Range(0, steps).Select(k => Math.Round(1000 - k * (1000.0 / steps)) - 1).ToArray();
        var sigmas = BetaSchedule(full[(int)t[^1]], full[(int)t[0]], steps).Select(s => (double)(float)s).Append(0).ToArray();
        using var scope = NewDisposeScope();
        using var run = scheduler.Start(steps);
        var start = torch.randn([2, 4, 6, 10], generator: new torch.Generator(7, CPU)) * run.InitNoiseSigma;
        var mine = Denoise(run, start);
        var x = start.to(ScalarType.Float64);
        for (int i = 0; i < steps; i++)
        {
            double s = sigmas[i], tt = (float)SigmaToT(sigmas[i], full);
            var eps = ToyModel(x / Math.Sqrt(s * s + 1), tt);
            x = x + eps * (sigmas[i + 1] - s);
        }
        AssertTensor.RelativeClose(mine, x, 1e-5, "x_0");
    }

    [TestCase(1)]
    [TestCase(4)]
    [TestCase(25)]
    public void EulerLogLinearInterpolationEndsAtTheSmallestSigma(int steps)
    {
        var scheduler = SchedulerRegistry.Create("euler", Sd15, new Dictionary<string, string> { ["interpolation_type"] = "log_linear" });
        var full = ModelSigmas(scheduler);
        using var run = scheduler.Start(steps);
        // steps + 1 sigmas evenly spaced in log σ from σ_999 to σ_0, then the appended 0 that no step reaches.
        var expected = Linspace(Math.Log(full[^1]), Math.Log(full[0]), steps + 1).Select(Math.Exp).Append(0).ToArray();
        AssertClose(run.Sigmas!, expected, 2e-6, "sigmas");
        // The timesteps stay the configured spacing ("leading", offset 1).
        Assert.That(run.Timesteps, Is.EqualTo(Enumerable.Range(0, steps).Reverse().Select(k => (double)(k * (1000 / steps) + 1))));
        using var scope = NewDisposeScope();
        var x0 = Denoise(run, torch.randn([2, 4, 6, 10], generator: new torch.Generator(9, CPU)) * run.InitNoiseSigma);
        Assert.That(x0.isfinite().all().item<bool>(), Is.True);
    }

    [Test]
    public void EulerContinuousTimestepsAreAQuarterLogSigmaForVPrediction()
    {
        var overrides = new Dictionary<string, string> { ["timestep_type"] = "continuous", ["use_karras_sigmas"] = "true" };
        var scheduler = SchedulerRegistry.Create("euler", Sd2, overrides);
        Assert.That(scheduler.Config.String("prediction_type", null), Is.EqualTo("v_prediction"));
        using var run = scheduler.Start(12);
        AssertClose(run.Timesteps, run.Sigmas!.Take(12).Select(s => 0.25 * Math.Log(s)).ToArray(), 1e-6, "timesteps");
        Assert.That(run.Timesteps[^1], Is.LessThan(0), "small sigmas give negative c_noise, which must not be refused");
        // The same schedule's sigmas as the discrete run.
        using var discrete = SchedulerRegistry.Create("euler", Sd2, new Dictionary<string, string> { ["use_karras_sigmas"] = "true" }).Start(12);
        Assert.That(run.Sigmas, Is.EqualTo(discrete.Sigmas));

        // img2img: the begin index picks the sigma, whatever the timestep's value.
        using var scope = NewDisposeScope();
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 12, 0.5);
        Assert.That(begin, Is.EqualTo(6));
        var original = torch.ones(2, 4, 6, 10);
        var noise = torch.full(2, 4, 6, 10, 2f);
        var noisy = run.AddNoise(original, noise, timesteps[0]);
        AssertTensor.MaxAbsClose(noisy, original + noise * (float)run.Sigmas![begin], 0, "noised to sigma[begin]");
        var x = Denoise(run, noisy, timesteps);
        Assert.That(x.isfinite().all().item<bool>(), Is.True);

        // For epsilon models the reference ignores timestep_type.
        using var eps = SchedulerRegistry.Create("euler", Sd15, new Dictionary<string, string> { ["timestep_type"] = "continuous" }).Start(5);
        Assert.That(eps.Timesteps, Is.EqualTo(new double[] { 801, 601, 401, 201, 1 }));
    }

    [TestCase("euler")]
    [TestCase("dpm++2m")]
    [TestCase("unipc")]
    [TestCase("heun")]
    public void BetaSigmasEnterImg2ImgAtTheBeginIndex(string name)
    {
        var scheduler = SchedulerRegistry.Create(name, Sd15, new Dictionary<string, string> { ["use_beta_sigmas"] = "true" });
        using var scope = NewDisposeScope();
        using var run = scheduler.Start(10);
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 10, 0.6);
        var original = torch.ones(2, 4, 6, 10);
        var noise = torch.full(2, 4, 6, 10, 0.5f);
        var noisy = run.AddNoise(original, noise, timesteps[0]);
        float sigma = (float)run.Sigmas![begin];
        var expected = SigmaFamily.Contains(name) ? original + noise * sigma : original / MathF.Sqrt(sigma * sigma + 1) + noise * (sigma / MathF.Sqrt(sigma * sigma + 1));
        AssertTensor.RelativeClose(noisy, expected, 1e-6, "noised to sigma[begin]");
        var x = Denoise(run, noisy, timesteps);
        Assert.That(x.isfinite().all().item<bool>(), Is.True);
    }

    [Test]
    public void TwoSpacingsAtOnceAreRefused()
    {
        var e = Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("euler", Sd15, new Dictionary<string, string> { ["use_beta_sigmas"] = "true", ["use_karras_sigmas"] = "true" }))!;
        Assert.That(e.Message, Does.Contain("use_beta_sigmas"));
    }
}
