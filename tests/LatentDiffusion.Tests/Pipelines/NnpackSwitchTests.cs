using LatentDiffusion.Runtime;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>libtorch's NNPACK switch, which the CLI turns off so unsupported CPUs print no NNPACK warnings.</summary>
public class NnpackSwitchTests
{
    [Test]
    public void NnpackCanBeSwitchedOffAndOnAndConvolutionsStillRun()
    {
        bool? before = TorchRuntime.IsNnpackEnabled();
        Assert.That(before, Is.Not.Null, "this libtorch exports at::Context::userEnabledNNPACK");
        try
        {
            Assert.That(TorchRuntime.SetNnpackEnabled(false), Is.True);
            Assert.That(TorchRuntime.IsNnpackEnabled(), Is.False);
            // A float32 CPU batch of 16: the size at which libtorch would choose NNPACK.
            using var x = ones(16, 3, 8, 8);
            using var w = ones(4, 3, 3, 3);
            using var y = nn.functional.conv2d(x, w, padding: new long[] { 1, 1 });
            Assert.That(y[0, 0, 4, 4].item<float>(), Is.EqualTo(27f));
            Assert.That(TorchRuntime.SetNnpackEnabled(true), Is.True);
            Assert.That(TorchRuntime.IsNnpackEnabled(), Is.True);
        }
        finally
        {
            TorchRuntime.SetNnpackEnabled(before!.Value);
        }
    }
}
