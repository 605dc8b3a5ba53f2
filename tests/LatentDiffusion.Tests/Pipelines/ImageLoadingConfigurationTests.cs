using LatentDiffusion.Pipelines;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>The init-image loader's safer decoders are its own: the app's ImageSharp default still reads PNG metadata.</summary>
public class ImageLoadingConfigurationTests
{
    [Test]
    public void LoadingAnInitImageLeavesTheDefaultPngDecoderReadingTextChunks()
    {
        string path = Path.Combine(Path.GetTempPath(), $"ldm-config-{Guid.NewGuid():N}.png");
        try
        {
            using (var image = new Image<Rgb24>(8, 8))
            {
                image.Metadata.GetPngMetadata().TextData.Add(new PngTextData("parameters", "a cat", "", ""));
                image.SaveAsPng(path);
            }
            using (ImageLoading.Load(path)) { }
            using var reloaded = Image.Load<Rgb24>(path);
            Assert.That(reloaded.Metadata.GetPngMetadata().TextData.Select(t => t.Value), Is.EqualTo(new[] { "a cat" }));
        }
        finally { File.Delete(path); }
    }
}
