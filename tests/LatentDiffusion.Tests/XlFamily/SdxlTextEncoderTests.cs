using LatentDiffusion.Formats;
using LatentDiffusion.Text;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>SDXL's two text encoders and tokenizers against the reference (<c>sdxl/text/*</c>).</summary>
public class SdxlTextEncoderTests
{
    private static string[] Prompts() => SdxlFixtures.Case("sdxl_components").GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();

    private static Tensor Ids(ClipTokenizer tokenizer, string[] prompts)
        => tensor(prompts.SelectMany(p => tokenizer.EncodePadded(p, 77).Ids.Select(i => (long)i)).ToArray(), new long[] { prompts.Length, 77 });

    [TestCase("tokenizer", "sdxl/text/input_ids")]
    [TestCase("tokenizer_2", "sdxl/text/input_ids_2")]
    public void BothTokenizersGiveTheReferenceIds(string folder, string key)
    {
        var tokenizer = ClipTokenizer.FromDirectory(Fixtures.PathOf("tiny-sdxl", folder));
        using var expected = SdxlFixtures.Expected(key);
        using var ids = Ids(tokenizer, Prompts());
        Assert.That(ids.data<long>().ToArray(), Is.EqualTo(expected.data<long>().ToArray()), key);
    }

    [Test]
    public void TheSecondTokenizerPadsWithTheExclamationMarkAndKeepsItOutOfTheBpe()
    {
        var first = ClipTokenizer.FromDirectory(Fixtures.PathOf("tiny-sdxl", "tokenizer"));
        var second = ClipTokenizer.FromDirectory(Fixtures.PathOf("tiny-sdxl", "tokenizer_2"));
        Assert.That(second.PadTokenId, Is.EqualTo(0));
        var a = first.Encode("best quality!!");
        var b = second.Encode("best quality!!");
        // The README's example: "... 3027 0 0 49407" through tokenizer_2, "... 3027 748 49407" through tokenizer.
        Assert.That(b[^4..], Is.EqualTo(new[] { 3027, 0, 0, 49407 }));
        Assert.That(a[^3..], Is.EqualTo(new[] { 3027, 748, 49407 }));
    }

    [Test]
    public void TheFirstEncoderGivesThePenultimateAndLastHiddenStates()
    {
        using var model = ClipTextModel.Load(Fixtures.PathOf("tiny-sdxl", "text_encoder"), CPU, ScalarType.Float32);
        Assert.That(model.Config.ProjectionDim, Is.Null);
        Assert.That(model.PooledSize, Is.EqualTo(16));
        using var ids = SdxlFixtures.Expected("sdxl/text/input_ids");
        using var _ = no_grad();
        var penultimate = model.EncodeHiddenStates(ids, 2, pooled: false);
        Assert.That(penultimate.Pooled, Is.Null);
        AssertTensor.RelativeClose(penultimate.HiddenStates, SdxlFixtures.Expected("sdxl/text/te1_penultimate"), 1e-4, "te1 hidden_states[-2]");
        using var last = model.Encode(ids);
        AssertTensor.RelativeClose(last, SdxlFixtures.Expected("sdxl/text/te1_last_hidden_state"), 1e-4, "te1 last_hidden_state");
    }

    [Test]
    public void TheSecondEncoderHasATextProjectionAndGivesTheReferenceTextEmbeds()
    {
        using var model = ClipTextModel.Load(Fixtures.PathOf("tiny-sdxl", "text_encoder_2"), CPU, ScalarType.Float32);
        Assert.That(model.Config.ProjectionDim, Is.EqualTo(24));
        Assert.That(model.Config.EosTokenId, Is.EqualTo(2));
        Assert.That(model.named_parameters().Select(p => p.name), Does.Contain("text_projection.weight"));
        using var ids = SdxlFixtures.Expected("sdxl/text/input_ids_2");
        using var _ = no_grad();
        var output = model.EncodeHiddenStates(ids, 2, pooled: true);
        AssertTensor.RelativeClose(output.HiddenStates, SdxlFixtures.Expected("sdxl/text/te2_penultimate"), 1e-4, "te2 hidden_states[-2]");
        AssertTensor.RelativeClose(output.Pooled!, SdxlFixtures.Expected("sdxl/text/te2_text_embeds"), 1e-4, "te2 text_embeds");
        using var last = model.Encode(ids);
        AssertTensor.RelativeClose(last, SdxlFixtures.Expected("sdxl/text/te2_last_hidden_state"), 1e-4, "te2 last_hidden_state");
    }

    [Test]
    public void TheHiddenStateIndexIsChecked()
    {
        using var model = ClipTextModel.Load(Fixtures.PathOf("tiny-sdxl", "text_encoder_2"), CPU, ScalarType.Float32);
        using var ids = zeros(1, 77, ScalarType.Int64);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.EncodeHiddenStates(ids, 0, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.EncodeHiddenStates(ids, 6, false));
        // hidden_states[-5] of a 4-layer encoder is the embeddings themselves.
        using var _ = no_grad();
        Assert.That(model.EncodeHiddenStates(ids, 5, false).HiddenStates.shape, Is.EqualTo(new long[] { 1, 77, 32 }));
    }

    [Test]
    public void AWithProjectionConfigWithoutItsWeightIsRefusedNamingTheTensor()
    {
        var config = JsonConfig.Load(Fixtures.PathOf("tiny-sdxl", "text_encoder_2", "config.json"));
        using var file = SafetensorsFile.Open(Fixtures.PathOf("tiny-sdxl", "text_encoder_2", "model.safetensors"));
        var weights = file.Entries.Keys.Where(k => !k.Contains("text_projection")).ToDictionary(k => k, k => TensorRef.Direct(file, k));
        var e = Assert.Throws<InvalidDataException>(() => ClipTextModel.Load(weights, config, CPU, ScalarType.Float32));
        Assert.That(e!.Message, Does.Contain("text_projection.weight"));
    }
}
