using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Base of a run on a sigma schedule, as the k-diffusion schedulers (Euler, Euler ancestral, Heun, LMS, KDPM2, KDPM2
/// ancestral) are: noise starts at <see cref="InitNoiseSigma"/>, the model sees x/sqrt(σ²+1) at the current step, and
/// forward noise is x + σ·ε. A user's run derives from it and implements <see cref="SchedulerRun.Step"/>, reading the
/// sigmas with <see cref="SchedulerRun.SigmaAt"/>.
/// </summary>
public abstract class SigmaScheduleRun : SchedulerRun
{
    /// <summary>Starts a run over <paramref name="timesteps"/> and their <paramref name="sigmas"/>.</summary>
    /// <param name="timesteps">The run's timesteps in the order the model is called.</param>
    /// <param name="sigmas">σ for each timestep plus the final one (usually 0): one more than <paramref name="timesteps"/>.</param>
    /// <param name="initNoiseSigma">The standard deviation of the initial noise (e.g. σ_max, or sqrt(σ_max²+1) for "leading" spacing).</param>
    /// <param name="generator">The CPU generator <see cref="SchedulerRun.Noise"/> draws from; null for the global one.</param>
    /// <exception cref="ArgumentNullException"><paramref name="sigmas"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="initNoiseSigma"/> is not a positive finite number.</exception>
    protected SigmaScheduleRun(IReadOnlyList<double> timesteps, IReadOnlyList<float> sigmas, double initNoiseSigma, torch.Generator? generator)
        : base(timesteps, sigmas ?? throw new ArgumentNullException(nameof(sigmas)), generator)
    {
        if (!(initNoiseSigma > 0 && double.IsFinite(initNoiseSigma)))
            throw new ArgumentOutOfRangeException(nameof(initNoiseSigma), initNoiseSigma, "The initial noise sigma must be a positive finite number.");
        InitNoiseSigma = initNoiseSigma;
    }

    private protected SigmaScheduleRun(NoiseScheduleConfig config, double[] timesteps, float[] sigmas, torch.Generator? generator)
        : base(timesteps, sigmas, generator)
        => InitNoiseSigma = SigmaSchedule.InitNoiseSigma(config, sigmas);

    /// <inheritdoc/>
    public override double InitNoiseSigma { get; }

    /// <summary>x/sqrt(σ²+1) at the current step's sigma (a new tensor).</summary>
    public override Tensor ScaleModelInput(Tensor sample, double timestep) => SigmaSchedule.ScaleInput(sample, Sig[CurrentIndex(timestep)]);

    /// <summary><paramref name="original"/> + σ·<paramref name="noise"/> at <paramref name="timestep"/>'s sigma.</summary>
    public override Tensor AddNoise(Tensor original, Tensor noise, double timestep) => SigmaSchedule.AddNoise(original, noise, Sig[NoiseIndex(timestep)]);
}
