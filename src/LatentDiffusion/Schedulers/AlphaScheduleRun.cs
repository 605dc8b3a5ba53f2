using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Base of a run that steps on integer training timesteps of an ᾱ schedule, as the DDPM-style schedulers (DDPM, DDIM,
/// PNDM, LCM) do: the model sees the sample unscaled, and forward noise is sqrt(ᾱ_t)·x + sqrt(1−ᾱ_t)·ε at the timestep
/// itself. A user's run derives from it and implements <see cref="SchedulerRun.Step"/>.
/// </summary>
public abstract class AlphaScheduleRun : SchedulerRun
{
    private readonly IReadOnlyList<float> _alphasCumprod;

    /// <summary>Starts a run over integer <paramref name="timesteps"/> of the ᾱ schedule <paramref name="alphasCumprod"/>.</summary>
    /// <param name="alphasCumprod">ᾱ_t for every training timestep (e.g. the scheduler's <see cref="DiffusionScheduler.CumulativeAlphas"/>).</param>
    /// <param name="timesteps">The run's training timesteps in the order the model is called.</param>
    /// <param name="generator">The CPU generator <see cref="SchedulerRun.Noise"/> draws from; null for the global one.</param>
    /// <exception cref="ArgumentNullException"><paramref name="alphasCumprod"/> or <paramref name="timesteps"/> is null.</exception>
    protected AlphaScheduleRun(IReadOnlyList<float> alphasCumprod, IReadOnlyList<double> timesteps, torch.Generator? generator)
        : base(timesteps, null, generator)
    {
        ArgumentNullException.ThrowIfNull(alphasCumprod);
        _alphasCumprod = alphasCumprod;
    }

    /// <summary>Returns <paramref name="sample"/> unscaled (an alias the caller disposes).</summary>
    public override Tensor ScaleModelInput(Tensor sample, double timestep) => sample.alias();

    /// <summary>sqrt(ᾱ_t)·<paramref name="original"/> + sqrt(1−ᾱ_t)·<paramref name="noise"/> at the integer <paramref name="timestep"/>.</summary>
    public override Tensor AddNoise(Tensor original, Tensor noise, double timestep)
    {
        using var t = torch.tensor((long)timestep);
        return ForwardDiffusion.AddNoise(_alphasCumprod, original, noise, t);
    }
}
