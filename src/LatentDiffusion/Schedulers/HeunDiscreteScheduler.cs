using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Heun's second-order method in sigma (Karras et al. 2022, Algorithm 1): the reference's <c>HeunDiscreteScheduler</c>,
/// A1111's "Heun". Every step but the last takes two model evaluations, so the timesteps come in pairs (order 2).
/// </summary>
public sealed class HeunDiscreteScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. StableDiffusionRangeBetaKeys, ("prediction_type", "epsilon"), .. SigmaSchedule.SigmaKeys, ("clip_sample", false), ("clip_sample_range", 1.0),
        ("timestep_spacing", "linspace"), ("steps_offset", 0),
    ];

    /// <summary>Builds Heun from a scheduler config (missing keys take Heun's defaults) and optional overrides.</summary>
    public HeunDiscreteScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("HeunDiscreteScheduler", Defaults, config, overrides)
    {
        SigmaSchedule.Validate(Schedule);
    }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var (t, sig) = SigmaSchedule.Build(Schedule, AlphasCumprod, inferenceSteps);
        // Each interior timestep/sigma is visited twice: once for the Euler predictor, once for the corrector.
        double[] timesteps = [t[0], .. t.Skip(1).SelectMany(v => new[] { v, v })];
        float[] sigmas = [sig[0], .. sig[1..^1].SelectMany(v => new[] { v, v }), sig[^1]];
        return new Run(this, timesteps, sigmas);
    }

    private sealed class Run(HeunDiscreteScheduler s, double[] timesteps, float[] sigmas) : SigmaScheduleRun(s.Schedule, timesteps, sigmas, null)
    {
        private Tensor? _prevDerivative;
        private Tensor? _sample;
        private float? _dt;

        public override int Order => 2;

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            bool first = _dt is null;
            float sigma = first ? Sig[i] : Sig[i - 1];
            float sigmaNext = first ? Sig[i + 1] : Sig[i];
            var x0 = SigmaSchedule.PredictOriginal(s.PredictionType, modelOutput, sample, first ? sigma : sigmaNext, s.ClassName);
            if (s.Schedule.ClipSample)
            {
                double r = s.Schedule.ClipSampleRange;
                x0 = x0.clamp(-r, r);
            }
            Tensor prev;
            if (first)
            {
                var derivative = (sample - x0) / sigma;
                float dt = sigmaNext - sigma;
                _prevDerivative = Keep(derivative);
                _sample = Keep(sample);
                _dt = dt;
                prev = sample + derivative * dt;
            }
            else
            {
                var derivative = (_prevDerivative! + (sample - x0) / sigmaNext) / 2;
                prev = _sample! + derivative * _dt!.Value;
                Release(_prevDerivative);
                Release(_sample);
                _prevDerivative = _sample = null;
                _dt = null;
            }
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }
    }
}
