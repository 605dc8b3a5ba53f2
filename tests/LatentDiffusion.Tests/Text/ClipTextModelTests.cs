using LatentDiffusion.Tests.Pipelines;
using LatentDiffusion.Formats;
using LatentDiffusion.Text;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Text;

public class ClipTextModelTests
{
    private static ClipTextModel LoadTiny(string variant) => ClipTextModel.Load(Fixtures.PathOf($"tiny-{variant}", "text_encoder"), CPU, ScalarType.Float32);

    [TestCase("sd15")]
    [TestCase("sd2v")]
    public void MatchesTheReferenceHiddenStates(string variant)
    {
        using var model = LoadTiny(variant);
        using var ids = Fixtures.Expected($"{variant}/text/input_ids");
        using var expectedLast = Fixtures.Expected($"{variant}/text/last_hidden_state");
        using var expectedPenultimate = Fixtures.Expected($"{variant}/text/penultimate_normed");
        using var _ = no_grad();
        using var last = model.Encode(ids);
        using var penultimate = model.Encode(ids, clipSkip: 1);
        Assert.That(last.dtype, Is.EqualTo(ScalarType.Float32));
        AssertTensor.RelativeClose(last, expectedLast, 1e-4, $"{variant} last_hidden_state");
        AssertTensor.RelativeClose(penultimate, expectedPenultimate, 1e-4, $"{variant} penultimate_normed");
    }

    [Test]
    public void TokenizerAndEncoderTogetherReproduceTheReference()
    {
        var tok = ClipTokenizer.FromDirectory(Fixtures.PathOf("tiny-sd2v", "tokenizer"));
        var prompts = TextFixtures.Prompts("sd2v");
        using var model = LoadTiny("sd2v");
        using var ids = tensor(prompts.SelectMany(p => tok.EncodePadded(p).Ids.Select(i => (long)i)).ToArray(), new long[] { prompts.Length, 77 });
        using var expected = Fixtures.Expected("sd2v/text/last_hidden_state");
        using var _ = no_grad();
        using var actual = model.Encode(ids);
        AssertTensor.RelativeClose(actual, expected, 1e-4, "sd2v tokenizer + encoder");
    }

    [Test]
    public void ParameterNamesAreTheReferenceNamesWithoutThePrefix()
    {
        using var model = LoadTiny("sd15");
        var names = model.named_parameters().Select(p => p.name).ToList();
        Assert.That(names, Has.Count.EqualTo(2 + 5 * 16 + 2));
        Assert.That(names, Does.Contain("embeddings.token_embedding.weight"));
        Assert.That(names, Does.Contain("embeddings.position_embedding.weight"));
        Assert.That(names, Does.Contain("encoder.layers.4.self_attn.q_proj.weight"));
        Assert.That(names, Does.Contain("encoder.layers.0.mlp.fc2.bias"));
        Assert.That(names, Does.Contain("final_layer_norm.weight"));
        Assert.That(model.named_buffers(), Is.Empty);
        Assert.That(model.HiddenSize, Is.EqualTo(32));
        Assert.That(model.MaxPositions, Is.EqualTo(77));
        Assert.That(model.Config.HiddenAct, Is.EqualTo(ClipActivation.QuickGelu));
    }

    [Test]
    public void LoadsFromLocatedTensorsWithOrWithoutPrefix()
    {
        using var file = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd15", "text_encoder", "model.safetensors"));
        var config = JsonConfig.Load(Fixtures.PathOf("tiny-sd15", "text_encoder", "config.json"));
        var weights = file.Entries.Keys.ToDictionary(k => k, k => TensorRef.Direct(file, k));
        using var model = ClipTextModel.Load(weights, config, CPU, ScalarType.Float32);
        using var ids = Fixtures.Expected("sd15/text/input_ids");
        using var expected = Fixtures.Expected("sd15/text/last_hidden_state");
        using var _ = no_grad();
        using var actual = model.Encode(ids);
        AssertTensor.RelativeClose(actual, expected, 1e-4, "sd15 via dictionary");

        var both = new Dictionary<string, TensorRef>(weights) { ["final_layer_norm.weight"] = weights["text_model.final_layer_norm.weight"] };
        var e = Assert.Throws<InvalidDataException>(() => ClipTextModel.Load(both, config, CPU, ScalarType.Float32))!;
        Assert.That(e.Message, Does.Contain("final_layer_norm.weight").And.Contain("twice"));
    }

    [Test]
    public void ClipSkipUpToTheEmbeddingsAndBadIdsAreRefused()
    {
        using var model = LoadTiny("sd15");
        using var ids = Fixtures.Expected("sd15/text/input_ids");
        using var _ = no_grad();
        using var all = model.Encode(ids, clipSkip: 5);
        Assert.That(all.shape, Is.EqualTo(new long[] { 3, 77, 32 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Encode(ids, clipSkip: 6));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Encode(ids, clipSkip: -1));
        using var tooLong = zeros(1, 78, dtype: ScalarType.Int64);
        Assert.That(Assert.Throws<ArgumentException>(() => model.Encode(tooLong))!.Message, Does.Contain("78"));
        using var outOfVocab = full(1, 5, 49408L, dtype: ScalarType.Int64);
        Assert.That(Assert.Throws<ArgumentException>(() => model.Encode(outOfVocab))!.Message, Does.Contain("49408"));
        using var floats = zeros(1, 5);
        Assert.Throws<ArgumentException>(() => model.Encode(floats));
        using var flat = zeros(5, dtype: ScalarType.Int64);
        Assert.Throws<ArgumentException>(() => model.Encode(flat));
        // A shorter sequence uses the first positions, as the reference does.
        using var shortIds = ids[.., ..10];
        using var shortOut = model.Encode(shortIds);
        Assert.That(shortOut.shape, Is.EqualTo(new long[] { 3, 10, 32 }));
    }

    private static string CopyTextEncoder(string variant, Func<string, string>? editConfig = null)
    {
        string src = variant == "generated" ? Path.Combine(GeneratedModel.Folder, "text_encoder") : Fixtures.PathOf($"tiny-{variant}", "text_encoder");
        string dir = Directory.CreateTempSubdirectory("ld-te-").FullName;
        string config = File.ReadAllText(Path.Combine(src, "config.json"));
        File.WriteAllText(Path.Combine(dir, "config.json"), editConfig is null ? config : editConfig(config));
        File.Copy(Path.Combine(src, "model.safetensors"), Path.Combine(dir, "model.safetensors"));
        return dir;
    }

    [Test]
    public void MissingConfigKeyIsNamed()
    {
        string dir = CopyTextEncoder("generated", c => c.Replace("\"num_attention_heads\": 4,", ""));
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => ClipTextModel.Load(dir, CPU, ScalarType.Float32))!;
            Assert.That(e.Message, Does.Contain("num_attention_heads").And.Contain(Path.Combine(dir, "config.json")));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void UnsupportedActivationIsRefused()
    {
        string dir = CopyTextEncoder("generated", c => c.Replace("\"quick_gelu\"", "\"relu\""));
        try
        {
            var e = Assert.Throws<NotSupportedException>(() => ClipTextModel.Load(dir, CPU, ScalarType.Float32))!;
            Assert.That(e.Message, Does.Contain("hidden_act").And.Contain("relu").And.Contain("quick_gelu"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MissingFilesAreNamed()
    {
        string dir = CopyTextEncoder("generated");
        try
        {
            File.Delete(Path.Combine(dir, "model.safetensors"));
            var e = Assert.Throws<FileNotFoundException>(() => ClipTextModel.Load(dir, CPU, ScalarType.Float32))!;
            Assert.That(e.Message, Does.Contain("model.safetensors").And.Contain(dir));
            File.Delete(Path.Combine(dir, "config.json"));
            e = Assert.Throws<FileNotFoundException>(() => ClipTextModel.Load(dir, CPU, ScalarType.Float32))!;
            Assert.That(e.Message, Does.Contain("config.json"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void WrongShapedTensorIsNamed()
    {
        string dir = CopyTextEncoder("sd2v");
        try
        {
            string weights = Path.Combine(dir, "model.safetensors");
            var tensors = new Dictionary<string, Tensor>();
            using (var file = SafetensorsFile.Open(weights))
                foreach (var name in file.Entries.Keys) tensors[name] = file.Load(name);
            tensors["encoder.layers.2.mlp.fc1.weight"].Dispose();
            tensors["encoder.layers.2.mlp.fc1.weight"] = zeros(36, 32, dtype: ScalarType.Float16);
            SafetensorsWriter.Save(weights, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var t in tensors.Values) t.Dispose();

            var e = Assert.Throws<InvalidDataException>(() => ClipTextModel.Load(dir, CPU, ScalarType.Float32))!;
            Assert.That(e.Message, Does.Contain("encoder.layers.2.mlp.fc1.weight").And.Contain("[36, 32]").And.Contain("[37, 32]"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void MissingAndUnexpectedTensorsAreNamed()
    {
        string dir = CopyTextEncoder("sd2v", c => c.Replace("\"num_hidden_layers\": 5", "\"num_hidden_layers\": 4"));
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => ClipTextModel.Load(dir, CPU, ScalarType.Float32))!;
            Assert.That(e.Message, Does.Contain("unexpected").And.Contain("encoder.layers.4."));
        }
        finally { Directory.Delete(dir, true); }
    }
}
