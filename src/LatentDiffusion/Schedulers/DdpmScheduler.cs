using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Ancestral sampling of the DDPM posterior q(x_{t−1} | x_t, x̂₀) (Ho et al. 2020, "Denoising Diffusion Probabilistic
/// Models"): the reference's <c>DDPMScheduler</c>. Draws fresh noise every step but the last.
/// </summary>
public sealed class DdpmScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, ("variance_type", "fixed_small"), ("clip_sample", true), ("prediction_type", "epsilon"), ("thresholding", false),
        ("dynamic_thresholding_ratio", 0.995), ("clip_sample_range", 1.0), ("sample_max_value", 1.0), ("timestep_spacing", "leading"),
        ("steps_offset", 0), ("rescale_betas_zero_snr", false),
    ];

    /// <summary>Builds DDPM from a scheduler config (missing keys take DDPM's defaults) and optional overrides.</summary>
    public DdpmScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("DDPMScheduler", Defaults, config, overrides)
    {
        // "learned" / "learned_range" need a model that predicts the variance too (twice the sample's channels, e.g.
        // DeepFloyd IF, unCLIP); Stable Diffusion's do not.
        VarianceType = ConfigReader.Choice("variance_type", "fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range")!;
    }

    internal string VarianceType { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
        => new Run(this, NoiseSchedule.SpacedTimesteps(Schedule, NumTrainTimesteps, inferenceSteps, roundLinspace: true), generator);

    private sealed class Run(DdpmScheduler s, double[] timesteps, torch.Generator? generator) : AlphaScheduleRun(s.AlphasCumprod, timesteps, generator)
    {
        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            ThrowIfDisposed();
            using var scope = torch.NewDisposeScope();
            Tensor? predictedVariance = null;
            if (s.VarianceType is "learned" or "learned_range")
                (modelOutput, predictedVariance) = DdpmLearnedVariance.Split(modelOutput, sample, s.VarianceType);
            int t = (int)timestep;
            // The previous timestep is the next entry of the schedule (the reference's previous_timestep).
            int index = IndexForTimestep(timestep);
            int prev = index == Timesteps.Count - 1 ? -1 : (int)Timesteps[index + 1];
            float a = s.AlphasCumprod[t];
            float aPrev = prev >= 0 ? s.AlphasCumprod[prev] : 1f;
            float b = 1f - a, bPrev = 1f - aPrev;
            float currentAlpha = a / aPrev, currentBeta = 1f - currentAlpha;
            var (x0, _) = NoiseSchedule.PredictOriginal(s.PredictionType, modelOutput, sample, a);
            x0 = NoiseSchedule.ClipOrThreshold(s.Schedule, x0);
            float x0Coeff = MathF.Sqrt(aPrev) * currentBeta / b;
            float sampleCoeff = MathF.Sqrt(currentAlpha) * bPrev / b;
            var prevSample = x0Coeff * x0 + sampleCoeff * sample;
            if (t > 0)
            {
                var noise = Noise(modelOutput);
                float variance = MathF.Max((1f - aPrev) / (1f - a) * (1f - a / aPrev), 1e-20f);
                if (predictedVariance is not null)
                    prevSample = prevSample + DdpmLearnedVariance.Std(s.VarianceType, predictedVariance, variance, 1f - a / aPrev) * noise;
                else
                {
                    float std = s.VarianceType switch
                    {
                        "fixed_small_log" => MathF.Exp(0.5f * MathF.Log(variance)),
                        "fixed_large" => MathF.Sqrt(1f - a / aPrev),
                        _ => MathF.Sqrt(variance),
                    };
                    prevSample = prevSample + std * noise;
                }
            }
            return prevSample.MoveToOuterDisposeScope();
        }
    }
}
