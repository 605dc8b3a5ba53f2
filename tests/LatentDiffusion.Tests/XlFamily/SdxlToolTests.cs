using LatentDiffusion.Integration;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Cli;
using LatentDiffusion.Tests.Pipelines;
using Microsoft.Extensions.AI;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

#pragma warning disable MEAI001 // IImageGenerator is marked experimental by Microsoft.Extensions.AI.
/// <summary>The ldm tool and the Microsoft.Extensions.AI adapter on SDXL, unchanged.</summary>
public class SdxlToolTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-sdxl-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task InfoNamesTheFamily()
    {
        var (code, stdout, err) = await CliTests.Run("info", "--model", Fixtures.PathOf("tiny-sdxl"));
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(stdout, Does.Contain("Stable Diffusion XL").And.Contain("text_encoder_2").And.Contain("EulerDiscreteScheduler"));
        (code, stdout, err) = await CliTests.Run("info", "--model", Fixtures.PathOf("tiny-sdxl.safetensors"));
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(stdout, Does.Contain("Stable Diffusion XL").And.Contain("single-file"));
    }

    [Test]
    public async Task GenerateWritesTheReferencePngFromTheFolderAndTheSingleFile()
    {
        // sdxl/txt2img/euler/42: no negative prompt (zeroed), guidance 5, 8 steps, the model's own Euler.
        foreach (var model in new[] { new[] { "--model", Fixtures.PathOf("tiny-sdxl") }, new[] { "--model", Fixtures.PathOf("tiny-sdxl.safetensors"), "--config", Fixtures.PathOf("tiny-sdxl") } })
        {
            string output = Path.Combine(_dir, "out.png");
            var (code, _, err) = await CliTests.Run([
                "generate", .. model, "--prompt", "a photograph of an astronaut riding a horse", "--steps", "8", "--guidance", "5",
                "--seed", "42", "--width", "128", "--height", "128", "--output", output, "--overwrite"]);
            Assert.That(code, Is.EqualTo(0), err);
            using var image = Image.Load<Rgb24>(output);
            var bytes = new byte[128 * 128 * 3];
            image.CopyPixelDataTo(bytes);
            using var actual = tensor(bytes.Select(b => (float)b).ToArray(), new long[] { 1, 128, 128, 3 }) / 255f;
            using var expected = SdxlFixtures.Expected("sdxl/txt2img/euler/42/image");
            AssertTensor.MaxAbsClose(actual, expected, 1.0 / 255 + 2e-3, string.Join(" ", model) + " as PNG");
        }
    }

    [Test]
    public async Task TheImageGeneratorAdapterRunsSdxl()
    {
        var pipeline = TinyModels.Get("tiny-sdxl");
        IImageGenerator generator = new LatentDiffusionImageGenerator(pipeline, new GenerationOptions { Steps = 3 });
        var options = new ImageGenerationOptions
        {
            ImageSize = new System.Drawing.Size(64, 48),
            AdditionalProperties = new AdditionalPropertiesDictionary { ["seed"] = 7, ["guidance_scale"] = 5.0 },
        };
        var response = await generator.GenerateAsync(new ImageGenerationRequest("a red circle"), options);
        var png = response.Contents.OfType<DataContent>().Single();
        using var direct = pipeline.Generate("a red circle", new GenerationOptions { Steps = 3, Seed = 7, GuidanceScale = 5.0, Width = 64, Height = 48 });
        using var decoded = Image.Load<Rgb24>(png.Data.ToArray());
        var a = new byte[64 * 48 * 3];
        var b = new byte[64 * 48 * 3];
        decoded.CopyPixelDataTo(a);
        direct.Images[0].CopyPixelDataTo(b);
        Assert.That(a, Is.EqualTo(b));
    }

    [Test]
    public async Task GenerateTakesTheSecondPromptsAndAStandaloneVae()
    {
        // A VAE file unlike the model's own (the decoder's last bias moved), so the image shows which VAE decoded it.
        string vaeFile = Path.Combine(_dir, "other_vae.safetensors");
        using (var own = LatentDiffusion.Formats.SafetensorsFile.Open(Fixtures.PathOf("tiny-sdxl", "vae", "diffusion_pytorch_model.safetensors")))
        {
            var tensors = own.Entries.Keys.ToDictionary(k => k, k => own.Load(k));
            tensors["decoder.conv_out.bias"] = tensors["decoder.conv_out.bias"] + 0.25f;
            LatentDiffusion.Formats.SafetensorsWriter.Save(vaeFile, tensors);
            foreach (var t in tensors.Values) t.Dispose();
        }
        string output = Path.Combine(_dir, "out.png");
        var (code, _, err) = await CliTests.Run("generate", "--model", Fixtures.PathOf("tiny-sdxl"), "--prompt", "a lighthouse", "--prompt-2", "at dusk",
            "--negative-prompt", "blurry", "--negative-prompt-2", "dark", "--vae", vaeFile, "--steps", "2", "--guidance", "5", "--seed", "3",
            "--width", "64", "--height", "64", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);

        var options = new GenerationOptions { Prompt2 = "at dusk", NegativePrompt = "blurry", NegativePrompt2 = "dark", Steps = 2, GuidanceScale = 5, Seed = 3, Width = 64, Height = 64 };
        await using var withVae = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sdxl"), new PipelineOptions { VaeFile = vaeFile });
        using var expected = withVae.Generate("a lighthouse", options);
        using var plain = TinyModels.Get("tiny-sdxl").Generate("a lighthouse", options);
        using var image = Image.Load<Rgb24>(output);
        var written = new byte[64 * 64 * 3];
        var library = new byte[64 * 64 * 3];
        var ownVae = new byte[64 * 64 * 3];
        image.CopyPixelDataTo(written);
        expected.Images[0].CopyPixelDataTo(library);
        plain.Images[0].CopyPixelDataTo(ownVae);
        Assert.That(written, Is.EqualTo(library), "the tool's image is the library's with Prompt2, NegativePrompt2 and VaeFile");
        Assert.That(written, Is.Not.EqualTo(ownVae), "the standalone VAE decoded it");

        // On an SD 1.x model the second prompt is refused in one error line.
        (code, _, err) = await CliTests.Run("generate", "--model", Fixtures.PathOf("tiny-sd15"), "--prompt", "a cat", "--prompt-2", "a dog", "--steps", "1", "--output", Path.Combine(_dir, "sd15.png"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err, Does.Contain("Prompt2"));
    }
}
