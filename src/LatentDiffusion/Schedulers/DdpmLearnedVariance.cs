using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// DDPM with a learned variance (Nichol &amp; Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models"): the
/// model outputs twice the sample's channels, the prediction then the variance. <c>learned</c> takes the second half as
/// the variance itself; <c>learned_range</c> as v ∈ [−1, 1] interpolating the log variance between the posterior's
/// β̃_t and β_t: log σ² = ((v+1)/2)·log β_t + (1 − (v+1)/2)·log β̃_t. As the reference's DDPMScheduler, float32.
/// </summary>
internal static class DdpmLearnedVariance
{
    /// <summary>Splits the model output into the prediction and the predicted variance along channels.</summary>
    /// <exception cref="ArgumentException">The output does not have twice the sample's channels.</exception>
    public static (Tensor Prediction, Tensor Variance) Split(Tensor modelOutput, Tensor sample, string varianceType)
    {
        long c = sample.shape[1];
        if (modelOutput.dim() < 2 || modelOutput.shape[1] != 2 * c)
            throw new ArgumentException($"DDPMScheduler with variance_type '{varianceType}' needs a model output with twice the sample's {c} channels (prediction, then variance); got shape [{string.Join(", ", modelOutput.shape)}].", nameof(modelOutput));
        var parts = modelOutput.split(c, 1);
        return (parts[0], parts[1]);
    }

    /// <summary>The per-element standard deviation of the fresh noise: sqrt(v) for learned, exp(½·log σ²) for learned_range.</summary>
    public static Tensor Std(string varianceType, Tensor predicted, float posteriorVariance, float currentBeta)
    {
        if (varianceType == "learned") return predicted.pow(0.5);
        float minLog = MathF.Log(posteriorVariance), maxLog = MathF.Log(currentBeta);
        var frac = (predicted + 1) / 2;
        var logVariance = frac * maxLog + (1 - frac) * minLog;
        return (0.5 * logVariance).exp();
    }
}
