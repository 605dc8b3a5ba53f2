using static TorchSharp.torch;

namespace LatentDiffusion.Abstractions;

/// <summary>
/// The UNet conditions beside the text context that SDXL adds to the time embedding (the reference's
/// <c>added_cond_kwargs</c> for <c>addition_embed_type: "text_time"</c>).
/// </summary>
/// <param name="TextEmbeds"><c>[batch, pooled width]</c>: the pooled, projected output of the last text encoder.</param>
/// <param name="TimeIds">
/// <c>[batch, ids]</c>: the micro-conditioning, per sample <c>[original height, original width, crop top, crop left,
/// target height, target width]</c> (base), or <c>[original height, original width, crop top, crop left, aesthetic
/// score]</c> (refiner).
/// </param>
public sealed record AddedConditions(Tensor TextEmbeds, Tensor TimeIds);
