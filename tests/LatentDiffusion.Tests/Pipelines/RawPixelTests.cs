using LatentDiffusion.Pipelines;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>Raw RGB bytes in and out, so an app need not use this library's ImageSharp version.</summary>
public class RawPixelTests
{
    private static StableDiffusionPipeline Sd15 => TinyModels.Get("tiny-sd15");

    private static readonly GenerationOptions Quick = new() { Steps = 2, Seed = 3, Width = 64, Height = 64 };

    private static byte[] Gradient(int width, int height)
    {
        var bytes = new byte[width * height * 3];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int i = (y * width + x) * 3;
                bytes[i] = (byte)(x * 255 / (width - 1));
                bytes[i + 1] = (byte)(y * 255 / (height - 1));
                bytes[i + 2] = (byte)((x * 7 + y * 13) % 256);
            }
        return bytes;
    }

    [Test]
    public void InitImagePixelsGiveTheSameImageAsTheImageSharpImage()
    {
        // 72x56: not the output size, so the resize path is taken too.
        var bytes = Gradient(72, 56);
        using var image = Image.LoadPixelData<Rgb24>(bytes, 72, 56);
        var options = Quick with { Strength = 0.6, Scheduler = "euler-a" };
        using var fromImage = Sd15.Generate("a cat", options with { InitImage = image });
        using var fromPixels = Sd15.Generate("a cat", options with { InitImagePixels = new RgbImage(72, 56, bytes) });
        AssertTensor.MaxAbsClose(fromPixels.Pixels, fromImage.Pixels, 0, "raw pixels = ImageSharp image");
        // Without Width/Height the init image's size (floored to a multiple of 8) is used, as for InitImage.
        using var ownSize = Sd15.Generate("a cat", new GenerationOptions { Steps = 2, Seed = 3, Strength = 0.6, InitImagePixels = new RgbImage(72, 56, bytes) });
        Assert.That((ownSize.Images[0].Width, ownSize.Images[0].Height), Is.EqualTo((72, 56)));
    }

    [Test]
    public void ResultPixelsAsBytesAreTheImagesPixels()
    {
        using var result = Sd15.Generate("a cat", Quick with { ImagesPerPrompt = 2, Width = 48 });
        for (int i = 0; i < 2; i++)
        {
            var expected = new byte[48 * 64 * 3];
            result.Images[i].CopyPixelDataTo(expected);
            Assert.That(result.GetRgbBytes(i), Is.EqualTo(expected), $"image {i}");
            var rgb = result.ToRgbImage(i);
            Assert.That((rgb.Width, rgb.Height), Is.EqualTo((48, 64)));
            Assert.That(rgb.Pixels, Is.EqualTo(expected));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => result.GetRgbBytes(2));
        Assert.Throws<ArgumentOutOfRangeException>(() => result.GetRgbBytes(-1));
    }

    [Test]
    public void BadRawImagesAreRefusedWithTheReason()
    {
        var e = Assert.Throws<ArgumentException>(() => new RgbImage(4, 4, new byte[47]));
        Assert.That(e!.Message, Does.Contain("4x4").And.Contain("48").And.Contain("47"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RgbImage(0, 4, []));
        Assert.Throws<ArgumentNullException>(() => new RgbImage(4, 4, null!));
        using var image = new Image<Rgb24>(64, 64);
        var both = Assert.Throws<ArgumentException>(() => GeneratedModel.Pipeline.Generate("a cat", Quick with { InitImage = image, InitImagePixels = new RgbImage(64, 64, new byte[64 * 64 * 3]) }));
        Assert.That(both!.Message, Does.Contain("InitImagePixels"));
        var tiny = Assert.Throws<ArgumentException>(() => GeneratedModel.Pipeline.Generate("a cat", new GenerationOptions { Steps = 2, InitImagePixels = new RgbImage(4, 4, new byte[48]) }));
        Assert.That(tiny!.Message, Does.Contain("4x4"));
    }
}
