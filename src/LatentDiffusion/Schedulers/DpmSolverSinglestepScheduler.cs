using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// DPM-Solver++ singlestep (Lu et al. 2022): each k-th order step spends k model evaluations at intermediate
/// timesteps of the schedule. The reference's <c>DPMSolverSinglestepScheduler</c>, A1111's "DPM++ 2S" at order 2.
/// </summary>
public sealed class DpmSolverSinglestepScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, .. DpmSolverMath.SolverKeys, ("algorithm_type", "dpmsolver++"), ("solver_type", "midpoint"), ("lower_order_final", false),
        .. SigmaSchedule.SigmaKeys, ("use_flow_sigmas", false), ("flow_shift", 1.0), ("final_sigmas_type", "zero"),
        ("lambda_min_clipped", double.NegativeInfinity), ("variance_type", null), ("use_dynamic_shifting", false), ("time_shift_type", "exponential"),
    ];

    /// <summary>Builds DPM-Solver++ singlestep from a scheduler config (missing keys take its defaults) and optional overrides.</summary>
    public DpmSolverSinglestepScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("DPMSolverSinglestepScheduler", Defaults, config, overrides)
    {
        (Sde, Heun) = DpmSolverMath.DpmSolverPlusPlusSettings(ConfigReader);
        SolverOrder = DpmSolverMath.SolverOrder(ConfigReader, 3);
        LowerOrderFinal = ConfigReader.Bool("lower_order_final");
        LambdaMinClipped = ConfigReader.Double("lambda_min_clipped", allowInfinite: true);
    }

    private protected override void AdjustConfig(System.Text.Json.Nodes.JsonObject config) => DpmSolverMultistepScheduler.RemapForeignSolver(config);

    /// <summary><c>lower_order_final</c>: lower orders at the end of the run.</summary>
    internal bool LowerOrderFinal { get; }

    /// <summary><c>lambda_min_clipped</c>: the smallest λ the schedule keeps (−∞: all).</summary>
    internal double LambdaMinClipped { get; }

    internal int SolverOrder { get; }

    internal bool Sde { get; }

    internal bool Heun { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var t = DpmSolverMath.Timesteps("linspace", NumTrainTimesteps, DpmSolverMath.LastTimestep(LambdaMinClipped, AlphasCumprod), inferenceSteps, 0);
        var (timesteps, sig) = DpmSolverMath.Sigmas(Schedule, AlphasCumprod, t, roundKarras: true, configSigmaRange: false);
        bool zeroFinal = Schedule.FinalSigmasType == "zero";
        float final = zeroFinal ? 0f : DpmSolverMath.SigmaMin(AlphasCumprod);
        return new Run(this, timesteps, DpmSolverMath.WithFinal(sig, final), OrderList(inferenceSteps, zeroFinal), generator);
    }

    /// <summary>The solver order of every step: cycles 1, 2, (3) so each k-th order step has its k evaluations, lower at the end.</summary>
    internal int[] OrderList(int steps, bool zeroFinal)
    {
        int order = SolverOrder;
        // As the reference, a final step that cannot take the full order forces lower_order_final.
        bool lowerOrderFinal = LowerOrderFinal || steps % order != 0 || zeroFinal;
        var orders = new List<int>();
        int[] cycle = [.. Enumerable.Range(1, order)];
        if (lowerOrderFinal)
        {
            if (order == 3)
            {
                if (steps % 3 == 0) { for (int k = 0; k < steps / 3 - 1; k++) orders.AddRange(cycle); orders.AddRange([1, 2, 1]); }
                else { for (int k = 0; k < steps / 3; k++) orders.AddRange(cycle); orders.AddRange(steps % 3 == 1 ? [1] : [1, 2]); }
            }
            else if (order == 2)
            {
                if (steps % 2 == 0) { for (int k = 0; k < steps / 2 - 1; k++) orders.AddRange(cycle); orders.AddRange([1, 1]); }
                else { for (int k = 0; k < steps / 2; k++) orders.AddRange(cycle); orders.Add(1); }
            }
            else orders.AddRange(Enumerable.Repeat(1, steps));
        }
        else
            for (int k = 0; k < steps / order; k++) orders.AddRange(cycle);
        if (zeroFinal && orders.Count > 0) orders[^1] = 1;
        return [.. orders];
    }

    private sealed class Run(DpmSolverSinglestepScheduler s, double[] timesteps, float[] sigmas, int[] orders, torch.Generator? generator) : ExponentialIntegratorRun(timesteps, sigmas, s.SolverOrder, generator)
    {
        private readonly int[] _orders = orders;
        private Tensor? _sample;

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            var x0 = DpmSolverMath.DataPrediction(s.Schedule, s.PredictionType, modelOutput, sample, Sig[i], s.ClassName);
            PushModelOutput(x0);
            Tensor? noise = s.Sde ? Noise(modelOutput) : null;
            int order = i < _orders.Length ? _orders[i] : 1;
            while (ModelOutputs[^order] is null) order--;
            if (order == 1)
            {
                var kept = Keep(sample);
                Release(_sample);
                _sample = kept;
            }
            var x = _sample!;
            var prev = order switch
            {
                1 => FirstOrder(i, x, noise),
                2 => SecondOrder(i, x, noise),
                _ => ThirdOrder(i, x, noise),
            };
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }

        private Tensor FirstOrder(int i, Tensor x, Tensor? noise)
        {
            var (alphaT, sigmaT, lambdaT) = DpmSolverMath.At(Sig[i + 1]);
            var (_, sigmaS, lambdaS) = DpmSolverMath.At(Sig[i]);
            return DpmSolverMath.FirstOrderUpdate(x, ModelOutputs[^1]!, alphaT, sigmaT, sigmaS, lambdaT - lambdaS, noise);
        }

        private Tensor SecondOrder(int i, Tensor x, Tensor? noise)
        {
            var (alphaT, sigmaT, lambdaT) = DpmSolverMath.At(Sig[i + 1]);
            var (_, _, lambdaS0) = DpmSolverMath.At(Sig[i]);
            var (_, sigmaS1, lambdaS1) = DpmSolverMath.At(Sig[i - 1]);
            Tensor m0 = ModelOutputs[^1]!, m1 = ModelOutputs[^2]!;
            // Singlestep integrates from the older evaluation s1 over the whole interval.
            float h = lambdaT - lambdaS1, h0 = lambdaS0 - lambdaS1, r0 = h0 / h;
            var d1 = 1f / r0 * (m0 - m1);
            return DpmSolverMath.SecondOrderUpdate(x, m1, d1, alphaT, sigmaT, sigmaS1, h, s.Heun, noise);
        }

        private Tensor ThirdOrder(int i, Tensor x, Tensor? noise)
        {
            var (alphaT, sigmaT, lambdaT) = DpmSolverMath.At(Sig[i + 1]);
            var (_, _, lambdaS0) = DpmSolverMath.At(Sig[i]);
            var (_, _, lambdaS1) = DpmSolverMath.At(Sig[i - 1]);
            var (_, sigmaS2, lambdaS2) = DpmSolverMath.At(Sig[i - 2]);
            Tensor m0 = ModelOutputs[^1]!, m1 = ModelOutputs[^2]!, m2 = ModelOutputs[^3]!;
            float h = lambdaT - lambdaS2, h0 = lambdaS0 - lambdaS2, h1 = lambdaS1 - lambdaS2;
            float r0 = h0 / h, r1 = h1 / h;
            var d0 = m2;
            var d10 = 1f / r1 * (m1 - m2);
            var d11 = 1f / r0 * (m0 - m2);
            if (s.Heun)
            {
                var d1 = (r0 * d10 - r1 * d11) / (r0 - r1);
                var d2 = 2f * (d11 - d10) / (r0 - r1);
                return DpmSolverMath.ThirdOrderUpdate(x, d0, d1, d2, alphaT, sigmaT, sigmaS2, h, noise);
            }
            // The midpoint variant uses only the divided difference to the newest evaluation.
            if (noise is null)
            {
                float em1 = MathF.Exp(-h) - 1f;
                return sigmaT / sigmaS2 * x - alphaT * em1 * d0 + alphaT * (em1 / h + 1f) * d11;
            }
            float e2 = 1f - MathF.Exp(-2f * h);
            return sigmaT / sigmaS2 * MathF.Exp(-h) * x + alphaT * e2 * d0 + alphaT * (e2 / (-2f * h) + 1f) * d11
                + sigmaT * MathF.Sqrt(1f - MathF.Exp(-2f * h)) * noise;
        }
    }
}
