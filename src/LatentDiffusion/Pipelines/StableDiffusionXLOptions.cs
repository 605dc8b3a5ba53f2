namespace LatentDiffusion.Pipelines;

/// <summary>
/// The pipeline-level settings of an SDXL model, as its <c>model_index.json</c> gives them (the reference's
/// <c>StableDiffusionXLPipeline</c> / <c>StableDiffusionXLImg2ImgPipeline</c> config).
/// </summary>
public sealed record StableDiffusionXLOptions
{
    /// <summary>
    /// An absent negative prompt gives zero negative embeddings instead of the encoded empty prompt
    /// (<c>force_zeros_for_empty_prompt</c>; true for the public SDXL base, false for the refiner). An explicit empty
    /// negative prompt is always encoded.
    /// </summary>
    public bool ForceZerosForEmptyPrompt { get; init; } = true;

    /// <summary>
    /// The UNet is conditioned on an aesthetic score instead of the target size (<c>requires_aesthetics_score</c>; the
    /// refiner): time ids <c>[original h, original w, crop top, crop left, score]</c>.
    /// </summary>
    public bool RequiresAestheticsScore { get; init; }
}
