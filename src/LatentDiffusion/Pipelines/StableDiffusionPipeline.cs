using System.Diagnostics;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Runtime;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using LatentDiffusion.Loading;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// Stable Diffusion 1.x/2.x: text-to-image and image-to-image with classifier-free guidance, step for step as the
/// reference pipelines (<c>StableDiffusionPipeline</c>, <c>StableDiffusionImg2ImgPipeline</c>) do it. Owns its components.
/// One instance serves any number of sequential or concurrent generations: all per-generation state lives in the
/// scheduler run and the generation's own tensors.
/// </summary>
public sealed class StableDiffusionPipeline : IPipeline
{
    /// <summary>The largest image side accepted, in pixels.</summary>
    public const int MaxImageSide = 4096;

    private readonly PromptEncoder _promptEncoder;
    private readonly ILogger _logger;
    private readonly bool _vaeSlicing;
    private bool _disposed;

    /// <summary>Composes a pipeline from components (each may be replaced by another implementation); the pipeline takes ownership of them.</summary>
    public StableDiffusionPipeline(ClipTokenizer tokenizer, ITextEncoder textEncoder, IUNet unet, IVae vae, IScheduler scheduler, PipelineOptions? options = null)
    {
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        TextEncoder = textEncoder ?? throw new ArgumentNullException(nameof(textEncoder));
        UNet = unet ?? throw new ArgumentNullException(nameof(unet));
        Vae = vae ?? throw new ArgumentNullException(nameof(vae));
        Scheduler = scheduler ?? throw new ArgumentNullException(nameof(scheduler));
        options ??= new PipelineOptions();
        _logger = options.LoggerFactory?.CreateLogger<StableDiffusionPipeline>() ?? (ILogger)NullLogger.Instance;
        _promptEncoder = new PromptEncoder(tokenizer, textEncoder, _logger);
        _vaeSlicing = options.VaeSlicing;
        if (vae is AutoencoderKL kl)
        {
            // The autoencoder slices and tiles itself, with the reference's triggers (tiles only above its tile size).
            kl.UseSlicing |= options.VaeSlicing;
            kl.UseTiling |= options.VaeTiling;
        }
        if (textEncoder.HiddenSize != unet.CrossAttentionDim)
            throw new ArgumentException($"The text encoder's hidden size ({textEncoder.HiddenSize}) does not match the UNet's cross_attention_dim ({unet.CrossAttentionDim}).");
    }

    /// <summary>Loads a pipeline from a diffusers folder or a single-file <c>.safetensors</c> checkpoint (format detected).</summary>
    /// <exception cref="FileNotFoundException">The path or a needed component file does not exist.</exception>
    /// <exception cref="InvalidDataException">A file is corrupt or does not fit its config.</exception>
    /// <exception cref="NotSupportedException">The model uses a feature this library does not implement.</exception>
    public static Task<StableDiffusionPipeline> LoadAsync(string path, PipelineOptions? options = null, CancellationToken cancellationToken = default)
        => Task.Run(() => ModelLoader.Load(path, options ?? new PipelineOptions(), cancellationToken), cancellationToken);

    /// <summary>The tokenizer.</summary>
    public ClipTokenizer Tokenizer { get; }

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
        options ??= new GenerationOptions();
        Validate(prompt, options);
        return Task.Run(() => Generate(prompt, options, progress, cancellationToken), cancellationToken);
    }

    /// <summary>The same as <see cref="GenerateAsync(string, GenerationOptions?, IProgress{DiffusionProgress}?, CancellationToken)"/>, on the calling thread.</summary>
    public GenerationResult Generate(string prompt, GenerationOptions? options = null, IProgress<DiffusionProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        options ??= new GenerationOptions();
        Validate(prompt, options);
        var clock = Stopwatch.StartNew();
        var device = UNet.Device;
        var dtype = UNet.DType;
        int perPrompt = options.ImagesPerPrompt;
        bool guidance = options.GuidanceScale > 1.0;

        long seed = options.Generator is null ? options.Seed ?? Random.Shared.NextInt64(0, 1L << 53) : -1;
        using var ownGenerator = options.Generator is null ? new Generator((ulong)seed) : null;
        var generator = options.Generator ?? ownGenerator!;

        var scheduler = SchedulerFor(options);

        using var noGrad = no_grad();
        using var outer = NewDisposeScope();

        // 1. The context: [negative; positive] when guiding, as one batch.
        var context = EncodeContext(prompt, options, perPrompt, guidance, dtype, device);

        // 2. Timesteps, and for image-to-image the part of them that the strength keeps.
        using var run = scheduler.Start(options.Steps, generator);
        IReadOnlyList<double> timesteps = run.Timesteps;
        Tensor latents;
        if (options.InitImage is null)
        {
            latents = PrepareLatents(options, perPrompt, device, dtype, generator, run);
        }
        else
        {
            (timesteps, _) = Img2ImgSchedule.ForStrength(run, options.Steps, options.Strength);
            latents = PrepareImageLatents(options, perPrompt, device, dtype, generator, run, timesteps);
        }

        // 3. Denoise. The timesteps go to the device in one copy, not one per step; the text context's cross-attention
        // keys and values are projected once for the whole generation.
        var deviceTimesteps = tensor(timesteps.Select(v => (float)v).ToArray(), ScalarType.Float32).to(device);
        using var kvCache = CrossAttentionCache.Begin();
        for (int i = 0; i < timesteps.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            double t = timesteps[i];
            using (var step = NewDisposeScope())
            {
                var modelInput = guidance ? cat([latents, latents], 0) : latents;
                var scaled = run.ScaleModelInput(modelInput, t);
                var noisePred = UNet.Forward(scaled, deviceTimesteps[i], context);
                if (guidance)
                {
                    var halves = noisePred.chunk(2, 0);
                    var (uncond, text) = (halves[0], halves[1]);
                    noisePred = uncond + options.GuidanceScale * (text - uncond);
                    if (options.GuidanceRescale > 0) noisePred = RescaleNoiseCfg(noisePred, text, options.GuidanceRescale);
                }
                var next = run.Step(noisePred, t, latents);
                latents.Dispose();
                latents = next.MoveToOuterDisposeScope();
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
                }
            }
            progress?.Report(new DiffusionProgress(i + 1, timesteps.Count, clock.Elapsed));
        }
        cancellationToken.ThrowIfCancellationRequested();

        // 4. Decode.
        var decoded = DecodeLatents(latents);
        var pixels = ImageConversion.ToPixels(decoded).MoveToOuterDisposeScope();
        var images = Enumerable.Range(0, (int)pixels.shape[0]).Select(i => ImageConversion.ToImage(pixels, i)).ToList();
        var keptLatents = options.ReturnLatents ? latents.to(ScalarType.Float32).cpu().MoveToOuterDisposeScope() : null;
        return new GenerationResult(images, pixels, keptLatents, seed);
    }

    private Tensor EncodeContext(string prompt, GenerationOptions options, int perPrompt, bool guidance, ScalarType dtype, Device device)
    {
        var positive = options.PromptEmbeddings is { } pe ? pe.to(dtype, device) : _promptEncoder.Encode(prompt, options.ClipSkip).to(dtype, device);
        positive = RepeatPerPrompt(positive, perPrompt);
        if (!guidance) return positive;
        // The reference encodes the negative prompt without clip skip.
        var negative = options.NegativePromptEmbeddings is { } ne ? ne.to(dtype, device)
            : _promptEncoder.Encode(options.NegativePrompt ?? "", 0).to(dtype, device);
        negative = RepeatPerPrompt(negative, perPrompt);
        if (!negative.shape.SequenceEqual(positive.shape))
            throw new ArgumentException($"Negative prompt embeddings [{string.Join(", ", negative.shape)}] do not match the prompt embeddings [{string.Join(", ", positive.shape)}].");
        return cat([negative, positive], 0);
    }

    private static Tensor RepeatPerPrompt(Tensor embeds, int perPrompt)
        => perPrompt == 1 ? embeds : embeds.repeat(1, perPrompt, 1).view(embeds.shape[0] * perPrompt, embeds.shape[1], -1);

    private (int Width, int Height) Size(GenerationOptions options)
    {
        int w = options.Width ?? (options.InitImage is { } img ? img.Width / 8 * 8 : DefaultImageSize);
        int h = options.Height ?? (options.InitImage is { } img2 ? img2.Height / 8 * 8 : DefaultImageSize);
        return (w, h);
    }

    private Tensor PrepareLatents(GenerationOptions options, int perPrompt, Device device, ScalarType dtype, Generator generator, ISchedulerRun run)
    {
        var (w, h) = Size(options);
        long[] shape = [perPrompt, UNet.InChannels, h / Vae.ScaleFactor, w / Vae.ScaleFactor];
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
            start = randn(shape, ScalarType.Float32, CPU, generator: generator).to(dtype, device);
        }
        return run.InitNoiseSigma == 1.0 ? start : start * run.InitNoiseSigma;
    }

    private Tensor PrepareImageLatents(GenerationOptions options, int perPrompt, Device device, ScalarType dtype, Generator generator, ISchedulerRun run, IReadOnlyList<double> timesteps)
    {
        var (w, h) = Size(options);
        var vaeDtype = Vae.DType;
        var image = ImageConversion.ToTensor(options.InitImage!, w, h).to(vaeDtype, device);
        using var posterior = Vae.Encode(image);
        var init = (posterior.Sample(generator) * Vae.ScalingFactor).to(dtype);
        if (perPrompt > 1) init = cat(Enumerable.Repeat(init, perPrompt).ToArray(), 0);
        var noise = randn(init.shape, ScalarType.Float32, CPU, generator: generator).to(dtype, device);
        if (timesteps.Count == 0) return init;
        return run.AddNoise(init, noise, timesteps[0]);
    }

    private Tensor DecodeLatents(Tensor latents)
    {
        var z = (latents / Vae.ScalingFactor).to(Vae.DType);
        if (_vaeSlicing && Vae is not AutoencoderKL && z.shape[0] > 1)
            return cat(Enumerable.Range(0, (int)z.shape[0]).Select(i => Vae.Decode(z[i..(i + 1)])).ToArray(), 0);
        return Vae.Decode(z);
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

    private void Validate(string prompt, GenerationOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        if (prompt is null && o.PromptEmbeddings is null) throw new ArgumentNullException(nameof(prompt), "A prompt (or PromptEmbeddings) is required.");
        if (o.Steps < 1) throw new ArgumentOutOfRangeException(nameof(o.Steps), o.Steps, "Steps must be at least 1.");
        if (o.ImagesPerPrompt < 1 || o.ImagesPerPrompt > 64) throw new ArgumentOutOfRangeException(nameof(o.ImagesPerPrompt), o.ImagesPerPrompt, "ImagesPerPrompt must be between 1 and 64.");
        if (o.ClipSkip < 0) throw new ArgumentOutOfRangeException(nameof(o.ClipSkip), o.ClipSkip, "ClipSkip cannot be negative.");
        if (double.IsNaN(o.GuidanceScale) || double.IsInfinity(o.GuidanceScale)) throw new ArgumentOutOfRangeException(nameof(o.GuidanceScale), o.GuidanceScale, "GuidanceScale must be a finite number.");
        if (o.GuidanceRescale < 0 || o.GuidanceRescale > 1) throw new ArgumentOutOfRangeException(nameof(o.GuidanceRescale), o.GuidanceRescale, "GuidanceRescale must be in [0, 1].");
        if (o.InitImage is not null && (double.IsNaN(o.Strength) || o.Strength < 0 || o.Strength > 1))
            throw new ArgumentOutOfRangeException(nameof(o.Strength), o.Strength, "Strength must be in [0, 1].");
        if (o.InitImage is not null && o.Latents is not null) throw new ArgumentException("Latents cannot be given together with an InitImage.");
        if (o.InitImage is { } img && (img.Width < 8 || img.Height < 8))
            throw new ArgumentException($"The init image is {img.Width}x{img.Height}; it must be at least 8x8 pixels.");
        var (w, h) = Size(o);
        foreach (var (name, v) in new[] { ("Width", w), ("Height", h) })
        {
            if (v <= 0 || v % 8 != 0) throw new ArgumentException($"{name} must be a positive multiple of 8; got {v}.");
            if (v > MaxImageSide) throw new ArgumentException($"{name} {v} is larger than the {MaxImageSide}-pixel limit.");
        }
    }

    /// <summary>Releases the components.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        TextEncoder.Dispose();
        UNet.Dispose();
        Vae.Dispose();
    }

    /// <summary>Releases the components.</summary>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }
}
