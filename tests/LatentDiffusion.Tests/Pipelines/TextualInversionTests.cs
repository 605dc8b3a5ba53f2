using System.Text.Json;
using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Text;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// Textual inversion: the reference's ids, text-encoder output, embedding rows and images after loading both fixture
/// embeddings into tiny-sd15 (ti/sd15/* of reference-phase2), and, on the generated model, negative embeddings, the
/// file layouts and the errors.
/// </summary>
public class TextualInversionTests
{
    private static readonly Lazy<StableDiffusionPipeline> WithEmbeddings = new(() =>
    {
        var pipeline = StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15")).GetAwaiter().GetResult();
        pipeline.LoadTextualInversion(Fixtures.PathOf("textual_inversion", "my-token"), "<my-token>");
        pipeline.LoadTextualInversion(Fixtures.PathOf("textual_inversion", "my-style.safetensors"), "<my-style>");
        return pipeline;
    });

    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ld-ti-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    [OneTimeTearDown]
    public void DisposePipeline()
    {
        if (WithEmbeddings.IsValueCreated) WithEmbeddings.Value.Dispose();
    }

    private static JsonElement TextCase() => Fixtures.Phase2Cases.Single(c => c.GetProperty("kind").GetString() == "ti_text");

    public static IEnumerable<TestCaseData> ImageCases() => Fixtures.CaseSource(() => Fixtures.Phase2Cases
        .Where(c => c.GetProperty("kind").GetString() == "ti_txt2img")
        .Select(c => new TestCaseData(c.GetProperty("key").GetString()).SetName("ti txt2img " + c.GetProperty("key").GetString())), "");

    private static Tensor Row(StableDiffusionPipeline pipeline, long from, long count)
    {
        var names = ((ClipTextModel)pipeline.TextEncoder).named_parameters().Select(p => p.name).ToList();
        var table = ((ClipTextModel)pipeline.TextEncoder).named_parameters().SingleOrDefault(p => p.name == "embeddings.token_embedding.weight").parameter
            ?? throw new AssertionException("no token embedding among " + string.Join(", ", names.Take(5)));
        return table.narrow(0, from, count).detach().clone();
    }

    [Test]
    public void TheTokenizerLearnsTheTokensWithTheReferencesIds()
    {
        var c = TextCase();
        var pipeline = WithEmbeddings.Value;
        var tokenizer = (ClipTokenizer)pipeline.Tokenizer;
        Assert.That(tokenizer.VocabularySize, Is.EqualTo(c.GetProperty("tokenizer_len_after").GetInt32()));
        foreach (var p in c.GetProperty("added_token_ids").EnumerateObject())
            Assert.That(tokenizer.Decode([p.Value.GetInt32()]), Is.EqualTo(p.Name), $"id {p.Value.GetInt32()}");
        Assert.That(tokenizer.IdsOf("<my-style>"), Is.EqualTo(new[] { 49409, 49410, 49411 }), "a multi-vector token stands for all its ids");
        Assert.That(tokenizer.IdsOf("<my-style>_1"), Is.EqualTo(new[] { 49410 }));

        string[] prompts = c.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();
        string[] converted = c.GetProperty("converted_prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();
        using var expected = Fixtures.ExpectedPhase2("ti/sd15/text/input_ids");
        for (int i = 0; i < prompts.Length; i++)
        {
            long[] row = expected[i].data<long>().ToArray();
            Assert.That(tokenizer.EncodePadded(prompts[i], 77).Ids.Select(x => (long)x), Is.EqualTo(row), prompts[i]);
            Assert.That(tokenizer.Decode(tokenizer.EncodePadded(prompts[i], 77).Ids), Is.EqualTo(converted[i]), "the ids are those of diffusers' rewritten prompt");
        }
    }

    [Test]
    public void TheTextEncoderMatchesTheReference()
    {
        var pipeline = WithEmbeddings.Value;
        using var ids = Fixtures.ExpectedPhase2("ti/sd15/text/input_ids");
        using var expected = Fixtures.ExpectedPhase2("ti/sd15/text/last_hidden_state");
        using var actual = pipeline.TextEncoder.Encode(ids);
        AssertTensor.RelativeClose(actual, expected, 1e-4, "ti/sd15/text/last_hidden_state");

        using var token = Row(pipeline, 49408, 1);
        using var style = Row(pipeline, 49409, 3);
        using var expectedToken = Fixtures.ExpectedPhase2("ti/sd15/embeddings/<my-token>");
        using var expectedStyle = Fixtures.ExpectedPhase2("ti/sd15/embeddings/<my-style>");
        AssertTensor.MaxAbsClose(token[0], expectedToken, 0, "row of <my-token>");
        AssertTensor.MaxAbsClose(style, expectedStyle, 0, "rows of <my-style>, <my-style>_1, <my-style>_2");
    }

    [TestCaseSource(nameof(ImageCases))]
    public async Task TextToImageMatchesReference(string key)
    {
        var c = Fixtures.Phase2Cases.Single(x => x.TryGetProperty("key", out var k) && k.GetString() == key);
        var call = c.GetProperty("call");
        var options = new GenerationOptions
        {
            GuidanceScale = call.GetProperty("guidance_scale").GetDouble(),
            Steps = call.GetProperty("num_inference_steps").GetInt32(),
            Width = call.GetProperty("width").GetInt32(),
            Height = call.GetProperty("height").GetInt32(),
            Seed = c.GetProperty("seed").GetInt64(),
            CustomScheduler = PipelineParityTests.SchedulerAsRun(c),
        };
        using var result = await WithEmbeddings.Value.GenerateAsync(call.GetProperty("prompt").GetString()!, options);
        using var expected = Fixtures.ExpectedPhase2(key + "/image");
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, key);
    }

    // --- by construction, on the generated model (no fixtures) ---

    private static async Task<StableDiffusionPipeline> FreshGeneratedPipeline() => await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder);

    private string Write(string name, Dictionary<string, Tensor> tensors, Dictionary<string, string>? metadata = null)
    {
        string path = Path.Combine(_dir, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        SafetensorsWriter.Save(path, tensors, metadata);
        foreach (var t in tensors.Values) t.Dispose();
        return path;
    }

    private static Tensor Vectors(int count, int width, long seed)
    {
        using var g = new Generator((ulong)seed);
        return randn([count, width], generator: g);
    }

    [Test]
    public async Task ANegativeEmbeddingWorksInTheNegativePrompt()
    {
        await using var pipeline = await FreshGeneratedPipeline();
        int hidden = pipeline.TextEncoder.HiddenSize;
        using var vectors = Vectors(2, hidden, 7);
        string path = Write("bad-hands.safetensors", new() { ["emb_params"] = vectors.clone() });
        int before = pipeline.Tokenizer.Encode("").Length == 2 ? ((ClipTokenizer)pipeline.Tokenizer).VocabularySize : -1;
        Assert.That(pipeline.LoadTextualInversion(path), Is.EqualTo("bad-hands"), "an A1111 file's token is its file name");

        var empty = pipeline.Tokenizer.EncodePadded("", 77).Ids;
        int[] negativeIds = [empty[0], before, before + 1, empty[1], .. Enumerable.Repeat(empty[2], 73)];
        Assert.That(pipeline.Tokenizer.EncodePadded("bad-hands", 77).Ids, Is.EqualTo(negativeIds));
        using var row = Row(pipeline, before, 2);
        AssertTensor.MaxAbsClose(row, vectors, 0, "the file's vectors are the new rows");

        var quick = new GenerationOptions { Steps = 2, Seed = 9, Width = 64, Height = 64 };
        using var positiveIds = tensor(pipeline.Tokenizer.EncodePadded("a red circle", 77).Ids.Select(i => (long)i).ToArray(), [1, 77], ScalarType.Int64);
        using var negativeTensor = tensor(negativeIds.Select(i => (long)i).ToArray(), [1, 77], ScalarType.Int64);
        using var positive = pipeline.TextEncoder.Encode(positiveIds);
        using var negative = pipeline.TextEncoder.Encode(negativeTensor);
        using var fromText = pipeline.Generate("a red circle", quick with { NegativePrompt = "bad-hands" });
        using var fromEmbeddings = pipeline.Generate("", quick with { PromptEmbeddings = positive, NegativePromptEmbeddings = negative });
        using var without = pipeline.Generate("a red circle", quick);
        AssertTensor.MaxAbsClose(fromText.Pixels, fromEmbeddings.Pixels, 0, "negative embedding");
        Assert.That((without.Pixels - fromText.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-4f), "the negative embedding changes the image");
    }

    [Test]
    public void TheLayoutsAreRecognised()
    {
        using (var v = Vectors(1, 8, 1))
        {
            string folder = Path.Combine(_dir, "my-concept");
            Write(Path.Combine("my-concept", TextualInversionEmbedding.DiffusersFileName), new() { ["<cat-toy>"] = v[0].clone() });
            using var e = TextualInversionEmbedding.Load(folder);
            Assert.That((e.Layout, e.Name, e.VectorCount), Is.EqualTo((TextualInversionLayout.Diffusers, "<cat-toy>", 1)));
            AssertTensor.MaxAbsClose(e.Vectors, v, 0, "a [hidden] vector becomes [1, hidden]");
        }
        string a1111 = Write("style.safetensors", new() { ["emb_params"] = Vectors(3, 8, 2).to(ScalarType.Float16) });
        using (var e = TextualInversionEmbedding.Load(a1111))
            Assert.That((e.Layout, e.Name, e.VectorCount, e.Vectors.dtype), Is.EqualTo((TextualInversionLayout.A1111, "style", 3, ScalarType.Float32)));
        string stp = Write("pt-converted.safetensors", new() { ["string_to_param.*"] = Vectors(2, 8, 3) }, new() { ["name"] = "old-style" });
        using (var e = TextualInversionEmbedding.Load(stp))
            Assert.That((e.Layout, e.Name, e.VectorCount), Is.EqualTo((TextualInversionLayout.A1111StringToParam, "old-style", 2)));
        string sdxl = Write("xl.safetensors", new() { ["clip_l"] = Vectors(2, 8, 4), ["clip_g"] = Vectors(2, 12, 5) });
        using (var e = TextualInversionEmbedding.Load(sdxl))
        {
            Assert.That((e.Layout, e.VectorCount, e.Vectors2!.shape[1]), Is.EqualTo((TextualInversionLayout.Sdxl, 2, 12L)));
        }
    }

    [Test]
    public async Task BadEmbeddingsAreErrorsThatNameTheProblemAndChangeNothing()
    {
        await using var pipeline = await FreshGeneratedPipeline();
        int hidden = pipeline.TextEncoder.HiddenSize;
        var tokenizer = (ClipTokenizer)pipeline.Tokenizer;
        int vocabulary = tokenizer.VocabularySize;

        var wrongSize = Write("wide.safetensors", new() { ["<wide>"] = Vectors(1, hidden + 8, 1)[0] });
        Assert.That(() => pipeline.LoadTextualInversion(wrongSize), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains($"size {hidden + 8}").And.Message.Contains($"hidden size is {hidden}"));

        var good = Write("good.safetensors", new() { ["emb_params"] = Vectors(1, hidden, 2) });
        Assert.That(() => pipeline.LoadTextualInversion(good, "a"), Throws.ArgumentException.With.Message.Contains("'a' is already in the tokenizer's vocabulary"));

        var unknown = Write("two.safetensors", new() { ["foo"] = Vectors(1, hidden, 3), ["bar"] = Vectors(1, hidden, 4) });
        Assert.That(() => pipeline.LoadTextualInversion(unknown), Throws.InstanceOf<InvalidDataException>()
            .With.Message.Contains("unknown layout").And.Message.Contains("'bar', 'foo'"));

        var sdxl = Write("xl.safetensors", new() { ["clip_l"] = Vectors(1, hidden, 5), ["clip_g"] = Vectors(1, 2 * hidden, 6) });
        Assert.That(() => pipeline.LoadTextualInversion(sdxl), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("SDXL"));

        using (var nan = Vectors(1, hidden, 7)) { nan[0, 3] = tensor(float.NaN); Write("nan.safetensors", new() { ["emb_params"] = nan.clone() }); }
        Assert.That(() => pipeline.LoadTextualInversion(Path.Combine(_dir, "nan.safetensors")), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("NaN"));

        var integers = Write("int.safetensors", new() { ["emb_params"] = zeros([1, hidden], ScalarType.Int32) });
        Assert.That(() => pipeline.LoadTextualInversion(integers), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("floating-point"));

        string pickled = Path.Combine(_dir, "old.pt");
        File.WriteAllBytes(pickled, [0x80, 0x02, 0x7d, 0x71, 0x00]);
        Assert.That(() => pipeline.LoadTextualInversion(pickled), Throws.InstanceOf<NotSupportedException>().With.Message.Contains("only .safetensors"));
        Assert.That(() => pipeline.LoadTextualInversion(Path.Combine(_dir, "missing.safetensors")), Throws.InstanceOf<FileNotFoundException>());
        Assert.That(() => pipeline.LoadTextualInversion(_dir), Throws.InstanceOf<FileNotFoundException>().With.Message.Contains("learned_embeds.safetensors"));

        Assert.That(((ClipTokenizer)pipeline.Tokenizer).VocabularySize, Is.EqualTo(vocabulary), "nothing was added to the tokenizer");
        Assert.That(((ClipTextModel)pipeline.TextEncoder).VocabularySize, Is.EqualTo(vocabulary), "nothing was added to the text encoder");

        Assert.That(pipeline.LoadTextualInversion(good, "<good>"), Is.EqualTo("<good>"));
        Assert.That(() => pipeline.LoadTextualInversion(good, "<good>"), Throws.ArgumentException.With.Message.Contains("'<good>' is already an added token"));
        Assert.That(((ClipTextModel)pipeline.TextEncoder).VocabularySize, Is.EqualTo(vocabulary + 1));
    }

    [Test]
    public async Task ATextEncoderSharedWithAnotherPipelineIsRefusedRatherThanMisnumbered()
    {
        await using var first = await FreshGeneratedPipeline();
        using var second = new StableDiffusionPipeline(first.Tokenizer, first.TextEncoder, first.UNet, first.Vae, first.Scheduler, leaveComponentsOpen: true);
        var path = Write("e.safetensors", new() { ["emb_params"] = Vectors(1, first.TextEncoder.HiddenSize, 1) });
        first.LoadTextualInversion(path, "<one>");
        Assert.That(() => second.LoadTextualInversion(path, "<two>"), Throws.InvalidOperationException.With.Message.Contains("shared with another pipeline"));
    }

    [Test]
    public void TheTokenizerStaysImmutable()
    {
        var tokenizer = (ClipTokenizer)GeneratedModel.Pipeline.Tokenizer;
        var taught = tokenizer.WithAddedToken("<x>", 3);
        Assert.That(tokenizer.IdsOf("<x>"), Is.Null);
        int v = tokenizer.VocabularySize;
        Assert.That(taught.Encode("red <x> circle")[2..5], Is.EqualTo(new[] { v, v + 1, v + 2 }));
        Assert.That(taught.Encode("<x>_2")[1..^1], Is.EqualTo(new[] { v + 2 }), "a single vector by its own name");
        Assert.That(taught.Decode(taught.Encode("red <x> circle")), Does.Contain("<x>"));
        Assert.That(() => tokenizer.WithAddedToken(" <x>"), Throws.ArgumentException);
        Assert.That(() => tokenizer.WithAddedToken("<x>", 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void TheTextEncoderChecksTheVectorsItIsGiven()
    {
        using var model = new ClipTextModel(new ClipTextConfig(10, 8, 16, 2, 1), CPU, ScalarType.Float32);
        Assert.That(() => model.AddTokenEmbeddings(zeros(2, 9)), Throws.ArgumentException.With.Message.Contains("[n, 8]"));
        Assert.That(() => model.AddTokenEmbeddings(zeros(0, 8)), Throws.ArgumentException);
        Assert.That(() => model.AddTokenEmbeddings(zeros([2, 8], ScalarType.Int64)), Throws.ArgumentException.With.Message.Contains("floating point"));
        Assert.That(() => model.AddTokenEmbeddings(full(2, 8, float.PositiveInfinity)), Throws.ArgumentException.With.Message.Contains("infinite"));
        Assert.That(model.VocabularySize, Is.EqualTo(10));
        using var ids = tensor(new long[] { 0, 10 }).unsqueeze(0);
        Assert.That(() => model.Encode(ids), Throws.ArgumentException.With.Message.Contains("[0, 10)"), "a new id before the table grows");
        using var one = ones(8);
        Assert.That(model.AddTokenEmbeddings(one), Is.EqualTo(10));
        Assert.That(model.VocabularySize, Is.EqualTo(11));
        using var encoded = model.Encode(ids);
        Assert.That(encoded.shape, Is.EqualTo(new long[] { 1, 2, 8 }));
        Assert.That(model.named_parameters().Single(p => p.name == "embeddings.token_embedding.weight").parameter.shape, Is.EqualTo(new long[] { 11, 8 }),
            "the grown table is still the registered weight (saved and moved with the model)");
    }
}
