using LatentDiffusion.Adapters;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Adapters;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Tests.Cli;

/// <summary><c>ldm generate --lora FILE[:scale]</c> (repeatable) on the generated model, and its errors.</summary>
public class CliLoraTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-lora-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    private string[] Args(string output, params string[] more) =>
        ["generate", "--model", GeneratedModel.Folder, "--prompt", "a red circle", "--steps", "3", "--seed", "4", "--output", output, .. more];

    private string WriteLora(string name, long seed)
    {
        using var pipeline = StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder).GetAwaiter().GetResult();
        return TestLoras.WriteKohya(pipeline, Path.Combine(_dir, name), seed);
    }

    private static async Task<Image<Rgb24>> Png(string path) => await Image.LoadAsync<Rgb24>(path);

    [Test]
    public async Task LorasWithScalesGiveTheLibrarysImage()
    {
        string a = WriteLora("a.safetensors", 1), b = WriteLora("b.safetensors", 2);
        string plainPng = Path.Combine(_dir, "plain.png"), loraPng = Path.Combine(_dir, "lora.png");
        var (code, _, err) = await CliTests.Run(Args(plainPng));
        Assert.That(code, Is.EqualTo(0), err);
        (code, _, err) = await CliTests.Run(Args(loraPng, "--lora", a + ":0.7", "--lora", b));
        Assert.That(code, Is.EqualTo(0), err);

        // The same generation through the library.
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, new PipelineOptions
        {
            Loras = [new LoraSource(a, 0.7), new LoraSource(b)],
        });
        using var expected = await pipeline.GenerateAsync("a red circle", new GenerationOptions { Steps = 3, Seed = 4 });
        using var viaCli = await Png(loraPng);
        using var plain = await Png(plainPng);
        Assert.That(Pixels(viaCli), Is.EqualTo(Pixels(expected.Images[0])), "--lora a:0.7 --lora b");
        Assert.That(Pixels(viaCli), Is.Not.EqualTo(Pixels(plain)), "the LoRAs change the image");
    }

    [Test]
    public async Task ScaleZeroGivesThePlainImage()
    {
        string a = WriteLora("a.safetensors", 1);
        string plainPng = Path.Combine(_dir, "plain.png"), zeroPng = Path.Combine(_dir, "zero.png");
        Assert.That((await CliTests.Run(Args(plainPng))).Code, Is.EqualTo(0));
        var (code, _, err) = await CliTests.Run(Args(zeroPng, "--lora", a + ":0"));
        Assert.That(code, Is.EqualTo(0), err);
        using var plain = await Png(plainPng);
        using var zero = await Png(zeroPng);
        Assert.That(Pixels(zero), Is.EqualTo(Pixels(plain)));
    }

    [Test]
    public async Task AMissingFileIsOneErrorLineBeforeTheModelLoads()
    {
        string missing = Path.Combine(_dir, "missing.safetensors");
        var (code, _, err) = await CliTests.Run(Args(Path.Combine(_dir, "x.png"), "--lora", missing + ":0.5"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err.Trim(), Does.StartWith("error: ").And.Contain(missing).And.Not.Contain("   at "));
    }

    [Test]
    public async Task ALoraThatDoesNotFitTheModelIsOneErrorLineNamingTheModule()
    {
        const string stray = "lora_unet_down_blocks_9_attentions_0_proj_in";
        string path = Path.Combine(_dir, "stray.safetensors");
        TestLoras.Save(path, new() { [stray + ".lora_down.weight"] = TorchSharp.torch.zeros(4, 32), [stray + ".lora_up.weight"] = TorchSharp.torch.zeros(32, 4) });
        var (code, _, err) = await CliTests.Run(Args(Path.Combine(_dir, "x.png"), "--lora", path));
        Assert.That(code, Is.Not.EqualTo(0));
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), err);
        Assert.That(lines[0], Does.StartWith("error: ").And.Contain(stray));
    }

    [TestCase("style.safetensors", "style.safetensors", 1.0)]
    [TestCase("style.safetensors:0.5", "style.safetensors", 0.5)]
    [TestCase("dir/style.safetensors:-1.25", "dir/style.safetensors", -1.25)]
    [TestCase(@"C:\loras\style.safetensors", @"C:\loras\style.safetensors", 1.0)]
    [TestCase(@"C:\loras\style.safetensors:0.8", @"C:\loras\style.safetensors", 0.8)]
    [TestCase("odd:name.safetensors", "odd:name.safetensors", 1.0)]
    [TestCase("style.safetensors:1e-1", "style.safetensors", 0.1)]
    public void FileAndScaleAreReadFromTheArgument(string text, string path, double scale)
        => Assert.That(LoraSource.Parse(text), Is.EqualTo(new LoraSource(path, scale)));

    [TestCase("")]
    [TestCase("style.safetensors:")]
    [TestCase("style.safetensors:1.2.3")]
    [TestCase("style.safetensors:1e999")]
    public void ABadArgumentIsAFormatError(string text)
        => Assert.Throws<FormatException>(() => LoraSource.Parse(text));

    private static byte[] Pixels(Image<Rgb24> image)
    {
        var bytes = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(bytes);
        return bytes;
    }
}
