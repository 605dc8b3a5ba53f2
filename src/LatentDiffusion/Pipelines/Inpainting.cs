using LatentDiffusion.Abstractions;
using Microsoft.Extensions.Logging;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// The inpainting part of one generation, step for step as the reference's <c>StableDiffusionInpaintPipeline</c>: the
/// init image and the binarised mask at the generation's size (optionally the padded crop around the mask), the starting
/// latents, and what the denoising loop does differently. A 9-channel inpainting UNet takes
/// <c>cat(latents, mask, masked-image latents)</c> along the channels at every step; an ordinary 4-channel UNet
/// denoises as usual, and after every step but the last the init image's latents, re-noised to the next timestep, are
/// put back outside the mask (after the last step, the clean init latents). Random numbers are drawn in the reference's
/// order from each image's generator: the init image's VAE posterior sample (skipped by a 9-channel UNet at strength 1,
/// as the reference skips it), the noise, then the masked image's posterior sample (drawn by the 4-channel path too,
/// where the reference draws it and does not use it, so the generator's later draws match).
/// SDXL models follow <c>StableDiffusionXLInpaintPipeline</c>, which does the same and can also start at
/// <see cref="GenerationOptions.DenoisingStart"/> (the base + refiner hand-off): then the start latents are the init
/// image's latents as they are (no noise added; the noise is still drawn, for the blend), or the latents a first model
/// returned, which take the init image's place (the reference's <c>image</c> given as latents).
/// </summary>
internal sealed class Inpainting
{
    private readonly bool _nineChannel;
    private readonly Tensor? _imageLatents;
    private readonly Tensor _noise;
    private readonly Tensor _mask;
    private readonly Tensor? _maskInput;
    private readonly Tensor? _maskedImageInput;
    private readonly ISchedulerRun _run;
    private readonly Image<Rgb24>? _original;
    private readonly Image<Rgb24> _maskImage;

    private Inpainting(bool nineChannel, Tensor latents, Tensor? imageLatents, Tensor noise, Tensor mask, Tensor? maskInput, Tensor? maskedImageInput,
        ISchedulerRun run, CropRegion? crop, Image<Rgb24>? original, Image<Rgb24> maskImage)
    {
        _nineChannel = nineChannel;
        Latents = latents;
        _imageLatents = imageLatents;
        _noise = noise;
        _mask = mask;
        _maskInput = maskInput;
        _maskedImageInput = maskedImageInput;
        _run = run;
        Crop = crop;
        _original = original;
        _maskImage = maskImage;
    }

    /// <summary>The starting latents <c>[images, C, h, w]</c>.</summary>
    public Tensor Latents { get; }

    /// <summary>The region inpainted when <see cref="GenerationOptions.PaddingMaskCrop"/> is set; null otherwise.</summary>
    public CropRegion? Crop { get; }

    /// <summary>True when <paramref name="unet"/> is an inpainting UNet: latents, a 1-channel mask and the masked image's latents in.</summary>
    public static bool IsInpaintingUNet(IUNet unet, IVae vae) => unet.InChannels == 2 * vae.LatentChannels + 1;

    /// <summary>
    /// True when a mask comes with the latents a first model returned instead of an init image (with
    /// <see cref="GenerationOptions.DenoisingStart"/>, SDXL only): the reference's refiner inpainting from the base's latents.
    /// </summary>
    public static bool IsHandOver(GenerationOptions o)
        => (o.Mask is not null || o.MaskPixels is not null) && o.InitImage is null && o.InitImagePixels is null && o.DenoisingStart is not null && o.Latents is not null;

    /// <summary>
    /// Refuses inpainting options that cannot work, with the reason: a mask without an init image (or handed-over
    /// latents), an inpainting UNet without a mask and an init image, a UNet of another input width,
    /// <see cref="GenerationOptions.PaddingMaskCrop"/> without a mask, with handed-over latents, with a mask of another size
    /// than the init image, or with a mask that is black everywhere.
    /// </summary>
    public static void Validate(GenerationOptions o, IUNet unet, IVae vae)
    {
        if (o.Mask is not null && o.MaskPixels is not null) throw new ArgumentException("Mask and MaskPixels cannot both be given.");
        bool hasMask = o.Mask is not null || o.MaskPixels is not null;
        bool hasInit = o.InitImage is not null || o.InitImagePixels is not null;
        bool handOver = IsHandOver(o);
        int latent = vae.LatentChannels;
        bool nine = IsInpaintingUNet(unet, vae);
        if (unet.InChannels != latent && !nine)
            throw new ArgumentException($"The UNet takes {unet.InChannels} input channels; this pipeline runs a UNet of {latent} (the VAE's latent channels) " +
                $"or, for inpainting, {2 * latent + 1} (latents, mask and masked-image latents).");
        if (nine && handOver)
            throw new ArgumentException($"This model's UNet takes {unet.InChannels} input channels (an inpainting model): it needs the init image's pixels for the masked image " +
                "it takes as input, so it cannot start from handed-over Latents. Give the InitImage with DenoisingStart instead (or hand the latents to an ordinary 4-channel model).");
        if (nine && !(hasMask && hasInit))
            throw new ArgumentException($"This model's UNet takes {unet.InChannels} input channels: it is an inpainting model, and every generation needs an InitImage " +
                "and a Mask (white = repaint), as the reference's inpainting pipeline requires. Give both, or use an ordinary model for text-to-image and image-to-image.");
        if (hasMask && !hasInit && !handOver)
            throw new ArgumentException("A Mask needs an InitImage (or InitImagePixels): the mask marks which part of that image to repaint.");
        if (o.PaddingMaskCrop is { } pad)
        {
            if (!hasMask) throw new ArgumentException("PaddingMaskCrop applies to inpainting: give a Mask (and an InitImage) too.");
            if (handOver) throw new ArgumentException("PaddingMaskCrop needs the init image to crop: it cannot be used with handed-over Latents (DenoisingStart without an InitImage).");
            if (pad < 0) throw new ArgumentOutOfRangeException(nameof(o.PaddingMaskCrop), pad, "PaddingMaskCrop cannot be negative.");
            var (mw, mh) = MaskSize(o)!.Value;
            var (iw, ih) = InitSize(o)!.Value;
            if (mw != iw || mh != ih)
                throw new ArgumentException($"With PaddingMaskCrop the mask must have the init image's size: the mask is {mw}x{mh}, the init image {iw}x{ih}.");
            using var converted = o.Mask is null ? o.MaskPixels!.ToImage() : null;
            var maskImage = o.Mask ?? converted!;
            if (!InpaintMask.GrayAt(maskImage, mw, mh).Any(v => v != 0))
                throw new ArgumentException("PaddingMaskCrop needs a mask with something to repaint: the mask is black everywhere, so there is no region to crop to.");
        }
    }

    private static (int Width, int Height)? MaskSize(GenerationOptions o)
        => o.Mask is { } m ? (m.Width, m.Height) : o.MaskPixels is { } p ? (p.Width, p.Height) : null;

    private static (int Width, int Height)? InitSize(GenerationOptions o)
        => o.InitImage is { } m ? (m.Width, m.Height) : o.InitImagePixels is { } p ? (p.Width, p.Height) : null;

    /// <summary>
    /// Prepares an inpainting generation: the init image and mask at width×height (or the crop around the mask), the
    /// starting latents and what the loop needs. <paramref name="timesteps"/> are those the strength keeps, with the run's
    /// begin index set (<see cref="LatentDiffusion.Schedulers.Img2ImgSchedule.ForStrength"/>), or those after
    /// <see cref="GenerationOptions.DenoisingStart"/> (<see cref="DenoisingWindow.FromStart"/>). <paramref name="init"/> is
    /// null when a first model's latents are handed over (<see cref="IsHandOver"/>). <paramref name="strength"/> is the
    /// one the generation uses (<see cref="StableDiffusionPipeline.StrengthFor"/>).
    /// </summary>
    public static Inpainting Prepare(IUNet unet, IVae vae, GenerationOptions options, double strength, Image<Rgb24>? init, Image<Rgb24> mask, int width, int height,
        int perPrompt, bool guidance, ImageGenerators generators, ISchedulerRun run, IReadOnlyList<double> timesteps, ILogger logger, CancellationToken cancellationToken)
    {
        var device = unet.Device;
        var dtype = unet.DType;
        bool nine = IsInpaintingUNet(unet, vae);
        CropRegion? crop = options.PaddingMaskCrop is { } pad ? MaskCrop.Region(mask, width, height, pad) : null;
        if (init is not null && crop is null && (long)mask.Width * init.Height != (long)mask.Height * init.Width)
            logger.LogWarning("The mask ({MaskWidth}x{MaskHeight}) and the init image ({Width}x{Height}) have different aspect ratios; the mask is stretched to the image, as the reference does.",
                mask.Width, mask.Height, init.Width, init.Height);

        Tensor? image = null;
        Tensor condition;
        if (crop is { } region)
        {
            using var initCrop = MaskCrop.CropAndFill(init!, region, width, height);
            using var maskCrop = MaskCrop.CropAndFill(mask, region, width, height);
            image = ImageConversion.ToTensor(initCrop, width, height);
            condition = InpaintMask.ToCondition(maskCrop, width, height);
        }
        else
        {
            if (init is not null) image = ImageConversion.ToTensor(init, width, height);
            condition = InpaintMask.ToCondition(mask, width, height);
        }

        int f = vae.ScaleFactor;
        long[] shape = [perPrompt, vae.LatentChannels, height / f, width / f];
        bool strengthMax = strength == 1.0;
        bool fromStart = options.DenoisingStart is not null;
        // 1. The init image's latents: the starting point below strength 1 or at DenoisingStart, and what the 4-channel
        // path puts back. Handed-over latents take their place as they are (no VAE, no draw). (At DenoisingStart a
        // 9-channel UNet at strength 1 needs them too; the reference fails there.)
        Tensor? imageLatents;
        if (image is null)
        {
            var given = options.Latents!;
            if (!given.shape.SequenceEqual(shape))
                throw new ArgumentException($"Latents must have shape [{string.Join(", ", shape)}] for this size and image count; got [{string.Join(", ", given.shape)}].", nameof(options));
            imageLatents = given.to(dtype, device);
        }
        else
        {
            imageLatents = nine && strengthMax && !fromStart ? null : EncodeAndSample(vae, image, perPrompt, generators, dtype, device, cancellationToken);
        }
        // 2. The noise (drawn at DenoisingStart too, where only the 4-channel blend uses it).
        var noise = generators.Randn(shape).to(dtype, device);
        var latents = fromStart ? imageLatents!.clone()
            : strengthMax ? (run.InitNoiseSigma == 1.0 ? noise.clone() : noise * run.InitNoiseSigma)
            : run.AddNoise(imageLatents!, noise, timesteps[0]);
        // 3. The masked image (the masked part set to 0, mid-gray) and its latents; the 4-channel path only draws the
        // sample, and with handed-over latents there is no masked image (the reference cannot mask latents).
        Tensor? maskedImageLatents = null;
        if (nine)
        {
            using var masked = image! * condition.lt(0.5).to(image!.dtype);
            maskedImageLatents = EncodeAndSample(vae, masked, perPrompt, generators, dtype, device, cancellationToken);
        }
        else if (image is not null)
        {
            foreach (var g in generators.Generators)
                randn([1, .. shape[1..]], ScalarType.Float32, CPU, generator: g).Dispose();
        }

        var latentMask = InpaintMask.ToLatentGrid(condition, height / f, width / f).to(dtype, device);
        if (perPrompt > 1) latentMask = latentMask.repeat(perPrompt, 1, 1, 1);
        Tensor? maskInput = null, maskedInput = null;
        if (nine)
        {
            maskInput = guidance ? cat([latentMask, latentMask], 0) : latentMask;
            maskedInput = guidance ? cat([maskedImageLatents!, maskedImageLatents!], 0) : maskedImageLatents;
        }
        return new Inpainting(nine, latents, imageLatents, noise, latentMask, maskInput, maskedInput, run, crop, init, mask);
    }

    /// <summary>The UNet's input: the scaled latents, with the mask and the masked image's latents for a 9-channel UNet.</summary>
    public Tensor ModelInput(Tensor scaledLatents)
        => _nineChannel ? cat([scaledLatents, _maskInput!, _maskedImageInput!], 1) : scaledLatents;

    /// <summary>
    /// The latents after step <paramref name="index"/> (0-based) of <paramref name="timesteps"/> (the steps the loop runs):
    /// unchanged for a 9-channel UNet; for a 4-channel UNet the init image's latents outside the mask, re-noised to the
    /// next timestep (clean after the last step).
    /// </summary>
    public Tensor AfterStep(Tensor latents, int index, IReadOnlyList<double> timesteps)
    {
        if (_nineChannel) return latents;
        var known = index < timesteps.Count - 1 ? _run.AddNoise(_imageLatents!, _noise, timesteps[index + 1]) : _imageLatents!;
        return (1 - _mask) * known + _mask * latents;
    }

    /// <summary>
    /// With <see cref="GenerationOptions.PaddingMaskCrop"/>, each generated image pasted back into the init image through the
    /// mask (the reference's <c>apply_overlay</c>): new images of the init image's size and their pixels. Disposes the
    /// images and pixels passed. Without a crop, returns them unchanged.
    /// </summary>
    public (List<Image<Rgb24>> Images, Tensor Pixels) Overlay(List<Image<Rgb24>> images, Tensor pixels)
    {
        if (Crop is not { } region) return (images, pixels);
        var original = _original!;
        var overlaid = images.Select(i => MaskCrop.Overlay(original, _maskImage, i, region)).ToList();
        foreach (var i in images) i.Dispose();
        pixels.Dispose();
        int w = original.Width, h = original.Height;
        var data = new byte[overlaid.Count * w * h * 3];
        for (int i = 0; i < overlaid.Count; i++) overlaid[i].CopyPixelDataTo(data.AsSpan(i * w * h * 3, w * h * 3));
        using var bytes = tensor(data, new long[] { overlaid.Count, h, w, 3 });
        return (overlaid, (bytes.to(ScalarType.Float32) / 255).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The scaled latents of <paramref name="image"/> <c>[1, 3, H, W]</c>, one per image: the posterior sampled once per
    /// image from its own generator, or once from the single generator and repeated (as the reference).
    /// </summary>
    private static Tensor EncodeAndSample(IVae vae, Tensor image, int perPrompt, ImageGenerators generators, ScalarType dtype, Device device, CancellationToken cancellationToken)
    {
        using var posterior = vae.Encode(image.to(vae.DType, device), cancellationToken);
        if (generators.PerImage)
            return cat(generators.Generators.Select(g => (posterior.Sample(g) * vae.ScalingFactor).to(dtype)).ToArray(), 0);
        var one = (posterior.Sample(generators.First) * vae.ScalingFactor).to(dtype);
        return perPrompt > 1 ? one.repeat(perPrompt, 1, 1, 1) : one;
    }
}
