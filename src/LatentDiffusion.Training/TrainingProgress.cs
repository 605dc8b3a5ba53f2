namespace LatentDiffusion.Training;

/// <summary>Progress of a training run, reported after every optimisation step.</summary>
/// <param name="Step">Optimisation steps done so far in the trainer's life (resumed steps included).</param>
/// <param name="TotalSteps">The step count the current <c>Train</c> call ends at.</param>
/// <param name="Loss">The loss of the step just taken.</param>
/// <param name="LearningRate">The learning rate that step used (after warm-up scaling).</param>
/// <param name="Elapsed">Wall time since the current <c>Train</c> call began.</param>
public sealed record TrainingProgress(int Step, int TotalSteps, float Loss, double LearningRate, TimeSpan Elapsed);
