using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using static LatentDiffusion.Tests.XlFamily.SdxlConditioning;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>
/// Ready negative embeddings of several chunks count for the prompt's padding on SDXL as they do on SD 1.x/2.x
/// (<see cref="PromptEncoder"/>): a short prompt is padded with empty-prompt chunks to their length instead of failing
/// on a shape mismatch.
/// </summary>
public class SdxlReadyNegativeChunksTests
{
    [Test]
    public void AShortPromptIsPaddedToTheReadyNegativeEmbeddingsChunks()
    {
        var pipeline = TinyModels.Get("tiny-sdxl");
        var conditioner = Conditioner(pipeline);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var negative = full(1, 2 * 77, conditioner.ContextWidth, 0.25f);
        var negativePooled = full(1, conditioner.PooledWidth, 0.5f);
        var options = new GenerationOptions { NegativePromptEmbeddings = negative, NegativePooledPromptEmbeddings = negativePooled };

        var (context, added) = conditioner.Encode("a boat", options, 1, guidance: true, 128, 128, imageToImage: false, ScalarType.Float32, CPU);

        Assert.That(context.shape, Is.EqualTo(new long[] { 2, 2 * 77, conditioner.ContextWidth }));
        AssertTensor.MaxAbsClose(context[0..1], negative, 0, "the ready negative embeddings, as given");
        AssertTensor.MaxAbsClose(added.TextEmbeds[0..1], negativePooled, 0, "the ready negative pooled embeddings, as given");
        var ids1 = new PromptChunker(pipeline.Tokenizer, 77).Tokenize("a boat", PromptSyntax.A1111, truncate: false).Ids[0];
        var ids2 = new PromptChunker(pipeline.Tokenizer2!, 77).Tokenize("a boat", PromptSyntax.A1111, truncate: false).Ids[0];
        var (prompt2, pooled) = EncodeChunk(pipeline.TextEncoder2!, ids2, pooled: true);
        AssertTensor.MaxAbsClose(context[1..2, 0..77], cat([EncodeChunk(pipeline.TextEncoder, ids1, false).Hidden, prompt2], -1), 0, "the prompt's chunk");
        var empty1 = EncodeChunk(pipeline.TextEncoder, new PromptChunker(pipeline.Tokenizer, 77).EmptyChunk, false).Hidden;
        var empty2 = EncodeChunk(pipeline.TextEncoder2!, new PromptChunker(pipeline.Tokenizer2!, 77).EmptyChunk, false).Hidden;
        AssertTensor.MaxAbsClose(context[1..2, 77..154], cat([empty1, empty2], -1), 0, "the prompt's padding chunk");
        AssertTensor.MaxAbsClose(added.TextEmbeds[1..2], pooled!, 0, "the pooled embedding is the prompt's");
    }
}
