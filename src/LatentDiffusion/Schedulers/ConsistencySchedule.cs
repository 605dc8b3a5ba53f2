namespace LatentDiffusion.Schedulers;

/// <summary>
/// The timesteps of the consistency-distilled samplers (LCM, and TCD which extends it): the distillation schedule
/// k−1, 2k−1, …, 999 (k = num_train_timesteps / original_inference_steps), newest first, of which inference takes
/// evenly spaced entries at floored indices (the reference's <c>floor(linspace(0, len, n, endpoint=False))</c>).
/// </summary>
internal static class ConsistencySchedule
{
    /// <summary>The config's <c>original_inference_steps</c>, checked against the training timesteps.</summary>
    public static int OriginalSteps(SchedulerConfigReader reader, int numTrainTimesteps)
    {
        int steps = reader.Int("original_inference_steps");
        if (steps < 1 || steps > numTrainTimesteps)
            throw new InvalidDataException($"Config '{reader.Source}': 'original_inference_steps' = {steps}, expected 1 to num_train_timesteps = {numTrainTimesteps}.");
        return steps;
    }

    /// <summary><paramref name="inferenceSteps"/> timesteps taken from the distillation schedule.</summary>
    /// <exception cref="ArgumentOutOfRangeException">More inference steps than the distillation schedule has.</exception>
    public static double[] Timesteps(int numTrainTimesteps, int originalSteps, int inferenceSteps, string className)
    {
        if (inferenceSteps > originalSteps)
            throw new ArgumentOutOfRangeException(nameof(inferenceSteps), inferenceSteps, $"{className}: inference steps cannot exceed original_inference_steps = {originalSteps}.");
        int k = numTrainTimesteps / originalSteps;
        var origin = Enumerable.Range(1, originalSteps).Select(i => (long)i * k - 1).Reverse().ToArray();
        double stride = origin.Length / (double)inferenceSteps;
        return Enumerable.Range(0, inferenceSteps).Select(i => (double)origin[(long)Math.Floor(i * stride)]).ToArray();
    }
}
