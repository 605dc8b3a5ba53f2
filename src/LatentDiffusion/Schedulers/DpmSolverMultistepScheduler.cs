using System.Text.Json.Nodes;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
/// Models"): the reference's <c>DPMSolverMultistepScheduler</c>. A1111's "DPM++ 2M" (with Karras sigmas "DPM++ 2M
/// Karras"), and with <c>algorithm_type = sde-dpmsolver++</c> "DPM++ 2M SDE" (order 3: "DPM++ 3M SDE"), which draws
/// noise every step. The deprecated noise-prediction forms <c>dpmsolver</c> and <c>sde-dpmsolver</c> are supported too.
/// </summary>
public sealed class DpmSolverMultistepScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, .. DpmSolverMath.SolverKeys, ("algorithm_type", "dpmsolver++"), ("solver_type", "midpoint"), ("lower_order_final", true),
        ("euler_at_final", false), .. SigmaSchedule.SigmaKeys, ("use_lu_lambdas", false), ("use_flow_sigmas", false),
        ("flow_shift", 1.0), ("final_sigmas_type", "zero"), ("lambda_min_clipped", double.NegativeInfinity), ("variance_type", null),
        ("timestep_spacing", "linspace"), ("steps_offset", 0), ("rescale_betas_zero_snr", false), ("use_dynamic_shifting", false),
        ("time_shift_type", "exponential"),
    ];

    /// <summary>Builds DPM-Solver++ multistep from a scheduler config (missing keys take its defaults) and optional overrides.</summary>
    public DpmSolverMultistepScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("DPMSolverMultistepScheduler", Defaults, config, overrides)
    {
        var r = ConfigReader;
        string algorithm = r.Choice("algorithm_type", "dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver")!;
        NoisePrediction = DpmSolverNoisePrediction.Applies(algorithm);
        (Sde, Heun) = NoisePrediction ? MultistepNoiseSettings(r, Schedule, algorithm) : DpmSolverMath.DpmSolverPlusPlusSettings(r);
        SolverOrder = DpmSolverMath.SolverOrder(r, 3);
        if (algorithm == "sde-dpmsolver" && SolverOrder == 3)
            throw new NotSupportedException($"Config '{Config.Source}': algorithm_type 'sde-dpmsolver' has no third-order update (solver_order 1 or 2; the reference fails at its first third-order step).");
        UseLuLambdas = r.Bool("use_lu_lambdas");
        if (UseLuLambdas && (Schedule.UseKarrasSigmas || Schedule.UseExponentialSigmas))
            throw new NotSupportedException($"Config '{Config.Source}': use_lu_lambdas cannot be combined with use_karras_sigmas or use_exponential_sigmas.");
        LowerOrderFinal = r.Bool("lower_order_final");
        EulerAtFinal = r.Bool("euler_at_final");
        LambdaMinClipped = r.Double("lambda_min_clipped", allowInfinite: true);
    }

    private protected override bool ZeroSnrPatchesLast => true;

    private protected override void AdjustConfig(JsonObject config) => RemapForeignSolver(config);

    /// <summary><c>use_lu_lambdas</c>: sigmas evenly spaced in λ.</summary>
    internal bool UseLuLambdas { get; }

    /// <summary><c>lower_order_final</c>: first/second order at the last steps of short runs.</summary>
    internal bool LowerOrderFinal { get; }

    /// <summary><c>euler_at_final</c>: a first-order last step.</summary>
    internal bool EulerAtFinal { get; }

    /// <summary><c>lambda_min_clipped</c>: the smallest λ the schedule keeps (−∞: all).</summary>
    internal double LambdaMinClipped { get; }

    /// <summary>As the reference's register_to_config: DEIS/UniPC settings carried over by from_config become their DPM-Solver++ equivalents.</summary>
    internal static void RemapForeignSolver(JsonObject config)
    {
        if (config["algorithm_type"]?.GetValue<string>() == "deis") config["algorithm_type"] = "dpmsolver++";
        if (config["solver_type"]?.GetValue<string>() is "logrho" or "bh1" or "bh2") config["solver_type"] = "midpoint";
    }

    /// <summary>
    /// Validates the deprecated noise-prediction algorithms "dpmsolver" and "sde-dpmsolver": as in the reference they
    /// cannot end at σ = 0 (ε̂ is undefined there), so they need <c>final_sigmas_type = sigma_min</c>.
    /// </summary>
    private static (bool Sde, bool Heun) MultistepNoiseSettings(SchedulerConfigReader config, NoiseScheduleConfig schedule, string algorithm)
    {
        string? solver = config.Choice("solver_type", "midpoint", "heun");
        config.RequireOneOf("variance_type", "null");
        DpmSolverMath.RefuseFlowSigmas(config);
        if (schedule.FinalSigmasType == "zero")
            throw new NotSupportedException($"Config '{config.Source}': final_sigmas_type 'zero' is not supported for algorithm_type '{algorithm}' (set final_sigmas_type to 'sigma_min', as the reference requires).");
        return (algorithm == "sde-dpmsolver", solver == "heun");
    }

    /// <summary>Whether the solver integrates the noise prediction (algorithm_type "dpmsolver" / "sde-dpmsolver").</summary>
    internal bool NoisePrediction { get; }

    internal int SolverOrder { get; }

    internal bool Sde { get; }

    internal bool Heun { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        int T = NumTrainTimesteps;
        var t = DpmSolverMath.Timesteps(Schedule, T, DpmSolverMath.LastTimestep(LambdaMinClipped, AlphasCumprod), inferenceSteps);
        bool cosine = Schedule.BetaSchedule == "squaredcos_cap_v2";
        double[] sig;
        if (UseLuLambdas)
        {
            // Evenly spaced in log σ between the model's extremes (the reference's _convert_to_lu on log σ).
            var logSigmas = NoiseSchedule.LogSigmas(NoiseSchedule.Sigmas(AlphasCumprod));
            var lambdas = NoiseSchedule.Linspace(logSigmas[^1], logSigmas[0], inferenceSteps);
            sig = lambdas.Select(v => Math.Exp(v)).ToArray();
            t = sig.Select(x => NoiseSchedule.SigmaToT(x, logSigmas)).Select(x => cosine ? x : Math.Round(x)).Select(v => Math.Truncate(v)).ToArray();
        }
        else
            (t, sig) = DpmSolverMath.Sigmas(Schedule, AlphasCumprod, t, roundKarras: !cosine, configSigmaRange: false);
        float final = Schedule.FinalSigmasType == "sigma_min" ? DpmSolverMath.SigmaMin(AlphasCumprod) : 0f;
        return new Run(this, t, DpmSolverMath.WithFinal(sig, final), generator);
    }

    private sealed class Run(DpmSolverMultistepScheduler s, double[] timesteps, float[] sigmas, torch.Generator? generator) : ExponentialIntegratorRun(timesteps, sigmas, s.SolverOrder, generator)
    {

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            int n = Timesteps.Count;
            bool lowerOrderFinal = i == n - 1 && (s.EulerAtFinal || (s.LowerOrderFinal && n < 15) || s.Schedule.FinalSigmasType == "zero");
            bool lowerOrderSecond = i == n - 2 && s.LowerOrderFinal && n < 15;
            var x0 = s.NoisePrediction
                ? DpmSolverNoisePrediction.Convert(s.Schedule, s.PredictionType, modelOutput, sample, Sig[i], s.ClassName)
                : DpmSolverMath.DataPrediction(s.Schedule, s.PredictionType, modelOutput, sample, Sig[i], s.ClassName);
            PushModelOutput(x0);
            var x = sample.to(ScalarType.Float32);
            Tensor? noise = s.Sde ? Noise(x) : null;
            Tensor prev;
            if (s.SolverOrder == 1 || LowerOrderNums < 1 || lowerOrderFinal)
                prev = FirstOrder(i, ModelOutputs[^1]!, x, noise);
            else if (s.SolverOrder == 2 || LowerOrderNums < 2 || lowerOrderSecond)
                prev = SecondOrder(i, x, noise);
            else
                prev = ThirdOrder(i, x, noise);
            CompleteStep(i);
            return prev.to(modelOutput.dtype).MoveToOuterDisposeScope();
        }

        private Tensor FirstOrder(int i, Tensor m0, Tensor x, Tensor? noise)
        {
            var (alphaT, sigmaT, lambdaT) = DpmSolverMath.At(Sig[i + 1]);
            var (alphaS, sigmaS, lambdaS) = DpmSolverMath.At(Sig[i]);
            if (s.NoisePrediction) return DpmSolverNoisePrediction.FirstOrder(x, m0, alphaT, sigmaT, alphaS, lambdaT - lambdaS, noise);
            return DpmSolverMath.FirstOrderUpdate(x, m0, alphaT, sigmaT, sigmaS, lambdaT - lambdaS, noise);
        }

        private Tensor SecondOrder(int i, Tensor x, Tensor? noise)
        {
            var (alphaT, sigmaT, lambdaT) = DpmSolverMath.At(Sig[i + 1]);
            var (alphaS0, sigmaS0, lambdaS0) = DpmSolverMath.At(Sig[i]);
            var (_, _, lambdaS1) = DpmSolverMath.At(Sig[i - 1]);
            Tensor m0 = ModelOutputs[^1]!, m1 = ModelOutputs[^2]!;
            float h = lambdaT - lambdaS0, h0 = lambdaS0 - lambdaS1;
            float r0 = h0 / h;
            var d1 = 1f / r0 * (m0 - m1);
            if (s.NoisePrediction) return DpmSolverNoisePrediction.SecondOrder(x, m0, d1, alphaT, sigmaT, alphaS0, h, s.Heun, noise);
            return DpmSolverMath.SecondOrderUpdate(x, m0, d1, alphaT, sigmaT, sigmaS0, h, s.Heun, noise);
        }

        private Tensor ThirdOrder(int i, Tensor x, Tensor? noise)
        {
            var (alphaT, sigmaT, lambdaT) = DpmSolverMath.At(Sig[i + 1]);
            var (alphaS0, sigmaS0, lambdaS0) = DpmSolverMath.At(Sig[i]);
            var (_, _, lambdaS1) = DpmSolverMath.At(Sig[i - 1]);
            var (_, _, lambdaS2) = DpmSolverMath.At(Sig[i - 2]);
            Tensor m0 = ModelOutputs[^1]!, m1 = ModelOutputs[^2]!, m2 = ModelOutputs[^3]!;
            float h = lambdaT - lambdaS0, h0 = lambdaS0 - lambdaS1, h1 = lambdaS1 - lambdaS2;
            float r0 = h0 / h, r1 = h1 / h;
            var d10 = 1f / r0 * (m0 - m1);
            var d11 = 1f / r1 * (m1 - m2);
            var d1 = d10 + r0 / (r0 + r1) * (d10 - d11);
            var d2 = 1f / (r0 + r1) * (d10 - d11);
            if (s.NoisePrediction) return DpmSolverNoisePrediction.ThirdOrder(x, m0, d1, d2, alphaT, sigmaT, alphaS0, h);
            return DpmSolverMath.ThirdOrderUpdate(x, m0, d1, d2, alphaT, sigmaT, sigmaS0, h, noise);
        }
    }
}
