using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Loading;

/// <summary>
/// The loader builds each part without drawing initial weights (<see cref="ParameterInitialization.Skip"/>) and then
/// writes every parameter from the file. A part built that way must compute exactly what the same part built the usual
/// way computes with the same parameter values: nothing it runs on may live outside its parameters (a module that kept
/// its own copy of a table would run on the unwritten one).
/// </summary>
public class UninitialisedBuildTests
{
    [Test]
    public async Task LoadedPartsComputeExactlyWhatUsuallyBuiltPartsWithTheSameWeightsCompute()
    {
        await using var pipeline = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15"));
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        using var generator = new Generator(7);

        var text = (ClipTextModel)pipeline.TextEncoder;
        using var usualText = CopyOf(text, new ClipTextModel(text.Config, CPU, text.DType));
        var ids = tensor(pipeline.Tokenizer.EncodePadded("a red circle on a blue square", text.MaxPositions).Ids.Select(i => (long)i).ToArray(), [1, text.MaxPositions]);
        AssertSame(text.forward(ids), usualText.forward(ids), "text encoder");

        var unet = (UNet2DConditionModel)pipeline.UNet;
        using var usualUNet = CopyOf(unet, new UNet2DConditionModel(unet.Config, CPU, unet.DType));
        var sample = randn([2, unet.InChannels, 8, 16], generator: generator);
        var context = randn([2, 5, unet.CrossAttentionDim], generator: generator);
        var t = tensor(new float[] { 801f, 801f });
        AssertSame(unet.Forward(sample, t, context), usualUNet.Forward(sample, t, context), "UNet");

        var vae = (AutoencoderKL)pipeline.Vae;
        using var usualVae = CopyOf(vae, new AutoencoderKL(vae.Config, CPU, vae.DType));
        var latents = randn([1, vae.LatentChannels, 8, 16], generator: generator);
        AssertSame(vae.Decode(latents), usualVae.Decode(latents), "VAE decoder");
    }

    [Test]
    public void ModulesBuiltOutsideTheLoaderAreStillInitialised()
    {
        var config = UNet2DConditionConfig.Load(Fixtures.PathOf("tiny-sd15", "unet", "config.json"));
        manual_seed(5);
        using var first = new UNet2DConditionModel(config, CPU, ScalarType.Float32);
        manual_seed(5);
        using var second = new UNet2DConditionModel(config, CPU, ScalarType.Float32);
        Assert.That(ParameterInitialization.Skipped, Is.False);
        using var noGrad = no_grad();
        var pairs = first.named_parameters().Zip(second.named_parameters()).ToList();
        Assert.That(pairs.All(p => p.First.parameter.equal(p.Second.parameter).all().item<bool>()), "the same seed gives the same initial weights (they are drawn, not left as found)");
        Assert.That(first.named_parameters().Where(p => p.name.EndsWith(".weight") && p.name.Contains("conv")).All(p => p.parameter.abs().max().item<float>() > 0));
    }

    [Test]
    public void AParameterWithNoTensorIsRefusedInsteadOfLeftUnwritten()
    {
        string dir = Fixtures.PathOf("tiny-sd15", "unet");
        var config = UNet2DConditionConfig.Load(Path.Combine(dir, "config.json"));
        using var file = SafetensorsFile.Open(Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
        var weights = file.Entries.Keys.Where(k => k != "conv_out.bias").ToDictionary(k => k, k => TensorRef.Direct(file, k), StringComparer.Ordinal);

        var e = Assert.Throws<InvalidDataException>(() => UNet2DConditionModel.LoadPrechecked(config, weights, CPU, ScalarType.Float32, "unet under test"))!;
        Assert.That(e.Message, Does.Contain("conv_out.bias").And.Contain("uninitialised").And.Contain("unet under test"));
        Assert.That(ParameterInitialization.Skipped, Is.False, "the scope ends with the build");
    }

    private static T CopyOf<T>(nn.Module loaded, T usual) where T : nn.Module
    {
        var values = loaded.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in usual.named_parameters()) p.copy_(values[name]);
        return usual;
    }

    private static void AssertSame(Tensor loaded, Tensor usual, string part)
        => Assert.That(loaded.equal(usual).all().item<bool>(), $"the loaded {part} computes what the usual build computes (max difference {(loaded - usual).abs().max().item<float>()})");
}
