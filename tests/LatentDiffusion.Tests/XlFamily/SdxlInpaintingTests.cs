using System.Text.Json.Nodes;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Loading;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static LatentDiffusion.Tests.Pipelines.InpaintingTests;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>
/// SDXL inpainting (the reference's <c>StableDiffusionXLInpaintPipeline</c>), shown by construction on tiny-sdxl (there is
/// no SDXL inpainting reference fixture): the 4-channel blend against SDXL image-to-image and the init latents, the
/// image-to-image time ids, DenoisingStart from an init image and from a first model's latents, batches, and a 9-channel
/// SDXL UNet built here from tiny-sdxl (conv_in widened with seeded weights) as a <c>StableDiffusionXLInpaintPipeline</c>
/// folder and as a single file.
/// </summary>
public class SdxlInpaintingTests
{
    private static readonly GenerationOptions Quick = new() { Steps = 4, GuidanceScale = 5, Seed = 3 };

    private string _dir = "";
    private StableDiffusionPipeline? _nine;

    private static StableDiffusionPipeline Tiny => Pipelines.TinyModels.Get("tiny-sdxl");

    /// <summary>tiny-sdxl as a 9-channel inpainting model (loaded once for the class).</summary>
    private StableDiffusionPipeline Nine => _nine ??= StableDiffusionPipeline.LoadAsync(_dir).GetAwaiter().GetResult();

    [OneTimeSetUp]
    public void CreateInpaintingFolder()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ld-xl-inpaint-" + Guid.NewGuid().ToString("N"));
        HostileFile.CopyFolder(Fixtures.PathOf("tiny-sdxl"), _dir);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "model_index.json")))!.AsObject();
        index["_class_name"] = "StableDiffusionXLInpaintPipeline";
        index["requires_aesthetics_score"] = false;
        WriteFile(Path.Combine(_dir, "model_index.json"), index.ToJsonString());
        string configPath = Path.Combine(_dir, "unet", "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["in_channels"] = 9;
        WriteFile(configPath, config.ToJsonString());
        string weightsPath = Path.Combine(_dir, "unet", "diffusion_pytorch_model.safetensors");
        var tensors = WidenedConvIn(weightsPath, "conv_in.weight");
        File.Delete(weightsPath);
        SafetensorsWriter.Save(weightsPath, tensors);
        foreach (var t in tensors.Values) t.Dispose();
    }

    [OneTimeTearDown]
    public void DeleteInpaintingFolder()
    {
        _nine?.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private static void WriteFile(string path, string text)
    {
        File.Delete(path);
        File.WriteAllText(path, text);
    }

    /// <summary>
    /// The tensors of <paramref name="file"/> with the UNet's first convolution widened from 4 to 9 input channels: the
    /// original 4 first (the latents), then 5 seeded ones (the mask, the masked image's latents), as an inpainting UNet has them.
    /// </summary>
    private static Dictionary<string, Tensor> WidenedConvIn(string file, string convIn)
    {
        using var source = SafetensorsFile.Open(file);
        var tensors = source.Entries.Keys.ToDictionary(k => k, k => source.Load(k));
        var original = tensors[convIn];
        Assert.That(original.shape[1], Is.EqualTo(4), convIn);
        using var generator = new Generator(21);
        using var extra = (randn([original.shape[0], 5, original.shape[2], original.shape[3]], generator: generator) * 0.1).to(original.dtype);
        tensors[convIn] = cat([original, extra], 1);
        original.Dispose();
        return tensors;
    }

    private static StableDiffusionPipeline Compose(StableDiffusionPipeline p, IUNet unet)
        => new(p.Tokenizer, p.TextEncoder, p.Tokenizer2!, p.TextEncoder2!, unet, p.Vae, p.Scheduler, p.XLOptions, leaveComponentsOpen: true);

    /// <summary>The VAE's scaled posterior samples of <paramref name="images"/>, drawn in turn from one generator seeded <paramref name="seed"/>, after <paramref name="skipDraws"/> latent-shaped draws.</summary>
    private static Tensor[] Samples(StableDiffusionPipeline pipeline, long seed, params (Tensor Image, int SkipDraws)[] images)
    {
        using var generator = new Generator((ulong)seed);
        var result = new List<Tensor>();
        foreach (var (image, skip) in images)
        {
            using var posterior = pipeline.Vae.Encode(image);
            for (int i = 0; i < skip; i++) randn(posterior.Mean.shape, generator: generator).Dispose();
            using var sample = posterior.Sample(generator);
            result.Add(sample * pipeline.Vae.ScalingFactor);
        }
        return result.ToArray();
    }

    // --- The 4-channel blend ----------------------------------------------------------------------------------------

    [TestCase(null)]
    [TestCase(0.5)]
    public void AnAllWhiteMaskOnA4ChannelSdxlModelIsImageToImage(double? denoisingStart)
    {
        // The reference draws the init image's posterior sample, then the noise (at denoising_start too, where image to
        // image draws none), then the masked image's sample; with nothing put back and Euler drawing nothing per step, the
        // latents are image-to-image's bit for bit, with the same image-to-image time ids.
        using var init = Pattern(64, 64);
        using var white = MaskWhere(64, 64, (_, _) => true);
        var options = Quick with { InitImage = init, Strength = 0.6, DenoisingStart = denoisingStart, ReturnLatents = true, NegativeOriginalSize = (40, 48) };
        using var inpainted = Tiny.Generate("a red car", options with { Mask = white });
        using var img2img = Tiny.Generate("a red car", options);
        Assert.That(inpainted.Timings!.DenoiserCalls, Is.EqualTo(2), "int(4 x 0.6) steps, or the 2 below t=500");
        AssertTensor.MaxAbsClose(inpainted.Latents!, img2img.Latents!, 0, "all-white SDXL inpainting vs SDXL image-to-image");
    }

    [TestCase(0.75, null)]
    [TestCase(1.0, null)]
    [TestCase(0.75, 0.5)]
    public void TheGeneratorIsDrawnInTheReferencesOrder(double strength, double? denoisingStart)
    {
        // Inpainting draws what image to image draws (the posterior sample, then the noise, which image to image skips at
        // denoising_start), then the masked image's posterior sample: image-to-image's end state plus one or two
        // latent-shaped draws, so that later draws (an ancestral scheduler's) line up with the reference.
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, _) => x < 20);
        using var g1 = new Generator(5);
        using var g2 = new Generator(5);
        var options = Quick with { InitImage = init, Strength = strength, DenoisingStart = denoisingStart, Seed = null };
        using (Tiny.Generate("a red car", options with { Generator = g1 })) { }
        for (int i = 0; i < (denoisingStart is null ? 1 : 2); i++) randn([1, 4, 8, 8], generator: g1).Dispose();
        using (Tiny.Generate("a red car", options with { Generator = g2, Mask = mask })) { }
        using var s1 = g1.get_state();
        using var s2 = g2.get_state();
        Assert.That(s1.eq(s2).all().item<bool>(), Is.True, "generator state after inpainting = after image-to-image and the extra draws");
    }

    [TestCase(0.75, null)]
    [TestCase(1.0, null)]
    [TestCase(0.75, 0.5)]
    public void AnAllBlackMaskOnA4ChannelSdxlModelGivesBackTheInitLatents(double strength, double? denoisingStart)
    {
        using var init = Pattern(64, 64);
        using var black = MaskWhere(64, 64, (_, _) => false);
        using var result = Tiny.Generate("a red car", Quick with { InitImage = init, Mask = black, Strength = strength, DenoisingStart = denoisingStart, ReturnLatents = true });
        using var image = ImageConversion.ToTensor(init, 64, 64);
        var expected = Samples(Tiny, 3, (image, 0))[0];
        using (expected) AssertTensor.MaxAbsClose(result.Latents!, expected, 0, "all-black SDXL inpainting vs the init latents");
    }

    [Test]
    public void ANonSquareSdxlRunKeepsTheUnmaskedColumnsAndConditionsOnImageToImageTimeIds()
    {
        // 96x64: latents 12 wide, 8 high; the left half repainted. The time ids are image-to-image's (the reference's
        // inpainting pipeline uses _get_add_time_ids of image to image): the negative half takes NegativeOriginalSize
        // with the positive crop and the positive target size (text to image would ignore a lone negative size).
        using var recording = new RecordingUNet(Tiny.UNet);
        using var pipeline = Compose(Tiny, recording);
        using var init = Pattern(96, 64);
        using var mask = MaskWhere(96, 64, (x, _) => x < 48);
        using var result = pipeline.Generate("a red car", Quick with
        {
            InitImage = init, Mask = mask, Strength = 1.0, ReturnLatents = true,
            CropsCoordsTopLeft = (4, 8), NegativeCropsCoordsTopLeft = (1, 2), NegativeOriginalSize = (32, 48),
        });
        Assert.That(result.Pixels.shape, Is.EqualTo(new long[] { 1, 64, 96, 3 }));
        using var image = ImageConversion.ToTensor(init, 96, 64);
        using var expected = Samples(Tiny, 3, (image, 0))[0];
        AssertTensor.MaxAbsClose(result.Latents![.., .., .., 6..], expected[.., .., .., 6..], 0, "kept columns");
        Assert.That((result.Latents[.., .., .., ..6] - expected[.., .., .., ..6]).abs().min().item<float>(), Is.GreaterThan(0f), "repainted columns");
        Assert.That(recording.TimeIds, Has.Count.EqualTo(4));
        Assert.That(recording.TimeIds[0], Is.EqualTo(new float[] { 32, 48, 4, 8, 64, 96, 64, 96, 4, 8, 64, 96 }), "[negative; positive] time ids");
    }

    [TestCase(false)]
    [TestCase(true)]
    public void EachImageOfAnSdxlBatchIsTheImageOfItsOwnSeed(bool nineChannel)
        => BatchMatchesSingles(nineChannel ? Nine : Tiny, Quick, "a red car", 64, 64, scheduler: null);

    // --- DenoisingStart: the base + refiner hand-off ------------------------------------------------------------------

    [Test]
    public void HandedOverLatentsTakeTheInitImagesPlace()
    {
        // The base inpaints the first half (DenoisingEnd) and returns its latents, whose kept part is the clean init
        // latents; a second model continues from them with the same mask (the reference passes them as its image). Its
        // kept part stays theirs, the masked part is denoised further; it draws only the noise (no masked image).
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, _) => x < 32);
        using var first = Tiny.Generate("a red car", Quick with { Steps = 8, InitImage = init, Mask = mask, Strength = 1.0, DenoisingEnd = 0.5, ReturnLatents = true });
        var handed = first.Latents!;
        using var generator = new Generator(8);
        using var second = Tiny.Generate("a red car", Quick with { Steps = 8, Seed = null, Generator = generator, Mask = mask, DenoisingStart = 0.5, Latents = handed, ReturnLatents = true });
        Assert.That(second.Timings!.DenoiserCalls, Is.EqualTo(4));
        AssertTensor.MaxAbsClose(second.Latents![.., .., .., 4..], handed[.., .., .., 4..], 0, "the kept half is the handed-over latents'");
        Assert.That((second.Latents[.., .., .., ..4] - handed[.., .., .., ..4]).abs().max().item<float>(), Is.GreaterThan(1e-3f), "the masked half is denoised further");

        using var replay = new Generator(8);
        randn([1, 4, 8, 8], generator: replay).Dispose();
        using var s1 = generator.get_state();
        using var s2 = replay.get_state();
        Assert.That(s1.eq(s2).all().item<bool>(), Is.True, "one latent-shaped draw: the noise");

        // With an all-white mask it is the image-to-image hand-off, bit for bit.
        using var white = MaskWhere(64, 64, (_, _) => true);
        var options = Quick with { Steps = 8, DenoisingStart = 0.5, Latents = handed, ReturnLatents = true };
        using var inpainted = Tiny.Generate("a red car", options with { Mask = white });
        using var img2img = Tiny.Generate("a red car", options);
        AssertTensor.MaxAbsClose(inpainted.Latents!, img2img.Latents!, 0, "all-white hand-off vs image-to-image hand-off");
    }

    [Test]
    public void ARefinerContinuesTheBasesInpaintingConditionedOnTheAestheticScore()
    {
        // A refiner of tiny-sdxl's shape (second encoder only, requires_aesthetics_score, 5 time ids; seeded weights) takes
        // the base's latents with the mask. Its time ids are original size + crop + aesthetic score, the negative half with
        // its own crop and score (the refiner rule of image to image's _get_add_time_ids).
        var config = LatentDiffusion.UNet.UNet2DConditionConfig.Load(Fixtures.PathOf("tiny-sdxl", "unet", "config.json")) with
        {
            CrossAttentionDim = [32, 32, 32],
            ProjectionClassEmbeddingsInputDim = 64,
        };
        manual_seed(11);
        using var refinerUNet = new LatentDiffusion.UNet.UNet2DConditionModel(config, CPU, ScalarType.Float32);
        using var recording = new RecordingUNet(refinerUNet);
        using var refiner = new StableDiffusionPipeline(null, null, Tiny.Tokenizer2!, Tiny.TextEncoder2!, recording, Tiny.Vae, Tiny.Scheduler,
            new StableDiffusionXLOptions { ForceZerosForEmptyPrompt = false, RequiresAestheticsScore = true }, leaveComponentsOpen: true);

        using var init = Pattern(96, 64);
        using var mask = MaskWhere(96, 64, (x, _) => x < 48);
        using var first = Tiny.Generate("a red car", Quick with { Steps = 8, InitImage = init, Mask = mask, Strength = 1.0, DenoisingEnd = 0.5, ReturnLatents = true });
        using var refined = refiner.Generate("a red car", Quick with
        {
            Steps = 8, Mask = mask, DenoisingStart = 0.5, Latents = first.Latents, ReturnLatents = true,
            AestheticScore = 7, NegativeAestheticScore = 2, CropsCoordsTopLeft = (4, 8), NegativeCropsCoordsTopLeft = (1, 2),
        });
        Assert.That(recording.TimeIds, Has.Count.EqualTo(4), "the 4 timesteps below 500");
        Assert.That(recording.TimeIds[0], Is.EqualTo(new float[] { 64, 96, 1, 2, 2, 64, 96, 4, 8, 7 }), "[negative; positive] time ids");
        AssertTensor.MaxAbsClose(refined.Latents![.., .., .., 6..], first.Latents![.., .., .., 6..], 0, "the kept half");
        Assert.That((refined.Latents[.., .., .., ..6] - first.Latents[.., .., .., ..6]).abs().max().item<float>(), Is.GreaterThan(1e-3f), "the refined half");
    }

    // --- 9-channel SDXL inpainting UNets ------------------------------------------------------------------------------

    [Test]
    public void AStableDiffusionXLInpaintPipelineFolderLoadsAsA9ChannelSdxlModel()
    {
        Assert.That(Nine.IsStableDiffusionXL);
        Assert.That(Nine.UNet.InChannels, Is.EqualTo(9));
        AssertTheMaskReachesTheUNet(Nine, Quick, "a red car", 96, 64);
    }

    [Test]
    public void A9ChannelSdxlUNetTakesLatentsMaskAndMaskedImageLatentsInThatOrder()
    {
        // At strength 1 the reference does not encode the init image: the noise is the first draw, the masked image's
        // posterior sample the second. Every step's input is cat(scaled latents, mask, masked-image latents), for both
        // halves of guidance.
        using var recording = new RecordingUNet(Nine.UNet);
        using var pipeline = Compose(Nine, recording);
        using var init = Pattern(96, 64);
        using var mask = MaskWhere(96, 64, (x, y) => x < 40 && y >= 16);
        using var result = pipeline.Generate("a red car", Quick with { InitImage = init, Mask = mask, Strength = 1.0 });
        Assert.That(recording.Inputs, Has.Count.EqualTo(4));

        using var image = ImageConversion.ToTensor(init, 96, 64);
        using var condition = InpaintMask.ToCondition(mask, 96, 64);
        using var masked = image * condition.lt(0.5).to(image.dtype);
        using var maskedLatents = Samples(Nine, 3, (masked, 1))[0];
        using var generator = new Generator(3);
        using var noise = randn([1, 4, 8, 12], generator: generator);
        using var latentMask = zeros(1, 1, 8, 12);
        latentMask[.., .., 2.., ..5] = tensor(1f);
        foreach (var input in recording.Inputs)
        {
            Assert.That(input.shape, Is.EqualTo(new long[] { 2, 9, 8, 12 }));
            for (int half = 0; half < 2; half++)
            {
                AssertTensor.MaxAbsClose(input[half..(half + 1), 4..5], latentMask, 0, "channel 4: the mask");
                AssertTensor.MaxAbsClose(input[half..(half + 1), 5..], maskedLatents, 0, "channels 5-8: the masked image's latents");
            }
        }
        // Channels 0-3 of the first step: the noise, scaled (by init_noise_sigma and the scheduler's input scaling).
        using var ratio = recording.Inputs[0][0..1, ..4] / noise;
        float mean = ratio.mean().item<float>();
        Assert.That(mean, Is.GreaterThan(0.5f).And.LessThan(1.5f));
        Assert.That((ratio - mean).abs().max().item<float>(), Is.LessThan(1e-4f), "channels 0-3: the scaled noise");
    }

    [Test]
    public async Task AnSdxlSingleFileWithA9ChannelUNetIsAnInpaintingModel()
    {
        string dir = Directory.CreateTempSubdirectory("ld-xl-inpaint-file-").FullName;
        try
        {
            string file = Path.Combine(dir, "tiny-sdxl-inpainting.safetensors");
            var tensors = WidenedConvIn(Fixtures.PathOf("tiny-sdxl.safetensors"), "model.diffusion_model.input_blocks.0.0.weight");
            SafetensorsWriter.Save(file, tensors);
            foreach (var t in tensors.Values) t.Dispose();
            // Under tiny-sdxl's ordinary configs (in_channels 4): the weights' 9 channels win.
            await using var pipeline = await StableDiffusionPipeline.LoadAsync(file, new PipelineOptions { ConfigDirectory = Fixtures.PathOf("tiny-sdxl") });
            Assert.That(pipeline.IsStableDiffusionXL);
            Assert.That(pipeline.UNet.InChannels, Is.EqualTo(9));
            using var init = Pattern(64, 64);
            using var mask = MaskWhere(64, 64, (x, _) => x < 32);
            var options = Quick with { InitImage = init, Mask = mask, Strength = 0.75 };
            using var fromFile = pipeline.Generate("a red car", options);
            using var fromFolder = Nine.Generate("a red car", options);
            AssertTensor.MaxAbsClose(fromFile.Pixels, fromFolder.Pixels, 1e-5, "single file vs the folder with the same widened weights");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public async Task TheCommandLineInpaintsWithAnSdxlModel()
    {
        string dir = Directory.CreateTempSubdirectory("ldm-cli-xl-inpaint-").FullName;
        try
        {
            string initPath = Path.Combine(dir, "init.png"), maskPath = Path.Combine(dir, "mask.png"), output = Path.Combine(dir, "out.png");
            using var init = Pattern(96, 64);
            using var mask = MaskWhere(96, 64, (x, y) => x < 40 && y >= 16);
            await init.SaveAsPngAsync(initPath);
            await mask.SaveAsPngAsync(maskPath);
            var (code, _, err) = await Cli.CliTests.Run("generate", "--model", Fixtures.PathOf("tiny-sdxl"), "--prompt", "a red car", "--init-image", initPath,
                "--mask", maskPath, "--strength", "0.75", "--steps", "4", "--guidance", "5", "--seed", "3", "--output", output);
            Assert.That(code, Is.EqualTo(0), err);
            using var written = Image.Load<Rgb24>(output);
            using var expected = Tiny.Generate("a red car", Quick with { InitImage = init, Mask = mask, Strength = 0.75 });
            Assert.That((written.Width, written.Height), Is.EqualTo((96, 64)));
            for (int y = 0; y < 64; y++)
                for (int x = 0; x < 96; x++)
                    Assert.That(written[x, y], Is.EqualTo(expected.Images[0][x, y]), $"pixel ({x}, {y})");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // --- Errors -------------------------------------------------------------------------------------------------------

    [Test]
    public void BadSdxlInpaintingOptionsAreRefusedWithTheReason()
    {
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, _) => x < 32);
        using var latents = zeros(1, 4, 8, 8);

        var txt2img = Assert.Throws<ArgumentException>(() => Nine.Generate("x", Quick));
        Assert.That(txt2img!.Message, Does.Contain("9 input channels").And.Contain("InitImage").And.Contain("Mask"));
        var handedToNine = Assert.Throws<ArgumentException>(() => Nine.Generate("x", Quick with { Mask = mask, DenoisingStart = 0.5, Latents = latents }));
        Assert.That(handedToNine!.Message, Does.Contain("9 input channels").And.Contain("handed-over Latents"));
        var crop = Assert.Throws<ArgumentException>(() => Tiny.Generate("x", Quick with { Mask = mask, DenoisingStart = 0.5, Latents = latents, PaddingMaskCrop = 4 }));
        Assert.That(crop!.Message, Does.Contain("PaddingMaskCrop").And.Contain("handed-over Latents"));
        var noStart = Assert.Throws<ArgumentException>(() => Tiny.Generate("x", Quick with { Mask = mask, Latents = latents }));
        Assert.That(noStart!.Message, Does.Contain("Mask needs an InitImage"));
        using var wrong = zeros(2, 4, 8, 8);
        var shape = Assert.Throws<ArgumentException>(() => Tiny.Generate("x", Quick with { Mask = mask, DenoisingStart = 0.5, Latents = wrong }));
        Assert.That(shape!.Message, Does.Contain("[1, 4, 8, 8]").And.Contain("[2, 4, 8, 8]"));
        var noSteps = Assert.Throws<ArgumentOutOfRangeException>(() => Tiny.Generate("x", Quick with { InitImage = init, Mask = mask, Strength = 0.1 }));
        Assert.That(noSteps!.Message, Does.Contain("no denoising step"));
    }

    [Test]
    public void DenoisingStartWithAMaskIsRefusedForSd15()
    {
        // StableDiffusionInpaintPipeline has no denoising_start; only SDXL's inpainting pipeline does.
        using var init = Pattern(64, 64);
        using var mask = MaskWhere(64, 64, (x, _) => x < 32);
        var e = Assert.Throws<ArgumentException>(() => Pipelines.TinyModels.Get("tiny-sd15").Generate("x", Quick with { InitImage = init, Mask = mask, DenoisingStart = 0.5 }));
        Assert.That(e!.Message, Does.Contain("DenoisingStart").And.Contain("SD 1.x/2.x"));
    }
}
