using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Abstractions;

/// <summary>Turns token ids into the hidden states a UNet attends to (a CLIP text encoder, or any replacement).</summary>
public interface ITextEncoder : IDisposable
{
    /// <summary>Width of each hidden state (the UNet's <c>cross_attention_dim</c>).</summary>
    int HiddenSize { get; }

    /// <summary>Number of positions the encoder takes (77 for CLIP).</summary>
    int MaxPositions { get; }

    /// <summary>The device the weights live on.</summary>
    Device Device { get; }

    /// <summary>The dtype the weights are held in.</summary>
    ScalarType DType { get; }

    /// <summary>
    /// Encodes a batch of token ids <c>[batch, positions]</c> (int64, any device). With <paramref name="clipSkip"/> = 0 this
    /// is the last hidden state; with <c>n</c> &gt; 0 it is the hidden state <c>n</c> layers before the last, passed through
    /// the final layer norm, as the reference pipeline's <c>clip_skip</c> does. Returns <c>[batch, positions, HiddenSize]</c>
    /// on <see cref="Device"/> in <see cref="DType"/>.
    /// </summary>
    Tensor Encode(Tensor inputIds, int clipSkip = 0);

    /// <summary>
    /// Width of <see cref="TextEncoderOutput.Pooled"/>: the <c>projection_dim</c> of an encoder with a text projection
    /// (<c>CLIPTextModelWithProjection</c>), otherwise <see cref="HiddenSize"/>.
    /// </summary>
    int PooledSize => HiddenSize;

    /// <summary>
    /// The hidden state <paramref name="fromEnd"/> places from the end of the encoder's hidden states, counted as the
    /// reference's <c>hidden_states[-fromEnd]</c> (1: the last layer's output, 2: the penultimate one, as SDXL uses;
    /// no final layer norm), and with <paramref name="pooled"/> the pooled output (see <see cref="TextEncoderOutput"/>).
    /// This default supports encoders that only implement <see cref="Encode"/>: it refuses.
    /// </summary>
    /// <exception cref="NotSupportedException">The encoder does not expose its hidden states.</exception>
    TextEncoderOutput EncodeHiddenStates(Tensor inputIds, int fromEnd, bool pooled)
        => throw new NotSupportedException($"{GetType().Name} does not expose its hidden states and pooled output, which SDXL needs; implement {nameof(ITextEncoder)}.{nameof(EncodeHiddenStates)}.");
}
