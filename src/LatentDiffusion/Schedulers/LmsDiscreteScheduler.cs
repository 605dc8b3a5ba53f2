using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Linear multistep in sigma (k-diffusion's <c>sample_lms</c>, order 4): the reference's <c>LMSDiscreteScheduler</c>,
/// A1111's "LMS". The coefficients integrate the Lagrange basis over each sigma interval (exactly; the reference
/// uses adaptive quadrature of the same polynomial).
/// </summary>
public sealed class LmsDiscreteScheduler : DiffusionScheduler
{
    private const int LmsOrder = 4;

    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, .. SigmaSchedule.SigmaKeys, ("prediction_type", "epsilon"), ("timestep_spacing", "linspace"), ("steps_offset", 0),
    ];

    /// <summary>Builds LMS from a scheduler config (missing keys take LMS's defaults) and optional overrides.</summary>
    public LmsDiscreteScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("LMSDiscreteScheduler", Defaults, config, overrides)
    {
        SigmaSchedule.Validate(Schedule);
    }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var (timesteps, sigmas) = SigmaSchedule.Build(Schedule, AlphasCumprod, inferenceSteps);
        return new Run(this, timesteps, sigmas);
    }

    // Gauss-Legendre, 4 nodes: exact for the cubic Lagrange basis polynomials.
    private static readonly double[] Nodes = [-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526];
    private static readonly double[] Weights = [0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538];

    /// <summary>∫ from σ_t to σ_{t+1} of the Lagrange basis polynomial of node <paramref name="current"/> over the last <paramref name="order"/> sigmas.</summary>
    internal static double Coefficient(float[] sigmas, int order, int t, int current)
    {
        double Basis(double tau)
        {
            double prod = 1;
            for (int k = 0; k < order; k++)
            {
                if (k == current) continue;
                prod *= (tau - sigmas[t - k]) / ((double)sigmas[t - current] - sigmas[t - k]);
            }
            return prod;
        }
        double a = sigmas[t], b = sigmas[t + 1], half = (b - a) / 2, mid = (a + b) / 2, sum = 0;
        for (int i = 0; i < Nodes.Length; i++) sum += Weights[i] * Basis(mid + half * Nodes[i]);
        return sum * half;
    }

    private sealed class Run(LmsDiscreteScheduler s, double[] timesteps, float[] sigmas) : SigmaScheduleRun(s.Schedule, timesteps, sigmas, null)
    {
        private readonly List<Tensor> _derivatives = [];

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            float sigma = Sig[i];
            var x0 = SigmaSchedule.PredictOriginal(s.PredictionType, modelOutput, sample, sigma, s.ClassName);
            _derivatives.Add(Keep((sample - x0) / sigma));
            if (_derivatives.Count > LmsOrder) { Release(_derivatives[0]); _derivatives.RemoveAt(0); }
            int order = Math.Min(i + 1, LmsOrder);
            // As the reference (which zips the coefficients with the stored derivatives): a run that began mid-schedule
            // (image-to-image) has fewer derivatives than the order, and uses the ones it has. The coefficients keep the
            // order of the step's position in the schedule.
            int terms = Math.Min(order, _derivatives.Count);
            Tensor? sum = null;
            for (int k = 0; k < terms; k++)
            {
                var term = Coefficient(Sig, order, i, k) * _derivatives[_derivatives.Count - 1 - k];
                sum = sum is null ? term : sum + term;
            }
            StepIndex = i + 1;
            return (sample + sum!).MoveToOuterDisposeScope();
        }
    }
}
