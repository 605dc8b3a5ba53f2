using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// The reference's schedule definitions, written out again in double from the papers and the reference's source
/// (numpy semantics), for parity tests that do not run the library's own schedule code.
/// </summary>
internal static class ScheduleFormulas
{
    // The copy of tiny-sd15's scheduler config (TinyConfigsTests checks it against the fixture file), so these tests run without the fixtures.
    public static JsonConfig Sd15 => TinyConfigs.Sd15Scheduler;

    public static JsonConfig Sd2 => SchedulerConfig.Load(Fixtures.PathOf("tiny-sd2v", "scheduler", "scheduler_config.json"));

    public static JsonConfig Sdxl => SchedulerConfig.Load(Fixtures.PathOf("tiny-sdxl", "scheduler", "scheduler_config.json"));

    /// <summary>σ_t = sqrt((1 − ᾱ)/ᾱ) in float32, as the reference's numpy float32 array.</summary>
    public static float[] ModelSigmas(IScheduler scheduler)
        => ((DiffusionScheduler)scheduler).AlphasCumprod.Select(a => MathF.Sqrt((1f - a) / a)).ToArray();

    /// <summary>numpy.linspace.</summary>
    public static double[] Linspace(double a, double b, int n)
        => n == 1 ? [a] : Enumerable.Range(0, n).Select(i => i == n - 1 ? b : a + i * (b - a) / (n - 1)).ToArray();

    /// <summary>The reference's _sigma_to_t: linear interpolation of the training index in (float32) log σ.</summary>
    public static double SigmaToT(double sigma, float[] modelSigmas)
    {
        var logs = modelSigmas.Select(s => MathF.Log(s)).ToArray();
        double ls = Math.Log(Math.Max(sigma, 1e-10));
        int low = 0;
        for (int i = 0; i < logs.Length; i++) if (ls >= logs[i]) low = i;
        low = Math.Min(low, logs.Length - 2);
        double w = Math.Clamp((logs[low] - ls) / (double)(logs[low] - logs[low + 1]), 0, 1);
        return (1 - w) * low + w * (low + 1);
    }

    public static double[] Exponential(double min, double max, int n) => Linspace(Math.Log(max), Math.Log(min), n).Select(Math.Exp).ToArray();

    public static double[] Karras(double min, double max, int n, double rho = 7)
        => Linspace(0, 1, n).Select(r => Math.Pow(Math.Pow(max, 1 / rho) + r * (Math.Pow(min, 1 / rho) - Math.Pow(max, 1 / rho)), rho)).ToArray();

    /// <summary>_convert_to_beta: σ_min + ppf(1 − linspace(0, 1, n))·(σ_max − σ_min), Beta(0.6, 0.6).</summary>
    public static double[] BetaSchedule(double min, double max, int n)
        => Linspace(0, 1, n).Select(r => min + BetaPpfSymmetric(1 - r, 0.6) * (max - min)).ToArray();

    /// <summary>
    /// Lower incomplete beta B(x; a, a) for x ≤ 1/2 by its power series x^a Σ (1−a)_k x^k / (k!(a+k)), which converges
    /// like 2^-k there.
    /// </summary>
    private static double IncompleteBetaHalf(double x, double a)
    {
        double sum = 0, term = 1;
        for (int k = 0; k < 200; k++)
        {
            sum += term / (a + k);
            term *= (k + 1 - a) / (k + 1) * x;
            if (Math.Abs(term) < 1e-19) break;
        }
        return Math.Pow(x, a) * sum;
    }

    /// <summary>The CDF of Beta(a, a): symmetric, so B(1; a, a) = 2·B(½; a, a) and x &gt; ½ reflects.</summary>
    public static double BetaCdfSymmetric(double x, double a)
    {
        double whole = 2 * IncompleteBetaHalf(0.5, a);
        return x <= 0.5 ? IncompleteBetaHalf(x, a) / whole : 1 - IncompleteBetaHalf(1 - x, a) / whole;
    }

    /// <summary>The quantile of Beta(a, a) by bisection of the series CDF to the last bit.</summary>
    public static double BetaPpfSymmetric(double p, double a)
    {
        if (p <= 0) return 0;
        if (p >= 1) return 1;
        double lo = 0, hi = 1;
        for (int k = 0; k < 200 && hi - lo > 0; k++)
        {
            double mid = 0.5 * (lo + hi);
            if (mid == lo || mid == hi) break;
            if (BetaCdfSymmetric(mid, a) < p) lo = mid; else hi = mid;
        }
        return 0.5 * (lo + hi);
    }

    /// <summary>The toy denoiser of the reference fixtures: tanh(input)·0.5 + 0.01·t/1000.</summary>
    public static Tensor ToyModel(Tensor input, double t) => torch.tanh(input) * 0.5 + 0.01 * t / 1000.0;

    /// <summary>Runs a whole schedule with the toy model from <paramref name="start"/> (not disposed).</summary>
    public static Tensor Denoise(ISchedulerRun run, Tensor start, IEnumerable<double>? timesteps = null)
    {
        var x = start.clone();
        foreach (var t in timesteps ?? run.Timesteps)
        {
            using var input = run.ScaleModelInput(x, t);
            using var eps = ToyModel(input, t);
            var next = run.Step(eps, t, x);
            x.Dispose();
            x = next;
        }
        return x;
    }

    /// <summary>Asserts each value agrees within a relative tolerance.</summary>
    public static void AssertClose(IReadOnlyList<double> actual, IReadOnlyList<double> expected, double relative, string what)
    {
        NUnit.Framework.Assert.That(actual, NUnit.Framework.Has.Count.EqualTo(expected.Count), $"{what}: count");
        for (int i = 0; i < expected.Count; i++)
            NUnit.Framework.Assert.That(actual[i], NUnit.Framework.Is.EqualTo(expected[i]).Within(relative * Math.Max(Math.Abs(expected[i]), 1e-30) + 1e-12), $"{what}[{i}]");
    }
}
