using LatentDiffusion.Formats;
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
    public static (double[] Timesteps, float[] Sigmas) Build(JsonConfig config, float[] alphasCumprod, int steps, string finalSigma = "zero", bool configSigmaRange = false, bool logLinear = false, bool hasSpacingKeys = true)
    {
        int T = alphasCumprod.Length;
        var t = NoiseSchedule.SpacedTimesteps(config, T, steps, roundLinspace: false);
        var full = NoiseSchedule.Sigmas(alphasCumprod);
        var logSigmas = NoiseSchedule.LogSigmas(full);
        var sig = logLinear ? LogLinear(full, steps) : t.Select(x => NoiseSchedule.Interp(x, full)).ToArray();
        // A class without the use_*_sigmas keys (Euler ancestral) ignores them when a model config carries them along.
        if (!hasSpacingKeys) config = WithoutSpacingKeys(config);
        RequireOneSpacing(config);
        double sigmaMin = sig[^1], sigmaMax = sig[0];
        if (configSigmaRange)
        {
            sigmaMin = config.Double("sigma_min", sigmaMin);
            sigmaMax = config.Double("sigma_max", sigmaMax);
        }
        // The schedule families of popular UIs (SigmaScheduleFamilies): an extension key, never set by the reference.
        string? family = config.String(SigmaScheduleFamilies.Key, null);
        if (family is not null)
            family = SigmaScheduleFamilies.Normalise(family)
                ?? throw new NotSupportedException($"Config '{config.Source}': schedule '{family}' is not supported (supported: {string.Join(", ", SigmaScheduleFamilies.All)}).");
        if (family is not null && SigmaScheduleFamilies.Custom.Contains(family))
        {
            if (AlternativeSpacing(config))
                throw new NotSupportedException($"Config '{config.Source}': schedule '{family}' cannot be combined with use_karras_sigmas, use_exponential_sigmas or use_beta_sigmas.");
            var list = SigmaScheduleFamilies.Build(family, full, steps);
            var custom = list[..^1];
            var ct = custom.Select(x => (double)(float)NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
            return (ct, list);
        }
        if (config.Bool("use_karras_sigmas", false) || family == "karras")
        {
            sig = NoiseSchedule.Karras(sigmaMin, sigmaMax, steps);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
        }
        else if (config.Bool("use_exponential_sigmas", false) || family == "exponential")
        {
            sig = Exponential(sigmaMin, sigmaMax, steps);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
        }
        else if (config.Bool("use_beta_sigmas", false) || family == "beta")
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

    /// <summary>The config without the three use_*_sigmas keys (as the reference's classes that do not have them).</summary>
    private static JsonConfig WithoutSpacingKeys(JsonConfig config)
    {
        if (!SigmaKeys.Any(k => config.Has(k.Key))) return config;
        var node = System.Text.Json.Nodes.JsonNode.Parse(config.Root.GetRawText())!.AsObject();
        foreach (var (key, _) in SigmaKeys) node.Remove(key);
        using var doc = System.Text.Json.JsonDocument.Parse(node.ToJsonString());
        return new JsonConfig(doc.RootElement, config.Source);
    }

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

    /// <summary>Refuses more than one alternative spacing at once (as the reference does).</summary>
    public static void RequireOneSpacing(JsonConfig config)
    {
        int chosen = SigmaKeys.Count(k => config.Bool(k.Key, false));
        if (chosen > 1)
            throw new NotSupportedException($"Config '{config.Source}': only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas can be true.");
    }

    /// <summary>Whether the config asks for Karras, exponential or beta sigmas.</summary>
    public static bool AlternativeSpacing(JsonConfig config) => SigmaKeys.Any(k => config.Bool(k.Key, false));

    /// <summary>Refuses an unknown <c>timestep_spacing</c> and unsupported sigma spacings (<see cref="RequireOneSpacing"/>).</summary>
    public static void RequireSpacings(JsonConfig config)
    {
        config.RequireOneOf("timestep_spacing", NoiseSchedule.Spacings);
        RequireOneSpacing(config);
    }

    /// <summary>The reference's init_noise_sigma: the largest sigma, or sqrt(σ_max²+1) for "leading" spacing.</summary>
    public static double InitNoiseSigma(JsonConfig config, float[] sigmas)
    {
        float max = sigmas.Max();
        return config.String("timestep_spacing", "linspace") is "linspace" or "trailing" ? max : MathF.Sqrt(max * max + 1f);
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
