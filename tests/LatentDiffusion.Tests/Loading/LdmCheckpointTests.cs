using LatentDiffusion.Formats;
using LatentDiffusion.Loading.SingleFile;
using NUnit.Framework;
using static TorchSharp.torch;
using W = LatentDiffusion.Tests.Loading.TestSafetensorsWriter;

namespace LatentDiffusion.Tests.Loading;

public class LdmCheckpointTests
{
    private static string SingleFile => Fixtures.PathOf("tiny-sd15.safetensors");

    private static string Folder(string component) => Fixtures.PathOf("tiny-sd15", component);

    private static SafetensorsFile FolderWeights(string component)
        => SafetensorsFile.Open(Directory.GetFiles(Folder(component), "*.safetensors").Single());

    private string _temp = "";

    private static bool Same(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape)) return false;
        using var eq = a.eq(b);
        using var all = eq.all();
        return all.item<bool>();
    }

    [SetUp]
    public void MakeTemp() => Directory.CreateDirectory(_temp = Path.Combine(Path.GetTempPath(), "ldmckpt-" + Guid.NewGuid().ToString("N")));

    [TearDown]
    public void RemoveTemp() => Directory.Delete(_temp, recursive: true);

    /// <summary>The mapped weights equal the folder's: same names (after <paramref name="rename"/>), shapes and values.</summary>
    private static void AssertSameWeights(IReadOnlyDictionary<string, TensorRef> mapped, SafetensorsFile folder, Func<string, string?> rename, string what)
    {
        var expected = folder.Entries.Keys.Select(k => (Folder: k, Name: rename(k))).Where(p => p.Name is not null).ToDictionary(p => p.Name!, p => p.Folder);
        Assert.That(mapped.Keys.Order(StringComparer.Ordinal), Is.EqualTo(expected.Keys.Order(StringComparer.Ordinal)), $"{what}: key set");
        foreach (var (name, folderKey) in expected)
        {
            var w = mapped[name];
            using var actual = w.Load(ScalarType.Float32, CPU);
            using var reference = folder.Load(folderKey, ScalarType.Float32);
            Assert.That(w.Shape, Is.EqualTo(folder.Entries[folderKey].Shape), $"{what}: declared shape of {name}");
            Assert.That(actual.shape, Is.EqualTo(reference.shape), $"{what}: loaded shape of {name}");
            Assert.That(Same(actual, reference), Is.True, $"{what}: values of {name} ({w})");
        }
    }

    [Test]
    public void DetectsTheOriginalLayout()
    {
        using var single = SafetensorsFile.Open(SingleFile);
        using var unet = FolderWeights("unet");
        Assert.That(LdmCheckpoint.IsSingleFile(single), Is.True);
        Assert.That(LdmCheckpoint.IsSingleFile(unet), Is.False);
        Assert.That(LdmCheckpoint.IsSingleFile(SingleFile), Is.True);
    }

    [Test]
    public void UNetMatchesTheFolder()
    {
        using var ckpt = LdmCheckpoint.Open(SingleFile);
        using var folder = FolderWeights("unet");
        Assert.That(ckpt.UNetWeights, Does.ContainKey("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"));
        AssertSameWeights(ckpt.UNetWeights, folder, k => k, "UNet");
    }

    [Test]
    public void VaeMatchesTheFolderInCurrentNames()
    {
        using var ckpt = LdmCheckpoint.Open(SingleFile);
        using var folder = FolderWeights("vae");
        // The folder uses the legacy attention names; the map produces the current ones.
        static string Current(string k) => k.Replace(".query.", ".to_q.").Replace(".key.", ".to_k.").Replace(".value.", ".to_v.").Replace(".proj_attn.", ".to_out.0.");
        Assert.That(ckpt.VaeWeights["encoder.mid_block.attentions.0.to_q.weight"].Shape, Is.EqualTo(new long[] { 64, 64 }));
        Assert.That(ckpt.File.Entries["first_stage_model.encoder.mid.attn_1.q.weight"].Shape, Is.EqualTo(new long[] { 64, 64, 1, 1 }));
        Assert.That(ckpt.VaeWeights, Does.ContainKey("decoder.mid_block.attentions.0.to_out.0.weight"));
        AssertSameWeights(ckpt.VaeWeights, folder, Current, "VAE");
    }

    [Test]
    public void TextEncoderMatchesTheFolderWithoutPrefix()
    {
        using var ckpt = LdmCheckpoint.Open(SingleFile);
        using var folder = FolderWeights("text_encoder");
        Assert.That(ckpt.TextEncoderLayout, Is.EqualTo(TextEncoderLayout.Clip));
        Assert.That(ckpt.TextEncoderWeights, Does.ContainKey("embeddings.token_embedding.weight"));
        Assert.That(ckpt.TextEncoderWeights, Does.ContainKey("encoder.layers.0.self_attn.q_proj.weight"));
        Assert.That(ckpt.TextEncoderWeights, Does.ContainKey("final_layer_norm.weight"));
        AssertSameWeights(ckpt.TextEncoderWeights, folder,
            k => k == "text_model.embeddings.position_ids" ? null : k.StartsWith("text_model.") ? k["text_model.".Length..] : k, "text encoder");
    }

    [Test]
    public void OnlyPositionIdsAreLeftOver()
    {
        using var ckpt = LdmCheckpoint.Open(SingleFile);
        Assert.That(ckpt.UnclaimedKeys, Is.EqualTo(new[] { "cond_stage_model.transformer.text_model.embeddings.position_ids" }));
        Assert.That(ckpt.UnexpectedKeys, Is.Empty);
        Assert.That(ckpt.IsStableDiffusion2, Is.False);
        Assert.That(LdmCheckpoint.IsKnownExtra("model_ema.diffusion_modelinput_blocks00weight"), Is.True);
        Assert.That(LdmCheckpoint.IsKnownExtra("alphas_cumprod"), Is.True);
        Assert.That(LdmCheckpoint.IsKnownExtra("model.diffusion_model.label_emb.0.0.weight"), Is.False);
    }

    [Test]
    public void InferredUNetConfigMatchesTheFolder()
    {
        using var ckpt = LdmCheckpoint.Open(SingleFile);
        var inferred = ckpt.UNetConfig;
        var folder = JsonConfig.Load(Path.Combine(Folder("unet"), "config.json"));
        Assert.That(inferred.Source, Does.Contain("inferred"));
        Assert.That(inferred.IntArray("block_out_channels"), Is.EqualTo(folder.IntArray("block_out_channels")));
        foreach (var key in new[] { "layers_per_block", "cross_attention_dim", "in_channels", "out_channels", "transformer_layers_per_block", "norm_num_groups" })
            Assert.That(inferred.Int(key, -1), Is.EqualTo(folder.Int(key, -2)), key);
        foreach (var key in new[] { "use_linear_projection", "upcast_attention", "flip_sin_to_cos", "center_input_sample" })
            Assert.That(inferred.Bool(key, true), Is.EqualTo(folder.Bool(key, false)), key);
        foreach (var key in new[] { "down_block_types", "up_block_types" })
            Assert.That(inferred.StringArray(key), Is.EqualTo(folder.StringArray(key)), key);
        Assert.That(inferred.String("mid_block_type", null), Is.EqualTo(folder.String("mid_block_type", null)));
        Assert.That(inferred.Int("attention_head_dim", 0), Is.EqualTo(8), "SD 1.x: 8 heads");
        Assert.That(inferred.Int("sample_size", 0), Is.EqualTo(64), "512-pixel default; only a config folder can say otherwise");
    }

    [Test]
    public void InferredVaeConfigMatchesTheFolder()
    {
        using var ckpt = LdmCheckpoint.Open(SingleFile);
        var inferred = ckpt.VaeConfig;
        var folder = JsonConfig.Load(Path.Combine(Folder("vae"), "config.json"));
        Assert.That(inferred.IntArray("block_out_channels"), Is.EqualTo(folder.IntArray("block_out_channels")));
        foreach (var key in new[] { "layers_per_block", "latent_channels", "in_channels", "out_channels", "norm_num_groups" })
            Assert.That(inferred.Int(key, -1), Is.EqualTo(folder.Int(key, -2)), key);
        foreach (var key in new[] { "down_block_types", "up_block_types" })
            Assert.That(inferred.StringArray(key), Is.EqualTo(folder.StringArray(key)), key);
        foreach (var key in new[] { "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention" })
            Assert.That(inferred.Bool(key, false), Is.EqualTo(folder.Bool(key, true)), key);
        Assert.That(inferred.Double("scaling_factor", 0), Is.EqualTo(folder.Double("scaling_factor", 1)));
    }

    [Test]
    public void InferredTextEncoderConfigMatchesTheFolderExceptHeads()
    {
        using var ckpt = LdmCheckpoint.Open(SingleFile);
        var inferred = ckpt.TextEncoderConfig;
        var folder = JsonConfig.Load(Path.Combine(Folder("text_encoder"), "config.json"));
        foreach (var key in new[] { "hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings", "vocab_size", "bos_token_id", "eos_token_id", "pad_token_id" })
            Assert.That(inferred.Int(key, -1), Is.EqualTo(folder.Int(key, -2)), key);
        Assert.That(inferred.String("hidden_act", null), Is.EqualTo("quick_gelu"));
        Assert.That(inferred.Double("layer_norm_eps", 0), Is.EqualTo(1e-5));
        // Width-8 heads cannot be told from width-32 weights: inference assumes width 64 (at least one head).
        Assert.That(inferred.Int("num_attention_heads", 0), Is.EqualTo(1));
    }

    [Test]
    public void DefaultSchedulerIsTheReferenceDefault()
    {
        using var ckpt = LdmCheckpoint.Open(SingleFile);
        var s = ckpt.SchedulerConfig;
        Assert.That(s.String("_class_name", null), Is.EqualTo("PNDMScheduler"));
        Assert.That(s.String("beta_schedule", null), Is.EqualTo("scaled_linear"));
        Assert.That(s.Double("beta_start", 0), Is.EqualTo(0.00085));
        Assert.That(s.Double("beta_end", 0), Is.EqualTo(0.012));
        Assert.That(s.Int("steps_offset", 0), Is.EqualTo(1));
        Assert.That(s.Bool("skip_prk_steps", false), Is.True);
        Assert.That(s.String("prediction_type", null), Is.EqualTo("epsilon"));
        Assert.That(s.Int("num_train_timesteps", 0), Is.EqualTo(1000));
    }

    [Test]
    public void ConfigFolderTakesPrecedence()
    {
        using var ckpt = LdmCheckpoint.Open(SingleFile, Fixtures.PathOf("tiny-sd15"));
        Assert.That(ckpt.TextEncoderConfig.Int("num_attention_heads", 0), Is.EqualTo(4));
        Assert.That(ckpt.TextEncoderConfig.Source, Does.Contain("text_encoder"));
        Assert.That(ckpt.UNetConfig.Int("sample_size", 0), Is.EqualTo(16));
        Assert.That(ckpt.VaeConfig.Int("sample_size", 0), Is.EqualTo(128));
        Assert.That(ckpt.SchedulerConfig.String("timestep_spacing", null), Is.EqualTo("leading"));
        foreach (var (config, component) in new[] { (ckpt.UNetConfig, "unet"), (ckpt.VaeConfig, "vae"), (ckpt.TextEncoderConfig, "text_encoder") })
        {
            var folder = JsonConfig.Load(Path.Combine(Folder(component), "config.json"));
            foreach (var p in folder.Root.EnumerateObject())
                Assert.That(System.Text.Json.Nodes.JsonNode.DeepEquals(System.Text.Json.Nodes.JsonNode.Parse(config.Root.GetProperty(p.Name).GetRawText()),
                    System.Text.Json.Nodes.JsonNode.Parse(p.Value.GetRawText())), Is.True, $"{component}: {p.Name}");
        }
        Assert.Throws<DirectoryNotFoundException>(() => LdmCheckpoint.Open(SingleFile, Path.Combine(_temp, "missing")));
    }

    [Test]
    public void FileWithNeitherLayoutIsRefused()
    {
        string path = Path.Combine(_temp, "other.safetensors");
        W.Write(path, [W.Arange("foo.weight", 2, 3)]);
        var e = Assert.Throws<InvalidDataException>(() => LdmCheckpoint.Open(path))!;
        Assert.That(e.Message, Does.Contain("model.diffusion_model.").And.Contain("first_stage_model.").And.Contain("cond_stage_model.").And.Contain("expected").And.Contain("foo.weight"));

        var diffusers = Directory.GetFiles(Folder("unet"), "*.safetensors").Single();
        e = Assert.Throws<InvalidDataException>(() => LdmCheckpoint.Open(diffusers))!;
        Assert.That(e.Message, Does.Contain("diffusers folder"));
    }

    /// <summary>
    /// The fixture's UNet and VAE layout (zero data) with SD 2.x's linear transformer projections, and a synthetic
    /// OpenCLIP text encoder of <paramref name="blocks"/> residual blocks of width <paramref name="width"/>.
    /// </summary>
    private string WriteSd2Like(int width, int blocks, IEnumerable<W.Tensor>? extra = null)
    {
        using var source = SafetensorsFile.Open(SingleFile);
        var tensors = new List<W.Tensor>();
        foreach (var e in source.Entries.Values.Where(e => !e.Name.StartsWith("cond_stage_model.", StringComparison.Ordinal)).OrderBy(e => e.Name, StringComparer.Ordinal))
        {
            bool linear = e.Name.StartsWith("model.diffusion_model.", StringComparison.Ordinal) && (e.Name.EndsWith(".proj_in.weight") || e.Name.EndsWith(".proj_out.weight"));
            tensors.Add(W.Zeros(e.Name, e.DType, linear ? e.Shape[..2] : e.Shape));
        }
        const string p = "cond_stage_model.model.";
        int d = width, mlp = 3 * width, vocab = 11, context = 7;
        tensors.Add(W.Arange(p + "token_embedding.weight", vocab, d));
        tensors.Add(W.Arange(p + "positional_embedding", context, d));
        tensors.Add(W.Arange(p + "ln_final.weight", d));
        tensors.Add(W.Arange(p + "ln_final.bias", d));
        tensors.Add(W.Arange(p + "text_projection", d, d));
        tensors.Add(W.F32(p + "logit_scale", [], [4.6f]));
        for (int i = 0; i < blocks; i++)
        {
            string b = $"{p}transformer.resblocks.{i}.";
            tensors.Add(W.Arange(b + "attn.in_proj_weight", 3 * d, d));
            tensors.Add(W.Arange(b + "attn.in_proj_bias", 3 * d));
            tensors.Add(W.Arange(b + "attn.out_proj.weight", d, d));
            tensors.Add(W.Arange(b + "attn.out_proj.bias", d));
            tensors.Add(W.Arange(b + "ln_1.weight", d));
            tensors.Add(W.Arange(b + "ln_1.bias", d));
            tensors.Add(W.Arange(b + "ln_2.weight", d));
            tensors.Add(W.Arange(b + "ln_2.bias", d));
            tensors.Add(W.Arange(b + "mlp.c_fc.weight", mlp, d));
            tensors.Add(W.Arange(b + "mlp.c_fc.bias", mlp));
            tensors.Add(W.Arange(b + "mlp.c_proj.weight", d, mlp));
            tensors.Add(W.Arange(b + "mlp.c_proj.bias", d));
        }
        tensors.AddRange(extra ?? []);
        string path = Path.Combine(_temp, "sd2-like.safetensors");
        W.Write(path, tensors);
        return path;
    }

    [Test]
    public void OpenClipFusedProjectionIsSplitIntoQueryKeyValue()
    {
        const int d = 128;
        string path = WriteSd2Like(d, blocks: 3, extra:
        [
            W.F32("alphas_cumprod", [2], [1f, 0.5f]), W.F32("model_ema.decay", [], [0.9999f]),
            W.Arange("model.diffusion_model.label_emb.0.0.weight", 2, 2), W.Arange("cond_stage_model.model.transformer.resblocks.0.ls_1.gamma", d),
        ]);
        using var ckpt = LdmCheckpoint.Open(path);
        Assert.That(ckpt.TextEncoderLayout, Is.EqualTo(TextEncoderLayout.OpenClip));
        Assert.That(ckpt.IsStableDiffusion2, Is.True);

        var expected = new[] { "embeddings.token_embedding.weight", "embeddings.position_embedding.weight", "final_layer_norm.weight", "final_layer_norm.bias" }
            .Concat(Enumerable.Range(0, 2).SelectMany(i => new[]
            {
                "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
                "self_attn.out_proj.weight", "self_attn.out_proj.bias", "layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight", "layer_norm2.bias",
                "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
            }.Select(n => $"encoder.layers.{i}.{n}")));
        Assert.That(ckpt.TextEncoderWeights.Keys.Order(StringComparer.Ordinal), Is.EqualTo(expected.Order(StringComparer.Ordinal)), "SD 2.x keeps all but the last block");

        using var fusedWeight = ckpt.File.Load("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight");
        using var fusedBias = ckpt.File.Load("cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias");
        string[] parts = ["q", "k", "v"];
        for (int i = 0; i < 3; i++)
        {
            var w = ckpt.TextEncoderWeights[$"encoder.layers.1.self_attn.{parts[i]}_proj.weight"];
            var b = ckpt.TextEncoderWeights[$"encoder.layers.1.self_attn.{parts[i]}_proj.bias"];
            Assert.That(w.Shape, Is.EqualTo(new long[] { d, d }));
            Assert.That(b.Shape, Is.EqualTo(new long[] { d }));
            using var wv = w.Load(ScalarType.Float32, CPU);
            using var bv = b.Load(ScalarType.Float32, CPU);
            using var we = fusedWeight[TensorIndex.Slice(i * d, (i + 1) * d)];
            using var be = fusedBias[TensorIndex.Slice(i * d, (i + 1) * d)];
            Assert.That(wv.shape, Is.EqualTo(new long[] { d, d }));
            Assert.That(Same(wv, we), Is.True, $"{parts[i]} weight");
            Assert.That(Same(bv, be), Is.True, $"{parts[i]} bias");
            Assert.That(wv[0, 0].item<float>(), Is.EqualTo(i * d * d), $"{parts[i]} starts at row {i * d}");
        }
        using (var fc1 = ckpt.TextEncoderWeights["encoder.layers.0.mlp.fc1.weight"].Load(ScalarType.Float32, CPU))
        using (var cfc = ckpt.File.Load("cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight"))
            Assert.That(Same(fc1, cfc), Is.True);

        Assert.That(ckpt.UnclaimedKeys, Does.Contain("cond_stage_model.model.text_projection").And.Contain("cond_stage_model.model.logit_scale")
            .And.Contain("cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight").And.Contain("alphas_cumprod").And.Contain("model_ema.decay"));
        Assert.That(ckpt.UnexpectedKeys, Is.EqualTo(new[] { "cond_stage_model.model.transformer.resblocks.0.ls_1.gamma", "model.diffusion_model.label_emb.0.0.weight" }),
            "unknown tensors, in a kept block or of another UNet variant, are worth a warning; the dropped last block is not");

        var text = ckpt.TextEncoderConfig;
        Assert.That(text.String("hidden_act", null), Is.EqualTo("gelu"));
        Assert.That(text.Int("num_hidden_layers", 0), Is.EqualTo(2));
        Assert.That(text.Int("hidden_size", 0), Is.EqualTo(d));
        Assert.That(text.Int("num_attention_heads", 0), Is.EqualTo(2));
        Assert.That(text.Int("intermediate_size", 0), Is.EqualTo(3 * d));
        Assert.That(text.Int("vocab_size", 0), Is.EqualTo(11));
        Assert.That(text.Int("max_position_embeddings", 0), Is.EqualTo(7));

        var unet = ckpt.UNetConfig;
        Assert.That(unet.Bool("use_linear_projection", false), Is.True);
        Assert.That(unet.Bool("upcast_attention", false), Is.True);
        Assert.That(unet.IntArray("attention_head_dim"), Is.EqualTo(new[] { 1, 1, 1, 1 }), "channels 32/32/64/64 at width 64, at least one head");
        Assert.That(ckpt.UNetWeights["down_blocks.0.attentions.0.proj_in.weight"].Shape, Is.EqualTo(new long[] { 32, 32 }));
    }

    [Test]
    public void StandaloneOriginalLayoutVaeMaps()
    {
        using var source = SafetensorsFile.Open(SingleFile);
        const string prefix = "first_stage_model.";
        string path = Path.Combine(_temp, "vae-only.safetensors");
        W.Write(path, source.Entries.Values.Where(e => e.Name.StartsWith(prefix, StringComparison.Ordinal)).Select(e => W.Zeros(e.Name[prefix.Length..], e.DType, e.Shape)));
        using var file = SafetensorsFile.Open(path);
        using var folder = FolderWeights("vae");
        var claimed = new HashSet<string>();
        var vae = VaeKeyMap.Map(file, claimed, prefix: "");
        Assert.That(claimed, Has.Count.EqualTo(file.Entries.Count));
        static string Current(string k) => k.Replace(".query.", ".to_q.").Replace(".key.", ".to_k.").Replace(".value.", ".to_v.").Replace(".proj_attn.", ".to_out.0.");
        Assert.That(vae.Keys.Order(StringComparer.Ordinal), Is.EqualTo(folder.Entries.Keys.Select(Current).Order(StringComparer.Ordinal)));
        Assert.That(LdmCheckpoint.IsSingleFile(file), Is.False);
    }

    [Test]
    public void OpenClipLayerCountFollowsTheConfigFolder()
    {
        string path = WriteSd2Like(8, blocks: 3);
        string config = Path.Combine(_temp, "cfg");
        Directory.CreateDirectory(Path.Combine(config, "text_encoder"));
        File.WriteAllText(Path.Combine(config, "text_encoder", "config.json"), """{ "num_hidden_layers": 3, "num_attention_heads": 2 }""");
        using (var ckpt = LdmCheckpoint.Open(path, config))
        {
            Assert.That(ckpt.TextEncoderWeights, Does.ContainKey("encoder.layers.2.self_attn.v_proj.weight"));
            Assert.That(ckpt.TextEncoderConfig.Int("num_hidden_layers", 0), Is.EqualTo(3));
            Assert.That(ckpt.TextEncoderConfig.Int("num_attention_heads", 0), Is.EqualTo(2));
            Assert.That(ckpt.TextEncoderConfig.Int("hidden_size", 0), Is.EqualTo(8), "inferred keys the folder lacks remain");
        }
        File.WriteAllText(Path.Combine(config, "text_encoder", "config.json"), """{ "num_hidden_layers": 4 }""");
        var e = Assert.Throws<InvalidDataException>(() => LdmCheckpoint.Open(path, config))!;
        Assert.That(e.Message, Does.Contain("num_hidden_layers").And.Contain("3"));
    }
}
