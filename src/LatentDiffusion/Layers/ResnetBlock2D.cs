using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Layers;

/// <summary>
/// The residual block of the diffusion UNet: GroupNorm, activation, 3x3 convolution, add the projected time embedding,
/// GroupNorm, activation, 3x3 convolution, plus the (1x1-projected when the width changes) input.
/// </summary>
public sealed class ResnetBlock2D : nn.Module<Tensor, Tensor?, Tensor>
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly GroupNorm _norm1;
    private readonly nn.Module<Tensor, Tensor> _conv1;
    private readonly nn.Module<Tensor, Tensor>? _timeEmbProj;
    private readonly GroupNorm _norm2;
    private readonly nn.Module<Tensor, Tensor> _conv2;
    private readonly nn.Module<Tensor, Tensor>? _convShortcut;
    private readonly Func<Tensor, Tensor> _act;
    private readonly Func<Tensor, Tensor> _timeAct;
    private readonly double _outputScaleFactor;

    /// <summary>Creates the block.</summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="tembChannels">Width of the time embedding, or null for a block without one.</param>
    /// <param name="groups">Groups of both normalisations.</param>
    /// <param name="eps">Epsilon of both normalisations.</param>
    /// <param name="actFn">Activation (a config name such as <c>silu</c>).</param>
    /// <param name="outputScaleFactor">Divisor of the sum.</param>
    /// <param name="device">Where the weights live.</param>
    /// <param name="dtype">The weights' dtype.</param>
    public ResnetBlock2D(int inChannels, int outChannels, int? tembChannels, int groups, double eps, string actFn, double outputScaleFactor, Device device, ScalarType dtype)
        : base(nameof(ResnetBlock2D))
    {
        _norm1 = GroupNormalization.Create(groups, inChannels, eps, device, dtype);
        register_module("norm1", _norm1);
        _conv1 = ModuleBuilder.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        register_module("conv1", _conv1);
        if (tembChannels is int t)
        {
            _timeEmbProj = ModuleBuilder.Linear(t, outChannels, hasBias: true, device: device, dtype: dtype);
            register_module("time_emb_proj", _timeEmbProj);
        }
        _norm2 = GroupNormalization.Create(groups, outChannels, eps, device, dtype);
        register_module("norm2", _norm2);
        _conv2 = ModuleBuilder.Conv2d(outChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        register_module("conv2", _conv2);
        if (inChannels != outChannels)
        {
            _convShortcut = ModuleBuilder.Conv2d(inChannels, outChannels, 1, stride: 1, device: device, dtype: dtype);
            register_module("conv_shortcut", _convShortcut);
        }
        _act = Activation.InPlace(actFn);
        _timeAct = Activation.OutOfPlace(actFn);
        _outputScaleFactor = outputScaleFactor;
    }

    /// <summary><paramref name="input"/> <c>[b, in, h, w]</c>, <paramref name="temb"/> <c>[b, tembChannels]</c> (or null) → <c>[b, out, h, w]</c>.</summary>
    public override Tensor forward(Tensor input, Tensor? temb)
    {
        using var scope = NewDisposeScope();
        // Full-size intermediates are released as soon as they are consumed, as reference counting does in the
        // reference; the scope only catches the small ones.
        var h = Eager.Consume(Eager.Consume(_norm1.forward(input), _act), _conv1.call);
        if (temb is not null && _timeEmbProj is not null)
            h.add_(_timeEmbProj.call(_timeAct(temb)).unsqueeze(-1).unsqueeze(-1));
        h = Eager.Consume(Eager.Consume(Eager.Consume(h, _norm2.forward), _act), _conv2.call);
        var output = _convShortcut is null ? h.add_(input) : Eager.Consume(_convShortcut.call(input), sc => h.add_(sc));
        if (_outputScaleFactor != 1.0) output.div_(_outputScaleFactor);
        return output.MoveToOuterDisposeScope();
    }
}
