using System.Text.Json.Nodes;
using LatentDiffusion.Training;
using LatentDiffusion.Formats;
using LatentDiffusion.UNet;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.UNet;

[TestFixture]
public sealed class UNet2DConditionModelTests
{
    private static readonly Dictionary<string, UNet2DConditionModel> Models = new();

    private static UNet2DConditionModel Model(string name)
    {
        lock (Models)
        {
            if (!Models.TryGetValue(name, out var model))
                Models[name] = model = name == Generated ? CreateGenerated() : UNet2DConditionModel.Load(Fixtures.PathOf(name, "unet"), CPU, ScalarType.Float32);
            return model;
        }
    }

    /// <summary>tiny-sd15's architecture with seeded random weights, for tests of behaviour rather than of the reference's numbers.</summary>
    private const string Generated = "generated-sd15";

    private static UNet2DConditionModel CreateGenerated()
    {
        var unet = new UNet2DConditionModel(UNet2DConditionConfig.FromJson(JsonConfig.Parse(TinyConfigs.Sd15UNetJson, "tiny-sd15 UNet config (copy)")), CPU, ScalarType.Float32);
        ModelInitializer.Initialize(unet, 31);
        return unet;
    }

    private static string Variant(string model) => model == "tiny-sd15" ? "sd15" : "sd2v";

    private static Tensor Context(string model)
    {
        if (model == Generated) return randn([2, 77, 32], generator: new TorchSharp.torch.Generator(32));
        using var all = Fixtures.Expected($"{Variant(model)}/text/last_hidden_state");
        return all.slice(0, 0, 2, 1).clone();
    }

    [OneTimeTearDown]
    public void DisposeModels()
    {
        foreach (var m in Models.Values) m.Dispose();
        Models.Clear();
    }

    [TestCase("tiny-sd15", 1)]
    [TestCase("tiny-sd15", 500)]
    [TestCase("tiny-sd15", 999)]
    [TestCase("tiny-sd2v", 1)]
    [TestCase("tiny-sd2v", 500)]
    [TestCase("tiny-sd2v", 999)]
    public void NoisePredictionMatchesTheReference(string model, int t)
    {
        var unet = Model(model);
        using var sample = Fixtures.Expected($"{Variant(model)}/unet/sample");
        using var context = Context(model);
        using var expected = Fixtures.Expected($"{Variant(model)}/unet/noise_pred_t{t}");
        using var timestep = tensor(new long[] { t, t });
        using var actual = unet.Forward(sample, timestep, context);
        AssertTensor.RelativeClose(actual, expected, 1e-4, $"{model} noise prediction at t={t}");
    }

    // float16 on CPU: the float32 inputs are converted to the model's dtype, and tiny-sd2v runs its attention upcast to float32.
    [TestCase("tiny-sd15")]
    [TestCase("tiny-sd2v")]
    public void Float16RunsCloseToTheFloat32Reference(string model)
    {
        using var unet = UNet2DConditionModel.Load(Fixtures.PathOf(model, "unet"), CPU, ScalarType.Float16);
        using var sample = Fixtures.Expected($"{Variant(model)}/unet/sample");
        using var context = Context(model);
        using var expected = Fixtures.Expected($"{Variant(model)}/unet/noise_pred_t500");
        using var timestep = tensor(new long[] { 500, 500 });
        using var actual = unet.Forward(sample, timestep, context);
        Assert.That(actual.dtype, Is.EqualTo(ScalarType.Float16));
        AssertTensor.RelativeClose(actual, expected, 1e-2, $"{model} float16 noise prediction");
    }

    [TestCase("tiny-sd15")]
    [TestCase("tiny-sd2v")]
    public void ParameterNamesAreTheDiffusersStateDictNames(string model)
    {
        using var file = SafetensorsFile.Open(Fixtures.PathOf(model, "unet", "diffusion_pytorch_model.safetensors"));
        var names = Model(model).named_parameters().Select(p => p.name).Concat(Model(model).named_buffers().Select(b => b.name)).ToHashSet();
        Assert.That(names, Is.EquivalentTo(file.Entries.Keys));
        Assert.That(names, Does.Contain("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight"));
        Assert.That(names, Does.Contain("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight"));
        Assert.That(names, Does.Contain("up_blocks.1.upsamplers.0.conv.weight"));
        var modules = Model(model).named_modules().Select(m => m.name).ToList();
        Assert.That(modules.Where(n => n.Split('.').Any(part => part.StartsWith('_'))), Is.Empty, "modules registered under C# field names");
        Assert.That(modules, Is.Unique);
    }

    [Test]
    public void ScalarAndFloatTimestepsBroadcastLikeABatchTimestep()
    {
        var unet = Model("tiny-sd15");
        using var sample = Fixtures.Expected("sd15/unet/sample");
        using var context = Context("tiny-sd15");
        using var expected = Fixtures.Expected("sd15/unet/noise_pred_t500");
        using (var t = tensor(500L))
        using (var actual = unet.Forward(sample, t, context))
            AssertTensor.RelativeClose(actual, expected, 1e-4, "0-d int64 timestep");
        using (var t = tensor(500.0f))
        using (var actual = unet.Forward(sample, t, context))
            AssertTensor.RelativeClose(actual, expected, 1e-4, "0-d float32 timestep");
        using (var t = tensor(new double[] { 500.0 }))
        using (var actual = unet.Forward(sample, t, context))
            AssertTensor.RelativeClose(actual, expected, 1e-4, "[1] float64 timestep");
    }

    [Test]
    public void RejectsATimestepOfTheWrongBatch()
    {
        using var sample = randn(2, 4, 16, 16, generator: new TorchSharp.torch.Generator(33));
        using var context = Context(Generated);
        using var t = tensor(new long[] { 1, 2, 3 });
        Assert.Throws<ArgumentException>(() => Model(Generated).Forward(sample, t, context));
    }

    [TestCase(Generated, 12, 16)]
    [TestCase(Generated, 10, 14)]
    [TestCase("tiny-sd2v", 12, 16)]
    [TestCase("tiny-sd2v", 10, 14)]
    public void LatentSidesThatAreNotMultiplesOfEightKeepTheirSize(string model, int h, int w)
    {
        var unet = Model(model);
        using var sample = randn(1, 4, h, w, generator: new TorchSharp.torch.Generator(7));
        using var full = Context(model);
        using var context = full.slice(0, 0, 1, 1);
        using var t = tensor(999L);
        using var output = unet.Forward(sample, t, context);
        Assert.That(output.shape, Is.EqualTo(new long[] { 1, 4, h, w }));
        Assert.That(output.isfinite().all().item<bool>(), Is.True);
    }

    [Test]
    public void AWrongShapedWeightIsRefusedNamingTheTensor()
    {
        // The generated model's UNet (down blocks of 32 and 64 channels): block 1's first conv takes 32 channels, block 0's gives 32.
        var dir = Path.Combine(Pipelines.GeneratedModel.Folder, "unet");
        using var file = SafetensorsFile.Open(Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
        var weights = file.Entries.Keys.ToDictionary(k => k, k => TensorRef.Direct(file, k));
        weights["down_blocks.1.resnets.0.conv1.weight"] = TensorRef.Direct(file, "down_blocks.0.resnets.0.conv1.weight");
        var e = Assert.Throws<InvalidDataException>(() => UNet2DConditionModel.Load(JsonConfig.Load(Path.Combine(dir, "config.json")), weights, CPU, ScalarType.Float32));
        Assert.That(e!.Message, Does.Contain("down_blocks.1.resnets.0.conv1.weight"));
    }

    [Test]
    public void AMissingWeightIsRefusedNamingTheTensor()
    {
        var dir = Path.Combine(Pipelines.GeneratedModel.Folder, "unet");
        using var file = SafetensorsFile.Open(Path.Combine(dir, "diffusion_pytorch_model.safetensors"));
        var weights = file.Entries.Keys.Where(k => k != "mid_block.attentions.0.proj_in.weight").ToDictionary(k => k, k => TensorRef.Direct(file, k));
        var e = Assert.Throws<InvalidDataException>(() => UNet2DConditionModel.Load(JsonConfig.Load(Path.Combine(dir, "config.json")), weights, CPU, ScalarType.Float32));
        Assert.That(e!.Message, Does.Contain("mid_block.attentions.0.proj_in.weight"));
    }

    private static JsonConfig PatchedConfig(string model, string key, JsonNode? value)
    {
        var json = JsonNode.Parse(model == "tiny-sd15" ? TinyConfigs.Sd15UNetJson : File.ReadAllText(Fixtures.PathOf(model, "unet", "config.json")))!.AsObject();
        json[key] = value;
        return JsonConfig.Parse(json.ToJsonString(), $"{model} config with {key} patched");
    }

    [TestCase("class_embed_type", "\"timestep\"")]
    [TestCase("num_class_embeds", "10")]
    [TestCase("addition_embed_type", "\"text_image\"")]
    [TestCase("time_embedding_type", "\"fourier\"")]
    [TestCase("dual_cross_attention", "true")]
    [TestCase("resnet_time_scale_shift", "\"scale_shift\"")]
    [TestCase("attention_type", "\"gated\"")]
    [TestCase("mid_block_type", "\"UNetMidBlock2DSimpleCrossAttn\"")]
    [TestCase("down_block_types", "[\"SimpleCrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"DownBlock2D\"]")]
    [TestCase("up_block_types", "[\"UpBlock2D\",\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\",\"AttnUpBlock2D\"]")]
    [TestCase("encoder_hid_dim", "1024")]
    [TestCase("num_attention_heads", "8")]
    [TestCase("act_fn", "\"tanh\"")]
    [TestCase("transformer_layers_per_block", "[[1,2],[1,2],[1,2],[1,2]]")]
    [TestCase("norm_num_groups", "null")]
    public void AnUnsupportedConfigValueIsRefusedNamingTheKey(string key, string value)
    {
        var config = PatchedConfig("tiny-sd15", key, JsonNode.Parse(value));
        var e = Assert.Throws<NotSupportedException>(() => UNet2DConditionConfig.FromJson(config));
        Assert.That(e!.Message, Does.Contain($"'{key}'"));
    }

    [Test]
    public void ReadsPerBlockHeadsAndTheSd2Options()
    {
        var c = UNet2DConditionConfig.FromJson(JsonConfig.Parse(TinyConfigs.Sd2vUNetJson, "tiny-sd2v UNet config (copy)"));
        Assert.That(c.AttentionHeads, Is.EqualTo(new[] { 2, 4, 8, 8 }));
        Assert.That(c.UseLinearProjection, Is.True);
        Assert.That(c.UpcastAttention, Is.True);
        Assert.That(c.BlockOutChannels, Is.EqualTo(new[] { 32, 32, 32, 32 }));
        Assert.That(c.CrossAttentionDim, Is.EqualTo(new[] { 32, 32, 32, 32 }));
        Assert.That(c.LayersPerBlock, Is.EqualTo(new[] { 2, 2, 2, 2 }));
        Assert.That(c.MidBlockType, Is.EqualTo("UNetMidBlock2DCrossAttn"));
        var sd15 = UNet2DConditionConfig.FromJson(JsonConfig.Parse(TinyConfigs.Sd15UNetJson, "tiny-sd15 UNet config (copy)"));
        Assert.That(sd15.AttentionHeads, Is.EqualTo(new[] { 8, 8, 8, 8 }));
        Assert.That(sd15.UseLinearProjection, Is.False);
        Assert.That(sd15.SampleSize, Is.EqualTo(16));
    }

    [Test]
    public void TheUpcastSettingReachesEveryAttention()
    {
        // The architectures of tiny-sd2v (upcast) and tiny-sd15 (not); the flags do not depend on the weights.
        using var sd15 = new UNet2DConditionModel(UNet2DConditionConfig.FromJson(JsonConfig.Parse(TinyConfigs.Sd15UNetJson, "tiny-sd15 UNet config (copy)")), CPU, ScalarType.Float32);
        using var unet = new UNet2DConditionModel(UNet2DConditionConfig.FromJson(JsonConfig.Parse(TinyConfigs.Sd2vUNetJson, "tiny-sd2v UNet config (copy)")), CPU, ScalarType.Float32);
        Assert.That(unet.AttentionModules.Count(), Is.EqualTo(2 * (2 * 3 + 3 * 3 + 1)));
        Assert.That(unet.AttentionModules.All(a => a.UpcastAttention), Is.True);
        Assert.That(sd15.AttentionModules.Any(a => a.UpcastAttention), Is.False);
        unet.SetUpcastAttention(false);
        Assert.That(unet.AttentionModules.Any(a => a.UpcastAttention), Is.False);
    }

    [Test]
    public void CachedCrossAttentionKeysAndValuesGiveTheSameResult()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var attention = Model(Generated).AttentionModules.First(a => a.IsCrossAttention);
        var hidden = randn(2, 16, 32, generator: new TorchSharp.torch.Generator(3));
        var context = randn(1, 77, 32, generator: new TorchSharp.torch.Generator(4));
        var direct = attention.forward(hidden, context.expand(2, -1, -1));
        var (k, v) = attention.ProjectKeyValue(context);
        var cached = attention.Attend(hidden, k, v);
        AssertTensor.MaxAbsClose(cached, direct, 1e-5, "attention over cached keys/values");
    }
}
