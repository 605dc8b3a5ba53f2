using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;

namespace LatentDiffusion.Runtime;

/// <summary>Where the native libtorch comes from; immutable.</summary>
public sealed record TorchRuntimeOptions
{
    /// <summary>The environment variable that names an existing libtorch folder (for example a Python PyTorch install's <c>torch/lib</c>).</summary>
    public const string LibTorchEnvironmentVariable = "LATENTDIFFUSION_LIBTORCH";

    /// <summary>
    /// A folder that holds an existing libtorch (<c>libc10</c>, <c>libtorch_cpu</c>, optionally the CUDA libraries,
    /// <c>libtorch</c>) to use instead of the one that came with the app's TorchSharp backend package.
    /// When null, <see cref="LibTorchEnvironmentVariable"/> is read.
    /// </summary>
    public string? LibTorchDirectory { get; init; }

    /// <summary>Where a patched copy of TorchSharp's native glue is kept when the system's libstdc++ is too old. Default: a folder under the temp directory.</summary>
    public string? NativeCacheDirectory { get; init; }
}

/// <summary>
/// Loads TorchSharp's native backend before first use, working around what stops it loading on common Linux systems.
/// Every entry point of the library calls <see cref="EnsureInitialized"/>; an app may call it first to choose the options.
/// </summary>
public static partial class TorchRuntime
{
    private static readonly object Gate = new();
    private static bool _initialized;
    private static IntPtr _libTorchSharp;
    private static IntPtr _torchCuda;
    private static IntPtr _torchCpu;

    /// <summary>A line per thing the loader did or tried, for diagnostics.</summary>
    public static IReadOnlyList<string> LoadTrace { get; private set; } = Array.Empty<string>();

    /// <summary>True once the native backend is loaded.</summary>
    public static bool IsInitialized => _initialized;

    /// <summary>Loads the native backend once (later calls do nothing); thread-safe.</summary>
    /// <exception cref="TorchRuntimeException">Nothing could be loaded; the message lists every attempt.</exception>
    public static void EnsureInitialized(TorchRuntimeOptions? options = null, ILogger? logger = null)
    {
        if (_initialized) return;
        lock (Gate)
        {
            if (_initialized) return;
            logger ??= NullLogger.Instance;
            options ??= new TorchRuntimeOptions();
            var trace = new List<string>();
            try
            {
                Load(options, logger, trace);
                torch.InitializeDeviceType(DeviceType.CPU);
            }
            catch (TorchRuntimeException) { LoadTrace = trace; throw; }
            catch (Exception e) when (e is DllNotFoundException or NotSupportedException or EntryPointNotFoundException or InvalidOperationException or TypeInitializationException)
            {
                trace.Add("TorchSharp initialisation failed: " + e.Message);
                LoadTrace = trace;
                throw new TorchRuntimeException(trace, e);
            }
            LoadTrace = trace;
            _initialized = true;
        }
    }

    private static void Load(TorchRuntimeOptions options, ILogger logger, List<string> trace)
    {
        if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux))
        {
            // TorchSharp's own loader handles Windows and macOS; nothing there needs patching.
            trace.Add("not Linux: leaving native loading to TorchSharp");
            return;
        }

        string? libtorchDir = options.LibTorchDirectory ?? Environment.GetEnvironmentVariable(TorchRuntimeOptions.LibTorchEnvironmentVariable);
        if (string.IsNullOrWhiteSpace(libtorchDir)) libtorchDir = null;
        string? glue = FindInProbeDirectories("libLibTorchSharp.so", trace);
        if (glue is null)
            throw new TorchRuntimeException(trace.Append("libLibTorchSharp.so was not found next to the app: reference TorchSharp-cpu (or another TorchSharp backend package), or the plain TorchSharp package plus an existing libtorch").ToList(), null);

        string nativeDir = libtorchDir ?? Path.GetDirectoryName(glue)!;
        if (libtorchDir is not null)
        {
            if (!Directory.Exists(libtorchDir))
                throw new TorchRuntimeException(trace.Append($"the libtorch folder '{libtorchDir}' does not exist").ToList(), null);
            logger.LogInformation("Using the existing libtorch in {Folder}", libtorchDir);
            trace.Add($"using existing libtorch folder {libtorchDir}");
        }
        else if (FindInProbeDirectories("libtorch_cpu.so", trace) is string cpu)
        {
            nativeDir = Path.GetDirectoryName(cpu)!;
        }

        // Dependencies first, by full path: the glue then finds them by soname even when it is loaded from a copy.
        foreach (var name in new[] { "libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so" })
        {
            var path = Path.Combine(nativeDir, name);
            if (!File.Exists(path)) { trace.Add($"not present: {path}"); continue; }
            if (!TryLoad(path, trace, out var h, out var error))
                throw new TorchRuntimeException(trace.Append($"could not load {path}: {error}").ToList(), null);
            if (name == "libtorch_cuda.so") _torchCuda = h;
            if (name == "libtorch_cpu.so") _torchCpu = h;
        }

        if (!TryLoad(glue, trace, out _libTorchSharp, out var glueError))
        {
            if (!glueError.Contains("GLIBCXX_", StringComparison.Ordinal))
                throw new TorchRuntimeException(trace.Append($"could not load {glue}: {glueError}").ToList(), null);
            string patched = PatchedCopy(glue, options, trace);
            logger.LogInformation("The system libstdc++ lacks a symbol version TorchSharp asks for ({Error}); loading a patched copy {Copy} that marks it weak (the original is untouched)", glueError, patched);
            if (!TryLoad(patched, trace, out _libTorchSharp, out var patchedError))
                throw new TorchRuntimeException(trace.Append($"could not load the patched copy {patched}: {patchedError}").ToList(), null);
        }

        NativeLibrary.SetDllImportResolver(typeof(torch).Assembly, Resolve);
    }

    private static unsafe delegate* unmanaged<IntPtr, IntPtr> _tensorData;

    /// <summary>The address of a CPU tensor's first element (TorchSharp's <c>THSTensor_data</c>), for reading file bytes straight into its storage.</summary>
    internal static unsafe IntPtr DataPointer(torch.Tensor tensor)
    {
        if (tensor.device_type != DeviceType.CPU) throw new ArgumentException("Only CPU tensors expose a host data pointer.", nameof(tensor));
        if (_tensorData == null)
        {
            IntPtr lib = _libTorchSharp != IntPtr.Zero ? _libTorchSharp : NativeLibrary.Load("LibTorchSharp", typeof(torch).Assembly, null);
            _tensorData = (delegate* unmanaged<IntPtr, IntPtr>)NativeLibrary.GetExport(lib, "THSTensor_data");
        }
        return _tensorData(tensor.Handle);
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) => name switch
    {
        "LibTorchSharp" or "libLibTorchSharp" or "libLibTorchSharp.so" => _libTorchSharp,
        "torch_cuda" or "libtorch_cuda" or "libtorch_cuda.so" => _torchCuda,
        _ => IntPtr.Zero,
    };

    private static bool TryLoad(string path, List<string> trace, out IntPtr handle, out string error)
    {
        try
        {
            handle = NativeLibrary.Load(path);
            trace.Add($"loaded {path}");
            error = "";
            return true;
        }
        catch (DllNotFoundException e)
        {
            handle = IntPtr.Zero;
            error = e.Message;
            trace.Add($"failed {path}: {e.Message}");
            return false;
        }
    }

    private static string PatchedCopy(string glue, TorchRuntimeOptions options, List<string> trace)
    {
        byte[] bytes = File.ReadAllBytes(glue);
        string hash = Convert.ToHexString(SHA256.HashData(bytes))[..16].ToLowerInvariant();
        string dir = Path.Combine(options.NativeCacheDirectory ?? Path.Combine(Path.GetTempPath(), "LatentDiffusion", "native"), hash);
        string target = Path.Combine(dir, "libLibTorchSharp.so");
        if (File.Exists(target)) { trace.Add($"reusing patched copy {target}"); return target; }

        int changed = ElfVersionPatcher.MarkVersionWeak(bytes, "GLIBCXX_3.4.32");
        trace.Add($"marked {changed} GLIBCXX_3.4.32 requirement(s) weak in a copy of {glue}");
        Directory.CreateDirectory(dir);
        string tmp = target + "." + Environment.ProcessId + ".tmp";
        File.WriteAllBytes(tmp, bytes);
        File.Move(tmp, target, overwrite: true);
        return target;
    }

    private static string? FindInProbeDirectories(string file, List<string> trace)
    {
        var dirs = new List<string>();
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string probe)
            dirs.AddRange(probe.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries));
        dirs.Add(AppContext.BaseDirectory);
        dirs.Add(Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native"));
        string? torchDir = Path.GetDirectoryName(typeof(torch).Assembly.Location);
        if (!string.IsNullOrEmpty(torchDir))
        {
            dirs.Add(torchDir);
            dirs.Add(Path.Combine(torchDir, "runtimes", "linux-x64", "native"));
            dirs.Add(Path.GetFullPath(Path.Combine(torchDir, "..", "..", "runtimes", "linux-x64", "native")));
        }
        foreach (var d in dirs.Distinct())
        {
            var candidate = Path.Combine(d, file);
            if (File.Exists(candidate)) return candidate;
        }
        trace.Add($"{file} not found in: {string.Join(", ", dirs.Distinct())}");
        return null;
    }
}

/// <summary>The native libtorch backend could not be loaded; <see cref="Exception.Message"/> lists every attempt.</summary>
public sealed class TorchRuntimeException : Exception
{
    /// <summary>Creates the exception from the loader's trace.</summary>
    public TorchRuntimeException(IReadOnlyList<string> trace, Exception? inner)
        : base("Could not load the native libtorch backend. Tried:\n  " + string.Join("\n  ", trace) +
               $"\nSet {TorchRuntimeOptions.LibTorchEnvironmentVariable} to an existing libtorch folder, or reference a TorchSharp backend package (TorchSharp-cpu, TorchSharp-cuda-linux, TorchSharp-cuda-windows).", inner)
        => Trace = trace;

    /// <summary>Each step the loader tried.</summary>
    public IReadOnlyList<string> Trace { get; }
}
