using LatentDiffusion.Abstractions;
using LatentDiffusion.Pipelines;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// Inpainting beyond the reference fixtures: mask preprocessing, the 4-channel blend and the 9-channel input on sizes,
/// batches and masks the fixtures do not cover, <see cref="GenerationOptions.PaddingMaskCrop"/>, and the errors.
/// Most run on the generated 4-channel model; those that need a 9-channel UNet use tiny-sd15-inpaint.
/// </summary>
public class InpaintingTests
{
    /// <summary>An image with structure everywhere (so that a wrong region or orientation shows).</summary>
    internal static Image<Rgb24> Pattern(int width, int height)
    {
        var image = new Image<Rgb24>(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                image[x, y] = new Rgb24((byte)(x * 4 % 256), (byte)(y * 4 % 256), (byte)((x + y) * 2 % 256));
        return image;
    }

    /// <summary>A mask that is <paramref name="inside"/> where <paramref name="white"/> holds and black elsewhere.</summary>
    internal static Image<Rgb24> MaskWhere(int width, int height, Func<int, int, bool> white, byte inside = 255)
    {
        var image = new Image<Rgb24>(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                image[x, y] = white(x, y) ? new Rgb24(inside, inside, inside) : new Rgb24(0, 0, 0);
        return image;
    }

    private static StableDiffusionPipeline Inpainting9 => TinyModels.Get("tiny-sd15-inpaint");

    private static readonly GenerationOptions Quick = new() { Steps = 4, GuidanceScale = 7.5, Seed = 3 };

    // --- Mask preprocessing -------------------------------------------------------------------------------------------

    [Test]
    public void TheMaskIsBinarisedAtHalfIntensityOfItsGrayValue()
    {
        using var mask = new Image<Rgb24>(6, 1);
        mask[0, 0] = new Rgb24(127, 127, 127);   // 0.498 → keep
        mask[1, 0] = new Rgb24(128, 128, 128);   // 0.502 → repaint
        mask[2, 0] = new Rgb24(255, 0, 0);       // gray 76 → keep
        mask[3, 0] = new Rgb24(0, 255, 0);       // gray 150 → repaint
        mask[4, 0] = new Rgb24(0, 0, 0);
        mask[5, 0] = new Rgb24(255, 255, 255);
        using var condition = InpaintMask.ToCondition(mask, 6, 1);
        Assert.That(condition.shape, Is.EqualTo(new long[] { 1, 1, 1, 6 }));
        Assert.That(condition.data<float>().ToArray(), Is.EqualTo(new float[] { 0, 1, 0, 1, 0, 1 }));
    }

    [Test]
    public void AMaskOfAnotherSizeIsResizedToTheImage()
    {
        // 32x16, left half white: stretched to 64x64, the left columns repaint and the right ones keep, on every row.
        using var mask = MaskWhere(32, 16, (x, _) => x < 16);
        using var condition = InpaintMask.ToCondition(mask, 64, 64);
        Assert.That(condition.shape, Is.EqualTo(new long[] { 1, 1, 64, 64 }));
        Assert.That(condition[0, 0, .., ..28].min().item<float>(), Is.EqualTo(1f));
        Assert.That(condition[0, 0, .., 36..].max().item<float>(), Is.EqualTo(0f));
    }

    [Test]
    public void TheLatentMaskTakesTheNearestPixel()
    {
        // As torch's interpolate with its default mode: latent cell (i, j) takes pixel (8i, 8j).
        using var condition = zeros(1, 1, 16, 24);
        condition[0, 0, 8, 16] = tensor(1f);
        condition[0, 0, 9, 9] = tensor(1f);
        using var grid = InpaintMask.ToLatentGrid(condition, 2, 3);
        Assert.That(grid.flatten().data<float>().ToArray(), Is.EqualTo(new float[] { 0, 0, 0, 0, 0, 1 }));
    }

    // --- The 4-channel path -------------------------------------------------------------------------------------------

    [Test]
    public void AnAllWhiteMaskOnA4ChannelModelIsImageToImage()
    {
        // Nothing is put back, and the random numbers are drawn in the same order (the extra masked-image draw comes
        // after the noise, and PNDM draws none later): the same latents, bit for bit.
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(64, 64);
        using var white = MaskWhere(64, 64, (_, _) => true);
        var options = Quick with { InitImage = init, Strength = 0.75, ReturnLatents = true };
        using var inpainted = pipeline.Generate("a cat", options with { Mask = white });
        using var img2img = pipeline.Generate("a cat", options);
        AssertTensor.MaxAbsClose(inpainted.Latents!, img2img.Latents!, 0, "all-white inpainting vs image-to-image");
    }

    [Test]
    public void The4ChannelPathDrawsTheMaskedImageSampleAsTheReferenceDoes()
    {
        // The reference encodes the masked image and samples its posterior even for a 4-channel UNet, which does not use
        // it: one latent-shaped draw after the noise. A generator used by it ends where image-to-image's ends after
        // one more such draw (PNDM draws nothing per step), so later draws (an ancestral scheduler's) line up too.
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, _) => x < 20);
        using var g1 = new Generator(5);
        using var g2 = new Generator(5);
        using (pipeline.Generate("a cat", Quick with { InitImage = init, Strength = 0.75, Seed = null, Generator = g1 })) { }
        randn([1, 4, 8, 8], generator: g1).Dispose();
        using (pipeline.Generate("a cat", Quick with { InitImage = init, Mask = mask, Strength = 0.75, Seed = null, Generator = g2 })) { }
        using var s1 = g1.get_state();
        using var s2 = g2.get_state();
        Assert.That(s1.eq(s2).all().item<bool>(), Is.True, "generator state after inpainting = after image-to-image and one latent-shaped draw");
    }

    [TestCase(0.75)]
    [TestCase(1.0)]
    public void AnAllBlackMaskOnA4ChannelModelGivesBackTheInitLatents(double strength)
    {
        // Everything is put back; after the last step without re-noising: the init image's posterior sample, which is the
        // generator's first draw.
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(64, 64);
        using var black = MaskWhere(64, 64, (_, _) => false);
        using var result = pipeline.Generate("a cat", Quick with { InitImage = init, Mask = black, Strength = strength, ReturnLatents = true });
        using var expected = InitLatents(pipeline, init, 64, 64, seed: 3);
        AssertTensor.MaxAbsClose(result.Latents!, expected, 0, "all-black inpainting vs the init latents");
    }

    [Test]
    public void ANonSquare4ChannelRunKeepsExactlyTheUnmaskedColumns()
    {
        // 96x64 (latents 12 wide, 8 high), the left half repainted: latent columns 6.. are the init latents exactly,
        // columns ..6 are not. A transposed or mis-sized mask fails this.
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(96, 64);
        using var mask = MaskWhere(96, 64, (x, _) => x < 48);
        using var result = pipeline.Generate("a cat", Quick with { InitImage = init, Mask = mask, Strength = 1.0, ReturnLatents = true });
        using var expected = InitLatents(pipeline, init, 96, 64, seed: 3);
        Assert.That(result.Pixels.shape, Is.EqualTo(new long[] { 1, 64, 96, 3 }));
        AssertTensor.MaxAbsClose(result.Latents![.., .., .., 6..], expected[.., .., .., 6..], 0, "kept columns");
        Assert.That((result.Latents[.., .., .., ..6] - expected[.., .., .., ..6]).abs().min().item<float>(), Is.GreaterThan(0f), "repainted columns");
    }

    /// <summary>The init image's scaled posterior sample drawn from a fresh generator seeded <paramref name="seed"/>.</summary>
    private static Tensor InitLatents(StableDiffusionPipeline pipeline, Image<Rgb24> init, int width, int height, long seed)
    {
        using var image = ImageConversion.ToTensor(init, width, height);
        using var posterior = pipeline.Vae.Encode(image);
        using var generator = new Generator((ulong)seed);
        using var sample = posterior.Sample(generator);
        return sample * pipeline.Vae.ScalingFactor;
    }

    // With euler-a every step draws noise too: each image's draws must come from its own generator, after its posterior
    // samples and initial noise.
    [TestCase(null)]
    [TestCase("euler-a")]
    public void EachImageOfABatchIsTheImageOfItsOwnSeed4Channel(string? scheduler) => BatchMatchesSingles(GeneratedModel.Pipeline, Quick, "a cat", 64, 64, scheduler);

    [Test]
    public void EachImageOfABatchIsTheImageOfItsOwnSeed9Channel() => BatchMatchesSingles(Inpainting9, Quick, "a cat", 128, 128, null);

    /// <summary>Inpainting a batch of two (seeds 10 and 11) gives, image by image, the pictures of two single runs with those seeds.</summary>
    internal static void BatchMatchesSingles(StableDiffusionPipeline pipeline, GenerationOptions quick, string prompt, int width, int height, string? scheduler)
    {
        using var init = Pattern(width, height);
        using var mask = MaskWhere(width, height, (x, y) => x > width / 4 && y < height * 3 / 4);
        var options = quick with { InitImage = init, Mask = mask, Strength = 0.75, Seed = 10, Scheduler = scheduler };
        using var batch = pipeline.Generate(prompt, options with { ImagesPerPrompt = 2 });
        Assert.That(batch.Seeds, Is.EqualTo(new long[] { 10, 11 }));
        for (int i = 0; i < 2; i++)
        {
            using var single = pipeline.Generate(prompt, options with { Seed = 10 + i });
            AssertTensor.MaxAbsClose(batch.Pixels[i].unsqueeze(0), single.Pixels, 1e-4, $"batch image {i} vs seed {10 + i}");
        }
    }

    [Test]
    public void MaskPixelsIsTheSameAsMask()
    {
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, y) => x + y < 64);
        var bytes = new byte[64 * 64 * 3];
        mask.CopyPixelDataTo(bytes);
        var options = Quick with { InitImage = init, Strength = 0.75 };
        using var a = pipeline.Generate("a cat", options with { Mask = mask });
        using var b = pipeline.Generate("a cat", options with { MaskPixels = new RgbImage(64, 64, bytes) });
        AssertTensor.MaxAbsClose(a.Pixels, b.Pixels, 0, "MaskPixels vs Mask");
    }

    [Test]
    public void AMaskOfAnotherSizeWorksEndToEnd()
    {
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(64, 64);
        using var small = MaskWhere(16, 16, (x, _) => x < 8);
        using var full = MaskWhere(64, 64, (x, _) => x < 32);
        var options = Quick with { InitImage = init, Strength = 0.75, ReturnLatents = true };
        using var fromSmall = pipeline.Generate("a cat", options with { Mask = small });
        using var fromFull = pipeline.Generate("a cat", options with { Mask = full });
        // Both binarise to the same left half at the latent grid (cells sample pixels 0, 8, ..., far from the edge at 32).
        AssertTensor.MaxAbsClose(fromSmall.Latents!, fromFull.Latents!, 0, "16x16 mask vs 64x64 mask");
    }

    // --- The 9-channel path -------------------------------------------------------------------------------------------

    [Test]
    public void A9ChannelModelAtStrength1WithAnAllWhiteMaskIgnoresTheInitImage()
    {
        // The masked image is all mid-gray whatever the init image, and at strength 1 the reference does not encode the
        // init image at all (no posterior draw before the noise): two different init images give the same image.
        var pipeline = Inpainting9;
        using var white = MaskWhere(128, 128, (_, _) => true);
        using var a = Pattern(128, 128);
        using var b = new Image<Rgb24>(128, 128, new Rgb24(200, 30, 90));
        var options = Quick with { Mask = white, Strength = 1.0 };
        using var fromA = pipeline.Generate("a sofa", options with { InitImage = a });
        using var fromB = pipeline.Generate("a sofa", options with { InitImage = b });
        AssertTensor.MaxAbsClose(fromA.Pixels, fromB.Pixels, 0, "all-white mask at strength 1");
    }

    [Test]
    public void A9ChannelModelRunsNonSquareAndWithAnAllBlackMask()
    {
        AssertTheMaskReachesTheUNet(Inpainting9, Quick, "a sofa", 128, 64);
    }

    /// <summary>
    /// A 9-channel pipeline on a <paramref name="width"/> x <paramref name="height"/> pattern, once with an all-black mask and
    /// once with a centred ellipse (strength 0.75): the picture has that size and the mask changes it.
    /// </summary>
    internal static void AssertTheMaskReachesTheUNet(StableDiffusionPipeline pipeline, GenerationOptions quick, string prompt, int width, int height)
    {
        using var init = Pattern(width, height);
        using var black = MaskWhere(width, height, (_, _) => false);
        using var ellipse = MaskWhere(width, height, (x, y) => Math.Pow((x - width / 2) / (width * 0.3125), 2) + Math.Pow((y - height / 2) / (height * 0.3125), 2) < 1);
        using var kept = pipeline.Generate(prompt, quick with { InitImage = init, Mask = black, Strength = 0.75 });
        using var painted = pipeline.Generate(prompt, quick with { InitImage = init, Mask = ellipse, Strength = 0.75 });
        Assert.That(painted.Pixels.shape, Is.EqualTo(new long[] { 1, height, width, 3 }));
        Assert.That((kept.Pixels - painted.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-3), "the mask reaches the UNet");
    }

    // --- padding_mask_crop --------------------------------------------------------------------------------------------

    [Test]
    public void TheCropRegionIsTheMaskBoxPaddedAndWidenedToTheGenerationsAspect()
    {
        using var mask = MaskWhere(64, 64, (x, y) => x is >= 40 and < 48 && y is >= 8 and < 16);
        Assert.That(MaskCrop.Region(mask, 64, 64, 4), Is.EqualTo(new CropRegion(36, 4, 52, 20)));
        // Twice as wide as high: the 16x16 box grows to 32x16, centred.
        Assert.That(MaskCrop.Region(mask, 128, 64, 4), Is.EqualTo(new CropRegion(28, 4, 60, 20)));
        // Near the right edge the widened box is shifted back inside the image.
        using var right = MaskWhere(64, 64, (x, y) => x >= 60 && y is >= 8 and < 16);
        Assert.That(MaskCrop.Region(right, 128, 64, 0), Is.EqualTo(new CropRegion(48, 8, 64, 16)));
    }

    [Test]
    public void ACropOfAnotherAspectIsFittedAndTheGapFilledWithItsEdgeRows()
    {
        // A 16x8 crop into 16x16: fitted to 16x8 in the middle (rows 4..11), rows 0..3 continue its top rows (red) and
        // rows 12..15 its bottom rows (blue), as the reference's resize mode "fill".
        using var image = new Image<Rgb24>(32, 32, new Rgb24(0, 255, 0));
        for (int x = 8; x < 24; x++)
            for (int y = 4; y < 12; y++)
                image[x, y] = y < 7 ? new Rgb24(255, 0, 0) : y >= 9 ? new Rgb24(0, 0, 255) : new Rgb24(9, 9, 9);
        using var filled = MaskCrop.CropAndFill(image, new CropRegion(8, 4, 24, 12), 16, 16);
        Assert.That((filled.Width, filled.Height), Is.EqualTo((16, 16)));
        for (int x = 0; x < 16; x++)
        {
            for (int y = 0; y < 4; y++) Assert.That(filled[x, y], Is.EqualTo(new Rgb24(255, 0, 0)), $"top fill ({x}, {y})");
            for (int y = 12; y < 16; y++) Assert.That(filled[x, y], Is.EqualTo(new Rgb24(0, 0, 255)), $"bottom fill ({x}, {y})");
            Assert.That(filled[x, 4], Is.EqualTo(new Rgb24(255, 0, 0)));
            Assert.That(filled[x, 7], Is.EqualTo(new Rgb24(9, 9, 9)));
            Assert.That(filled[x, 11], Is.EqualTo(new Rgb24(0, 0, 255)));
        }
    }

    [Test]
    public void PaddingMaskCropRepaintsOnlyTheRegionAndKeepsTheImageSize()
    {
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(96, 80);
        using var mask = MaskWhere(96, 80, (x, y) => x is >= 40 and < 48 && y is >= 8 and < 16);
        using var result = pipeline.Generate("a cat", Quick with { InitImage = init, Mask = mask, Strength = 1.0, PaddingMaskCrop = 4 });
        Assert.That((result.Images[0].Width, result.Images[0].Height), Is.EqualTo((96, 80)));
        Assert.That(result.Pixels.shape, Is.EqualTo(new long[] { 1, 80, 96, 3 }));
        var region = MaskCrop.Region(mask, pipeline.DefaultImageSize, pipeline.DefaultImageSize, 4);
        int changedInside = 0;
        for (int y = 0; y < 80; y++)
            for (int x = 0; x < 96; x++)
            {
                var a = result.Images[0][x, y];
                var b = init[x, y];
                bool masked = x is >= 40 and < 48 && y is >= 8 and < 16;
                if (!masked) Assert.That(a, Is.EqualTo(b), $"pixel ({x}, {y}) outside the mask is the init image's");
                else if (!a.Equals(b)) changedInside++;
            }
        Assert.That(changedInside, Is.GreaterThan(32), "the masked pixels are repainted");
        Assert.That(region.Width * region.Height, Is.LessThan(96 * 80), "a crop, not the whole image");
    }

    [TestCase(false)]
    [TestCase(true)]
    public void AnInpaintingGenerationLeavesNoTensorAlive(bool crop)
    {
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, y) => x is > 10 and < 30 && y > 20);
        var options = Quick with { InitImage = init, Mask = mask, Strength = 0.75, ImagesPerPrompt = 2, PaddingMaskCrop = crop ? 4 : null };
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using (pipeline.Generate("a cat", options)) { }
        Assert.That(DisposeScopeManager.Statistics.ThreadTotalLiveCount, Is.EqualTo(before), "tensors left alive");
        using var cts = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => pipeline.Generate("a cat", options with { OnStep = a => { if (a.Step == 2) cts.Cancel(); return null; } }, null, cts.Token));
        Assert.That(DisposeScopeManager.Statistics.ThreadTotalLiveCount, Is.EqualTo(before), "tensors left alive after cancellation");
    }

    // --- Errors -------------------------------------------------------------------------------------------------------

    [Test]
    public void AMaskWithoutAnInitImageIsRefused()
    {
        using var mask = MaskWhere(64, 64, (_, _) => true);
        var e = Assert.Throws<ArgumentException>(() => GeneratedModel.Pipeline.Generate("a cat", Quick with { Mask = mask }));
        Assert.That(e!.Message, Does.Contain("Mask needs an InitImage"));
    }

    [Test]
    public void A9ChannelModelWithoutAMaskIsRefused()
    {
        var pipeline = Inpainting9;
        using var init = Pattern(128, 128);
        var txt2img = Assert.Throws<ArgumentException>(() => pipeline.Generate("a sofa", Quick));
        Assert.That(txt2img!.Message, Does.Contain("9 input channels").And.Contain("InitImage").And.Contain("Mask"));
        var img2img = Assert.Throws<ArgumentException>(() => pipeline.Generate("a sofa", Quick with { InitImage = init }));
        Assert.That(img2img!.Message, Does.Contain("inpainting model"));
    }

    [Test]
    public void BadMaskOptionsAreRefusedWithTheReason()
    {
        var pipeline = GeneratedModel.Pipeline;
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, _) => x < 10);
        using var other = MaskWhere(32, 64, (x, _) => x < 10);
        using var black = MaskWhere(64, 64, (_, _) => false);
        var bytes = new byte[64 * 64 * 3];
        Assert.That(Assert.Throws<ArgumentException>(() => pipeline.Generate("x", Quick with { InitImage = init, Mask = mask, MaskPixels = new RgbImage(64, 64, bytes) }))!.Message,
            Does.Contain("Mask and MaskPixels"));
        Assert.That(Assert.Throws<ArgumentException>(() => pipeline.Generate("x", Quick with { InitImage = init, PaddingMaskCrop = 8 }))!.Message,
            Does.Contain("PaddingMaskCrop applies to inpainting"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => pipeline.Generate("x", Quick with { InitImage = init, Mask = mask, PaddingMaskCrop = -1 }))!.Message,
            Does.Contain("negative"));
        Assert.That(Assert.Throws<ArgumentException>(() => pipeline.Generate("x", Quick with { InitImage = init, Mask = other, PaddingMaskCrop = 8 }))!.Message,
            Does.Contain("32x64").And.Contain("64x64"));
        Assert.That(Assert.Throws<ArgumentException>(() => pipeline.Generate("x", Quick with { InitImage = init, Mask = black, PaddingMaskCrop = 8 }))!.Message,
            Does.Contain("black everywhere"));
    }

    [Test]
    public void AUNetOfAnotherInputWidthIsRefused()
    {
        var p = GeneratedModel.Pipeline;
        using var odd = new StableDiffusionPipeline(p.Tokenizer, p.TextEncoder, new WiderUNet(p.UNet, 5), p.Vae, p.Scheduler, leaveComponentsOpen: true);
        var e = Assert.Throws<ArgumentException>(() => odd.Generate("a cat", Quick));
        Assert.That(e!.Message, Does.Contain("5 input channels").And.Contain("4").And.Contain("9"));
    }

    /// <summary>A UNet that claims another input width (it is never run).</summary>
    private sealed class WiderUNet(IUNet inner, int inChannels) : IUNet
    {
        public int InChannels => inChannels;
        public int OutChannels => inner.OutChannels;
        public int SampleSize => inner.SampleSize;
        public int CrossAttentionDim => inner.CrossAttentionDim;
        public Device Device => inner.Device;
        public ScalarType DType => inner.DType;
        public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates) => throw new InvalidOperationException("not run");
        public void Dispose() { }
    }
}
