using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// Dynamic thresholding (<c>thresholding: true</c>, Imagen): per sample, s = the <c>dynamic_thresholding_ratio</c>
/// quantile of |x̂₀| over all its elements, clamped to [1, <c>sample_max_value</c>]; x̂₀ becomes clamp(x̂₀, −s, s)/s.
/// </summary>
[TestFixture]
public sealed class SchedulerThresholdingTests
{
    /// <summary>The reference's _threshold_sample, element by element in double (torch.quantile's linear interpolation).</summary>
    private static float[] ReferenceThreshold(float[] x, int batch, double ratio, double maxValue)
    {
        int n = x.Length / batch;
        var result = new float[x.Length];
        for (int b = 0; b < batch; b++)
        {
            var abs = x.Skip(b * n).Take(n).Select(v => (double)Math.Abs(v)).Order().ToArray();
            double pos = ratio * (n - 1);
            int lo = (int)Math.Floor(pos);
            double s = lo + 1 < n ? abs[lo] + (pos - lo) * (abs[lo + 1] - abs[lo]) : abs[lo];
            s = Math.Min(Math.Max(s, 1), maxValue);
            for (int i = 0; i < n; i++) result[b * n + i] = (float)(Math.Clamp(x[b * n + i], -s, s) / s);
        }
        return result;
    }

    [TestCase(0.995, 1.0)]
    [TestCase(0.9, 1.5)]
    [TestCase(0.5, 3.0)]
    public void ThresholdMatchesTheReferenceFormulaPerSample(double ratio, double maxValue)
    {
        using var scope = NewDisposeScope();
        // Batch 2, non-square: the first sample mostly inside [-1, 1] (s clamps to 1), the second spread wider.
        var x = SchedulerTestKit.Latents([2, 4, 6, 10], 7);
        x[1] = x[1] * 2.5f;
        var values = x.data<float>().ToArray();
        var actual = NoiseSchedule.Threshold(x, ratio, maxValue);
        Assert.That(actual.shape, Is.EqualTo(x.shape));
        var expected = torch.tensor(ReferenceThreshold(values, 2, ratio, maxValue), x.shape);
        AssertTensor.MaxAbsClose(actual, expected, 1e-6, "thresholded");
        // Half precision input comes back in half precision, computed in float32 as the reference does.
        var half = NoiseSchedule.Threshold(x.to(ScalarType.Float16), ratio, maxValue);
        Assert.That(half.dtype, Is.EqualTo(ScalarType.Float16));
    }

    public static IEnumerable<string> ThresholdingSchedulers() => ["ddim", "ddpm", "dpm++2m", "dpm++2m-karras", "dpm++2m-sde-karras", "dpm++2s", "unipc", "deis", "lcm"];

    /// <summary>Every scheduler with the option runs with it, on a non-square batch of 2, and the option changes the result.</summary>
    [TestCaseSource(nameof(ThresholdingSchedulers))]
    public void ThresholdingRunsInEveryScheduler(string name)
    {
        using var scope = NewDisposeScope();
        Tensor Run(bool thresholding)
        {
            var overrides = new Dictionary<string, string> { ["thresholding"] = thresholding ? "true" : "false", ["sample_max_value"] = "1.5" };
            var scheduler = SchedulerRegistry.Create(name, SchedulerTestKit.ModelConfig("sd15"), overrides);
            using var g = new torch.Generator(4, CPU);
            using var run = scheduler.Start(6, g);
            var start = SchedulerTestKit.Latents([2, 4, 6, 10], 5) * run.InitNoiseSigma;
            // A model output that makes x̂₀ large: its quantile must be clamped for thresholding to matter.
            var x = start;
            foreach (var t in run.Timesteps)
            {
                var eps = -3f * torch.tanh(run.ScaleModelInput(x, t));
                x = run.Step(eps, t, x);
            }
            return x;
        }
        var with = Run(true);
        var without = Run(false);
        Assert.That(SchedulerTestKit.AllFinite(with), Is.True, "finite");
        Assert.That(with.shape, Is.EqualTo(new long[] { 2, 4, 6, 10 }));
        Assert.That((with - without).abs().max().item<float>(), Is.GreaterThan(1e-3f), "thresholding must change the result");
    }

    /// <summary>One DDIM step with thresholding, against the reference's step written out: x̂₀, threshold, DDIM update.</summary>
    [Test]
    public void DdimStepThresholdsThePredictedOriginal()
    {
        using var scope = NewDisposeScope();
        var scheduler = (DdimScheduler)SchedulerRegistry.Create("ddim", SchedulerTestKit.ModelConfig("sd15"),
            new Dictionary<string, string> { ["thresholding"] = "true", ["sample_max_value"] = "2.0", ["dynamic_thresholding_ratio"] = "0.9" });
        using var run = scheduler.Start(50);
        double t = run.Timesteps[0];
        Assert.That(t, Is.EqualTo(981), "SD 1.5 leading spacing, steps_offset 1");
        var x = SchedulerTestKit.Latents([2, 4, 6, 10], 9);
        var eps = SchedulerTestKit.Latents([2, 4, 6, 10], 10);
        var actual = run.Step(eps, t, x);

        float a = scheduler.AlphasCumprod[981], aPrev = scheduler.AlphasCumprod[961];
        var xv = x.data<float>().ToArray();
        var ev = eps.data<float>().ToArray();
        var x0 = xv.Select((v, i) => (v - MathF.Sqrt(1f - a) * ev[i]) / MathF.Sqrt(a)).ToArray();
        var clipped = ReferenceThreshold(x0, 2, 0.9, 2.0);
        var expected = clipped.Select((v, i) => MathF.Sqrt(aPrev) * v + MathF.Sqrt(1f - aPrev) * ev[i]).ToArray();
        AssertTensor.MaxAbsClose(actual, torch.tensor(expected, x.shape), 2e-5, "DDIM step with thresholding");
    }
}
