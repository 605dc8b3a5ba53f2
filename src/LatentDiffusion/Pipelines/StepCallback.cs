using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>What a per-step callback sees after each denoising step.</summary>
/// <param name="Step">Steps done (1-based).</param>
/// <param name="TotalSteps">Steps this generation will run.</param>
/// <param name="Timestep">The timestep just denoised.</param>
/// <param name="Latents">The current latents; owned by the pipeline, valid only during the call.</param>
public sealed record StepCallbackArgs(int Step, int TotalSteps, double Timestep, Tensor Latents);

/// <summary>
/// Called after each denoising step. Return null to keep the latents, or a new tensor of the same shape to replace them
/// (the pipeline takes ownership of the returned tensor).
/// </summary>
public delegate Tensor? StepCallback(StepCallbackArgs args);
