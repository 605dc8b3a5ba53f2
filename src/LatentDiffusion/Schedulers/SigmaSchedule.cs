using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// The k-diffusion view (Karras et al. 2022) shared by Euler, Euler ancestral, Heun, LMS and KDPM2: the sample is
/// x = x₀ + σ·ε, the model sees x/sqrt(σ²+1), and the schedule is a list of sigmas ending in 0.
/// </summary>
internal static class SigmaSchedule
{
    /// <summary>Keys for the alternative sigma spacings, with the reference's defaults.</summary>
    public static readonly (string Key, object? Default)[] SigmaKeys =
    [
        ("use_karras_sigmas", false), ("use_exponential_sigmas", false), ("use_beta_sigmas", false),
    ];

    /// <summary>
    /// Timesteps and sigmas for <paramref name="steps"/> steps: the model's own sigmas interpolated at the spaced
    /// timesteps, or Karras / exponential sigmas mapped back to fractional timesteps; a final sigma appended.
    /// </summary>
    public static (double[] Timesteps, float[] Sigmas) Build(NoiseScheduleConfig config, float[] alphasCumprod, int steps, string finalSigma = "zero", bool configSigmaRange = false, bool logLinear = false)
    {
        int T = alphasCumprod.Length;
        var t = NoiseSchedule.SpacedTimesteps(config, T, steps, roundLinspace: false);
        var full = NoiseSchedule.Sigmas(alphasCumprod);
        var logSigmas = NoiseSchedule.LogSigmas(full);
        var sig = logLinear ? LogLinear(full, steps) : t.Select(x => NoiseSchedule.Interp(x, full)).ToArray();
        // A class without the use_*_sigmas keys (Euler ancestral) reads them as false, whatever a carried model config says.
        double sigmaMin = sig[^1], sigmaMax = sig[0];
        if (configSigmaRange)
        {
            sigmaMin = config.SigmaMin ?? sigmaMin;
            sigmaMax = config.SigmaMax ?? sigmaMax;
        }
        // The schedule families of popular UIs (SigmaScheduleFamilies): an extension key, never set by the reference.
        string? family = Family(config);
        if (family is not null && SigmaScheduleFamilies.Custom.Contains(family))
        {
            var list = SigmaScheduleFamilies.Build(family, full, steps);
            var custom = list[..^1];
            var ct = custom.Select(x => (double)(float)NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
            return (ct, list);
        }
        if (config.UseKarrasSigmas || family == "karras")
        {
            sig = NoiseSchedule.Karras(sigmaMin, sigmaMax, steps);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
        }
        else if (config.UseExponentialSigmas || family == "exponential")
        {
            sig = Exponential(sigmaMin, sigmaMax, steps);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
        }
        else if (config.UseBetaSigmas || family == "beta")
        {
            sig = BetaSigmas.Build(sigmaMin, sigmaMax, steps);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
        }
        float last = finalSigma == "sigma_min" ? MathF.Sqrt((1f - alphasCumprod[0]) / alphasCumprod[0]) : 0f;
        return ([.. t.Select(x => (double)(float)x)], [.. sig.Select(x => (float)x), last]);
    }

    /// <summary>
    /// Euler's <c>interpolation_type = log_linear</c>: <paramref name="steps"/> + 1 sigmas evenly spaced in log σ from
    /// the model's largest to its smallest (torch float32 linspace and exp, as the reference); the timesteps stay the
    /// spaced ones, so the last step ends at σ_min rather than the appended final sigma.
    /// </summary>
    public static double[] LogLinear(float[] modelSigmas, int steps)
    {
        using var scope = torch.NewDisposeScope();
        var s = torch.linspace(MathF.Log(modelSigmas[^1]), MathF.Log(modelSigmas[0]), steps + 1, dtype: ScalarType.Float32).exp();
        return s.data<float>().ToArray().Select(v => (double)v).ToArray();
    }

    /// <summary>
    /// The config's schedule family (<see cref="NoiseScheduleConfig.ScheduleFamily"/>) normalised, or null; refuses an
    /// unknown one, and a custom family together with Karras, exponential or beta sigmas.
    /// </summary>
    /// <exception cref="NotSupportedException">An unknown family, or one that contradicts the config's sigma spacing.</exception>
    private static string? Family(NoiseScheduleConfig config)
    {
        if (config.ScheduleFamily is not { } written) return null;
        string family = SigmaScheduleFamilies.Normalise(written)
            ?? throw new NotSupportedException($"Config '{config.Source}': schedule '{written}' is not supported (supported: {string.Join(", ", SigmaScheduleFamilies.All)}).");
        if (SigmaScheduleFamilies.Custom.Contains(family) && config.AlternativeSpacing)
            throw new NotSupportedException($"Config '{config.Source}': schedule '{family}' cannot be combined with use_karras_sigmas, use_exponential_sigmas or use_beta_sigmas.");
        return family;
    }

    /// <summary>Checks, when the scheduler is built, what <see cref="Build"/> reads beyond the typed keys: the schedule family.</summary>
    /// <exception cref="NotSupportedException">An unknown family, or one that contradicts the config's sigma spacing.</exception>
    public static void Validate(NoiseScheduleConfig config) => Family(config);

    /// <summary>The EDM noise conditioning c_noise = ¼·ln σ of every sigma but the final one, in float32 (the reference's continuous timesteps).</summary>
    public static double[] ContinuousTimesteps(float[] sigmas)
    {
        using var scope = torch.NewDisposeScope();
        var t = torch.tensor(sigmas[..^1]).log() * 0.25f;
        return t.data<float>().ToArray().Select(v => (double)v).ToArray();
    }

    /// <summary>Sigmas evenly spaced in log σ from max to min.</summary>
    public static double[] Exponential(double sigmaMin, double sigmaMax, int n)
        => NoiseSchedule.Linspace(Math.Log(sigmaMax), Math.Log(sigmaMin), n).Select(Math.Exp).ToArray();

    /// <summary>The reference's init_noise_sigma: the largest sigma, or sqrt(σ_max²+1) for "leading" spacing.</summary>
    public static double InitNoiseSigma(NoiseScheduleConfig config, float[] sigmas)
    {
        float max = sigmas.Max();
        return config.TimestepSpacing is null or "linspace" or "trailing" ? max : MathF.Sqrt(max * max + 1f);
    }

    /// <summary>x̂₀ from the model output at noise level σ in the k-diffusion parametrisation (float32 coefficients).</summary>
    public static Tensor PredictOriginal(string predictionType, Tensor modelOutput, Tensor sample, float sigma, string className)
    {
        switch (predictionType)
        {
            case "epsilon":
                return sample - sigma * modelOutput;
            case "v_prediction":
            {
                float s2 = sigma * sigma + 1f;
                return modelOutput * (-sigma / MathF.Sqrt(s2)) + sample / s2;
            }
            case "sample":
                return modelOutput.alias();
            default:
                throw new NotSupportedException($"{className}: prediction_type '{predictionType}' is not supported.");
        }
    }

    /// <summary>x / sqrt(σ²+1): the input scaling that keeps the model's input at unit variance.</summary>
    public static Tensor ScaleInput(Tensor sample, float sigma) => sample / MathF.Sqrt(sigma * sigma + 1f);

    /// <summary>original + noise·σ (the reference's add_noise for sigma schedulers).</summary>
    public static Tensor AddNoise(Tensor original, Tensor noise, float sigma) => original + noise * sigma;
}
