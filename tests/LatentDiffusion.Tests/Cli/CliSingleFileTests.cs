using NUnit.Framework;

namespace LatentDiffusion.Tests.Cli;

/// <summary>A single-file checkpoint in the tool with <c>--tokenizer</c> instead of a whole <c>--config</c> folder.</summary>
public class CliSingleFileTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-cli-single-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task TokenizeAndGenerateTakeATokenizerFolderForASingleFile()
    {
        string single = Fixtures.PathOf("tiny-sd15.safetensors"), folder = Fixtures.PathOf("tiny-sd15");
        string tokenizer = Path.Combine(folder, "tokenizer");
        var (code, fromFile, err) = await CliTests.Run("tokenize", "--model", single, "--tokenizer", tokenizer, "a photograph of an astronaut");
        Assert.That(code, Is.EqualTo(0), err);
        var (_, fromFolder, _) = await CliTests.Run("tokenize", "--model", folder, "a photograph of an astronaut");
        Assert.That(fromFile, Is.EqualTo(fromFolder));

        string output = Path.Combine(_dir, "single.png");
        (code, _, err) = await CliTests.Run("generate", "--model", single, "--tokenizer", tokenizer, "--prompt", "a cat", "--steps", "1", "--seed", "1", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(new FileInfo(output).Length, Is.GreaterThan(0));
    }
}
