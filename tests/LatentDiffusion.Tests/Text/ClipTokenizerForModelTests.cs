using LatentDiffusion.Text;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Text;

public class ClipTokenizerForModelTests
{
    [Test]
    public void ASingleFileNeedsAConfigFolderForItsTokenizer()
    {
        // Read outside Assert.Throws, which would catch the fixtures' skip (or failure) as the wrong exception.
        string singleFile = Fixtures.PathOf("tiny-sd15.safetensors");
        var e = Assert.Throws<ArgumentException>(() => ClipTokenizer.ForModel(singleFile));
        Assert.That(e!.Message, Does.Contain("tiny-sd15.safetensors").And.Contain("configDirectory").And.Contain("SingleFileTokenizer.LoadAsync"));
        var viaConfig = ClipTokenizer.ForModel(Fixtures.PathOf("tiny-sd15.safetensors"), Fixtures.PathOf("tiny-sd15"));
        var fromFolder = ClipTokenizer.ForModel(Fixtures.PathOf("tiny-sd15"));
        Assert.That(viaConfig.Encode("a photograph of an astronaut"), Is.EqualTo(fromFolder.Encode("a photograph of an astronaut")));
    }

    [Test]
    public void AMissingModelIsNamed()
        => Assert.Throws<FileNotFoundException>(() => ClipTokenizer.ForModel(Path.Combine(Path.GetTempPath(), "no-model-" + Guid.NewGuid())));
}
