using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// The exponential-integrator view shared by DPM-Solver(++), UniPC and DEIS (Lu et al. 2022): x_t = α_t·x₀ + σ_t·ε
/// with α_t = 1/sqrt(σ²+1), σ_t = σ·α_t and the half-log-SNR λ = log α_t − log σ_t; integer timesteps, float32
/// coefficients as the reference's 0-dim tensors.
/// </summary>
internal static class DpmSolverMath
{
    /// <summary>The solver keys all four exponential-integrator schedulers share, with the reference's defaults (after the beta keys).</summary>
    public static readonly (string Key, object? Default)[] SolverKeys =
    [
        ("solver_order", 2), ("prediction_type", "epsilon"), ("thresholding", false), ("dynamic_thresholding_ratio", 0.995), ("sample_max_value", 1.0),
    ];

    /// <summary><c>solver_order</c>, refused outside 1 … <paramref name="max"/> (no upper bound when null).</summary>
    public static int SolverOrder(SchedulerConfigReader reader, int? max)
    {
        int order = reader.Int("solver_order");
        if (max is int m ? order < 1 || order > m : order < 1)
        {
            string supported = max is int top ? $"supported: {string.Join(", ", Enumerable.Range(1, top))}" : "at least 1";
            throw new NotSupportedException($"Config '{reader.Source}': 'solver_order' = {order} is not supported ({supported}).");
        }
        return order;
    }

    /// <summary>Refuses the flow-matching settings none of these solvers implement.</summary>
    public static void RefuseFlowSigmas(SchedulerConfigReader config)
    {
        config.RequireOneOf("use_flow_sigmas", "false");
        config.RequireOneOf("use_dynamic_shifting", "false");
    }

    /// <summary>Validates the DPM-Solver++ settings (multistep and singlestep) and reads whether it is the SDE variant and Heun-type.</summary>
    public static (bool Sde, bool Heun) DpmSolverPlusPlusSettings(SchedulerConfigReader config)
    {
        string? algorithm = config.Choice("algorithm_type", "dpmsolver++", "sde-dpmsolver++");
        string? solver = config.Choice("solver_type", "midpoint", "heun");
        config.RequireOneOf("variance_type", "null");
        RefuseFlowSigmas(config);
        return (algorithm == "sde-dpmsolver++", solver == "heun");
    }

    /// <summary>α_t, σ_t and λ_t of a k-diffusion sigma (σ = 0 gives λ = +∞, which the solvers' final first-order step tolerates).</summary>
    public static (float Alpha, float Sigma, float Lambda) At(float sigma)
    {
        float alpha = 1f / MathF.Sqrt(sigma * sigma + 1f);
        float sigmaT = sigma * alpha;
        return (alpha, sigmaT, MathF.Log(alpha) - MathF.Log(sigmaT));
    }

    /// <summary>
    /// Descending integer timesteps: n+1 evenly spaced points with the last (0) dropped, for "linspace" and "leading";
    /// a stride of T/n from <paramref name="last"/> for "trailing". <paramref name="last"/> is T less any λ clipping.
    /// </summary>
    public static double[] Timesteps(string spacing, int trainSteps, int last, int n, int stepsOffset)
    {
        switch (spacing)
        {
            case "linspace":
                return NoiseSchedule.Linspace(0, last - 1, n + 1).Select(v => Math.Round(v)).Reverse().Take(n).ToArray();
            case "leading":
            {
                int ratio = last / (n + 1);
                return Enumerable.Range(0, n + 1).Reverse().Take(n).Select(i => (double)(i * ratio + stepsOffset)).ToArray();
            }
            case "trailing":
                return NoiseSchedule.ArangeDown(last, 0, -(trainSteps / (double)n)).Select(v => Math.Round(v) - 1).ToArray();
            default:
                throw new NotSupportedException($"timestep_spacing '{spacing}' is not supported (supported: {string.Join(", ", NoiseSchedule.Spacings)}).");
        }
    }

    /// <summary>The config's <c>timestep_spacing</c> and <c>steps_offset</c> applied by <see cref="Timesteps(string, int, int, int, int)"/>.</summary>
    public static double[] Timesteps(NoiseScheduleConfig config, int trainSteps, int last, int n)
        => Timesteps(config.TimestepSpacing ?? throw new InvalidOperationException($"Config '{config.Source}': the class has no timestep_spacing."), trainSteps, last, n, config.StepsOffset);

    /// <summary>T less the timesteps <paramref name="lambdaMinClipped"/> (<c>lambda_min_clipped</c>) cuts off: where the schedule starts.</summary>
    public static int LastTimestep(double lambdaMinClipped, float[] alphasCumprod)
        => alphasCumprod.Length - ClippedCount(alphasCumprod, lambdaMinClipped);

    /// <summary>How many training timesteps at the noisy end <c>lambda_min_clipped</c> cuts off (the reference's searchsorted on flipped λ).</summary>
    public static int ClippedCount(float[] alphasCumprod, double lambdaMinClipped)
    {
        if (double.IsNegativeInfinity(lambdaMinClipped)) return 0;
        int count = 0;
        for (int i = alphasCumprod.Length - 1; i >= 0; i--)
        {
            float lambda = MathF.Log(MathF.Sqrt(alphasCumprod[i])) - MathF.Log(MathF.Sqrt(1f - alphasCumprod[i]));
            if (lambda < lambdaMinClipped) count++;
            else break;
        }
        return count;
    }

    /// <summary>
    /// Sigmas for integer <paramref name="timesteps"/>: interpolated from the model's own, or Karras / exponential
    /// sigmas (then the timesteps are recomputed from them, rounded for Karras when <paramref name="roundKarras"/>).
    /// Returns the timesteps truncated to integers as the reference's int64 cast does, and the sigmas without the final one.
    /// </summary>
    public static (double[] Timesteps, double[] Sigmas) Sigmas(NoiseScheduleConfig config, float[] alphasCumprod, double[] timesteps, bool roundKarras, bool configSigmaRange)
    {
        int n = timesteps.Length;
        var full = NoiseSchedule.Sigmas(alphasCumprod);
        var logSigmas = NoiseSchedule.LogSigmas(full);
        double sigmaMin = full[0], sigmaMax = full[^1];
        if (configSigmaRange)
        {
            sigmaMin = config.SigmaMin ?? sigmaMin;
            sigmaMax = config.SigmaMax ?? sigmaMax;
        }
        double[] sig, t = timesteps;
        if (config.UseKarrasSigmas)
        {
            sig = NoiseSchedule.Karras(sigmaMin, sigmaMax, n);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).Select(x => roundKarras ? Math.Round(x) : x).ToArray();
        }
        else if (config.UseExponentialSigmas)
        {
            sig = SigmaSchedule.Exponential(sigmaMin, sigmaMax, n);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
        }
        else if (config.UseBetaSigmas)
        {
            sig = BetaSigmas.Build(sigmaMin, sigmaMax, n);
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).ToArray();
        }
        else
            sig = timesteps.Select(x => NoiseSchedule.Interp(x, full)).ToArray();
        return ([.. t.Select(v => Math.Truncate(v))], sig);
    }

    /// <summary>σ at training step 0, the smallest the model knows (final_sigmas_type "sigma_min").</summary>
    public static float SigmaMin(float[] alphasCumprod) => MathF.Sqrt((1f - alphasCumprod[0]) / alphasCumprod[0]);

    /// <summary>DEIS's and UniPC's "sigma_min" end: the last Karras/exponential sigma, else the model's smallest.</summary>
    public static float ScheduleSigmaMin(NoiseScheduleConfig config, float[] alphasCumprod, double[] sigmas)
    {
        return config.AlternativeSpacing ? (float)sigmas[^1] : SigmaMin(alphasCumprod);
    }

    /// <summary>The run's float32 sigmas: the schedule and its final sigma.</summary>
    public static float[] WithFinal(double[] sigmas, float final) => [.. sigmas.Select(x => (float)x), final];

    /// <summary>The data prediction x̂₀ = (x − σ_t·ε)/α_t (or from v, or the sample itself), optionally thresholded.</summary>
    public static Tensor DataPrediction(NoiseScheduleConfig config, string predictionType, Tensor modelOutput, Tensor sample, float sigma, string className)
    {
        var (alpha, sigmaT, _) = At(sigma);
        var x0 = predictionType switch
        {
            "epsilon" => (sample - sigmaT * modelOutput) / alpha,
            "sample" => modelOutput.alias(),
            "v_prediction" => alpha * sample - sigmaT * modelOutput,
            _ => throw new NotSupportedException($"{className}: prediction_type '{predictionType}' is not supported."),
        };
        return config.Thresholding
            ? NoiseSchedule.Threshold(x0, config.DynamicThresholdingRatio, config.SampleMaxValue)
            : x0;
    }

    /// <summary>The noise prediction ε̂ (UniPC with predict_x0 = false; the reference does not threshold it).</summary>
    public static Tensor NoisePrediction(string predictionType, Tensor modelOutput, Tensor sample, float sigma, string className)
    {
        var (alpha, sigmaT, _) = At(sigma);
        return predictionType switch
        {
            "epsilon" => modelOutput.alias(),
            "sample" => (sample - alpha * modelOutput) / sigmaT,
            "v_prediction" => alpha * modelOutput + sigmaT * sample,
            _ => throw new NotSupportedException($"{className}: prediction_type '{predictionType}' is not supported."),
        };
    }

    /// <summary>
    /// The first-order DPM-Solver++ update from σ_s to σ_t (h = λ_t − λ_s) with data prediction <paramref name="d0"/>;
    /// with <paramref name="noise"/> the SDE variant (DPM-Solver++ SDE), which re-injects fresh noise.
    /// </summary>
    public static Tensor FirstOrderUpdate(Tensor x, Tensor d0, float alphaT, float sigmaT, float sigmaS, float h, Tensor? noise)
    {
        if (noise is null)
            return sigmaT / sigmaS * x - alphaT * (MathF.Exp(-h) - 1f) * d0;
        return sigmaT / sigmaS * MathF.Exp(-h) * x + alphaT * (1f - MathF.Exp(-2f * h)) * d0 + sigmaT * MathF.Sqrt(1f - MathF.Exp(-2f * h)) * noise;
    }

    /// <summary>
    /// The second-order DPM-Solver++ update: <paramref name="d0"/> the data prediction at the step's start, <paramref name="d1"/>
    /// its first divided difference in λ (scaled by h); midpoint or Heun weighting of d1; SDE variant with <paramref name="noise"/>.
    /// </summary>
    public static Tensor SecondOrderUpdate(Tensor x, Tensor d0, Tensor d1, float alphaT, float sigmaT, float sigmaS, float h, bool heun, Tensor? noise)
    {
        if (noise is null)
        {
            float em1 = MathF.Exp(-h) - 1f;
            return heun
                ? sigmaT / sigmaS * x - alphaT * em1 * d0 + alphaT * (em1 / h + 1f) * d1
                : sigmaT / sigmaS * x - alphaT * em1 * d0 - 0.5f * (alphaT * em1) * d1;
        }
        float e2 = 1f - MathF.Exp(-2f * h);
        var acc = sigmaT / sigmaS * MathF.Exp(-h) * x + alphaT * e2 * d0;
        acc = heun ? acc + alphaT * (e2 / (-2f * h) + 1f) * d1 : acc + 0.5f * (alphaT * e2) * d1;
        return acc + sigmaT * MathF.Sqrt(1f - MathF.Exp(-2f * h)) * noise;
    }

    /// <summary>
    /// The third-order DPM-Solver++ update (Taylor form): <paramref name="d1"/> and <paramref name="d2"/> the first and
    /// second divided differences; SDE variant with <paramref name="noise"/>.
    /// </summary>
    public static Tensor ThirdOrderUpdate(Tensor x, Tensor d0, Tensor d1, Tensor d2, float alphaT, float sigmaT, float sigmaS, float h, Tensor? noise)
    {
        if (noise is null)
        {
            float em1 = MathF.Exp(-h) - 1f;
            return sigmaT / sigmaS * x - alphaT * em1 * d0 + alphaT * (em1 / h + 1f) * d1 - alphaT * ((MathF.Exp(-h) - 1f + h) / (h * h) - 0.5f) * d2;
        }
        float e2 = 1f - MathF.Exp(-2f * h);
        return sigmaT / sigmaS * MathF.Exp(-h) * x + alphaT * e2 * d0 + alphaT * (e2 / (-2f * h) + 1f) * d1
            + alphaT * ((1f - MathF.Exp(-2f * h) - 2f * h) / ((2f * h) * (2f * h)) - 0.5f) * d2 + sigmaT * MathF.Sqrt(1f - MathF.Exp(-2f * h)) * noise;
    }

    /// <summary>alpha_t·x + sigma_t·noise at a sigma (the reference's add_noise for these schedulers).</summary>
    public static Tensor AddNoise(Tensor original, Tensor noise, float sigma)
    {
        var (alpha, sigmaT, _) = At(sigma);
        return alpha * original + sigmaT * noise;
    }
}
