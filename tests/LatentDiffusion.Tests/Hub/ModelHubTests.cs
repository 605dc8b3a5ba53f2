using System.Text;
using LatentDiffusion.Hub;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Hub;

/// <summary><see cref="ModelHub.DownloadAsync"/> against <see cref="FakeHub"/> on loopback (no internet).</summary>
public class ModelHubTests
{
    internal const string RepoId = "test-org/tiny-pipeline";

    private string _cache = "";

    [SetUp]
    public void CreateCache() => _cache = Directory.CreateTempSubdirectory("ldm-hub-").FullName;

    [TearDown]
    public void DeleteCache() => Directory.Delete(_cache, recursive: true);

    /// <summary>A diffusers repository as the hub has them: weights in several formats and variants, unused components, top-level extras.</summary>
    internal static (Dictionary<string, byte[]> Files, HashSet<string> Lfs) Repository()
    {
        var random = new Random(14);
        byte[] Bytes(int n) { var b = new byte[n]; random.NextBytes(b); return b; }
        byte[] Text(string s) => Encoding.UTF8.GetBytes(s);
        var files = new Dictionary<string, byte[]>
        {
            ["model_index.json"] = Text("""
                {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
                 "feature_extractor": ["transformers", "CLIPImageProcessor"], "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
                 "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
                 "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
                 "vae": ["diffusers", "AutoencoderKL"], "image_encoder": [null, null], "requires_safety_checker": true}
                """),
            [".gitattributes"] = Text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n"),
            ["README.md"] = Text("# tiny pipeline\n"),
            ["v1-5-pruned-emaonly.safetensors"] = Bytes(5000),
            ["unet/config.json"] = Text("""{"_class_name": "UNet2DConditionModel", "sample_size": 8}"""),
            ["unet/diffusion_pytorch_model.safetensors"] = Bytes(300_000),
            ["unet/diffusion_pytorch_model.fp16.safetensors"] = Bytes(150_000),
            ["unet/diffusion_pytorch_model.non_ema.safetensors"] = Bytes(3000),
            ["unet/diffusion_pytorch_model.bin"] = Bytes(3000),
            ["vae/config.json"] = Text("""{"_class_name": "AutoencoderKL"}"""),
            ["vae/diffusion_pytorch_model.safetensors"] = Bytes(2000),
            ["vae/diffusion_flax_model.msgpack"] = Bytes(2000),
            ["text_encoder/config.json"] = Text("""{"architectures": ["CLIPTextModel"]}"""),
            ["text_encoder/model.fp16.safetensors"] = Bytes(1000),
            ["text_encoder/pytorch_model.bin"] = Bytes(1000),
            ["tokenizer/vocab.json"] = Text("""{"a</w>": 0}"""),
            ["tokenizer/merges.txt"] = Text("#version: 0.2\n"),
            ["tokenizer/tokenizer_config.json"] = Text("{}"),
            ["tokenizer/special_tokens_map.json"] = Text("""{"bos_token": "<|startoftext|>"}"""),
            ["scheduler/scheduler_config.json"] = Text("""{"_class_name": "PNDMScheduler"}"""),
            ["safety_checker/config.json"] = Text("{}"),
            ["safety_checker/model.safetensors"] = Bytes(1000),
            ["feature_extractor/preprocessor_config.json"] = Text("{}"),
        };
        var lfs = files.Keys.Where(k => k.EndsWith(".safetensors", StringComparison.Ordinal) || k.EndsWith(".bin", StringComparison.Ordinal)
            || k.EndsWith(".msgpack", StringComparison.Ordinal)).ToHashSet();
        return (files, lfs);
    }

    internal static FakeHub Serve()
    {
        var (files, lfs) = Repository();
        return new FakeHub(RepoId, files, lfs);
    }

    private static readonly string[] Common =
    [
        "model_index.json", "unet/config.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json", "scheduler/scheduler_config.json",
    ];

    // No environment at all, except a Hugging Face home inside the test's folder (so no real token file is read).
    private Func<string, string?> Environment(params (string Name, string Value)[] values)
    {
        var map = values.ToDictionary(v => v.Name, v => v.Value);
        map.TryAdd("HF_HOME", Path.Combine(_cache, "hf-home"));
        return name => map.GetValueOrDefault(name);
    }

    private Task<string> Download(FakeHub hub, string? variant = null, string? token = null, Func<string, string?>? environment = null,
        IProgress<ModelHubProgress>? progress = null, string? repoId = null)
        => ModelHub.DownloadCoreAsync(repoId ?? RepoId, new ModelHubOptions { Endpoint = hub.Endpoint, CacheDirectory = _cache, Variant = variant, Token = token },
            progress, environment ?? Environment(), CancellationToken.None);

    private static List<string> SnapshotFiles(string snapshot)
        => Directory.EnumerateFiles(snapshot, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(snapshot, f).Replace(Path.DirectorySeparatorChar, '/')).Order(StringComparer.Ordinal).ToList();

    [Test]
    public async Task FetchesOnlyWhatAPipelineNeeds()
    {
        using var hub = Serve();
        string snapshot = await Download(hub);
        string[] expected = [.. Common, "unet/diffusion_pytorch_model.safetensors"];
        Assert.That(SnapshotFiles(snapshot), Is.EqualTo(expected.Order(StringComparer.Ordinal).ToList()));
        foreach (var file in expected)
            Assert.That(File.ReadAllBytes(Path.Combine(snapshot, file)), Is.EqualTo(hub.Files[file]), file);
        // Nothing else was even requested: no .bin, no other variant, no safety checker, no top-level checkpoint.
        var fetched = hub.Downloads().Select(r => r.Path).Distinct().ToList();
        Assert.That(fetched.Where(p => p.EndsWith(".bin", StringComparison.Ordinal) || p.Contains("safety_checker") || p.Contains("feature_extractor")
            || p.Contains("fp16.safetensors") && p.Contains("unet") || p.Contains("non_ema") || p.Contains("pruned") || p.EndsWith("README.md", StringComparison.Ordinal)), Is.Empty);
        Assert.That(hub.Downloads().Select(r => r.Path).Distinct().Count(), Is.EqualTo(expected.Length));
    }

    [Test]
    public async Task Fp16VariantIsPreferredAndFallsBackToPlainWeights()
    {
        using var hub = Serve();
        string snapshot = await Download(hub, variant: "fp16");
        // unet has an fp16 file; vae has none (plain weights); text_encoder has only fp16.
        string[] expected = [.. Common, "unet/diffusion_pytorch_model.fp16.safetensors"];
        Assert.That(SnapshotFiles(snapshot), Is.EqualTo(expected.Order(StringComparer.Ordinal).ToList()));
        Assert.That(hub.Downloads("unet/diffusion_pytorch_model.safetensors"), Is.Empty);
    }

    [Test]
    public async Task CacheHasTheSharedLayout()
    {
        using var hub = Serve();
        string snapshot = await Download(hub);
        string root = Path.Combine(_cache, "models--test-org--tiny-pipeline");
        Assert.That(snapshot, Is.EqualTo(Path.Combine(root, "snapshots", FakeHub.Commit)));
        Assert.That(File.ReadAllText(Path.Combine(root, "refs", "main")), Is.EqualTo(FakeHub.Commit));
        // Blobs are named by sha256 (LFS files) or by the git blob id (the others).
        var unet = hub.Files["unet/diffusion_pytorch_model.safetensors"];
        var config = hub.Files["unet/config.json"];
        Assert.That(File.ReadAllBytes(Path.Combine(root, "blobs", FakeHub.Sha256(unet))), Is.EqualTo(unet));
        Assert.That(File.ReadAllBytes(Path.Combine(root, "blobs", FakeHub.GitBlobId(config))), Is.EqualTo(config));
        Assert.That(Directory.GetFiles(Path.Combine(root, "blobs")), Has.Length.EqualTo(Common.Length + 1));
        if (!OperatingSystem.IsWindows())
        {
            var link = new FileInfo(Path.Combine(snapshot, "unet", "diffusion_pytorch_model.safetensors"));
            Assert.That(link.LinkTarget, Is.EqualTo(Path.Combine("..", "..", "..", "blobs", FakeHub.Sha256(unet))));
        }
    }

    [Test]
    public async Task SecondCallDownloadsNothing()
    {
        using var hub = Serve();
        string first = await Download(hub);
        int downloads = hub.Downloads().Count;
        Assert.That(downloads, Is.GreaterThan(0));
        string second = await Download(hub, variant: null);
        Assert.That(second, Is.EqualTo(first));
        Assert.That(hub.Downloads(), Has.Count.EqualTo(downloads), "the second call downloaded files again");
    }

    [Test]
    public async Task ResumesAPartialDownloadWithARangeRequest()
    {
        using var hub = Serve();
        const string file = "unet/diffusion_pytorch_model.safetensors";
        var data = hub.Files[file];
        string blobs = Path.Combine(_cache, "models--test-org--tiny-pipeline", "blobs");
        Directory.CreateDirectory(blobs);
        const int have = 123_456;
        File.WriteAllBytes(Path.Combine(blobs, FakeHub.Sha256(data) + ".incomplete"), data[..have]);

        string snapshot = await Download(hub);

        Assert.That(File.ReadAllBytes(Path.Combine(snapshot, file)), Is.EqualTo(data));
        var requests = hub.Downloads(file);
        Assert.That(requests.Select(r => r.Range).Distinct(), Is.EqualTo(new[] { $"bytes={have}-" }), "every request for the file asks for the rest only");
        Assert.That(File.Exists(Path.Combine(blobs, FakeHub.Sha256(data) + ".incomplete")), Is.False);
    }

    [Test]
    public async Task AnInterruptedDownloadIsKeptAndResumedByTheNextCall()
    {
        using var hub = Serve();
        const string file = "unet/diffusion_pytorch_model.safetensors";
        var data = hub.Files[file];
        hub.Interrupt.Add(file);
        var e = Assert.ThrowsAsync<IOException>(() => Download(hub))!;
        Assert.That(e.Message, Does.Contain(file).And.Contain("interrupted").And.Contain("resume"));
        string partial = Path.Combine(_cache, "models--test-org--tiny-pipeline", "blobs", FakeHub.Sha256(data) + ".incomplete");
        long kept = new FileInfo(partial).Length;
        Assert.That(kept, Is.GreaterThan(0).And.LessThan(data.Length));

        string snapshot = await Download(hub);

        Assert.That(File.ReadAllBytes(Path.Combine(snapshot, file)), Is.EqualTo(data));
        Assert.That(hub.Downloads(file).Where(r => r.Range is not null).Select(r => r.Range).Distinct(), Is.EqualTo(new[] { $"bytes={kept}-" }));
    }

    [Test]
    public async Task FilesWithTheSameContentShareOneBlob()
    {
        var (files, lfs) = Repository();
        files["tokenizer/special_tokens_map.json"] = files["tokenizer/tokenizer_config.json"];
        using var hub = new FakeHub(RepoId, files, lfs);
        string snapshot = await Download(hub);
        Assert.That(File.ReadAllBytes(Path.Combine(snapshot, "tokenizer", "special_tokens_map.json")), Is.EqualTo(files["tokenizer/tokenizer_config.json"]));
        Assert.That(Directory.GetFiles(Path.Combine(_cache, "models--test-org--tiny-pipeline", "blobs")), Has.Length.EqualTo(Common.Length));
    }

    [Test]
    public async Task ACommitHashRevisionWritesNoRef()
    {
        using var hub = Serve();
        string snapshot = await ModelHub.DownloadCoreAsync(RepoId, new ModelHubOptions { Endpoint = hub.Endpoint, CacheDirectory = _cache, Revision = FakeHub.Commit },
            null, Environment(), CancellationToken.None);
        Assert.That(snapshot, Does.EndWith(FakeHub.Commit));
        Assert.That(Directory.Exists(Path.Combine(_cache, "models--test-org--tiny-pipeline", "refs")), Is.False);
    }

    [Test]
    public async Task ATreePageElsewhereIsNotFollowed()
    {
        using var hub = Serve();
        hub.PageSize = 4;
        hub.NextPageBase = "http://127.0.0.2:9";
        var e = Assert.ThrowsAsync<InvalidDataException>(() => Download(hub, token: "hf_secret"))!;
        Assert.That(e.Message, Does.Contain("another address"));
        await Task.CompletedTask;
    }

    [Test]
    public async Task AServerThatIgnoresRangeRestartsTheFile()
    {
        using var hub = Serve();
        hub.IgnoreRange = true;
        const string file = "unet/diffusion_pytorch_model.safetensors";
        var data = hub.Files[file];
        string blobs = Path.Combine(_cache, "models--test-org--tiny-pipeline", "blobs");
        Directory.CreateDirectory(blobs);
        File.WriteAllBytes(Path.Combine(blobs, FakeHub.Sha256(data) + ".incomplete"), data[..1000]);
        string snapshot = await Download(hub);
        Assert.That(File.ReadAllBytes(Path.Combine(snapshot, file)), Is.EqualTo(data), "the whole file was appended to the partial one");
    }

    [Test]
    public async Task HashMismatchIsAnErrorAndLeavesNoFile()
    {
        using var hub = Serve();
        const string file = "unet/diffusion_pytorch_model.safetensors";
        hub.Corrupt.Add(file);
        string sha = FakeHub.Sha256(hub.Files[file]);
        var e = Assert.ThrowsAsync<InvalidDataException>(() => Download(hub))!;
        Assert.That(e.Message, Does.Contain(file).And.Contain("sha256").And.Contain(sha).And.Contain(RepoId));
        Assert.That(Directory.GetFiles(Path.Combine(_cache, "models--test-org--tiny-pipeline", "blobs"), sha + "*"), Is.Empty);
        Assert.That(Directory.Exists(Path.Combine(_cache, "models--test-org--tiny-pipeline", "refs")), Is.False, "a failed download records no ref");
    }

    [Test]
    public async Task SmallFilesAreCheckedAgainstTheirGitBlobId()
    {
        using var hub = Serve();
        hub.Corrupt.Add("scheduler/scheduler_config.json");
        var e = Assert.ThrowsAsync<InvalidDataException>(() => Download(hub))!;
        Assert.That(e.Message, Does.Contain("scheduler/scheduler_config.json").And.Contain(FakeHub.GitBlobId(hub.Files["scheduler/scheduler_config.json"])));
        await Task.CompletedTask;
    }

    [Test]
    public async Task TokenFromOptionsIsSentAsBearer()
    {
        using var hub = Serve();
        await Download(hub, token: "hf_option", environment: Environment(("HF_TOKEN", "hf_env")));
        var api = hub.Requests.Where(r => r.Path.StartsWith("/api/", StringComparison.Ordinal)).ToList();
        Assert.That(api, Is.Not.Empty);
        Assert.That(api.Select(r => r.Authorization).Distinct(), Is.EqualTo(new[] { "Bearer hf_option" }));
        // The token goes to the hub's resolve URLs, and is dropped when a redirect leads to the file CDN.
        Assert.That(hub.Downloads().Where(r => r.Query == "").Select(r => r.Authorization).Distinct(), Is.EqualTo(new[] { "Bearer hf_option" }));
        var cdn = hub.Downloads().Where(r => r.Query == "?cdn=1").ToList();
        Assert.That(cdn, Is.Not.Empty);
        Assert.That(cdn.Select(r => r.Authorization), Is.All.Null);
    }

    [TestCase("HF_TOKEN")]
    [TestCase("HUGGING_FACE_HUB_TOKEN")]
    public async Task TokenFromTheEnvironmentIsSentAsBearer(string variable)
    {
        using var hub = Serve();
        await Download(hub, environment: Environment((variable, "hf_env")));
        Assert.That(hub.Requests.Where(r => r.Path.StartsWith("/api/", StringComparison.Ordinal)).Select(r => r.Authorization).Distinct(),
            Is.EqualTo(new[] { "Bearer hf_env" }));
    }

    [Test]
    public async Task TokenFromTheLoginFileIsSentAsBearer()
    {
        using var hub = Serve();
        string home = Path.Combine(_cache, "hf-home");
        Directory.CreateDirectory(home);
        File.WriteAllText(Path.Combine(home, "token"), "hf_file\n");
        await Download(hub);
        Assert.That(hub.Requests.Where(r => r.Path.StartsWith("/api/", StringComparison.Ordinal)).Select(r => r.Authorization).Distinct(),
            Is.EqualTo(new[] { "Bearer hf_file" }));
    }

    [Test]
    public async Task NoTokenNoAuthorizationHeader()
    {
        using var hub = Serve();
        await Download(hub);
        Assert.That(hub.Requests.Select(r => r.Authorization).Where(a => a is not null), Is.Empty);
    }

    [Test]
    public async Task CacheFolderAndEndpointComeFromTheEnvironment()
    {
        using var hub = Serve();
        string cache = Path.Combine(_cache, "from-env");
        string snapshot = await ModelHub.DownloadCoreAsync(RepoId, new ModelHubOptions(), null,
            Environment(("HF_HUB_CACHE", cache), ("HF_ENDPOINT", hub.Endpoint + "/")), CancellationToken.None);
        Assert.That(snapshot, Is.EqualTo(Path.Combine(cache, "models--test-org--tiny-pipeline", "snapshots", FakeHub.Commit)));
        string viaHome = await ModelHub.DownloadCoreAsync(RepoId, new ModelHubOptions { Endpoint = hub.Endpoint }, null,
            Environment(("HF_HOME", Path.Combine(_cache, "home"))), CancellationToken.None);
        Assert.That(viaHome, Does.StartWith(Path.Combine(_cache, "home", "hub", "models--test-org--tiny-pipeline")));
    }

    [Test]
    public async Task UnknownRepositoryIsAClearError()
    {
        using var hub = Serve();
        var e = Assert.ThrowsAsync<IOException>(() => Download(hub, repoId: "test-org/no-such-model"))!;
        Assert.That(e.Message, Does.Contain("'test-org/no-such-model'").And.Contain("not found").And.Contain("HF_TOKEN"));
        await Task.CompletedTask;
    }

    [Test]
    public async Task UnknownRevisionIsAClearError()
    {
        using var hub = Serve();
        var e = Assert.ThrowsAsync<IOException>(() => ModelHub.DownloadCoreAsync(RepoId,
            new ModelHubOptions { Endpoint = hub.Endpoint, CacheDirectory = _cache, Revision = "v9" }, null, Environment(), CancellationToken.None))!;
        Assert.That(e.Message, Does.Contain("Revision 'v9'").And.Contain(RepoId));
        await Task.CompletedTask;
    }

    [TestCase("")]
    [TestCase("../etc")]
    [TestCase("org/name/extra")]
    [TestCase("org--x/name")]
    [TestCase("org/name with space")]
    public void MalformedRepositoryIdsAreRefused(string repoId)
        => Assert.ThrowsAsync<ArgumentException>(() => ModelHub.DownloadAsync(repoId, new ModelHubOptions { Endpoint = "http://127.0.0.1:9", CacheDirectory = _cache }));

    [Test]
    public async Task FollowsTheTreeApiPages()
    {
        using var hub = Serve();
        hub.PageSize = 4;
        string snapshot = await Download(hub);
        Assert.That(SnapshotFiles(snapshot), Has.Count.EqualTo(Common.Length + 1));
        Assert.That(hub.Requests.Count(r => r.Path.Contains("/tree/")), Is.GreaterThan(5));
    }

    [Test]
    public async Task ComponentWithOnlyPickledWeightsIsRefused()
    {
        var (files, lfs) = Repository();
        files.Remove("vae/diffusion_pytorch_model.safetensors");
        files["vae/diffusion_pytorch_model.bin"] = [1, 2, 3];
        lfs.Add("vae/diffusion_pytorch_model.bin");
        using var hub = new FakeHub(RepoId, files, lfs);
        var e = Assert.ThrowsAsync<NotSupportedException>(() => Download(hub))!;
        Assert.That(e.Message, Does.Contain("'vae'").And.Contain(".safetensors"));
        await Task.CompletedTask;
    }

    [Test]
    public async Task ProgressReachesTheTotal()
    {
        using var hub = Serve();
        var reports = new List<ModelHubProgress>();
        await Download(hub, progress: new SynchronousProgress(reports.Add));
        long total = Common.Sum(f => (long)hub.Files[f].Length) + hub.Files["unet/diffusion_pytorch_model.safetensors"].Length;
        Assert.That(reports, Is.Not.Empty);
        Assert.That(reports[^1].BytesDone, Is.EqualTo(total));
        Assert.That(reports.All(r => r.TotalBytes == total && r.FileCount == Common.Length + 1 && r.FileBytesDone <= r.FileSize));
        Assert.That(reports.Select(r => r.BytesDone), Is.Ordered);
    }

    private sealed class SynchronousProgress(Action<ModelHubProgress> report) : IProgress<ModelHubProgress>
    {
        public void Report(ModelHubProgress value) => report(value);
    }
}
