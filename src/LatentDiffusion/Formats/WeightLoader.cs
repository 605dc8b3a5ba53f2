using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Formats;

/// <summary>Copies weights named as the reference names them into a module's parameters and buffers, checking names and shapes.</summary>
public static class WeightLoader
{
    // How many modules BuildChecked has built for real since the thread started (tests assert that a refused file builds none).
    [ThreadStatic] private static int t_modulesBuilt;

    internal static int ModulesBuilt => t_modulesBuilt;

    // How many name and shape checks (Check) have run since the thread started (tests assert that loading checks each component once).
    [ThreadStatic] private static int t_checksMade;

    internal static int ChecksMade => t_checksMade;

    /// <summary>
    /// Builds a module only after checking that <paramref name="weights"/> fit it exactly: the module is first built on
    /// PyTorch's <c>meta</c> device (shapes without storage, so nothing is allocated from the config's numbers), its
    /// parameter and buffer names and shapes are compared with the weights' (see <see cref="Check"/>), and only then is it
    /// built on <paramref name="device"/> and loaded (see <see cref="Load"/>). The real build draws no initial values for
    /// the library's linear and convolution layers (every parameter is then read from <paramref name="weights"/>).
    /// </summary>
    /// <param name="build">Builds the module on the device it is given.</param>
    /// <param name="device">Where the real module goes.</param>
    /// <param name="weights">The tensors available, by the module's names.</param>
    /// <param name="component">What is being loaded, for messages.</param>
    /// <param name="ignoredExtras">Names in <paramref name="weights"/> that the module may lack without error.</param>
    /// <param name="optionalBuffers">Module buffers that may be absent from <paramref name="weights"/>.</param>
    /// <exception cref="InvalidDataException">The weights do not fit the module, or a tensor holds NaN or infinite values.</exception>
    public static T BuildChecked<T>(Func<Device, T> build, Device device, IReadOnlyDictionary<string, TensorRef> weights, string component,
        IEnumerable<string>? ignoredExtras = null, IEnumerable<string>? optionalBuffers = null) where T : nn.Module
    {
        ArgumentNullException.ThrowIfNull(build);
        ArgumentNullException.ThrowIfNull(weights);
        var ignored = ignoredExtras?.ToList();
        var optional = optionalBuffers?.ToList();
        using (var skeleton = build(new Device(DeviceType.META)))
            Check(skeleton, weights, component, ignored, optional);
        return BuildPrechecked(build, device, weights, component);
    }

    /// <summary>
    /// As <see cref="BuildChecked"/> for weights that the caller has already checked against a skeleton of the same
    /// module (<see cref="Check"/>): builds the module on <paramref name="device"/> and loads it without checking the
    /// names and shapes again (a skeleton of the SD 1.5 UNet takes about half a second to build and compare). Each tensor
    /// is still checked for NaN and infinite values as it is read.
    /// </summary>
    internal static T BuildPrechecked<T>(Func<Device, T> build, Device device, IReadOnlyDictionary<string, TensorRef> weights, string component) where T : nn.Module
    {
        // Every parameter is about to be overwritten from the file, so none is first filled with random values.
        T model;
        using (Runtime.ParameterInitialization.Skip()) model = build(device);
        t_modulesBuilt++;
        try
        {
            LoadPrechecked(model, weights, component);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return model;
    }

    /// <summary>
    /// Checks, without reading any tensor data, that <paramref name="weights"/> hold exactly the parameters and buffers of
    /// <paramref name="module"/> (which may live on the <c>meta</c> device): every name present, none unexpected, every
    /// shape equal, and floating-point data for floating-point parameters. All problems are reported together.
    /// </summary>
    /// <param name="module">The model, or its skeleton on the <c>meta</c> device.</param>
    /// <param name="weights">The tensors available, by the module's names.</param>
    /// <param name="component">What is being loaded, for messages.</param>
    /// <param name="ignoredExtras">Names in <paramref name="weights"/> that the module may lack without error.</param>
    /// <param name="optionalBuffers">Module buffers that may be absent from <paramref name="weights"/>.</param>
    /// <exception cref="InvalidDataException">The message names the file and the missing, unexpected, mis-shaped or mistyped tensors (the first few of each).</exception>
    public static void Check(nn.Module module, IReadOnlyDictionary<string, TensorRef> weights, string component,
        IEnumerable<string>? ignoredExtras = null, IEnumerable<string>? optionalBuffers = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(weights);
        t_checksMade++;
        var targets = Targets(module);
        var optional = new HashSet<string>(optionalBuffers ?? [], StringComparer.Ordinal);
        var ignored = new HashSet<string>(ignoredExtras ?? [], StringComparer.Ordinal);
        var missing = targets.Keys.Where(k => !weights.ContainsKey(k) && !optional.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        var unexpected = weights.Keys.Where(k => !targets.ContainsKey(k) && !ignored.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        var misShaped = new List<string>();
        var mistyped = new List<string>();
        foreach (var (name, target) in targets.OrderBy(t => t.Key, StringComparer.Ordinal))
        {
            if (!weights.TryGetValue(name, out var source)) continue;
            if (!source.Shape.SequenceEqual(target.shape))
                misShaped.Add($"{source} is [{string.Join(", ", source.Shape)}], expected '{name}' [{string.Join(", ", target.shape)}]");
            if (IsFloat(target.dtype) && source.File.Entries.TryGetValue(source.Key, out var entry) && !IsFloat(entry.ScalarType))
                mistyped.Add($"{source} is {entry.DType}");
        }
        if (missing.Count == 0 && unexpected.Count == 0 && misShaped.Count == 0 && mistyped.Count == 0) return;
        var parts = new List<string>();
        string where = weights.Values.Select(w => w.File.Path).Distinct().FirstOrDefault() ?? "(no file)";
        if (missing.Count > 0) parts.Add($"{missing.Count} tensor(s) missing from '{where}': {Sample(missing)}");
        if (unexpected.Count > 0) parts.Add($"{unexpected.Count} unexpected tensor(s) in '{where}' that the configured architecture has no place for: {Sample(unexpected)}");
        if (misShaped.Count > 0) parts.Add($"{misShaped.Count} tensor(s) of the wrong shape: {Sample(misShaped)}");
        if (mistyped.Count > 0) parts.Add($"{mistyped.Count} tensor(s) hold integer or boolean data where the model has floating-point weights: {Sample(mistyped)}");
        throw new InvalidDataException($"Cannot load {component}: {string.Join("; ", parts)}. Does the config.json match the weights?");
    }

    /// <summary>
    /// Loads every parameter and buffer of <paramref name="module"/> from <paramref name="weights"/> (keys are the module's own
    /// names), converting each tensor to the parameter's dtype and device as it is read, so the model is never held twice.
    /// </summary>
    /// <param name="module">The model, already on its device and dtype.</param>
    /// <param name="weights">The tensors available, by the module's names.</param>
    /// <param name="component">What is being loaded, for messages (for example "unet from 'models/sd/unet'").</param>
    /// <param name="ignoredExtras">Names in <paramref name="weights"/> that the module may lack without error (for example <c>position_ids</c>).</param>
    /// <param name="optionalBuffers">Module buffers that may be absent from <paramref name="weights"/> (they keep their computed value).</param>
    /// <exception cref="InvalidDataException">A tensor is missing, unexpected, of the wrong shape, integer or boolean where the
    /// model has floating-point weights (see <see cref="Check"/>), or holds NaN or infinite values (after conversion to the
    /// model's dtype); the message names the file, the tensor, expected and actual.</exception>
    public static void Load(nn.Module module, IReadOnlyDictionary<string, TensorRef> weights, string component,
        IEnumerable<string>? ignoredExtras = null, IEnumerable<string>? optionalBuffers = null)
    {
        Check(module, weights, component, ignoredExtras, optionalBuffers);
        LoadPrechecked(module, weights, component);
    }

    // Load without the name and shape check (the caller has made it). Only optional buffers may lack a tensor (they keep
    // their computed value): a parameter without one is refused, because a module built without initial values (see
    // BuildPrechecked) would otherwise run on whatever the allocator left there.
    private static void LoadPrechecked(nn.Module module, IReadOnlyDictionary<string, TensorRef> weights, string component)
    {
        var unwritten = module.named_parameters().Select(p => p.name).Where(name => !weights.ContainsKey(name)).ToList();
        if (unwritten.Count > 0)
            throw new InvalidDataException($"Cannot load {component}: {unwritten.Count} parameter(s) have no tensor in the weights and would be left uninitialised: {Sample(unwritten)}.");
        using var noGrad = no_grad();
        using var staging = new StagingBuffer();
        foreach (var (name, target) in Targets(module))
        {
            if (!weights.TryGetValue(name, out var source)) continue;
            if (source.Reshape is null && target.device_type == DeviceType.CPU && target.is_contiguous())
            {
                Stream(source, target, staging, component);
                continue;
            }
            using var value = source.Load(target.dtype, target.device);
            if (value.is_floating_point() && !AllFinite(value))
                throw NotFinite(component, source, value.dtype);
            target.copy_(value);
        }
    }

    /// <summary>
    /// Reads a stored tensor into a CPU target piece by piece: straight into the target's storage when the dtypes agree,
    /// otherwise through one small reused staging buffer and an in-place conversion. No whole-tensor temporary is made,
    /// so loading a model leaves no freed blocks behind between its weights (which the C allocator would keep).
    /// </summary>
    private static unsafe void Stream(TensorRef source, Tensor target, StagingBuffer staging, string component)
    {
        var entry = source.File.Entries[source.Key];
        long count = entry.ElementCount;
        if (count == 0) return;
        int size = (int)((entry.End - entry.Begin) / count);
        using var flat = target.view(-1);
        bool floating = target.is_floating_point();
        byte* dst = (byte*)Runtime.TorchRuntime.DataPointer(flat);
        int targetSize = (int)target.element_size();
        if (entry.ScalarType == target.dtype)
        {
            source.File.ReadBytes(entry, 0, dst, count * size);
            if (floating && !Finite(flat, dst, count)) throw NotFinite(component, source, target.dtype);
            return;
        }
        var buffer = staging.For(entry.ScalarType);
        byte* staged = (byte*)Runtime.TorchRuntime.DataPointer(buffer);
        for (long at = 0; at < count; at += StagingBuffer.Elements)
        {
            long n = Math.Min(StagingBuffer.Elements, count - at);
            source.File.ReadBytes(entry, at * size, staged, n * size);
            using var from = buffer.narrow(0, 0, n);
            using var to = flat.narrow(0, at, n);
            to.copy_(from);
            // Checked after the conversion, where an overflow (float32 to float16) shows, while the piece is in cache.
            if (floating && !Finite(to, dst + at * targetSize, n)) throw NotFinite(component, source, target.dtype);
        }
    }

    // The bits of the held values when their dtype is one FiniteBits reads, else libtorch's isfinite.
    private static unsafe bool Finite(Tensor values, byte* data, long count)
        => FiniteBits.Supports(values.dtype) ? FiniteBits.AllFinite(data, count, values.dtype) : AllFinite(values);

    // Both temporaries are disposed at once: a bool mask left to the finalizer is a byte per weight that the GC does not see.
    private static bool AllFinite(Tensor value)
    {
        using var mask = isfinite(value);
        using var all = mask.all();
        return all.item<bool>();
    }

    private static InvalidDataException NotFinite(string component, TensorRef source, ScalarType dtype)
        => new($"Cannot load {component}: tensor {source} holds NaN or infinite values{(dtype == source.File.Entries[source.Key].ScalarType ? "" : $" (after conversion to {dtype})")}; a model with such weights produces only NaN.");

    /// <summary>One staging tensor per stored dtype, reused for every weight of a load.</summary>
    private sealed class StagingBuffer : IDisposable
    {
        public const long Elements = 1 << 21;

        private readonly Dictionary<ScalarType, Tensor> _buffers = new();

        public Tensor For(ScalarType dtype)
        {
            if (!_buffers.TryGetValue(dtype, out var buffer)) _buffers[dtype] = buffer = empty(Elements, dtype);
            return buffer;
        }

        public void Dispose()
        {
            foreach (var b in _buffers.Values) b.Dispose();
        }
    }

    private static bool IsFloat(ScalarType type) => type is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64;

    private static Dictionary<string, Tensor> Targets(nn.Module module)
    {
        var targets = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, p) in module.named_parameters()) targets[name] = p;
        foreach (var (name, b) in module.named_buffers()) targets[name] = b;
        return targets;
    }

    private static string Sample(List<string> names) => string.Join(", ", names.Take(8)) + (names.Count > 8 ? $", ... ({names.Count - 8} more)" : "");
}
