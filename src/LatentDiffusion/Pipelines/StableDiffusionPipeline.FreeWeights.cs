using Microsoft.Extensions.Logging;

namespace LatentDiffusion.Pipelines;

public sealed partial class StableDiffusionPipeline
{
    // PipelineOptions.FreeWeightsAfterUse: the one generation frees the text encoders and the UNet as it goes.
    private bool _freeWeightsAfterUse;
    private int _singleUseClaimed;
    private bool _textEncodersFreed;
    private bool _unetFreed;

    private void UseFreeWeightsAfterUse(PipelineOptions options)
    {
        if (!options.FreeWeightsAfterUse) return;
        if (!_ownsComponents)
            throw new ArgumentException("PipelineOptions.FreeWeightsAfterUse frees the pipeline's own components, but this pipeline was composed with leaveComponentsOpen = true: its components belong to the caller.", nameof(options));
        _freeWeightsAfterUse = true;
    }

    /// <summary>With <see cref="PipelineOptions.FreeWeightsAfterUse"/>, lets the first generation run and refuses every later one.</summary>
    private void ClaimSingleUse()
    {
        if (_freeWeightsAfterUse && Interlocked.Exchange(ref _singleUseClaimed, 1) == 1)
            throw new InvalidOperationException("This pipeline was loaded with PipelineOptions.FreeWeightsAfterUse and has already generated: its text encoder and UNet weights are freed " +
                "(or are being freed by a generation still running). Load the pipeline again, or load it without FreeWeightsAfterUse to generate more than once.");
    }

    /// <summary>Once the prompt is encoded: the text encoders' weights are no longer needed.</summary>
    private void FreeTextEncodersAfterUse()
    {
        if (!_freeWeightsAfterUse || _textEncodersFreed) return;
        _textEncodersFreed = true;
        DisposeTextEncoders();
        _logger.LogDebug("Freed the text encoder weights after encoding the prompt (FreeWeightsAfterUse)");
    }

    /// <summary>Once the latents are denoised: the UNet's weights are no longer needed; the VAE decodes without them beside it.</summary>
    private void FreeUNetAfterUse()
    {
        if (!_freeWeightsAfterUse || _unetFreed) return;
        _unetFreed = true;
        UNet.Dispose();
        _logger.LogDebug("Freed the UNet weights before decoding (FreeWeightsAfterUse)");
    }

    /// <summary>Refuses to change weights that <see cref="PipelineOptions.FreeWeightsAfterUse"/> has freed (a LoRA, a textual inversion).</summary>
    private void ThrowIfWeightsFreed(string what)
    {
        if (_textEncodersFreed || _unetFreed)
            throw new InvalidOperationException($"{what}: this pipeline was loaded with PipelineOptions.FreeWeightsAfterUse and its generation has freed the text encoder and UNet weights. Load the pipeline again.");
    }

    private void DisposeTextEncoders()
    {
        TextEncoder.Dispose();
        if (TextEncoder2 is not null && !ReferenceEquals(TextEncoder2, TextEncoder)) TextEncoder2.Dispose();
    }
}
