using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>How to generate; an immutable record with the reference pipeline's defaults.</summary>
public sealed record GenerationOptions
{
    /// <summary>
    /// What not to draw (the unconditional half of classifier-free guidance). Null means the empty prompt; on an SDXL model
    /// whose <c>force_zeros_for_empty_prompt</c> is set (the base), null means zero embeddings instead.
    /// </summary>
    public string? NegativePrompt { get; init; }

    /// <summary>Denoising steps (the reference's <c>num_inference_steps</c>). Default 50.</summary>
    public int Steps { get; init; } = 50;

    /// <summary>Classifier-free guidance scale; guidance is off at 1 or below. Default 7.5.</summary>
    public double GuidanceScale { get; init; } = 7.5;

    /// <summary>Guidance rescale φ from "Common Diffusion Noise Schedules and Sample Steps are Flawed"; 0 disables it.</summary>
    public double GuidanceRescale { get; init; }

    /// <summary>
    /// Layers to skip at the end of the text encoder (0: last hidden state; 1: penultimate, layer-normed). SDXL always
    /// reads the penultimate layer without the final norm and counts from there (1: <c>hidden_states[-3]</c>), as the reference does.
    /// </summary>
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

    /// <summary>
    /// Image-to-image and inpainting: how much of the start image to re-noise, in [0, 1]; it keeps <c>int(Steps × Strength)</c>
    /// steps. Null (the default): the reference pipeline's default for the mode and model, as
    /// <see cref="StableDiffusionPipeline.StrengthFor"/> gives it: image-to-image 0.8 (SDXL: 0.3), inpainting 1.0 (SDXL: 0.9999).
    /// </summary>
    public double? Strength { get; init; }

    /// <summary>Return the final latents in <see cref="GenerationResult.Latents"/>.</summary>
    public bool ReturnLatents { get; init; }

    /// <summary>Called after each step; can read or replace the latents.</summary>
    public StepCallback? OnStep { get; init; }

    /// <summary>SDXL: the prompt for the second text encoder (the reference's <c>prompt_2</c>); null or empty uses the prompt.</summary>
    public string? Prompt2 { get; init; }

    /// <summary>SDXL: the negative prompt for the second text encoder (<c>negative_prompt_2</c>); null or empty uses <see cref="NegativePrompt"/>.</summary>
    public string? NegativePrompt2 { get; init; }

    /// <summary>
    /// SDXL: ready pooled prompt embeddings <c>[batch, width]</c> (the reference's <c>pooled_prompt_embeds</c>), required
    /// with <see cref="PromptEmbeddings"/> on an SDXL model.
    /// </summary>
    public Tensor? PooledPromptEmbeddings { get; init; }

    /// <summary>SDXL: ready negative pooled prompt embeddings, used with <see cref="NegativePromptEmbeddings"/>.</summary>
    public Tensor? NegativePooledPromptEmbeddings { get; init; }

    /// <summary>SDXL micro-conditioning: the size (height, width) the image is said to come from; null for the image's own size.</summary>
    public (int Height, int Width)? OriginalSize { get; init; }

    /// <summary>SDXL micro-conditioning: the top-left corner (top, left) of the crop the image is said to be; null for (0, 0).</summary>
    public (int Top, int Left)? CropsCoordsTopLeft { get; init; }

    /// <summary>SDXL micro-conditioning: the size (height, width) asked for; null for the image's own size.</summary>
    public (int Height, int Width)? TargetSize { get; init; }

    /// <summary>
    /// SDXL: <see cref="OriginalSize"/> for the unconditional half of guidance (<c>negative_original_size</c>). Text to image
    /// uses the negative values only when both this and <see cref="NegativeTargetSize"/> are given, as the reference does.
    /// </summary>
    public (int Height, int Width)? NegativeOriginalSize { get; init; }

    /// <summary>SDXL: <see cref="CropsCoordsTopLeft"/> for the unconditional half (<c>negative_crops_coords_top_left</c>); null for (0, 0).</summary>
    public (int Top, int Left)? NegativeCropsCoordsTopLeft { get; init; }

    /// <summary>SDXL: <see cref="TargetSize"/> for the unconditional half (<c>negative_target_size</c>).</summary>
    public (int Height, int Width)? NegativeTargetSize { get; init; }

    /// <summary>SDXL refiner (<c>requires_aesthetics_score</c>): the aesthetic score conditioned on. Default 6.</summary>
    public double AestheticScore { get; init; } = 6.0;

    /// <summary>SDXL refiner: the aesthetic score of the unconditional half. Default 2.5.</summary>
    public double NegativeAestheticScore { get; init; } = 2.5;

    /// <summary>
    /// Stop denoising at this fraction of the schedule, in (0, 1) (the reference's <c>denoising_end</c>): the steps whose
    /// timestep is below <c>round(T - DenoisingEnd·T)</c> are left out. With <see cref="ReturnLatents"/> the latents are
    /// handed to a second model (an SDXL refiner) run with the same value as <see cref="DenoisingStart"/>.
    /// </summary>
    public double? DenoisingEnd { get; init; }

    /// <summary>
    /// Image-to-image: start denoising at this fraction of the schedule, in (0, 1) (the reference's
    /// <c>denoising_start</c>), ignoring <see cref="Strength"/> and adding no noise: the start is taken as already noised to
    /// that point. The start is the <see cref="InitImage"/> (encoded), or <see cref="Latents"/> returned by a first model
    /// run with the same value as <see cref="DenoisingEnd"/> (the ensemble of expert denoisers). SDXL inpainting takes it
    /// too, with a <see cref="Mask"/> and the init image or those latents (the reference's base + refiner hand-off).
    /// </summary>
    public double? DenoisingStart { get; init; }

    /// <summary>
    /// How the prompt and negative prompt are read: AUTOMATIC1111's attention syntax (the default: <c>(word:1.3)</c>,
    /// <c>[word]</c>, <c>BREAK</c>, <c>\(</c> for a literal parenthesis) or <see cref="Pipelines.PromptSyntax.None"/>
    /// (plain text, as the reference pipeline reads it). A prompt without syntax is encoded the same either way.
    /// </summary>
    public PromptSyntax PromptSyntax { get; init; } = PromptSyntax.A1111;

    /// <summary>
    /// Cut a prompt longer than the text encoder takes (75 tokens for CLIP) and warn, as the reference pipeline does.
    /// False (the default) encodes a long prompt in 75-token chunks, each with its own start and end token, and
    /// concatenates them (AUTOMATIC1111's convention); the negative prompt is padded to the same number of chunks.
    /// </summary>
    public bool TruncateLongPrompts { get; init; }

    /// <summary>
    /// The LoRAs this generation applies, by the name they were loaded under, each with its scale; loaded LoRAs not
    /// named are left out. Null (the default) applies every loaded LoRA with its own scale. See docs/lora.md.
    /// </summary>
    public IReadOnlyList<LatentDiffusion.Adapters.LoraWeight>? Loras { get; init; }

    /// <summary>
    /// Inpainting: which part of <see cref="InitImage"/> to repaint, as the reference's <c>mask_image</c>. White (any pixel
    /// whose gray value is at least half intensity) is repainted, black is kept; the mask is resized to the generation's
    /// size, so it may be of another size than the init image. Needs an init image; <see cref="Strength"/> applies as in
    /// image-to-image (1 repaints the masked part from pure noise; the reference's inpainting pipeline defaults to 1, its
    /// SDXL one to 0.9999, this record to 0.8). SD 1.x/2.x and SDXL models alike. A 9-channel inpainting UNet takes the mask and the
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
