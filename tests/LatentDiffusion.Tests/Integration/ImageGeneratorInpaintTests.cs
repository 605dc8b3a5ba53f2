using LatentDiffusion.Integration;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using Microsoft.Extensions.AI;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Tests.Integration;

#pragma warning disable MEAI001 // IImageGenerator is marked experimental by Microsoft.Extensions.AI.
/// <summary>Inpainting through Microsoft.Extensions.AI: <c>EditImageAsync</c> with the mask in <c>AdditionalProperties["mask"]</c>.</summary>
public class ImageGeneratorInpaintTests
{
    private static byte[] Png(Image<Rgb24> image)
    {
        using var stream = new MemoryStream();
        image.SaveAsPng(stream);
        return stream.ToArray();
    }

    private static byte[] Pixels(Image<Rgb24> image)
    {
        var bytes = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(bytes);
        return bytes;
    }

    public static IEnumerable<TestCaseData> MaskForms()
    {
        yield return new TestCaseData((Func<byte[], object>)(png => new DataContent(png, "image/png"))).SetName("mask as DataContent");
        yield return new TestCaseData((Func<byte[], object>)(png => png)).SetName("mask as byte[]");
        yield return new TestCaseData((Func<byte[], object>)(png => new ReadOnlyMemory<byte>(png))).SetName("mask as ReadOnlyMemory<byte>");
    }

    [TestCaseSource(nameof(MaskForms))]
    public async Task EditImageAsyncWithAMaskInpaintsAsThePipeline(Func<byte[], object> maskForm)
    {
        var pipeline = GeneratedModel.Pipeline;
        IImageGenerator generator = new LatentDiffusionImageGenerator(pipeline, new GenerationOptions { Steps = 4 });
        using var init = InpaintingTests.Pattern(64, 64);
        using var mask = InpaintingTests.MaskWhere(64, 64, (x, y) => x > 20 && y > 10);
        var options = new ImageGenerationOptions { AdditionalProperties = new() { ["seed"] = 9, ["strength"] = 0.75, ["mask"] = maskForm(Png(mask)) } };
        var response = await generator.EditImageAsync(new DataContent(Png(init), "image/png"), "a red square", options);

        using var direct = pipeline.Generate("a red square", new GenerationOptions { Steps = 4, Seed = 9, Strength = 0.75, InitImage = init, Mask = mask });
        using var unmasked = pipeline.Generate("a red square", new GenerationOptions { Steps = 4, Seed = 9, Strength = 0.75, InitImage = init });
        using var decoded = Image.Load<Rgb24>(response.Contents.OfType<DataContent>().Single().Data.ToArray());
        Assert.That(Pixels(decoded), Is.EqualTo(Pixels(direct.Images[0])), "the pipeline's inpainted image");
        Assert.That(Pixels(decoded), Is.Not.EqualTo(Pixels(unmasked.Images[0])), "not image-to-image (the mask was used)");
    }

    [Test]
    public void AMaskOfAnotherTypeIsRefused()
    {
        IImageGenerator generator = new LatentDiffusionImageGenerator(GeneratedModel.Pipeline, new GenerationOptions { Steps = 1 });
        using var init = InpaintingTests.Pattern(64, 64);
        var options = new ImageGenerationOptions { AdditionalProperties = new() { ["mask"] = "white.png" } };
        var e = Assert.ThrowsAsync<ArgumentException>(() => generator.EditImageAsync(new DataContent(Png(init), "image/png"), "x", options));
        Assert.That(e!.Message, Does.Contain("mask").And.Contain("String"));
        var text = new ImageGenerationOptions { AdditionalProperties = new() { ["mask"] = new DataContent(new byte[] { 1, 2 }, "text/plain") } };
        Assert.That(Assert.ThrowsAsync<ArgumentException>(() => generator.EditImageAsync(new DataContent(Png(init), "image/png"), "x", text))!.Message, Does.Contain("text/plain"));
    }
}
