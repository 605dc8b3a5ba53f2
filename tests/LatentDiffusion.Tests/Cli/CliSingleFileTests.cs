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

    [Test]
    public async Task TokenizeWithAConfigFolderWithoutTokenizerFallsBackToTheCacheAsGenerateDoes()
    {
        string single = Fixtures.PathOf("tiny-sd15.safetensors"), folder = Fixtures.PathOf("tiny-sd15");
        // A config folder without tokenizer/, and the tokenizer in a hub cache, offline (no download is tried).
        string config = Directory.CreateDirectory(Path.Combine(_dir, "config")).FullName;
        const string commit = "0123456789abcdef0123456789abcdef01234567";
        string root = Path.Combine(_dir, "hub", "models--stable-diffusion-v1-5--stable-diffusion-v1-5");
        string snapshot = Directory.CreateDirectory(Path.Combine(root, "snapshots", commit, "tokenizer")).FullName;
        foreach (var f in new[] { "vocab.json", "merges.txt" }) File.Copy(Path.Combine(folder, "tokenizer", f), Path.Combine(snapshot, f));
        Directory.CreateDirectory(Path.Combine(root, "refs"));
        File.WriteAllText(Path.Combine(root, "refs", "main"), commit);

        var saved = (Cache: Environment.GetEnvironmentVariable("HF_HUB_CACHE"), Offline: Environment.GetEnvironmentVariable("HF_HUB_OFFLINE"));
        try
        {
            Environment.SetEnvironmentVariable("HF_HUB_CACHE", Path.Combine(_dir, "hub"));
            Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", "1");
            var (code, fromFile, err) = await CliTests.Run("tokenize", "--model", single, "--config", config, "a photograph of an astronaut");
            Assert.That(code, Is.EqualTo(0), err);
            var (_, fromFolder, _) = await CliTests.Run("tokenize", "--model", folder, "a photograph of an astronaut");
            Assert.That(fromFile, Is.EqualTo(fromFolder));
        }
        finally
        {
            Environment.SetEnvironmentVariable("HF_HUB_CACHE", saved.Cache);
            Environment.SetEnvironmentVariable("HF_HUB_OFFLINE", saved.Offline);
        }
    }

    [TestCase("model.ckpt")]
    [TestCase("model.pth")]
    public async Task APickledCheckpointIsRefusedByNameInTokenizeAndGenerate(string name)
    {
        // A file that would otherwise reach the safetensors parser and fail with a header error.
        string path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, [0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e, 0, 0, 0, 0]);
        var (code, _, err) = await CliTests.Run("tokenize", "--model", path, "a cat");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err, Does.Contain("pickled PyTorch checkpoint").And.Contain(name));
        (code, _, err) = await CliTests.Run("generate", "--model", path, "--prompt", "a cat", "--steps", "1", "--output", Path.Combine(_dir, "out.png"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err, Does.Contain("pickled PyTorch checkpoint"));
        var e = Assert.ThrowsAsync<NotSupportedException>(() => LatentDiffusion.Pipelines.StableDiffusionPipeline.LoadAsync(path));
        Assert.That(e!.Message, Does.Contain("pickled"));
    }
}
