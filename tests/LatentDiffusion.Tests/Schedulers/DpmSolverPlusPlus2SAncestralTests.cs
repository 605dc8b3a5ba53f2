using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using static LatentDiffusion.Tests.Schedulers.ScheduleFormulas;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// DPM++ 2S ancestral (<c>dpm++2s-a</c>) against k-diffusion's <c>sample_dpmpp_2s_ancestral</c> loop written out here
/// in double, with the toy model as the denoiser and the ancestral noise drawn from a second generator in the same order.
/// </summary>
[TestFixture]
public sealed class DpmSolverPlusPlus2SAncestralTests
{
    /// <summary>The k-diffusion loop over <paramref name="sigmas"/> (ending in 0) from step <paramref name="first"/>.</summary>
    private static Tensor KDiffusion(Tensor start, double[] sigmas, float[] model, torch.Generator noise, int first = 0)
    {
        var x = start.to(ScalarType.Float64);
        Tensor Denoiser(Tensor xin, double sigma)
        {
            double t = (float)SigmaToT(sigma, model);
            var eps = ToyModel((xin / Math.Sqrt(sigma * sigma + 1)).to(ScalarType.Float32), t).to(ScalarType.Float64);
            return xin - sigma * eps;
        }
        for (int i = first; i < sigmas.Length - 1; i++)
        {
            double from = sigmas[i], to = sigmas[i + 1];
            var denoised = Denoiser(x, from);
            double up = Math.Min(to, Math.Sqrt(to * to * (from * from - to * to) / (from * from)));
            double down = Math.Sqrt(to * to - up * up);
            if (down == 0)
                x = x + (x - denoised) / from * (down - from);
            else
            {
                double t = -Math.Log(from), tNext = -Math.Log(down), h = tNext - t, s = t + h / 2;
                var x2 = Math.Exp(-s) / Math.Exp(-t) * x - double.ExpM1(-h / 2) * denoised;
                var denoised2 = Denoiser(x2, Math.Exp(-s));
                x = Math.Exp(-tNext) / Math.Exp(-t) * x - double.ExpM1(-h) * denoised2;
            }
            if (to > 0) x = x + torch.randn(x.shape, dtype: ScalarType.Float32, generator: noise).to(ScalarType.Float64) * up;
        }
        return x;
    }

    private static double[] BaseSigmas(IScheduler scheduler, int steps, bool karras)
    {
        var full = ModelSigmas(scheduler);
        // SD 1.5: "leading" spacing with steps_offset 1.
        var t = Enumerable.Range(0, steps).Reverse().Select(k => k * (1000 / steps) + 1).ToArray();
        var sig = karras ? Karras(full[t[^1]], full[t[0]], steps) : t.Select(v => (double)full[v]).ToArray();
        return [.. sig.Select(v => (double)(float)v), 0];
    }

    [TestCase(false, 1)]
    [TestCase(false, 2)]
    [TestCase(false, 9)]
    [TestCase(true, 6)]
    [TestCase(true, 25)]
    public void MatchesKDiffusion(bool karras, int steps)
    {
        var overrides = karras ? new Dictionary<string, string> { ["use_karras_sigmas"] = "true" } : null;
        var scheduler = SchedulerRegistry.Create("dpm++2s-a", Sd15, overrides);
        Assert.That(SchedulerRegistry.A1111NameOf("dpm++2s-a"), Is.EqualTo("DPM++ 2S a"));
        var sigmas = BaseSigmas(scheduler, steps, karras);
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(5, CPU);
        using var run = scheduler.Start(steps, g);
        // Two evaluations per step but one for the last (σ_down = 0): 2n − 1 timesteps.
        Assert.That(run.Timesteps, Has.Count.EqualTo(2 * steps - 1));
        Assert.That(run.Order, Is.EqualTo(2));
        for (int k = 0; k < steps; k++) Assert.That(run.Sigmas![2 * k], Is.EqualTo(sigmas[k]).Within(1e-6 * sigmas[k]), $"sigma of step {k}");
        var start = torch.randn([2, 4, 6, 10], generator: g) * run.InitNoiseSigma;
        var mine = Denoise(run, start);
        using var g2 = new torch.Generator(5, CPU);
        var start2 = torch.randn([2, 4, 6, 10], generator: g2) * run.InitNoiseSigma;
        var expected = KDiffusion(start2, sigmas, ModelSigmas(scheduler), g2);
        AssertTensor.RelativeClose(mine, expected, 2e-5, "x_0");
    }

    [TestCase(0.5)]
    [TestCase(0.8)]
    public void Img2ImgEntersAtAStepBoundary(double strength)
    {
        var scheduler = SchedulerRegistry.Create("dpm++2s-a", Sd15);
        const int steps = 10;
        var sigmas = BaseSigmas(scheduler, steps, false);
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(6, CPU);
        using var run = scheduler.Start(steps, g);
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, steps, strength);
        int first = steps - (int)(steps * strength);
        Assert.That(begin, Is.EqualTo(2 * first));
        var original = torch.randn([2, 4, 6, 10], generator: new torch.Generator(1, CPU));
        var noise = torch.randn([2, 4, 6, 10], generator: new torch.Generator(2, CPU));
        var noisy = run.AddNoise(original, noise, timesteps[0]);
        AssertTensor.MaxAbsClose(noisy, original + noise * (float)sigmas[first], 0, "noised to the step's sigma");
        var mine = Denoise(run, noisy, timesteps);
        using var g2 = new torch.Generator(6, CPU);
        var expected = KDiffusion(noisy, sigmas, ModelSigmas(scheduler), g2, first);
        AssertTensor.RelativeClose(mine, expected, 2e-5, "x_0");
    }

    [Test]
    public void BuildsFromItsOwnClassNameAndVPrediction()
    {
        var config = SchedulerConfig.Parse("""{"_class_name": "DPMSolverPlusPlus2SAncestralScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "v_prediction", "use_beta_sigmas": true}""", "test");
        var scheduler = SchedulerRegistry.FromConfig(config);
        Assert.That(scheduler.ClassName, Is.EqualTo("DPMSolverPlusPlus2SAncestralScheduler"));
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(1, CPU);
        using var run = scheduler.Start(7, g);
        var x = Denoise(run, torch.randn([1, 4, 8, 8], generator: g) * run.InitNoiseSigma);
        Assert.That(x.isfinite().all().item<bool>(), Is.True);
    }
}
