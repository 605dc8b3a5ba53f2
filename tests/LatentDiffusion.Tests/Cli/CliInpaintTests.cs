using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Cli;

/// <summary><c>ldm generate --mask</c>: the reference's inpainting image from PNG files, and the errors.</summary>
public class CliInpaintTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-cli-inpaint-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task GenerateWithAMaskWritesTheReferencePng()
    {
        const string key = "inpaint/9ch/pndm/1.0/21";
        var c = InpaintParityTests.Case(key);
        var call = c.GetProperty("call");
        string init = Path.Combine(_dir, "init.png"), mask = Path.Combine(_dir, "mask.png"), output = Path.Combine(_dir, "out.png");
        using (var image = InpaintParityTests.InitImage()) await image.SaveAsPngAsync(init);
        using (var image = InpaintParityTests.Mask()) await image.SaveAsPngAsync(mask);
        // The folder's own scheduler is the case's (PNDM from the public SD 1.5 file). No --strength: the case ran at the
        // reference inpainting pipeline's default, 1.0, and so does the tool.
        Assert.That(call.GetProperty("strength").GetDouble(), Is.EqualTo(1.0));
        var (code, _, err) = await CliTests.Run("generate", "--model", Fixtures.PathOf("tiny-sd15-inpaint"), "--prompt", call.GetProperty("prompt").GetString()!,
            "--negative-prompt", call.GetProperty("negative_prompt").GetString()!, "--init-image", init, "--mask", mask,
            "--steps", "10", "--guidance", "7.5", "--seed", "21", "--width", "128", "--height", "128", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);
        using var written = Image.Load<Rgb24>(output);
        var bytes = new byte[written.Width * written.Height * 3];
        written.CopyPixelDataTo(bytes);
        using var actual = tensor(bytes.Select(b => (float)b).ToArray(), new long[] { 1, written.Height, written.Width, 3 }) / 255f;
        using var expected = Fixtures.ExpectedPhase2(key + "/image");
        // 1/255 for the PNG's rounding plus the pipeline tolerance.
        AssertTensor.MaxAbsClose(actual, expected, 1.0 / 255 + 2e-3, key + " as PNG");
    }

    [Test]
    public async Task AMaskWithoutAnInitImageIsAnError()
    {
        string mask = Path.Combine(_dir, "mask.png");
        using (var image = new Image<Rgb24>(64, 64, new Rgb24(255, 255, 255))) await image.SaveAsPngAsync(mask);
        var (code, _, err) = await CliTests.Run("generate", "--model", GeneratedModel.Folder, "--prompt", "x", "--mask", mask, "--output", Path.Combine(_dir, "o.png"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err.Trim(), Does.StartWith("error: ").And.Contain("--mask needs --init-image"));
        Assert.That(File.Exists(Path.Combine(_dir, "o.png")), Is.False);
    }

    [Test]
    public async Task AnUnreadableMaskIsAnErrorNamingTheFile()
    {
        string init = Path.Combine(_dir, "init.png"), mask = Path.Combine(_dir, "mask.png");
        using (var image = new Image<Rgb24>(64, 64, new Rgb24(10, 20, 30))) await image.SaveAsPngAsync(init);
        await File.WriteAllBytesAsync(mask, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        var (code, _, err) = await CliTests.Run("generate", "--model", GeneratedModel.Folder, "--prompt", "x", "--init-image", init, "--mask", mask, "--steps", "1", "--output", Path.Combine(_dir, "o.png"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err.Trim(), Does.StartWith("error: ").And.Contain("mask.png"));
    }

    [Test]
    public async Task AnInpaintingModelWithoutAMaskIsAnError()
    {
        var (code, _, err) = await CliTests.Run("generate", "--model", Fixtures.PathOf("tiny-sd15-inpaint"), "--prompt", "x", "--steps", "1", "--output", Path.Combine(_dir, "o.png"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err.Trim(), Does.StartWith("error: ").And.Contain("inpainting model"));
    }
}
