using LatentDiffusion.Pipelines;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Pipelines;

public class ImageLoadingTests
{
    public static IEnumerable<TestCaseData> Corpus() => BadImages.Corpus().Select(c => new TestCaseData(c.Bytes).SetName("bad image: " + c.Name));

    [TestCaseSource(nameof(Corpus))]
    public void CorruptOrCraftedImagesGiveInvalidDataException(byte[] bytes)
    {
        using var stream = new MemoryStream(bytes);
        var e = Assert.Throws<InvalidDataException>(() => ImageLoading.Load(stream, "upload.png"));
        Assert.That(e!.Message, Does.Contain("upload.png"));
    }

    [Test]
    public void MissingFileGivesFileNotFound()
        => Assert.Throws<FileNotFoundException>(() => ImageLoading.Load(Path.Combine(Path.GetTempPath(), "no-such-image-" + Guid.NewGuid() + ".png")));
}
