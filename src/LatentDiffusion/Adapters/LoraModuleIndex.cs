using TorchSharp;
using static TorchSharp.torch;
using TorchSharp.Modules;

namespace LatentDiffusion.Adapters;

/// <summary>
/// The modules of one <see cref="LoraTarget"/> a LoRA can update (every <see cref="Linear"/> and <see cref="Conv2d"/>),
/// under every name a LoRA file may use for them: the reference's dotted path (PEFT), the same with underscores (kohya),
/// and for a UNet the SGM names, dotted and with underscores. kohya's underscores are resolved by looking the name up
/// in this index built from the real module tree, never by guessing which underscores were dots.
/// </summary>
internal sealed class LoraModuleIndex
{
    private readonly Dictionary<string, string> _flat = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _dotted = new(StringComparer.Ordinal);
    private readonly HashSet<string> _ambiguous = new(StringComparer.Ordinal);

    /// <summary>The part indexed.</summary>
    public LoraTarget Target { get; }

    /// <summary>The updatable modules by their path in <see cref="LoraTarget.Root"/>.</summary>
    public IReadOnlyDictionary<string, nn.Module> Modules { get; }

    public LoraModuleIndex(LoraTarget target)
    {
        Target = target;
        var modules = new Dictionary<string, nn.Module>(StringComparer.Ordinal);
        foreach (var (name, module) in target.Root.named_modules())
            if (LoraLayer.Accepts(module)) modules[name] = module;
        Modules = modules;
        foreach (var path in modules.Keys) Add(target.ReferencePrefix + path, path);
        if (target.SgmNames)
            foreach (var (path, sgm) in SgmUNetNames.ToSgm(modules.Keys)) Add(sgm, path);
    }

    private void Add(string name, string path)
    {
        _dotted.TryAdd(name, path);
        string flat = name.Replace('.', '_');
        if (_flat.TryGetValue(flat, out var existing) && existing != path) _ambiguous.Add(flat);
        else _flat[flat] = path;
    }

    /// <summary>The path of the module <paramref name="module"/> names; null when this part has no such module.</summary>
    /// <exception cref="InvalidDataException">A kohya name fits two modules.</exception>
    public string? Resolve(LoraModule module)
    {
        if (module.Dotted) return _dotted.GetValueOrDefault(module.Name);
        if (_ambiguous.Contains(module.Name))
            throw new InvalidDataException($"LoRA module '{module.Key}' could name more than one module of the {Target.Component}.");
        return _flat.GetValueOrDefault(module.Name);
    }
}
