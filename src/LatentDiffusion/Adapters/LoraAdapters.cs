using TorchSharp;

namespace LatentDiffusion.Adapters;

/// <summary>
/// The LoRAs loaded into one model (a pipeline's text encoder(s) and UNet): load and unload them, set their scales,
/// fuse them into the weights and unfuse them again. Unfused, each updates its modules at run time, so every
/// generation can choose its LoRAs and scales (<see cref="Use"/>); fused, it costs nothing per step but its scale is
/// fixed until it is unfused.
/// </summary>
/// <remarks>
/// Loading, unloading, fusing, unfusing and <see cref="SetScale"/> change the model and are refused with
/// <see cref="InvalidOperationException"/> while a generation runs. Fusing keeps a copy of every weight it changes (in CPU
/// memory, the size of those weights) so that unfusing restores them exactly.
/// </remarks>
public sealed class LoraAdapters : IDisposable
{
    private readonly List<LoraTarget> _targets;
    private readonly Dictionary<string, LoraModuleIndex> _indexes = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Component, string Path), LoraLayer> _layers = [];
    private readonly List<LoraAdapter> _adapters = [];
    private readonly Dictionary<LoraAdapter, List<LoraLayer>> _layersOf = [];
    private readonly AsyncLocal<IReadOnlyDictionary<LoraAdapter, double>?> _current = new();
    private readonly object _lock = new();
    private int _running;
    private bool _disposed;

    internal LoraAdapters(IEnumerable<LoraTarget> targets)
    {
        _targets = targets.ToList();
    }

    /// <summary>The LoRAs loaded, in load order.</summary>
    public IReadOnlyList<LoraAdapter> Loaded
    {
        get { lock (_lock) return _adapters.ToList(); }
    }

    /// <summary>The model parts a LoRA can update here (<c>unet</c>, <c>text_encoder</c>, ...).</summary>
    public IReadOnlyList<string> Components => _targets.Select(t => t.Component).ToList();

    /// <summary>
    /// Reads a LoRA file or diffusers LoRA folder (<see cref="LoraFile.Read"/>) and loads it under <paramref name="name"/>
    /// (the file or folder name without extension when null) with <paramref name="scale"/>. Every module the file names must exist in the model with
    /// matching shapes; otherwise nothing is loaded and the error names the modules.
    /// </summary>
    /// <returns>The loaded adapter.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a valid LoRA, or names modules the model lacks or whose shapes differ.</exception>
    /// <exception cref="NotSupportedException">The file is a LoRA variant this library does not compute.</exception>
    /// <exception cref="ArgumentException">A LoRA of that name is loaded already, or the scale is not finite.</exception>
    /// <exception cref="InvalidOperationException">A generation is running.</exception>
    public LoraAdapter Load(string path, string? name = null, double scale = 1.0)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var file = LoraFile.Read(path);
        return Load(file, name ?? System.IO.Path.GetFileNameWithoutExtension(System.IO.Path.TrimEndingDirectorySeparator(path)), scale);
    }

    /// <summary>Loads an already read LoRA file (its tensors are copied; the file may be disposed afterwards).</summary>
    /// <inheritdoc cref="Load(string, string?, double)"/>
    public LoraAdapter Load(LoraFile file, string name, double scale = 1.0)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentException.ThrowIfNullOrEmpty(name);
        CheckScale(scale, name);
        lock (_lock)
        {
            ThrowIfBusy("load a LoRA");
            if (_adapters.Any(a => a.Name == name))
                throw new ArgumentException($"A LoRA named '{name}' is loaded already; unload it or choose another name.", nameof(name));

            // Resolve every module before touching the model: a file either loads whole or not at all.
            var resolved = new List<(LoraModule Lora, LoraModuleIndex Index, string Path)>();
            var problems = new List<string>();
            var seen = new Dictionary<(string, string), string>();
            foreach (var lora in file.Modules)
            {
                var index = IndexFor(lora.Component);
                string? path = index?.Resolve(lora);
                if (index is null) { problems.Add($"'{lora.Key}': this model has no {lora.Component} (or not one built of this library's modules)"); continue; }
                if (path is null) { problems.Add($"'{lora.Key}': no such module in the {lora.Component}"); continue; }
                if (seen.TryGetValue((lora.Component, path), out var other))
                { problems.Add($"'{lora.Key}' and '{other}' both update {lora.Component} module '{path}'"); continue; }
                seen[(lora.Component, path)] = lora.Key;
                if (LoraLayer.Mismatch(index.Modules[path], lora) is { } mismatch)
                { problems.Add($"'{lora.Key}' ({lora.Component} module '{path}'): {mismatch}"); continue; }
                resolved.Add((lora, index, path));
            }
            if (problems.Count > 0)
                throw new InvalidDataException($"LoRA file '{file.Path}' does not fit this model: {problems.Count} of its {file.ModuleCount} modules " +
                    $"cannot be applied: {string.Join("; ", problems.Take(10))}{(problems.Count > 10 ? $"; and {problems.Count - 10} more" : "")}.");

            var adapter = new LoraAdapter(name, file.Path, file.Format, scale, resolved.Count);
            var layers = new List<LoraLayer>();
            foreach (var (lora, index, path) in resolved)
            {
                var key = (index.Target.Component, path);
                if (!_layers.TryGetValue(key, out var layer))
                    _layers[key] = layer = new LoraLayer(index.Modules[path], path, ScaleOf);
                layer.Add(adapter, lora);
                layers.Add(layer);
            }
            _adapters.Add(adapter);
            _layersOf[adapter] = layers;
            return adapter;
        }
    }

    /// <summary>Removes a LoRA (unfusing it first when fused): the model computes as before it was loaded.</summary>
    /// <exception cref="KeyNotFoundException">No LoRA of that name is loaded.</exception>
    /// <exception cref="InvalidOperationException">A generation is running.</exception>
    public void Unload(string name)
    {
        lock (_lock)
        {
            ThrowIfBusy("unload a LoRA");
            var adapter = Find(name);
            foreach (var layer in _layersOf[adapter])
            {
                layer.Remove(adapter);
                if (layer.IsEmpty)
                {
                    layer.Dispose();
                    foreach (var key in _layers.Where(kv => kv.Value == layer).Select(kv => kv.Key).ToList()) _layers.Remove(key);
                }
            }
            _layersOf.Remove(adapter);
            _adapters.Remove(adapter);
        }
    }

    /// <summary>Sets the scale a LoRA is applied with when a generation names no LoRAs.</summary>
    /// <exception cref="KeyNotFoundException">No LoRA of that name is loaded.</exception>
    /// <exception cref="InvalidOperationException">It is fused (unfuse it first), or a generation is running.</exception>
    public void SetScale(string name, double scale)
    {
        lock (_lock)
        {
            ThrowIfBusy("change a LoRA's scale");
            var adapter = Find(name);
            CheckScale(scale, name);
            if (adapter.IsFused)
                throw new InvalidOperationException($"LoRA '{name}' is fused at scale {adapter.Scale:G6}; unfuse it to change its scale.");
            adapter.Scale = scale;
        }
    }

    /// <summary>
    /// Fuses a LoRA (all unfused ones when <paramref name="name"/> is null) into the weights: W + scale · alpha / rank ·
    /// up · down, with <paramref name="scale"/> or the LoRA's own <see cref="LoraAdapter.Scale"/>. Generations then run
    /// at the speed of the plain model; the result equals the unfused LoRA within float rounding.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No LoRA of that name is loaded.</exception>
    /// <exception cref="InvalidOperationException">A generation is running.</exception>
    public void Fuse(string? name = null, double? scale = null)
    {
        lock (_lock)
        {
            ThrowIfBusy("fuse a LoRA");
            if (scale is double s) CheckScale(s, name ?? "(all)");
            var chosen = name is null ? _adapters.Where(a => !a.IsFused).ToList() : [Find(name)];
            foreach (var adapter in chosen)
            {
                if (adapter.IsFused && (scale is null || scale == adapter.Scale)) continue;
                double fuseAt = scale ?? adapter.Scale;
                foreach (var layer in _layersOf[adapter]) layer.Fuse(adapter, fuseAt);
                adapter.Scale = fuseAt;
                adapter.IsFused = true;
            }
        }
    }

    /// <summary>
    /// Takes a LoRA (all fused ones when <paramref name="name"/> is null) out of the weights again, restoring them exactly
    /// (from the copy kept when fusing); the LoRA stays loaded and is applied at run time with its scale.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No LoRA of that name is loaded.</exception>
    /// <exception cref="InvalidOperationException">A generation is running.</exception>
    public void Unfuse(string? name = null)
    {
        lock (_lock)
        {
            ThrowIfBusy("unfuse a LoRA");
            var chosen = name is null ? _adapters.Where(a => a.IsFused).ToList() : [Find(name)];
            foreach (var adapter in chosen.Where(a => a.IsFused))
            {
                foreach (var layer in _layersOf[adapter]) layer.Unfuse(adapter);
                adapter.IsFused = false;
            }
        }
    }

    /// <summary>
    /// Applies <paramref name="weights"/> until the returned scope is disposed, on this thread's (async) flow: exactly the
    /// named LoRAs with their scales, the others left out. Null applies every LoRA with its own scale. A fused LoRA is
    /// part of the weights: it must be named with its fused scale (or the list be null). Model changes (load, fuse, ...)
    /// are refused while a scope is open.
    /// </summary>
    /// <exception cref="ArgumentException">A name is not loaded, appears twice, or a scale is not finite.</exception>
    /// <exception cref="InvalidOperationException">The list leaves out a fused LoRA or gives it another scale.</exception>
    public IDisposable Use(IReadOnlyList<LoraWeight>? weights)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            Dictionary<LoraAdapter, double>? scales = null;
            if (weights is not null)
            {
                scales = [];
                foreach (var w in weights)
                {
                    if (w is null) throw new ArgumentException("The LoRA list contains null.", nameof(weights));
                    var adapter = _adapters.FirstOrDefault(a => a.Name == w.Name)
                        ?? throw new ArgumentException($"No LoRA named '{w.Name}' is loaded (loaded: {LoadedNames()}).", nameof(weights));
                    CheckScale(w.Scale, w.Name);
                    if (!scales.TryAdd(adapter, w.Scale))
                        throw new ArgumentException($"LoRA '{w.Name}' is named twice.", nameof(weights));
                }
                foreach (var fused in _adapters.Where(a => a.IsFused))
                    if (!scales.TryGetValue(fused, out var s) || s != fused.Scale)
                        throw new InvalidOperationException($"LoRA '{fused.Name}' is fused into the weights at scale {fused.Scale:G6}; " +
                            $"a generation cannot {(scales.ContainsKey(fused) ? "change its scale" : "leave it out")}. Unfuse it first.");
            }
            _running++;
            var previous = _current.Value;
            _current.Value = scales;
            return new Scope(this, previous);
        }
    }

    private sealed class Scope(LoraAdapters owner, IReadOnlyDictionary<LoraAdapter, double>? previous) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) != 0) return;
            owner._current.Value = previous;
            lock (owner._lock) owner._running--;
        }
    }

    private double ScaleOf(LoraAdapter adapter)
        => _current.Value is { } scales ? scales.GetValueOrDefault(adapter) : adapter.Scale;

    private LoraModuleIndex? IndexFor(string component)
    {
        if (_indexes.TryGetValue(component, out var index)) return index;
        var target = _targets.FirstOrDefault(t => t.Component == component);
        if (target is null) return null;
        return _indexes[component] = new LoraModuleIndex(target);
    }

    private LoraAdapter Find(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _adapters.FirstOrDefault(a => a.Name == name)
            ?? throw new KeyNotFoundException($"No LoRA named '{name}' is loaded (loaded: {LoadedNames()}).");
    }

    private string LoadedNames() => _adapters.Count == 0 ? "none" : string.Join(", ", _adapters.Select(a => $"'{a.Name}'"));

    private void ThrowIfBusy(string what)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_running > 0)
            throw new InvalidOperationException($"Cannot {what} while a generation runs; wait for it to finish.");
    }

    private static void CheckScale(double scale, string name)
    {
        if (!double.IsFinite(scale))
            throw new ArgumentException($"The scale of LoRA '{name}' must be a finite number; got {scale}.", nameof(scale));
    }

    /// <summary>Unfuses and removes every LoRA: the model computes as before any was loaded.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            foreach (var layer in _layers.Values) layer.Dispose();
            _layers.Clear();
            _layersOf.Clear();
            _adapters.Clear();
            _disposed = true;
        }
    }
}
