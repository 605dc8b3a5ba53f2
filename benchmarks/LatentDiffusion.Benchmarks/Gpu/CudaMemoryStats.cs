using System.Runtime.InteropServices;

namespace LatentDiffusion.Benchmarks.Gpu;

/// <summary>
/// The caching allocator's peak-allocated counter (as <c>torch.cuda.max_memory_allocated</c>), through the small shim
/// in benchmarks/gpu/memstats.cpp named by LATENTDIFFUSION_MEMSTATS; unavailable (null) without it.
/// </summary>
internal sealed unsafe class CudaMemoryStats
{
    private readonly delegate* unmanaged<int, long> _peak;
    private readonly delegate* unmanaged<int, void> _reset;

    private CudaMemoryStats(IntPtr lib)
    {
        _peak = (delegate* unmanaged<int, long>)NativeLibrary.GetExport(lib, "ldm_cuda_peak_allocated");
        _reset = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(lib, "ldm_cuda_reset_peak");
    }

    public static CudaMemoryStats? TryLoad()
    {
        var path = Environment.GetEnvironmentVariable("LATENTDIFFUSION_MEMSTATS");
        if (string.IsNullOrEmpty(path) || !File.Exists(path)) return null;
        return NativeLibrary.TryLoad(path, out var lib) ? new CudaMemoryStats(lib) : null;
    }

    public long PeakBytes(int device) => _peak(device);

    public void ResetPeak(int device) => _reset(device);
}
