using LatentDiffusion.Adapters;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using LatentDiffusion.Tests.XlFamily;
using LatentDiffusion.Text;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Adapters;

/// <summary>
/// The kohya SDXL LoRA (SGM UNet names, <c>lora_te1_</c> and <c>lora_te2_</c>) on tiny-sdxl against the reference's
/// <c>sdxl/lora/kohya/&lt;scale&gt;/3</c> images, each from a freshly loaded pipeline as the reference's were.
/// </summary>
public class SdxlLoraParityTests
{
    private static readonly string Kohya = Path.Combine("lora", "tiny-sdxl-lora-kohya.safetensors");

    [TestCase(1.0, "sdxl/lora/kohya/1.0/3")]
    [TestCase(0.5, "sdxl/lora/kohya/0.5/3")]
    public async Task TheSdxlKohyaLoraMatchesTheReference(double scale, string key)
    {
        var c = SdxlPipelineParityTests.Case(key);
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sdxl"));
        var lora = pipeline.Loras.Load(Fixtures.PathOf(Kohya), "kohya");
        // The scale of the call applies to both text encoders' LoRA layers too, as cross_attention_kwargs does in the reference.
        var options = SdxlPipelineParityTests.Options(c) with { Loras = [new LoraWeight("kohya", scale)] };
        string prompt = c.GetProperty("call").GetProperty("prompt").GetString()!;
        using var result = await pipeline.GenerateAsync(prompt, options);
        using var expected = SdxlFixtures.Expected(key + "/image");
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, key);

        // Without the LoRA the same call is far from the LoRA's image: the LoRA really took part (UNet and both encoders).
        using var plain = await pipeline.GenerateAsync(prompt, options with { Loras = [] });
        Assert.That((plain.Pixels - expected).abs().max().item<float>(), Is.GreaterThan(2e-2f), "the LoRA changes the image");
    }

    [Test]
    public async Task TheSdxlLoraReachesBothTextEncoders()
    {
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sdxl"));
        var first = (ClipTextModel)pipeline.TextEncoder;
        var second = (ClipTextModel)pipeline.TextEncoder2!;
        using var ids1 = Ids(pipeline.Tokenizer);
        using var ids2 = Ids(pipeline.Tokenizer2!);
        using var noGrad = TorchSharp.torch.no_grad();
        var before1 = first.EncodeHiddenStates(ids1, 1, pooled: false).HiddenStates;
        var before2 = second.EncodeHiddenStates(ids2, 1, pooled: true);
        pipeline.Loras.Load(Fixtures.PathOf(Kohya), "kohya");
        using (pipeline.Loras.Use([new LoraWeight("kohya", 1.0)]))
        {
            var after1 = first.EncodeHiddenStates(ids1, 1, pooled: false).HiddenStates;
            var after2 = second.EncodeHiddenStates(ids2, 1, pooled: true);
            Assert.That((after1 - before1).abs().max().item<float>(), Is.GreaterThan(1e-4f), "text_encoder (lora_te1_)");
            Assert.That((after2.HiddenStates - before2.HiddenStates).abs().max().item<float>(), Is.GreaterThan(1e-4f), "text_encoder_2 (lora_te2_)");
        }
        using (pipeline.Loras.Use([]))
            Assert.That((second.EncodeHiddenStates(ids2, 1, pooled: true).HiddenStates - before2.HiddenStates).abs().max().item<float>(), Is.EqualTo(0f), "without the LoRA chosen, text_encoder_2 is unchanged");
    }

    private static TorchSharp.torch.Tensor Ids(LatentDiffusion.Abstractions.ITokenizer tokenizer)
    {
        var ids = tokenizer.EncodePadded("a lighthouse at dusk", 77).Ids;
        return TorchSharp.torch.tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]);
    }
}
