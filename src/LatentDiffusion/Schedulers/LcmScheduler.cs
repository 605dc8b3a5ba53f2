using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Latent Consistency Model sampling (Luo et al. 2023): each step maps straight to a denoised estimate through the
/// consistency boundary condition, then re-noises to the next timestep with fresh noise. The reference's
/// <c>LCMScheduler</c>; meant for LCM-distilled models (or an LCM LoRA) at 2-8 steps.
/// </summary>
public sealed class LcmScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        ("num_train_timesteps", 1000), ("beta_start", 0.00085), ("beta_end", 0.012), ("beta_schedule", "scaled_linear"), ("trained_betas", null),
        ("original_inference_steps", 50), ("clip_sample", false), ("clip_sample_range", 1.0), ("set_alpha_to_one", true), ("steps_offset", 0),
        ("prediction_type", "epsilon"), ("thresholding", false), ("dynamic_thresholding_ratio", 0.995), ("sample_max_value", 1.0),
        ("timestep_spacing", "leading"), ("timestep_scaling", 10.0), ("rescale_betas_zero_snr", false),
    ];

    /// <summary>Builds LCM from a scheduler config (missing keys take LCM's defaults) and optional overrides.</summary>
    public LcmScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("LCMScheduler", Defaults, config, overrides)
    {
        FinalAlphaCumprod = ConfigReader.Bool("set_alpha_to_one") ? 1f : AlphasCumprod[0];
        OriginalSteps = ConsistencySchedule.OriginalSteps(ConfigReader, NumTrainTimesteps);
        TimestepScaling = ConfigReader.Double("timestep_scaling");
    }

    internal float FinalAlphaCumprod { get; }

    /// <summary>The distillation schedule length; inference uses a subset of its timesteps.</summary>
    internal int OriginalSteps { get; }

    /// <summary><c>timestep_scaling</c>: the factor on the timestep in the boundary-condition coefficients.</summary>
    internal double TimestepScaling { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var timesteps = ConsistencySchedule.Timesteps(NumTrainTimesteps, OriginalSteps, inferenceSteps, "LCMScheduler");
        return new Run(this, timesteps, generator);
    }

    private sealed class Run(LcmScheduler s, double[] timesteps, torch.Generator? generator) : AlphaScheduleRun(s.AlphasCumprod, timesteps, generator)
    {
        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            int t = (int)timestep;
            int prevT = i + 1 < Timesteps.Count ? (int)Timesteps[i + 1] : t;
            float a = s.AlphasCumprod[t];
            float aPrev = prevT >= 0 ? s.AlphasCumprod[prevT] : s.FinalAlphaCumprod;
            // Consistency-model boundary condition (σ_data = 0.5), in float32 like the reference.
            float scaled = t * (float)s.TimestepScaling;
            float cSkip = 0.25f / (scaled * scaled + 0.25f);
            float cOut = scaled / MathF.Sqrt(scaled * scaled + 0.25f);
            var (x0, _) = NoiseSchedule.PredictOriginal(s.PredictionType, modelOutput, sample, a);
            x0 = NoiseSchedule.ClipOrThreshold(s.Schedule, x0);
            var denoised = cOut * x0 + cSkip * sample;
            var prev = i != Timesteps.Count - 1
                ? MathF.Sqrt(aPrev) * denoised + MathF.Sqrt(1f - aPrev) * Noise(denoised)
                : denoised;
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }
    }
}
