using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// The part of a schedule that <see cref="GenerationOptions.DenoisingStart"/> and <see cref="GenerationOptions.DenoisingEnd"/>
/// keep, as the reference's SDXL pipelines cut it for the ensemble of expert denoisers (a base model runs the first
/// fraction, a refiner the rest).
/// </summary>
internal static class DenoisingWindow
{
    /// <summary>The discrete timestep a fraction of the schedule falls on: <c>round(T - fraction·T)</c>, rounding half to even as Python does.</summary>
    public static int Cutoff(double fraction, int trainTimesteps) => (int)Math.Round(trainTimesteps - fraction * trainTimesteps, MidpointRounding.ToEven);

    /// <summary>
    /// <c>get_timesteps</c> with <c>denoising_start</c>: the timesteps below the cutoff (one more for a second-order
    /// scheduler when their count is even), the run's begin index set where they start.
    /// </summary>
    public static IReadOnlyList<double> FromStart(ISchedulerRun run, double denoisingStart, int trainTimesteps)
    {
        int cutoff = Cutoff(denoisingStart, trainTimesteps);
        int count = run.Timesteps.Count(t => t < cutoff);
        if (run.Order == 2 && count % 2 == 0) count++;
        int start = Math.Max(run.Timesteps.Count - count, 0);
        run.SetBeginIndex(start);
        return run.Timesteps.Skip(start).ToArray();
    }

    /// <summary>The timesteps at or above the cutoff of <paramref name="denoisingEnd"/>; all of them when it is null.</summary>
    public static IReadOnlyList<double> UntilEnd(IReadOnlyList<double> timesteps, double? denoisingEnd, int trainTimesteps)
    {
        if (denoisingEnd is not double end) return timesteps;
        int cutoff = Cutoff(end, trainTimesteps);
        int keep = timesteps.Count(t => t >= cutoff);
        return keep == timesteps.Count ? timesteps : timesteps.Take(keep).ToArray();
    }

    /// <summary>num_train_timesteps: a library scheduler's typed value, else the config's (1000 when absent).</summary>
    public static int TrainTimesteps(IScheduler scheduler)
        => scheduler is DiffusionScheduler known ? known.NumTrainTimesteps : scheduler.Config.Int("num_train_timesteps", 1000);
}
