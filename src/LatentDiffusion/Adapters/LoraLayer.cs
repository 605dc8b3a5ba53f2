using LatentDiffusion.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Adapters;

/// <summary>
/// The LoRA seam of one <see cref="Linear"/> or <see cref="Conv2d"/>: a forward hook that adds, for every adapter on the
/// module, scale · alpha / rank · up(down(x)) to the module's output (the down projection of a convolution with the
/// module's own stride, padding and dilation, the up projection 1×1), and the fusing of adapters into the weight.
/// </summary>
/// <remarks>
/// The model's blocks call these modules through <c>call</c> (which runs hooks) rather than <c>forward</c>; the seam tests
/// hold every block to that. Fusing keeps the original weight (in CPU memory) and rebuilds the fused one from it as original +
/// Σ scale · alpha / rank · up · down (in float32), so unfusing restores the original bit for bit.
/// </remarks>
internal sealed class LoraLayer : IDisposable
{
    private readonly nn.Module<Tensor, Tensor> _module;
    private readonly string _path;
    private readonly List<Entry> _entries = [];
    private readonly Func<LoraAdapter, double> _scaleOf;
    private readonly IDisposable _hook;
    private Tensor? _original;
    private bool _disposed;

    private sealed class Entry(LoraAdapter adapter, Tensor down, Tensor up, double alphaOverRank)
    {
        public LoraAdapter Adapter { get; } = adapter;
        public Tensor Down { get; } = down;
        public Tensor Up { get; } = up;
        public double AlphaOverRank { get; } = alphaOverRank;
        public double? FusedScale { get; set; }
    }

    private sealed class Remover(Action remove) : IDisposable
    {
        public void Dispose() => remove();
    }

    /// <summary>Hooks <paramref name="module"/>; <paramref name="scaleOf"/> gives each adapter's scale for the current call.</summary>
    public LoraLayer(nn.Module module, string path, Func<LoraAdapter, double> scaleOf)
    {
        _path = path;
        _scaleOf = scaleOf;
        switch (module)
        {
            case Linear or UpcastLayer:
                break;
            case Conv2d conv:
                if (conv.groups != 1 || conv.padding_mode != PaddingModes.Zeros || conv.padding is null)
                    throw new NotSupportedException($"Module '{path}' is a grouped or non-zero-padded convolution; a LoRA cannot be applied to it.");
                break;
            default:
                throw new NotSupportedException($"Module '{path}' is a {module.GetType().Name}; a LoRA applies to Linear and Conv2d modules.");
        }
        _module = (nn.Module<Tensor, Tensor>)module;
        _hook = new Remover(_module.register_forward_hook(Hook).remove);
    }

    /// <summary>True for the modules a LoRA applies to: linear layers and convolutions, whatever dtype they hold their weights in.</summary>
    public static bool Accepts(nn.Module module) => module is Linear or Conv2d or UpcastLayer;

    /// <summary>The module's path in its part.</summary>
    public string Path => _path;

    /// <summary>True when no adapter is left on the module.</summary>
    public bool IsEmpty => _entries.Count == 0;

    private Tensor Weight => _module switch
    {
        Linear l => l.weight!,
        Conv2d c => c.weight,
        UpcastLayer u => u.weight,
        _ => throw new InvalidOperationException(),
    };

    // The dtype the module computes in, which its inputs (and so the adapters' copies) have: the weights' own, except for
    // the modules that hold them narrower.
    private ScalarType ComputeDType => _module switch
    {
        UpcastLayer u => u.ComputeDType,
        _ => Weight.dtype,
    };

    // A convolution's stride, padding and dilation (the down projection of a convolution LoRA uses the module's).
    private static (long[] Stride, long[] Padding, long[] Dilation)? ConvolutionOf(nn.Module module) => module switch
    {
        Conv2d c => (c.stride, c.padding!, c.dilation),
        UpcastConv2d u => ([u.Stride, u.Stride], [u.Padding, u.Padding], [1, 1]),
        _ => null,
    };

    /// <summary>
    /// Checks that <paramref name="lora"/> fits the module: widths, and for a convolution a down kernel equal to the
    /// module's. Returns a problem description, or null when it fits.
    /// </summary>
    public static string? Mismatch(nn.Module module, LoraModule lora)
    {
        switch (module)
        {
            case Linear linear:
                return LinearMismatch(lora, linear.in_features, linear.out_features);
            case UpcastLinear linear:
                return LinearMismatch(lora, linear.InFeatures, linear.OutFeatures);
            case Conv2d conv:
                return ConvolutionMismatch(lora, conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.kernel_size[1]);
            case UpcastConv2d conv:
                return ConvolutionMismatch(lora, conv.InChannels, conv.OutChannels, conv.KernelSize, conv.KernelSize);
            default:
                return $"a {module.GetType().Name} cannot take a LoRA";
        }
    }

    private static string? LinearMismatch(LoraModule lora, long inFeatures, long outFeatures)
    {
        if (lora.Down.dim() == 4 && (lora.Down.shape[2] != 1 || lora.Down.shape[3] != 1))
            return $"a {lora.Down.shape[2]}x{lora.Down.shape[3]} convolution LoRA for a linear module";
        if (lora.InFeatures != inFeatures || lora.OutFeatures != outFeatures)
            return $"LoRA maps {lora.InFeatures} -> {lora.OutFeatures} (rank {lora.Rank}), the module {inFeatures} -> {outFeatures}";
        return null;
    }

    private static string? ConvolutionMismatch(LoraModule lora, long inChannels, long outChannels, long kernelH, long kernelW)
    {
        long kh = lora.Down.dim() == 4 ? lora.Down.shape[2] : 1, kw = lora.Down.dim() == 4 ? lora.Down.shape[3] : 1;
        if (lora.InFeatures != inChannels || lora.OutFeatures != outChannels)
            return $"LoRA maps {lora.InFeatures} -> {lora.OutFeatures} channels (rank {lora.Rank}), the module {inChannels} -> {outChannels}";
        if (kh != kernelH || kw != kernelW)
            return $"LoRA down kernel {kh}x{kw}, the module's kernel {kernelH}x{kernelW}";
        return null;
    }

    /// <summary>Adds an adapter's update; its tensors are copied to the module's device and dtype, in the module's shapes.</summary>
    public void Add(LoraAdapter adapter, LoraModule lora)
    {
        var weight = Weight;
        Tensor down, up;
        if (ConvolutionOf(_module) is not null)
        {
            down = lora.Down.dim() == 4 ? lora.Down : lora.Down.view(lora.Down.shape[0], lora.Down.shape[1], 1, 1);
            up = lora.Up.dim() == 4 ? lora.Up : lora.Up.view(lora.Up.shape[0], lora.Up.shape[1], 1, 1);
        }
        else
        {
            down = lora.Down.flatten(1);
            up = lora.Up.flatten(1);
        }
        var dtype = ComputeDType;
        _entries.Add(new Entry(adapter, Copy(down, dtype, weight.device), Copy(up, dtype, weight.device), lora.Alpha / lora.Rank));
    }

    private static Tensor Copy(Tensor t, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        return t.to(dtype, device).clone().MoveToOuterDisposeScope();
    }

    /// <summary>Removes an adapter's update (unfusing it first when fused).</summary>
    public void Remove(LoraAdapter adapter)
    {
        var entry = _entries.FirstOrDefault(e => e.Adapter == adapter);
        if (entry is null) return;
        if (entry.FusedScale is not null)
        {
            entry.FusedScale = null;
            Refuse();
        }
        _entries.Remove(entry);
        entry.Down.Dispose();
        entry.Up.Dispose();
    }

    /// <summary>Fuses an adapter into the weight at <paramref name="scale"/>; the hook then leaves it out.</summary>
    public void Fuse(LoraAdapter adapter, double scale)
    {
        var entry = _entries.FirstOrDefault(e => e.Adapter == adapter);
        if (entry is null) return;
        entry.FusedScale = scale;
        Refuse();
    }

    /// <summary>Takes an adapter out of the weight again; the hook applies it at run time from then on.</summary>
    public void Unfuse(LoraAdapter adapter)
    {
        var entry = _entries.FirstOrDefault(e => e.Adapter == adapter);
        if (entry?.FusedScale is null) return;
        entry.FusedScale = null;
        Refuse();
    }

    /// <summary>W = W₀ + Σ over fused adapters of scale · alpha / rank · up · down, from the kept W₀; W₀ itself when none is fused.</summary>
    private void Refuse()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var weight = Weight;
        var fused = _entries.Where(e => e.FusedScale is not null).ToList();
        if (fused.Count == 0)
        {
            if (_original is null) return;
            weight.copy_(_original);
            _original.Dispose();
            _original = null;
            return;
        }
        if (_original is null)
        {
            // Kept in CPU memory: fusing is rare, device memory is scarce, and the copy there and back is exact.
            _original = weight.detach().to(CPU).clone();
            _original.MoveToOuterDisposeScope();
        }
        var sum = _original.to(ScalarType.Float32, weight.device, copy: true);
        foreach (var e in fused)
        {
            var up = e.Up.to(ScalarType.Float32).flatten(1);
            var down = e.Down.to(ScalarType.Float32).flatten(1);
            sum.add_(up.matmul(down).view(weight.shape), alpha: e.FusedScale!.Value * e.AlphaOverRank);
        }
        weight.copy_(sum);
    }

    private Tensor Hook(nn.Module<Tensor, Tensor> module, Tensor input, Tensor output)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Tensor result = output;
        foreach (var e in _entries)
        {
            if (e.FusedScale is not null) continue;
            double scale = _scaleOf(e.Adapter);
            if (scale == 0) continue;
            double factor = scale * e.AlphaOverRank;
            using var scope = NewDisposeScope();
            Tensor delta;
            if (ConvolutionOf(module) is var (stride, padding, dilation))
            {
                var h = nn.functional.conv2d(input, e.Down, null, stride, padding, dilation);
                delta = nn.functional.conv2d(h, e.Up);
            }
            else
            {
                delta = nn.functional.linear(nn.functional.linear(input, e.Down), e.Up);
            }
            // In place when nothing records gradients: the output is the module's fresh result, which the caller owns.
            if (is_grad_enabled()) result = (result + delta.mul_(factor)).MoveToOuterDisposeScope();
            else result.add_(delta, alpha: factor);
        }
        return result;
    }

    /// <summary>Unfuses everything, removes the hook and frees the adapters' copies.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        foreach (var e in _entries) e.FusedScale = null;
        Refuse();
        _hook.Dispose();
        foreach (var e in _entries)
        {
            e.Down.Dispose();
            e.Up.Dispose();
        }
        _entries.Clear();
        _disposed = true;
    }
}
