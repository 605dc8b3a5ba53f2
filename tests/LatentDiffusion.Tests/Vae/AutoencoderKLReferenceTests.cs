using LatentDiffusion.Formats;
using LatentDiffusion.Vae;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Vae;

/// <summary>Numerical parity of the KL autoencoder with the reference, for both fixture models (legacy and current attention names).</summary>
[TestFixture("tiny-sd15", "sd15")]
[TestFixture("tiny-sd2v", "sd2v")]
public sealed class AutoencoderKLReferenceTests(string model, string prefix)
{
    private AutoencoderKL _vae = null!;

    [OneTimeSetUp]
    public void LoadModel() => _vae = AutoencoderKL.Load(Fixtures.PathOf(model, "vae"), CPU, ScalarType.Float32);

    [OneTimeTearDown]
    public void DisposeModel() => _vae?.Dispose();

    [Test]
    public void DecodeMatchesReference()
    {
        using var scope = NewDisposeScope();
        var latents = Fixtures.Expected($"{prefix}/vae/latents");
        var decoded = _vae.Decode(latents / _vae.ScalingFactor);
        AssertTensor.RelativeClose(decoded, Fixtures.Expected($"{prefix}/vae/decoded"), 1e-4, $"{model} decode");
    }

    [Test]
    public void EncodePosteriorMatchesReference()
    {
        using var scope = NewDisposeScope();
        using var posterior = _vae.Encode(Fixtures.Expected($"{prefix}/vae/image"));
        AssertTensor.RelativeClose(posterior.Mean, Fixtures.Expected($"{prefix}/vae/posterior_mean"), 1e-4, $"{model} posterior mean");
        AssertTensor.RelativeClose(posterior.Std, Fixtures.Expected($"{prefix}/vae/posterior_std"), 1e-4, $"{model} posterior std");
    }

    [Test]
    public void ParameterNamesAreTheCurrentDiffusersNames()
    {
        using var file = SafetensorsFile.Open(Fixtures.PathOf(model, "vae", AutoencoderKL.DefaultWeightsFile));
        var expected = file.Entries.Keys.Select(AutoencoderKL.CurrentName).OrderBy(k => k, StringComparer.Ordinal);
        var actual = _vae.named_parameters().Select(p => p.name).OrderBy(k => k, StringComparer.Ordinal);
        Assert.That(actual, Is.EqualTo(expected));
        Assert.That(_vae.named_parameters().Select(p => p.name), Does.Contain("encoder.mid_block.attentions.0.to_out.0.weight")
            .And.Contain("decoder.up_blocks.0.upsamplers.0.conv.weight").And.Contain("encoder.down_blocks.0.downsamplers.0.conv.weight")
            .And.Contain("quant_conv.weight").And.Contain("post_quant_conv.bias"));
        Assert.That(_vae.named_buffers(), Is.Empty);
    }

    [Test]
    public void ExposesConfigValues()
    {
        Assert.That(_vae.ScalingFactor, Is.EqualTo(0.18215));
        Assert.That(_vae.ScaleFactor, Is.EqualTo(8));
        Assert.That(_vae.LatentChannels, Is.EqualTo(4));
        Assert.That(_vae.ForceUpcast, Is.True);
        Assert.That(_vae.DType, Is.EqualTo(ScalarType.Float32));
        Assert.That(_vae.Device.type, Is.EqualTo(TorchSharp.DeviceType.CPU));
    }
}
