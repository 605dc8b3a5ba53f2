using NUnit.Framework;

namespace LatentDiffusion.Tests.Cli;

/// <summary>Standard output holds only results (the written paths); warnings and progress go to standard error.</summary>
public class CliDiagnosticsTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-diag-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task ALongPromptIsAShortWarningOnStandardError()
    {
        string output = Path.Combine(_dir, "out.png");
        string prompt = "a red square " + string.Join(' ', Enumerable.Range(0, 10_000).Select(i => $"word{i}"));
        Assert.That(prompt.Length, Is.GreaterThan(80_000));
        var (code, stdout, err) = await CliTests.Run("generate", "--model", Fixtures.PathOf("tiny-sd15"), "--prompt", prompt,
            "--steps", "1", "--width", "64", "--height", "64", "--seed", "1", "--output", output, "--truncate-prompt");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(stdout, Is.EqualTo(output + Environment.NewLine), "standard output: the written path only");
        var warnings = err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("warning: ", StringComparison.Ordinal)).ToArray();
        Assert.That(warnings, Has.Length.EqualTo(1), err);
        Assert.That(warnings[0], Does.Contain("tokens were dropped").And.Contain("word"));
        Assert.That(warnings[0].Length, Is.LessThan(200), "at most about 80 characters of the dropped text are quoted");
        Assert.That(err.Length, Is.LessThan(1000), err.Length > 1000 ? err[..1000] : err);
    }

    [Test]
    public void AbbreviationKeepsShortTextAndCutsLongTextAtWholeCharacters()
    {
        Assert.That(LatentDiffusion.Pipelines.PromptChunker.Abbreviate("a cat"), Is.EqualTo("a cat"));
        string longText = new string('x', 79) + "\U0001F431" + new string('y', 100);
        string cut = LatentDiffusion.Pipelines.PromptChunker.Abbreviate(longText);
        Assert.That(cut, Is.EqualTo(new string('x', 79) + "..."), "a surrogate pair is not split");
        Assert.That(LatentDiffusion.Pipelines.PromptChunker.Abbreviate(new string('z', 200)), Has.Length.EqualTo(83));
    }
}
