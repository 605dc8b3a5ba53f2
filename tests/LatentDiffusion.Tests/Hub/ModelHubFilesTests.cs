using LatentDiffusion.Hub;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Hub;

/// <summary><see cref="ModelHub.DownloadFilesAsync"/> (named files of any repository) and offline mode, against <see cref="FakeHub"/>.</summary>
public class ModelHubFilesTests
{
    private string _cache = "";

    [SetUp]
    public void CreateCache() => _cache = Directory.CreateTempSubdirectory("ldm-hub-files-").FullName;

    [TearDown]
    public void DeleteCache() => Directory.Delete(_cache, recursive: true);

    private Func<string, string?> Environment(params (string Name, string Value)[] values)
    {
        var map = values.ToDictionary(v => v.Name, v => v.Value);
        map.TryAdd("HF_HOME", Path.Combine(_cache, "hf-home"));
        return name => map.GetValueOrDefault(name);
    }

    private Task<string> Files(FakeHub hub, string[] paths, bool? offline = null, Func<string, string?>? environment = null)
        => ModelHub.DownloadFilesCoreAsync(ModelHubTests.RepoId, paths, new ModelHubOptions { Endpoint = hub.Endpoint, CacheDirectory = _cache, Offline = offline },
            null, environment ?? Environment(), CancellationToken.None);

    [Test]
    public async Task FetchesOnlyTheNamedFilesVerifiedIntoTheSharedCache()
    {
        using var hub = ModelHubTests.Serve();
        string snapshot = await Files(hub, ["tokenizer/vocab.json", "tokenizer/merges.txt", "unet/diffusion_pytorch_model.safetensors"]);
        Assert.That(snapshot, Is.EqualTo(Path.Combine(_cache, "models--test-org--tiny-pipeline", "snapshots", FakeHub.Commit)));
        foreach (var file in new[] { "tokenizer/vocab.json", "tokenizer/merges.txt", "unet/diffusion_pytorch_model.safetensors" })
            Assert.That(File.ReadAllBytes(Path.Combine(snapshot, file)), Is.EqualTo(hub.Files[file]), file);
        Assert.That(hub.Downloads().Select(r => r.Path.Split('?')[0]).Distinct().Count(), Is.EqualTo(3));
        Assert.That(File.ReadAllText(Path.Combine(_cache, "models--test-org--tiny-pipeline", "refs", "main")), Is.EqualTo(FakeHub.Commit));
    }

    [Test]
    public async Task ACorruptFileIsRefused()
    {
        using var hub = ModelHubTests.Serve();
        hub.Corrupt.Add("tokenizer/vocab.json");
        Assert.ThrowsAsync<InvalidDataException>(() => Files(hub, ["tokenizer/vocab.json"]));
        hub.Corrupt.Clear();
        Assert.That(File.ReadAllBytes(Path.Combine(await Files(hub, ["tokenizer/vocab.json"]), "tokenizer", "vocab.json")), Is.EqualTo(hub.Files["tokenizer/vocab.json"]));
    }

    [Test]
    public void AFileTheRepositoryLacksIsNamed()
    {
        using var hub = ModelHubTests.Serve();
        var e = Assert.ThrowsAsync<FileNotFoundException>(() => Files(hub, ["tokenizer/vocab.json", "tokenizer/nope.json"]))!;
        Assert.That(e.Message, Does.Contain("tokenizer/nope.json").And.Contain(ModelHubTests.RepoId));
    }

    [TestCase("../outside.json")]
    [TestCase("/etc/passwd")]
    [TestCase("tokenizer/../../x")]
    [TestCase("tokenizer\\vocab.json")]
    [TestCase("")]
    public void PathsOutsideTheRepositoryAreRefused(string path)
    {
        using var hub = ModelHubTests.Serve();
        Assert.ThrowsAsync<ArgumentException>(() => Files(hub, [path]));
        Assert.That(hub.Requests, Is.Empty);
    }

    [Test]
    public async Task OfflineReturnsTheCachedSnapshotWithoutReachingTheHub()
    {
        using var hub = ModelHubTests.Serve();
        string snapshot = await Files(hub, ["tokenizer/vocab.json"]);
        int requests = hub.Requests.Count;
        Assert.That(await Files(hub, ["tokenizer/vocab.json"], offline: true), Is.EqualTo(snapshot));
        Assert.That(await Files(hub, ["tokenizer/vocab.json"], environment: Environment(("HF_HUB_OFFLINE", "1"))), Is.EqualTo(snapshot));
        var e = Assert.ThrowsAsync<IOException>(() => Files(hub, ["tokenizer/merges.txt"], offline: true))!;
        Assert.That(e.Message, Does.Contain("tokenizer/merges.txt").And.Contain("offline"));
        Assert.That(hub.Requests.Count, Is.EqualTo(requests));
    }

    [Test]
    public async Task OfflinePullReturnsTheCachedPipelineOrSaysItIsMissing()
    {
        using var hub = ModelHubTests.Serve();
        var options = new ModelHubOptions { Endpoint = hub.Endpoint, CacheDirectory = _cache, Offline = true };
        var e = Assert.ThrowsAsync<IOException>(() => ModelHub.DownloadCoreAsync(ModelHubTests.RepoId, options, null, Environment(), CancellationToken.None))!;
        Assert.That(e.Message, Does.Contain(ModelHubTests.RepoId).And.Contain("offline"));
        Assert.That(hub.Requests, Is.Empty);
        string snapshot = await ModelHub.DownloadCoreAsync(ModelHubTests.RepoId, options with { Offline = false }, null, Environment(), CancellationToken.None);
        int requests = hub.Requests.Count;
        Assert.That(await ModelHub.DownloadCoreAsync(ModelHubTests.RepoId, options, null, Environment(), CancellationToken.None), Is.EqualTo(snapshot));
        Assert.That(hub.Requests.Count, Is.EqualTo(requests));
    }
}
