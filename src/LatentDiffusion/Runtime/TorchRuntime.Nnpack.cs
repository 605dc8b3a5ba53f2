using System.Runtime.InteropServices;

namespace LatentDiffusion.Runtime;

public static partial class TorchRuntime
{
    // at::globalContext() and at::Context::setUserEnabledNNPACK / userEnabledNNPACK, which TorchSharp does not wrap,
    // by their Itanium (Linux, macOS) and MSVC (Windows) mangled names.
    private static readonly string[] GlobalContextNames = ["_ZN2at13globalContextEv", "?globalContext@at@@YAAEAVContext@1@XZ"];
    private static readonly string[] SetNnpackNames = ["_ZN2at7Context20setUserEnabledNNPACKEb", "?setUserEnabledNNPACK@Context@at@@QEAAX_N@Z"];
    private static readonly string[] GetNnpackNames = ["_ZNK2at7Context17userEnabledNNPACKEv", "?userEnabledNNPACK@Context@at@@QEBA_NXZ"];

    /// <summary>
    /// Switches libtorch's NNPACK convolution path on or off (PyTorch's <c>torch.backends.nnpack.set_flags</c>). When it is
    /// off, libtorch does not try to initialise NNPACK, so CPUs that NNPACK does not support print no "Could not
    /// initialize NNPACK! Reason: Unsupported hardware." warnings; convolutions run on libtorch's other CPU kernels (NNPACK
    /// is only chosen for float32 batches of 16 or more). Loads the native backend first.
    /// </summary>
    /// <returns>True when the setting was applied; false when this libtorch does not export the setting.</returns>
    public static unsafe bool SetNnpackEnabled(bool enabled)
    {
        EnsureInitialized();
        if (!TryNnpackExports(out var context, out var set, out _)) return false;
        ((delegate* unmanaged<IntPtr, byte, void>)set)(context, enabled ? (byte)1 : (byte)0);
        return true;
    }

    /// <summary>Whether libtorch's NNPACK path is switched on (see <see cref="SetNnpackEnabled"/>); null when this libtorch does not export the setting.</summary>
    public static unsafe bool? IsNnpackEnabled()
    {
        EnsureInitialized();
        if (!TryNnpackExports(out var context, out _, out var get)) return null;
        return ((delegate* unmanaged<IntPtr, byte>)get)(context) != 0;
    }

    private static unsafe bool TryNnpackExports(out IntPtr context, out IntPtr set, out IntPtr get)
    {
        context = set = get = IntPtr.Zero;
        if (!TryTorchCpu(out var lib)) return false;
        if (!TryExport(lib, GlobalContextNames, out var globalContext) || !TryExport(lib, SetNnpackNames, out set) || !TryExport(lib, GetNnpackNames, out get))
            return false;
        context = ((delegate* unmanaged<IntPtr>)globalContext)();
        return context != IntPtr.Zero;
    }

    /// <summary>The handle of libtorch's CPU library: the one this loader loaded (Linux), else the one already in the process.</summary>
    private static bool TryTorchCpu(out IntPtr lib)
    {
        lib = _torchCpu;
        return lib != IntPtr.Zero
            || NativeLibrary.TryLoad(RuntimeInformation.IsOSPlatform(OSPlatform.Windows) ? "torch_cpu.dll" : RuntimeInformation.IsOSPlatform(OSPlatform.OSX) ? "libtorch_cpu.dylib" : "libtorch_cpu.so", out lib);
    }

    private static bool TryExport(IntPtr lib, string[] names, out IntPtr address)
    {
        foreach (var name in names)
            if (NativeLibrary.TryGetExport(lib, name, out address)) return true;
        address = IntPtr.Zero;
        return false;
    }
}
