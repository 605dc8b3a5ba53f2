using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using static LatentDiffusion.Tests.Schedulers.ScheduleFormulas;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// DDPM's <c>variance_type</c> <c>learned</c> and <c>learned_range</c> for models that output twice the sample's
/// channels, against the posterior step written out here in double with the noise replayed from a second generator.
/// </summary>
[TestFixture]
public sealed class DdpmLearnedVarianceTests
{
    /// <summary>A toy model with a variance head: the fixtures' ε, then a value in (−1, 1) (learned_range) or a small positive variance (learned).</summary>
    private static Tensor Model(Tensor x, double t, string varianceType)
    {
        var eps = ToyModel(x, t);
        var v = varianceType == "learned" ? 0.002 + 0.01 * torch.tanh(x).pow(2) : torch.tanh(x * 0.7);
        return torch.cat([eps, v.to(eps.dtype)], 1);
    }

    private static Tensor Expected(IScheduler scheduler, IReadOnlyList<double> timesteps, Tensor start, string varianceType, torch.Generator noise, int first = 0)
    {
        var ac = ((DiffusionScheduler)scheduler).AlphasCumprod;
        var x = start.to(ScalarType.Float64);
        for (int i = first; i < timesteps.Count; i++)
        {
            int t = (int)timesteps[i], prev = i + 1 < timesteps.Count ? (int)timesteps[i + 1] : -1;
            double a = ac[t], aPrev = prev >= 0 ? ac[prev] : 1, beta = 1 - a / aPrev;
            var output = Model(x.to(ScalarType.Float32), t, varianceType).to(ScalarType.Float64);
            var eps = output[.., ..4];
            var v = output[.., 4..];
            var x0 = ((x - Math.Sqrt(1 - a) * eps) / Math.Sqrt(a)).clamp(-1, 1);
            var mean = Math.Sqrt(aPrev) * beta / (1 - a) * x0 + Math.Sqrt(a / aPrev) * (1 - aPrev) / (1 - a) * x;
            if (t > 0)
            {
                double posterior = Math.Max((1 - aPrev) / (1 - a) * beta, 1e-20);
                var std = varianceType == "learned"
                    ? v.sqrt()
                    : (0.5 * ((v + 1) / 2 * Math.Log(beta) + (1 - (v + 1) / 2) * Math.Log(posterior))).exp();
                mean = mean + std * torch.randn(x.shape, dtype: ScalarType.Float32, generator: noise).to(ScalarType.Float64);
            }
            x = mean;
        }
        return x;
    }

    [TestCase("learned", 10)]
    [TestCase("learned_range", 10)]
    [TestCase("learned_range", 25)]
    public void StepsWithThePredictedVariance(string varianceType, int steps)
    {
        var scheduler = SchedulerRegistry.Create("ddpm", Sd15, new Dictionary<string, string> { ["variance_type"] = varianceType });
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(17, CPU);
        using var run = scheduler.Start(steps, g);
        var start = torch.randn([2, 4, 6, 10], generator: g);
        var x = start.clone();
        foreach (var t in run.Timesteps) x = run.Step(Model(run.ScaleModelInput(x, t), t, varianceType), t, x);
        Assert.That(x.shape, Is.EqualTo(new long[] { 2, 4, 6, 10 }));
        using var g2 = new torch.Generator(17, CPU);
        var expected = Expected(scheduler, run.Timesteps, torch.randn([2, 4, 6, 10], generator: g2), varianceType, g2);
        AssertTensor.RelativeClose(x, expected, 1e-5, "x_0");
    }

    [Test]
    public void Img2ImgStartsAtTheBeginTimestep()
    {
        var scheduler = SchedulerRegistry.Create("ddpm", Sd15, new Dictionary<string, string> { ["variance_type"] = "learned_range" });
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(5, CPU);
        using var run = scheduler.Start(20, g);
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 20, 0.4);
        Assert.That(begin, Is.EqualTo(12));
        var noisy = run.AddNoise(torch.ones(2, 4, 6, 10), torch.zeros(2, 4, 6, 10), timesteps[0]);
        var x = noisy.clone();
        foreach (var t in timesteps) x = run.Step(Model(x, t, "learned_range"), t, x);
        using var g2 = new torch.Generator(5, CPU);
        AssertTensor.RelativeClose(x, Expected(scheduler, run.Timesteps, noisy, "learned_range", g2, begin), 1e-5, "x_0");
    }

    [Test]
    public void AnOutputWithoutTheVarianceChannelsIsRefused()
    {
        var scheduler = SchedulerRegistry.Create("ddpm", Sd15, new Dictionary<string, string> { ["variance_type"] = "learned" });
        using var run = scheduler.Start(5);
        using var x = torch.zeros(1, 4, 8, 8);
        var e = Assert.Throws<ArgumentException>(() => run.Step(x, run.Timesteps[0], x))!;
        Assert.That(e.Message, Does.Contain("learned").And.Contain("twice").And.Contain("[1, 4, 8, 8]"));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("ddpm", Sd15, new Dictionary<string, string> { ["variance_type"] = "fixed_large_log" }));
    }
}
