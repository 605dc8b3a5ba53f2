using LatentDiffusion.Abstractions;
using LatentDiffusion.Runtime;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>SDXL in the same pipeline: two text encoders, the UNet's added conditions, the expert hand-off.</summary>
public sealed partial class StableDiffusionPipeline
{
    private SdxlConditioner? _xl;

    /// <summary>
    /// Composes an SDXL pipeline (the reference's <c>StableDiffusionXLPipeline</c> and <c>StableDiffusionXLImg2ImgPipeline</c>
    /// in one): CLIP ViT-L as <paramref name="textEncoder"/> and OpenCLIP bigG with its projection as
    /// <paramref name="textEncoder2"/>, whose penultimate hidden states are concatenated as the context; the second
    /// encoder's pooled output and the micro-conditioning time ids go to the UNet as <see cref="AddedConditions"/>. A
    /// refiner has no first encoder: pass null for <paramref name="tokenizer"/> and <paramref name="textEncoder"/>. Owns
    /// the components unless <paramref name="leaveComponentsOpen"/> is true.
    /// </summary>
    /// <param name="tokenizer">The first tokenizer (pads with the end token), or null for a refiner.</param>
    /// <param name="textEncoder">The first text encoder, or null for a refiner.</param>
    /// <param name="tokenizer2">The second tokenizer (pads with <c>!</c>).</param>
    /// <param name="textEncoder2">The second text encoder, with a pooled output (<see cref="ITextEncoder.EncodeHiddenStates"/>).</param>
    /// <param name="unet">The UNet; it must take added conditions (<see cref="IUNet.AddedConditionsWidth"/>).</param>
    /// <param name="vae">The autoencoder.</param>
    /// <param name="scheduler">The default scheduler.</param>
    /// <param name="settings">The model_index.json settings (zeroed empty negative prompt, aesthetic score); null for SDXL base's.</param>
    /// <param name="options">Logging, VAE slicing and tiling, and the LoRAs to load (<see cref="PipelineOptions.Loras"/>); the
    /// device, dtype and the other loading options (threads, files, variant) do not apply to components already built.</param>
    /// <param name="leaveComponentsOpen">True when the pipeline must not dispose the components.</param>
    /// <exception cref="ArgumentException">One encoder is given without its tokenizer, or the widths do not fit the UNet
    /// (context width, or pooled width plus time ids against its added conditioning).</exception>
    public StableDiffusionPipeline(ITokenizer? tokenizer, ITextEncoder? textEncoder, ITokenizer tokenizer2, ITextEncoder textEncoder2, IUNet unet, IVae vae,
        IScheduler scheduler, StableDiffusionXLOptions? settings = null, PipelineOptions? options = null, bool leaveComponentsOpen = false)
    {
        if ((tokenizer is null) != (textEncoder is null))
            throw new ArgumentException("Give the first tokenizer and text encoder together, or neither (a refiner).");
        _ownsComponents = !leaveComponentsOpen;
        Tokenizer2 = tokenizer2 ?? throw new ArgumentNullException(nameof(tokenizer2));
        TextEncoder2 = textEncoder2 ?? throw new ArgumentNullException(nameof(textEncoder2));
        Tokenizer = tokenizer ?? tokenizer2;
        TextEncoder = textEncoder ?? textEncoder2;
        UNet = unet ?? throw new ArgumentNullException(nameof(unet));
        Vae = vae ?? throw new ArgumentNullException(nameof(vae));
        Scheduler = scheduler ?? throw new ArgumentNullException(nameof(scheduler));
        XLOptions = settings ?? new StableDiffusionXLOptions();
        options ??= new PipelineOptions();
        _logger = options.LoggerFactory?.CreateLogger<StableDiffusionPipeline>() ?? (ILogger)NullLogger.Instance;
        _promptEncoder = new PromptEncoder(Tokenizer, TextEncoder, _logger);
        _xl = new SdxlConditioner(tokenizer, textEncoder, tokenizer2, textEncoder2, XLOptions, _logger);
        _runs = new RunTracker(ReleaseComponents);
        vae.UseSlicing |= options.VaeSlicing;
        vae.UseTiling |= options.VaeTiling;
        if (_xl.ContextWidth != unet.CrossAttentionDim)
            throw new ArgumentException($"The text encoders' hidden sizes ({(textEncoder is null ? "" : textEncoder.HiddenSize + " + ")}{textEncoder2.HiddenSize} = {_xl.ContextWidth}) do not match the UNet's cross_attention_dim ({unet.CrossAttentionDim}).");
        if (unet.AddedConditionsWidth is not int added || unet.AddedTimeIdWidth is not int idWidth)
            throw new ArgumentException("The UNet takes no added conditions (addition_embed_type is not \"text_time\"): it is not an SDXL UNet.");
        int expected = _xl.PooledWidth + _xl.TimeIdCount * idWidth;
        if (expected != added)
            throw new ArgumentException($"The UNet's projection_class_embeddings_input_dim is {added}, but the pooled text width {_xl.PooledWidth} + {_xl.TimeIdCount} time ids x {idWidth} = {expected}" +
                (XLOptions.RequiresAestheticsScore ? " (requires_aesthetics_score is true: a refiner's 5 ids)." : " (requires_aesthetics_score is false: a base model's 6 ids; a refiner needs it true)."));
        UseFreeWeightsAfterUse(options);
        LoadLoras(options.Loras);
    }

    /// <summary>True for an SDXL pipeline (two text encoders, added conditions).</summary>
    public bool IsStableDiffusionXL => _xl is not null;

    /// <summary>SDXL: the settings from model_index.json; null for SD 1.x/2.x.</summary>
    public StableDiffusionXLOptions? XLOptions { get; }

    /// <summary>SDXL: the second tokenizer; null for SD 1.x/2.x.</summary>
    public ITokenizer? Tokenizer2 { get; private set; }

    /// <summary>SDXL: the second text encoder (with the pooled projection); null for SD 1.x/2.x. A refiner's only encoder is also <see cref="TextEncoder"/>.</summary>
    public ITextEncoder? TextEncoder2 { get; }

    /// <summary>The context and, for SDXL, the added conditions, as one batch <c>[negative; positive]</c> when guiding.</summary>
    private (Tensor Context, AddedConditions? Added) EncodeConditioning(string prompt, GenerationOptions options, int perPrompt, bool guidance, ScalarType dtype, Device device)
    {
        if (_xl is null) return (EncodeContext(prompt, options, perPrompt, guidance, dtype, device), null);
        var (w, h) = Size(options);
        bool imageToImage = InitImageSize(options) is not null || options.DenoisingStart is not null;
        return _xl.Encode(prompt, options, perPrompt, guidance, w, h, imageToImage, dtype, device);
    }

    /// <summary>
    /// Image to image from <see cref="GenerationOptions.DenoisingStart"/>: the timesteps below its cutoff, and the start
    /// latents as they are (no noise added): the encoded init image, or the given latents of a first model's run.
    /// </summary>
    private (IReadOnlyList<double> Timesteps, Tensor Latents) PrepareFromDenoisingStart(GenerationOptions options, Image<Rgb24>? initImage, int perPrompt,
        Device device, ScalarType dtype, ImageGenerators generators, ISchedulerRun run, int trainTimesteps, CancellationToken cancellationToken)
    {
        var timesteps = DenoisingWindow.FromStart(run, options.DenoisingStart!.Value, trainTimesteps);
        var (w, h) = Size(options);
        if (initImage is null)
        {
            long[] shape = [perPrompt, UNet.InChannels, h / Vae.ScaleFactor, w / Vae.ScaleFactor];
            var given = options.Latents!;
            if (!given.shape.SequenceEqual(shape))
                throw new ArgumentException($"Latents must have shape [{string.Join(", ", shape)}] for this size and image count; got [{string.Join(", ", given.shape)}].", nameof(options));
            return (timesteps, given.to(dtype, device));
        }
        // The init image is encoded and sampled as for image to image, but no noise is added.
        var image = ImageConversion.ToTensor(initImage, w, h).to(Vae.DType, device);
        using var posterior = Vae.Encode(image, cancellationToken);
        var latents = generators.PerImage
            ? cat(generators.Generators.Select(g => (posterior.Sample(g) * Vae.ScalingFactor).to(dtype)).ToArray(), 0)
            : (posterior.Sample(generators.First) * Vae.ScalingFactor).to(dtype);
        if (!generators.PerImage && perPrompt > 1) latents = cat(Enumerable.Repeat(latents, perPrompt).ToArray(), 0);
        return (timesteps, latents);
    }

    /// <summary>
    /// The image size of latents handed over by a first model (<see cref="GenerationOptions.DenoisingStart"/> with
    /// <see cref="GenerationOptions.Latents"/>), as the reference's image-to-image takes its size from them; null otherwise.
    /// </summary>
    private (int Width, int Height)? HandedOverLatentsSize(GenerationOptions options)
        => options.DenoisingStart is not null && InitImageSize(options) is null && options.Latents is { } l && l.dim() == 4
            ? ((int)Math.Min(l.shape[3] * Vae.ScaleFactor, int.MaxValue), (int)Math.Min(l.shape[2] * Vae.ScaleFactor, int.MaxValue))
            : null;

    private void ValidateXl(string? prompt, GenerationOptions o)
    {
        foreach (var (name, value) in new[] { (nameof(o.DenoisingStart), o.DenoisingStart), (nameof(o.DenoisingEnd), o.DenoisingEnd) })
            if (value is double v && !(v > 0 && v < 1))
                throw new ArgumentOutOfRangeException(name, v, $"{name} must be a fraction of the schedule strictly between 0 and 1.");
        if (o.DenoisingStart is double start && o.DenoisingEnd is double end && start >= end)
            throw new ArgumentOutOfRangeException(nameof(o.DenoisingStart), start, $"DenoisingStart ({start:G6}) must be below DenoisingEnd ({end:G6}).");
        if (o.DenoisingStart is not null && InitImageSize(o) is null && o.Latents is null)
            throw new ArgumentException("DenoisingStart needs a start: an InitImage, or the Latents a first model returned (run with DenoisingEnd and ReturnLatents).");
        foreach (var (name, size) in new[] { (nameof(o.OriginalSize), o.OriginalSize), (nameof(o.TargetSize), o.TargetSize), (nameof(o.NegativeOriginalSize), o.NegativeOriginalSize), (nameof(o.NegativeTargetSize), o.NegativeTargetSize) })
            if (size is { } s && (s.Height <= 0 || s.Width <= 0))
                throw new ArgumentOutOfRangeException(name, s, $"{name} must be positive (height, width).");
        foreach (var (name, crop) in new[] { (nameof(o.CropsCoordsTopLeft), o.CropsCoordsTopLeft), (nameof(o.NegativeCropsCoordsTopLeft), o.NegativeCropsCoordsTopLeft) })
            if (crop is { } c && (c.Top < 0 || c.Left < 0))
                throw new ArgumentOutOfRangeException(name, c, $"{name} cannot be negative.");
        if (!double.IsFinite(o.AestheticScore) || !double.IsFinite(o.NegativeAestheticScore))
            throw new ArgumentOutOfRangeException(nameof(o.AestheticScore), "The aesthetic scores must be finite numbers.");
        if (_xl is null && (o.Prompt2 is not null || o.NegativePrompt2 is not null || o.PooledPromptEmbeddings is not null || o.NegativePooledPromptEmbeddings is not null))
            throw new ArgumentException("Prompt2, NegativePrompt2 and pooled prompt embeddings are SDXL options; this is an SD 1.x/2.x model with one text encoder.");
        if (_xl is not null && prompt is null && o.PromptEmbeddings is not null && o.PooledPromptEmbeddings is null)
            throw new ArgumentException("An SDXL model needs PooledPromptEmbeddings together with PromptEmbeddings (the reference's pooled_prompt_embeds).");
    }
}
