using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// DPM-Solver-2 in sigma (k-diffusion's <c>sample_dpm_2</c>): an Euler half-step to the log-midpoint sigma, a model
/// evaluation there, then the full step with that slope. The reference's <c>KDPM2DiscreteScheduler</c>, A1111's "DPM2".
/// Two evaluations per step, so timesteps come in pairs (order 2), the second at the midpoint's fractional timestep.
/// </summary>
public sealed class KDpm2DiscreteScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. StableDiffusionRangeBetaKeys, .. SigmaSchedule.SigmaKeys, ("prediction_type", "epsilon"), ("timestep_spacing", "linspace"), ("steps_offset", 0),
    ];

    /// <summary>Builds KDPM2 from a scheduler config (missing keys take its defaults) and optional overrides.</summary>
    public KDpm2DiscreteScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("KDPM2DiscreteScheduler", Defaults, config, overrides)
    {
        SigmaSchedule.Validate(Schedule);
    }

    internal override string[] SupportedPredictionTypes => ["epsilon", "v_prediction"];

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var (t, sig, logSigmas) = KDpm2Math.BaseSchedule(Schedule, AlphasCumprod, inferenceSteps);
        // Midpoints in log sigma between each sigma and the previous one.
        float[] interpol;
        using (var scope = torch.NewDisposeScope())
        {
            var s = torch.tensor(sig);
            interpol = s.log().lerp(s.roll(1).log(), 0.5).exp().data<float>().ToArray();
        }
        var tInterpol = interpol.Select(x => KDpm2Math.SigmaToTFloat32(x, logSigmas)).ToArray();
        var timesteps = new List<double> { t[0] };
        for (int k = 1; k < t.Length; k++) { timesteps.Add(KDpm2Math.AsScheduleDtype(tInterpol[k], Schedule)); timesteps.Add(t[k]); }
        return new Run(this, [.. timesteps], KDpm2Math.Interleave(sig), KDpm2Math.Interleave(interpol));
    }

    private sealed class Run(KDpm2DiscreteScheduler s, double[] timesteps, float[] sigmas, float[] interpol) : KDpm2Run(s, timesteps, sigmas, interpol, null)
    {
        public override Tensor ScaleModelInput(Tensor sample, double timestep)
        {
            int i = CurrentIndex(timestep);
            return SigmaSchedule.ScaleInput(sample, InFirstStage ? Sig[i] : Interpol[i]);
        }

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            bool first = InFirstStage;
            float sigma = first ? Sig[i] : Sig[i - 1];
            float sigmaInterpol = first ? Interpol[i + 1] : Interpol[i];
            float sigmaNext = first ? Sig[i + 1] : Sig[i];
            var prev = MidpointStep(modelOutput, sample, sigma, sigmaInterpol, sigmaNext);
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }
    }
}

/// <summary>
/// The two-stage step shared by KDPM2 and KDPM2 ancestral: an Euler half-step to the midpoint sigma, then, after the
/// model has been evaluated there, the full step from the kept sample with the midpoint's slope.
/// </summary>
internal abstract class KDpm2Run(DiffusionScheduler scheduler, double[] timesteps, float[] sigmas, float[] interpol, torch.Generator? generator)
    : SigmaScheduleRun(scheduler.Schedule, timesteps, sigmas, generator)
{
    private Tensor? _sample;

    /// <summary>The midpoint sigmas, paired per evaluation like the sigmas.</summary>
    protected float[] Interpol { get; } = interpol;

    /// <summary>Whether the next evaluation is the first of a step (no sample kept yet).</summary>
    protected bool InFirstStage => _sample is null;

    public override int Order => 2;

    /// <summary>
    /// First stage: from <paramref name="sigma"/> to <paramref name="sigmaInterpol"/> with the slope there, keeping the
    /// sample; second stage: from the kept sample to <paramref name="sigmaTo"/> with the slope at the midpoint.
    /// </summary>
    protected Tensor MidpointStep(Tensor modelOutput, Tensor sample, float sigma, float sigmaInterpol, float sigmaTo)
    {
        bool first = _sample is null;
        var x0 = SigmaSchedule.PredictOriginal(scheduler.PredictionType, modelOutput, sample, first ? sigma : sigmaInterpol, scheduler.ClassName);
        if (first)
        {
            var slope = (sample - x0) / sigma;
            _sample = Keep(sample);
            return sample + slope * (sigmaInterpol - sigma);
        }
        var derivative = (sample - x0) / sigmaInterpol;
        var prev = _sample! + derivative * (sigmaTo - sigma);
        Release(_sample);
        _sample = null;
        return prev;
    }
}

/// <summary>Schedule pieces shared by KDPM2 and KDPM2 ancestral.</summary>
internal static class KDpm2Math
{
    /// <summary>Timesteps, sigmas with the final 0, and float32 log sigmas of the model.</summary>
    public static (double[] Timesteps, float[] Sigmas, float[] LogSigmas) BaseSchedule(NoiseScheduleConfig config, float[] alphasCumprod, int steps)
    {
        var (t, sig) = SigmaSchedule.Build(config, alphasCumprod, steps);
        if (config.UseKarrasSigmas) t = [.. t.Select(v => Math.Round(v))];
        return (t, sig, NoiseSchedule.LogSigmas(NoiseSchedule.Sigmas(alphasCumprod)));
    }

    /// <summary>[s0, s1, s1, s2, s2, …, s_last, s_last, s_last]: the reference's pairing of per-step values.</summary>
    public static float[] Interleave(float[] v) => [v[0], .. v.Skip(1).SelectMany(x => new[] { x, x }), v[^1]];

    /// <summary>
    /// σ → t for the midpoint sigmas: the reference passes torch float32 tensors through its numpy helper here, so the
    /// interpolation runs in float32.
    /// </summary>
    public static float SigmaToTFloat32(float sigma, float[] logSigmas)
    {
        if (float.IsNaN(sigma)) return float.NaN;
        float logSigma = MathF.Log(MathF.Max(sigma, 1e-10f));
        int low = 0;
        for (int i = 0; i < logSigmas.Length; i++) if (logSigma - logSigmas[i] >= 0) low = i;
        low = Math.Min(low, logSigmas.Length - 2);
        float lo = logSigmas[low], hi = logSigmas[low + 1];
        float w = Math.Clamp((lo - logSigma) / (lo - hi), 0f, 1f);
        return (1f - w) * low + w * (low + 1);
    }

    /// <summary>The midpoint timesteps take the dtype of the main ones: float32, or float64 after Karras rounding.</summary>
    public static double AsScheduleDtype(float t, NoiseScheduleConfig config) => config.UseKarrasSigmas ? t : (double)(float)t;
}
