using LatentDiffusion.Formats;
using LatentDiffusion.Vae;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Vae;

/// <summary>Wrong weights, wrong inputs and unsupported configs fail loudly, naming what is wrong.</summary>
public sealed class AutoencoderKLBadInputTests
{
    [Test]
    public void MissingTensorIsNamed()
    {
        using var copy = VaeFolderCopy.Of(VaeFolderCopy.Generated, drop: ["decoder.conv_out.bias"]);
        var e = Assert.Throws<InvalidDataException>(() => AutoencoderKL.Load(copy.Dir, CPU, ScalarType.Float32));
        Assert.That(e!.Message, Does.Contain("decoder.conv_out.bias").And.Contain("missing"));
    }

    [Test]
    public void MissingLegacyAttentionTensorIsNamedByItsCurrentName()
    {
        using var copy = VaeFolderCopy.Of("tiny-sd15", drop: ["encoder.mid_block.attentions.0.proj_attn.weight"]);
        var e = Assert.Throws<InvalidDataException>(() => AutoencoderKL.Load(copy.Dir, CPU, ScalarType.Float32));
        Assert.That(e!.Message, Does.Contain("encoder.mid_block.attentions.0.to_out.0.weight").And.Contain("missing"));
    }

    [Test]
    public void WrongShapedTensorIsNamedWithBothShapes()
    {
        using var copy = VaeFolderCopy.Of(VaeFolderCopy.Generated, reshape: new Dictionary<string, long[]> { ["quant_conv.weight"] = [8, 8] });
        var e = Assert.Throws<InvalidDataException>(() => AutoencoderKL.Load(copy.Dir, CPU, ScalarType.Float32));
        Assert.That(e!.Message, Does.Contain("quant_conv.weight").And.Contain("[8, 8]").And.Contain("[8, 8, 1, 1]"));
    }

    [Test]
    public void WrongShapedTensorThroughTheWeightMapOverload()
    {
        using var file = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd2v", "vae", AutoencoderKL.DefaultWeightsFile));
        var weights = new Dictionary<string, TensorRef>(AutoencoderKL.WeightMap(file))
        {
            ["encoder.conv_in.bias"] = TensorRef.Direct(file, "quant_conv.bias"),
        };
        var config = AutoencoderKLConfig.Load(Fixtures.PathOf("tiny-sd2v", "vae", "config.json"));
        var e = Assert.Throws<InvalidDataException>(() => AutoencoderKL.Load(config, weights, CPU, ScalarType.Float32));
        Assert.That(e!.Message, Does.Contain("encoder.conv_in.bias").And.Contain("[8]").And.Contain("[32]"));
    }

    [Test]
    public void ConfigThatDoesNotMatchTheWeightsIsRefused()
    {
        using var copy = VaeFolderCopy.Of(VaeFolderCopy.Generated, editConfig: c => c["use_quant_conv"] = false);
        var e = Assert.Throws<InvalidDataException>(() => AutoencoderKL.Load(copy.Dir, CPU, ScalarType.Float32));
        Assert.That(e!.Message, Does.Contain("quant_conv.weight").And.Contain("unexpected"));
    }

    [TestCase("shift_factor", "0.1159")]
    [TestCase("latents_mean", "[0.1, 0.2, 0.3, 0.4]")]
    [TestCase("latents_std", "[1.0, 1.0, 1.0, 1.0]")]
    [TestCase("act_fn", "\"gelu\"")]
    [TestCase("down_block_types", "[\"DownEncoderBlock2D\", \"AttnDownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\"]")]
    [TestCase("up_block_types", "[\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"AttnUpDecoderBlock2D\", \"UpDecoderBlock2D\"]")]
    [TestCase("_class_name", "\"AsymmetricAutoencoderKL\"")]
    public void UnsupportedConfigValueIsRefused(string key, string json)
    {
        using var copy = VaeFolderCopy.Of(VaeFolderCopy.Generated, editConfig: c => c[key] = System.Text.Json.Nodes.JsonNode.Parse(json));
        var e = Assert.Throws<NotSupportedException>(() => AutoencoderKL.Load(copy.Dir, CPU, ScalarType.Float32));
        Assert.That(e!.Message, Does.Contain(key).And.Contain("config.json"));
    }

    [Test]
    public void InconsistentBlockCountIsRefused()
    {
        var json = JsonConfig.Parse("""{"block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}""", "test config");
        var e = Assert.Throws<InvalidDataException>(() => AutoencoderKLConfig.FromJson(json));
        Assert.That(e!.Message, Does.Contain("block_out_channels"));
    }

    [Test]
    public void WrongShapedInputsAreRefused()
    {
        using var vae = Pipelines.GeneratedModel.CreateVae();
        using var scope = NewDisposeScope();
        var e = Assert.Throws<ArgumentException>(() => vae.Decode(zeros(1, 3, 16, 16)));
        Assert.That(e!.Message, Does.Contain("[batch, 4, height, width]").And.Contain("[1, 3, 16, 16]"));
        Assert.Throws<ArgumentException>(() => vae.Decode(zeros(4, 16, 16)));
        Assert.Throws<ArgumentException>(() => vae.Encode(zeros(1, 4, 64, 64)));
        Assert.Throws<ArgumentException>(() => vae.Encode(zeros([1, 3, 64, 64], ScalarType.Int64)));
    }

    [Test]
    public void OptionalPartsFollowTheConfig()
    {
        var json = JsonConfig.Parse("""
            {"block_out_channels": [32, 32], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
             "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "use_quant_conv": false, "use_post_quant_conv": false,
             "mid_block_add_attention": false, "force_upcast": false, "scaling_factor": 0.5, "sample_size": [64, 64]}
            """, "test config");
        var config = AutoencoderKLConfig.FromJson(json);
        using var vae = new AutoencoderKL(config, CPU, ScalarType.Float32);
        var names = vae.named_parameters().Select(p => p.name).ToList();
        Assert.That(names, Has.None.Contains("quant_conv").And.None.Contains("attentions"));
        Assert.That(names, Does.Contain("decoder.up_blocks.0.upsamplers.0.conv.weight"));
        Assert.That(vae.ForceUpcast, Is.False);
        Assert.That(vae.ScalingFactor, Is.EqualTo(0.5));
        Assert.That(vae.ScaleFactor, Is.EqualTo(2));
        Assert.That(vae.TileSampleMinSize, Is.EqualTo(64));
        Assert.That(vae.TileLatentMinSize, Is.EqualTo(32));
        using var scope = NewDisposeScope();
        using var posterior = vae.Encode(zeros(1, 3, 8, 8));
        Assert.That(posterior.Mean.shape, Is.EqualTo(new long[] { 1, 4, 4, 4 }));
        Assert.That(vae.Decode(posterior.Mean).shape, Is.EqualTo(new long[] { 1, 3, 8, 8 }));
    }
}
