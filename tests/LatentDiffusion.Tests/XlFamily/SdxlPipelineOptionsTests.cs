using LatentDiffusion.Adapters;
using LatentDiffusion.Pipelines;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>The <see cref="PipelineOptions"/> an SD 1.x/2.x load honours, honoured by an SDXL load too (folder and single file).</summary>
public class SdxlPipelineOptionsTests
{
    [TestCase("tiny-sdxl")]
    [TestCase("tiny-sdxl.safetensors")]
    public async Task LorasVaeSlicingTilingAndUpcastApply(string model)
    {
        var options = new PipelineOptions
        {
            ConfigDirectory = Fixtures.PathOf("tiny-sdxl"),
            DType = ScalarType.BFloat16,
            UpcastVae = true,
            VaeSlicing = true,
            VaeTiling = true,
            Loras = [new LoraSource(Fixtures.PathOf("lora", "tiny-sdxl-lora-kohya.safetensors"), 0.5) { Name = "kohya", Fuse = true }],
        };
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf(model), options);
        Assert.That(pipeline.IsStableDiffusionXL, Is.True);
        Assert.That(pipeline.Loras.Loaded.Select(l => (l.Name, l.Scale, l.IsFused)), Is.EqualTo(new[] { ("kohya", 0.5, true) }), "PipelineOptions.Loras");
        Assert.That(pipeline.Vae.UseSlicing && pipeline.Vae.UseTiling, Is.True, "VaeSlicing and VaeTiling");
        Assert.That(pipeline.Vae.DType, Is.EqualTo(ScalarType.Float32), "UpcastVae");
        Assert.That(pipeline.UNet.DType, Is.EqualTo(ScalarType.BFloat16));
    }
}
