using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Loading;

/// <summary>Inpainting models load as pipelines: the diffusers folder of a <c>StableDiffusionInpaintPipeline</c> and a single file with a 9-channel UNet.</summary>
public class InpaintingModelLoadingTests
{
    [Test]
    public async Task AnInpaintPipelineFolderLoads()
    {
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15-inpaint"));
        Assert.That(pipeline.UNet.InChannels, Is.EqualTo(9));
        Assert.That(pipeline.Vae.LatentChannels, Is.EqualTo(4));
        Assert.That(pipeline.Scheduler.ClassName, Is.EqualTo("PNDMScheduler"));
    }

    [Test]
    public async Task ASingleFileWithA9ChannelUNetIsAnInpaintingModel()
    {
        // tiny-sd15.safetensors with its UNet's first convolution widened to 9 input channels, as SD 1.5 inpainting's
        // single file has it: the UNet's in_channels is taken from that tensor, even under an ordinary model's config folder.
        const string convIn = "model.diffusion_model.input_blocks.0.0.weight";
        string dir = Directory.CreateTempSubdirectory("ld-inpaint-file-").FullName;
        try
        {
            string file = Path.Combine(dir, "tiny-sd15-inpainting.safetensors");
            using (var source = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd15.safetensors")))
            {
                var tensors = source.Entries.Keys.ToDictionary(k => k, k => source.Load(k));
                var original = tensors[convIn];
                using var generator = new Generator(4);
                var extra = (randn([original.shape[0], 5, original.shape[2], original.shape[3]], generator: generator) * 0.05).to(original.dtype);
                tensors[convIn] = cat([original, extra], 1);
                SafetensorsWriter.Save(file, tensors);
                foreach (var t in tensors.Values) t.Dispose();
            }
            // The configs and tokenizer of the ordinary tiny-sd15 (in_channels 4): the weights' 9 channels win.
            await using var pipeline = await StableDiffusionPipeline.LoadAsync(file, new PipelineOptions { ConfigDirectory = Fixtures.PathOf("tiny-sd15") });
            Assert.That(pipeline.UNet.InChannels, Is.EqualTo(9));

            using var init = InpaintingTests.Pattern(64, 64);
            using var mask = InpaintingTests.MaskWhere(64, 64, (x, _) => x < 32);
            using var result = pipeline.Generate("a cat", new GenerationOptions { InitImage = init, Mask = mask, Steps = 2, Seed = 1 });
            Assert.That(result.Pixels.shape, Is.EqualTo(new long[] { 1, 64, 64, 3 }));
            Assert.That(Assert.Throws<ArgumentException>(() => pipeline.Generate("a cat", new GenerationOptions { Steps = 2 }))!.Message, Does.Contain("inpainting model"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
