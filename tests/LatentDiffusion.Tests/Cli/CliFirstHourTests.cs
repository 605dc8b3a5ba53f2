using LatentDiffusion.Cli;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Tests.Cli;

/// <summary>
/// What a new user sees: each image's own seed, written into its PNG; progress and per-phase times when standard error
/// is not a terminal; stable-diffusion.cpp flag habits; warnings for float16 on the CPU and for prompts the built-in
/// model was not trained on.
/// </summary>
public class CliFirstHourTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-first-hour-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    private static string Tiny => Fixtures.PathOf("tiny-sd15");

    private static string? Parameters(string png)
    {
        using var image = Image.Load<Rgb24>(png);
        return image.Metadata.GetPngMetadata().TextData.FirstOrDefault(t => t.Keyword == "parameters").Value;
    }

    private static byte[] Pixels(string png)
    {
        using var image = Image.Load<Rgb24>(png);
        var bytes = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(bytes);
        return bytes;
    }

    [Test]
    public async Task EachPngCarriesItsOwnSeedInA1111Parameters()
    {
        string output = Path.Combine(_dir, "cat.png");
        var (code, stdout, err) = await CliTests.Run("generate", "--model", Tiny, "--prompt", "a cat", "--negative-prompt", "blurry", "--steps", "2",
            "--scheduler", "euler", "--count", "2", "--width", "64", "--height", "48", "--seed", "7", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);
        string first = Path.Combine(_dir, "cat-0.png"), second = Path.Combine(_dir, "cat-1.png");
        Assert.That(Parameters(first), Is.EqualTo("a cat\nNegative prompt: blurry\nSteps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 7, Size: 64x48, Model: tiny-sd15"));
        Assert.That(Parameters(second), Is.EqualTo("a cat\nNegative prompt: blurry\nSteps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 8, Size: 64x48, Model: tiny-sd15"));
        Assert.That(err, Does.Contain("seeds 7, 8"));
        Assert.That(stdout, Is.EqualTo(first + Environment.NewLine + second + Environment.NewLine), "standard output: the written paths only");
    }

    [Test]
    public async Task TheModelsOwnSchedulerAndImageToImageAreNamedInTheParameters()
    {
        string init = Path.Combine(_dir, "init.png");
        using (var image = new Image<Rgb24>(64, 64, new Rgb24(200, 40, 40))) await image.SaveAsPngAsync(init);
        string output = Path.Combine(_dir, "out.png");
        // -i is stable-diffusion.cpp's --init-img; the model's own scheduler is PNDM, A1111's "PLMS".
        var (code, _, err) = await CliTests.Run("generate", "--model", Tiny, "--prompt", "a cat", "-i", init, "--strength", "0.5", "--steps", "4",
            "--seed", "3", "--clip-skip", "1", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(Parameters(output), Is.EqualTo("a cat\nSteps: 4, Sampler: PLMS, CFG scale: 7.5, Seed: 3, Size: 64x64, Model: tiny-sd15, Denoising strength: 0.5, Clip skip: 2"));
        Assert.That(err, Does.Contain("seed 3"));
    }

    [Test]
    public async Task StableDiffusionCppFlagsMeanTheSameAsOurs()
    {
        string ours = Path.Combine(_dir, "ours.png"), theirs = Path.Combine(_dir, "theirs.png");
        var a = await CliTests.Run("generate", "--model", Tiny, "--prompt", "a cat", "--steps", "2", "--guidance", "3", "--scheduler", "euler-a",
            "--seed", "11", "-W", "64", "-H", "64", "--output", ours);
        var b = await CliTests.Run("generate", "--model", Tiny, "--prompt", "a cat", "--steps", "2", "--cfg-scale", "3", "--sampling-method", "euler_a",
            "-s", "11", "-W", "64", "-H", "64", "-o", theirs);
        Assert.That(a.Code, Is.EqualTo(0), a.Err);
        Assert.That(b.Code, Is.EqualTo(0), b.Err);
        Assert.That(Pixels(theirs), Is.EqualTo(Pixels(ours)));
        Assert.That(Parameters(theirs), Is.EqualTo(Parameters(ours)).And.Contain("Sampler: Euler a, CFG scale: 3, Seed: 11"));
    }

    [TestCase("--sampling-method")]
    [TestCase("-S")]
    [TestCase("--scheduler")]
    public async Task AnUnknownSchedulerIsRefusedBeforeTheModelLoads(string flag)
    {
        var (code, _, err) = await CliTests.Run("generate", "--model", Path.Combine(_dir, "no-such-model"), "--prompt", "a cat", flag, "dpm++2mv2",
            "--output", Path.Combine(_dir, "out.png"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("dpm++2mv2").And.Contain("dpm++2m").And.Not.Contain("no-such-model"));
    }

    [TestCase("euler_a", "euler-a", null)]
    [TestCase("EULER", "euler", null)]
    [TestCase("dpm2", "kdpm2", null)]
    [TestCase("dpm++2m", "dpm++2m", null)]
    [TestCase("lcm", "lcm", null)]
    [TestCase("ddim_trailing", "ddim", "trailing")]
    [TestCase("dpm++2s_a", "dpm++2s-a", null)]
    [TestCase("tcd", "tcd", null)]
    [TestCase("DPM++ 2M Karras", "dpm++2m-karras", null)]
    [TestCase("Euler a", "euler-a", null)]
    public void SamplerNamesOfOtherToolsMapToOurs(string given, string name, string? spacing)
        => Assert.That(SamplerNames.Resolve(given), Is.EqualTo((name, spacing)));

    [TestCase("ipndm")]
    [TestCase("dpm++2mv2")]
    [TestCase("nonsense")]
    public void SamplersWeDoNotHaveAreRefusedWithTheList(string given)
    {
        var e = Assert.Throws<ArgumentException>(() => SamplerNames.Resolve(given));
        Assert.That(e!.Message, Does.Contain(given).And.Contain("supported: ddim"));
    }

    [Test]
    public async Task WithoutATerminalProgressIsPlainLinesInTheStepsAskedForAndTimesComeAtTheEnd()
    {
        // The model's PNDM makes 3 steps 4 UNet calls; the user asked for 3.
        string output = Path.Combine(_dir, "out.png");
        var (code, _, err) = await CliTests.Run("generate", "--model", Tiny, "--prompt", "a cat", "--steps", "3", "--seed", "1", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var steps = lines.Where(l => l.StartsWith("step ", StringComparison.Ordinal)).Select(l => l.Split(' ')[1]).ToArray();
        Assert.That(steps, Is.EqualTo(new[] { "1/3", "2/3", "3/3" }), err);
        var time = lines.Single(l => l.StartsWith("time: ", StringComparison.Ordinal));
        Assert.That(time, Does.Match(@"^time: load \d+\.\d s, text encoding \d+\.\d s, denoising \d+\.\d s \(\d+\.\d\d it/s\), decoding \d+\.\d s, total \d+\.\d s, peak RSS \d+\.\d\d GB$"));
        Assert.That(err, Does.Not.Contain("NNPACK"));
    }

    [TestCase(11, 10, new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10 })]
    [TestCase(19, 10, new[] { 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10 })]
    [TestCase(3, 3, new[] { 1, 2, 3 })]
    public void DenoiserCallsMapToTheStepsAskedFor(int calls, int steps, int[] expected)
        => Assert.That(Enumerable.Range(1, calls).Select(k => StepProgress.UserStep(k, calls, steps)), Is.EqualTo(expected));

    [Test]
    public async Task Float16OnTheCpuWarnsOnce()
    {
        var (code, _, err) = await CliTests.Run("generate", "--model", Tiny, "--prompt", "a cat", "--steps", "1", "--seed", "1", "--width", "64", "--height", "64",
            "--dtype", "float16", "--output", Path.Combine(_dir, "out.png"));
        Assert.That(code, Is.EqualTo(0), err);
        var warnings = err.Split('\n').Where(l => l.StartsWith("warning: ", StringComparison.Ordinal) && l.Contains("float16")).ToArray();
        Assert.That(warnings, Has.Length.EqualTo(1), err);
        Assert.That(warnings[0], Does.Contain("use float32 on the CPU"));
    }

    [Test]
    public void TheBuiltInModelsHintsNameUnknownWordsAMissingBackgroundAndAnotherSize()
    {
        string shapes = BuiltInModel.Directory;
        Assert.That(BuiltInModelHints.UnknownWords("A red Dog on a blue background, photorealistic, dog", shapes), Is.EqualTo(new[] { "dog", "photorealistic" }));
        Assert.That(BuiltInModelHints.For("a red circle on a blue background", 64, 64, 64, shapes), Is.Empty);
        Assert.That(BuiltInModelHints.For("a small red circle on the left, blue background", 64, 64, 64, shapes), Is.Empty);
        var noBackground = BuiltInModelHints.For("a red circle", 64, 64, 64, shapes).ToArray();
        Assert.That(noBackground, Has.Length.EqualTo(1));
        Assert.That(noBackground[0], Does.Contain("background colour"));
        var unknown = BuiltInModelHints.For("a cat", 64, 64, 64, shapes).ToArray();
        Assert.That(unknown, Has.Length.EqualTo(1));
        Assert.That(unknown[0], Does.Contain("'cat'").And.Contain("circle"));
        var size = BuiltInModelHints.For("a red circle on a blue background", 128, 128, 64, shapes).ToArray();
        Assert.That(size, Has.Length.EqualTo(1));
        Assert.That(size[0], Does.Contain("64x64").And.Contain("128x128"));
    }

    [Test]
    public async Task TheBuiltInModelWarnsAboutWordsItDoesNotKnow()
    {
        var (code, _, err) = await CliTests.Run("generate", "--prompt", "a red dog on a blue background", "--steps", "1", "--seed", "1", "--output", Path.Combine(_dir, "out.png"));
        Assert.That(code, Is.EqualTo(0), err);
        var warnings = err.Split('\n').Where(l => l.StartsWith("warning: ", StringComparison.Ordinal)).ToArray();
        Assert.That(warnings, Has.Length.EqualTo(1), err);
        Assert.That(warnings[0], Does.Contain("'dog'"));
        var clean = await CliTests.Run("generate", "--prompt", "a red circle on a blue background", "--steps", "1", "--seed", "1", "--output", Path.Combine(_dir, "clean.png"));
        Assert.That(clean.Code, Is.EqualTo(0), clean.Err);
        Assert.That(clean.Err, Does.Not.Contain("warning: "));
        Assert.That(Parameters(Path.Combine(_dir, "clean.png")), Does.EndWith("Seed: 1, Size: 64x64, Model: shapes"));
    }
}
