using LatentDiffusion.Abstractions;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// What the cross-attention layers of one forward pass attend to: the text context and, optionally, the generation's
/// <see cref="CrossAttentionCache"/> for its keys and values. Passed explicitly down the UNet's blocks.
/// </summary>
/// <param name="States">The context <c>[batch, tokens, crossAttentionDim]</c> (the text encoder's hidden states).</param>
/// <param name="Cache">Where projections of <paramref name="States"/> are kept across the steps of a generation, or null.</param>
public sealed record CrossAttentionContext(Tensor States, CrossAttentionCache? Cache = null);
