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
    public static (double[] Timesteps, float[] Sigmas) Build(JsonConfig config, float[] alphasCumprod, int steps, string finalSigma = "zero", bool configSigmaRange = false)
    {
        int T = alphasCumprod.Length;
        var t = NoiseSchedule.SpacedTimesteps(config, T, steps, roundLinspace: false);
        var full = NoiseSchedule.Sigmas(alphasCumprod);
        var logSigmas = NoiseSchedule.LogSigmas(full);
        var sig = t.Select(x => NoiseSchedule.Interp(x, full)).ToArray();
        RequireOneSpacing(config);
        double sigmaMin = sig[^1], sigmaMax = sig[0];
        if (configSigmaRange)
        {
            sigmaMin = config.Double("sigma_min", sigmaMin);
            sigmaMax = config.Double("sigma_max", sigmaMax);
        }
        if (config.Bool("use_karras_sigmas", false))
        {
            sig = NoiseSchedule.Karras(sigmaMin, sigmaMax, steps);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
        }
        else if (config.Bool("use_exponential_sigmas", false))
        {
            sig = Exponential(sigmaMin, sigmaMax, steps);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
        }
        float last = finalSigma == "sigma_min" ? MathF.Sqrt((1f - alphasCumprod[0]) / alphasCumprod[0]) : 0f;
        return ([.. t.Select(x => (double)(float)x)], [.. sig.Select(x => (float)x), last]);
    }

    /// <summary>Sigmas evenly spaced in log σ from max to min.</summary>
    public static double[] Exponential(double sigmaMin, double sigmaMax, int n)
        => NoiseSchedule.Linspace(Math.Log(sigmaMax), Math.Log(sigmaMin), n).Select(Math.Exp).ToArray();

    /// <summary>Refuses beta sigmas and more than one alternative spacing at once.</summary>
    public static void RequireOneSpacing(JsonConfig config)
    {
        config.RequireOneOf("use_beta_sigmas", "false");
        if (config.Bool("use_karras_sigmas", false) && config.Bool("use_exponential_sigmas", false))
            throw new NotSupportedException($"Config '{config.Source}': only one of use_karras_sigmas and use_exponential_sigmas can be true.");
    }

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
