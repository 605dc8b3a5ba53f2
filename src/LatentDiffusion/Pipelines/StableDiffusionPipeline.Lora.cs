using LatentDiffusion.Adapters;
using LatentDiffusion.Text;
using Microsoft.Extensions.Logging;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

public sealed partial class StableDiffusionPipeline
{
    private LoraAdapters? _loras;

    /// <summary>
    /// The LoRAs of this pipeline's text encoder (both of SDXL's) and UNet: load, unload, fuse and unfuse them
    /// (<see cref="LoraAdapters"/>); <see cref="GenerationOptions.Loras"/> chooses them per generation. Needs the
    /// library's own components (TorchSharp modules); see docs/lora.md.
    /// </summary>
    public LoraAdapters Loras
    {
        get
        {
            ObjectDisposedException.ThrowIf(_runs.IsClosed, this);
            ThrowIfWeightsFreed("Cannot use LoRAs");
            return LazyInitializer.EnsureInitialized(ref _loras, CreateLoras);
        }
    }

    private LoraAdapters CreateLoras()
    {
        var targets = new List<LoraTarget>();
        if (UNet is nn.Module unet) targets.Add(new LoraTarget("unet", unet, SgmNames: true));
        // The reference's CLIP paths start with text_model.; ours start below it.
        // An SDXL refiner has only the second encoder (TextEncoder is then TextEncoder2): it takes no text_encoder part.
        var first = TextEncoder2 is not null && ReferenceEquals(TextEncoder, TextEncoder2) ? null : TextEncoder;
        if (first is ClipTextModel clip) targets.Add(new LoraTarget("text_encoder", clip, "text_model."));
        else if (first is nn.Module text) targets.Add(new LoraTarget("text_encoder", text));
        if (TextEncoder2 is ClipTextModel clip2) targets.Add(new LoraTarget("text_encoder_2", clip2, "text_model."));
        else if (TextEncoder2 is nn.Module text2) targets.Add(new LoraTarget("text_encoder_2", text2));
        return new LoraAdapters(targets);
    }

    // Every constructor loads PipelineOptions.Loras, so a loaded pipeline has them (ModelLoader builds it through one).
    private void LoadLoras(IReadOnlyList<LoraSource>? sources)
    {
        if (sources is null || sources.Count == 0) return;
        try
        {
            foreach (var source in sources)
            {
                ArgumentNullException.ThrowIfNull(source, nameof(PipelineOptions.Loras));
                var adapter = Loras.Load(source.Path, source.Name, source.Scale);
                if (source.Fuse) Loras.Fuse(adapter.Name);
                _logger.LogInformation("Loaded LoRA {Name} from {Path} ({Format}, {Modules} modules, scale {Scale}{Fused})",
                    adapter.Name, adapter.Path, adapter.Format, adapter.ModuleCount, adapter.Scale, adapter.IsFused ? ", fused" : "");
            }
        }
        catch
        {
            ReleaseLoras();
            throw;
        }
    }

    /// <summary>The scope in which a generation's LoRA choice applies; null when no LoRA was ever loaded and none is asked for.</summary>
    private IDisposable? UseLoras(GenerationOptions options)
        => _loras is null && options.Loras is null ? null : Loras.Use(options.Loras);

    private void ReleaseLoras() => Interlocked.Exchange(ref _loras, null)?.Dispose();
}
