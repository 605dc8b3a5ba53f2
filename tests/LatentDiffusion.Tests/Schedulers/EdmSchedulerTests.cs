using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using static LatentDiffusion.Tests.Schedulers.ScheduleFormulas;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// EDM Euler (<c>edm-euler</c>) and EDM DPM-Solver++ (<c>edm-dpm++2m</c>, <c>edm-dpm++2m-sde</c>) against Karras et al.'s
/// schedule and preconditioning and the solvers' updates written out here in double.
/// </summary>
[TestFixture]
public sealed class EdmSchedulerTests
{
    private const double SigmaData = 0.5;

    /// <summary>The preconditioned denoiser D(x; σ) = c_skip·x + c_out·F(c_in·x; ¼ ln σ) with the toy model as F.</summary>
    private static Tensor Denoiser(Tensor x, double sigma, bool v)
    {
        double d2 = SigmaData * SigmaData, norm = Math.Sqrt(sigma * sigma + d2);
        var f = ToyModel((x / norm).to(ScalarType.Float32), (float)(0.25 * Math.Log((float)sigma))).to(ScalarType.Float64);
        return d2 / (sigma * sigma + d2) * x + (v ? -1 : 1) * sigma * SigmaData / norm * f;
    }

    /// <summary>Karras's ρ-schedule, or exp(linspace(ln σ_min, ln σ_max, n)) flipped (one step: σ_min, as the reference).</summary>
    private static double[] ExpectedSigmas(string schedule, int n, double min = 0.002, double max = 80, double rho = 7)
        => schedule == "karras" ? Karras(min, max, n, rho) : n == 1 ? [min] : Exponential(min, max, n);

    [TestCase("karras", 1)]
    [TestCase("karras", 2)]
    [TestCase("karras", 9)]
    [TestCase("karras", 40)]
    [TestCase("exponential", 1)]
    [TestCase("exponential", 7)]
    [TestCase("exponential", 30)]
    public void SchedulesAreTheEdmOnes(string schedule, int steps)
    {
        foreach (var name in new[] { "edm-euler", "edm-dpm++2m" })
        {
            var scheduler = SchedulerRegistry.Create(name, Sdxl, new Dictionary<string, string> { ["sigma_schedule"] = schedule });
            using var run = scheduler.Start(steps);
            var sigmas = ExpectedSigmas(schedule, steps);
            AssertClose(run.Sigmas!.Take(steps).ToArray(), sigmas, 2e-6, $"{name} sigmas");
            Assert.That(run.Sigmas![^1], Is.Zero, "final sigma");
            AssertClose(run.Timesteps, run.Sigmas!.Take(steps).Select(s => 0.25 * Math.Log(s)).ToArray(), 1e-6, $"{name} timesteps (c_noise)");
            Assert.That(run.InitNoiseSigma, Is.EqualTo(Math.Sqrt(80.0 * 80.0 + 1)).Within(1e-12));
        }
    }

    [TestCase(false, "karras", 10)]
    [TestCase(true, "karras", 25)]
    [TestCase(false, "exponential", 6)]
    public void EulerStepsLikeTheFormula(bool v, string schedule, int steps)
    {
        var overrides = new Dictionary<string, string> { ["sigma_schedule"] = schedule, ["prediction_type"] = v ? "v_prediction" : "epsilon", ["sigma_max"] = "14.6" };
        var scheduler = SchedulerRegistry.Create("edm-euler", Sdxl, overrides);
        var sigmas = ExpectedSigmas(schedule, steps, max: 14.6).Select(s => (double)(float)s).Append(0).ToArray();
        using var scope = NewDisposeScope();
        using var run = scheduler.Start(steps);
        var start = torch.randn([2, 4, 6, 10], generator: new torch.Generator(2, CPU)) * run.InitNoiseSigma;
        var mine = Denoise(run, start);
        var x = start.to(ScalarType.Float64);
        for (int i = 0; i < steps; i++)
            x = x + (x - Denoiser(x, sigmas[i], v)) / sigmas[i] * (sigmas[i + 1] - sigmas[i]);
        AssertTensor.RelativeClose(mine, x, 1e-5, "x_0");
    }

    /// <summary>DPM-Solver++ multistep with α = 1, σ_t = σ, λ = −ln σ, from step <paramref name="first"/>.</summary>
    private static Tensor ExpectedDpm(double[] sig, Tensor start, int order, bool sde, bool heun, bool finalZero, torch.Generator? noise, int first = 0)
    {
        int n = sig.Length - 1;
        var x = start.to(ScalarType.Float64);
        var history = new List<Tensor>();
        int warm = 0;
        for (int i = first; i < n; i++)
        {
            history.Add(Denoiser(x, sig[i], false));
            Tensor? z = sde ? torch.randn(x.shape, dtype: ScalarType.Float32, generator: noise).to(ScalarType.Float64) : null;
            bool lof = i == n - 1 && (n < 15 || finalZero), los = i == n - 2 && n < 15;
            int o = order == 1 || warm < 1 || lof ? 1 : order == 2 || warm < 2 || los ? 2 : 3;
            double L(int k) => -Math.Log(sig[k]);
            double h = sig[i + 1] == 0 ? double.PositiveInfinity : L(i + 1) - L(i), st = sig[i + 1], s0 = sig[i];
            var m0 = history[^1];
            double em = Math.Exp(-h) - 1, e2 = 1 - Math.Exp(-2 * h);
            Tensor next = sde ? st / s0 * Math.Exp(-h) * x + e2 * m0 + st * Math.Sqrt(e2) * z! : st / s0 * x - em * m0;
            if (o >= 2)
            {
                double r0 = (L(i) - L(i - 1)) / h;
                var d10 = (m0 - history[^2]) / r0;
                if (o == 2)
                    next = sde ? (heun ? next + (e2 / (-2 * h) + 1) * d10 : next + 0.5 * e2 * d10) : (heun ? next + (em / h + 1) * d10 : next - 0.5 * em * d10);
                else
                {
                    double r1 = (L(i - 1) - L(i - 2)) / h;
                    var d11 = (history[^2] - history[^3]) / r1;
                    var d1 = d10 + r0 / (r0 + r1) * (d10 - d11);
                    var d2 = (d10 - d11) / (r0 + r1);
                    next = next + (em / h + 1) * d1 - ((Math.Exp(-h) - 1 + h) / (h * h) - 0.5) * d2;
                }
            }
            x = next;
            if (warm < order) warm++;
        }
        return x;
    }

    [TestCase("edm-dpm++2m", 2, "midpoint", 5)]
    [TestCase("edm-dpm++2m", 2, "heun", 20)]
    [TestCase("edm-dpm++2m", 3, "midpoint", 12)]
    [TestCase("edm-dpm++2m", 1, "midpoint", 8)]
    [TestCase("edm-dpm++2m-sde", 2, "midpoint", 10)]
    [TestCase("edm-dpm++2m-sde", 2, "heun", 16)]
    public void DpmSolverStepsLikeTheFormula(string name, int order, string solver, int steps)
    {
        var overrides = new Dictionary<string, string> { ["solver_order"] = order.ToString(), ["solver_type"] = solver };
        var scheduler = SchedulerRegistry.Create(name, Sdxl, overrides);
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(31, CPU);
        using var run = scheduler.Start(steps, g);
        var start = torch.randn([2, 4, 6, 10], generator: g) * run.InitNoiseSigma;
        var mine = Denoise(run, start);
        using var g2 = new torch.Generator(31, CPU);
        var start2 = torch.randn([2, 4, 6, 10], generator: g2) * run.InitNoiseSigma;
        var expected = ExpectedDpm(run.Sigmas!.ToArray(), start2, order, name.EndsWith("sde"), solver == "heun", finalZero: true, g2);
        AssertTensor.RelativeClose(mine, expected, 2e-5, "x_0");
    }

    [TestCase("edm-euler")]
    [TestCase("edm-dpm++2m")]
    public void Img2ImgNoisesToTheBeginSigma(string name)
    {
        var scheduler = SchedulerRegistry.Create(name, Sd15);
        using var scope = NewDisposeScope();
        using var run = scheduler.Start(10);
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 10, 0.6);
        Assert.That(begin, Is.EqualTo(4));
        var original = torch.randn([2, 4, 6, 10], generator: new torch.Generator(1, CPU));
        var noise = torch.randn([2, 4, 6, 10], generator: new torch.Generator(2, CPU));
        var noisy = run.AddNoise(original, noise, timesteps[0]);
        AssertTensor.MaxAbsClose(noisy, original + noise * (float)run.Sigmas![begin], 0, "noised");
        var mine = Denoise(run, noisy, timesteps);
        if (name == "edm-dpm++2m")
            AssertTensor.RelativeClose(mine, ExpectedDpm(run.Sigmas!.ToArray(), noisy, 2, false, false, true, null, begin), 2e-5, "x_0");
        Assert.That(mine.isfinite().all().item<bool>(), Is.True);
    }

    [Test]
    public void ConfigKeysAreHonouredAndBadOnesRefused()
    {
        var config = SchedulerConfig.Parse("""{"_class_name": "EDMEulerScheduler", "sigma_min": 0.01, "sigma_max": 10, "rho": 3, "final_sigmas_type": "sigma_min"}""", "edm");
        using var run = SchedulerRegistry.FromConfig(config).Start(5);
        var expected = Karras(0.01, 10, 5, 3);
        AssertClose(run.Sigmas!, [.. expected, (float)expected[^1]], 2e-6, "sigmas");
        var dpm = SchedulerConfig.Parse("""{"_class_name": "EDMDPMSolverMultistepScheduler", "final_sigmas_type": "sigma_min"}""", "edm dpm");
        using var dpmRun = SchedulerRegistry.FromConfig(dpm).Start(5);
        Assert.That(dpmRun.Sigmas![^1], Is.EqualTo(0.002f), "EDM DPM-Solver ends at config sigma_min");
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("edm-euler", null, new Dictionary<string, string> { ["sigma_schedule"] = "beta" }));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("edm-euler", null, new Dictionary<string, string> { ["prediction_type"] = "sample" }));
        Assert.Throws<InvalidDataException>(() => SchedulerRegistry.Create("edm-euler", null, new Dictionary<string, string> { ["sigma_min"] = "0" }));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("edm-dpm++2m-sde", null, new Dictionary<string, string> { ["solver_order"] = "3" }));
    }
}
