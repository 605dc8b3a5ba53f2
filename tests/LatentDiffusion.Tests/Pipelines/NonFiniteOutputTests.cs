using LatentDiffusion.Pipelines;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>A non-finite image is an error that names the stage which first went non-finite, never a black picture.</summary>
public class NonFiniteOutputTests
{
    private static readonly GenerationOptions Quick = new() { Steps = 2, Seed = 1, Width = 64, Height = 64 };

    [TestCase("text encoder", "final_layer_norm.weight", float.NaN, "the text encoder")]
    [TestCase("unet", "conv_in.weight", float.PositiveInfinity, "the UNet at step 1 of")]
    [TestCase("unet", "conv_out.bias", float.NaN, "the UNet at step 1 of")]
    [TestCase("vae decoder", "conv_out.bias", float.NaN, "the VAE decoder")]
    public void NonFiniteWeightsAreAnErrorNamingTheirStage(string part, string weight, float value, string stage)
    {
        using var pipeline = StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15")).GetAwaiter().GetResult();
        nn.Module module = part switch
        {
            "text encoder" => (ClipTextModel)pipeline.TextEncoder,
            "unet" => (UNet2DConditionModel)pipeline.UNet,
            _ => ((AutoencoderKL)pipeline.Vae).DecoderModule,
        };
        using (no_grad()) module.named_parameters().Single(p => p.name == weight).parameter.fill_(value);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var error = Assert.Throws<InvalidOperationException>(() => pipeline.Generate("a cat", Quick));
        Assert.That(error!.Message, Does.Contain("NaN or infinite").And.Contain("came from " + stage));
        Assert.That(DisposeScopeManager.Statistics.ThreadTotalLiveCount, Is.EqualTo(before), "tensors left alive after the error");
    }

    [Test]
    public void AnAbsurdGuidanceScaleIsAnErrorNamingGuidance()
    {
        var pipeline = TinyModels.Get("tiny-sd15");
        var error = Assert.Throws<InvalidOperationException>(() => pipeline.Generate("a cat", Quick with { GuidanceScale = 1e300 }));
        Assert.That(error!.Message, Does.Contain("came from classifier-free guidance at step 1 of").And.Contain("1E+300"));
    }

    [Test]
    public void NonFiniteGivenLatentsAreNamed()
    {
        var pipeline = TinyModels.Get("tiny-sd15");
        using var latents = full(new long[] { 1, 4, 8, 8 }, float.NaN);
        var error = Assert.Throws<InvalidOperationException>(() => pipeline.Generate("a cat", Quick with { Latents = latents }));
        Assert.That(error!.Message, Does.Contain("came from the given latents"));
    }
}
