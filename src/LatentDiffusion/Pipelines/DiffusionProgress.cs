namespace LatentDiffusion.Pipelines;

/// <summary>Where a generation is: reported after each denoising step.</summary>
/// <param name="Step">Steps done (1-based).</param>
/// <param name="TotalSteps">Steps this generation will run.</param>
/// <param name="Elapsed">Time since the generation started.</param>
public readonly record struct DiffusionProgress(int Step, int TotalSteps, TimeSpan Elapsed);
