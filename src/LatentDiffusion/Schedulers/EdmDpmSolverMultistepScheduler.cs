using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// DPM-Solver++ multistep in the EDM formulation: the reference's <c>EDMDPMSolverMultistepScheduler</c> ("DPM++ 2M" /
/// "DPM++ 2M SDE" for EDM-preconditioned models). The same updates as <see cref="DpmSolverMultistepScheduler"/> with
/// α_t = 1 and σ_t = σ (the input is pre-scaled by c_in), so λ = −ln σ; sigmas and timesteps as
/// <see cref="EdmPreconditioning"/>.
/// </summary>
public sealed class EdmDpmSolverMultistepScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. EdmPreconditioning.SigmaKeys, ("solver_order", 2), ("thresholding", false), ("dynamic_thresholding_ratio", 0.995), ("sample_max_value", 1.0),
        ("algorithm_type", "dpmsolver++"), ("solver_type", "midpoint"), ("lower_order_final", true), ("euler_at_final", false), ("final_sigmas_type", "zero"),
    ];

    /// <summary>Builds EDM DPM-Solver++ from a scheduler config (missing keys take its defaults) and optional overrides.</summary>
    public EdmDpmSolverMultistepScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("EDMDPMSolverMultistepScheduler", Defaults, config, overrides)
    {
        var r = ConfigReader;
        Edm = EdmConfig.Read(r);
        Sde = r.Choice("algorithm_type", "dpmsolver++", "sde-dpmsolver++") == "sde-dpmsolver++";
        Heun = r.Choice("solver_type", "midpoint", "heun") == "heun";
        SolverOrder = DpmSolverMath.SolverOrder(r, 3);
        LowerOrderFinal = r.Bool("lower_order_final");
        EulerAtFinal = r.Bool("euler_at_final");
        if (Sde && SolverOrder == 3)
            throw new NotSupportedException($"Config '{Config.Source}': EDMDPMSolverMultistepScheduler has no third-order update for algorithm_type 'sde-dpmsolver++' (solver_order 1 or 2).");
    }

    private protected override void AdjustConfig(System.Text.Json.Nodes.JsonObject config) => DpmSolverMultistepScheduler.RemapForeignSolver(config);

    /// <summary>The EDM keys, read once.</summary>
    internal EdmConfig Edm { get; }

    /// <summary><c>lower_order_final</c>: first/second order at the last steps of short runs.</summary>
    internal bool LowerOrderFinal { get; }

    /// <summary><c>euler_at_final</c>: a first-order last step.</summary>
    internal bool EulerAtFinal { get; }

    internal override string[] SupportedPredictionTypes => ["epsilon", "v_prediction"];

    internal override bool ContinuousTimesteps => true;

    internal int SolverOrder { get; }

    internal bool Sde { get; }

    internal bool Heun { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var sigmas = EdmPreconditioning.Sigmas(Edm, inferenceSteps, ScalarType.Float32);
        float last = Schedule.FinalSigmasType == "sigma_min" ? (float)Edm.SigmaMin : 0f;
        return new Run(this, EdmPreconditioning.Timesteps(sigmas), [.. sigmas, last], generator);
    }

    /// <summary>λ = ln α − ln σ with α = 1: −ln σ (+∞ at σ = 0, which the final first-order step tolerates).</summary>
    private static float Lambda(float sigma) => 0f - MathF.Log(sigma);

    private sealed class Run(EdmDpmSolverMultistepScheduler s, double[] timesteps, float[] sigmas, torch.Generator? generator) : ExponentialIntegratorRun(timesteps, sigmas, s.SolverOrder, generator)
    {
        public override double InitNoiseSigma => EdmPreconditioning.InitNoiseSigma(s.Edm);

        public override Tensor ScaleModelInput(Tensor sample, double timestep) => EdmPreconditioning.ScaleInput(s.Edm, sample, Sig[CurrentIndex(timestep)]);

        public override Tensor AddNoise(Tensor original, Tensor noise, double timestep) => SigmaSchedule.AddNoise(original, noise, Sig[NoiseIndex(timestep)]);

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            int n = Timesteps.Count;
            bool lowerOrderFinal = i == n - 1 && (s.EulerAtFinal || (s.LowerOrderFinal && n < 15) || s.Schedule.FinalSigmasType == "zero");
            bool lowerOrderSecond = i == n - 2 && s.LowerOrderFinal && n < 15;
            var x0 = EdmPreconditioning.Denoised(s.Edm, s.PredictionType, sample, modelOutput, Sig[i], s.ClassName);
            if (s.Schedule.Thresholding)
                x0 = NoiseSchedule.Threshold(x0, s.Schedule.DynamicThresholdingRatio, s.Schedule.SampleMaxValue);
            PushModelOutput(x0);
            // The reference draws the SDE noise in the model output's dtype on its device.
            Tensor? noise = s.Sde ? Noise(modelOutput) : null;
            float sigmaT = Sig[i + 1], sigmaS0 = Sig[i];
            float h = Lambda(sigmaT) - Lambda(sigmaS0);
            Tensor prev;
            if (s.SolverOrder == 1 || LowerOrderNums < 1 || lowerOrderFinal)
                prev = DpmSolverMath.FirstOrderUpdate(sample, ModelOutputs[^1]!, 1f, sigmaT, sigmaS0, h, noise);
            else if (s.SolverOrder == 2 || LowerOrderNums < 2 || lowerOrderSecond)
            {
                float r0 = (Lambda(sigmaS0) - Lambda(Sig[i - 1])) / h;
                var d1 = 1f / r0 * (ModelOutputs[^1]! - ModelOutputs[^2]!);
                prev = DpmSolverMath.SecondOrderUpdate(sample, ModelOutputs[^1]!, d1, 1f, sigmaT, sigmaS0, h, s.Heun, noise);
            }
            else
            {
                float r0 = (Lambda(sigmaS0) - Lambda(Sig[i - 1])) / h, r1 = (Lambda(Sig[i - 1]) - Lambda(Sig[i - 2])) / h;
                Tensor m0 = ModelOutputs[^1]!, m1 = ModelOutputs[^2]!, m2 = ModelOutputs[^3]!;
                var d10 = 1f / r0 * (m0 - m1);
                var d11 = 1f / r1 * (m1 - m2);
                var d1 = d10 + r0 / (r0 + r1) * (d10 - d11);
                var d2 = 1f / (r0 + r1) * (d10 - d11);
                prev = DpmSolverMath.ThirdOrderUpdate(sample, m0, d1, d2, 1f, sigmaT, sigmaS0, h, null);
            }
            CompleteStep(i);
            return prev.to(modelOutput.dtype).MoveToOuterDisposeScope();
        }
    }
}
