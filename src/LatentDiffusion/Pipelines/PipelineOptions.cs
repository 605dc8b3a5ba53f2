using LatentDiffusion.Hub;
using LatentDiffusion.Runtime;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>How to load a pipeline; immutable.</summary>
public sealed record PipelineOptions
{
    /// <summary>The device: <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>. Default cpu.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>The dtype the weights are held and run in. Default float32 (float16 or bfloat16 on a GPU).</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// <summary>
    /// Hold the linear and convolution weights (nearly all of a model's) in this dtype while computing in <see cref="DType"/>:
    /// each layer converts its weights as it runs. <c>Float16</c> with the default float32 <see cref="DType"/> takes half
    /// the memory of float32 and gives float32's results, bit for bit for a float16 file (the usual download); the
    /// conversions cost a few percent of the time. Meant for CPUs, where float16 arithmetic is slow and bfloat16's is only
    /// fast on some. Null (the default): weights are held in <see cref="DType"/>. Float16, BFloat16 or Float32.
    /// </summary>
    public ScalarType? WeightDType { get; init; }

    /// <summary>Run the VAE in float32 even when <see cref="DType"/> is half precision (avoids float16 overflow in decoding).</summary>
    public bool UpcastVae { get; init; }

    /// <summary>Weights variant to load from a diffusers folder (<c>fp16</c> loads <c>*.fp16.safetensors</c>); null prefers the plain files.</summary>
    public string? Variant { get; init; }

    /// <summary>
    /// For single-file checkpoints: a diffusers folder whose component <c>config.json</c> files and <c>tokenizer/</c> (SDXL:
    /// also <c>tokenizer_2/</c>) are used instead of the configs inferred from tensor shapes and the tokenizer found in the
    /// hub cache (for unusual models).
    /// </summary>
    public string? ConfigDirectory { get; init; }

    /// <summary>Decode the VAE one image at a time (less memory for batches).</summary>
    public bool VaeSlicing { get; init; }

    /// <summary>Decode the VAE in overlapping tiles (less memory for large images).</summary>
    public bool VaeTiling { get; init; }

    /// <summary>Where libtorch comes from.</summary>
    public TorchRuntimeOptions? Runtime { get; init; }

    /// <summary>Receives warnings (such as a truncated prompt) and load information.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>
    /// For single-file checkpoints: a tokenizer folder (<c>tokenizer.json</c>, or <c>vocab.json</c> and <c>merges.txt</c>)
    /// to use. Default: <see cref="ConfigDirectory"/>'s <c>tokenizer/</c> when it has one, else the CLIP tokenizer from the
    /// Hugging Face cache, downloaded once when missing (see <see cref="Loading.SingleFile.SingleFileTokenizer"/>).
    /// </summary>
    public string? TokenizerDirectory { get; init; }

    /// <summary>
    /// Where a single-file checkpoint's tokenizer is looked for and fetched from (the hub cache, endpoint, token, offline
    /// mode); null: from the environment (<c>HF_HUB_CACHE</c>, <c>HF_ENDPOINT</c>, <c>HF_TOKEN</c>, <c>HF_HUB_OFFLINE</c>).
    /// </summary>
    public ModelHubOptions? Hub { get; init; }

    /// <summary>
    /// A standalone VAE weights file to use instead of the model's own VAE, read with the model's VAE config: diffusers
    /// names (a <c>vae/diffusion_pytorch_model.safetensors</c>) or the original layout (<c>encoder.down.0...</c>, as
    /// <c>sdxl_vae.safetensors</c> and the <c>vae-ft-mse</c> downloads store it, with or without <c>first_stage_model.</c>).
    /// Null keeps the model's.
    /// </summary>
    public string? VaeFile { get; init; }

    /// <summary>
    /// LoRA files loaded into the pipeline when it is created (<see cref="StableDiffusionPipeline.Loras"/>), each with its
    /// scale and optionally fused. A file that does not fit the model fails the load. See docs/lora.md.
    /// </summary>
    public IReadOnlyList<LatentDiffusion.Adapters.LoraSource>? Loras { get; init; }

    /// <summary>
    /// CPU threads for libtorch's kernels (as stable-diffusion.cpp's <c>-t</c>); null keeps libtorch's default (the machine's
    /// cores, or <c>OMP_NUM_THREADS</c>). Applied when the pipeline is loaded, to the whole process: libtorch has one CPU
    /// thread pool, so the last pipeline loaded with a count sets it for all (see <see cref="TorchThreads"/>).
    /// </summary>
    public int? Threads { get; init; }

    /// <summary>
    /// For a pipeline that generates once, as <c>ldm generate</c> does: each part's weights are freed as soon as that
    /// generation no longer needs them (the text encoders once the prompt is encoded, the UNet before the VAE decodes), so
    /// the peak memory is that of the largest phase rather than of all the weights together (stable-diffusion.cpp's
    /// <c>free_params_immediately</c>). The image is the same as without it. A second generation throws
    /// <see cref="InvalidOperationException"/>; load the pipeline again instead. Needs a pipeline that owns its components
    /// (not one composed with <c>leaveComponentsOpen</c>). Default false.
    /// </summary>
    public bool FreeWeightsAfterUse { get; init; }
}
