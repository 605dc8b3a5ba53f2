namespace LatentDiffusion.Adapters;

/// <summary>A LoRA loaded into a model (<see cref="LoraAdapters"/>): its name, file, scale and whether it is fused.</summary>
public sealed class LoraAdapter
{
    internal LoraAdapter(string name, string path, LoraFormat format, double scale, int moduleCount)
    {
        Name = name;
        Path = path;
        Format = format;
        Scale = scale;
        ModuleCount = moduleCount;
    }

    /// <summary>The name it is chosen by in <see cref="LoraWeight"/> (by default the file name without extension).</summary>
    public string Name { get; }

    /// <summary>The file it was read from.</summary>
    public string Path { get; }

    /// <summary>How the file names its tensors.</summary>
    public LoraFormat Format { get; }

    /// <summary>The scale used when a generation names no LoRAs (<see cref="LoraAdapters.SetScale"/>); the fused scale while fused.</summary>
    public double Scale { get; internal set; }

    /// <summary>True while it is fused into the weights (<see cref="LoraAdapters.Fuse"/>).</summary>
    public bool IsFused { get; internal set; }

    /// <summary>The number of model modules it updates.</summary>
    public int ModuleCount { get; }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} ({ModuleCount} modules, scale {Scale:G6}{(IsFused ? ", fused" : "")})";
}
