using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"):
/// a multistep predictor plus a corrector that reuses the next model evaluation at no extra cost. The reference's
/// <c>UniPCMultistepScheduler</c>.
/// </summary>
public sealed class UniPcMultistepScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, .. DpmSolverMath.SolverKeys, ("predict_x0", true), ("solver_type", "bh2"), ("lower_order_final", true), ("disable_corrector", Array.Empty<int>()),
        ("solver_p", null), .. SigmaSchedule.SigmaKeys, ("use_flow_sigmas", false), ("flow_shift", 1.0), ("timestep_spacing", "linspace"),
        ("steps_offset", 0), ("final_sigmas_type", "zero"), ("rescale_betas_zero_snr", false), ("use_dynamic_shifting", false),
        ("time_shift_type", "exponential"), ("sigma_min", null), ("sigma_max", null), ("shift_terminal", null),
    ];

    /// <summary>Builds UniPC from a scheduler config (missing keys take UniPC's defaults) and optional overrides.</summary>
    public UniPcMultistepScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("UniPCMultistepScheduler", Defaults, config, overrides)
    {
        var r = ConfigReader;
        Bh1 = r.Choice("solver_type", "bh1", "bh2") == "bh1";
        r.RequireOneOf("solver_p", "null");
        DpmSolverMath.RefuseFlowSigmas(r);
        SolverOrder = DpmSolverMath.SolverOrder(r, null);
        PredictX0 = r.Bool("predict_x0");
        DisableCorrector = [.. r.IntArray("disable_corrector") ?? []];
        LowerOrderFinal = r.Bool("lower_order_final");
    }

    private protected override bool ZeroSnrPatchesLast => true;

    // As the reference: DPM-Solver/DEIS solver types carried over by from_config become bh2.
    private protected override void AdjustConfig(System.Text.Json.Nodes.JsonObject config)
    {
        if (config["solver_type"]?.GetValue<string>() is "midpoint" or "heun" or "logrho") config["solver_type"] = "bh2";
    }

    /// <summary><c>lower_order_final</c>: lower orders at the end of the run.</summary>
    internal bool LowerOrderFinal { get; }

    internal int SolverOrder { get; }

    internal bool PredictX0 { get; }

    internal bool Bh1 { get; }

    internal HashSet<int> DisableCorrector { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var t = DpmSolverMath.Timesteps(Schedule, NumTrainTimesteps, NumTrainTimesteps, inferenceSteps);
        var (timesteps, sig) = DpmSolverMath.Sigmas(Schedule, AlphasCumprod, t, roundKarras: true, configSigmaRange: true);
        float final = Schedule.FinalSigmasType == "zero" ? 0f : DpmSolverMath.ScheduleSigmaMin(Schedule, AlphasCumprod, sig);
        return new Run(this, timesteps, DpmSolverMath.WithFinal(sig, final));
    }

    private static float Expm1(float x)
    {
        double d = x;
        return (float)(Math.Abs(d) < 1e-5 ? d + d * d / 2 + d * d * d / 6 : Math.Exp(d) - 1);
    }

    /// <summary>Solves a small dense system in float32 by Gaussian elimination with partial pivoting (as LAPACK's gesv).</summary>
    internal static float[] Solve(float[,] a, float[] b)
    {
        int n = b.Length;
        a = (float[,])a.Clone();
        b = (float[])b.Clone();
        for (int col = 0; col < n; col++)
        {
            int pivot = col;
            for (int r = col + 1; r < n; r++) if (MathF.Abs(a[r, col]) > MathF.Abs(a[pivot, col])) pivot = r;
            if (pivot != col)
            {
                for (int c = 0; c < n; c++) (a[col, c], a[pivot, c]) = (a[pivot, c], a[col, c]);
                (b[col], b[pivot]) = (b[pivot], b[col]);
            }
            float inv = 1f / a[col, col];
            for (int r = col + 1; r < n; r++)
            {
                float l = a[r, col] * inv;
                for (int c = col + 1; c < n; c++) a[r, c] -= l * a[col, c];
                b[r] -= l * b[col];
            }
        }
        var x = new float[n];
        for (int r = n - 1; r >= 0; r--)
        {
            float sum = b[r];
            for (int c = r + 1; c < n; c++) sum -= a[r, c] * x[c];
            x[r] = sum / a[r, r];
        }
        return x;
    }

    private sealed class Run(UniPcMultistepScheduler s, double[] timesteps, float[] sigmas) : ExponentialIntegratorRun(timesteps, sigmas, s.SolverOrder, null)
    {
        private Tensor? _lastSample;
        private int _thisOrder;

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            bool useCorrector = i > 0 && !s.DisableCorrector.Contains(i - 1) && _lastSample is not null;
            var converted = s.PredictX0
                ? DpmSolverMath.DataPrediction(s.Schedule, s.PredictionType, modelOutput, sample, Sig[i], s.ClassName)
                : DpmSolverMath.NoisePrediction(s.PredictionType, modelOutput, sample, Sig[i], s.ClassName);
            if (useCorrector) sample = Corrector(i, converted, _lastSample!, _thisOrder);
            PushModelOutput(converted);
            int order = s.LowerOrderFinal ? Math.Min(s.SolverOrder, Timesteps.Count - i) : s.SolverOrder;
            _thisOrder = Math.Min(order, LowerOrderNums + 1);
            var kept = Keep(sample);
            Release(_lastSample);
            _lastSample = kept;
            var prev = Predictor(i, sample, _thisOrder);
            CompleteStep(i);
            return prev.MoveToOuterDisposeScope();
        }

        /// <summary>The φ-function coefficients shared by predictor and corrector: R (powers of r_k), b, h·φ₁ and B(h).</summary>
        private (float[,] R, float[] B, float HPhi1, float Bh) Coefficients(float h, float[] rks, int order)
        {
            float hh = s.PredictX0 ? -h : h;
            float hPhi1 = Expm1(hh);
            float hPhiK = hPhi1 / hh - 1f;
            float factorial = 1;
            float bh = s.Bh1 ? hh : Expm1(hh);
            var r = new float[order, rks.Length];
            var b = new float[order];
            for (int k = 1; k <= order; k++)
            {
                for (int j = 0; j < rks.Length; j++) r[k - 1, j] = k == 1 ? 1f : k == 2 ? rks[j] : MathF.Pow(rks[j], k - 1);
                b[k - 1] = hPhiK * factorial / bh;
                factorial *= k + 1;
                hPhiK = hPhiK / hh - (float)(1.0 / factorial);
            }
            return (r, b, hPhi1, bh);
        }

        private Tensor Predictor(int i, Tensor x, int order)
        {
            var (alphaT, sigmaT, lambdaT) = DpmSolverMath.At(Sig[i + 1]);
            var (alphaS0, sigmaS0, lambdaS0) = DpmSolverMath.At(Sig[i]);
            float h = lambdaT - lambdaS0;
            var m0 = ModelOutputs[^1]!;
            var rks = new List<float>();
            var d1s = new List<Tensor>();
            for (int k = 1; k < order; k++)
            {
                var (_, _, lambdaSi) = DpmSolverMath.At(Sig[i - k]);
                float rk = (lambdaSi - lambdaS0) / h;
                rks.Add(rk);
                d1s.Add((ModelOutputs[^(k + 1)]! - m0) / rk);
            }
            rks.Add(1f);
            var (r, b, hPhi1, bh) = Coefficients(h, [.. rks], order);
            Tensor? predRes = null;
            if (d1s.Count > 0)
            {
                float[] rhos;
                if (order == 2) rhos = [0.5f];
                else
                {
                    int m = order - 1;
                    var sub = new float[m, m];
                    for (int p = 0; p < m; p++) for (int q = 0; q < m; q++) sub[p, q] = r[p, q];
                    rhos = Solve(sub, b[..m]);
                }
                for (int k = 0; k < d1s.Count; k++) predRes = predRes is null ? rhos[k] * d1s[k] : predRes + rhos[k] * d1s[k];
            }
            Tensor xt = s.PredictX0 ? sigmaT / sigmaS0 * x - alphaT * hPhi1 * m0 : alphaT / alphaS0 * x - sigmaT * hPhi1 * m0;
            if (predRes is not null) xt = xt - (s.PredictX0 ? alphaT : sigmaT) * bh * predRes;
            return xt.to(x.dtype);
        }

        private Tensor Corrector(int i, Tensor modelT, Tensor x, int order)
        {
            var (alphaT, sigmaT, lambdaT) = DpmSolverMath.At(Sig[i]);
            var (alphaS0, sigmaS0, lambdaS0) = DpmSolverMath.At(Sig[i - 1]);
            float h = lambdaT - lambdaS0;
            var m0 = ModelOutputs[^1]!;
            var rks = new List<float>();
            var d1s = new List<Tensor>();
            for (int k = 1; k < order; k++)
            {
                var (_, _, lambdaSi) = DpmSolverMath.At(Sig[i - (k + 1)]);
                float rk = (lambdaSi - lambdaS0) / h;
                rks.Add(rk);
                d1s.Add((ModelOutputs[^(k + 1)]! - m0) / rk);
            }
            rks.Add(1f);
            var (r, b, hPhi1, bh) = Coefficients(h, [.. rks], order);
            float[] rhos = order == 1 ? [0.5f] : Solve(r, b);
            Tensor? corrRes = null;
            for (int k = 0; k < d1s.Count; k++) corrRes = corrRes is null ? rhos[k] * d1s[k] : corrRes + rhos[k] * d1s[k];
            var d1t = modelT - m0;
            var correction = corrRes is null ? rhos[^1] * d1t : corrRes + rhos[^1] * d1t;
            Tensor xt = s.PredictX0 ? sigmaT / sigmaS0 * x - alphaT * hPhi1 * m0 : alphaT / alphaS0 * x - sigmaT * hPhi1 * m0;
            xt = xt - (s.PredictX0 ? alphaT : sigmaT) * bh * correction;
            return xt.to(x.dtype);
        }
    }
}
