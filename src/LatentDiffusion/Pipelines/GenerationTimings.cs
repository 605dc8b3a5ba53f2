namespace LatentDiffusion.Pipelines;

/// <summary>
/// How long the phases of one generation took, measured on the calling thread. On a GPU, work is queued
/// asynchronously, so part of one phase may be counted in the next; the total is exact.
/// </summary>
/// <param name="TextEncoding">Tokenizing and encoding the prompt and the negative prompt.</param>
/// <param name="Denoising">The denoising loop (every UNet call and scheduler step).</param>
/// <param name="Decoding">The VAE decoding and the conversion to images.</param>
/// <param name="Total">The whole generation, including preparing the latents (and, for image-to-image, encoding the init image).</param>
/// <param name="DenoiserCalls">UNet calls made: the scheduler's timesteps, which can be more than the steps asked for (PNDM adds one, Heun and KDPM2 take two per step).</param>
public sealed record GenerationTimings(TimeSpan TextEncoding, TimeSpan Denoising, TimeSpan Decoding, TimeSpan Total, int DenoiserCalls);
