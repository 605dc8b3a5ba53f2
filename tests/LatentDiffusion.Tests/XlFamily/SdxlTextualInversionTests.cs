using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Cli;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>
/// Textual inversion on SDXL, by construction on tiny-sdxl (hidden sizes 16 and 32; no reference fixture exists): an
/// SDXL embedding (<c>clip_l</c> [2, 16], <c>clip_g</c> [2, 32]) teaches both tokenizers the token and grows both
/// encoders' tables by exactly its vectors, and the conditioning of a prompt with the token is the one computed from
/// hand-built ids, in the prompt, <c>prompt_2</c> and the negative prompt; a refiner takes <c>clip_g</c>; the errors.
/// </summary>
public class SdxlTextualInversionTests
{
    private const string Token = "<xl-style>";
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ld-xl-ti-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    private static async Task<StableDiffusionPipeline> FreshSdxl() => await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sdxl"));

    private static Tensor Vectors(int count, int width, long seed)
    {
        using var g = new Generator((ulong)seed);
        return randn([count, width], generator: g);
    }

    private string Write(string name, Dictionary<string, Tensor> tensors)
    {
        string path = Path.Combine(_dir, name);
        SafetensorsWriter.Save(path, tensors);
        return path;
    }

    /// <summary>An SDXL embedding file for tiny-sdxl; the vectors stay with the caller.</summary>
    private string WriteXl(string name, Tensor clipL, Tensor clipG) => Write(name, new() { ["clip_l"] = clipL, ["clip_g"] = clipG });

    private static Tensor Rows(ITextEncoder encoder, long from, long count)
        => ((ClipTextModel)encoder).named_parameters().Single(p => p.name == "embeddings.token_embedding.weight").parameter.narrow(0, from, count).detach().clone();

    /// <summary>The padded ids of <paramref name="text"/> (a prompt without the token) with <paramref name="inserted"/> right after the start token.</summary>
    private static long[] IdsWith(ITokenizer tokenizer, string text, params int[] inserted)
    {
        var plain = tokenizer.EncodePadded(text, 77).Ids;
        return [plain[0], .. inserted, .. plain[1..(77 - inserted.Length)]];
    }

    /// <summary>The context and pooled embedding of one chunk, each encoder given its ids (SDXL's penultimate layer).</summary>
    private static (Tensor Context, Tensor Pooled) EncodeByHand(StableDiffusionPipeline pipeline, long[] ids1, long[] ids2)
    {
        using var t1 = tensor(ids1, [1, 77]);
        using var t2 = tensor(ids2, [1, 77]);
        var first = pipeline.TextEncoder.EncodeHiddenStates(t1, 2, pooled: false);
        var second = pipeline.TextEncoder2!.EncodeHiddenStates(t2, 2, pooled: true);
        return (cat([first.HiddenStates, second.HiddenStates], -1), second.Pooled!);
    }

    [Test]
    public async Task BothTokenizersAndBothEncodersLearnTheToken()
    {
        await using var pipeline = await FreshSdxl();
        int vocabulary1 = ((ClipTokenizer)pipeline.Tokenizer).VocabularySize, vocabulary2 = ((ClipTokenizer)pipeline.Tokenizer2!).VocabularySize;
        using var clipL = Vectors(2, 16, 1);
        using var clipG = Vectors(2, 32, 2);
        string path = WriteXl("xl-style.safetensors", clipL, clipG);

        Assert.That(pipeline.LoadTextualInversion(path), Is.EqualTo("xl-style"), "an SDXL file's token is its file name");
        Assert.That(((ClipTokenizer)pipeline.Tokenizer).IdsOf("xl-style"), Is.EqualTo(new[] { vocabulary1, vocabulary1 + 1 }));
        Assert.That(((ClipTokenizer)pipeline.Tokenizer2!).IdsOf("xl-style"), Is.EqualTo(new[] { vocabulary2, vocabulary2 + 1 }));
        Assert.That(((ClipTokenizer)pipeline.Tokenizer2!).IdsOf("xl-style_1"), Is.EqualTo(new[] { vocabulary2 + 1 }));
        Assert.That(((ClipTextModel)pipeline.TextEncoder).VocabularySize, Is.EqualTo(vocabulary1 + 2));
        Assert.That(((ClipTextModel)pipeline.TextEncoder2!).VocabularySize, Is.EqualTo(vocabulary2 + 2));
        using var rows1 = Rows(pipeline.TextEncoder, vocabulary1, 2);
        using var rows2 = Rows(pipeline.TextEncoder2!, vocabulary2, 2);
        AssertTensor.MaxAbsClose(rows1, clipL, 0, "clip_l's vectors are text_encoder's new rows");
        AssertTensor.MaxAbsClose(rows2, clipG, 0, "clip_g's vectors are text_encoder_2's new rows");
        Assert.That(pipeline.Tokenizer.EncodePadded("xl-style a red car", 77).Ids, Is.EqualTo(IdsWith(pipeline.Tokenizer, "a red car", vocabulary1, vocabulary1 + 1).Select(i => (int)i)));
    }

    [Test]
    public async Task TheConditioningOfTheTokenIsTheOneOfHandBuiltIdsInPromptPrompt2AndNegativePrompt()
    {
        await using var pipeline = await FreshSdxl();
        int v1 = ((ClipTokenizer)pipeline.Tokenizer).VocabularySize, v2 = ((ClipTokenizer)pipeline.Tokenizer2!).VocabularySize;
        var plainTokenizer1 = pipeline.Tokenizer;
        var plainTokenizer2 = pipeline.Tokenizer2!;
        using var clipL = Vectors(2, 16, 3);
        using var clipG = Vectors(2, 32, 4);
        Assert.That(pipeline.LoadTextualInversion(WriteXl("e.safetensors", clipL, clipG), Token), Is.EqualTo(Token));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();

        // The prompt: the token in both encoders' ids.
        var quick = new GenerationOptions { Steps = 2, Seed = 5, Width = 64, Height = 64, GuidanceScale = 5 };
        var (context, pooled) = EncodeByHand(pipeline, IdsWith(plainTokenizer1, "a red car", v1, v1 + 1), IdsWith(plainTokenizer2, "a red car", v2, v2 + 1));
        var fromText = pipeline.Generate($"{Token} a red car", quick);
        var fromIds = pipeline.Generate("", quick with { PromptEmbeddings = context, PooledPromptEmbeddings = pooled });
        AssertTensor.MaxAbsClose(fromText.Pixels, fromIds.Pixels, 0, "the token in the prompt");
        var without = pipeline.Generate("a red car", quick);
        Assert.That((without.Pixels - fromText.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-4f), "the token changes the image");

        // prompt_2: the token only in the second encoder's ids.
        var (context2, pooled2) = EncodeByHand(pipeline, IdsWith(plainTokenizer1, "a red car"), IdsWith(plainTokenizer2, "a red car", v2, v2 + 1));
        var conditioner = SdxlConditioning.Conditioner(pipeline);
        var (encoded2, added2) = conditioner.Encode("a red car", new GenerationOptions { Prompt2 = $"{Token} a red car" }, 1, false, 64, 64, false, ScalarType.Float32, CPU);
        AssertTensor.MaxAbsClose(encoded2, context2, 0, "the token in prompt_2 (context)");
        AssertTensor.MaxAbsClose(added2.TextEmbeds, pooled2, 0, "the token in prompt_2 (pooled)");
        var fromPrompt2 = pipeline.Generate("a red car", quick with { Prompt2 = $"{Token} a red car" });
        var fromIds2 = pipeline.Generate("", quick with { PromptEmbeddings = context2, PooledPromptEmbeddings = pooled2 });
        AssertTensor.MaxAbsClose(fromPrompt2.Pixels, fromIds2.Pixels, 0, "the token in prompt_2 reaches the pipeline's conditioning");

        // The negative prompt (a negative embedding), through both encoders.
        var (positive, positivePooled) = EncodeByHand(pipeline, IdsWith(plainTokenizer1, "a red car"), IdsWith(plainTokenizer2, "a red car"));
        var (negative, negativePooled) = EncodeByHand(pipeline, IdsWith(plainTokenizer1, "", v1, v1 + 1), IdsWith(plainTokenizer2, "", v2, v2 + 1));
        var withNegative = pipeline.Generate("a red car", quick with { NegativePrompt = Token });
        var fromNegativeIds = pipeline.Generate("", quick with
        {
            PromptEmbeddings = positive, PooledPromptEmbeddings = positivePooled,
            NegativePromptEmbeddings = negative, NegativePooledPromptEmbeddings = negativePooled,
        });
        AssertTensor.MaxAbsClose(withNegative.Pixels, fromNegativeIds.Pixels, 0, "the token in the negative prompt");
        var withEmptyNegative = pipeline.Generate("a red car", quick with { NegativePrompt = "" });
        Assert.That((withEmptyNegative.Pixels - withNegative.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-4f), "the negative embedding changes the image");

        // negative_prompt_2: the token only in the second encoder's negative ids.
        var (negative2, negativePooled2) = EncodeByHand(pipeline, IdsWith(plainTokenizer1, ""), IdsWith(plainTokenizer2, "", v2, v2 + 1));
        var (both, bothAdded) = conditioner.Encode("a red car", new GenerationOptions { NegativePrompt = "", NegativePrompt2 = Token }, 1, true, 64, 64, false, ScalarType.Float32, CPU);
        AssertTensor.MaxAbsClose(both[0..1], negative2, 0, "the token in negative_prompt_2 (context)");
        AssertTensor.MaxAbsClose(bothAdded.TextEmbeds[0..1], negativePooled2, 0, "the token in negative_prompt_2 (pooled)");
    }

    [Test]
    public async Task EmbeddingsOfTheWrongFormOrSizeAreRefusedAndChangeNothing()
    {
        await using var pipeline = await FreshSdxl();
        var tokenizer1 = pipeline.Tokenizer;
        var tokenizer2 = pipeline.Tokenizer2!;
        int v1 = ((ClipTextModel)pipeline.TextEncoder).VocabularySize, v2 = ((ClipTextModel)pipeline.TextEncoder2!).VocabularySize;
        void AssertUnchanged(string after)
        {
            Assert.That(pipeline.Tokenizer, Is.SameAs(tokenizer1), after + ": tokenizer");
            Assert.That(pipeline.Tokenizer2, Is.SameAs(tokenizer2), after + ": tokenizer_2");
            Assert.That(((ClipTextModel)pipeline.TextEncoder).VocabularySize, Is.EqualTo(v1), after + ": text_encoder");
            Assert.That(((ClipTextModel)pipeline.TextEncoder2!).VocabularySize, Is.EqualTo(v2), after + ": text_encoder_2");
        }

        using (var plain = Vectors(2, 16, 1))
        {
            string sd15 = Write("sd15.safetensors", new() { ["emb_params"] = plain });
            Assert.That(() => pipeline.LoadTextualInversion(sd15), Throws.InstanceOf<NotSupportedException>()
                .With.Message.Contains("SD 1.x/2.x embedding").And.Message.Contains("'clip_l' [n, 16] for text_encoder").And.Message.Contains("'clip_g' [n, 32] for text_encoder_2"));
            AssertUnchanged("a plain embedding");
        }
        using (var l = Vectors(1, 16, 2))
        using (var g = Vectors(1, 16, 3))
        {
            Assert.That(() => pipeline.LoadTextualInversion(WriteXl("narrow.safetensors", l, g)), Throws.InstanceOf<InvalidDataException>()
                .With.Message.Contains("clip_l vectors of size 16 and clip_g vectors of size 16")
                .And.Message.Contains("16 (text_encoder) and 32 (text_encoder_2)"));
            AssertUnchanged("a clip_g of the wrong width");
        }
        using (var l = Vectors(1, 32, 4))
        using (var g = Vectors(1, 16, 5))
        {
            Assert.That(() => pipeline.LoadTextualInversion(WriteXl("swapped.safetensors", l, g)), Throws.InstanceOf<InvalidDataException>()
                .With.Message.Contains("clip_l vectors of size 32 and clip_g vectors of size 16"));
            AssertUnchanged("swapped widths");
        }
        using (var l = Vectors(2, 16, 6))
        using (var g = Vectors(3, 32, 7))
        {
            Assert.That(() => pipeline.LoadTextualInversion(WriteXl("counts.safetensors", l, g)), Throws.InstanceOf<InvalidDataException>()
                .With.Message.Contains("2 clip_l vectors but 3 clip_g vectors"));
            AssertUnchanged("different vector counts");
        }
        using var goodL = Vectors(1, 16, 8);
        using var goodG = Vectors(1, 32, 9);
        string good = WriteXl("good.safetensors", goodL, goodG);
        Assert.That(() => pipeline.LoadTextualInversion(good, "a"), Throws.ArgumentException.With.Message.Contains("'a' is already in the tokenizer's vocabulary"));
        AssertUnchanged("a taken token");

        Assert.That(pipeline.LoadTextualInversion(good, "<good>"), Is.EqualTo("<good>"));
        Assert.That(((ClipTextModel)pipeline.TextEncoder).VocabularySize, Is.EqualTo(v1 + 1));
        Assert.That(((ClipTextModel)pipeline.TextEncoder2!).VocabularySize, Is.EqualTo(v2 + 1));
        (tokenizer1, tokenizer2, v1, v2) = (pipeline.Tokenizer, pipeline.Tokenizer2!, v1 + 1, v2 + 1);
        Assert.That(() => pipeline.LoadTextualInversion(good, "<good>"), Throws.ArgumentException.With.Message.Contains("'<good>' is already an added token"));
        AssertUnchanged("the same token again");
    }

    [Test]
    public async Task WhenTheSecondTableCannotGrowTheFirstIsCutBack()
    {
        await using var pipeline = await FreshSdxl();
        var encoder1 = (ClipTextModel)pipeline.TextEncoder;
        var encoder2 = (ClipTextModel)pipeline.TextEncoder2!;
        int v1 = encoder1.VocabularySize, v2 = encoder2.VocabularySize;
        using var before = Rows(encoder1, 0, v1);
        using var good = Vectors(1, 16, 1);
        using var bad = Vectors(1, 32, 2);
        bad[0, 5] = tensor(float.NaN);
        // The loader is given vectors the pipeline would have refused; text_encoder_2 refuses them after text_encoder grew.
        Assert.That(() => TextualInversionLoader.Add(
        [
            new TextualInversionLoader.Target((ClipTokenizer)pipeline.Tokenizer, encoder1, good, "text_encoder"),
            new TextualInversionLoader.Target((ClipTokenizer)pipeline.Tokenizer2!, encoder2, bad, "text_encoder_2"),
        ], Token), Throws.ArgumentException.With.Message.Contains("NaN"));
        Assert.That((encoder1.VocabularySize, encoder2.VocabularySize), Is.EqualTo((v1, v2)));
        using var after = Rows(encoder1, 0, v1);
        AssertTensor.MaxAbsClose(after, before, 0, "text_encoder's table is the one before the load");
        Assert.That(encoder1.named_parameters().Count(p => p.name == "embeddings.token_embedding.weight"), Is.EqualTo(1), "the cut table is still the registered weight");
    }

    /// <summary>A refiner (tiny-sdxl's second encoder, a seeded UNet of the refiner's shape) sharing the base's text_encoder_2.</summary>
    private static (StableDiffusionPipeline Refiner, UNet2DConditionModel UNet) RefinerSharing(StableDiffusionPipeline basePipeline)
    {
        var config = UNet2DConditionConfig.Load(Fixtures.PathOf("tiny-sdxl", "unet", "config.json")) with
        {
            CrossAttentionDim = [32, 32, 32],
            ProjectionClassEmbeddingsInputDim = 64,
        };
        manual_seed(11);
        var unet = new UNet2DConditionModel(config, CPU, ScalarType.Float32);
        var refiner = new StableDiffusionPipeline(null, null, basePipeline.Tokenizer2!, basePipeline.TextEncoder2!, unet, basePipeline.Vae, basePipeline.Scheduler,
            new StableDiffusionXLOptions { RequiresAestheticsScore = true, ForceZerosForEmptyPrompt = false }, leaveComponentsOpen: true);
        return (refiner, unet);
    }

    [Test]
    public async Task ARefinerTakesClipGAloneAndTheBaseSharingItsEncoderIsRefusedUnchanged()
    {
        await using var basePipeline = await FreshSdxl();
        var (refiner, unet) = RefinerSharing(basePipeline);
        using var _ = unet;
        using var __ = refiner;
        int v2 = ((ClipTokenizer)refiner.Tokenizer2!).VocabularySize;
        var plainTokenizer2 = refiner.Tokenizer2!;
        using var clipL = Vectors(2, 16, 1);
        using var clipG = Vectors(2, 32, 2);
        string path = WriteXl("xl.safetensors", clipL, clipG);

        Assert.That(refiner.LoadTextualInversion(path, Token), Is.EqualTo(Token));
        Assert.That(refiner.Tokenizer, Is.SameAs(refiner.Tokenizer2), "a refiner's only tokenizer is the second");
        Assert.That(((ClipTokenizer)refiner.Tokenizer2!).IdsOf(Token), Is.EqualTo(new[] { v2, v2 + 1 }));
        using (var rows = Rows(refiner.TextEncoder2!, v2, 2))
            AssertTensor.MaxAbsClose(rows, clipG, 0, "clip_g's vectors are the refiner's new rows");

        using (var scope = NewDisposeScope())
        {
            var quick = new GenerationOptions { Steps = 2, Seed = 6, Width = 64, Height = 64, GuidanceScale = 5 };
            using var ids = tensor(IdsWith(plainTokenizer2, "a red car", v2, v2 + 1), [1, 77]);
            var encoded = refiner.TextEncoder2!.EncodeHiddenStates(ids, 2, pooled: true);
            var fromText = refiner.Generate($"{Token} a red car", quick);
            var fromIds = refiner.Generate("", quick with { PromptEmbeddings = encoded.HiddenStates, PooledPromptEmbeddings = encoded.Pooled });
            AssertTensor.MaxAbsClose(fromText.Pixels, fromIds.Pixels, 0, "the token on a refiner");
        }

        // The base's text_encoder_2 grew under its tokenizer_2: loading into the base is refused before text_encoder grows.
        var tokenizer1 = basePipeline.Tokenizer;
        int v1 = ((ClipTextModel)basePipeline.TextEncoder).VocabularySize;
        Assert.That(() => basePipeline.LoadTextualInversion(path, "<other>"), Throws.InvalidOperationException
            .With.Message.Contains("text_encoder_2").And.Message.Contains("shared with another pipeline"));
        Assert.That(basePipeline.Tokenizer, Is.SameAs(tokenizer1));
        Assert.That(basePipeline.Tokenizer2, Is.SameAs(plainTokenizer2));
        Assert.That(((ClipTextModel)basePipeline.TextEncoder).VocabularySize, Is.EqualTo(v1), "text_encoder did not grow");
        Assert.That(((ClipTextModel)basePipeline.TextEncoder2!).VocabularySize, Is.EqualTo(v2 + 2), "text_encoder_2 grew by the refiner's load only");
    }

    [Test]
    public async Task TheToolLoadsAnSdxlEmbedding()
    {
        using var clipL = Vectors(2, 16, 3);
        using var clipG = Vectors(2, 32, 4);
        string path = WriteXl("xl-style.safetensors", clipL, clipG);
        string output = Path.Combine(_dir, "ti.png");
        var (code, _, err) = await CliTests.Run("generate", "--model", Fixtures.PathOf("tiny-sdxl"), "--prompt", $"{Token} a red car",
            "--embedding", path + ":" + Token, "--steps", "2", "--guidance", "5", "--seed", "8", "--width", "64", "--height", "64", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);

        await using var pipeline = await FreshSdxl();
        pipeline.LoadTextualInversion(path, Token);
        using var direct = pipeline.Generate($"{Token} a red car", new GenerationOptions { Steps = 2, GuidanceScale = 5, Seed = 8, Width = 64, Height = 64 });
        using var written = Image.Load<Rgb24>(output);
        var a = new byte[64 * 64 * 3];
        var b = new byte[64 * 64 * 3];
        written.CopyPixelDataTo(a);
        direct.Images[0].CopyPixelDataTo(b);
        Assert.That(a, Is.EqualTo(b), "ldm generate --embedding is the pipeline with the embedding loaded");

        string plain = Write("plain.safetensors", new() { ["emb_params"] = Vectors(1, 16, 5) });
        (code, _, err) = await CliTests.Run("generate", "--model", Fixtures.PathOf("tiny-sdxl"), "--prompt", "plain", "--embedding", plain,
            "--steps", "1", "--width", "64", "--height", "64", "--output", Path.Combine(_dir, "x.png"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err, Does.Contain("SD 1.x/2.x embedding").And.Contain("clip_g"));
    }
}
