using LatentDiffusion.Cli;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Tests.Cli;

/// <summary>ldm generate and the user's files: nothing replaced without --overwrite, nothing left behind, bad output found early.</summary>
public class CliOutputFileTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-out-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    private static string[] Generate(string output, params string[] more) =>
        ["generate", "--model", Fixtures.PathOf("tiny-sd15"), "--prompt", "a cat", "--steps", "1", "--width", "64", "--height", "64", "--seed", "1", "--output", output, .. more];

    private string[] FilesInDir() => Directory.GetFileSystemEntries(_dir, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(_dir, f)).Order().ToArray();

    private static string OneErrorLine(int code, string err)
    {
        Assert.That(code, Is.Not.EqualTo(0));
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), err);
        Assert.That(lines[0], Does.StartWith("error: "));
        return lines[0];
    }

    [Test]
    public async Task AnExistingTmpFileNextToTheOutputIsLeftAlone()
    {
        string output = Path.Combine(_dir, "victim.png");
        await File.WriteAllTextAsync(output + ".tmp", "precious");
        var (code, stdout, err) = await CliTests.Run(Generate(output));
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(await File.ReadAllTextAsync(output + ".tmp"), Is.EqualTo("precious"));
        using (var image = Image.Load<Rgb24>(output)) Assert.That(image.Width, Is.EqualTo(64));
        Assert.That(FilesInDir(), Is.EqualTo(new[] { "victim.png", "victim.png.tmp" }), "no temporary file left behind");
        Assert.That(stdout.Trim(), Is.EqualTo(output));
    }

    [Test]
    public async Task MissingFoldersOfTheOutputAreCreated()
    {
        string output = Path.Combine(_dir, "a", "b", "out.png");
        var (code, _, err) = await CliTests.Run(Generate(output));
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(File.Exists(output));
    }

    [Test]
    public async Task AnOutputFolderThatCannotBeCreatedFailsBeforeTheModelIsLoaded()
    {
        // A path whose parent is a file cannot be made a folder, even by root (for whom chmod stops nothing).
        string file = Path.Combine(_dir, "plain.txt");
        await File.WriteAllTextAsync(file, "not a folder");
        var (code, _, err) = await CliTests.Run("generate", "--model", Path.Combine(_dir, "no-such-model"), "--prompt", "x", "--output", Path.Combine(file, "out.png"));
        string line = OneErrorLine(code, err);
        Assert.That(line, Does.Contain("plain.txt").And.Contain("is a file"));
        Assert.That(line, Does.Not.Contain("no-such-model"), "the output is checked before the model is looked at");
        Assert.That(await File.ReadAllTextAsync(file), Is.EqualTo("not a folder"));
    }

    [Test]
    public async Task AnOutputThatIsAFolderFailsBeforeTheModelIsLoaded()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "taken.png"));
        var (code, _, err) = await CliTests.Run("generate", "--model", Path.Combine(_dir, "no-such-model"), "--prompt", "x", "--overwrite", "--output", Path.Combine(_dir, "taken.png"));
        Assert.That(OneErrorLine(code, err), Does.Contain("taken.png").And.Contain("is a folder"));
    }

    public static IEnumerable<TestCaseData> BadNumbers()
    {
        yield return new TestCaseData(new[] { "--width", "100" }, "--width must be a positive multiple of 8, got 100").SetName("width 100");
        yield return new TestCaseData(new[] { "--height", "0" }, "--height must be a positive multiple of 8, got 0").SetName("height 0");
        yield return new TestCaseData(new[] { "--width", "8192" }, "--width must be at most 4096, got 8192").SetName("width 8192");
        yield return new TestCaseData(new[] { "--steps", "0" }, "--steps must be at least 1, got 0").SetName("steps 0");
        yield return new TestCaseData(new[] { "--count", "0" }, "--count must be between 1 and 64, got 0").SetName("count 0");
        yield return new TestCaseData(new[] { "--count", "65" }, "--count must be between 1 and 64, got 65").SetName("count 65");
        yield return new TestCaseData(new[] { "--guidance", "NaN" }, "--guidance must be a finite number, got NaN").SetName("guidance NaN");
        yield return new TestCaseData(new[] { "--init-image", "x.png", "--strength", "1.5" }, "--strength must be between 0 and 1, got 1.5").SetName("strength 1.5");
        yield return new TestCaseData(new[] { "--clip-skip", "-1" }, "--clip-skip cannot be negative, got -1").SetName("clip skip -1");
    }

    [TestCaseSource(nameof(BadNumbers))]
    public async Task BadNumbersFailBeforeTheModelIsLoaded(string[] bad, string expected)
    {
        var (code, _, err) = await CliTests.Run(["generate", "--model", Path.Combine(_dir, "no-such-model"), "--prompt", "x", "--output", Path.Combine(_dir, "o.png"), .. bad]);
        Assert.That(OneErrorLine(code, err), Is.EqualTo("error: " + expected + "."));
        Assert.That(FilesInDir(), Is.Empty, "nothing written");
    }

    [Test]
    public async Task AFailedMoveLeavesNoTemporaryFileAndTheTargetUntouched()
    {
        string target = Path.Combine(_dir, "out.png");
        await File.WriteAllTextAsync(target, "precious");
        using var image = new Image<Rgb24>(8, 8);
        // The target appeared after the check: without --overwrite the move must fail, not replace it.
        var e = Assert.ThrowsAsync<IOException>(() => OutputFiles.SaveAsync(image, target, overwrite: false, CancellationToken.None));
        Assert.That(e!.Message, Does.Contain("--overwrite"));
        Assert.That(await File.ReadAllTextAsync(target), Is.EqualTo("precious"));
        Assert.That(FilesInDir(), Is.EqualTo(new[] { "out.png" }));
    }

    [Test]
    public void AFailedWriteLeavesNoTemporaryFile()
    {
        string target = Path.Combine(_dir, "out.png");
        var image = new Image<Rgb24>(8, 8);
        image.Dispose(); // encoding a disposed image fails after the temporary file was created
        Assert.That(() => OutputFiles.SaveAsync(image, target, overwrite: false, CancellationToken.None), Throws.InstanceOf<ObjectDisposedException>());
        Assert.That(FilesInDir(), Is.Empty);
    }

    [Test]
    public async Task OverwriteReplacesTheFile()
    {
        string target = Path.Combine(_dir, "out.png");
        await File.WriteAllTextAsync(target, "old");
        using var image = new Image<Rgb24>(8, 8);
        await OutputFiles.SaveAsync(image, target, overwrite: true, CancellationToken.None);
        using (var saved = Image.Load<Rgb24>(target)) Assert.That(saved.Width, Is.EqualTo(8));
        Assert.That(FilesInDir(), Is.EqualTo(new[] { "out.png" }));
    }

    [Test]
    public void TemporaryNamesAreHiddenUniqueAndInTheTargetFolder()
    {
        string a = OutputFiles.TemporaryName(_dir, "x.png"), b = OutputFiles.TemporaryName(_dir, "x.png");
        Assert.That(a, Is.Not.EqualTo(b));
        Assert.That(Path.GetDirectoryName(a), Is.EqualTo(_dir));
        Assert.That(Path.GetFileName(a), Does.StartWith(".x.png.").And.EndWith(".tmp"));
        Assert.That(Path.GetFileName(a), Is.Not.EqualTo("x.png.tmp"));
    }
}
