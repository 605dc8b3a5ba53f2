using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using static LatentDiffusion.Tests.Schedulers.ScheduleFormulas;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>TCD (<c>tcd</c>, the reference's TCDScheduler) against its step written out here in double.</summary>
[TestFixture]
public sealed class TcdSchedulerTests
{
    /// <summary>The reference's TCD step loop from <paramref name="first"/>, noise drawn from <paramref name="noise"/> in the same order.</summary>
    private static Tensor Expected(IScheduler scheduler, IReadOnlyList<double> timesteps, Tensor start, double gamma, torch.Generator noise, int first = 0)
    {
        var ac = ((DiffusionScheduler)scheduler).AlphasCumprod;
        var x = start.to(ScalarType.Float64);
        for (int i = first; i < timesteps.Count; i++)
        {
            int t = (int)timesteps[i];
            int prev = i + 1 < timesteps.Count ? (int)timesteps[i + 1] : 0;
            int s = (int)Math.Floor((1 - gamma) * prev);
            double a = ac[t], aPrev = ac[prev], aS = ac[s];
            var eps = ToyModel(x.to(ScalarType.Float32), t).to(ScalarType.Float64);
            var x0 = (x - Math.Sqrt(1 - a) * eps) / Math.Sqrt(a);
            var noised = Math.Sqrt(aS) * x0 + Math.Sqrt(1 - aS) * eps;
            if (gamma > 0 && i != timesteps.Count - 1)
                x = Math.Sqrt(aPrev / aS) * noised + Math.Sqrt(1 - aPrev / aS) * torch.randn(x.shape, dtype: ScalarType.Float32, generator: noise).to(ScalarType.Float64);
            else
                x = noised;
        }
        return x;
    }

    [TestCase(1, new double[] { 999 })]
    [TestCase(4, new double[] { 999, 759, 499, 259 })]
    [TestCase(8, new double[] { 999, 879, 759, 639, 499, 379, 259, 139 })]
    public void TimestepsAreASubsetOfTheDistillationSchedule(int steps, double[] expected)
    {
        // 50 distillation steps of stride 20 (19, 39, …, 999), newest first; indices floor(i·50/n).
        using var run = SchedulerRegistry.Create("tcd", Sd15).Start(steps);
        Assert.That(run.Timesteps, Is.EqualTo(expected));
        Assert.That(run.InitNoiseSigma, Is.EqualTo(1.0));
    }

    [TestCase(null, 4)]
    [TestCase("0", 4)]
    [TestCase("0.3", 2)]
    [TestCase("0.3", 8)]
    [TestCase("1", 6)]
    public void MatchesTheStepFormula(string? eta, int steps)
    {
        var overrides = eta is null ? null : new Dictionary<string, string> { ["eta"] = eta };
        var scheduler = SchedulerRegistry.Create("tcd", Sd15, overrides);
        double gamma = eta is null ? 0.3 : double.Parse(eta, System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(((TcdScheduler)scheduler).Eta, Is.EqualTo(gamma));
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(12, CPU);
        using var run = scheduler.Start(steps, g);
        var start = torch.randn([2, 4, 6, 10], generator: g);
        var mine = Denoise(run, start);
        using var g2 = new torch.Generator(12, CPU);
        var expected = Expected(scheduler, run.Timesteps, torch.randn([2, 4, 6, 10], generator: g2), gamma, g2);
        AssertTensor.RelativeClose(mine, expected, 1e-5, "x_0");
    }

    [Test]
    public void Img2ImgStartsAtTheBeginIndex()
    {
        var scheduler = SchedulerRegistry.FromConfig(SchedulerConfig.Parse("""{"_class_name": "TCDScheduler", "prediction_type": "epsilon"}""", "tcd"));
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(3, CPU);
        using var run = scheduler.Start(8, g);
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 8, 0.5);
        Assert.That(begin, Is.EqualTo(4));
        var original = torch.randn([2, 4, 6, 10], generator: new torch.Generator(1, CPU));
        var noise = torch.randn([2, 4, 6, 10], generator: new torch.Generator(2, CPU));
        var noisy = run.AddNoise(original, noise, timesteps[0]);
        double a = ((DiffusionScheduler)scheduler).AlphasCumprod[(int)timesteps[0]];
        AssertTensor.RelativeClose(noisy, Math.Sqrt(a) * original + Math.Sqrt(1 - a) * noise, 1e-6, "noised");
        var mine = Denoise(run, noisy, timesteps);
        using var g2 = new torch.Generator(3, CPU);
        AssertTensor.RelativeClose(mine, Expected(scheduler, run.Timesteps, noisy, 0.3, g2, begin), 1e-5, "x_0");
    }

    [Test]
    public void BadSettingsAreRefused()
    {
        Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create("tcd", Sd15, new Dictionary<string, string> { ["eta"] = "1.5" }));
        Assert.Throws<ArgumentOutOfRangeException>(() => SchedulerRegistry.Create("tcd", Sd15).Start(51));
        Assert.Throws<ArgumentException>(() => SchedulerRegistry.Create("tcd", Sd15, new Dictionary<string, string> { ["use_karras_sigmas"] = "true" }));
    }
}
