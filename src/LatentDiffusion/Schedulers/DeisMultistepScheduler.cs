using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// DEIS multistep with the log-ρ exponential integrator (Zhang &amp; Chen 2022, "Fast Sampling of Diffusion Models with
/// Exponential Integrator"): the reference's <c>DEISMultistepScheduler</c>.
/// </summary>
public sealed class DeisMultistepScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, .. DpmSolverMath.SolverKeys, ("algorithm_type", "deis"), ("solver_type", "logrho"), ("lower_order_final", true),
        .. SigmaSchedule.SigmaKeys, ("use_flow_sigmas", false), ("flow_shift", 1.0), ("timestep_spacing", "linspace"), ("steps_offset", 0),
        ("use_dynamic_shifting", false), ("time_shift_type", "exponential"),
    ];

    /// <summary>Builds DEIS from a scheduler config (missing keys take DEIS's defaults) and optional overrides.</summary>
    public DeisMultistepScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("DEISMultistepScheduler", Defaults, config, overrides)
    {
        ConfigReader.RequireOneOf("algorithm_type", "deis");
        ConfigReader.RequireOneOf("solver_type", "logrho");
        DpmSolverMath.RefuseFlowSigmas(ConfigReader);
        SolverOrder = DpmSolverMath.SolverOrder(ConfigReader, 3);
        LowerOrderFinal = ConfigReader.Bool("lower_order_final");
    }

    // As the reference's register_to_config: DPM-Solver/UniPC settings carried over by from_config map to DEIS's own.
    private protected override void AdjustConfig(System.Text.Json.Nodes.JsonObject c)
    {
        if (c["algorithm_type"]?.GetValue<string>() is "dpmsolver" or "dpmsolver++") c["algorithm_type"] = "deis";
        if (c["solver_type"]?.GetValue<string>() is "midpoint" or "heun" or "bh1" or "bh2") c["solver_type"] = "logrho";
    }

    /// <summary><c>lower_order_final</c>: lower orders at the end of short runs.</summary>
    internal bool LowerOrderFinal { get; }

    internal int SolverOrder { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var t = DpmSolverMath.Timesteps(Schedule, NumTrainTimesteps, NumTrainTimesteps, inferenceSteps);
        var (timesteps, sig) = DpmSolverMath.Sigmas(Schedule, AlphasCumprod, t, roundKarras: true, configSigmaRange: false);
        // DEIS never steps to σ = 0: it ends at the schedule's smallest sigma.
        return new Run(this, timesteps, DpmSolverMath.WithFinal(sig, DpmSolverMath.ScheduleSigmaMin(Schedule, AlphasCumprod, sig)));
    }

    private sealed class Run(DeisMultistepScheduler s, double[] timesteps, float[] sigmas) : ExponentialIntegratorRun(timesteps, sigmas, s.SolverOrder, null)
    {

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            int n = Timesteps.Count;
            bool lof = s.LowerOrderFinal && n < 15;
            bool lowerOrderFinal = i == n - 1 && lof, lowerOrderSecond = i == n - 2 && lof;
            // DEIS integrates the noise prediction, recovered from the (possibly thresholded) data prediction.
            var (alpha, sigmaT, _) = DpmSolverMath.At(Sig[i]);
            var x0 = DpmSolverMath.DataPrediction(s.Schedule, s.PredictionType, modelOutput, sample, Sig[i], s.ClassName);
            var eps = (sample - alpha * x0) / sigmaT;
            PushModelOutput(eps);
            Tensor prev;
            if (s.SolverOrder == 1 || LowerOrderNums < 1 || lowerOrderFinal)
            {
                var (alphaT, sT, lambdaT) = DpmSolverMath.At(Sig[i + 1]);
                var (alphaS, _, lambdaS) = DpmSolverMath.At(Sig[i]);
                float h = lambdaT - lambdaS;
                prev = alphaT / alphaS * sample - sT * (MathF.Exp(h) - 1f) * ModelOutputs[^1]!;
            }
            else if (s.SolverOrder == 2 || LowerOrderNums < 2 || lowerOrderSecond)
                prev = SecondOrder(i, sample);
            else
                prev = ThirdOrder(i, sample);
            CompleteStep(i);
            return prev.MoveToOuterDisposeScope();
        }

        private static float Rho(float sigma)
        {
            var (a, st, _) = DpmSolverMath.At(sigma);
            return st / a;
        }

        private Tensor SecondOrder(int i, Tensor x)
        {
            var (alphaT, _, _) = DpmSolverMath.At(Sig[i + 1]);
            var (alphaS0, _, _) = DpmSolverMath.At(Sig[i]);
            float rt = Rho(Sig[i + 1]), r0 = Rho(Sig[i]), r1 = Rho(Sig[i - 1]);
            // ∫ of the Lagrange basis in log ρ (the log-ρ DEIS coefficients).
            static float Ind(float t, float b, float c) => t * (-MathF.Log(c) + MathF.Log(t) - 1f) / (MathF.Log(b) - MathF.Log(c));
            float coef1 = Ind(rt, r0, r1) - Ind(r0, r0, r1);
            float coef2 = Ind(rt, r1, r0) - Ind(r0, r1, r0);
            return alphaT * (x / alphaS0 + coef1 * ModelOutputs[^1]! + coef2 * ModelOutputs[^2]!);
        }

        private Tensor ThirdOrder(int i, Tensor x)
        {
            var (alphaT, _, _) = DpmSolverMath.At(Sig[i + 1]);
            var (alphaS0, _, _) = DpmSolverMath.At(Sig[i]);
            float rt = Rho(Sig[i + 1]), r0 = Rho(Sig[i]), r1 = Rho(Sig[i - 1]), r2 = Rho(Sig[i - 2]);
            static float Ind(float t, float b, float c, float d)
            {
                float lt = MathF.Log(t), lb = MathF.Log(b), lc = MathF.Log(c), ld = MathF.Log(d);
                float numerator = t * (lc * (ld - lt + 1f) - ld * lt + ld + lt * lt - 2f * lt + 2f);
                return numerator / ((lb - lc) * (lb - ld));
            }
            float coef1 = Ind(rt, r0, r1, r2) - Ind(r0, r0, r1, r2);
            float coef2 = Ind(rt, r1, r2, r0) - Ind(r0, r1, r2, r0);
            float coef3 = Ind(rt, r2, r0, r1) - Ind(r0, r2, r0, r1);
            return alphaT * (x / alphaS0 + coef1 * ModelOutputs[^1]! + coef2 * ModelOutputs[^2]! + coef3 * ModelOutputs[^3]!);
        }
    }
}
