using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Ancestral Euler sampling (k-diffusion's <c>sample_euler_ancestral</c>): an Euler step down to σ_down, then fresh
/// noise of σ_up, drawn from the run's generator every step. The reference's <c>EulerAncestralDiscreteScheduler</c>,
/// A1111's "Euler a".
/// </summary>
public sealed class EulerAncestralDiscreteScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, ("prediction_type", "epsilon"), ("timestep_spacing", "linspace"), ("steps_offset", 0), ("rescale_betas_zero_snr", false),
    ];

    /// <summary>Builds Euler ancestral from a scheduler config (missing keys take its defaults) and optional overrides.</summary>
    public EulerAncestralDiscreteScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("EulerAncestralDiscreteScheduler", Defaults, config, overrides)
        => SigmaSchedule.Validate(Schedule);

    private protected override bool ZeroSnrPatchesLast => true;

    internal override string[] SupportedPredictionTypes => ["epsilon", "v_prediction"];

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var (timesteps, sigmas) = SigmaSchedule.Build(Schedule, AlphasCumprod, inferenceSteps);
        return new Run(this, timesteps, sigmas, generator);
    }

    private sealed class Run(EulerAncestralDiscreteScheduler s, double[] timesteps, float[] sigmas, torch.Generator? generator) : SigmaScheduleRun(s.Schedule, timesteps, sigmas, generator)
    {
        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            var x = sample.to(ScalarType.Float32);
            float sigma = Sig[i], sigmaTo = Sig[i + 1];
            var x0 = SigmaSchedule.PredictOriginal(s.PredictionType, modelOutput, x, sigma, s.ClassName);
            // Split the step into a deterministic part down to σ_down and fresh noise σ_up, σ_down² + σ_up² = σ_to².
            float sigmaUp = MathF.Sqrt(sigmaTo * sigmaTo * (sigma * sigma - sigmaTo * sigmaTo) / (sigma * sigma));
            float sigmaDown = MathF.Sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);
            var derivative = (x - x0) / sigma;
            float dt = sigmaDown - sigma;
            var prev = x + derivative * dt;
            prev = (prev + Noise(modelOutput) * sigmaUp).to(modelOutput.dtype);
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }
    }
}
