using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>How to generate; an immutable record with the reference pipeline's defaults.</summary>
public sealed record GenerationOptions
{
    /// <summary>What not to draw (the unconditional half of classifier-free guidance). Null means the empty prompt.</summary>
    public string? NegativePrompt { get; init; }

    /// <summary>Denoising steps (the reference's <c>num_inference_steps</c>). Default 50.</summary>
    public int Steps { get; init; } = 50;

    /// <summary>Classifier-free guidance scale; guidance is off at 1 or below. Default 7.5.</summary>
    public double GuidanceScale { get; init; } = 7.5;

    /// <summary>Guidance rescale φ from "Common Diffusion Noise Schedules and Sample Steps are Flawed"; 0 disables it.</summary>
    public double GuidanceRescale { get; init; }

    /// <summary>Layers to skip at the end of the text encoder (0: last hidden state; 1: penultimate, layer-normed).</summary>
    public int ClipSkip { get; init; }

    /// <summary>Images per prompt. Default 1.</summary>
    public int ImagesPerPrompt { get; init; } = 1;

    /// <summary>Image width in pixels, a multiple of 8; null for the model's native size.</summary>
    public int? Width { get; init; }

    /// <summary>Image height in pixels, a multiple of 8; null for the model's native size.</summary>
    public int? Height { get; init; }

    /// <summary>
    /// The seed: image i of the batch is drawn from its own CPU generator seeded <c>Seed + i</c> (every random number
    /// of that image, in the reference's order), so it is exactly the one image a generation with seed <c>Seed + i</c>
    /// makes. Ignored when <see cref="Generators"/> or <see cref="Generator"/> is set; null picks a random seed.
    /// <see cref="GenerationResult.Seeds"/> returns each image's seed.
    /// </summary>
    public long? Seed { get; init; }

    /// <summary>
    /// An explicit CPU generator (advanced); it is advanced by the generation. All images of a batch draw from this one
    /// stream (the reference with a single generator), so they are not the images of single generations.
    /// </summary>
    public Generator? Generator { get; init; }

    /// <summary>
    /// One explicit CPU generator per image (the reference's list of generators; advanced): image i draws every random
    /// number from <c>Generators[i]</c>. The count must equal <see cref="ImagesPerPrompt"/>. Takes precedence over
    /// <see cref="Generator"/> and <see cref="Seed"/>. A <see cref="CustomScheduler"/> of another implementation gets
    /// only the first generator for its own noise.
    /// </summary>
    public IReadOnlyList<Generator>? Generators { get; init; }

    /// <summary>A scheduler name (<c>ddim</c>, <c>euler-a</c>, <c>dpm++2m-karras</c>, ...) built from the model's scheduler config; null for the model's own.</summary>
    public string? Scheduler { get; init; }

    /// <summary>A ready scheduler to use instead of <see cref="Scheduler"/> (for example one built with <c>SchedulerRegistry.FromConfig</c> from a saved config).</summary>
    public LatentDiffusion.Abstractions.IScheduler? CustomScheduler { get; init; }

    /// <summary>Scheduler config fields to override (for example <c>use_karras_sigmas = true</c>).</summary>
    public IReadOnlyDictionary<string, string>? SchedulerOverrides { get; init; }

    /// <summary>DDIM's η (0: deterministic DDIM, 1: DDPM-like). Only DDIM uses it.</summary>
    public double Eta { get; init; }

    /// <summary>Starting latents <c>[images, C, h, w]</c> instead of drawn noise (text-to-image only); multiplied by the scheduler's initial sigma, as in the reference.</summary>
    public Tensor? Latents { get; init; }

    /// <summary>Ready prompt embeddings <c>[batch, tokens, dim]</c> instead of encoding the prompt.</summary>
    public Tensor? PromptEmbeddings { get; init; }

    /// <summary>Ready negative prompt embeddings, used with <see cref="PromptEmbeddings"/>.</summary>
    public Tensor? NegativePromptEmbeddings { get; init; }

    /// <summary>The start image for image-to-image; null for text-to-image. Its size is used (floored to a multiple of 8) unless Width/Height are set.</summary>
    public Image<Rgb24>? InitImage { get; init; }

    /// <summary>
    /// The start image as raw 8-bit RGB pixels, for apps that do not use this library's ImageSharp version; the same as
    /// <see cref="InitImage"/> otherwise (give one of the two).
    /// </summary>
    public RgbImage? InitImagePixels { get; init; }

    /// <summary>Image-to-image: how much of the start image to re-noise, in [0, 1]. Default 0.8.</summary>
    public double Strength { get; init; } = 0.8;

    /// <summary>Return the final latents in <see cref="GenerationResult.Latents"/>.</summary>
    public bool ReturnLatents { get; init; }

    /// <summary>Called after each step; can read or replace the latents.</summary>
    public StepCallback? OnStep { get; init; }

    /// <summary>
    /// Inpainting: which part of <see cref="InitImage"/> to repaint, as the reference's <c>mask_image</c>. White (any pixel
    /// whose gray value is at least half intensity) is repainted, black is kept; the mask is resized to the generation's
    /// size, so it may be of another size than the init image. Needs an init image; <see cref="Strength"/> applies as in
    /// image-to-image (1 repaints the masked part from pure noise; the reference's inpainting pipeline defaults to 1, this
    /// record to 0.8). A 9-channel inpainting UNet takes the mask and the
    /// masked image as input; an ordinary 4-channel model puts the init image back outside the mask after every step.
    /// See docs/inpainting.md.
    /// </summary>
    public Image<Rgb24>? Mask { get; init; }

    /// <summary>The inpainting mask as raw 8-bit RGB pixels; the same as <see cref="Mask"/> otherwise (give one of the two).</summary>
    public RgbImage? MaskPixels { get; init; }

    /// <summary>
    /// Inpainting: repaint only the region around the mask (its bounding box grown by this many pixels and widened to the
    /// generation's aspect ratio) at the full generation size, then paste it back into the init image through the mask, as
    /// the reference's <c>padding_mask_crop</c>. The result has the init image's size; the generation's size is
    /// <see cref="Width"/>×<see cref="Height"/>, by default the model's native size (as the reference). The mask must have
    /// the init image's size. Null (the default) inpaints the whole image.
    /// </summary>
    public int? PaddingMaskCrop { get; init; }
}
