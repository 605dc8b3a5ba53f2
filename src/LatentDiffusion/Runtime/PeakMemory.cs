using System.Diagnostics;

namespace LatentDiffusion.Runtime;

/// <summary>The process's memory high-water mark, for reports of what a generation needed.</summary>
public static class PeakMemory
{
    /// <summary>
    /// The peak resident set size of this process so far, in bytes: on Linux the kernel's <c>VmHWM</c> (which counts the
    /// pages of libtorch's own heap and of mapped files as well as .NET's), elsewhere the peak working set.
    /// </summary>
    public static long PeakResidentBytes
    {
        get
        {
            using var self = Process.GetCurrentProcess();
            return self.PeakWorkingSet64;
        }
    }
}
