using LatentDiffusion.Abstractions;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.XlFamily;

/// <summary>Records every UNet call's input and time ids (the added conditions), passing the call on unchanged.</summary>
internal sealed class RecordingUNet(IUNet inner) : IUNet
{
    public List<Tensor> Inputs { get; } = [];
    public List<float[]> TimeIds { get; } = [];
    public int InChannels => inner.InChannels;
    public int OutChannels => inner.OutChannels;
    public int SampleSize => inner.SampleSize;
    public int CrossAttentionDim => inner.CrossAttentionDim;
    public Device Device => inner.Device;
    public ScalarType DType => inner.DType;
    public int? AddedConditionsWidth => inner.AddedConditionsWidth;
    public int? AddedTimeIdWidth => inner.AddedTimeIdWidth;
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates) => inner.Forward(sample, timestep, encoderHiddenStates);
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, AddedConditions? addedConditions, CrossAttentionCache? crossAttentionCache, CancellationToken cancellationToken)
    {
        Inputs.Add(sample.detach().clone().DetachFromDisposeScope());
        TimeIds.Add(addedConditions!.TimeIds.flatten().data<float>().ToArray());
        return inner.Forward(sample, timestep, encoderHiddenStates, addedConditions, crossAttentionCache, cancellationToken);
    }
    /// <summary>Frees the recorded inputs; the wrapped UNet belongs to the caller.</summary>
    public void Dispose() { foreach (var t in Inputs) t.Dispose(); }
}
