using NUnit.Framework;
using TorchSharp;

namespace LatentDiffusion.Tests;

public class SafetensorsFileTests
{
    [Test]
    public void ReadsTheReferenceFile()
    {
        var f = Fixtures.Reference;
        Assert.That(f.Entries, Does.ContainKey("sd15/unet/sample"));
        using var t = f.Load("sd15/unet/sample");
        Assert.That(t.shape, Is.EqualTo(new long[] { 2, 4, 16, 16 }));
        Assert.That(t.dtype, Is.EqualTo(torch.ScalarType.Float32));
        Assert.That(t.abs().sum().item<float>(), Is.GreaterThan(0f));
    }
}
