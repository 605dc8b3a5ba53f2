using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace LatentDiffusion.Runtime;

public static partial class TorchRuntime
{
    private static readonly object OpenMpGate = new();
    private static volatile bool _openMpResolved;
    private static unsafe delegate* unmanaged<int> _ompGetDynamic;
    private static unsafe delegate* unmanaged<int, void> _ompSetDynamic;
    private static unsafe delegate* unmanaged<int> _ompGetThreadLimit;
    private static unsafe delegate* unmanaged<int> _ompGetMaxActiveLevels;
    private static int _openMpWarned;

    /// <summary>
    /// Makes every OpenMP team that libtorch starts from the calling thread as large as its kernels plan it.
    /// <para>
    /// oneDNN's convolution kernels (libtorch's CPU convolutions) split their work for <c>omp_get_max_threads()</c>
    /// threads when a primitive is made, then run it in a parallel region. When OpenMP starts fewer threads than that,
    /// the missing threads' share is never computed: the backward pass leaves parts of the weight and bias gradients
    /// uninitialised (garbage or NaN that changes from run to run), or waits forever at a barrier for a thread that never
    /// comes (oneDNN 3.7.1 in libtorch 2.10, measured). OpenMP starts fewer threads when dynamic team sizes are on
    /// (<c>OMP_DYNAMIC=true</c>: the team shrinks with the machine's load), when <c>OMP_THREAD_LIMIT</c> is below the
    /// thread count, or when <c>OMP_MAX_ACTIVE_LEVELS=0</c>.
    /// </para>
    /// <para>
    /// So this switches dynamic team sizes off for the calling thread (the setting is per thread) and lowers libtorch's
    /// thread count to what OpenMP will grant. With OpenMP's defaults it changes nothing. The trainers call it at every
    /// step and the pipelines at every generation, on the thread that computes.
    /// </para>
    /// </summary>
    /// <param name="logger">Told what was changed: as a warning the first time in the process, then at debug level (each new
    /// thread, such as a thread-pool thread that runs a later generation, needs the same change).</param>
    internal static void EnsureFullOpenMpTeams(ILogger logger)
    {
        if (EnsureFullOpenMpTeams() is not { } changed) return;
        if (Interlocked.Exchange(ref _openMpWarned, 1) == 0) logger.LogWarning("{Change}", changed);
        else logger.LogDebug("{Change}", changed);
    }

    /// <summary>The work of <see cref="EnsureFullOpenMpTeams(ILogger)"/>, on the calling thread.</summary>
    /// <returns>What was changed; null when nothing was (or this libtorch's OpenMP could not be reached).</returns>
    internal static unsafe string? EnsureFullOpenMpTeams()
    {
        EnsureInitialized();
        if (!ResolveOpenMp()) return null;
        var changes = new List<string>();
        if (_ompGetDynamic() != 0)
        {
            _ompSetDynamic(0);
            changes.Add("switched off OpenMP's dynamic team sizes (OMP_DYNAMIC) on this thread");
        }
        int planned = TorchThreads.Current;
        int granted = _ompGetMaxActiveLevels() < 1 ? 1 : Math.Min(planned, Math.Max(1, _ompGetThreadLimit()));
        if (granted < planned)
        {
            TorchThreads.Apply(granted);
            changes.Add($"lowered libtorch's CPU threads from {planned} to {granted}, as many as OpenMP starts (OMP_THREAD_LIMIT, OMP_MAX_ACTIVE_LEVELS)");
        }
        return changes.Count == 0 ? null
            : "OpenMP would start fewer threads than libtorch's convolution kernels plan for (their backward pass then leaves gradients " +
              "uninitialised or hangs): " +
              string.Join("; ", changes) + ".";
    }

    private static unsafe bool ResolveOpenMp()
    {
        if (_openMpResolved) return _ompGetDynamic != null;
        lock (OpenMpGate)
        {
            if (_openMpResolved) return _ompGetDynamic != null;
            // libtorch's OpenMP runtime (GNU libgomp on Linux, LLVM libomp on macOS) is a dependency of libtorch_cpu, whose
            // handle finds its symbols; Windows builds use Intel's libiomp5md.
            TryTorchCpu(out var lib);
            if ((lib == IntPtr.Zero || !NativeLibrary.TryGetExport(lib, "omp_get_dynamic", out _)) && RuntimeInformation.IsOSPlatform(OSPlatform.Windows))
                NativeLibrary.TryLoad("libiomp5md.dll", out lib);
            if (lib != IntPtr.Zero
                && NativeLibrary.TryGetExport(lib, "omp_get_dynamic", out var getDynamic)
                && NativeLibrary.TryGetExport(lib, "omp_set_dynamic", out var setDynamic)
                && NativeLibrary.TryGetExport(lib, "omp_get_thread_limit", out var threadLimit)
                && NativeLibrary.TryGetExport(lib, "omp_get_max_active_levels", out var activeLevels))
            {
                _ompSetDynamic = (delegate* unmanaged<int, void>)setDynamic;
                _ompGetThreadLimit = (delegate* unmanaged<int>)threadLimit;
                _ompGetMaxActiveLevels = (delegate* unmanaged<int>)activeLevels;
                _ompGetDynamic = (delegate* unmanaged<int>)getDynamic;
            }
            _openMpResolved = true;
            return _ompGetDynamic != null;
        }
    }
}
