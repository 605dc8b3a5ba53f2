using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using static LatentDiffusion.Tests.Schedulers.ScheduleFormulas;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// DPM-Solver multistep's algorithm types: the noise-prediction DPM-Solver ("dpmsolver", "sde-dpmsolver", Lu et al.
/// 2022) and DPM++ 3M SDE (order 3, "sde-dpmsolver++"), each checked against the update rules written out here in
/// double (the reference's formulas), with the SDE noise drawn from a second generator in the run's order.
/// </summary>
[TestFixture]
public sealed class DpmSolverAlgorithmTests
{
    /// <summary>SD 1.5's scheduler config as a DPM-Solver multistep config (the from_config path of the reference pipelines).</summary>
    internal static JsonConfig Sd15As(string className)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(Sd15.Root.GetRawText())!.AsObject();
        node["_class_name"] = className;
        return SchedulerConfig.Parse(node.ToJsonString(), "SD 1.5 scheduler_config.json as " + className);
    }

    /// <summary>
    /// The reference's DPMSolverMultistepScheduler.step in double: convert the output (x̂₀ or ε̂), choose the order
    /// (warm-up, lower_order_final), apply the first/second/third-order update of the algorithm.
    /// </summary>
    internal static Tensor Expected(ISchedulerRun run, Tensor start, string algorithm, int solverOrder, bool heun, bool lowerOrderFinal, bool finalZero, torch.Generator? noise, int begin = 0)
    {
        var sig = run.Sigmas!.ToArray();
        var ts = run.Timesteps.ToArray();
        int n = ts.Length;
        bool plus = algorithm.EndsWith("++"), sde = algorithm.StartsWith("sde");
        var x = start.to(ScalarType.Float64);
        var history = new List<Tensor>();
        int warm = 0;
        double A(double s) => 1 / Math.Sqrt(s * s + 1);
        double S(double s) => s / Math.Sqrt(s * s + 1);
        double L(double s) => Math.Log(A(s)) - Math.Log(S(s));
        for (int i = begin; i < n; i++)
        {
            var eps = ToyModel(x.to(ScalarType.Float32), ts[i]).to(ScalarType.Float64);
            history.Add(plus ? (x - S(sig[i]) * eps) / A(sig[i]) : eps);
            Tensor? z = sde ? torch.randn(x.shape, dtype: ScalarType.Float32, generator: noise).to(ScalarType.Float64) : null;
            bool lof = i == n - 1 && ((lowerOrderFinal && n < 15) || finalZero);
            bool los = i == n - 2 && lowerOrderFinal && n < 15;
            int order = solverOrder == 1 || warm < 1 || lof ? 1 : solverOrder == 2 || warm < 2 || los ? 2 : 3;
            double at = A(sig[i + 1]), st = S(sig[i + 1]), lt = L(sig[i + 1]);
            double a0 = A(sig[i]), s0 = S(sig[i]), h = lt - L(sig[i]);
            var m0 = history[^1];
            Tensor d1 = torch.zeros_like(x), d2 = torch.zeros_like(x);
            if (order >= 2)
            {
                double r0 = (L(sig[i]) - L(sig[i - 1])) / h;
                var d10 = (m0 - history[^2]) / r0;
                d1 = d10;
                if (order == 3)
                {
                    double r1 = (L(sig[i - 1]) - L(sig[i - 2])) / h;
                    var d11 = (history[^2] - history[^3]) / r1;
                    d1 = d10 + r0 / (r0 + r1) * (d10 - d11);
                    d2 = (d10 - d11) / (r0 + r1);
                }
            }
            double em = Math.Exp(-h) - 1, ep = Math.Exp(h) - 1, e2 = 1 - Math.Exp(-2 * h);
            Tensor next;
            switch (algorithm)
            {
                case "dpmsolver++":
                    next = st / s0 * x - at * em * m0;
                    if (order == 2) next = heun ? next + at * (em / h + 1) * d1 : next - 0.5 * at * em * d1;
                    if (order == 3) next = next + at * (em / h + 1) * d1 - at * ((Math.Exp(-h) - 1 + h) / (h * h) - 0.5) * d2;
                    break;
                case "sde-dpmsolver++":
                    next = st / s0 * Math.Exp(-h) * x + at * e2 * m0 + st * Math.Sqrt(1 - Math.Exp(-2 * h)) * z!;
                    if (order == 2) next = heun ? next + at * (e2 / (-2 * h) + 1) * d1 : next + 0.5 * at * e2 * d1;
                    if (order == 3) next = next + at * (e2 / (-2 * h) + 1) * d1 + at * ((1 - Math.Exp(-2 * h) - 2 * h) / (4 * h * h) - 0.5) * d2;
                    break;
                case "dpmsolver":
                    next = at / a0 * x - st * ep * m0;
                    if (order == 2) next = heun ? next - st * (ep / h - 1) * d1 : next - 0.5 * st * ep * d1;
                    if (order == 3) next = next - st * (ep / h - 1) * d1 - st * ((Math.Exp(h) - 1 - h) / (h * h) - 0.5) * d2;
                    break;
                default: // sde-dpmsolver
                    next = at / a0 * x - 2 * st * ep * m0 + st * Math.Sqrt(Math.Exp(2 * h) - 1) * z!;
                    if (order == 2) next = heun ? next - 2 * st * (ep / h - 1) * d1 : next - st * ep * d1;
                    break;
            }
            x = next;
            if (warm < solverOrder) warm++;
        }
        return x;
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var steps in new[] { 1, 5, 12, 20 })
        {
            foreach (var order in new[] { 1, 2, 3 })
                foreach (var solver in new[] { "midpoint", "heun" })
                    yield return new TestCaseData("dpmsolver", order, solver, steps);
            foreach (var order in new[] { 1, 2 })
                foreach (var solver in new[] { "midpoint", "heun" })
                    yield return new TestCaseData("sde-dpmsolver", order, solver, steps);
            yield return new TestCaseData("sde-dpmsolver++", 3, "midpoint", steps);
            yield return new TestCaseData("dpmsolver++", 3, "midpoint", steps);
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void AlgorithmMatchesItsUpdateRules(string algorithm, int order, string solverType, int steps)
    {
        var overrides = new Dictionary<string, string>
        {
            ["algorithm_type"] = algorithm, ["solver_order"] = order.ToString(), ["solver_type"] = solverType,
            ["final_sigmas_type"] = "sigma_min", ["use_karras_sigmas"] = "true",
        };
        var scheduler = SchedulerRegistry.FromConfig(Sd15As("DPMSolverMultistepScheduler"), overrides);
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(21, CPU);
        using var run = scheduler.Start(steps, g);
        var start = torch.randn([2, 4, 6, 10], generator: g) * run.InitNoiseSigma;
        var mine = Denoise(run, start);
        using var g2 = new torch.Generator(21, CPU);
        var start2 = torch.randn([2, 4, 6, 10], generator: g2) * run.InitNoiseSigma;
        var expected = Expected(run, start2, algorithm, order, solverType == "heun", lowerOrderFinal: true, finalZero: false, g2);
        AssertTensor.RelativeClose(mine, expected, 2e-5, $"{algorithm} order {order} {solverType}, {steps} steps");
    }

    [TestCase("dpm++3m-sde", false, 10)]
    [TestCase("dpm++3m-sde", false, 25)]
    [TestCase("dpm++3m-sde-karras", true, 10)]
    [TestCase("dpm++3m-sde-karras", true, 25)]
    [TestCase("dpm++2m-sde", false, 18)]
    public void ThreeMSdeNamesAreOrderThreeSdeDpmSolverPlusPlus(string name, bool karras, int steps)
    {
        var scheduler = SchedulerRegistry.Create(name, Sd15);
        Assert.That(scheduler.ClassName, Is.EqualTo("DPMSolverMultistepScheduler"));
        Assert.That(scheduler.Config.String("algorithm_type", null), Is.EqualTo("sde-dpmsolver++"));
        Assert.That(scheduler.Config.Int("solver_order", 0), Is.EqualTo(name.StartsWith("dpm++3m") ? 3 : 2));
        Assert.That(scheduler.Config.Bool("use_karras_sigmas", !karras), Is.EqualTo(karras));
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(4, CPU);
        using var run = scheduler.Start(steps, g);
        var start = torch.randn([2, 4, 6, 10], generator: g);
        var mine = Denoise(run, start);
        using var g2 = new torch.Generator(4, CPU);
        var start2 = torch.randn([2, 4, 6, 10], generator: g2);
        var expected = Expected(run, start2, "sde-dpmsolver++", scheduler.Config.Int("solver_order", 0), false, lowerOrderFinal: true, finalZero: true, g2);
        AssertTensor.RelativeClose(mine, expected, 2e-5, name);
    }

    [TestCase("dpmsolver")]
    [TestCase("sde-dpmsolver")]
    [TestCase("sde-dpmsolver++")]
    public void Img2ImgStartsAtTheBeginIndexWithAnEmptyHistory(string algorithm)
    {
        var overrides = new Dictionary<string, string> { ["algorithm_type"] = algorithm, ["final_sigmas_type"] = "sigma_min" };
        var scheduler = SchedulerRegistry.Create("dpm++2m", Sd15, overrides);
        using var scope = NewDisposeScope();
        using var g = new torch.Generator(8, CPU);
        using var run = scheduler.Start(10, g);
        var (timesteps, begin) = Img2ImgSchedule.ForStrength(run, 10, 0.7);
        Assert.That(begin, Is.EqualTo(3));
        var original = torch.randn([2, 4, 6, 10], generator: new torch.Generator(1, CPU));
        var noise = torch.randn([2, 4, 6, 10], generator: new torch.Generator(2, CPU));
        var noisy = run.AddNoise(original, noise, timesteps[0]);
        double s = run.Sigmas![begin];
        AssertTensor.RelativeClose(noisy, original / Math.Sqrt(s * s + 1) + noise * (s / Math.Sqrt(s * s + 1)), 1e-6, "noised to sigma[begin]");
        var mine = Denoise(run, noisy, timesteps);
        using var g2 = new torch.Generator(8, CPU);
        var expected = Expected(run, noisy, algorithm, 2, false, lowerOrderFinal: true, finalZero: false, g2, begin);
        AssertTensor.RelativeClose(mine, expected, 2e-5, "img2img");
    }

    [Test]
    public void NoisePredictionAlgorithmsNeedASigmaMinEnd()
    {
        foreach (var algorithm in new[] { "dpmsolver", "sde-dpmsolver" })
        {
            var e = Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("dpm++2m", Sd15, new Dictionary<string, string> { ["algorithm_type"] = algorithm }))!;
            Assert.That(e.Message, Does.Contain("final_sigmas_type").And.Contain("sigma_min").And.Contain(algorithm));
        }
        var third = Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("dpm++2m", Sd15, new Dictionary<string, string>
        {
            ["algorithm_type"] = "sde-dpmsolver", ["final_sigmas_type"] = "sigma_min", ["solver_order"] = "3",
        }))!;
        Assert.That(third.Message, Does.Contain("sde-dpmsolver").And.Contain("solver_order"));
        Assert.Throws<NotSupportedException>(() => SchedulerRegistry.Create("dpm++2m", Sd15, new Dictionary<string, string> { ["algorithm_type"] = "dpmsolver+++" }));
    }
}
