using LatentDiffusion.Integration;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using Microsoft.Extensions.AI;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Tests.Integration;

#pragma warning disable MEAI001 // IImageGenerator is marked experimental by Microsoft.Extensions.AI.
public class ImageGeneratorTests
{
    [Test]
    public async Task GeneratesPngsThatMatchThePipeline()
    {
        var pipeline = GeneratedModel.Pipeline;
        IImageGenerator generator = new LatentDiffusionImageGenerator(pipeline, new GenerationOptions { Steps = 2 });
        var options = new ImageGenerationOptions
        {
            Count = 2,
            ImageSize = new System.Drawing.Size(64, 48),
            AdditionalProperties = new AdditionalPropertiesDictionary { ["seed"] = 7, ["guidance_scale"] = 3.0 },
        };
        var response = await generator.GenerateAsync(new ImageGenerationRequest("a red circle"), options);

        var images = response.Contents.OfType<DataContent>().ToList();
        Assert.That(images, Has.Count.EqualTo(2));
        Assert.That(images.Select(i => i.MediaType), Is.All.EqualTo("image/png"));
        using var direct = pipeline.Generate("a red circle", new GenerationOptions { Steps = 2, Seed = 7, GuidanceScale = 3.0, Width = 64, Height = 48, ImagesPerPrompt = 2 });
        for (int i = 0; i < 2; i++)
        {
            using var decoded = Image.Load<Rgb24>(images[i].Data.ToArray());
            Assert.That((decoded.Width, decoded.Height), Is.EqualTo((64, 48)));
            var a = new byte[64 * 48 * 3];
            var b = new byte[64 * 48 * 3];
            decoded.CopyPixelDataTo(a);
            direct.Images[i].CopyPixelDataTo(b);
            Assert.That(a, Is.EqualTo(b), $"image {i}");
        }
        Assert.That(generator.GetService<ImageGeneratorMetadata>()?.ProviderName, Is.EqualTo("LatentDiffusion"));
        Assert.That(generator.GetService<StableDiffusionPipeline>(), Is.SameAs(pipeline));
    }

    [Test]
    public async Task AnOriginalImageMakesItImageToImage()
    {
        var pipeline = GeneratedModel.Pipeline;
        IImageGenerator generator = new LatentDiffusionImageGenerator(pipeline, new GenerationOptions { Steps = 4 });
        using var init = new Image<Rgb24>(64, 64, new Rgb24(20, 200, 40));
        using var png = new MemoryStream();
        await init.SaveAsPngAsync(png);
        var request = new ImageGenerationRequest("a green field", [new DataContent(png.ToArray(), "image/png")]);
        var response = await generator.GenerateAsync(request, new ImageGenerationOptions { AdditionalProperties = new() { ["seed"] = 3, ["strength"] = 0.5 } });
        using var direct = pipeline.Generate("a green field", new GenerationOptions { Steps = 4, Seed = 3, Strength = 0.5, InitImage = init });
        using var decoded = Image.Load<Rgb24>(response.Contents.OfType<DataContent>().Single().Data.ToArray());
        var a = new byte[64 * 64 * 3];
        var b = new byte[64 * 64 * 3];
        decoded.CopyPixelDataTo(a);
        direct.Images[0].CopyPixelDataTo(b);
        Assert.That(a, Is.EqualTo(b));
    }

    [Test]
    public void RefusesAnotherMediaType()
    {
        IImageGenerator generator = new LatentDiffusionImageGenerator(GeneratedModel.Pipeline);
        Assert.That(async () => await generator.GenerateAsync(new ImageGenerationRequest("x"), new ImageGenerationOptions { MediaType = "image/jpeg" }),
            Throws.InstanceOf<NotSupportedException>());
    }
}
