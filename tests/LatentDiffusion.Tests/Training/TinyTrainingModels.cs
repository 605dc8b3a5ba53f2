using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Text;
using LatentDiffusion.Shapes;
using LatentDiffusion.Training;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Training;

/// <summary>A tiny trainable model set (32x32 images, 16x16 latents), built in code with seeded weights.</summary>
internal sealed class TinyTrainingModels : IDisposable
{
    public static readonly string TokenizerDir = CreateTokenizer();

    private static string CreateTokenizer()
    {
        string dir = Path.Combine(Path.GetTempPath(), "ld-shapes-tokenizer-" + Guid.NewGuid().ToString("N"));
        ShapesVocabulary.Write(dir);
        return dir;
    }

    public ClipTokenizer Tokenizer { get; }
    public ClipTextModel TextEncoder { get; }
    public UNet2DConditionModel UNet { get; }
    public AutoencoderKL Vae { get; }
    public IScheduler Scheduler { get; }

    public TinyTrainingModels(long seed = 1, IReadOnlyList<int>? unetChannels = null)
    {
        Tokenizer = ClipTokenizer.FromDirectory(TokenizerDir);
        TextEncoder = new ClipTextModel(new ClipTextConfig(Tokenizer.VocabularySize, 32, 64, 4, 2, ShapesVocabulary.MaxLength), CPU, ScalarType.Float32);
        var channels = unetChannels ?? [32, 64];
        UNet = new UNet2DConditionModel(UNetConfig(sampleSize: 16, channels), CPU, ScalarType.Float32);
        Vae = new AutoencoderKL(new AutoencoderKLConfig
        {
            BlockOutChannels = [16, 32],
            DownBlockTypes = [AutoencoderKLConfig.DownEncoderBlock2D, AutoencoderKLConfig.DownEncoderBlock2D],
            UpBlockTypes = [AutoencoderKLConfig.UpDecoderBlock2D, AutoencoderKLConfig.UpDecoderBlock2D],
            LayersPerBlock = 1,
            NormNumGroups = 16,
            SampleSize = 32,
            ScalingFactor = 0.5,
        }, CPU, ScalarType.Float32);
        ModelInitializer.Initialize(TextEncoder, seed);
        ModelInitializer.Initialize(UNet, seed + 1);
        ModelInitializer.Initialize(Vae, seed + 2);
        Scheduler = SchedulerRegistry.Create("ddpm", null);
    }

    /// <summary>
    /// A two-level UNet (cross-attention down, plain down; mirrored up) attending to a 32-wide text encoder: the tiny
    /// architecture of these training models and of the tests' generated pipeline.
    /// </summary>
    public static UNet2DConditionConfig UNetConfig(int sampleSize, IReadOnlyList<int> channels) => new()
    {
        SampleSize = sampleSize,
        BlockOutChannels = channels,
        DownBlockTypes = ["CrossAttnDownBlock2D", "DownBlock2D"],
        UpBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D"],
        LayersPerBlock = [1, 1],
        OnlyCrossAttention = [false, false],
        CrossAttentionDim = [32, 32],
        TransformerLayersPerBlock = [1, 1],
        AttentionHeads = [4, 4],
        NormNumGroups = 16,
    };

    public static (Tensor Images, string[] Captions) FixedBatch(int batchSize = 8)
    {
        using var batch = ShapesDataset.Batch(seed: 3, step: 0, batchSize, imageSize: 32);
        var images = batch.Images.clone();
        images.DetachFromDisposeScope();
        return (images, batch.Captions);
    }

    public void Dispose()
    {
        TextEncoder.Dispose();
        UNet.Dispose();
        Vae.Dispose();
    }
}
