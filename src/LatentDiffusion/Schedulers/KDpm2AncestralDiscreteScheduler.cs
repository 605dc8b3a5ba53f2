using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Ancestral DPM-Solver-2 (k-diffusion's <c>sample_dpm_2_ancestral</c>): the KDPM2 midpoint step down to σ_down, then
/// fresh noise σ_up from the run's generator. The reference's <c>KDPM2AncestralDiscreteScheduler</c>, A1111's "DPM2 a".
/// </summary>
public sealed class KDpm2AncestralDiscreteScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults = KDpm2DiscreteScheduler.Defaults;

    /// <summary>Builds KDPM2 ancestral from a scheduler config (missing keys take its defaults) and optional overrides.</summary>
    public KDpm2AncestralDiscreteScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("KDPM2AncestralDiscreteScheduler", Defaults, config, overrides)
    {
        SigmaSchedule.Validate(Schedule);
    }

    internal override string[] SupportedPredictionTypes => ["epsilon", "v_prediction"];

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var (t, sig, logSigmas) = KDpm2Math.BaseSchedule(Schedule, AlphasCumprod, inferenceSteps);
        float[] up, down, interpol;
        using (var scope = torch.NewDisposeScope())
        {
            var s = torch.tensor(sig);
            var next = s.roll(-1);
            next[-1] = torch.tensor(0f);
            var sUp = (next.pow(2) * (s.pow(2) - next.pow(2)) / s.pow(2)).pow(0.5);
            var sDown = (next.pow(2) - sUp.pow(2)).pow(0.5);
            sDown[-1] = torch.tensor(0f);
            var sInterpol = s.log().lerp(sDown.log(), 0.5).exp();
            sInterpol[TensorIndex.Slice(-2)] = torch.tensor(0f);
            up = sUp.data<float>().ToArray();
            down = sDown.data<float>().ToArray();
            interpol = sInterpol.data<float>().ToArray();
        }
        var tInterpol = interpol.Select(x => KDpm2Math.SigmaToTFloat32(x, logSigmas)).ToArray();
        var timesteps = new List<double> { t[0] };
        for (int k = 1; k < t.Length; k++) { timesteps.Add(KDpm2Math.AsScheduleDtype(tInterpol[k - 1], Schedule)); timesteps.Add(t[k]); }
        return new Run(this, [.. timesteps], KDpm2Math.Interleave(sig), KDpm2Math.Interleave(interpol), KDpm2Math.Interleave(up), KDpm2Math.Interleave(down), generator);
    }

    private sealed class Run(KDpm2AncestralDiscreteScheduler s, double[] timesteps, float[] sigmas, float[] interpol, float[] up, float[] down, torch.Generator? generator)
        : KDpm2Run(s, timesteps, sigmas, interpol, generator)
    {
        private readonly float[] _up = up, _down = down;

        public override Tensor ScaleModelInput(Tensor sample, double timestep)
        {
            int i = CurrentIndex(timestep);
            return SigmaSchedule.ScaleInput(sample, InFirstStage ? Sig[i] : Interpol[i - 1]);
        }

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            bool first = InFirstStage;
            int j = first ? i : i - 1;
            float sigma = Sig[j], sigmaInterpol = Interpol[j], sigmaUp = _up[j];
            float sigmaDown = _down[i - 1 >= 0 ? i - 1 : _down.Length - 1];
            var prev = MidpointStep(modelOutput, sample, sigma, sigmaInterpol, sigmaDown);
            // The second stage lands on σ_down; fresh noise σ_up brings it to the next sigma.
            if (!first) prev = prev + Noise(modelOutput) * sigmaUp;
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }
    }
}
