using LatentDiffusion.Adapters;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Adapters;

/// <summary>
/// LoRA files that must not load, written here: each is refused with an exception that names the tensor or module and
/// what is wrong, and leaves the model as it was (nothing is skipped silently, nothing is half loaded).
/// </summary>
public class LoraHostileFileTests
{
    private string _dir = "";
    private StableDiffusionPipeline _pipeline = null!;
    private string _toQ = "";
    private Linear _toQModule = null!;

    [OneTimeSetUp]
    public void Load()
    {
        _dir = Directory.CreateTempSubdirectory("ld-lora-hostile-").FullName;
        _pipeline = StableDiffusionPipeline.LoadAsync(GeneratedModel.Folder).GetAwaiter().GetResult();
        var first = TestLoras.Modules(_pipeline).First(m => m.Kohya.EndsWith("attn1_to_q", StringComparison.Ordinal));
        (_toQ, _toQModule) = (first.Kohya, (Linear)first.Module);
    }

    [OneTimeTearDown]
    public void Dispose()
    {
        _pipeline.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [TearDown]
    public void NothingWasLoaded() => Assert.That(_pipeline.Loras.Loaded, Is.Empty, "a refused file leaves no LoRA behind");

    private long In => _toQModule.in_features;
    private long Out => _toQModule.out_features;

    /// <summary>A file with a valid to_q module plus <paramref name="extra"/> tensors.</summary>
    private string Write(string name, Dictionary<string, Tensor> extra, bool withValidModule = true)
    {
        var tensors = new Dictionary<string, Tensor>();
        if (withValidModule)
        {
            tensors[_toQ + ".lora_down.weight"] = ones(4, In) * 0.1f;
            tensors[_toQ + ".lora_up.weight"] = ones(Out, 4) * 0.1f;
            tensors[_toQ + ".alpha"] = tensor(2f);
        }
        foreach (var (k, v) in extra) tensors[k] = v;
        string path = Path.Combine(_dir, name + ".safetensors");
        TestLoras.Save(path, tensors);
        return path;
    }

    private T Refused<T>(string path) where T : Exception => Assert.Throws<T>(() => _pipeline.Loras.Load(path))!;

    [Test]
    public void AModuleTheModelLacksIsNamed()
    {
        string bad = _toQ.Replace("attn1", "attn9", StringComparison.Ordinal);
        var e = Refused<InvalidDataException>(Write("unknown-module", new()
        {
            [bad + ".lora_down.weight"] = zeros(4, In), [bad + ".lora_up.weight"] = zeros(Out, 4),
        }));
        Assert.That(e.Message, Does.Contain($"'{bad}'").And.Contain("no such module in the unet").And.Contain("unknown-module.safetensors"));
    }

    [Test]
    public void AShapeThatDoesNotFitTheModuleIsNamed()
    {
        string k = _toQ.Replace("to_q", "to_k", StringComparison.Ordinal);
        var e = Refused<InvalidDataException>(Write("wrong-shape", new()
        {
            [k + ".lora_down.weight"] = zeros(4, In + 1), [k + ".lora_up.weight"] = zeros(Out, 4),
        }));
        Assert.That(e.Message, Does.Contain($"'{k}'").And.Contain($"{In + 1} -> {Out}").And.Contain($"{In} -> {Out}"));
    }

    [Test]
    public void AConvolutionKernelThatDoesNotFitIsNamed()
    {
        var (name, _, module) = TestLoras.Modules(_pipeline).First(m => m.Module is Conv2d c && c.kernel_size[0] == 3);
        var conv = (Conv2d)module;
        var e = Refused<InvalidDataException>(Write("wrong-kernel", new()
        {
            [name + ".lora_down.weight"] = zeros(4, conv.in_channels, 1, 1), [name + ".lora_up.weight"] = zeros(conv.out_channels, 4, 1, 1),
        }, withValidModule: false));
        Assert.That(e.Message, Does.Contain($"'{name}'").And.Contain("1x1").And.Contain("3x3"));
    }

    [Test]
    public void RanksThatDisagreeAreNamed()
    {
        var e = Refused<InvalidDataException>(Write("rank-mismatch", new()
        {
            [_toQ + ".lora_down.weight"] = zeros(4, In), [_toQ + ".lora_up.weight"] = zeros(Out, 8),
        }, withValidModule: false));
        Assert.That(e.Message, Does.Contain($"'{_toQ}'").And.Contain("rank 4").And.Contain("takes 8"));
    }

    [Test]
    public void ANonFiniteAlphaIsNamed()
    {
        var e = Refused<InvalidDataException>(Write("nan-alpha", new()
        {
            [_toQ + ".lora_down.weight"] = zeros(4, In), [_toQ + ".lora_up.weight"] = zeros(Out, 4), [_toQ + ".alpha"] = tensor(float.NaN),
        }, withValidModule: false));
        Assert.That(e.Message, Does.Contain($"'{_toQ}.alpha'").And.Contain("finite"));
    }

    [Test]
    public void AnAlphaThatIsNotOneNumberIsNamed()
    {
        var e = Refused<InvalidDataException>(Write("vector-alpha", new()
        {
            [_toQ + ".lora_down.weight"] = zeros(4, In), [_toQ + ".lora_up.weight"] = zeros(Out, 4), [_toQ + ".alpha"] = ones(2),
        }, withValidModule: false));
        Assert.That(e.Message, Does.Contain($"'{_toQ}.alpha'").And.Contain("[2]"));
    }

    [Test]
    public void NonFiniteWeightsAreNamed()
    {
        var e = Refused<InvalidDataException>(Write("inf-weight", new()
        {
            [_toQ + ".lora_down.weight"] = full(4, In, float.PositiveInfinity), [_toQ + ".lora_up.weight"] = zeros(Out, 4),
        }, withValidModule: false));
        Assert.That(e.Message, Does.Contain($"'{_toQ}.lora_down.weight'").And.Contain("NaN or infinite"));
    }

    [Test]
    public void IntegerWeightsAreNamed()
    {
        var e = Refused<InvalidDataException>(Write("int-weight", new()
        {
            [_toQ + ".lora_down.weight"] = zeros(4, In, ScalarType.Int32), [_toQ + ".lora_up.weight"] = zeros(Out, 4),
        }, withValidModule: false));
        Assert.That(e.Message, Does.Contain($"'{_toQ}.lora_down.weight'").And.Contain("I32"));
    }

    [Test]
    public void AMissingUpProjectionIsNamed()
    {
        string v = _toQ.Replace("to_q", "to_v", StringComparison.Ordinal);
        var e = Refused<InvalidDataException>(Write("missing-up", new() { [v + ".lora_down.weight"] = zeros(4, In) }));
        Assert.That(e.Message, Does.Contain($"'{v}'").And.Contain("no up"));
    }

    [Test]
    public void ATensorOfNoKnownFormatIsNamed()
    {
        var e = Refused<InvalidDataException>(Write("stray", new() { [_toQ + ".lora_middle.weight"] = zeros(4, 4), ["model.diffusion_model.x"] = zeros(1) }));
        Assert.That(e.Message, Does.Contain($"'{_toQ}.lora_middle.weight'").And.Contain("'model.diffusion_model.x'"));
    }

    [Test]
    public void ATextEncoderTheModelLacksIsNamed()
    {
        const string te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj";
        var e = Refused<InvalidDataException>(Write("sdxl-te2", new()
        {
            [te2 + ".lora_down.weight"] = zeros(4, 32), [te2 + ".lora_up.weight"] = zeros(32, 4),
        }));
        Assert.That(e.Message, Does.Contain($"'{te2}'").And.Contain("no text_encoder_2"));
    }

    [Test]
    public void TwoNamesForOneModuleAreRefused()
    {
        string peft = TestLoras.Modules(_pipeline).First(m => m.Kohya == _toQ).Peft;
        var e = Refused<InvalidDataException>(Write("both-formats", new()
        {
            [peft + ".lora_A.weight"] = zeros(4, In), [peft + ".lora_B.weight"] = zeros(Out, 4),
        }));
        Assert.That(e.Message, Does.Contain($"'{peft}'").And.Contain($"'{_toQ}'").And.Contain("both update"));
    }

    [TestCase("hada_w1_a", "LoHa")]
    [TestCase("lokr_w1", "LoKr")]
    [TestCase("dora_scale", "DoRA")]
    [TestCase("lora_mid.weight", "Tucker")]
    public void LycorisVariantsAreRefusedByName(string suffix, string kind)
    {
        var e = Refused<NotSupportedException>(Write("lycoris-" + kind, new() { [$"{_toQ}.{suffix}"] = zeros(4, 4) }));
        Assert.That(e.Message, Does.Contain($"'{_toQ}.{suffix}'").And.Contain(kind));
    }

    [Test]
    public void AFileWithoutLoraTensorsIsRefused()
    {
        var e = Refused<InvalidDataException>(Write("empty", new(), withValidModule: false));
        Assert.That(e.Message, Does.Contain("no LoRA tensors"));
    }

    [Test]
    public void AMissingFileOrFolderIsNamed()
    {
        string missing = Path.Combine(_dir, "missing.safetensors");
        Assert.That(Refused<FileNotFoundException>(missing).Message, Does.Contain(missing));
        Assert.That(Refused<FileNotFoundException>(_dir).Message, Does.Contain(LoraFile.DiffusersWeightsName));
    }

    [Test]
    public void ARefusedFileLeavesTheModelComputingAsBefore()
    {
        using var generator = new Generator(3);
        using var ids = tensor(new long[] { 0, 5, 9, 2 }, [1, 4]);
        using var before = _pipeline.TextEncoder.Encode(ids);
        // The valid text-encoder module comes first in the file; the bad UNet module after it must stop the whole load.
        const string te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
        string bad = _toQ.Replace("attn1", "attn9", StringComparison.Ordinal);
        Refused<InvalidDataException>(Write("half-good", new()
        {
            [te + ".lora_down.weight"] = ones(4, 32), [te + ".lora_up.weight"] = ones(32, 4),
            [bad + ".lora_down.weight"] = zeros(4, In), [bad + ".lora_up.weight"] = zeros(Out, 4),
        }));
        using var after = _pipeline.TextEncoder.Encode(ids);
        Assert.That(LoraBehaviourTests.Same(before, after), Is.True);
    }
}
