using LatentDiffusion.Abstractions;
using LatentDiffusion.Pipelines;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>
/// Each abstraction the pipeline composes is a seam a user can plug into: a user implementation is used as given (no
/// downcast to our class, no work done around it), and a pipeline over parts it does not own leaves them usable.
/// </summary>
public class SeamTests
{
    // Any small model will do: the seams are about who does what, not the reference's numbers.
    private static StableDiffusionPipeline Sd15 => GeneratedModel.Pipeline;

    private static readonly GenerationOptions Quick = new() { Steps = 2, Seed = 3, Width = 64, Height = 48 };

    /// <summary>A user tokenizer: reads "crimson" as "red", otherwise the model's own tokenizer.</summary>
    private sealed class SynonymTokenizer(ITokenizer inner) : ITokenizer
    {
        public int Calls { get; private set; }
        public int[] Encode(string text) => inner.Encode(text.Replace("crimson", "red"));
        public TokenizedPrompt EncodePadded(string text, int maxLength)
        {
            Calls++;
            return inner.EncodePadded(text.Replace("crimson", "red"), maxLength);
        }
    }

    /// <summary>A user UNet wrapping the model's: counts its calls and passes everything through.</summary>
    private sealed class CountingUNet(IUNet inner) : IUNet
    {
        public int Calls { get; private set; }
        public int InChannels => inner.InChannels;
        public int OutChannels => inner.OutChannels;
        public int SampleSize => inner.SampleSize;
        public int CrossAttentionDim => inner.CrossAttentionDim;
        public Device Device => inner.Device;
        public ScalarType DType => inner.DType;
        public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates)
        {
            Calls++;
            return inner.Forward(sample, timestep, encoderHiddenStates);
        }
        public void Dispose() => throw new AssertionException("a pipeline composed with leaveComponentsOpen disposed its UNet");
    }

    /// <summary>A user VAE wrapping the model's: records the batch of each decode and keeps its own slicing switch.</summary>
    private sealed class RecordingVae(IVae inner) : IVae
    {
        public List<long> DecodedBatches { get; } = new();
        public double ScalingFactor => inner.ScalingFactor;
        public int ScaleFactor => inner.ScaleFactor;
        public int LatentChannels => inner.LatentChannels;
        public Device Device => inner.Device;
        public ScalarType DType => inner.DType;
        public bool UseSlicing { get; set; }
        public bool UseTiling { get; set; }
        public DiagonalGaussian Encode(Tensor images) => inner.Encode(images);
        public Tensor Decode(Tensor latents)
        {
            DecodedBatches.Add(latents.shape[0]);
            return inner.Decode(latents);
        }
        public void Dispose() { }
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Test]
    public void AUserTokenizerIsWhatThePipelineTokenizesWith()
    {
        var tokenizer = new SynonymTokenizer(Sd15.Tokenizer);
        using var pipeline = new StableDiffusionPipeline(tokenizer, Sd15.TextEncoder, Sd15.UNet, Sd15.Vae, Sd15.Scheduler, leaveComponentsOpen: true);
        using var viaSynonym = pipeline.Generate("a crimson circle", Quick);
        using var plain = Sd15.Generate("a red circle", Quick);
        using var other = Sd15.Generate("a crimson circle", Quick);
        // Prompt and the (empty) negative prompt.
        Assert.That(tokenizer.Calls, Is.EqualTo(2));
        Assert.That(Same(viaSynonym.Pixels, plain.Pixels), Is.True, "the user tokenizer's ids were not the ones encoded");
        Assert.That(Same(viaSynonym.Pixels, other.Pixels), Is.False, "the prompts must differ for this test to mean anything");
    }

    [Test]
    public void AWrappedUNetGivesTheSamePictureAndIsNotDisposedByAPipelineThatDoesNotOwnIt()
    {
        var unet = new CountingUNet(Sd15.UNet);
        var pipeline = new StableDiffusionPipeline(Sd15.Tokenizer, Sd15.TextEncoder, unet, Sd15.Vae, Sd15.Scheduler, leaveComponentsOpen: true);
        using (var wrapped = pipeline.Generate("a cat", Quick))
        using (var plain = Sd15.Generate("a cat", Quick))
        {
            Assert.That(Same(wrapped.Pixels, plain.Pixels), Is.True);
        }
        // The model's PNDM scheduler (PLMS) evaluates the model steps + 1 times.
        Assert.That(unet.Calls, Is.EqualTo(Quick.Steps + 1));
        pipeline.Dispose();
        // The shared parts still work after the composed pipeline is gone.
        using var after = Sd15.Generate("a cat", Quick);
        Assert.That(after.Images, Has.Count.EqualTo(1));
    }

    [Test]
    public void SlicingIsAskedOfAUserVaeNotDoneAroundIt()
    {
        var vae = new RecordingVae(Sd15.Vae);
        using var pipeline = new StableDiffusionPipeline(Sd15.Tokenizer, Sd15.TextEncoder, Sd15.UNet, vae, Sd15.Scheduler,
            new PipelineOptions { VaeSlicing = true, VaeTiling = true }, leaveComponentsOpen: true);
        Assert.That(vae.UseSlicing, Is.True);
        Assert.That(vae.UseTiling, Is.True);
        using var result = pipeline.Generate("a cat", Quick with { ImagesPerPrompt = 2 });
        Assert.That(vae.DecodedBatches, Is.EqualTo(new long[] { 2 }), "the pipeline sliced the batch itself instead of leaving it to the VAE");
        Assert.That(result.Images, Has.Count.EqualTo(2));
    }
}
