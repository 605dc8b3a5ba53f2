using LatentDiffusion.Adapters;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Adapters;

/// <summary>
/// LoRA behaviour on the generated model (no fixtures needed): fusing and unfusing, unloading, per-generation choice,
/// the refusals while a generation runs, and the LCM-LoRA with the lcm scheduler. Each test loads its own pipeline.
/// </summary>
public class LoraBehaviourTests
{
    private string _dir = "";
    private StableDiffusionPipeline _pipeline = null!;

    [SetUp]
    public void Load()
    {
        _dir = Directory.CreateTempSubdirectory("ld-lora-").FullName;
        _pipeline = StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder).GetAwaiter().GetResult();
    }

    [TearDown]
    public void Dispose()
    {
        _pipeline.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private string WriteLora(string name = "style.safetensors", long seed = 1, Func<string, bool>? include = null)
        => TestLoras.WriteKohya(_pipeline, Path.Combine(_dir, name), seed, include: include);

    /// <summary>Bit-for-bit equality (torch.equal).</summary>
    internal static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static GenerationOptions Options(IReadOnlyList<LoraWeight>? loras = null) => new() { Steps = 3, Seed = 5, Loras = loras };

    private Tensor UNetOutput()
    {
        using var generator = new Generator(3);
        using var sample = randn([2, 4, 8, 8], generator: generator);
        using var context = randn([2, 77, 32], generator: generator);
        using var timestep = tensor(new long[] { 400, 400 });
        using var noGrad = no_grad();
        return _pipeline.UNet.Forward(sample, timestep, context);
    }

    private Tensor TextOutput()
    {
        using var ids = tensor(new long[] { 0, 5, 9, 12, 2, 1, 1, 1 }, [1, 8]);
        using var noGrad = no_grad();
        return _pipeline.TextEncoder.Encode(ids);
    }

    [Test]
    public void EveryLinearAndConvolutionOfTheUNetAndTextEncoderRunsThroughTheSeam()
    {
        // A LoRA on a module whose block calls forward() instead of call() would be silently ignored; this finds such a block.
        var fired = new HashSet<string>();
        var removers = new List<Action>();
        foreach (var (name, _, module) in TestLoras.Modules(_pipeline))
        {
            var m = (nn.Module<Tensor, Tensor>)module;
            removers.Add(m.register_forward_hook((_, _, output) => { lock (fired) fired.Add(name); return output; }).remove);
        }
        try
        {
            using (UNetOutput()) { }
            using (TextOutput()) { }
        }
        finally
        {
            foreach (var remove in removers) remove();
        }
        var all = TestLoras.Modules(_pipeline).Select(m => m.Kohya).ToList();
        Assert.That(all, Has.Count.GreaterThan(40));
        Assert.That(all.Except(fired), Is.Empty, "modules run without their hooks");
    }

    [Test]
    public void FuseThenUnfuseRestoresEveryWeightBitForBit()
    {
        var before = TestLoras.Snapshot(_pipeline);
        using var plain = UNetOutput();
        _pipeline.Loras.Load(WriteLora(), scale: 0.7);
        using var unfused = UNetOutput();
        using var unfusedText = TextOutput();
        _pipeline.Loras.Fuse();
        var fusedWeights = TestLoras.Snapshot(_pipeline);
        int changed = before.Count(kv => !Same(kv.Value, fusedWeights[kv.Key]));
        Assert.That(changed, Is.GreaterThan(40), "fusing writes the update into the weights");
        using var fused = UNetOutput();
        using var fusedText = TextOutput();
        // Every Linear and Conv2d, 3x3 convolutions with stride 2 (the down-sampler) included.
        AssertTensor.RelativeClose(fused, unfused, 1e-5, "fused against unfused UNet");
        AssertTensor.RelativeClose(fusedText, unfusedText, 1e-5, "fused against unfused text encoder");
        Assert.That((unfused - plain).abs().max().item<float>(), Is.GreaterThan(1e-2), "the LoRA changes the output");

        _pipeline.Loras.Unfuse();
        var after = TestLoras.Snapshot(_pipeline);
        foreach (var (name, weight) in before)
            Assert.That(Same(weight, after[name]), Is.True, $"{name} is restored exactly");
        using var unfusedAgain = UNetOutput();
        Assert.That(Same(unfusedAgain, unfused), Is.True, "unfused, the LoRA applies at run time again");

        _pipeline.Loras.Unload("style");
        using var unloaded = UNetOutput();
        Assert.That(Same(unloaded, plain), Is.True, "unloaded, the model computes as before");
        foreach (var t in before.Values.Concat(fusedWeights.Values).Concat(after.Values)) t.Dispose();
    }

    [Test]
    public void UnfusingOneOfTwoFusedLorasKeepsTheOtherFused()
    {
        _pipeline.Loras.Load(WriteLora("a.safetensors", 1), scale: 0.5);
        _pipeline.Loras.Load(WriteLora("b.safetensors", 2, include: n => n.Contains("attn")), scale: 0.9);
        using var both = UNetOutput();
        _pipeline.Loras.Fuse();
        _pipeline.Loras.Unfuse("a");
        Assert.That(_pipeline.Loras.Loaded.Select(l => l.IsFused), Is.EqualTo(new[] { false, true }));
        using var mixed = UNetOutput();
        AssertTensor.RelativeClose(mixed, both, 1e-5, "a at run time, b fused");
    }

    [Test]
    public async Task EachGenerationChoosesItsLorasAndScales()
    {
        using var plain = await _pipeline.GenerateAsync("a red circle", Options());
        _pipeline.Loras.Load(WriteLora());
        using var byDefault = await _pipeline.GenerateAsync("a red circle", Options());
        using var none = await _pipeline.GenerateAsync("a red circle", Options([]));
        using var zero = await _pipeline.GenerateAsync("a red circle", Options([new LoraWeight("style", 0)]));
        using var named = await _pipeline.GenerateAsync("a red circle", Options([new LoraWeight("style", 1)]));
        using var half = await _pipeline.GenerateAsync("a red circle", Options([new LoraWeight("style", 0.5)]));
        Assert.That(Same(none.Pixels, plain.Pixels), Is.True, "an empty list leaves the LoRA out");
        Assert.That(Same(zero.Pixels, plain.Pixels), Is.True, "scale 0 leaves it out");
        Assert.That(Same(named.Pixels, byDefault.Pixels), Is.True, "null applies every LoRA with its own scale (1)");
        Assert.That((byDefault.Pixels - plain.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-2));
        Assert.That((half.Pixels - byDefault.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-3));

        _pipeline.Loras.SetScale("style", 0.5);
        using var halfByDefault = await _pipeline.GenerateAsync("a red circle", Options());
        Assert.That(Same(halfByDefault.Pixels, half.Pixels), Is.True, "SetScale changes the default scale");
    }

    [Test]
    public async Task ConcurrentGenerationsKeepTheirOwnChoice()
    {
        _pipeline.Loras.Load(WriteLora());
        using var alone1 = await _pipeline.GenerateAsync("a red circle", Options([new LoraWeight("style", 1)]));
        using var alone0 = await _pipeline.GenerateAsync("a red circle", Options([]));
        var with = Enumerable.Range(0, 3).Select(_ => _pipeline.GenerateAsync("a red circle", Options([new LoraWeight("style", 1)]))).ToList();
        var without = Enumerable.Range(0, 3).Select(_ => _pipeline.GenerateAsync("a red circle", Options([]))).ToList();
        await Task.WhenAll(with.Concat(without));
        foreach (var r in with) using (var result = r.Result) AssertTensor.MaxAbsClose(result.Pixels, alone1.Pixels, 1e-6, "with the LoRA, run beside others");
        foreach (var r in without) using (var result = r.Result) AssertTensor.MaxAbsClose(result.Pixels, alone0.Pixels, 1e-6, "without it, run beside others");
    }

    [Test]
    public void ALoraInThePipelineOptionsThatDoesNotFitFailsTheLoad()
    {
        string bad = Path.Combine(_dir, "bad.safetensors");
        TestLoras.Save(bad, new() { ["lora_unet_nowhere.lora_down.weight"] = zeros(4, 8), ["lora_unet_nowhere.lora_up.weight"] = zeros(8, 4) });
        var options = new PipelineOptions { Loras = [new LoraSource(WriteLora()), new LoraSource(bad)] };
        var e = Assert.ThrowsAsync<InvalidDataException>(() => StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, options))!;
        Assert.That(e.Message, Does.Contain("'lora_unet_nowhere'").And.Contain("bad.safetensors"));
    }

    [Test]
    public async Task PipelineOptionsLorasCanStartFused()
    {
        string file = WriteLora();
        _pipeline.Loras.Load(file);
        using var unfused = await _pipeline.GenerateAsync("x", Options());
        await using var fusedPipeline = await StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder, new PipelineOptions { Loras = [new LoraSource(file) { Fuse = true }] });
        Assert.That(fusedPipeline.Loras.Loaded.Single().IsFused, Is.True);
        using var fused = await fusedPipeline.GenerateAsync("x", Options());
        AssertTensor.MaxAbsClose(fused.Pixels, unfused.Pixels, 1e-4, "loaded fused against applied at run time");
    }

    [Test]
    public void BadChoicesAreRefusedWithTheirNames()
    {
        _pipeline.Loras.Load(WriteLora());
        var unknown = Assert.Throws<ArgumentException>(() => _pipeline.Generate("x", Options([new LoraWeight("nope")])))!;
        Assert.That(unknown.Message, Does.Contain("'nope'").And.Contain("'style'"));
        var twice = Assert.Throws<ArgumentException>(() => _pipeline.Generate("x", Options([new LoraWeight("style"), new LoraWeight("style", 0.5)])))!;
        Assert.That(twice.Message, Does.Contain("twice"));
        Assert.Throws<ArgumentException>(() => _pipeline.Generate("x", Options([new LoraWeight("style", double.NaN)])));
        var duplicate = Assert.Throws<ArgumentException>(() => _pipeline.Loras.Load(WriteLora("style.safetensors", 3)))!;
        Assert.That(duplicate.Message, Does.Contain("'style'"));
        Assert.Throws<KeyNotFoundException>(() => _pipeline.Loras.Unload("nope"));

        _pipeline.Loras.Fuse("style", 0.8);
        var leftOut = Assert.Throws<InvalidOperationException>(() => _pipeline.Generate("x", Options([])))!;
        Assert.That(leftOut.Message, Does.Contain("'style'").And.Contain("fused"));
        Assert.Throws<InvalidOperationException>(() => _pipeline.Generate("x", Options([new LoraWeight("style", 0.5)])));
        Assert.Throws<InvalidOperationException>(() => _pipeline.Loras.SetScale("style", 0.5));
        Assert.DoesNotThrow(() => _pipeline.Generate("x", Options([new LoraWeight("style", 0.8)])).Dispose());
    }

    [Test]
    public void TheModelCannotChangeWhileAGenerationRuns()
    {
        _pipeline.Loras.Load(WriteLora());
        string other = WriteLora("other.safetensors", 2);
        InvalidOperationException? seen = null;
        var options = Options() with
        {
            OnStep = args =>
            {
                seen ??= Assert.Throws<InvalidOperationException>(() => _pipeline.Loras.Load(other));
                Assert.Throws<InvalidOperationException>(() => _pipeline.Loras.Fuse());
                Assert.Throws<InvalidOperationException>(() => _pipeline.Loras.Unload("style"));
                return null;
            },
        };
        _pipeline.Generate("x", options).Dispose();
        Assert.That(seen!.Message, Does.Contain("while a generation runs"));
        Assert.DoesNotThrow(() => _pipeline.Loras.Load(other), "allowed again once the generation ended");
    }

    [Test]
    public async Task AnLcmLoraWorksWithTheLcmScheduler()
    {
        // An LCM-LoRA is an ordinary LoRA file: here a kohya file over the UNet only, as the published LCM-LoRAs are.
        string file = WriteLora("lcm-lora.safetensors", 7, include: n => n.StartsWith("lora_unet_", StringComparison.Ordinal));
        var options = new GenerationOptions { Scheduler = "lcm", Steps = 4, GuidanceScale = 1.0, Seed = 9 };
        using var plain = await _pipeline.GenerateAsync("a blue square", options);
        _pipeline.Loras.Load(file);
        using var withLora = await _pipeline.GenerateAsync("a blue square", options);
        _pipeline.Loras.Fuse();
        using var fused = await _pipeline.GenerateAsync("a blue square", options);
        Assert.That((withLora.Pixels - plain.Pixels).abs().max().item<float>(), Is.GreaterThan(1e-2), "the LoRA changes the LCM image");
        AssertTensor.MaxAbsClose(fused.Pixels, withLora.Pixels, 1e-4, "fused LCM-LoRA against unfused");
    }

    [Test]
    public async Task DisposingThePipelineRemovesItsLorasFromComponentsItDoesNotOwn()
    {
        var p = _pipeline;
        using var plain = await p.GenerateAsync("x", Options());
        var composed = new StableDiffusionPipeline(p.Tokenizer, p.TextEncoder, p.UNet, p.Vae, p.Scheduler, leaveComponentsOpen: true);
        composed.Loras.Load(WriteLora());
        composed.Loras.Fuse();
        composed.Dispose();
        using var after = await p.GenerateAsync("x", Options());
        Assert.That(Same(after.Pixels, plain.Pixels), Is.True, "the shared components compute as before");
    }
}
