using System.Text.Json;
using LatentDiffusion.Cli;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Cli;

/// <summary>The ldm tool, run in-process through its real command line.</summary>
public class CliTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-cli-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    /// <summary>Runs ldm in-process with the given arguments; its exit code and what it wrote to each stream.</summary>
    internal static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await LdmCommand.RunAsync(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    public static IEnumerable<TestCaseData> TextToImageCases() => PipelineParityTests.TextToImageCases();

    [TestCaseSource(nameof(TextToImageCases))]
    public async Task GenerateWritesTheReferencePng(string key)
    {
        var c = PipelineParityTests.Case(key);
        var o = PipelineParityTests.TextToImageOptions(c);
        string output = Path.Combine(_dir, "out.png");
        var args = new List<string>
        {
            "generate", "--model", Fixtures.PathOf(c.GetProperty("model").GetString()!), "--prompt", c.GetProperty("prompt").GetString()!,
            "--steps", o.Steps.ToString(), "--guidance", o.GuidanceScale.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--seed", o.Seed!.Value.ToString(), "--width", o.Width!.Value.ToString(), "--height", o.Height!.Value.ToString(), "--output", output,
        };
        if (o.NegativePrompt is { } neg) args.AddRange(["--negative-prompt", neg]);
        if (o.Scheduler is { } s) args.AddRange(["--scheduler", s]);
        var pipeline = TinyModels.Get(c.GetProperty("model").GetString()!);
        var named = o.Scheduler is null ? pipeline.Scheduler : LatentDiffusion.Schedulers.SchedulerRegistry.Create(o.Scheduler, pipeline.Scheduler.Config);
        foreach (var (k, v) in PipelineParityTests.SchedulerOverridesFor(c, named)) args.AddRange(["--scheduler-option", $"{k}={v}"]);
        var (code, _, err) = await Run(args.ToArray());
        Assert.That(code, Is.EqualTo(0), err);
        AssertPngMatches(output, key + "/image", Pipelines.PipelineParityTests.KnownDeviations.GetValueOrDefault(key, 2e-3));
    }

    [Test]
    public async Task GenerateImageToImageWritesTheReferencePng()
    {
        const string key = "sd15/img2img/5";
        var c = PipelineParityTests.Case(key);
        string init = Path.Combine(_dir, "init.png");
        using (var pixels = Fixtures.Expected(key + "/init_image"))
        using (var image = PipelineParityTests.ToImage(pixels))
            await image.SaveAsPngAsync(init);
        string output = Path.Combine(_dir, "out.png");
        var (code, _, err) = await Run("generate", "--model", Fixtures.PathOf("tiny-sd15"), "--prompt", c.GetProperty("prompt").GetString()!,
            "--init-image", init, "--strength", "0.75", "--steps", "10", "--guidance", "7.5", "--seed", "5", "--scheduler", "ddim",
            "--scheduler-option", "clip_sample=false", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);
        AssertPngMatches(output, key + "/image");
    }

    private static void AssertPngMatches(string png, string expectedKey, double pipelineTolerance = 2e-3)
    {
        using var image = Image.Load<Rgb24>(png);
        using var expected = Fixtures.Expected(expectedKey);
        var bytes = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(bytes);
        using var actual = tensor(bytes.Select(b => (float)b).ToArray(), new long[] { 1, image.Height, image.Width, 3 }) / 255f;
        // 1/255 for the reference's own rounding plus the float32 pipeline tolerance.
        AssertTensor.MaxAbsClose(actual, expected, 1.0 / 255 + pipelineTolerance, expectedKey + " as PNG");
    }

    [Test]
    public async Task CountWritesNumberedFiles()
    {
        string output = Path.Combine(_dir, "img.png");
        var (code, stdout, err) = await Run("generate", "--model", GeneratedModel.Folder, "--prompt", "a cat", "--steps", "1", "--count", "2", "--width", "64", "--height", "64", "--seed", "1", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(File.Exists(Path.Combine(_dir, "img-0.png")) && File.Exists(Path.Combine(_dir, "img-1.png")), stdout);
    }

    [Test]
    public async Task TokenizePrintsTheReferenceIds()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixtures.PathOf("tokenizer_cases.json")));
        var c = doc.RootElement.GetProperty("cases")[3];
        var (code, stdout, err) = await Run("tokenize", "--model", Fixtures.PathOf("tiny-sd15"), c.GetProperty("text").GetString()!);
        Assert.That(code, Is.EqualTo(0), err);
        var ids = JsonSerializer.Deserialize<int[]>(stdout.Trim());
        Assert.That(ids, Is.EqualTo(c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray()));
    }

    [Test]
    public async Task InfoDescribesTheModel()
    {
        var (code, stdout, err) = await Run("info", "--model", Fixtures.PathOf("tiny-sd2v"));
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(stdout, Does.Contain("diffusers folder").And.Contain("DDIMScheduler").And.Contain("v_prediction").And.Contain("float16"));
    }

    [Test]
    public async Task InfoDescribesASingleFile()
    {
        var (code, stdout, err) = await Run("info", "--model", Fixtures.PathOf("tiny-sd15.safetensors"));
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(stdout, Does.Contain("single-file").And.Contain("unet"));
    }

    [Test]
    public async Task RefusesToOverwriteWithoutTheFlag()
    {
        string output = Path.Combine(_dir, "mine.png");
        await File.WriteAllTextAsync(output, "precious");
        var (code, _, err) = await Run("generate", "--model", GeneratedModel.Folder, "--prompt", "a cat", "--steps", "1", "--output", output);
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err, Does.Contain("--overwrite"));
        Assert.That(await File.ReadAllTextAsync(output), Is.EqualTo("precious"));
    }

    public static IEnumerable<TestCaseData> BadInputs()
    {
        yield return new TestCaseData((Func<string, string[]>)(d => ["generate", "--model", Path.Combine(d, "nope"), "--prompt", "x", "--output", Path.Combine(d, "o.png")]), "not found").SetName("missing model");
        yield return new TestCaseData((Func<string, string[]>)(d => ["generate", "--model", GeneratedModel.Folder, "--prompt", "x", "--width", "100", "--output", Path.Combine(d, "o.png")]), "multiple of 8").SetName("bad size");
        yield return new TestCaseData((Func<string, string[]>)(d => ["generate", "--model", GeneratedModel.Folder, "--prompt", "x", "--scheduler", "warp-drive", "--output", Path.Combine(d, "o.png")]), "euler-a").SetName("unknown scheduler");
        yield return new TestCaseData((Func<string, string[]>)(d => ["generate", "--model", GeneratedModel.Folder, "--prompt", "x", "--init-image", Path.Combine(d, "garbage.png"), "--output", Path.Combine(d, "o.png")]), "garbage.png").SetName("unreadable init image");
        yield return new TestCaseData((Func<string, string[]>)(d => ["generate", "--model", GeneratedModel.Folder, "--prompt", "x", "--init-image", Path.Combine(d, "huge.png"), "--output", Path.Combine(d, "o.png")]), "8192").SetName("oversized init image");
        yield return new TestCaseData((Func<string, string[]>)(d => ["generate", "--model", GeneratedModel.Folder, "--prompt", "x", "--device", "tpu", "--output", Path.Combine(d, "o.png")]), "tpu").SetName("bad device");
        yield return new TestCaseData((Func<string, string[]>)(d => ["generate", "--model", GeneratedModel.Folder, "--prompt", "x", "--steps", "0", "--output", Path.Combine(d, "o.png")]), "--steps must be at least 1, got 0").SetName("zero steps");
        yield return new TestCaseData((Func<string, string[]>)(d => ["generate", "--model", GeneratedModel.Folder, "--prompt", "x", "--threads", "0", "--output", Path.Combine(d, "o.png")]), "--threads must be between 1 and 1024, got 0").SetName("zero threads");
    }

    [TestCaseSource(nameof(BadInputs))]
    public async Task BadInputGivesOneLineAndNonZeroExit(Func<string, string[]> args, string expectedInMessage)
    {
        await File.WriteAllBytesAsync(Path.Combine(_dir, "garbage.png"), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        await File.WriteAllBytesAsync(Path.Combine(_dir, "huge.png"), BadImages.PngHeader(100_000, 100_000));
        var (code, _, err) = await Run(args(_dir));
        Assert.That(code, Is.Not.EqualTo(0));
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), err);
        Assert.That(lines[0], Does.StartWith("error: ").And.Contain(expectedInMessage));
        Assert.That(err, Does.Not.Contain("   at "), "no stack trace without --verbose");
    }
}
