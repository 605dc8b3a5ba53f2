using static TorchSharp.torch;

namespace LatentDiffusion.Abstractions;

/// <summary>The denoising network: predicts noise (or v, or x₀, as the model was trained) from a noisy latent.</summary>
public interface IUNet : IDisposable
{
    /// <summary>Latent channels taken in (4 for Stable Diffusion).</summary>
    int InChannels { get; }

    /// <summary>Channels predicted.</summary>
    int OutChannels { get; }

    /// <summary>The latent side the model was trained at (<c>sample_size</c>); the default image side is this times the VAE's scale factor.</summary>
    int SampleSize { get; }

    /// <summary>Width of the text context it attends to.</summary>
    int CrossAttentionDim { get; }

    /// <summary>The device the weights live on.</summary>
    Device Device { get; }

    /// <summary>The dtype the weights are held in.</summary>
    ScalarType DType { get; }

    /// <summary>
    /// One forward pass. <paramref name="sample"/> <c>[batch, InChannels, h, w]</c>; <paramref name="timestep"/> a scalar or
    /// <c>[batch]</c> tensor (integer or fractional); <paramref name="encoderHiddenStates"/> <c>[batch, tokens, CrossAttentionDim]</c>.
    /// Returns <c>[batch, OutChannels, h, w]</c>.
    /// </summary>
    Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates);

    /// <summary>
    /// As <see cref="Forward(Tensor, Tensor, Tensor)"/>, stopping with <see cref="OperationCanceledException"/> when
    /// <paramref name="cancellationToken"/> is cancelled. Implementations check it between their blocks, so that one
    /// forward pass at a large size does not outlast a cancellation; this default checks it once, before the pass.
    /// </summary>
    /// <exception cref="OperationCanceledException">The token was cancelled; nothing the pass allocated is left alive.</exception>
    Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return Forward(sample, timestep, encoderHiddenStates);
    }

    /// <summary>
    /// As <see cref="Forward(Tensor, Tensor, Tensor, CancellationToken)"/>, with the generation's
    /// <paramref name="crossAttentionCache"/>: a UNet may keep the projections of <paramref name="encoderHiddenStates"/>
    /// there across the steps of one generation (the context is the same tensor at every step). This default ignores the
    /// cache.
    /// </summary>
    /// <exception cref="OperationCanceledException">The token was cancelled; nothing the pass allocated is left alive.</exception>
    Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, CrossAttentionCache? crossAttentionCache, CancellationToken cancellationToken)
        => Forward(sample, timestep, encoderHiddenStates, cancellationToken);

    /// <summary>
    /// The input width of the added conditioning (<see cref="AddedConditions"/>: pooled text width plus the time ids'
    /// features), or null when the UNet takes none (SD 1.x/2.x). This default: null.
    /// </summary>
    int? AddedConditionsWidth => null;

    /// <summary>
    /// The width of the sinusoidal features of one time id of <see cref="AddedConditions.TimeIds"/>, or null when the UNet
    /// takes no added conditioning. This default: null.
    /// </summary>
    int? AddedTimeIdWidth => null;

    /// <summary>
    /// As <see cref="Forward(Tensor, Tensor, Tensor, CrossAttentionCache?, CancellationToken)"/>, with the conditions a
    /// UNet with <see cref="AddedConditionsWidth"/> adds to its time embedding (SDXL). This default runs the plain pass
    /// when <paramref name="addedConditions"/> is null and refuses otherwise.
    /// </summary>
    /// <exception cref="NotSupportedException">Added conditions were given to a UNet that takes none.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; nothing the pass allocated is left alive.</exception>
    Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, AddedConditions? addedConditions, CrossAttentionCache? crossAttentionCache, CancellationToken cancellationToken)
        => addedConditions is null ? Forward(sample, timestep, encoderHiddenStates, crossAttentionCache, cancellationToken)
            : throw new NotSupportedException($"{GetType().Name} takes no added conditions (text embeds and time ids); it is not an SDXL UNet.");
}
