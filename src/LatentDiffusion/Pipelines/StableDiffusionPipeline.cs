using System.Diagnostics;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Runtime;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// Stable Diffusion 1.x/2.x and SDXL (its constructor and conditioning in <c>StableDiffusionPipeline.Xl.cs</c>):
/// text-to-image and image-to-image with classifier-free guidance, step for step as the reference pipelines
/// (<c>StableDiffusionPipeline</c>, <c>StableDiffusionImg2ImgPipeline</c>, and their XL versions) do it. Owns its components unless composed with <c>leaveComponentsOpen</c>.
/// One instance serves any number of sequential or concurrent generations: all per-generation state lives in the
/// scheduler run and the generation's own tensors. Disposing it while generations run stops them at their next check
/// (between UNet and VAE blocks) with <see cref="ObjectDisposedException"/> and frees the weights only after the last
/// has ended.
/// </summary>
public sealed partial class StableDiffusionPipeline : IPipeline
{
    /// <summary>The largest image side accepted, in pixels.</summary>
    public const int MaxImageSide = 4096;

    private PromptEncoder _promptEncoder;
    private readonly ILogger _logger;
    private readonly bool _ownsComponents;
    private readonly RunTracker _runs;

    /// <summary>
    /// Composes a pipeline from components, each of which may be another implementation of its interface. By default the
    /// pipeline owns them and disposes the text encoder, UNet and VAE when it is disposed; pass
    /// <paramref name="leaveComponentsOpen"/> = true to compose a pipeline over parts that the caller (or another
    /// pipeline) owns and disposes.
    /// </summary>
    /// <param name="tokenizer">Prompt text to token ids.</param>
    /// <param name="textEncoder">Token ids to the context the UNet attends to.</param>
    /// <param name="unet">The denoiser.</param>
    /// <param name="vae">The autoencoder; its slicing and tiling are switched on when <paramref name="options"/> asks.</param>
    /// <param name="scheduler">The default scheduler.</param>
    /// <param name="options">Logging, VAE slicing and tiling, and the LoRAs to load (<see cref="PipelineOptions.Loras"/>); the
    /// device, dtype and the other loading options (threads, files, variant) do not apply to components already built.</param>
    /// <param name="leaveComponentsOpen">True when the pipeline must not dispose the components.</param>
    public StableDiffusionPipeline(ITokenizer tokenizer, ITextEncoder textEncoder, IUNet unet, IVae vae, IScheduler scheduler, PipelineOptions? options = null, bool leaveComponentsOpen = false)
    {
        _ownsComponents = !leaveComponentsOpen;
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        TextEncoder = textEncoder ?? throw new ArgumentNullException(nameof(textEncoder));
        UNet = unet ?? throw new ArgumentNullException(nameof(unet));
        Vae = vae ?? throw new ArgumentNullException(nameof(vae));
        Scheduler = scheduler ?? throw new ArgumentNullException(nameof(scheduler));
        options ??= new PipelineOptions();
        _logger = options.LoggerFactory?.CreateLogger<StableDiffusionPipeline>() ?? (ILogger)NullLogger.Instance;
        _promptEncoder = new PromptEncoder(tokenizer, textEncoder, _logger);
        _runs = new RunTracker(ReleaseComponents);
        // The autoencoder slices and tiles itself, with the reference's triggers (tiles only above its tile size).
        vae.UseSlicing |= options.VaeSlicing;
        vae.UseTiling |= options.VaeTiling;
        if (textEncoder.HiddenSize != unet.CrossAttentionDim)
            throw new ArgumentException($"The text encoder's hidden size ({textEncoder.HiddenSize}) does not match the UNet's cross_attention_dim ({unet.CrossAttentionDim}).");
        UseFreeWeightsAfterUse(options);
        LoadLoras(options.Loras);
    }

    /// <summary>Loads a pipeline from a diffusers folder or a single-file <c>.safetensors</c> checkpoint (format detected).</summary>
    /// <exception cref="FileNotFoundException">The path or a needed component file does not exist.</exception>
    /// <remarks>Every config is range-checked (<see cref="ModelLimits"/>) and compared with its weights' header before
    /// any component is built; tensors of a single file that no component uses are logged as a warning.</remarks>
    /// <exception cref="InvalidDataException">A file is corrupt, a config value is out of range, or the weights do not fit
    /// their config (missing, unexpected, mis-shaped, integer or non-finite tensors).</exception>
    /// <exception cref="NotSupportedException">The model uses a feature this library does not implement.</exception>
    public static Task<StableDiffusionPipeline> LoadAsync(string path, PipelineOptions? options = null, CancellationToken cancellationToken = default)
        => Task.Run(() => ModelLoader.Load(path, options ?? new PipelineOptions(), cancellationToken), cancellationToken);

    /// <summary>The tokenizer (replaced by one that knows the new tokens when a textual inversion is loaded).</summary>
    public ITokenizer Tokenizer { get; private set; }

    /// <summary>The text encoder.</summary>
    public ITextEncoder TextEncoder { get; }

    /// <summary>The denoising UNet.</summary>
    public IUNet UNet { get; }

    /// <summary>The autoencoder.</summary>
    public IVae Vae { get; }

    /// <summary>The model's own scheduler (used when <see cref="GenerationOptions.Scheduler"/> is null).</summary>
    public IScheduler Scheduler { get; }

    /// <summary>The default image side in pixels: the UNet's sample size times the VAE's scale factor.</summary>
    public int DefaultImageSize => UNet.SampleSize * Vae.ScaleFactor;

    /// <inheritdoc />
    public Task<GenerationResult> GenerateAsync(string prompt, CancellationToken cancellationToken = default)
        => GenerateAsync(prompt, null, null, cancellationToken);

    /// <inheritdoc />
    public Task<GenerationResult> GenerateAsync(string prompt, GenerationOptions? options, IProgress<DiffusionProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_runs.IsClosed, this);
        options ??= new GenerationOptions();
        Validate(prompt, options);
        return Task.Run(() => Generate(prompt, options, progress, cancellationToken), cancellationToken);
    }

    /// <summary>The same as <see cref="GenerateAsync(string, GenerationOptions?, IProgress{DiffusionProgress}?, CancellationToken)"/>, on the calling thread.</summary>
    /// <exception cref="ObjectDisposedException">The pipeline is disposed, or was disposed while this generation ran.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps and between UNet and VAE blocks).</exception>
    /// <exception cref="InvalidOperationException">The image came out with NaN or infinite values (the message names the stage that first produced them),
    /// or the pipeline was loaded with <see cref="PipelineOptions.FreeWeightsAfterUse"/> and has already generated.</exception>
    public GenerationResult Generate(string prompt, GenerationOptions? options = null, IProgress<DiffusionProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_runs.IsClosed, this);
        options ??= new GenerationOptions();
        Validate(prompt, options);
        using var run = _runs.Enter(this);
        ClaimSingleUse();
        // Disposal stops the run as a cancellation would, at the next check; it then surfaces as ObjectDisposedException.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _runs.Closing);
        try
        {
            return Run(prompt, options, progress, stop.Token);
        }
        catch (OperationCanceledException e) when (cancellationToken.IsCancellationRequested && e.CancellationToken != cancellationToken)
        {
            // Reported with the caller's token, so that a task run with it ends as cancelled rather than faulted.
            throw new OperationCanceledException(e.Message, e, cancellationToken);
        }
        catch (OperationCanceledException e) when (_runs.Closing.IsCancellationRequested)
        {
            throw new ObjectDisposedException($"{GetType().FullName}: the pipeline was disposed while this generation ran.", e);
        }
    }

    private GenerationResult Run(string prompt, GenerationOptions options, IProgress<DiffusionProgress>? progress, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        // On this, the computing thread, OpenMP must start the teams libtorch's convolutions plan for.
        TorchRuntime.EnsureFullOpenMpTeams(_logger);
        using var loras = UseLoras(options);
        var device = UNet.Device;
        var dtype = UNet.DType;
        int perPrompt = options.ImagesPerPrompt;
        bool guidance = options.GuidanceScale > 1.0;

        // One generator per image (seed + i), or the caller's: see ImageGenerators.
        using var generators = ImageGenerators.For(options, perPrompt);
        // The init image given as raw pixels becomes an ImageSharp image here, for the one resize path.
        using var pixelInit = options.InitImage is null ? options.InitImagePixels?.ToImage() : null;
        var initImage = options.InitImage ?? pixelInit;
        using var pixelMask = options.Mask is null ? options.MaskPixels?.ToImage() : null;
        var mask = options.Mask ?? pixelMask;
        // Inpainting (the reference's StableDiffusionInpaintPipeline): see Inpainting and GenerationOptions.Mask.
        Inpainting? inpainting = null;

        var scheduler = SchedulerFor(options);
        int trainTimesteps = DenoisingWindow.TrainTimesteps(scheduler);

        using var noGrad = no_grad();
        using var outer = NewDisposeScope();
        using var finite = new FiniteChecks();

        // 1. The context: [negative; positive] when guiding, as one batch.
        cancellationToken.ThrowIfCancellationRequested();
        // The text encoders' activations are freed here, before the UNet runs; only the context (and SDXL's added
        // conditions) stay.
        Tensor context;
        AddedConditions? added;
        using (NewDisposeScope())
        {
            (context, added) = EncodeConditioning(prompt, options, perPrompt, guidance, dtype, device);
            context = context.MoveToOuterDisposeScope();
            if (added is not null) added = new AddedConditions(added.TextEmbeds.MoveToOuterDisposeScope(), added.TimeIds.MoveToOuterDisposeScope());
        }
        finite.Record(options.PromptEmbeddings is null ? "the text encoder" : "the given prompt embeddings", context);
        var textEncoding = clock.Elapsed;
        FreeTextEncodersAfterUse();

        // 2. Timesteps, and for image-to-image the part of them that the strength keeps. A scheduler of this library
        // draws each image's noise from that image's generator; another IScheduler gets the first image's.
        using var run = scheduler.Start(options.Steps, generators.First);
        if (generators.PerImage && run is SchedulerRun perImageRun) perImageRun.UsePerImageGenerators(generators.Generators);
        IReadOnlyList<double> timesteps = run.Timesteps;
        Tensor latents;
        if (options.DenoisingStart is not null && mask is null)
        {
            (timesteps, latents) = PrepareFromDenoisingStart(options, initImage, perPrompt, device, dtype, generators, run, trainTimesteps, cancellationToken);
            finite.Record("the start latents", latents);
        }
        else if (mask is not null)
        {
            // SDXL inpainting may start at DenoisingStart instead (the reference's base + refiner hand-off).
            double strength = StrengthFor(options);
            timesteps = options.DenoisingStart is { } start
                ? DenoisingWindow.FromStart(run, start, trainTimesteps)
                : Img2ImgSchedule.ForStrength(run, options.Steps, strength).Item1;
            var (w, h) = Size(options);
            inpainting = Inpainting.Prepare(UNet, Vae, options, strength, initImage, mask, w, h, perPrompt, guidance, generators, run, timesteps, _logger, cancellationToken);
            latents = inpainting.Latents;
            finite.Record("the VAE encoder (the inpainting latents)", latents);
        }
        else if (initImage is null)
        {
            latents = PrepareLatents(options, perPrompt, device, dtype, generators, run);
            finite.Record(options.Latents is null ? "the initial noise" : "the given latents", latents);
        }
        else
        {
            (timesteps, _) = Img2ImgSchedule.ForStrength(run, options.Steps, StrengthFor(options));
            latents = PrepareImageLatents(options, initImage, perPrompt, device, dtype, generators, run, timesteps, cancellationToken);
            finite.Record("the VAE encoder (the init image's latents)", latents);
        }
        timesteps = DenoisingWindow.UntilEnd(timesteps, options.DenoisingEnd, trainTimesteps);

        // 3. Denoise. The timesteps go to the device in one copy, not one per step; the text context's cross-attention
        // keys and values are projected once for the whole generation.
        var denoisingStart = clock.Elapsed;
        var deviceTimesteps = tensor(timesteps.Select(v => (float)v).ToArray(), ScalarType.Float32).to(device);
        using var kvCache = new CrossAttentionCache();
        for (int i = 0; i < timesteps.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            double t = timesteps[i];
            using (var step = NewDisposeScope())
            {
                var modelInput = guidance ? cat([latents, latents], 0) : latents;
                var scaled = run.ScaleModelInput(modelInput, t);
                if (inpainting is not null) scaled = inpainting.ModelInput(scaled);
                var noisePred = UNet.Forward(scaled, deviceTimesteps[i], context, added, kvCache, cancellationToken);
                finite.Record($"the UNet at step {i + 1} of {timesteps.Count}", noisePred);
                if (guidance)
                {
                    var halves = noisePred.chunk(2, 0);
                    var (uncond, text) = (halves[0], halves[1]);
                    noisePred = uncond + options.GuidanceScale * (text - uncond);
                    if (options.GuidanceRescale > 0) noisePred = RescaleNoiseCfg(noisePred, text, options.GuidanceRescale);
                    finite.Record($"classifier-free guidance at step {i + 1} of {timesteps.Count} (guidance scale {options.GuidanceScale:G6})", noisePred);
                }
                var next = run.Step(noisePred, t, latents);
                if (inpainting is not null) next = inpainting.AfterStep(next, i, timesteps);
                latents.Dispose();
                latents = next.MoveToOuterDisposeScope();
                finite.Record($"the scheduler ({run.GetType().Name}) at step {i + 1} of {timesteps.Count}", latents);
            }
            if (options.OnStep is { } callback)
            {
                var replaced = callback(new StepCallbackArgs(i + 1, timesteps.Count, t, latents));
                if (replaced is not null && !ReferenceEquals(replaced, latents))
                {
                    if (!replaced.shape.SequenceEqual(latents.shape))
                        throw new InvalidOperationException($"The step callback returned latents of shape [{string.Join(", ", replaced.shape)}]; expected [{string.Join(", ", latents.shape)}].");
                    latents.Dispose();
                    latents = replaced.to(dtype, device);
                    if (!ReferenceEquals(latents, replaced)) replaced.Dispose();
                    finite.Record($"the latents the step callback returned at step {i + 1}", latents);
                }
            }
            progress?.Report(new DiffusionProgress(i + 1, timesteps.Count, clock.Elapsed));
        }
        cancellationToken.ThrowIfCancellationRequested();
        var denoisingEnd = clock.Elapsed;
        // The UNet's cross-attention keys and values are not needed by the decoder.
        kvCache.Dispose();
        FreeUNetAfterUse();

        // 4. Decode, and refuse a non-finite image rather than return it as black.
        var decoded = DecodeLatents(latents, cancellationToken);
        finite.ThrowIfImageNotFinite(decoded);
        var pixels = ImageConversion.ToPixels(decoded).MoveToOuterDisposeScope();
        var images = Enumerable.Range(0, (int)pixels.shape[0]).Select(i => ImageConversion.ToImage(pixels, i)).ToList();
        if (inpainting is not null) (images, pixels) = inpainting.Overlay(images, pixels);
        var keptLatents = options.ReturnLatents ? latents.to(ScalarType.Float32).cpu().MoveToOuterDisposeScope() : null;
        var total = clock.Elapsed;
        var timings = new GenerationTimings(textEncoding, denoisingEnd - denoisingStart, total - denoisingEnd, total, timesteps.Count);
        return new GenerationResult(images, pixels, keptLatents, generators.Seeds, timings);
    }

    private Tensor EncodeContext(string prompt, GenerationOptions options, int perPrompt, bool guidance, ScalarType dtype, Device device)
    {
        var (encoded, encodedNegative) = _promptEncoder.Encode(prompt, options, guidance);
        var positive = RepeatPerPrompt(encoded.to(dtype, device), perPrompt);
        if (!guidance) return positive;
        var negative = RepeatPerPrompt(encodedNegative!.to(dtype, device), perPrompt);
        if (!negative.shape.SequenceEqual(positive.shape))
            throw new ArgumentException($"Negative prompt embeddings [{string.Join(", ", negative.shape)}] do not match the prompt embeddings [{string.Join(", ", positive.shape)}].");
        return cat([negative, positive], 0);
    }

    /// <summary>Each prompt's embeddings <c>[batch, tokens, hidden]</c> repeated for its <paramref name="perPrompt"/> images, in order (the reference's repeat and view).</summary>
    internal static Tensor RepeatPerPrompt(Tensor embeds, int perPrompt)
        => perPrompt == 1 ? embeds : embeds.repeat(1, perPrompt, 1).view(embeds.shape[0] * perPrompt, embeds.shape[1], -1);

    private (int Width, int Height) Size(GenerationOptions options)
    {
        // With PaddingMaskCrop the size is that of the generation the crop is resized to (the reference's default).
        var init = options.PaddingMaskCrop is null ? InitImageSize(options) ?? HandedOverLatentsSize(options) : null;
        int w = options.Width ?? (init is { } a ? a.Width / 8 * 8 : DefaultImageSize);
        int h = options.Height ?? (init is { } b ? b.Height / 8 * 8 : DefaultImageSize);
        return (w, h);
    }

    /// <summary>The size of the init image, given as an ImageSharp image or as raw pixels; null for text-to-image.</summary>
    private static (int Width, int Height)? InitImageSize(GenerationOptions options)
    {
        if (options.InitImage is { } image) return (image.Width, image.Height);
        if (options.InitImagePixels is { } pixels) return (pixels.Width, pixels.Height);
        return null;
    }

    private Tensor PrepareLatents(GenerationOptions options, int perPrompt, Device device, ScalarType dtype, ImageGenerators generators, ISchedulerRun run)
    {
        var (w, h) = Size(options);
        long[] shape = [perPrompt, Vae.LatentChannels, h / Vae.ScaleFactor, w / Vae.ScaleFactor];
        Tensor start;
        if (options.Latents is { } given)
        {
            if (!given.shape.SequenceEqual(shape))
                throw new ArgumentException($"Latents must have shape [{string.Join(", ", shape)}] for this size and image count; got [{string.Join(", ", given.shape)}].", nameof(options));
            start = given.to(dtype, device);
        }
        else
        {
            // Drawn on the CPU in float32 so the same seed gives the same picture on every device and dtype.
            start = generators.Randn(shape).to(dtype, device);
        }
        return run.InitNoiseSigma == 1.0 ? start : start * run.InitNoiseSigma;
    }

    private Tensor PrepareImageLatents(GenerationOptions options, Image<Rgb24> initImage, int perPrompt, Device device, ScalarType dtype, ImageGenerators generators,
        ISchedulerRun run, IReadOnlyList<double> timesteps, CancellationToken cancellationToken)
    {
        var (w, h) = Size(options);
        var vaeDtype = Vae.DType;
        var image = ImageConversion.ToTensor(initImage, w, h).to(vaeDtype, device);
        using var posterior = Vae.Encode(image, cancellationToken);
        Tensor init;
        if (generators.PerImage)
        {
            // The image is encoded once; each image samples the posterior from its own generator, as the reference
            // does per generator.
            init = cat(generators.Generators.Select(g => (posterior.Sample(g) * Vae.ScalingFactor).to(dtype)).ToArray(), 0);
        }
        else
        {
            init = (posterior.Sample(generators.First) * Vae.ScalingFactor).to(dtype);
            if (perPrompt > 1) init = cat(Enumerable.Repeat(init, perPrompt).ToArray(), 0);
        }
        var noise = generators.Randn(init.shape).to(dtype, device);
        // Validate refuses a strength that leaves no step, as the reference does.
        return run.AddNoise(init, noise, timesteps[0]);
    }

    private Tensor DecodeLatents(Tensor latents, CancellationToken cancellationToken)
    {
        var z = (latents / Vae.ScalingFactor).to(Vae.DType);
        return Vae.Decode(z, cancellationToken);
    }

    private static Tensor RescaleNoiseCfg(Tensor cfg, Tensor text, double rescale)
    {
        long[] dims = Enumerable.Range(1, (int)text.dim() - 1).Select(d => (long)d).ToArray();
        var stdText = text.std(dims, keepdim: true);
        var stdCfg = cfg.std(dims, keepdim: true);
        var rescaled = cfg * (stdText / stdCfg);
        return rescale * rescaled + (1 - rescale) * cfg;
    }

    /// <summary>The model's own scheduler, or the named one built from the model's scheduler config, with the overrides and η.</summary>
    private IScheduler SchedulerFor(GenerationOptions options)
    {
        if (options.CustomScheduler is { } custom) return custom;
        var overrides = options.SchedulerOverrides;
        // As the reference's prepare_extra_step_kwargs: η goes to the schedulers whose step takes it (DDIM only) and is
        // ignored by the others.
        string className = options.Scheduler is { } named ? SchedulerRegistry.ClassNameOf(named) : Scheduler.ClassName;
        if (options.Eta != 0 && className == "DDIMScheduler")
            overrides = new Dictionary<string, string>(overrides ?? new Dictionary<string, string>())
            {
                ["eta"] = options.Eta.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
            };
        if (options.Scheduler is { } name) return SchedulerRegistry.Create(name, Scheduler.Config, overrides);
        return overrides is null ? Scheduler : SchedulerRegistry.FromConfig(Scheduler.Config, overrides);
    }

    /// <summary>
    /// The strength a generation with <paramref name="options"/> uses: <see cref="GenerationOptions.Strength"/> when set,
    /// else the default of the reference pipeline for the mode (diffusers' <c>strength</c> argument): image-to-image 0.8
    /// (StableDiffusionImg2ImgPipeline; SDXL's StableDiffusionXLImg2ImgPipeline, made for the refiner: 0.3), inpainting 1.0
    /// (StableDiffusionInpaintPipeline; SDXL's StableDiffusionXLInpaintPipeline: 0.9999). Text-to-image uses none (1.0).
    /// </summary>
    /// <param name="options">The generation's options (a mask makes it inpainting, an init image without one image-to-image).</param>
    public double StrengthFor(GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Strength is { } given) return given;
        bool inpainting = options.Mask is not null || options.MaskPixels is not null;
        bool init = options.InitImage is not null || options.InitImagePixels is not null;
        if (inpainting) return IsStableDiffusionXL ? 0.9999 : 1.0;
        if (init) return IsStableDiffusionXL ? 0.3 : 0.8;
        return 1.0;
    }

    private void Validate(string prompt, GenerationOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        if (prompt is null && o.PromptEmbeddings is null) throw new ArgumentNullException(nameof(prompt), "A prompt (or PromptEmbeddings) is required.");
        if (o.Steps < 1) throw new ArgumentOutOfRangeException(nameof(o.Steps), o.Steps, "Steps must be at least 1.");
        if (o.ImagesPerPrompt < 1 || o.ImagesPerPrompt > 64) throw new ArgumentOutOfRangeException(nameof(o.ImagesPerPrompt), o.ImagesPerPrompt, "ImagesPerPrompt must be between 1 and 64.");
        if (o.ClipSkip < 0) throw new ArgumentOutOfRangeException(nameof(o.ClipSkip), o.ClipSkip, "ClipSkip cannot be negative.");
        if (double.IsNaN(o.GuidanceScale) || double.IsInfinity(o.GuidanceScale)) throw new ArgumentOutOfRangeException(nameof(o.GuidanceScale), o.GuidanceScale, "GuidanceScale must be a finite number.");
        if (o.GuidanceRescale < 0 || o.GuidanceRescale > 1) throw new ArgumentOutOfRangeException(nameof(o.GuidanceRescale), o.GuidanceRescale, "GuidanceRescale must be in [0, 1].");
        if (o.InitImage is not null && o.InitImagePixels is not null) throw new ArgumentException("InitImage and InitImagePixels cannot both be given.");
        // The SD 1.x/2.x inpainting reference has no denoising_start; SDXL's has (see Inpainting).
        if ((o.Mask is not null || o.MaskPixels is not null) && o.DenoisingStart is not null && !IsStableDiffusionXL)
            throw new ArgumentException("DenoisingStart does not apply to inpainting with an SD 1.x/2.x model (only SDXL's inpainting pipeline has it): the mask's generation starts from the init image at Strength. Leave DenoisingStart unset.");
        Inpainting.Validate(o, UNet, Vae);
        var init = InitImageSize(o);
        double strength = StrengthFor(o);
        if (init is not null && (double.IsNaN(strength) || strength < 0 || strength > 1))
            throw new ArgumentOutOfRangeException(nameof(o.Strength), strength, "Strength must be in [0, 1].");
        // The reference keeps int(steps · strength) steps (Img2ImgSchedule.ForStrength) and raises an error when none is left.
        if (init is not null && o.DenoisingStart is null && o.Steps >= 1 && (int)(o.Steps * strength) < 1)
            throw new ArgumentOutOfRangeException(nameof(o.Strength), strength, NoStepsLeftMessage(o.Steps, strength));
        if (init is not null && o.Latents is not null) throw new ArgumentException("Latents cannot be given together with an InitImage.");
        if (init is { } img && (img.Width < 8 || img.Height < 8))
            throw new ArgumentException($"The init image is {img.Width}x{img.Height}; it must be at least 8x8 pixels.");
        if (o.Generators is { } gens)
        {
            if (gens.Count != o.ImagesPerPrompt)
                throw new ArgumentException($"Generators has {gens.Count} generator(s); it needs one per image (ImagesPerPrompt = {o.ImagesPerPrompt}).", nameof(o.Generators));
            if (gens.Any(g => g is null)) throw new ArgumentException("Generators contains null.", nameof(o.Generators));
        }
        ValidateXl(prompt, o);
        var (w, h) = Size(o);
        foreach (var (name, v) in new[] { ("Width", w), ("Height", h) })
        {
            if (v <= 0 || v % 8 != 0) throw new ArgumentException($"{name} must be a positive multiple of 8; got {v}.");
            if (v > MaxImageSide) throw new ArgumentException($"{name} {v} is larger than the {MaxImageSide}-pixel limit.");
        }
    }

    private static string NoStepsLeftMessage(int steps, double strength)
    {
        string fix = $"raise Strength to at least {1.0 / steps:G3} (1 / Steps)";
        if (strength > 0)
        {
            long minSteps = (long)Math.Ceiling(1 / strength);
            while ((int)(minSteps * strength) < 1) minSteps++;
            fix += $" or Steps to at least {minSteps} (1 / Strength)";
        }
        return $"Image-to-image with Strength {strength:G6} and Steps {steps} leaves no denoising step (it runs int(Steps x Strength) = 0 steps " +
            $"and would only re-encode the init image): {fix}.";
    }

    /// <summary>True once disposal has begun (for tests that dispose from another thread at a chosen moment).</summary>
    internal bool IsDisposeRequested => _runs.IsClosed;

    /// <summary>
    /// Releases the components (unless the pipeline was composed with <c>leaveComponentsOpen</c>). Generations still running are stopped at their next check (between UNet and VAE blocks)
    /// and end with <see cref="ObjectDisposedException"/>; this call waits for them, so that no weight is freed under a
    /// running step. Called from inside a generation (a step callback or progress handler), it returns at once and the
    /// components are released when that generation ends. Later calls to generate throw <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        var released = _runs.Close();
        if (_runs.EnteredOnThisThread) return;
        released.GetAwaiter().GetResult();
    }

    /// <summary>As <see cref="Dispose"/>, waiting asynchronously for running generations to stop.</summary>
    public ValueTask DisposeAsync()
    {
        var released = _runs.Close();
        return _runs.EnteredOnThisThread ? ValueTask.CompletedTask : new ValueTask(released);
    }

    private void ReleaseComponents()
    {
        ReleaseLoras();
        if (!_ownsComponents) return;
        if (!_textEncodersFreed) DisposeTextEncoders();
        if (!_unetFreed) UNet.Dispose();
        Vae.Dispose();
    }
}
