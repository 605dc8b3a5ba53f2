using System.Globalization;
using LatentDiffusion.Pipelines;
using Microsoft.Extensions.AI;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Integration;

/// <summary>
/// Microsoft.Extensions.AI's <see cref="IImageGenerator"/> over a local Stable Diffusion pipeline, so code written against
/// that abstraction runs on a local model: <c>IImageGenerator g = await LatentDiffusionImageGenerator.LoadAsync("models/sd15");</c>.
/// Images come back as PNG <see cref="DataContent"/>. <see cref="ImageGenerationOptions.AdditionalProperties"/> may carry
/// <c>seed</c>, <c>steps</c>, <c>guidance_scale</c>, <c>negative_prompt</c>, <c>scheduler</c> and <c>strength</c>; an image in
/// <see cref="ImageGenerationRequest.OriginalImages"/> makes it image-to-image. Microsoft.Extensions.AI's request and options
/// have no mask field, so inpainting takes the mask from <see cref="ImageGenerationOptions.AdditionalProperties"/>:
/// <c>mask</c>, an image <see cref="DataContent"/> or the bytes of an image file (<see cref="T:byte[]"/> or
/// <see cref="ReadOnlyMemory{T}"/> of <see cref="byte"/>), white = repaint, black = keep (not OpenAI's transparency
/// convention), with the original image as the init image (for example through <c>EditImageAsync</c>); and optionally
/// <c>padding_mask_crop</c> (<see cref="GenerationOptions.PaddingMaskCrop"/>). See docs/inpainting.md. Image i of a response was drawn with seed
/// <c>seed + i</c>, which each image's <see cref="AIContent.AdditionalProperties"/> carries as <c>seed</c> (a
/// <see cref="long"/>; -1 for images from explicit generators); <see cref="ImageGenerationResponse.RawRepresentation"/>
/// is the first image's seed.
/// </summary>
public sealed class LatentDiffusionImageGenerator : IImageGenerator
{
    private readonly StableDiffusionPipeline _pipeline;
    private readonly GenerationOptions _defaults;
    private readonly bool _ownsPipeline;
    private readonly ImageGeneratorMetadata _metadata;
    private volatile bool _disposed;

    /// <summary>Wraps a loaded pipeline; <paramref name="ownsPipeline"/> says whether disposing this disposes it.</summary>
    public LatentDiffusionImageGenerator(StableDiffusionPipeline pipeline, GenerationOptions? defaults = null, bool ownsPipeline = false, string? modelId = null)
    {
        _pipeline = pipeline ?? throw new ArgumentNullException(nameof(pipeline));
        _defaults = defaults ?? new GenerationOptions();
        _ownsPipeline = ownsPipeline;
        _metadata = new ImageGeneratorMetadata("LatentDiffusion", null, modelId);
    }

    /// <summary>Loads a model and wraps it (the generator owns the pipeline).</summary>
    public static async Task<LatentDiffusionImageGenerator> LoadAsync(string modelPath, PipelineOptions? options = null, GenerationOptions? defaults = null, CancellationToken cancellationToken = default)
        => new(await StableDiffusionPipeline.LoadAsync(modelPath, options, cancellationToken).ConfigureAwait(false), defaults, ownsPipeline: true, Path.GetFileName(Path.TrimEndingDirectorySeparator(modelPath)));

    /// <inheritdoc />
    /// <exception cref="ObjectDisposedException">This generator is disposed, or its pipeline was disposed (also while this request ran).</exception>
    public async Task<ImageGenerationResponse> GenerateAsync(ImageGenerationRequest request, ImageGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(request);
        if (options?.MediaType is { } mt && !string.Equals(mt, "image/png", StringComparison.OrdinalIgnoreCase))
            throw new NotSupportedException($"Media type '{mt}' is not supported; this generator returns image/png.");
        using var init = InitImage(request);
        using var mask = MaskImage(options);
        var generation = _defaults with
        {
            ImagesPerPrompt = options?.Count ?? _defaults.ImagesPerPrompt,
            Width = options?.ImageSize?.Width ?? _defaults.Width,
            Height = options?.ImageSize?.Height ?? _defaults.Height,
            InitImage = init ?? _defaults.InitImage,
            Mask = mask ?? _defaults.Mask,
        };
        if (options?.AdditionalProperties is { } extra)
        {
            if (extra.TryGetValue("seed", out var seed) && seed is not null) generation = generation with { Seed = Whole(seed, "seed", long.MinValue, long.MaxValue) };
            if (extra.TryGetValue("steps", out var steps) && steps is not null) generation = generation with { Steps = (int)Whole(steps, "steps", int.MinValue, int.MaxValue) };
            if (extra.TryGetValue("guidance_scale", out var gs) && gs is not null) generation = generation with { GuidanceScale = Number(gs, "guidance_scale") };
            if (extra.TryGetValue("strength", out var st) && st is not null) generation = generation with { Strength = Number(st, "strength") };
            if (extra.TryGetValue("negative_prompt", out var np) && np is not null) generation = generation with { NegativePrompt = np.ToString() };
            if (extra.TryGetValue("scheduler", out var sc) && sc is not null) generation = generation with { Scheduler = sc.ToString() };
            if (extra.TryGetValue("padding_mask_crop", out var pmc) && pmc is not null) generation = generation with { PaddingMaskCrop = (int)Whole(pmc, "padding_mask_crop", int.MinValue, int.MaxValue) };
        }

        using var result = await _pipeline.GenerateAsync(request.Prompt ?? "", generation, null, cancellationToken).ConfigureAwait(false);
        var contents = new List<AIContent>();
        for (int i = 0; i < result.Images.Count; i++)
        {
            using var png = new MemoryStream();
            await result.Images[i].SaveAsPngAsync(png, cancellationToken).ConfigureAwait(false);
            // Each image's own seed (seed + i): a one-image request with that seed makes the same image.
            contents.Add(new DataContent(png.ToArray(), "image/png") { AdditionalProperties = new() { ["seed"] = result.Seeds[i] } });
        }
        return new ImageGenerationResponse(contents) { RawRepresentation = result.Seed };
    }

    private static Image<Rgb24>? InitImage(ImageGenerationRequest request)
    {
        var data = request.OriginalImages?.OfType<DataContent>().FirstOrDefault(d => d.HasTopLevelMediaType("image"));
        if (data is null) return null;
        using var stream = new MemoryStream(data.Data.ToArray(), writable: false);
        return ImageLoading.Load(stream, data.Name ?? "original image");
    }

    /// <summary>The inpainting mask of <c>AdditionalProperties["mask"]</c>: an image <see cref="DataContent"/> or an image file's bytes.</summary>
    private static Image<Rgb24>? MaskImage(ImageGenerationOptions? options)
    {
        if (options?.AdditionalProperties is not { } extra || !extra.TryGetValue("mask", out var value) || value is null) return null;
        ReadOnlyMemory<byte> bytes = value switch
        {
            DataContent d when d.HasTopLevelMediaType("image") => d.Data,
            DataContent d => throw new ArgumentException($"AdditionalProperties[\"mask\"] is a DataContent of media type '{d.MediaType}'; the mask must be an image."),
            byte[] b => b,
            ReadOnlyMemory<byte> m => m,
            _ => throw new ArgumentException($"AdditionalProperties[\"mask\"] is a {value.GetType().Name}; give the mask as an image DataContent or as the bytes of an image file."),
        };
        using var stream = new MemoryStream(bytes.ToArray(), writable: false);
        return ImageLoading.Load(stream, (value as DataContent)?.Name ?? "mask");
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ImageGeneratorMetadata)) return _metadata;
        if (serviceType.IsInstanceOfType(_pipeline)) return _pipeline;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <summary>
    /// Disposes the pipeline when this generator owns it (requests still running end with <see cref="ObjectDisposedException"/>,
    /// and this waits for them); later requests throw <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        _disposed = true;
        if (_ownsPipeline) _pipeline.Dispose();
    }

    /// <summary>
    /// A number from <see cref="ImageGenerationOptions.AdditionalProperties"/>: a .NET number, a numeric string, or a
    /// <see cref="System.Text.Json.JsonElement"/> holding either (what a request deserialised from JSON carries).
    /// </summary>
    /// <exception cref="ArgumentException">Anything else, naming the property and the value.</exception>
    private static double Number(object value, string name)
    {
        double? number = value switch
        {
            System.Text.Json.JsonElement { ValueKind: System.Text.Json.JsonValueKind.Number } e => e.GetDouble(),
            System.Text.Json.JsonElement { ValueKind: System.Text.Json.JsonValueKind.String } e => ParseDouble(e.GetString()),
            string text => ParseDouble(text),
            double or float or decimal or long or int or short or byte or sbyte or ulong or uint or ushort => Convert.ToDouble(value, CultureInfo.InvariantCulture),
            _ => null,
        };
        if (number is not double result || double.IsNaN(result)) throw NotA("a number", value, name);
        return result;
    }

    /// <summary>A whole number in [<paramref name="min"/>, <paramref name="max"/>], exactly (seeds above 2^53 included); see <see cref="Number"/>.</summary>
    /// <exception cref="ArgumentException">Not a whole number in range, naming the property and the value.</exception>
    private static long Whole(object value, string name, long min, long max)
    {
        long? number = value switch
        {
            System.Text.Json.JsonElement { ValueKind: System.Text.Json.JsonValueKind.Number } e => e.TryGetInt64(out long l) ? l : null,
            System.Text.Json.JsonElement { ValueKind: System.Text.Json.JsonValueKind.String } e => ParseLong(e.GetString()),
            string text => ParseLong(text),
            long or int or short or byte or sbyte or uint or ushort => Convert.ToInt64(value, CultureInfo.InvariantCulture),
            ulong u => u <= long.MaxValue ? (long)u : null,
            decimal d => decimal.Truncate(d) == d && d >= long.MinValue && d <= long.MaxValue ? (long)d : null,
            double or float => Convert.ToDouble(value, CultureInfo.InvariantCulture) is double f && Math.Floor(f) == f && f >= -9.2e18 && f <= 9.2e18 ? (long)f : null,
            _ => null,
        };
        if (number is not long result || result < min || result > max) throw NotA($"a whole number from {min} to {max}", value, name);
        return result;
    }

    private static double? ParseDouble(string? text) => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : null;

    private static long? ParseLong(string? text) => long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) ? l : null;

    private static ArgumentException NotA(string what, object value, string name)
        => new($"AdditionalProperties[\"{name}\"] must be {what}; got {(value is System.Text.Json.JsonElement e ? $"the JSON {e.ValueKind.ToString().ToLowerInvariant()} {e.GetRawText()}" : $"'{value}' ({value.GetType().Name})")}.", "options");
}
