using static TorchSharp.torch;

namespace LatentDiffusion.Abstractions;

/// <summary>The image autoencoder between pixels and latents.</summary>
public interface IVae : IDisposable
{
    /// <summary>Latents are multiplied by this after encoding and divided by it before decoding (<c>scaling_factor</c>).</summary>
    double ScalingFactor { get; }

    /// <summary>Pixels per latent along each side (8 for Stable Diffusion).</summary>
    int ScaleFactor { get; }

    /// <summary>Latent channels.</summary>
    int LatentChannels { get; }

    /// <summary>The device the weights live on.</summary>
    Device Device { get; }

    /// <summary>The dtype the weights are held in.</summary>
    ScalarType DType { get; }

    /// <summary>
    /// Encode and decode a batch one image at a time (the reference's <c>enable_slicing</c>): lower peak memory, the same
    /// result. A VAE that cannot slice keeps it false and ignores a request (setting it must not throw).
    /// </summary>
    bool UseSlicing { get; set; }

    /// <summary>
    /// Encode and decode large images in overlapping tiles (the reference's <c>enable_tiling</c>): memory bounded by the
    /// tile size, a slightly different result. A VAE that cannot tile keeps it false and ignores a request.
    /// </summary>
    bool UseTiling { get; set; }

    /// <summary>Encodes images <c>[batch, 3, H, W]</c> in [-1, 1] to the posterior over (unscaled) latents.</summary>
    DiagonalGaussian Encode(Tensor images);

    /// <summary>Decodes (unscaled) latents <c>[batch, LatentChannels, h, w]</c> to images in roughly [-1, 1].</summary>
    Tensor Decode(Tensor latents);

    /// <summary>
    /// As <see cref="Encode(Tensor)"/>, stopping with <see cref="OperationCanceledException"/> when
    /// <paramref name="cancellationToken"/> is cancelled. Implementations check it between their blocks and tiles; this
    /// default checks it once, before encoding.
    /// </summary>
    /// <exception cref="OperationCanceledException">The token was cancelled; nothing the call allocated is left alive.</exception>
    DiagonalGaussian Encode(Tensor images, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return Encode(images);
    }

    /// <summary>
    /// As <see cref="Decode(Tensor)"/>, stopping with <see cref="OperationCanceledException"/> when
    /// <paramref name="cancellationToken"/> is cancelled. Implementations check it between their blocks and tiles; this
    /// default checks it once, before decoding.
    /// </summary>
    /// <exception cref="OperationCanceledException">The token was cancelled; nothing the call allocated is left alive.</exception>
    Tensor Decode(Tensor latents, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return Decode(latents);
    }
}

/// <summary>A diagonal Gaussian over latents: the VAE encoder's posterior. Owns its tensors.</summary>
public sealed class DiagonalGaussian : IDisposable
{
    /// <summary>Creates the distribution from the encoder's moments <c>[batch, 2·C, h, w]</c> (mean, then log-variance), as the reference does (log-variance clamped to [-30, 20]).</summary>
    public DiagonalGaussian(Tensor moments)
    {
        using var scope = NewDisposeScope();
        var chunks = moments.chunk(2, 1);
        var logvar = chunks[1].clamp(-30.0, 20.0);
        Mean = chunks[0].contiguous().MoveToOuterDisposeScope();
        Std = (logvar * 0.5).exp().MoveToOuterDisposeScope();
    }

    /// <summary>The mean.</summary>
    public Tensor Mean { get; }

    /// <summary>The standard deviation.</summary>
    public Tensor Std { get; }

    /// <summary>mean + std · ε with ε drawn from <paramref name="generator"/> on the CPU (float32), so every device draws the same numbers.</summary>
    public Tensor Sample(Generator? generator)
    {
        using var scope = NewDisposeScope();
        var eps = randn(Mean.shape, dtype: ScalarType.Float32, device: CPU, generator: generator).to(Mean.dtype, Mean.device);
        return (Mean + Std * eps).MoveToOuterDisposeScope();
    }

    /// <summary>Disposes the tensors.</summary>
    public void Dispose() { Mean.Dispose(); Std.Dispose(); }
}
