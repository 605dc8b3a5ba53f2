using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.UNet;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>SDXL's UNet (text_time added conditioning, per-block transformer depths and heads) against the reference.</summary>
public class SdxlUNetTests
{
    private static UNet2DConditionModel LoadTiny() => UNet2DConditionModel.Load(Fixtures.PathOf("tiny-sdxl", "unet"), CPU, ScalarType.Float32);

    [TestCase(1)]
    [TestCase(500)]
    [TestCase(999)]
    public void NoisePredictionMatchesTheReference(int t)
    {
        using var unet = LoadTiny();
        using var sample = SdxlFixtures.Expected("sdxl/unet/sample");
        using var context = SdxlFixtures.Expected("sdxl/unet/encoder_hidden_states");
        using var textEmbeds = SdxlFixtures.Expected("sdxl/unet/text_embeds");
        using var timeIds = SdxlFixtures.Expected("sdxl/unet/time_ids");
        using var expected = SdxlFixtures.Expected($"sdxl/unet/noise_pred_t{t}");
        using var timestep = tensor((long)t);
        using var actual = unet.Forward(sample, timestep, context, new AddedConditions(textEmbeds, timeIds), null, null, CancellationToken.None);
        AssertTensor.RelativeClose(actual, expected, 1e-4, $"sdxl unet t={t}");
    }

    [Test]
    public void TheSdxlConfigIsReadWithItsAddedConditioningAndPerBlockDepths()
    {
        var config = UNet2DConditionConfig.Load(Fixtures.PathOf("tiny-sdxl", "unet", "config.json"));
        Assert.That(config.AdditionEmbedType, Is.EqualTo("text_time"));
        Assert.That(config.AdditionTimeEmbedDim, Is.EqualTo(8));
        Assert.That(config.ProjectionClassEmbeddingsInputDim, Is.EqualTo(72));
        Assert.That(config.TransformerLayersPerBlock, Is.EqualTo(new[] { 1, 1, 2 }));
        using var unet = new UNet2DConditionModel(config, new Device(TorchSharp.DeviceType.META), ScalarType.Float32);
        var names = unet.named_parameters().Select(p => p.name).ToHashSet();
        // The mid block takes the last entry (2), the up blocks the list reversed (up_blocks.0 mirrors down_blocks.2).
        Assert.That(names, Does.Contain("mid_block.attentions.0.transformer_blocks.1.attn2.to_k.weight"));
        Assert.That(names, Does.Contain("up_blocks.0.attentions.2.transformer_blocks.1.attn1.to_q.weight"));
        Assert.That(names, Does.Not.Contain("up_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight"));
        Assert.That(names, Does.Contain("add_embedding.linear_1.weight"));
        Assert.That(names, Does.Contain("add_embedding.linear_2.bias"));
        Assert.That(((IUNet)unet).AddedConditionsWidth, Is.EqualTo(72));
        // The config round-trips through ToJson.
        var again = UNet2DConditionConfig.FromJson(JsonConfig.Parse(config.ToJson().ToJsonString(), "round trip"));
        Assert.That(again.AdditionEmbedType, Is.EqualTo("text_time"));
        Assert.That(again.ProjectionClassEmbeddingsInputDim, Is.EqualTo(72));
    }

    [Test]
    public void MissingOrMisshapedAddedConditionsAreRefusedClearly()
    {
        using var unet = LoadTiny();
        using var sample = zeros(1, 4, 8, 8);
        using var context = zeros(1, 77, 48);
        using var t = tensor(10L);
        var e = Assert.Throws<ArgumentException>(() => unet.Forward(sample, t, context));
        Assert.That(e!.Message, Does.Contain("text_time"));
        // A refiner-style 5 time ids against a base UNet that expects 6: 24 + 5 x 8 = 64, not 72.
        using var pooled = zeros(1, 24);
        using var fiveIds = zeros(1, 5);
        e = Assert.Throws<ArgumentException>(() => unet.Forward(sample, t, context, new AddedConditions(pooled, fiveIds), null, null, CancellationToken.None));
        Assert.That(e!.Message, Does.Contain("72").And.Contain("64"));
        using var wrongBatch = zeros(2, 6);
        e = Assert.Throws<ArgumentException>(() => unet.Forward(sample, t, context, new AddedConditions(pooled, wrongBatch), null, null, CancellationToken.None));
        Assert.That(e!.Message, Does.Contain("time ids"));
    }

    [Test]
    public void AnSd15UNetRefusesAddedConditions()
    {
        using var unet = UNet2DConditionModel.Load(Fixtures.PathOf("tiny-sd15", "unet"), CPU, ScalarType.Float32);
        using var sample = zeros(1, 4, 8, 8);
        using var context = zeros(1, 77, unet.CrossAttentionDim);
        using var t = tensor(10L);
        using var pooled = zeros(1, 24);
        using var ids = zeros(1, 6);
        Assert.Throws<ArgumentException>(() => unet.Forward(sample, t, context, new AddedConditions(pooled, ids), null, null, CancellationToken.None));
    }

    [TestCase("\"addition_embed_type\": \"text_time\", \"addition_time_embed_dim\": null, \"projection_class_embeddings_input_dim\": 72", "addition_time_embed_dim")]
    [TestCase("\"addition_embed_type\": \"text_time\", \"addition_time_embed_dim\": 8", "projection_class_embeddings_input_dim")]
    [TestCase("\"addition_embed_type\": \"text\"", "addition_embed_type")]
    [TestCase("\"addition_embed_type\": \"text_time\", \"addition_time_embed_dim\": 80, \"projection_class_embeddings_input_dim\": 72", "must exceed")]
    public void BadSdxlUNetConfigsAreRefusedNamingTheKey(string keys, string named)
    {
        string json = "{\"block_out_channels\": [32, 64], \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\"], " +
                      "\"up_block_types\": [\"CrossAttnUpBlock2D\", \"UpBlock2D\"], \"cross_attention_dim\": 48, \"attention_head_dim\": [1, 2], " + keys + "}";
        var e = Assert.Catch(() => UNet2DConditionConfig.FromJson(JsonConfig.Parse(json, "bad.json")));
        Assert.That(e, Is.InstanceOf<InvalidDataException>().Or.InstanceOf<NotSupportedException>());
        Assert.That(e!.Message, Does.Contain(named));
    }
}
