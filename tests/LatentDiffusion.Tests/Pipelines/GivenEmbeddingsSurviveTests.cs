using LatentDiffusion.Pipelines;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// The text encoding runs in a scope of its own, so its activations are freed before the UNet runs; the caller's own
/// prompt embeddings must come out of it untouched, with and without guidance (without guidance they are the context).
/// </summary>
public class GivenEmbeddingsSurviveTests
{
    [TestCase(1.0)]
    [TestCase(7.5)]
    public void PromptEmbeddingsGivenByTheCallerStayUsable(double guidance)
    {
        var pipeline = GeneratedModel.Pipeline;
        using var embeds = randn(new long[] { 1, 77, pipeline.TextEncoder.HiddenSize }, generator: new Generator(3));
        var options = new GenerationOptions { Steps = 1, Seed = 1, GuidanceScale = guidance, PromptEmbeddings = embeds, NegativePromptEmbeddings = guidance > 1 ? embeds : null };
        using (var first = pipeline.Generate("", options)) { }
        Assert.That(embeds.IsInvalid, Is.False, "still alive after a generation");
        using var again = pipeline.Generate("", options);
        Assert.That(again.Images, Has.Count.EqualTo(1));
        Assert.That(embeds.shape, Is.EqualTo(new long[] { 1, 77, pipeline.TextEncoder.HiddenSize }));
    }

    [Test]
    public void SdxlPromptAndPooledEmbeddingsGivenByTheCallerStayUsable()
    {
        var pipeline = TinyModels.Get("tiny-sdxl");
        using var embeds = randn(new long[] { 1, 77, pipeline.UNet.CrossAttentionDim }, generator: new Generator(3));
        using var pooled = randn(new long[] { 1, pipeline.TextEncoder2!.PooledSize }, generator: new Generator(4));
        var options = new GenerationOptions
        {
            Steps = 1, Seed = 1, Width = 64, Height = 64, GuidanceScale = 5,
            PromptEmbeddings = embeds, PooledPromptEmbeddings = pooled, NegativePromptEmbeddings = embeds, NegativePooledPromptEmbeddings = pooled,
        };
        using (var first = pipeline.Generate("", options)) { }
        Assert.That(embeds.IsInvalid || pooled.IsInvalid, Is.False, "still alive after a generation");
        using var again = pipeline.Generate("", options);
        Assert.That(again.Images, Has.Count.EqualTo(1));
    }
}
