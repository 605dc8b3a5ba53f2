using LatentDiffusion.Tests.Cli;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Hub;

/// <summary><c>ldm pull</c> against <see cref="FakeHub"/>.</summary>
public class PullCommandTests
{
    private string _cache = "";

    [SetUp]
    public void CreateCache() => _cache = Directory.CreateTempSubdirectory("ldm-pull-").FullName;

    [TearDown]
    public void DeleteCache() => Directory.Delete(_cache, recursive: true);

    [Test]
    public async Task PullPrintsTheSnapshotFolderAndOneLinePerFile()
    {
        using var hub = ModelHubTests.Serve();
        var (code, stdout, stderr) = await CliTests.Run("pull", ModelHubTests.RepoId, "--variant", "fp16", "--cache-dir", _cache, "--endpoint", hub.Endpoint);
        Assert.That(code, Is.EqualTo(0), stderr);
        string snapshot = Path.Combine(_cache, "models--test-org--tiny-pipeline", "snapshots", FakeHub.Commit);
        Assert.That(stdout, Is.EqualTo(snapshot + Environment.NewLine));
        Assert.That(File.Exists(Path.Combine(snapshot, "unet", "diffusion_pytorch_model.fp16.safetensors")));
        Assert.That(File.Exists(Path.Combine(snapshot, "unet", "diffusion_pytorch_model.safetensors")), Is.False);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(12));
        Assert.That(lines, Has.Some.Match(@"^\[\d+/12\] unet/diffusion_pytorch_model\.fp16\.safetensors \(150\.0 kB\)$"));
    }

    [Test]
    public async Task PullOfAnUnknownRepositoryIsOneErrorLine()
    {
        using var hub = ModelHubTests.Serve();
        var (code, stdout, stderr) = await CliTests.Run("pull", "test-org/missing", "--cache-dir", _cache, "--endpoint", hub.Endpoint);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr, Does.StartWith("error: Repository 'test-org/missing'").And.Contain("not found"));
        Assert.That(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), Has.Length.EqualTo(1));
    }
}
