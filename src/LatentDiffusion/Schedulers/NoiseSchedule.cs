using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// The math every scheduler shares: betas and ᾱ (alphas_cumprod), timestep spacing, sigma schedules (the model's own,
/// Karras), sigma→timestep inversion and dynamic thresholding. Where the reference computes in torch float32 this
/// computes in float32 (with libtorch itself where the reference calls torch), and where it computes in numpy float64
/// this uses double, so schedules agree with the reference to the last bit or nearly.
/// </summary>
internal static class NoiseSchedule
{
    /// <summary>The beta schedules the library implements.</summary>
    public static readonly string[] BetaSchedules = ["linear", "scaled_linear", "squaredcos_cap_v2"];

    /// <summary>The timestep spacings the library implements.</summary>
    public static readonly string[] Spacings = ["linspace", "leading", "trailing"];

    /// <summary>β_t for t = 0 … num_train_timesteps−1, float32 as the reference keeps them.</summary>
    public static float[] Betas(NoiseScheduleConfig config, int trainSteps)
    {
        if (config.TrainedBetas is { } trained)
        {
            if (trained.Length != trainSteps)
                throw new InvalidDataException($"Config '{config.Source}': 'trained_betas' has {trained.Length} values, expected num_train_timesteps = {trainSteps}.");
            return trained.Select(b => (float)b).ToArray();
        }
        double start = config.BetaStart, end = config.BetaEnd;
        switch (config.BetaSchedule)
        {
            case "linear":
            {
                using var b = torch.linspace(start, end, trainSteps, dtype: ScalarType.Float32);
                return b.data<float>().ToArray();
            }
            case "scaled_linear":
            {
                // Linear in sqrt(β), squared in float32: the Stable Diffusion schedule.
                using var root = torch.linspace(Math.Sqrt(start), Math.Sqrt(end), trainSteps, dtype: ScalarType.Float32);
                using var b = root.pow(2);
                return b.data<float>().ToArray();
            }
            default:
                return CosineBetas(trainSteps);
        }
    }

    /// <summary>The "squaredcos_cap_v2" schedule (Nichol &amp; Dhariwal): betas from the cosine ᾱ(t), capped at 0.999.</summary>
    private static float[] CosineBetas(int n)
    {
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        var betas = new float[n];
        for (int i = 0; i < n; i++)
            betas[i] = (float)Math.Min(1 - AlphaBar((i + 1) / (double)n) / AlphaBar(i / (double)n), 0.999);
        return betas;
    }

    /// <summary>
    /// Rescales betas so the last step has zero SNR ("Common Diffusion Noise Schedules and Sample Steps are Flawed",
    /// Lin et al. 2023), in float32 with libtorch like the reference.
    /// </summary>
    public static float[] RescaleZeroTerminalSnr(float[] betas)
    {
        using var scope = torch.NewDisposeScope();
        var b = torch.tensor(betas);
        var alphasBarSqrt = (1.0 - b).cumprod(0).sqrt();
        var first = alphasBarSqrt[0].clone();
        var last = alphasBarSqrt[-1].clone();
        alphasBarSqrt = (alphasBarSqrt - last) * (first / (first - last));
        var alphasBar = alphasBarSqrt.pow(2);
        var alphas = torch.cat([alphasBar[..1], alphasBar[1..] / alphasBar[..^1]]);
        return (1 - alphas).data<float>().ToArray();
    }

    /// <summary>ᾱ_t = Π(1 − β), float32 through libtorch's cumprod (which accumulates in double on CPU, like the reference's).</summary>
    public static float[] AlphasCumprod(float[] betas)
    {
        using var scope = torch.NewDisposeScope();
        var alphas = 1.0 - torch.tensor(betas);
        return alphas.cumprod(0).data<float>().ToArray();
    }

    /// <summary>Betas (rescaled when <c>rescale_betas_zero_snr</c>) and ᾱ from a config.</summary>
    public static float[] AlphasCumprodFromConfig(NoiseScheduleConfig config, bool zeroSnrPatchesLast)
    {
        var betas = Betas(config, config.NumTrainTimesteps);
        bool rescale = config.RescaleBetasZeroSnr;
        if (rescale) betas = RescaleZeroTerminalSnr(betas);
        var ac = AlphasCumprod(betas);
        // Sigma-based schedulers cannot use ᾱ = 0 (infinite sigma); the reference nudges it to 2^-24.
        if (rescale && zeroSnrPatchesLast) ac[^1] = (float)Math.Pow(2, -24);
        return ac;
    }

    /// <summary>numpy.linspace(start, stop, num): i·step + start, the last value exactly <paramref name="stop"/>.</summary>
    public static double[] Linspace(double start, double stop, int num)
    {
        var y = new double[num];
        if (num == 1) { y[0] = start; return y; }
        double step = (stop - start) / (num - 1);
        for (int i = 0; i < num; i++) y[i] = i * step + start;
        y[num - 1] = stop;
        return y;
    }

    /// <summary>numpy.arange(start, stop, step) for a negative float step.</summary>
    public static double[] ArangeDown(double start, double stop, double step)
    {
        int n = (int)Math.Ceiling((stop - start) / step);
        var y = new double[Math.Max(n, 0)];
        for (int i = 0; i < y.Length; i++) y[i] = start + i * step;
        return y;
    }

    /// <summary>
    /// Inference timesteps, descending, from the config's <c>timestep_spacing</c> (and <c>steps_offset</c> for
    /// "leading"). <paramref name="roundLinspace"/>: the DDPM-family rounds linspace values to integers; the
    /// sigma-family keeps them fractional (float32).
    /// </summary>
    public static double[] SpacedTimesteps(NoiseScheduleConfig config, int trainSteps, int steps, bool roundLinspace)
    {
        string spacing = config.TimestepSpacing ?? throw new InvalidOperationException($"Config '{config.Source}': the class has no timestep_spacing.");
        int offset = config.StepsOffset;
        double[] t;
        switch (spacing)
        {
            case "linspace":
                t = Enumerable.Reverse(Linspace(0, trainSteps - 1, steps)).ToArray();
                t = roundLinspace ? t.Select(v => Math.Round(v)).ToArray() : t.Select(v => (double)(float)v).ToArray();
                break;
            case "leading":
            {
                int ratio = trainSteps / steps;
                t = Enumerable.Range(0, steps).Reverse().Select(i => (double)(i * ratio + offset)).ToArray();
                break;
            }
            default:
                t = ArangeDown(trainSteps, 0, -(trainSteps / (double)steps)).Select(v => Math.Round(v) - 1).ToArray();
                break;
        }
        return t;
    }

    /// <summary>σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) in float32, ascending with t.</summary>
    public static float[] Sigmas(float[] alphasCumprod)
        => alphasCumprod.Select(a => MathF.Sqrt((1f - a) / a)).ToArray();

    /// <summary>log σ in float32 (numpy's log of a float32 array).</summary>
    public static float[] LogSigmas(float[] sigmas) => sigmas.Select(v => MathF.Log(v)).ToArray();

    /// <summary>numpy.interp(x, arange(len(fp)), fp) in double.</summary>
    public static double Interp(double x, float[] fp)
    {
        if (x <= 0) return fp[0];
        if (x >= fp.Length - 1) return fp[^1];
        int j = (int)Math.Floor(x);
        if (j == x) return fp[j];
        double slope = ((double)fp[j + 1] - fp[j]) / 1.0;
        return slope * (x - j) + fp[j];
    }

    /// <summary>
    /// The Karras et al. (2022) schedule: <paramref name="n"/> sigmas evenly spaced in σ^(1/ρ), ρ = 7, from
    /// <paramref name="sigmaMax"/> down to <paramref name="sigmaMin"/>.
    /// </summary>
    public static double[] Karras(double sigmaMin, double sigmaMax, int n)
    {
        const double rho = 7.0;
        double minInv = Math.Pow(sigmaMin, 1 / rho), maxInv = Math.Pow(sigmaMax, 1 / rho);
        return Linspace(0, 1, n).Select(r => Math.Pow(maxInv + r * (minInv - maxInv), rho)).ToArray();
    }

    /// <summary>The fractional training timestep whose σ is <paramref name="sigma"/>: linear interpolation in log σ (the reference's <c>_sigma_to_t</c>).</summary>
    public static double SigmaToT(double sigma, float[] logSigmas)
    {
        double logSigma = Math.Log(Math.Max(sigma, 1e-10));
        int low = 0;
        for (int i = 0; i < logSigmas.Length; i++) if (logSigma - logSigmas[i] >= 0) low = i;
        low = Math.Min(low, logSigmas.Length - 2);
        float lo = logSigmas[low], hi = logSigmas[low + 1];
        // numpy subtracts the two float32 values in float32, the rest in double.
        double w = (lo - logSigma) / (double)(lo - hi);
        w = Math.Clamp(w, 0, 1);
        return (1 - w) * low + w * (low + 1);
    }

    /// <summary>
    /// Dynamic thresholding (Imagen, Saharia et al. 2022): per sample, clamp to the <c>ratio</c> quantile of |x|
    /// (at least 1, at most <c>maxValue</c>) and divide by it.
    /// </summary>
    public static Tensor Threshold(Tensor sample, double ratio, double maxValue)
    {
        using var scope = torch.NewDisposeScope();
        var dtype = sample.dtype;
        var x = dtype is ScalarType.Float32 or ScalarType.Float64 ? sample : sample.to(ScalarType.Float32);
        var shape = x.shape;
        x = x.reshape(shape[0], -1);
        // The reference passes q as a Python float, which libtorch turns into a scalar of the input's dtype; a float64
        // q tensor with float32 input is refused by libtorch.
        using var q = torch.tensor(ratio, dtype: x.dtype);
        var s = torch.quantile(x.abs(), q, dim: 1).clamp(1, maxValue).unsqueeze(1);
        x = torch.minimum(torch.maximum(x, -s), s) / s;
        return x.reshape(shape).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// x̂₀ and ε̂ from the model output at ᾱ_t for the DDPM-style schedulers (float32 coefficients, as the reference's
    /// 0-dim float32 tensors).
    /// </summary>
    public static (Tensor Original, Tensor Epsilon) PredictOriginal(string predictionType, Tensor modelOutput, Tensor sample, float alphaProd)
    {
        float sqrtA = MathF.Sqrt(alphaProd), sqrtB = MathF.Sqrt(1f - alphaProd);
        switch (predictionType)
        {
            case "epsilon":
                return ((sample - sqrtB * modelOutput) / sqrtA, modelOutput.alias());
            case "sample":
                return (modelOutput.alias(), (sample - sqrtA * modelOutput) / sqrtB);
            case "v_prediction":
                return (sqrtA * sample - sqrtB * modelOutput, sqrtA * modelOutput + sqrtB * sample);
            default:
                throw new NotSupportedException($"prediction_type '{predictionType}' is not supported (supported: epsilon, v_prediction, sample).");
        }
    }

    /// <summary>Dynamic thresholding when <c>thresholding</c>, else clipping to ±<c>clip_sample_range</c> when <c>clip_sample</c>.</summary>
    public static Tensor ClipOrThreshold(NoiseScheduleConfig config, Tensor original)
    {
        if (config.Thresholding)
            return Threshold(original, config.DynamicThresholdingRatio, config.SampleMaxValue);
        if (config.ClipSample)
        {
            double r = config.ClipSampleRange;
            return original.clamp(-r, r);
        }
        return original;
    }

    /// <summary>Broadcasts per-batch coefficients over the trailing dimensions of <paramref name="like"/>.</summary>
    public static Tensor Broadcast(Tensor coeff, Tensor like)
    {
        var c = coeff.flatten();
        while (c.dim() < like.dim()) c = c.unsqueeze(-1);
        return c;
    }
}
