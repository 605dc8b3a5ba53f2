using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Ancestral sampling with DPM-Solver++(2S) second-order steps: k-diffusion's <c>sample_dpmpp_2s_ancestral</c>
/// (η = 1, s_noise = 1), A1111's "DPM++ 2S a". The reference library has no class for it. Each step splits σ_i → σ_{i+1}
/// into a deterministic part down to σ_down and fresh noise σ_up (σ_down² + σ_up² = σ_{i+1}²); the deterministic part
/// is a singlestep DPM-Solver++(2S) update through the log-midpoint σ_mid = sqrt(σ_i·σ_down), which costs a second model
/// evaluation. The last step (σ_down = 0) is a single Euler step. Timesteps therefore come in pairs (order 2):
/// t(σ_i), t(σ_mid,i), …, with the midpoint's fractional training timestep found as the reference's other sigma
/// samplers do. Schedule options as Euler's (Karras, exponential, beta sigmas, spacing, zero-SNR).
/// </summary>
public sealed class DpmSolverPlusPlus2SAncestralScheduler : DiffusionScheduler
{
    /// <summary>This library's class name for it (there is no reference class).</summary>
    public const string Name = "DPMSolverPlusPlus2SAncestralScheduler";

    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, ("prediction_type", "epsilon"), .. SigmaSchedule.SigmaKeys, ("timestep_spacing", "linspace"), ("steps_offset", 0),
        ("rescale_betas_zero_snr", false),
    ];

    /// <summary>Builds DPM++ 2S ancestral from a scheduler config (missing keys take the defaults above) and optional overrides.</summary>
    public DpmSolverPlusPlus2SAncestralScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base(Name, Defaults, config, overrides)
        => SigmaSchedule.Validate(Schedule);

    private protected override bool ZeroSnrPatchesLast => true;

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var (t, sig) = SigmaSchedule.Build(Schedule, AlphasCumprod, inferenceSteps);
        var logSigmas = NoiseSchedule.LogSigmas(NoiseSchedule.Sigmas(AlphasCumprod));
        var timesteps = new List<double>();
        var sigmas = new List<float>();
        var plan = new List<(float Sigma, float Next, float Down, float Up, float Mid)>();
        for (int i = 0; i < t.Length; i++)
        {
            var (down, up) = AncestralStep(sig[i], sig[i + 1]);
            timesteps.Add(t[i]);
            sigmas.Add(sig[i]);
            float mid = 0;
            if (down > 0)
            {
                // σ at λ halfway between σ_i and σ_down: exp(−(t + h/2)) with t = −ln σ.
                mid = (float)Math.Sqrt((double)sig[i] * down);
                timesteps.Add((float)NoiseSchedule.SigmaToT(mid, logSigmas));
                sigmas.Add(mid);
            }
            plan.Add((sig[i], sig[i + 1], down, up, mid));
        }
        sigmas.Add(sig[^1]);
        return new Run(this, [.. timesteps], [.. sigmas], [.. plan], generator);
    }

    /// <summary>k-diffusion's get_ancestral_step with η = 1: σ_up = min(σ_to, sqrt(σ_to²(σ_from² − σ_to²)/σ_from²)), σ_down = sqrt(σ_to² − σ_up²).</summary>
    internal static (float Down, float Up) AncestralStep(float from, float to)
    {
        double f = from, tt = to;
        double up = Math.Min(tt, Math.Sqrt(tt * tt * (f * f - tt * tt) / (f * f)));
        double down = Math.Sqrt(tt * tt - up * up);
        return ((float)down, (float)up);
    }

    private sealed class Run(DpmSolverPlusPlus2SAncestralScheduler s, double[] timesteps, float[] sigmas, (float Sigma, float Next, float Down, float Up, float Mid)[] plan, torch.Generator? generator)
        : SigmaScheduleRun(s.Schedule, timesteps, sigmas, generator)
    {
        private Tensor? _sample;
        private int _step;

        public override int Order => 2;

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            if (_sample is null) _step = StepOf(i);
            var (sigma, next, down, up, mid) = plan[_step];
            Tensor prev;
            if (_sample is null)
            {
                var x = sample.to(ScalarType.Float32);
                var denoised = SigmaSchedule.PredictOriginal(s.PredictionType, modelOutput, x, sigma, s.ClassName);
                if (down == 0)
                {
                    // Euler to σ_down = 0, as k-diffusion's last step.
                    prev = x + (x - denoised) / sigma * (down - sigma);
                    if (next > 0) prev = prev + Noise(modelOutput) * up;
                }
                else
                {
                    double h = Math.Log(sigma) - Math.Log(down);
                    prev = (float)(mid / (double)sigma) * x - (float)double.ExpM1(-h / 2) * denoised;
                    _sample = Keep(x);
                }
            }
            else
            {
                var x2 = sample.to(ScalarType.Float32);
                var denoised2 = SigmaSchedule.PredictOriginal(s.PredictionType, modelOutput, x2, mid, s.ClassName);
                double h = Math.Log(sigma) - Math.Log(down);
                prev = (float)(down / (double)sigma) * _sample - (float)double.ExpM1(-h) * denoised2;
                if (next > 0) prev = prev + Noise(modelOutput) * up;
                Release(_sample);
                _sample = null;
            }
            StepIndex = i + 1;
            return prev.to(modelOutput.dtype).MoveToOuterDisposeScope();
        }

        /// <summary>The step (sigma pair) whose first evaluation is at schedule position <paramref name="index"/>.</summary>
        private int StepOf(int index)
        {
            int position = 0;
            for (int k = 0; k < plan.Length; k++)
            {
                if (position >= index) return k;
                position += plan[k].Down > 0 ? 2 : 1;
            }
            return plan.Length - 1;
        }
    }
}
