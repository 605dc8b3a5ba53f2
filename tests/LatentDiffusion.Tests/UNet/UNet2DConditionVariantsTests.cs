using System.Text.Json.Nodes;
using LatentDiffusion.Formats;
using LatentDiffusion.UNet;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.UNet;

/// <summary>Architecture options the fixtures do not use, built with fresh weights: they must build, name their weights as the reference does, and run.</summary>
[TestFixture]
public sealed class UNet2DConditionVariantsTests
{
    private static UNet2DConditionConfig Config(params (string Key, string Json)[] patches)
    {
        var json = JsonNode.Parse(TinyConfigs.Sd15UNetJson)!.AsObject();
        foreach (var (key, value) in patches) json[key] = JsonNode.Parse(value);
        return UNet2DConditionConfig.FromJson(JsonConfig.Parse(json.ToJsonString(), "patched tiny-sd15 config"));
    }

    private static void RunsWithTheRightShape(UNet2DConditionModel unet, Tensor? timestepCond = null, long h = 16, long w = 16)
    {
        using var scope = NewDisposeScope();
        var sample = randn(2, 4, h, w, generator: new Generator(11));
        var context = randn(2, 5, unet.CrossAttentionDim, generator: new Generator(12));
        var output = unet.Forward(sample, tensor(new long[] { 10, 900 }), context, timestepCond);
        Assert.That(output.shape, Is.EqualTo(new long[] { 2, unet.OutChannels, h, w }));
        Assert.That(output.isfinite().all().item<bool>(), Is.True);
    }

    private static HashSet<string> Names(UNet2DConditionModel unet) => unet.named_parameters().Select(p => p.name).ToHashSet();

    [Test]
    public void OnlyCrossAttentionMakesTheFirstAttentionAttendToTheText()
    {
        using var unet = new UNet2DConditionModel(Config(("only_cross_attention", "true"), ("cross_attention_dim", "24")), CPU, ScalarType.Float32);
        var names = unet.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
        Assert.That(names["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight"], Is.EqualTo(new long[] { 32, 24 }));
        // The reference's middle block has no only-cross-attention option.
        Assert.That(names["mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight"], Is.EqualTo(new long[] { 64, 64 }));
        RunsWithTheRightShape(unet);
    }

    [Test]
    public void PerBlockListsAndDeeperTransformers()
    {
        using var unet = new UNet2DConditionModel(Config(("layers_per_block", "[1, 2, 1, 2]"), ("transformer_layers_per_block", "[1, 2, 1, 3]"),
            ("attention_head_dim", "[1, 2, 4, 8]"), ("only_cross_attention", "[false, true, false, false]")), CPU, ScalarType.Float32);
        var names = Names(unet);
        Assert.That(names, Does.Contain("down_blocks.1.attentions.1.transformer_blocks.1.norm3.weight"));
        Assert.That(names, Does.Not.Contain("down_blocks.0.resnets.1.conv1.weight"));
        Assert.That(names, Does.Contain("up_blocks.3.resnets.1.conv1.weight"));
        Assert.That(names, Does.Not.Contain("up_blocks.3.resnets.2.conv1.weight"));
        Assert.That(names, Does.Contain("up_blocks.2.attentions.2.transformer_blocks.1.ff.net.2.weight"));
        Assert.That(names, Does.Contain("mid_block.attentions.0.transformer_blocks.2.attn2.to_v.weight"));
        RunsWithTheRightShape(unet);
    }

    [Test]
    public void NoMiddleBlock()
    {
        using var unet = new UNet2DConditionModel(Config(("mid_block_type", "null")), CPU, ScalarType.Float32);
        Assert.That(Names(unet).Where(n => n.StartsWith("mid_block.")), Is.Empty);
        RunsWithTheRightShape(unet, h: 12, w: 20);
    }

    [Test]
    public void TimestepConditionProjection()
    {
        using var unet = new UNet2DConditionModel(Config(("time_cond_proj_dim", "16")), CPU, ScalarType.Float32);
        var shapes = unet.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
        Assert.That(shapes["time_embedding.cond_proj.weight"], Is.EqualTo(new long[] { 32, 16 }));
        using var cond = randn(2, 16, generator: new Generator(13));
        RunsWithTheRightShape(unet, cond);
        RunsWithTheRightShape(unet);
    }

    [Test]
    public void TimeEmbeddingOptionsKernelsPaddingAndActivation()
    {
        using var unet = new UNet2DConditionModel(Config(("time_embedding_dim", "48"), ("time_embedding_act_fn", "\"silu\""), ("timestep_post_act", "\"mish\""),
            ("conv_in_kernel", "1"), ("conv_out_kernel", "5"), ("downsample_padding", "0"), ("act_fn", "\"gelu\""), ("center_input_sample", "true"),
            ("mid_block_scale_factor", "1.414"), ("flip_sin_to_cos", "false"), ("freq_shift", "1")), CPU, ScalarType.Float32);
        var shapes = unet.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
        Assert.That(shapes["time_embedding.linear_2.weight"], Is.EqualTo(new long[] { 48, 48 }));
        Assert.That(shapes["down_blocks.0.resnets.0.time_emb_proj.weight"], Is.EqualTo(new long[] { 32, 48 }));
        Assert.That(shapes["conv_in.weight"], Is.EqualTo(new long[] { 32, 4, 1, 1 }));
        Assert.That(shapes["conv_out.weight"], Is.EqualTo(new long[] { 4, 32, 5, 5 }));
        RunsWithTheRightShape(unet, h: 10, w: 14);
    }

    [Test]
    public void ATimestepConditionWithoutAProjectionIsRefused()
    {
        using var unet = new UNet2DConditionModel(Config(), CPU, ScalarType.Float32);
        using var cond = zeros(2, 16);
        Assert.Throws<ArgumentException>(() => RunsWithTheRightShape(unet, cond));
    }

    [Test]
    public void MismatchedListLengthsAreRefused()
    {
        Assert.Throws<InvalidDataException>(() => Config(("block_out_channels", "[32, 32, 64]")));
        Assert.Throws<InvalidDataException>(() => Config(("layers_per_block", "[2, 2]")));
        Assert.Throws<InvalidDataException>(() => Config(("up_block_types", "[\"UpBlock2D\", \"CrossAttnUpBlock2D\"]")));
    }

    [Test]
    public void LoadsAnExplicitWeightsFileAndReportsAMissingOne()
    {
        var dir = Path.Combine(Pipelines.GeneratedModel.Folder, "unet");
        using (var unet = UNet2DConditionModel.Load(dir, CPU, ScalarType.Float32, "diffusion_pytorch_model.safetensors"))
            Assert.That(unet.SampleSize, Is.EqualTo(8));
        var e = Assert.Throws<FileNotFoundException>(() => UNet2DConditionModel.Load(dir, CPU, ScalarType.Float32, "no-such.safetensors"));
        Assert.That(e!.Message, Does.Contain("no-such.safetensors"));
    }
}
