using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// DPM-Solver++ (stochastic), k-diffusion's <c>sample_dpmpp_sde</c>: the reference's <c>DPMSolverSDEScheduler</c>,
/// A1111's "DPM++ SDE" ("DPM++ SDE Karras" with Karras sigmas). Each step goes σ_i → σ_{i+1} in two ancestral
/// DPM-Solver++ half-steps: to the log-midpoint σ_mid, a model evaluation there, then from σ_i again with the midpoint's
/// denoised estimate; each half-step adds noise σ_up drawn from a Brownian motion over σ (the reference uses torchsde's
/// Brownian tree, which this library does not reproduce bit for bit: see <see cref="BrownianNoise"/>). The last step
/// (σ_{i+1} = 0) is a single Euler step. Timesteps come in pairs (order 2): t(σ_i), t(σ_mid,i), ….
/// </summary>
public sealed class DpmSolverSdeScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        ("num_train_timesteps", 1000), ("beta_start", 0.00085), ("beta_end", 0.012), ("beta_schedule", "linear"), ("trained_betas", null),
        ("prediction_type", "epsilon"), .. SigmaSchedule.SigmaKeys, ("noise_sampler_seed", null), ("timestep_spacing", "linspace"), ("steps_offset", 0),
    ];

    /// <summary>Builds DPM++ SDE from a scheduler config (missing keys take its defaults) and optional overrides.</summary>
    public DpmSolverSdeScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("DPMSolverSDEScheduler", Defaults, config, overrides)
    {
        SigmaSchedule.Validate(Schedule);
        NoiseSeed = ConfigReader.NullableInt("noise_sampler_seed");
    }

    internal override string[] SupportedPredictionTypes => ["epsilon", "v_prediction"];

    /// <summary><c>noise_sampler_seed</c>: when set, the Brownian noise comes from its own generator with this seed instead of the run's.</summary>
    internal long? NoiseSeed { get; }

    /// <summary>Test hook: replaces the Brownian noise of an interval (σ, σ_next) for a sample shape, to check the deterministic part exactly.</summary>
    internal Func<float, float, long[], Tensor>? InjectedNoise { get; set; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var (t, sig) = SigmaSchedule.Build(Schedule, AlphasCumprod, inferenceSteps);
        var logSigmas = NoiseSchedule.LogSigmas(NoiseSchedule.Sigmas(AlphasCumprod));
        // Midpoints in t = −ln σ between consecutive sigmas (without the final 0), mapped to fractional timesteps.
        var timesteps = new List<double> { t[0] };
        for (int k = 1; k < t.Length; k++)
        {
            double ta = -Math.Log(sig[k - 1]), tb = -Math.Log(sig[k]);
            timesteps.Add(NoiseSchedule.SigmaToT(Math.Exp(-(ta + (tb - ta) * 0.5)), logSigmas));
            timesteps.Add(t[k]);
        }
        float[] sigmas = [sig[0], .. sig[1..^1].SelectMany(v => new[] { v, v }), sig[^1]];
        return new Run(this, [.. timesteps], sigmas, generator);
    }

    private sealed class Run(DpmSolverSdeScheduler s, double[] timesteps, float[] sigmas, torch.Generator? generator) : SigmaScheduleRun(s.Schedule, timesteps, sigmas, generator)
    {
        private Tensor? _sample;
        private float _midSigma;
        private BrownianNoise? _brownian;
        private torch.Generator? _seeded;

        public override int Order => 2;

        public override Tensor ScaleModelInput(Tensor sample, double timestep)
        {
            int i = CurrentIndex(timestep);
            return SigmaSchedule.ScaleInput(sample, _sample is null ? Sig[i] : _midSigma);
        }

        private static float SigmaOf(float t) => MathF.Exp(-t);

        private static float TOf(float sigma) => -MathF.Log(sigma);

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            bool first = _sample is null;
            float sigma = first ? Sig[i] : Sig[i - 1];
            float sigmaNext = first ? Sig[i + 1] : Sig[i];
            float t = TOf(sigma), tNext = TOf(sigmaNext);
            float tProposed = t + (tNext - t) * 0.5f;
            float sigmaInput = first ? sigma : SigmaOf(tProposed);
            var x0 = SigmaSchedule.PredictOriginal(s.PredictionType, modelOutput, sample, sigmaInput, s.ClassName);
            Tensor prev;
            if (sigmaNext == 0)
                prev = sample + (sample - x0) / sigma * (sigmaNext - sigma);
            else
            {
                if (first) tNext = tProposed;
                var from = first ? sample : _sample!;
                float sigmaFrom = SigmaOf(t), sigmaTo = SigmaOf(tNext);
                float sigmaUp = MathF.Min(sigmaTo, MathF.Sqrt(sigmaTo * sigmaTo * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo) / (sigmaFrom * sigmaFrom)));
                float sigmaDown = MathF.Sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);
                float ancestralT = TOf(sigmaDown);
                prev = SigmaOf(ancestralT) / SigmaOf(t) * from - (float)double.ExpM1(t - ancestralT) * x0;
                prev = prev + NoiseFor(SigmaOf(t), SigmaOf(tNext), sample) * sigmaUp;
                if (first)
                {
                    _sample = Keep(sample);
                    _midSigma = SigmaOf(tNext);
                }
                else
                {
                    Release(_sample);
                    _sample = null;
                }
            }
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }

        /// <summary>The Brownian increment over (σ, σ_next), normalised to unit variance, in the sample's dtype and device.</summary>
        private Tensor NoiseFor(float sigma, float sigmaNext, Tensor like)
        {
            if (s.InjectedNoise is { } inject) return inject(sigma, sigmaNext, like.shape).to(like.dtype, like.device);
            if (_brownian is null)
            {
                if (s.NoiseSeed is long seed) _seeded = new torch.Generator((ulong)seed, CPU);
                _brownian = new BrownianNoise(like.shape, _seeded ?? Generator, Keep);
            }
            return _brownian.Increment(sigma, sigmaNext).to(like.dtype, like.device);
        }
    }
}
