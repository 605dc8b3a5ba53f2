using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using static LatentDiffusion.Tests.Schedulers.ScheduleFormulas;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// DPM++ SDE (<c>dpm++sde</c>, <c>dpm++sde-karras</c>, the reference's DPMSolverSDEScheduler). The deterministic part is
/// checked exactly against the step written out here in double, with the Brownian noise replaced by injected draws;
/// the Brownian noise itself (the reference's comes from torchsde) is checked statistically on a seeded run: unit
/// normal increments, the two noises of one step correlated as Brownian increments over nested intervals, steps independent.
/// </summary>
[TestFixture]
public sealed class DpmSolverSdeSchedulerTests
{
    private static (double Down, double Up) Ancestral(double from, double to)
    {
        double up = Math.Min(to, Math.Sqrt(to * to * (from * from - to * to) / (from * from)));
        return (Math.Sqrt(to * to - up * up), up);
    }

    /// <summary>The reference's step loop in double; <paramref name="noise"/> yields the two noises of each step in order.</summary>
    private static Tensor Expected(double[] sig, double[] timesteps, double[] mids, Tensor start, Func<Tensor> noise, int first = 0)
    {
        var x = start.to(ScalarType.Float64);
        Tensor Eps(Tensor xin, double sigma, double t) => ToyModel((xin / Math.Sqrt(sigma * sigma + 1)).to(ScalarType.Float32), t).to(ScalarType.Float64);
        for (int k = first; k < sig.Length - 1; k++)
        {
            double s = sig[k], sn = sig[k + 1];
            var denoised = x - s * Eps(x, s, timesteps[k]);
            if (sn == 0) { x = denoised; continue; }
            double t = -Math.Log(s), tn = -Math.Log(sn), sMid = Math.Exp(-(t + (tn - t) / 2));
            var (d1, u1) = Ancestral(s, sMid);
            var x2 = d1 / s * x - double.ExpM1(t + Math.Log(d1)) * denoised + noise().to(ScalarType.Float64) * u1;
            var denoised2 = x2 - sMid * Eps(x2, sMid, mids[k]);
            var (d2, u2) = Ancestral(s, sn);
            x = d2 / s * x - double.ExpM1(t + Math.Log(d2)) * denoised2 + noise().to(ScalarType.Float64) * u2;
        }
        return x;
    }

    [TestCase("dpm++sde", 1)]
    [TestCase("dpm++sde", 6)]
    [TestCase("dpm++sde-karras", 6)]
    [TestCase("dpm++sde-karras", 20)]
    public void ScheduleAndDeterministicPartMatchTheFormulas(string name, int steps)
    {
        var scheduler = (DpmSolverSdeScheduler)SchedulerRegistry.Create(name, Sd15);
        var full = ModelSigmas(scheduler);
        // SD 1.5 ("leading", offset 1); Karras between the spaced sigmas' ends.
        var t = Enumerable.Range(0, steps).Reverse().Select(k => k * (1000 / steps) + 1).ToArray();
        var sig = (name.EndsWith("karras") ? Karras(full[t[^1]], full[t[0]], steps) : t.Select(v => (double)full[v]).ToArray()).Select(v => (double)(float)v).Append(0).ToArray();
        var ts = sig[..^1].Select(v => (double)(float)SigmaToT(v, full)).ToArray();
        var mids = Enumerable.Range(0, steps - 1).Select(k => SigmaToT(Math.Sqrt(sig[k] * sig[k + 1]), full)).ToArray();
        using var run0 = scheduler.Start(steps);
        Assert.That(run0.Order, Is.EqualTo(2));
        var expectedT = new List<double> { ts[0] };
        for (int k = 1; k < steps; k++) { expectedT.Add(mids[k - 1]); expectedT.Add(ts[k]); }
        AssertClose(run0.Timesteps, expectedT, 1e-6, "timesteps");
        AssertClose(run0.Sigmas!, [sig[0], .. sig[1..^1].SelectMany(v => new[] { v, v }), 0], 1e-7, "sigmas");

        foreach (var zero in new[] { true, false })
        {
            using var scope = NewDisposeScope();
            using var injected = new torch.Generator(77, CPU);
            scheduler.InjectedNoise = (_, _, shape) => zero ? torch.zeros(shape) : torch.randn(shape, generator: injected);
            try
            {
                using var run = scheduler.Start(steps);
                var start = torch.randn([2, 4, 6, 10], generator: new torch.Generator(3, CPU)) * run.InitNoiseSigma;
                var mine = Denoise(run, start);
                using var replay = new torch.Generator(77, CPU);
                var expected = Expected(sig, ts, mids, start, () => zero ? torch.zeros(2, 4, 6, 10) : torch.randn([2, 4, 6, 10], generator: replay));
                AssertTensor.RelativeClose(mine, expected, 2e-5, zero ? "x_0 without noise" : "x_0 with injected noise");
            }
            finally { scheduler.InjectedNoise = null; }
        }
    }

    [Test]
    public void BrownianNoiseIsStandardNormalAndCorrelatedLikeBrownianIncrements()
    {
        var scheduler = SchedulerRegistry.Create("dpm++sde-karras", Sd15);
        const int steps = 6;
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(2024, CPU);
        using var run = scheduler.Start(steps, g);
        var sig = Enumerable.Range(0, steps).Select(k => run.Sigmas![k == 0 ? 0 : 2 * k - 1]).Append(0).ToArray();
        // With x = 0 and output 0 the denoised estimate is 0, so each half-step returns exactly σ_up·noise.
        var zeros = torch.zeros(2, 4, 64, 64);
        var noises = new List<(Tensor Noise, double Corr)>();
        int index = 0;
        for (int k = 0; k < steps - 1; k++)
        {
            double s = sig[k], sn = sig[k + 1], sMid = Math.Sqrt(s * sn);
            var n1 = run.Step(zeros, run.Timesteps[index++], zeros) / Ancestral(s, sMid).Up;
            var n2 = run.Step(zeros, run.Timesteps[index++], zeros) / Ancestral(s, sn).Up;
            noises.Add((n1, 0));
            noises.Add((n2, Math.Sqrt((s - sMid) / (s - sn))));
        }
        double Corr(Tensor a, Tensor b) => ((a - a.mean()) * (b - b.mean())).mean().item<float>() / (a.std().item<float>() * b.std().item<float>());
        foreach (var (n, _) in noises)
        {
            Assert.That(n.mean().item<float>(), Is.EqualTo(0).Within(0.03), "mean");
            Assert.That(n.std().item<float>(), Is.EqualTo(1).Within(0.03), "std");
        }
        for (int k = 0; k < noises.Count; k += 2)
        {
            // Within a step: [σ_mid, σ] ⊂ [σ_next, σ], so corr = sqrt((σ − σ_mid)/(σ − σ_next)).
            Assert.That(Corr(noises[k].Noise, noises[k + 1].Noise), Is.EqualTo(noises[k + 1].Corr).Within(0.03), $"step {k / 2}: within-step correlation");
            if (k + 2 < noises.Count)
                Assert.That(Corr(noises[k + 1].Noise, noises[k + 2].Noise), Is.EqualTo(0).Within(0.03), $"step {k / 2}: disjoint intervals independent");
        }
    }

    [Test]
    public void NoiseSamplerSeedFixesTheNoiseWhateverTheRunGenerator()
    {
        Tensor RunWith(ulong generatorSeed, string? noiseSeed)
        {
            var overrides = noiseSeed is null ? null : new Dictionary<string, string> { ["noise_sampler_seed"] = noiseSeed };
            var scheduler = SchedulerRegistry.Create("dpm++sde", Sd15, overrides);
            using var g = new torch.Generator(generatorSeed, CPU);
            using var run = scheduler.Start(5, g);
            return Denoise(run, torch.ones(1, 4, 8, 8) * run.InitNoiseSigma);
        }
        using var scope = NewDisposeScope();
        AssertTensor.MaxAbsClose(RunWith(1, "42"), RunWith(2, "42"), 0, "same noise_sampler_seed");
        Assert.That((RunWith(1, null) - RunWith(2, null)).abs().max().item<float>(), Is.GreaterThan(1e-3f), "the run's generator drives the noise otherwise");
        AssertTensor.MaxAbsClose(RunWith(1, null), RunWith(1, null), 0, "seeded runs repeat");
    }

    [Test]
    public void Img2ImgEntersAtAStepBoundary()
    {
        var scheduler = (DpmSolverSdeScheduler)SchedulerRegistry.Create("dpm++sde-karras", Sd15);
        using var scope = NewDisposeScope();
        using var injected = new torch.Generator(9, CPU);
        scheduler.InjectedNoise = (_, _, shape) => torch.randn(shape, generator: injected);
        try
        {
            using var run = scheduler.Start(8);
            var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 8, 0.5);
            Assert.That(begin, Is.EqualTo(8));
            var sig = Enumerable.Range(0, 8).Select(k => run.Sigmas![k == 0 ? 0 : 2 * k - 1]).Append(0).ToArray();
            var original = torch.randn([2, 4, 6, 10], generator: new torch.Generator(1, CPU));
            var noisy = run.AddNoise(original, torch.ones(2, 4, 6, 10), timesteps[0]);
            AssertTensor.MaxAbsClose(noisy, original + (float)sig[4], 0, "noised to σ of step 4");
            var mine = Denoise(run, noisy, timesteps);
            var ts = Enumerable.Range(0, 8).Select(k => run.Timesteps[k == 0 ? 0 : 2 * k]).ToArray();
            var mids = Enumerable.Range(0, 7).Select(k => run.Timesteps[2 * k + 1]).ToArray();
            using var replay = new torch.Generator(9, CPU);
            var expected = Expected(sig, ts, mids, noisy, () => torch.randn([2, 4, 6, 10], generator: replay), first: 4);
            AssertTensor.RelativeClose(mine, expected, 2e-5, "x_0");
        }
        finally { scheduler.InjectedNoise = null; }
    }
}
