using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Euler's method on the probability-flow ODE in sigma (Karras et al. 2022, Algorithm 2 without churn): the
/// reference's <c>EulerDiscreteScheduler</c>, A1111's "Euler" (and "Euler Karras" with <c>use_karras_sigmas</c>).
/// </summary>
public sealed class EulerDiscreteScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, ("prediction_type", "epsilon"), ("interpolation_type", "linear"), .. SigmaSchedule.SigmaKeys,
        ("sigma_min", null), ("sigma_max", null), ("timestep_spacing", "linspace"), ("timestep_type", "discrete"),
        ("steps_offset", 0), ("rescale_betas_zero_snr", false), ("final_sigmas_type", "zero"),
    ];

    /// <summary>Builds Euler from a scheduler config (missing keys take Euler's defaults) and optional overrides.</summary>
    public EulerDiscreteScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("EulerDiscreteScheduler", Defaults, config, overrides)
    {
        LogLinear = ConfigReader.Choice("interpolation_type", "linear", "log_linear") == "log_linear";
        ContinuousTimesteps = ConfigReader.Choice("timestep_type", "discrete", "continuous") == "continuous" && PredictionType == "v_prediction";
        SigmaSchedule.Validate(Schedule);
    }

    private protected override bool ZeroSnrPatchesLast => true;

    /// <summary><c>interpolation_type = log_linear</c>: sigmas evenly spaced in log σ.</summary>
    internal bool LogLinear { get; }

    /// <summary>
    /// <c>timestep_type = continuous</c> with v-prediction: the model is conditioned on c_noise = ¼·ln σ (the EDM
    /// preconditioning, e.g. Playground v2.5), not on a training timestep. The reference ignores it for other prediction types.
    /// </summary>
    internal override bool ContinuousTimesteps { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var (timesteps, sigmas) = SigmaSchedule.Build(Schedule, AlphasCumprod, inferenceSteps, Schedule.FinalSigmasType, configSigmaRange: true, logLinear: LogLinear);
        if (ContinuousTimesteps) timesteps = SigmaSchedule.ContinuousTimesteps(sigmas);
        return new Run(this, timesteps, sigmas, generator);
    }

    private sealed class Run(EulerDiscreteScheduler s, double[] timesteps, float[] sigmas, torch.Generator? generator) : SigmaScheduleRun(s.Schedule, timesteps, sigmas, generator)
    {
        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            var x = sample.to(ScalarType.Float32);
            float sigma = Sig[i];
            var x0 = SigmaSchedule.PredictOriginal(s.PredictionType, modelOutput, x, sigma, s.ClassName);
            var derivative = (x - x0) / sigma;
            float dt = Sig[i + 1] - sigma;
            var prev = (x + derivative * dt).to(modelOutput.dtype);
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }
    }
}
