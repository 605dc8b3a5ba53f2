using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Euler steps in the EDM formulation (Karras et al. 2022, Algorithm 2 without churn): the reference's
/// <c>EDMEulerScheduler</c>, for models trained with EDM preconditioning (e.g. Playground v2.5, SDXL EDM
/// fine-tunes); ComfyUI's "euler" with an EDM model sampling. Sigmas come from [σ_min, σ_max] directly, the timesteps
/// are c_noise = ¼·ln σ (see <see cref="EdmPreconditioning"/>).
/// </summary>
public sealed class EdmEulerScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults = [.. EdmPreconditioning.SigmaKeys, ("final_sigmas_type", "zero")];

    /// <summary>Builds EDM Euler from a scheduler config (missing keys take its defaults) and optional overrides.</summary>
    public EdmEulerScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("EDMEulerScheduler", Defaults, config, overrides)
        => Edm = EdmConfig.Read(ConfigReader);

    /// <summary>The EDM keys, read once.</summary>
    internal EdmConfig Edm { get; }

    internal override string[] SupportedPredictionTypes => ["epsilon", "v_prediction"];

    internal override bool ContinuousTimesteps => true;

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        var sigmas = EdmPreconditioning.Sigmas(Edm, inferenceSteps, ScalarType.Float64);
        float last = Schedule.FinalSigmasType == "sigma_min" ? sigmas[^1] : 0f;
        return new Run(this, EdmPreconditioning.Timesteps(sigmas), [.. sigmas, last], generator);
    }

    private sealed class Run(EdmEulerScheduler s, double[] timesteps, float[] sigmas, torch.Generator? generator) : SchedulerRun(timesteps, sigmas, generator)
    {
        public override double InitNoiseSigma => EdmPreconditioning.InitNoiseSigma(s.Edm);

        public override Tensor ScaleModelInput(Tensor sample, double timestep) => EdmPreconditioning.ScaleInput(s.Edm, sample, Sig[CurrentIndex(timestep)]);

        public override Tensor AddNoise(Tensor original, Tensor noise, double timestep) => SigmaSchedule.AddNoise(original, noise, Sig[NoiseIndex(timestep)]);

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            int i = CurrentIndex(timestep);
            EnsureNotFinished(i);
            using var scope = torch.NewDisposeScope();
            var x = sample.to(ScalarType.Float32);
            float sigma = Sig[i];
            var x0 = EdmPreconditioning.Denoised(s.Edm, s.PredictionType, x, modelOutput, sigma, s.ClassName);
            var derivative = (x - x0) / sigma;
            var prev = (x + derivative * (Sig[i + 1] - sigma)).to(modelOutput.dtype);
            StepIndex = i + 1;
            return prev.MoveToOuterDisposeScope();
        }
    }
}
