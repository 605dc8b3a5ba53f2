using LatentDiffusion.Hub;
using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Hub;
using LatentDiffusion.Tests.Pipelines;
using LatentDiffusion.Text;
using Microsoft.Extensions.Logging.Abstractions;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Loading;

/// <summary>
/// A single-file checkpoint's tokenizer without <c>--config</c>: from the hub cache, else fetched once from
/// <see cref="FakeHub"/> on loopback (no internet), else one error that says what is missing and the ways out.
/// </summary>
public class SingleFileTokenizerTests
{
    private const string Sd15Repo = "stable-diffusion-v1-5/stable-diffusion-v1-5";
    private const string OpenAiRepo = "openai/clip-vit-large-patch14";
    private const string Checkpoint = "/models/some-sd15-merge.safetensors";

    private string _dir = "";
    private string _cache = "";
    private string _vocabulary = "";

    [SetUp]
    public void CreateFolders()
    {
        _dir = Directory.CreateTempSubdirectory("ldm-single-tokenizer-").FullName;
        _cache = Path.Combine(_dir, "hub");
        // A byte-level BPE vocabulary the test writes (the built-in model's): any text encodes, and "!" is a token.
        _vocabulary = GeneratedModel.WriteTokenizer(Path.Combine(_dir, "vocabulary"));
    }

    [TearDown]
    public void DeleteFolders() => Directory.Delete(_dir, recursive: true);

    // No environment but a Hugging Face home inside the test's folder, so no real token, cache or offline switch is read.
    private Func<string, string?> Environment(params (string Name, string Value)[] values)
    {
        var map = values.ToDictionary(v => v.Name, v => v.Value);
        map.TryAdd("HF_HOME", Path.Combine(_dir, "hf-home"));
        return name => map.GetValueOrDefault(name);
    }

    private Task<ClipTokenizer> Load(string endpoint, TextEncoderLayout layout = TextEncoderLayout.Clip, bool? offline = null,
        Func<string, string?>? environment = null, string? tokenizerDirectory = null)
        => SingleFileTokenizer.LoadCoreAsync(Checkpoint, layout, tokenizerDirectory,
            new ModelHubOptions { Endpoint = endpoint, CacheDirectory = _cache, Offline = offline }, NullLogger.Instance, environment ?? Environment(), CancellationToken.None);

    private Dictionary<string, byte[]> VocabularyFiles(string folder)
        => SingleFileTokenizer.Files.ToDictionary(f => folder.Length == 0 ? f : folder + "/" + f, f => File.ReadAllBytes(Path.Combine(_vocabulary, f)));

    /// <summary>The tokenizer files of a repository as huggingface_hub leaves them in the cache.</summary>
    private void PutInCache(string repoId, string folder)
    {
        const string commit = "0123456789abcdef0123456789abcdef01234567";
        string root = Path.Combine(_cache, "models--" + repoId.Replace("/", "--"));
        string target = Path.Combine(root, "snapshots", commit, folder);
        Directory.CreateDirectory(target);
        foreach (var f in SingleFileTokenizer.Files) File.Copy(Path.Combine(_vocabulary, f), Path.Combine(target, f));
        Directory.CreateDirectory(Path.Combine(root, "refs"));
        File.WriteAllText(Path.Combine(root, "refs", "main"), commit);
    }

    private ClipTokenizer Expected(string pad) => ClipTokenizer.FromVocabAndMerges(
        Path.Combine(_vocabulary, "vocab.json"), Path.Combine(_vocabulary, "merges.txt"), pad, ClipTokenizer.DefaultMaxLength);

    private const string Prompt = "a red circle on a blue background!";

    [Test]
    public async Task ATokenizerInTheCacheIsUsedWithoutReachingTheHub()
    {
        PutInCache(OpenAiRepo, "");
        using var hub = new FakeHub(OpenAiRepo, VocabularyFiles(""), new HashSet<string>());
        var tokenizer = await Load(hub.Endpoint);
        Assert.That(tokenizer.Encode(Prompt), Is.EqualTo(Expected("<|endoftext|>").Encode(Prompt)));
        Assert.That(hub.Requests, Is.Empty);
    }

    [Test]
    public async Task TheCheckpointsFamilyDecidesThePadToken()
    {
        // The same vocabulary serves both families; SD 2.x (OpenCLIP) pads with "!", SD 1.x with the end token.
        PutInCache("stabilityai/stable-diffusion-2-1", "tokenizer");
        var sd1 = await Load("http://127.0.0.1:9");
        var sd2 = await Load("http://127.0.0.1:9", TextEncoderLayout.OpenClip);
        Assert.That(sd1.PadToken, Is.EqualTo("<|endoftext|>"));
        Assert.That(sd1.PadTokenId, Is.EqualTo(sd1.EosTokenId));
        Assert.That(sd2.PadToken, Is.EqualTo("!"));
        using var vocab = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(_vocabulary, "vocab.json")));
        Assert.That(sd2.PadTokenId, Is.EqualTo(vocab.RootElement.GetProperty("!").GetInt32()).And.Not.EqualTo(sd2.EosTokenId));
        Assert.That(sd2.EncodePadded("a circle", ClipTokenizer.DefaultMaxLength).Ids[^1], Is.EqualTo(sd2.PadTokenId));
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task AGivenFolderGetsThePadTokenTheCallerNamesWhateverFilesItHolds(bool onlyTokenizerJson)
    {
        // SDXL's second tokenizer pads with "!", its first with the end token, and --tokenizer gives one folder for both:
        // vocab.json + merges.txt, or only tokenizer.json (whose own special tokens would say the end token).
        string folder = _vocabulary;
        if (onlyTokenizerJson)
        {
            folder = Path.Combine(_dir, "json-only");
            Directory.CreateDirectory(folder);
            using var vocab = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(_vocabulary, "vocab.json")));
            var merges = File.ReadAllLines(Path.Combine(_vocabulary, "merges.txt")).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal));
            var json = new System.Text.Json.Nodes.JsonObject
            {
                ["model"] = new System.Text.Json.Nodes.JsonObject
                {
                    ["type"] = "BPE",
                    ["end_of_word_suffix"] = "</w>",
                    ["vocab"] = System.Text.Json.Nodes.JsonNode.Parse(vocab.RootElement.GetRawText()),
                    ["merges"] = new System.Text.Json.Nodes.JsonArray([.. merges.Select(m => (System.Text.Json.Nodes.JsonNode?)m)]),
                },
            };
            File.WriteAllText(Path.Combine(folder, "tokenizer.json"), json.ToJsonString());
        }
        var second = await SingleFileTokenizer.LoadWithPadAsync(Checkpoint, TextEncoderLayout.Clip, "!", "SDXL", folder, null, null, CancellationToken.None);
        var first = await SingleFileTokenizer.LoadWithPadAsync(Checkpoint, TextEncoderLayout.Clip, "<|endoftext|>", "SDXL", folder, null, null, CancellationToken.None);
        Assert.That(second.PadToken, Is.EqualTo("!"));
        Assert.That(second.PadTokenId, Is.Not.EqualTo(second.EosTokenId));
        Assert.That(second.EncodePadded("a circle", ClipTokenizer.DefaultMaxLength).Ids, Is.EqualTo(Expected("!").EncodePadded("a circle", ClipTokenizer.DefaultMaxLength).Ids));
        Assert.That(first.PadTokenId, Is.EqualTo(first.EosTokenId));
        Assert.That(first.Encode(Prompt), Is.EqualTo(Expected("<|endoftext|>").Encode(Prompt)));
    }

    [Test]
    public async Task AMissingTokenizerIsFetchedOnceThenFoundInTheCache()
    {
        // The SD 1.x repository is not on this hub (as if gone), so the download falls back to OpenAI's CLIP repository,
        // of which only the two tokenizer files are fetched, not its weights nor its tokenizer.json.
        var files = VocabularyFiles("");
        files["tokenizer.json"] = [1, 2, 3];
        files["model.safetensors"] = new byte[40_000];
        files["pytorch_model.bin"] = new byte[40_000];
        using var hub = new FakeHub(OpenAiRepo, files, new HashSet<string> { "model.safetensors", "pytorch_model.bin" });
        var first = await Load(hub.Endpoint);
        Assert.That(first.Encode(Prompt), Is.EqualTo(Expected("<|endoftext|>").Encode(Prompt)));
        Assert.That(hub.Requests.Any(r => r.Path.StartsWith($"/api/models/{Sd15Repo}/", StringComparison.Ordinal)), Is.True, "the family's own repository is asked first");
        Assert.That(hub.Downloads().Select(r => r.Path.Split('/')[^1]).Order(StringComparer.Ordinal), Is.EqualTo(new[] { "merges.txt", "vocab.json" }));

        int requests = hub.Requests.Count;
        var second = await Load(hub.Endpoint);
        Assert.That(hub.Requests.Count, Is.EqualTo(requests), "the second load reaches the hub");
        Assert.That(second.Encode(Prompt), Is.EqualTo(first.Encode(Prompt)));
        Assert.That(Path.Combine(_cache, "models--openai--clip-vit-large-patch14", "snapshots", FakeHub.Commit, "vocab.json"), Does.Exist);
    }

    [Test]
    public async Task TheFamilysOwnRepositoryIsDownloadedFrom()
    {
        var files = VocabularyFiles("tokenizer");
        files["unet/diffusion_pytorch_model.safetensors"] = new byte[40_000];
        using var hub = new FakeHub(Sd15Repo, files, new HashSet<string> { "unet/diffusion_pytorch_model.safetensors" });
        await Load(hub.Endpoint);
        Assert.That(hub.Downloads().Select(r => r.Path).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { $"/{Sd15Repo}/resolve/{FakeHub.Commit}/tokenizer/merges.txt", $"/{Sd15Repo}/resolve/{FakeHub.Commit}/tokenizer/vocab.json" }));
        Assert.That(hub.Requests.Any(r => r.Path.Contains(OpenAiRepo)), Is.False);
    }

    [Test]
    public async Task AGivenTokenizerFolderIsUsedAsItIs()
    {
        using var hub = new FakeHub(Sd15Repo, VocabularyFiles("tokenizer"), new HashSet<string>());
        var tokenizer = await Load(hub.Endpoint, tokenizerDirectory: _vocabulary);
        Assert.That(tokenizer.Encode(Prompt), Is.EqualTo(ClipTokenizer.FromDirectory(_vocabulary).Encode(Prompt)));
        Assert.That(hub.Requests, Is.Empty);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void OfflineWithoutACachedTokenizerIsOneClearError(bool byEnvironment)
    {
        using var hub = new FakeHub(Sd15Repo, VocabularyFiles("tokenizer"), new HashSet<string>());
        var e = Assert.ThrowsAsync<FileNotFoundException>(() => byEnvironment
            ? Load(hub.Endpoint, environment: Environment(("HF_HUB_OFFLINE", "1")))
            : Load(hub.Endpoint, offline: true))!;
        Assert.That(e.Message, Does.Contain(Checkpoint).And.Contain("SD 1.x").And.Contain("vocab.json").And.Contain("merges.txt")
            .And.Contain(_cache).And.Contain(byEnvironment ? "HF_HUB_OFFLINE" : "ModelHubOptions.Offline")
            .And.Contain("--config").And.Contain($"ldm pull {Sd15Repo}"));
        Assert.That(hub.Requests, Is.Empty, "offline, the hub is not reached");
    }

    [Test]
    public void AnUnreachableHubIsTheSameErrorWithTheReason()
    {
        string endpoint;
        using (var gone = new FakeHub(Sd15Repo, VocabularyFiles("tokenizer"), new HashSet<string>())) endpoint = gone.Endpoint;
        var e = Assert.ThrowsAsync<FileNotFoundException>(() => Load(endpoint, TextEncoderLayout.OpenClip))!;
        Assert.That(e.Message, Does.Contain("SD 2.x").And.Contain("stabilityai/stable-diffusion-2-1").And.Contain("Cannot reach the hub")
            .And.Contain("--config").And.Contain("ldm pull stabilityai/stable-diffusion-2-1"));
    }

    [Test]
    public async Task ASingleFileLoadsWithoutConfigFetchingItsTokenizerOnce()
    {
        string singleFile = Fixtures.PathOf("tiny-sd15.safetensors");
        string fixtureTokenizer = Fixtures.PathOf("tiny-sd15", "tokenizer");
        var files = SingleFileTokenizer.Files.ToDictionary(f => "tokenizer/" + f, f => File.ReadAllBytes(Path.Combine(fixtureTokenizer, f)));
        files["model_index.json"] = "{}"u8.ToArray();
        files["unet/diffusion_pytorch_model.safetensors"] = new byte[40_000];
        using var hub = new FakeHub(Sd15Repo, files, new HashSet<string> { "unet/diffusion_pytorch_model.safetensors" });
        var options = new PipelineOptions { Hub = new ModelHubOptions { Endpoint = hub.Endpoint, CacheDirectory = _cache, Token = "test-token", Offline = false } };

        var expected = ClipTokenizer.FromDirectory(fixtureTokenizer);
        await using (var pipeline = await StableDiffusionPipeline.LoadAsync(singleFile, options))
            Assert.That(pipeline.Tokenizer.Encode("a photograph of an astronaut"), Is.EqualTo(expected.Encode("a photograph of an astronaut")));
        Assert.That(hub.Downloads().Select(r => r.Path.Split('/')[^1]).Order(StringComparer.Ordinal), Is.EqualTo(new[] { "merges.txt", "vocab.json" }));

        int requests = hub.Requests.Count;
        await using (var again = await StableDiffusionPipeline.LoadAsync(singleFile, options with { Hub = options.Hub! with { Offline = true } }))
            Assert.That(again.Tokenizer.Encode("a photograph of an astronaut"), Is.EqualTo(expected.Encode("a photograph of an astronaut")));
        Assert.That(hub.Requests.Count, Is.EqualTo(requests));
    }

    [Test]
    public async Task AnSdxlSingleFileLoadsWithoutConfigWithBothTokenizersFromOneFetch()
    {
        // Both SDXL tokenizers are the CLIP vocabulary: one fetch serves both, the second padded with "!".
        string fixtureTokenizer = Fixtures.PathOf("tiny-sdxl", "tokenizer");
        var files = SingleFileTokenizer.Files.ToDictionary(f => "tokenizer/" + f, f => File.ReadAllBytes(Path.Combine(fixtureTokenizer, f)));
        files["model_index.json"] = "{}"u8.ToArray();
        using var hub = new FakeHub(Sd15Repo, files, new HashSet<string>());
        var options = new PipelineOptions { Hub = new ModelHubOptions { Endpoint = hub.Endpoint, CacheDirectory = _cache, Token = "test-token", Offline = false } };

        await using var single = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sdxl.safetensors"), options);
        Assert.That(hub.Downloads().Select(r => r.Path.Split('/')[^1]).Order(StringComparer.Ordinal), Is.EqualTo(new[] { "merges.txt", "vocab.json" }));
        var folder = TinyModels.Get("tiny-sdxl");
        Assert.That(((ClipTokenizer)single.Tokenizer2!).PadToken, Is.EqualTo("!"));
        Assert.That(((ClipTokenizer)single.Tokenizer).PadToken, Is.EqualTo("<|endoftext|>"));
        foreach (string text in new[] { "a lighthouse at dusk", "best quality!!" })
        {
            Assert.That(single.Tokenizer.Encode(text), Is.EqualTo(folder.Tokenizer.Encode(text)), text);
            Assert.That(single.Tokenizer2!.Encode(text), Is.EqualTo(folder.Tokenizer2!.Encode(text)), text);
        }
        // The image itself cannot be compared with the folder's: a tiny model's head counts are not in its weights, so the
        // configs inferred without a config folder are the full-size model's (SdxlLoadingTests compares with --config).
        var generation = new GenerationOptions { Steps = 2, Width = 64, Height = 96, Seed = 5, GuidanceScale = 5, NegativePrompt = "blurry!" };
        using var fromFile = await single.GenerateAsync("best quality!! a lighthouse", generation);
        Assert.That(fromFile.Pixels.shape, Is.EqualTo(new long[] { 1, 96, 64, 3 }));
        Assert.That(fromFile.Pixels.isfinite().all().item<bool>());
    }
}
