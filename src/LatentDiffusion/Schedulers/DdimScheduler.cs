using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// DDIM (Song et al. 2020, "Denoising Diffusion Implicit Models"): the reference's <c>DDIMScheduler</c>. Deterministic
/// at <see cref="Eta"/> = 0; <c>eta</c> = 1 adds the DDPM amount of fresh noise per step.
/// </summary>
public sealed class DdimScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, ("clip_sample", true), ("set_alpha_to_one", true), ("steps_offset", 0), ("prediction_type", "epsilon"),
        ("thresholding", false), ("dynamic_thresholding_ratio", 0.995), ("clip_sample_range", 1.0), ("sample_max_value", 1.0),
        ("timestep_spacing", "leading"), ("rescale_betas_zero_snr", false),
    ];

    /// <summary>Builds DDIM from a scheduler config (missing keys take DDIM's defaults) and optional overrides.</summary>
    /// <param name="config">The model's <c>scheduler_config.json</c>, or null for the defaults.</param>
    /// <param name="overrides">Config keys to replace, values as text (e.g. <c>timestep_spacing=trailing</c>).</param>
    /// <param name="eta">The stochasticity η (0 = deterministic DDIM, 1 = DDPM-like); a step argument in the reference.</param>
    public DdimScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null, double eta = 0.0)
        : base("DDIMScheduler", Defaults, config, overrides)
    {
        if (!(eta >= 0)) throw new ArgumentOutOfRangeException(nameof(eta), eta, "eta must be non-negative.");
        Eta = eta;
        FinalAlphaCumprod = ConfigReader.Bool("set_alpha_to_one") ? 1f : AlphasCumprod[0];
    }

    /// <summary>The η of every step.</summary>
    public double Eta { get; }

    /// <summary>ᾱ used past the last step (1, or ᾱ₀ when <c>set_alpha_to_one</c> is false).</summary>
    internal float FinalAlphaCumprod { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
        => new Run(this, NoiseSchedule.SpacedTimesteps(Schedule, NumTrainTimesteps, inferenceSteps, roundLinspace: true), inferenceSteps, generator);

    private sealed class Run(DdimScheduler s, double[] timesteps, int steps, torch.Generator? generator) : AlphaScheduleRun(s.AlphasCumprod, timesteps, generator)
    {
        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            ThrowIfDisposed();
            using var scope = torch.NewDisposeScope();
            int t = (int)timestep;
            // DDIM steps back a fixed stride, whatever the spacing, as the reference does.
            int prev = t - s.NumTrainTimesteps / steps;
            float a = s.AlphasCumprod[t];
            float aPrev = prev >= 0 ? s.AlphasCumprod[prev] : s.FinalAlphaCumprod;
            var (x0, eps) = NoiseSchedule.PredictOriginal(s.PredictionType, modelOutput, sample, a);
            x0 = NoiseSchedule.ClipOrThreshold(s.Schedule, x0);
            float variance = (1f - aPrev) / (1f - a) * (1f - a / aPrev);
            float std = (float)s.Eta * MathF.Sqrt(variance);
            var prevSample = MathF.Sqrt(aPrev) * x0 + MathF.Sqrt(1f - aPrev - std * std) * eps;
            if (s.Eta > 0) prevSample = prevSample + std * Noise(modelOutput);
            return prevSample.MoveToOuterDisposeScope();
        }
    }
}
