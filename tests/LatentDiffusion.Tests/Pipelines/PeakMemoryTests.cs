using LatentDiffusion.Runtime;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>The peak RSS that ldm prints is the process's high-water mark: never below what is resident now, never falling.</summary>
public class PeakMemoryTests
{
    [Test]
    public void ThePeakCoversWhatIsResidentAndNeverFalls()
    {
        long before = PeakMemory.PeakResidentBytes;
        Assert.That(before, Is.GreaterThan(0));
        // 256 MiB, touched so that it is resident: the peak must cover it with everything else that is resident now.
        using var big = TorchSharp.torch.ones(64L << 20);
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        long resident = self.WorkingSet64;
        Assert.That(resident, Is.GreaterThan(256L << 20));
        long after = PeakMemory.PeakResidentBytes;
        Assert.That(after, Is.GreaterThanOrEqualTo(resident).And.GreaterThanOrEqualTo(before));
    }
}
