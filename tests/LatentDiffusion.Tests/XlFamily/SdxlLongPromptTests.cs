using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using static LatentDiffusion.Tests.XlFamily.SdxlConditioning;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>
/// Long prompts and A1111 weighting on SDXL, by construction: each encoder's prompt is cut into the same 75-token chunks
/// as on SD 1.x/2.x, both encoders (and both halves of guidance) padded to one chunk count, the pooled embedding from the
/// first chunk; a prompt that fits one chunk stays exactly the reference's encoding (the parity tests hold that).
/// </summary>
public class SdxlLongPromptTests
{
    private static readonly string LongPrompt = string.Join(", ", Enumerable.Repeat("a lighthouse at dusk over a calm sea", 12));

    [Test]
    public void ALongPromptIsEncodedChunkByChunkThroughBothEncoders()
    {
        var pipeline = TinyModels.Get("tiny-sdxl");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var options = new GenerationOptions { NegativePrompt = "blurry" };
        var (context, added) = Conditioner(pipeline).Encode(LongPrompt, options, 1, guidance: true, 128, 128, imageToImage: false, ScalarType.Float32, CPU);

        var chunks1 = new PromptChunker(pipeline.Tokenizer, 77).Tokenize(LongPrompt, PromptSyntax.A1111, truncate: false);
        var chunks2 = new PromptChunker(pipeline.Tokenizer2!, 77).Tokenize(LongPrompt, PromptSyntax.A1111, truncate: false);
        int count = Math.Max(chunks1.Count, chunks2.Count);
        Assert.That(count, Is.GreaterThanOrEqualTo(2), "the prompt is longer than one chunk");
        Assert.That(context.shape, Is.EqualTo(new long[] { 2, 77 * count, 48 }));

        for (int c = 0; c < count; c++)
        {
            var ids1 = c < chunks1.Count ? chunks1.Ids[c] : new PromptChunker(pipeline.Tokenizer, 77).EmptyChunk;
            var ids2 = c < chunks2.Count ? chunks2.Ids[c] : new PromptChunker(pipeline.Tokenizer2!, 77).EmptyChunk;
            var (h1, _) = EncodeChunk(pipeline.TextEncoder, ids1, pooled: false);
            var (h2, p2) = EncodeChunk(pipeline.TextEncoder2!, ids2, pooled: true);
            var expected = cat([h1, h2], -1);
            AssertTensor.MaxAbsClose(context[1..2, (77 * c)..(77 * (c + 1))], expected, 0, $"positive chunk {c}");
            if (c == 0) AssertTensor.MaxAbsClose(added.TextEmbeds[1..2], p2!, 0, "the pooled embedding is the first chunk's");
        }

        // The short negative prompt is padded with empty-prompt chunks to the same count.
        var empty1 = EncodeChunk(pipeline.TextEncoder, new PromptChunker(pipeline.Tokenizer, 77).EmptyChunk, false).Hidden;
        var empty2 = EncodeChunk(pipeline.TextEncoder2!, new PromptChunker(pipeline.Tokenizer2!, 77).EmptyChunk, false).Hidden;
        AssertTensor.MaxAbsClose(context[0..1, 77..154], cat([empty1, empty2], -1), 0, "the negative prompt's padding chunk");
    }

    [Test]
    public void TruncationGivesOneChunkAndWeightsChangeOnlyTheWeightedPrompt()
    {
        var pipeline = TinyModels.Get("tiny-sdxl");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var conditioner = Conditioner(pipeline);
        var truncated = conditioner.Encode(LongPrompt, new GenerationOptions { TruncateLongPrompts = true }, 1, false, 128, 128, false, ScalarType.Float32, CPU).Context;
        Assert.That(truncated.shape, Is.EqualTo(new long[] { 1, 77, 48 }));

        var plain = conditioner.Encode("a lighthouse at dusk", new GenerationOptions(), 1, false, 128, 128, false, ScalarType.Float32, CPU).Context;
        var unit = conditioner.Encode("(a lighthouse at dusk:1.0)", new GenerationOptions(), 1, false, 128, 128, false, ScalarType.Float32, CPU).Context;
        AssertTensor.MaxAbsClose(unit, plain, 0, "weight 1 everywhere is the plain encoding");
        var weighted = conditioner.Encode("a (lighthouse:1.5) at dusk", new GenerationOptions(), 1, false, 128, 128, false, ScalarType.Float32, CPU).Context;
        Assert.That((weighted - plain).abs().max().item<float>(), Is.GreaterThan(1e-4f), "a weight changes the context");
        var literal = conditioner.Encode("a (lighthouse:1.5) at dusk", new GenerationOptions { PromptSyntax = PromptSyntax.None }, 1, false, 128, 128, false, ScalarType.Float32, CPU).Context;
        Assert.That((literal - weighted).abs().max().item<float>(), Is.GreaterThan(1e-4f), "PromptSyntax.None reads the parentheses as text");
    }

    [Test]
    public async Task ALongPromptGeneratesOnSdxl()
    {
        var pipeline = TinyModels.Get("tiny-sdxl");
        var options = new GenerationOptions { Steps = 2, Width = 64, Height = 64, Seed = 1, GuidanceScale = 5, NegativePrompt = "blurry" };
        using var result = await pipeline.GenerateAsync(LongPrompt, options);
        using var truncated = await pipeline.GenerateAsync(LongPrompt, options with { TruncateLongPrompts = true });
        Assert.That(result.Pixels.isfinite().all().item<bool>());
        Assert.That((result.Pixels - truncated.Pixels).abs().max().item<float>(), Is.GreaterThan(0f), "the words past the first chunk take part");
    }
}
