using LatentDiffusion.Abstractions;
using LatentDiffusion.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// Long prompts and attention weights, by construction (the reference truncates and has no weights): a prompt of
/// several chunks is its chunks encoded one by one, a plain prompt is today's encoding exactly, weights of 1 change
/// nothing, other weights keep the chunk's mean, BREAK starts a chunk. Runs on the generated model (no fixtures).
/// </summary>
public class PromptChunkingTests
{
    private static StableDiffusionPipeline Model => GeneratedModel.Pipeline;
    private static ITokenizer Tokenizer => Model.Tokenizer;
    private static ITextEncoder TextEncoder => Model.TextEncoder;
    private static PromptChunker Chunker => new(Tokenizer, TextEncoder.MaxPositions);

    private static readonly GenerationOptions Quick = new() { Steps = 2, Seed = 5, Width = 64, Height = 64 };

    /// <summary>A prompt of exactly <paramref name="tokens"/> tokens (checked).</summary>
    private static string PromptOf(int tokens)
    {
        string[] words = ["red", "circle", "blue", "square", "green", "triangle", "small", "large"];
        string prompt = string.Join(' ', Enumerable.Range(0, tokens).Select(i => words[i % words.Length]));
        Assert.That(Tokenizer.Encode(prompt), Has.Length.EqualTo(tokens + 2), "each word is one token of the generated model's vocabulary");
        return prompt;
    }

    private static Tensor EncodeIds(int[] ids, int clipSkip = 0)
    {
        using var t = tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length], ScalarType.Int64);
        return TextEncoder.Encode(t, clipSkip);
    }

    private static Tensor Today(string prompt, int clipSkip = 0) => EncodeIds(Tokenizer.EncodePadded(prompt, TextEncoder.MaxPositions).Ids, clipSkip);

    private static Tensor Encode(PromptChunks chunks, int clipSkip = 0) => chunks.Encode(ids => TextEncoder.Encode(ids, clipSkip), TextEncoder.Device);

    private static void AssertEqual(Tensor actual, Tensor expected, string what)
    {
        Assert.That(actual.shape, Is.EqualTo(expected.shape), what + ": shape");
        Assert.That(actual.eq(expected).all().item<bool>(), Is.True, $"{what}: not identical (max abs difference {(actual - expected).abs().max().item<float>():E2})");
    }

    [TestCase(PromptSyntax.A1111)]
    [TestCase(PromptSyntax.None)]
    public void APlainPromptThatFitsIsTodaysEncodingExactly(PromptSyntax syntax)
    {
        foreach (string prompt in new[] { "a red circle", "", PromptOf(75) })
        {
            var chunks = Chunker.Tokenize(prompt, syntax, truncate: false);
            Assert.That(chunks.Count, Is.EqualTo(1), prompt);
            Assert.That(chunks.Ids[0], Is.EqualTo(Tokenizer.EncodePadded(prompt, TextEncoder.MaxPositions).Ids), prompt);
            Assert.That(chunks.Weights, Is.Null);
            using var actual = Encode(chunks, 1);
            using var expected = Today(prompt, 1);
            AssertEqual(actual, expected, $"'{prompt}'");
        }
    }

    [Test]
    public void APlainPromptGeneratesTodaysImage()
    {
        // Today's pipeline encoded the padded ids of the prompt and of "" (negative) and nothing else.
        using var positive = Today("a red circle");
        using var negative = Today("");
        using var fromText = Model.Generate("a red circle", Quick);
        using var fromEmbeddings = Model.Generate("", Quick with { PromptEmbeddings = positive, NegativePromptEmbeddings = negative });
        AssertTensor.MaxAbsClose(fromText.Pixels, fromEmbeddings.Pixels, 0, "plain prompt");
    }

    [Test]
    public void ALongPromptIsItsChunksEncodedSeparatelyAndConcatenated()
    {
        string prompt = PromptOf(100);
        int[] content = Tokenizer.Encode(prompt)[1..^1];
        var chunks = Chunker.Tokenize(prompt, PromptSyntax.A1111, truncate: false);
        Assert.That(chunks.Count, Is.EqualTo(2));
        var empty = Tokenizer.EncodePadded("", 77).Ids;
        int bos = empty[0], eos = empty[1], pad = empty[2];
        Assert.That(chunks.Ids[0], Is.EqualTo(new[] { bos }.Concat(content[..75]).Append(eos)));
        Assert.That(chunks.Ids[1], Is.EqualTo(new[] { bos }.Concat(content[75..]).Append(eos).Concat(Enumerable.Repeat(pad, 50))));
        Assert.That(chunks.DroppedIds, Is.Empty);

        using var actual = Encode(chunks);
        using var first = EncodeIds(chunks.Ids[0]);
        using var second = EncodeIds(chunks.Ids[1]);
        using var expected = cat([first, second], 1);
        Assert.That(actual.shape, Is.EqualTo(new long[] { 1, 154, TextEncoder.HiddenSize }));
        AssertEqual(actual, expected, "two chunks");
    }

    [Test]
    public void SeventySixTokensTakeTwoChunks()
    {
        Assert.That(Chunker.Tokenize(PromptOf(75), PromptSyntax.A1111, false).Count, Is.EqualTo(1));
        var two = Chunker.Tokenize(PromptOf(76), PromptSyntax.A1111, false);
        Assert.That(two.Count, Is.EqualTo(2));
        Assert.That(two.Ids[1][1], Is.EqualTo(Tokenizer.Encode(PromptOf(76))[76]), "the 76th token opens the second chunk");
        Assert.That(Chunker.Tokenize(PromptOf(151), PromptSyntax.None, false).Count, Is.EqualTo(3));
    }

    [Test]
    public void TruncationKeepsTheReferencesFirstChunkAndReportsTheRest()
    {
        string prompt = PromptOf(100);
        var chunks = Chunker.Tokenize(prompt, PromptSyntax.A1111, truncate: true);
        var reference = Tokenizer.EncodePadded(prompt, 77);
        Assert.That(chunks.Count, Is.EqualTo(1));
        Assert.That(chunks.Ids[0], Is.EqualTo(reference.Ids));
        Assert.That(chunks.DroppedIds, Is.EqualTo(reference.DroppedIds));
        var weighted = Chunker.Tokenize("(" + prompt + ")", PromptSyntax.A1111, truncate: true);
        Assert.That(weighted.Count, Is.EqualTo(1));
        Assert.That(weighted.DroppedIds, Has.Length.EqualTo(25));
    }

    [Test]
    public void WeightOneEverywhereIsThePlainEncoding()
    {
        var chunks = Chunker.Tokenize("(a red circle:1.0) on (a blue square:1)", PromptSyntax.A1111, false);
        Assert.That(chunks.Weights, Is.Null, "every weight is exactly 1");
        using var actual = Encode(chunks);
        using var expected = Today("a red circle on a blue square");
        AssertEqual(actual, expected, "weights of 1");
    }

    [Test]
    public void AWeightScalesItsTokensAndTheChunksMeanIsRestored()
    {
        var chunks = Chunker.Tokenize("a (red:1.5) circle", PromptSyntax.A1111, false);
        var ids = Tokenizer.EncodePadded("a red circle", 77).Ids;
        Assert.That(chunks.Ids[0], Is.EqualTo(ids), "the brackets are not tokens");
        Assert.That(chunks.Weights![0][..5], Is.EqualTo(new[] { 1.0, 1.0, 1.5, 1.0, 1.0 }));

        // The generated model's final layer norm has no shift, so its chunk means are rounding noise (see the next test);
        // shifted by 0.25, the mean is a real one, as a trained text encoder's is.
        using var plain = EncodeIds(ids) + 0.25f;
        using var weighted = chunks.Encode(t => TextEncoder.Encode(t, 0) + 0.25f, TextEncoder.Device);
        double before = plain.mean().item<float>(), after = weighted.mean().item<float>();
        Assert.That(after, Is.EqualTo(before).Within(1e-6 * Math.Max(1, Math.Abs(before))), "the chunk's mean is restored");
        using var multipliers = ones(1, 77, 1);
        multipliers[0, 2, 0] = tensor(1.5f);
        using var scaled = plain * multipliers;
        using var expected = scaled * (plain.mean() / scaled.mean());
        AssertTensor.RelativeClose(weighted, expected, 1e-6, "z × w × mean(z) / mean(z × w)");
        using var ratio = weighted[0, 2] / plain[0, 2];
        Assert.That(ratio.mean().item<float>(), Is.GreaterThan(1.2f), "the weighted token grows");
    }

    [Test]
    public void AChunkWhoseMeanIsRoundingNoiseIsWeightedWithoutTheRescaling()
    {
        // The generated model's chunk means are about 1e-8 of its values: A1111's mean(z) / mean(z × w) would be a ratio
        // of rounding errors (0 with one CPU's kernels, which zeroes the prompt; NaN when both are 0). It is left out.
        var chunks = Chunker.Tokenize("a (red:1.5) circle", PromptSyntax.A1111, false);
        using var plain = EncodeIds(chunks.Ids[0]);
        Assert.That(Math.Abs(plain.mean().item<float>()), Is.LessThan(PromptChunks.NegligibleMean * plain.abs().mean().item<float>()), "this model's mean is negligible");
        using var weighted = Encode(chunks);
        using var multipliers = ones(1, 77, 1);
        multipliers[0, 2, 0] = tensor(1.5f);
        using var expected = plain * multipliers;
        AssertEqual(weighted, expected, "z × w");

        // Exactly zero means (what another CPU's rounding gives) are no different, and nothing is NaN.
        using var centred = chunks.Encode(t => { using var z = TextEncoder.Encode(t, 0); return z - z.mean(); }, TextEncoder.Device);
        Assert.That(isfinite(centred).all().item<bool>(), Is.True);
        Assert.That(centred.abs().mean().item<float>(), Is.GreaterThan(0.5f * plain.abs().mean().item<float>()), "not zeroed");
    }

    [Test]
    public void BreakStartsANewChunk()
    {
        var chunks = Chunker.Tokenize("a red circle BREAK a blue square", PromptSyntax.A1111, false);
        Assert.That(chunks.Count, Is.EqualTo(2));
        Assert.That(chunks.Ids[0], Is.EqualTo(Tokenizer.EncodePadded("a red circle", 77).Ids));
        Assert.That(chunks.Ids[1], Is.EqualTo(Tokenizer.EncodePadded("a blue square", 77).Ids));
        using var actual = Encode(chunks);
        using var first = Today("a red circle");
        using var second = Today("a blue square");
        using var expected = cat([first, second], 1);
        AssertEqual(actual, expected, "BREAK");
        Assert.That(Chunker.Tokenize("a red circle BREAK a blue square", PromptSyntax.None, false).Ids[0],
            Is.EqualTo(Tokenizer.EncodePadded("a red circle BREAK a blue square", 77).Ids), "without syntax BREAK is a word");
    }

    [Test]
    public void WithoutSyntaxParenthesesAreTokens()
    {
        string prompt = "a (red) circle";
        Assert.That(Chunker.Tokenize(prompt, PromptSyntax.None, false).Ids[0], Is.EqualTo(Tokenizer.EncodePadded(prompt, 77).Ids));
        var a1111 = Chunker.Tokenize(prompt, PromptSyntax.A1111, false);
        Assert.That(a1111.Ids[0], Is.Not.EqualTo(Tokenizer.EncodePadded(prompt, 77).Ids));
        Assert.That(a1111.Weights, Is.Not.Null);
    }

    [Test]
    public void TheNegativePromptIsPaddedToThePromptsChunksWithTheEmptyPrompt()
    {
        var encoder = new PromptEncoder(Tokenizer, TextEncoder, NullLogger.Instance);
        string prompt = PromptOf(100);
        var (positive, negative) = encoder.Encode(prompt, new GenerationOptions { NegativePrompt = "blue square" }, guidance: true);
        using (positive)
        using (negative)
        {
            Assert.That(positive.shape, Is.EqualTo(new long[] { 1, 154, TextEncoder.HiddenSize }));
            Assert.That(negative!.shape, Is.EqualTo(positive.shape));
            using var first = Today("blue square");
            using var empty = Today("");
            using var expected = cat([first, empty], 1);
            AssertEqual(negative, expected, "negative prompt padded with the empty prompt");
        }
        // And the other way round: a long negative prompt pads the prompt.
        var (shortPositive, longNegative) = encoder.Encode("red circle", new GenerationOptions { NegativePrompt = prompt }, guidance: true);
        using (shortPositive)
        using (longNegative)
            Assert.That(shortPositive.shape, Is.EqualTo(longNegative!.shape));
    }

    [Test]
    public void ALongPromptGeneratesWithItsChunkedEmbeddings()
    {
        string prompt = PromptOf(100) + " (circle:1.4)";
        var encoder = new PromptEncoder(Tokenizer, TextEncoder, NullLogger.Instance);
        var (positive, negative) = encoder.Encode(prompt, Quick, guidance: true);
        using (positive)
        using (negative)
        {
            using var fromText = Model.Generate(prompt, Quick);
            using var fromEmbeddings = Model.Generate("", Quick with { PromptEmbeddings = positive, NegativePromptEmbeddings = negative });
            AssertTensor.MaxAbsClose(fromText.Pixels, fromEmbeddings.Pixels, 0, "long weighted prompt");
            using var truncated = Model.Generate(prompt, Quick with { TruncateLongPrompts = true });
            Assert.That((truncated.Pixels - fromText.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-4f), "the tail of the prompt reaches the image");
        }
    }
}
