using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Text;
using LatentDiffusion.Training;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Training;

public class DiffusersPipelineWriterTests
{
    private static readonly GenerationOptions Quick = new() { Steps = 2, Seed = 7, Width = 64, Height = 64 };

    private static string TempDir() => Path.Combine(Path.GetTempPath(), "ld-writer-" + Guid.NewGuid().ToString("N"));

    private static void SaveFixture(StableDiffusionPipeline p, string dir, ScalarType? saveAs, bool overwrite = false)
        => Save(p, Fixtures.PathOf("tiny-sd15", "tokenizer"), dir, saveAs, overwrite);

    // The generated model (no fixtures needed), float16 on disk like the fixtures, with its own tokenizer.
    private static void SaveGenerated(string dir, ScalarType? saveAs, bool overwrite = false)
        => Save(Pipelines.GeneratedModel.Pipeline, Path.Combine(Pipelines.GeneratedModel.Folder, "tokenizer"), dir, saveAs, overwrite);

    private static void Save(StableDiffusionPipeline p, string tokenizer, string dir, ScalarType? saveAs, bool overwrite)
        => DiffusersPipelineWriter.Save(dir, tokenizer, (ClipTextModel)p.TextEncoder, (UNet2DConditionModel)p.UNet,
            (AutoencoderKL)p.Vae, p.Scheduler.Config, saveAs, overwrite);

    [Test]
    public async Task Float32RoundTripGivesIdenticalPixels()
    {
        using var original = await StableDiffusionPipeline.LoadAsync(Fixtures.PathOf("tiny-sd15"));
        string dir = TempDir();
        try
        {
            SaveFixture(original, dir, ScalarType.Float32);
            using var reloaded = await StableDiffusionPipeline.LoadAsync(dir);
            using var a = original.Generate("a red square", Quick);
            using var b = reloaded.Generate("a red square", Quick);
            Assert.That(b.Pixels.eq(a.Pixels).all().item<bool>(), Is.True, "same seed, same pixels after a float32 save and reload");
            Assert.That(reloaded.Scheduler.ClassName, Is.EqualTo(original.Scheduler.ClassName));

            // The configs keep the reference's keys and values, floats written as floats (transformers checks the types:
            // "initializer_factor": 1 instead of 1.0 makes it refuse the text encoder's config).
            var differences = new List<string>();
            foreach (var component in new[] { "unet", "vae", "text_encoder" })
            {
                var expected = JsonConfig.Load(Path.Combine(Fixtures.PathOf("tiny-sd15", component), "config.json"));
                var written = JsonConfig.Load(Path.Combine(dir, component, "config.json"));
                // Token ids come from the tokenizer passed to the writer; the dtype key is named differently across versions.
                foreach (var prop in expected.Root.EnumerateObject().Where(p => !p.Name.StartsWith('_') && !p.Name.EndsWith("_token_id", StringComparison.Ordinal)
                    && p.Name is not ("dtype" or "transformers_version")))
                {
                    string actual = written.Root.TryGetProperty(prop.Name, out var v) ? Normalise(v.GetRawText()) : "(missing)";
                    if (actual != Normalise(prop.Value.GetRawText())) differences.Add($"{component}.{prop.Name}: {actual} instead of {Normalise(prop.Value.GetRawText())}");
                }
            }
            Assert.That(differences, Is.Empty);
            using var te = SafetensorsFile.Open(Path.Combine(dir, "text_encoder", "model.safetensors"));
            using var teRef = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd15", "text_encoder") + "/model.safetensors");
            Assert.That(te.Entries.Keys.Order(), Is.EqualTo(teRef.Entries.Keys.Where(k => k != "text_model.embeddings.position_ids").Order()));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    /// <summary>Written configs read like the reference's: "dpmsolver++" and "&lt;/w&gt;" as such, not as \u002B or \u003C escapes.</summary>
    [Test]
    public void ConfigTextKeepsPlusSignsAndAngleBrackets()
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse("""{ "algorithm_type": "dpmsolver++", "end": "</w>", "quote": "a \"b\"", "ratio": 1.0 }""")!;
        string text = ConfigJson.ToText(node);
        Assert.That(text, Does.Contain("\"dpmsolver++\"").And.Contain("\"</w>\"").And.Contain("\"ratio\": 1.0").And.Not.Contain("\\u00"));
        Assert.That(JsonConfig.Parse(text, "round trip").String("quote", ""), Is.EqualTo("a \"b\""));
    }

    private static string Normalise(string json) => json.ToLowerInvariant().Replace(" ", "").Replace("\n", "").Replace("\r", "");

    [Test]
    public async Task Float16SaveWritesHalfTensorsAndReloads()
    {
        var original = Pipelines.GeneratedModel.Pipeline;
        string dir = TempDir();
        try
        {
            SaveGenerated(dir, ScalarType.Float16);
            foreach (var file in new[] { "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors" })
            {
                using var f = SafetensorsFile.Open(Path.Combine(dir, file));
                Assert.That(f.Entries.Values.Select(e => e.DType).Distinct(), Is.EqualTo(new[] { "F16" }), file);
            }
            using var reloaded = await StableDiffusionPipeline.LoadAsync(dir);
            using var a = original.Generate("a red square", Quick);
            using var b = reloaded.Generate("a red square", Quick);
            // The generated model's weights are float16 on disk (as the fixtures'), so a float16 save loses nothing.
            Assert.That(b.Pixels.eq(a.Pixels).all().item<bool>(), Is.True);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    [Test]
    public void RefusesToOverwriteANonEmptyFolderUnlessAsked()
    {
        var original = Pipelines.GeneratedModel.Pipeline;
        string dir = TempDir();
        try
        {
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "keep.txt"), "x");
            Assert.Throws<IOException>(() => SaveGenerated(dir, ScalarType.Float16));
            Assert.That(File.Exists(Path.Combine(dir, "keep.txt")), Is.True);
            SaveGenerated(dir, ScalarType.Float16, overwrite: true);
            Assert.That(File.Exists(Path.Combine(dir, "keep.txt")), Is.False);
            Assert.That(File.Exists(Path.Combine(dir, "model_index.json")), Is.True);
            Assert.That(Directory.GetDirectories(Path.GetDirectoryName(dir)!, Path.GetFileName(dir) + ".tmp-*"), Is.Empty);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}
