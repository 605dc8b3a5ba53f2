using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// The original DPM-Solver (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling
/// in Around 10 Steps"), which integrates the noise prediction ε̂ in λ, and its SDE variant: the reference's
/// <c>algorithm_type</c> "dpmsolver" and "sde-dpmsolver" of <c>DPMSolverMultistepScheduler</c> (deprecated there in
/// favour of the ++ forms, but still accepted). Coefficients in float32, as the reference's 0-dim tensors.
/// </summary>
internal static class DpmSolverNoisePrediction
{
    /// <summary>Whether <c>algorithm_type</c> names a noise-prediction solver.</summary>
    public static bool Applies(string algorithmType) => algorithmType is "dpmsolver" or "sde-dpmsolver";

    /// <summary>ε̂ from the model output; with thresholding, through the thresholded x̂₀ and back, as the reference.</summary>
    public static Tensor Convert(NoiseScheduleConfig config, string predictionType, Tensor modelOutput, Tensor sample, float sigma, string className)
    {
        var eps = DpmSolverMath.NoisePrediction(predictionType, modelOutput, sample, sigma, className);
        if (!config.Thresholding) return eps;
        var (alpha, sigmaT, _) = DpmSolverMath.At(sigma);
        var x0 = NoiseSchedule.Threshold((sample - sigmaT * eps) / alpha, config.DynamicThresholdingRatio, config.SampleMaxValue);
        return (sample - alpha * x0) / sigmaT;
    }

    /// <summary>First order (DDIM in λ): from σ_s to σ_t with ε̂ <paramref name="d0"/>; SDE variant with <paramref name="noise"/>.</summary>
    public static Tensor FirstOrder(Tensor x, Tensor d0, float alphaT, float sigmaT, float alphaS, float h, Tensor? noise)
    {
        float em1 = MathF.Exp(h) - 1f;
        if (noise is null) return alphaT / alphaS * x - sigmaT * em1 * d0;
        return alphaT / alphaS * x - 2f * (sigmaT * em1) * d0 + sigmaT * MathF.Sqrt(MathF.Exp(2f * h) - 1f) * noise;
    }

    /// <summary>Second order multistep: <paramref name="d1"/> the first divided difference of ε̂ (scaled by h); midpoint or Heun weighting.</summary>
    public static Tensor SecondOrder(Tensor x, Tensor d0, Tensor d1, float alphaT, float sigmaT, float alphaS0, float h, bool heun, Tensor? noise)
    {
        float em1 = MathF.Exp(h) - 1f;
        if (noise is null)
            return heun
                ? alphaT / alphaS0 * x - sigmaT * em1 * d0 - sigmaT * (em1 / h - 1f) * d1
                : alphaT / alphaS0 * x - sigmaT * em1 * d0 - 0.5f * (sigmaT * em1) * d1;
        var acc = alphaT / alphaS0 * x - 2f * (sigmaT * em1) * d0;
        acc = heun ? acc - 2f * (sigmaT * (em1 / h - 1f)) * d1 : acc - sigmaT * em1 * d1;
        return acc + sigmaT * MathF.Sqrt(MathF.Exp(2f * h) - 1f) * noise;
    }

    /// <summary>Third order multistep (ODE only; the reference has no third-order SDE-DPM-Solver).</summary>
    public static Tensor ThirdOrder(Tensor x, Tensor d0, Tensor d1, Tensor d2, float alphaT, float sigmaT, float alphaS0, float h)
    {
        float em1 = MathF.Exp(h) - 1f;
        return alphaT / alphaS0 * x - sigmaT * em1 * d0 - sigmaT * (em1 / h - 1f) * d1 - sigmaT * ((MathF.Exp(h) - 1f - h) / (h * h) - 0.5f) * d2;
    }
}
