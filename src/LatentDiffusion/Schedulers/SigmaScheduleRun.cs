using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Run state shared by the k-diffusion schedulers (Euler, Euler ancestral, Heun, LMS, KDPM2, KDPM2 ancestral): noise
/// starts at the largest sigma, the model sees x/sqrt(σ²+1) at the current step, and forward noise is x + σ·ε.
/// </summary>
internal abstract class SigmaScheduleRun : SchedulerRun
{
    protected SigmaScheduleRun(JsonConfig config, double[] timesteps, float[] sigmas, torch.Generator? generator)
        : base(timesteps, sigmas, generator)
        => InitNoiseSigma = SigmaSchedule.InitNoiseSigma(config, sigmas);

    public override double InitNoiseSigma { get; }

    public override Tensor ScaleModelInput(Tensor sample, double timestep) => SigmaSchedule.ScaleInput(sample, Sig[CurrentIndex(timestep)]);

    public override Tensor AddNoise(Tensor original, Tensor noise, double timestep) => SigmaSchedule.AddNoise(original, noise, Sig[NoiseIndex(timestep)]);
}
