using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Trajectory Consistency Distillation sampling (Zheng et al. 2024, "Trajectory Consistency Distillation"): the
/// reference's <c>TCDScheduler</c>, for TCD-distilled models or a TCD LoRA at 2-8 steps. Each step predicts x̂₀ and ε̂,
/// jumps to the intermediate timestep s = ⌊(1 − γ)·t_prev⌋ and, with γ (the step's <c>eta</c>) &gt; 0, re-noises from s
/// to t_prev with fresh noise ("strategic stochastic sampling"); γ = 0 is deterministic. Timesteps as LCM's: a
/// subset of the <c>original_inference_steps</c> distillation schedule.
/// </summary>
public sealed class TcdScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        ("num_train_timesteps", 1000), ("beta_start", 0.00085), ("beta_end", 0.012), ("beta_schedule", "scaled_linear"), ("trained_betas", null),
        ("original_inference_steps", 50), ("clip_sample", false), ("clip_sample_range", 1.0), ("set_alpha_to_one", true), ("steps_offset", 0),
        ("prediction_type", "epsilon"), ("thresholding", false), ("dynamic_thresholding_ratio", 0.995), ("sample_max_value", 1.0),
        ("timestep_spacing", "leading"), ("timestep_scaling", 10.0), ("rescale_betas_zero_snr", false),
    ];

    /// <summary>The reference step's default γ.</summary>
    public const double DefaultEta = 0.3;

    /// <summary>Builds TCD from a scheduler config (missing keys take TCD's defaults) and optional overrides.</summary>
    /// <param name="config">The model's <c>scheduler_config.json</c>, or null for the defaults.</param>
    /// <param name="overrides">Config keys to replace, values as text.</param>
    /// <param name="eta">γ in [0, 1], the stochasticity of every step (a step argument in the reference, default 0.3).</param>
    public TcdScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null, double eta = DefaultEta)
        : base("TCDScheduler", Defaults, config, overrides)
    {
        if (!(eta >= 0 && eta <= 1)) throw new ArgumentOutOfRangeException(nameof(eta), eta, "TCDScheduler: eta (gamma) must be in [0, 1].");
        Eta = eta;
        OriginalSteps = ConsistencySchedule.OriginalSteps(ConfigReader, NumTrainTimesteps);
    }

    /// <summary>γ of every step.</summary>
    public double Eta { get; }

    /// <summary>The distillation schedule length; inference uses a subset of its timesteps.</summary>
    internal int OriginalSteps { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var timesteps = ConsistencySchedule.Timesteps(NumTrainTimesteps, OriginalSteps, inferenceSteps, "TCDScheduler");
        return new Run(this, timesteps, generator);
    }

    private sealed class Run(TcdScheduler s, double[] timesteps, torch.Generator? generator) : AlphaScheduleRun(s.AlphasCumprod, timesteps, generator)
    {
        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            int t = (int)timestep;
            int prevT = i + 1 < Timesteps.Count ? (int)Timesteps[i + 1] : 0;
            // floor((1 − γ)·t_prev) in float32, as torch multiplies a Python float by an int64 tensor.
            int sT = (int)MathF.Floor((float)(1 - s.Eta) * prevT);
            float a = s.AlphasCumprod[t], aPrev = s.AlphasCumprod[prevT], aS = s.AlphasCumprod[sT];
            // The reference does not clip or threshold here, whatever the config says.
            var (x0, eps) = NoiseSchedule.PredictOriginal(s.PredictionType, modelOutput, sample, a);
            var noised = MathF.Sqrt(aS) * x0 + MathF.Sqrt(1f - aS) * eps;
            Tensor prev;
            if (s.Eta > 0 && i != Timesteps.Count - 1)
            {
                float ratio = aPrev / aS;
                prev = MathF.Sqrt(ratio) * noised + MathF.Sqrt(1f - ratio) * Noise(noised);
            }
            else
                prev = noised;
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }
    }
}
