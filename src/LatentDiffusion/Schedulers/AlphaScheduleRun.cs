using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Run state shared by the DDPM-style schedulers (DDPM, DDIM, PNDM, LCM), which step on integer training timesteps:
/// the model sees the sample unscaled, and forward noise is sqrt(ᾱ_t)·x + sqrt(1−ᾱ_t)·ε at the timestep itself.
/// </summary>
internal abstract class AlphaScheduleRun(float[] alphasCumprod, double[] timesteps, torch.Generator? generator) : SchedulerRun(timesteps, null, generator)
{
    public override Tensor ScaleModelInput(Tensor sample, double timestep) => sample.alias();

    public override Tensor AddNoise(Tensor original, Tensor noise, double timestep)
    {
        using var t = torch.tensor((long)timestep);
        return ForwardDiffusion.AddNoise(alphasCumprod, original, noise, t);
    }
}
