using static TorchSharp.torch;

namespace LatentDiffusion.Abstractions;

/// <summary>
/// One hidden state of a text encoder and, when asked for, its pooled output: what SDXL takes from each of its two
/// encoders (transformers' <c>hidden_states[-k]</c> and <c>text_embeds</c>).
/// </summary>
/// <param name="HiddenStates"><c>[batch, positions, hidden]</c>: the output of one transformer layer, without the final layer norm.</param>
/// <param name="Pooled">
/// <c>[batch, width]</c>: the final layer-normed state at each prompt's end token, through the encoder's
/// <c>text_projection</c> when it has one (<c>CLIPTextModelWithProjection.text_embeds</c>), otherwise as it is
/// (<c>pooler_output</c>); null when not asked for.
/// </param>
public readonly record struct TextEncoderOutput(Tensor HiddenStates, Tensor? Pooled);
