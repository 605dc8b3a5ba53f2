using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>The image-to-image entry (<see cref="Img2ImgSchedule.ForStrength"/>, the reference's set_begin_index path) for every scheduler.</summary>
[TestFixture]
public sealed class SchedulerImageToImageTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var name in SchedulerRegistry.Names)
            foreach (var (config, steps) in new[] { ("sd15", 10), ("sd2", 7), ("sdxl", 13) })
                yield return new TestCaseData(name, config, steps).SetName($"ImageToImage({name},{config},{steps})");
    }

    /// <summary>
    /// Entered at several strengths on a non-square batch of 2 (SD 1.5, SD 2 and SDXL configs): no exception, a finite
    /// result of the latents' shape, and one model call per remaining timestep.
    /// </summary>
    [TestCaseSource(nameof(Cases))]
    public void EverySchedulerEntersAtSeveralStrengths(string name, string config, int steps)
    {
        var scheduler = SchedulerRegistry.Create(name, SchedulerTestKit.ModelConfig(config));
        foreach (double strength in new[] { 0.2, 0.5, 0.75, 1.0 })
        {
            using var scope = NewDisposeScope();
            using var g = new torch.Generator(21, CPU);
            using var run = scheduler.Start(steps, g);
            var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, steps, strength);
            Assert.That(timesteps, Is.Not.Empty, $"strength {strength}");
            var init = SchedulerTestKit.Latents([2, 4, 6, 10], 22);
            var noise = SchedulerTestKit.Latents([2, 4, 6, 10], 23);
            var start = run.AddNoise(init, noise, timesteps[0]);
            var (result, calls) = SchedulerTestKit.Denoise(run, start, timesteps);
            Assert.That(calls, Is.EqualTo(run.Timesteps.Count - begin), $"strength {strength}: model calls");
            Assert.That(SchedulerTestKit.AllFinite(result), Is.True, $"strength {strength}: finite");
            Assert.That(result.shape, Is.EqualTo(init.shape));
        }
    }

    /// <summary>
    /// LMS entered mid-schedule uses the derivatives it has: each step's coefficients are those of its position in the
    /// schedule (order min(index + 1, 4)), summed over the stored derivatives only, as the reference's zip does. Checked
    /// against the method written out in double, with the Lagrange basis integrated by Simpson's rule (exact for these
    /// cubics, and independent of the Gauss-Legendre quadrature the library uses).
    /// </summary>
    [TestCase(0.3)]
    [TestCase(0.5)]
    [TestCase(0.75)]
    [TestCase(1.0)]
    public void LmsImageToImageMatchesTheMethodWrittenOut(double strength)
    {
        using var scope = NewDisposeScope();
        const int steps = 10;
        var scheduler = SchedulerRegistry.Create("lms", SchedulerTestKit.ModelConfig("sd15"));
        using var run = scheduler.Start(steps);
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, steps, strength);
        var init = SchedulerTestKit.Latents([2, 4, 6, 10], 31);
        var noise = SchedulerTestKit.Latents([2, 4, 6, 10], 32);
        var sigmas = run.Sigmas!.ToArray();
        var start = run.AddNoise(init, noise, timesteps[0]);
        AssertTensor.MaxAbsClose(start, init + noise * (float)sigmas[begin], 0, "noised to sigma[begin]");
        var (actual, _) = SchedulerTestKit.Denoise(run, start, timesteps);

        var x = start.to(ScalarType.Float64);
        var derivatives = new List<Tensor>();
        for (int i = begin; i < steps; i++)
        {
            double sigma = sigmas[i], t = run.Timesteps[i];
            var eps = torch.tanh(x / Math.Sqrt(sigma * sigma + 1)) * 0.5 + 0.01 * t / 1000.0;
            var x0 = x - sigma * eps;
            derivatives.Add((x - x0) / sigma);
            if (derivatives.Count > 4) derivatives.RemoveAt(0);
            int order = Math.Min(i + 1, 4);
            int terms = Math.Min(order, derivatives.Count);
            var next = x.clone();
            for (int k = 0; k < terms; k++)
                next += SimpsonCoefficient(sigmas, order, i, k) * derivatives[derivatives.Count - 1 - k];
            x = next;
        }
        AssertTensor.RelativeClose(actual, x.to(ScalarType.Float32), 1e-5, $"LMS img2img at strength {strength}");
    }

    private static double SimpsonCoefficient(double[] sigmas, int order, int t, int current)
    {
        double Basis(double tau)
        {
            double prod = 1;
            for (int k = 0; k < order; k++)
                if (k != current) prod *= (tau - sigmas[t - k]) / (sigmas[t - current] - sigmas[t - k]);
            return prod;
        }
        double a = sigmas[t], b = sigmas[t + 1];
        const int intervals = 8;
        double h = (b - a) / intervals, sum = Basis(a) + Basis(b);
        for (int j = 1; j < intervals; j++) sum += (j % 2 == 1 ? 4 : 2) * Basis(a + j * h);
        return sum * h / 3;
    }
}
