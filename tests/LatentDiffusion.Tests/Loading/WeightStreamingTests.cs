using LatentDiffusion.Formats;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Loading;

/// <summary>
/// Weights are read into the model's storage piece by piece (straight in when the dtypes agree, through a reused staging
/// buffer otherwise): every element arrives, converted exactly as <c>Tensor.to</c> converts, and a value that is not
/// finite, as stored or after conversion, is refused with the tensor's name.
/// </summary>
public class WeightStreamingTests
{
    private string _dir = "";

    [SetUp]
    public void MakeDir() => Directory.CreateDirectory(_dir = Path.Combine(Path.GetTempPath(), "ld-stream-" + Guid.NewGuid().ToString("N")));

    [TearDown]
    public void RemoveDir() => Directory.Delete(_dir, recursive: true);

    // Larger than one staging piece (2^21 elements), with a ragged end, so the piecewise path is exercised.
    private const long Rows = 2100, Cols = 1001;

    private sealed class OneLinear : nn.Module
    {
        public OneLinear(ScalarType dtype) : base(nameof(OneLinear)) => register_module("proj", nn.Linear(Cols, Rows, hasBias: true, dtype: dtype));
    }

    private (string Path, Tensor Weight, Tensor Bias) Write(ScalarType stored, Action<Tensor>? edit = null)
    {
        var generator = new Generator(7);
        var weight = (rand(new long[] { Rows, Cols }, generator: generator) - 0.5).to(stored);
        var bias = (rand(new long[] { Rows }, generator: generator) - 0.5).to(stored);
        edit?.Invoke(weight);
        string path = Path.Combine(_dir, $"w-{stored}.safetensors");
        SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["proj.weight"] = weight, ["proj.bias"] = bias });
        return (path, weight, bias);
    }

    private static OneLinear Load(string path, ScalarType dtype)
    {
        using var file = SafetensorsFile.Open(path);
        var weights = file.Entries.Keys.ToDictionary(k => k, k => TensorRef.Direct(file, k));
        return WeightLoader.BuildChecked(_ => new OneLinear(dtype), CPU, weights, "test");
    }

    [TestCase(ScalarType.Float16, ScalarType.Float16)]
    [TestCase(ScalarType.Float16, ScalarType.Float32)]
    [TestCase(ScalarType.Float16, ScalarType.BFloat16)]
    [TestCase(ScalarType.Float32, ScalarType.Float32)]
    [TestCase(ScalarType.Float32, ScalarType.Float16)]
    public void EveryElementArrivesConvertedAsToConverts(ScalarType stored, ScalarType held)
    {
        var (path, weight, bias) = Write(stored);
        using var model = Load(path, held);
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.That(parameters["proj.weight"].dtype, Is.EqualTo(held));
        Assert.That(parameters["proj.weight"].equal(weight.to(held)).all().item<bool>(), Is.True, "weight");
        Assert.That(parameters["proj.bias"].equal(bias.to(held)).all().item<bool>(), Is.True, "bias");
    }

    [Test]
    public void ANaNStoredInTheLastPieceIsRefused()
    {
        var (path, _, _) = Write(ScalarType.Float16, w => w[Rows - 1, Cols - 1] = float.NaN);
        foreach (var held in new[] { ScalarType.Float16, ScalarType.Float32 })
        {
            var e = Assert.Throws<InvalidDataException>(() => Load(path, held).Dispose())!;
            Assert.That(e.Message, Does.Contain("proj.weight").And.Contain("NaN or infinite"), held.ToString());
        }
    }

    [Test]
    public void AValueThatOverflowsInTheHeldDtypeIsRefused()
    {
        // 1e6 is finite in float32 but infinite in float16.
        var (path, _, _) = Write(ScalarType.Float32, w => w[Rows / 2, 3] = 1e6f);
        using (var single = Load(path, ScalarType.Float32)) { }
        var e = Assert.Throws<InvalidDataException>(() => Load(path, ScalarType.Float16).Dispose())!;
        Assert.That(e.Message, Does.Contain("proj.weight").And.Contain("after conversion to Float16"));
    }
}
