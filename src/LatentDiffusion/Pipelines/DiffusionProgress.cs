namespace LatentDiffusion.Pipelines;

/// <summary>
/// Where a generation is: reported after each iteration of the denoising loop, that is after each UNet call, as the
/// reference's progress bar counts. That can be more than the steps asked for: PNDM adds a warm-up call (10 steps are
/// 11 calls), Heun and KDPM2 call the UNet twice a step, and image-to-image runs only the steps its strength keeps. To
/// show the steps asked for, scale <see cref="Step"/> by <c>steps / TotalSteps</c> (the <c>ldm</c> tool does).
/// </summary>
/// <param name="Step">UNet calls done (1-based).</param>
/// <param name="TotalSteps">UNet calls this generation will make (the scheduler's timesteps).</param>
/// <param name="Elapsed">Time since the generation started.</param>
public readonly record struct DiffusionProgress(int Step, int TotalSteps, TimeSpan Elapsed);
