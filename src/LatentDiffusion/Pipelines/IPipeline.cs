namespace LatentDiffusion.Pipelines;

/// <summary>A loaded diffusion pipeline: prompt in, images out.</summary>
public interface IPipeline : IDisposable, IAsyncDisposable
{
    /// <summary>Generates images for <paramref name="prompt"/> with default options.</summary>
    Task<GenerationResult> GenerateAsync(string prompt, CancellationToken cancellationToken = default);

    /// <summary>
    /// Generates images for <paramref name="prompt"/>: text-to-image, or image-to-image when <see cref="GenerationOptions.InitImage"/> is set.
    /// </summary>
    /// <param name="prompt">What to draw. May be empty when <see cref="GenerationOptions.PromptEmbeddings"/> is given.</param>
    /// <param name="options">Everything else; null for the defaults.</param>
    /// <param name="progress">Told after each denoising step.</param>
    /// <param name="cancellationToken">Checked between steps and between the UNet's and the VAE's blocks and tiles; cancelling throws <see cref="OperationCanceledException"/>.</param>
    Task<GenerationResult> GenerateAsync(string prompt, GenerationOptions? options, IProgress<DiffusionProgress>? progress = null, CancellationToken cancellationToken = default);
}
