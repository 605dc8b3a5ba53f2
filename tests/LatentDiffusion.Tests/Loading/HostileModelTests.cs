using LatentDiffusion.Formats;
using System.Text;
using System.Text.Json.Nodes;
using LatentDiffusion.Loading;
using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using Microsoft.Extensions.Logging;
using NUnit.Framework;
using static TorchSharp.torch;
using W = LatentDiffusion.Tests.Loading.TestSafetensorsWriter;

namespace LatentDiffusion.Tests.Loading;

/// <summary>
/// Hostile or corrupt model files and configs: each must fail with a .NET exception that names the file, tensor or key,
/// before anything is allocated from its numbers, and never abort the process.
/// </summary>
public class HostileModelTests
{
    private static string SingleFile => Fixtures.PathOf("tiny-sd15.safetensors");

    private string _temp = "";

    [SetUp]
    public void MakeTemp() => Directory.CreateDirectory(_temp = Path.Combine(Path.GetTempPath(), "ldhostile-" + Guid.NewGuid().ToString("N")));

    [TearDown]
    public void RemoveTemp() => Directory.Delete(_temp, recursive: true);

    private string Temp(string name) => Path.Combine(_temp, name);

    // A single file carries no tokenizer; a config folder holding only the fixture's tokenizer leaves every config inferred.
    private StableDiffusionPipeline LoadPipeline(string path, ILoggerFactory? logging = null)
    {
        string config = Temp("config");
        if (!Directory.Exists(config)) HostileFile.CopyFolder(Fixtures.PathOf("tiny-sd15", "tokenizer"), Path.Combine(config, "tokenizer"));
        return ModelLoader.Load(path, new PipelineOptions { LoggerFactory = logging, ConfigDirectory = config }, CancellationToken.None);
    }

    private static Dictionary<string, TensorRef> AllTensors(SafetensorsFile file)
        => file.Entries.Keys.ToDictionary(k => k, k => TensorRef.Direct(file, k), StringComparer.Ordinal);

    private static W.Tensor F16(string name, params long[] shape) => W.Zeros(name, "F16", shape);

    // ---- the safetensors header ----

    [Test]
    public void ATensorNameWithAnInvalidUtf8ByteIsACleanErrorNamingTheFile()
    {
        string path = Temp("bad-utf8.safetensors");
        byte[] header = [.. Encoding.ASCII.GetBytes("{\"model.diffusion_model.a"), 0xFF, .. Encoding.ASCII.GetBytes("b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}")];
        HostileFile.WriteRaw(path, header, new byte[4]);
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("UTF-8").And.Contain("0xFF"));
        // What `ldm info` reads.
        Assert.That(() => ModelInfo.Describe(path), Throws.TypeOf<InvalidDataException>().With.Message.Contain(path));
    }

    [Test]
    public void ATensorNameListedTwiceInTheHeaderIsAnError()
    {
        string path = Temp("duplicate.safetensors");
        const string entry = "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";
        HostileFile.WriteRaw(path, Encoding.ASCII.GetBytes("{" + entry + "," + entry.Replace("[0,4]", "[4,8]") + "}"), new byte[8]);
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("'w'").And.Contain("twice"));
    }

    // ---- single-file key numbers ----

    [TestCase("model.diffusion_model.input_blocks.99999999999.0.in_layers.0.weight")]
    [TestCase("model.diffusion_model.output_blocks.2.99999999999.conv.weight")]
    [TestCase("first_stage_model.decoder.up.99999999999.block.0.norm1.weight")]
    [TestCase("cond_stage_model.transformer.text_model.encoder.layers.99999999999.layer_norm1.weight")]
    [TestCase("cond_stage_model.transformer.text_model.encoder.layers.20000.layer_norm1.weight")]
    public void KeyNumbersBeyondTheLimitAreAClearError(string key)
    {
        string path = Temp("big-index.safetensors");
        HostileFile.Copy(SingleFile, path, extras: F16(key, 32));
        var e = Assert.Throws<InvalidDataException>(() => LdmCheckpoint.Open(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(path).And.Contain(key));
        Assert.That(() => ModelInfo.Describe(path), Throws.TypeOf<InvalidDataException>());
    }

    [Test]
    public void ATinyTensorNamingTextLayer100BuildsNothing()
    {
        // Within the index limit but far past the stored layers: the inferred config asks for 101 layers, the header has 5.
        string path = Temp("layer100.safetensors");
        HostileFile.Copy(SingleFile, path, extras: F16("cond_stage_model.transformer.text_model.encoder.layers.100.layer_norm1.weight", 32));
        int built = WeightLoader.ModulesBuilt;
        var e = Assert.Throws<InvalidDataException>(() => LoadPipeline(path).Dispose())!;
        Assert.That(e.Message, Does.Contain("tensor(s) missing").And.Contain("encoder.layers.10."));
        Assert.That(WeightLoader.ModulesBuilt, Is.EqualTo(built), "refused before any module was built");
    }

    // ---- config bounds and impossible values ----

    private static UNet2DConditionConfig UNetConfig(string json) => UNet2DConditionConfig.FromJson(JsonConfig.Parse(json, "unet/config.json"));

    private static AutoencoderKLConfig VaeConfig(string json) => AutoencoderKLConfig.FromJson(JsonConfig.Parse(json, "vae/config.json"));

    // The checked copy of tiny-sd15's text encoder config, so the config tests run without the fixtures.
    private static string TextJson => TinyConfigs.Sd15TextEncoderJson;

    private static ClipTextConfig TextConfig(string key, JsonNode value)
    {
        var json = JsonNode.Parse(TextJson)!.AsObject();
        json[key] = value;
        return ClipTextConfig.FromJson(JsonConfig.Parse(json.ToJsonString(), "text_encoder/config.json"));
    }

    [TestCase("{\"norm_num_groups\": 0}", "norm_num_groups")]
    [TestCase("{\"norm_num_groups\": -32}", "norm_num_groups")]
    [TestCase("{\"block_out_channels\": [65536, 65536, 65536, 65536]}", "block_out_channels")]
    [TestCase("{\"layers_per_block\": 20000}", "layers_per_block")]
    [TestCase("{\"transformer_layers_per_block\": 20000}", "transformer_layers_per_block")]
    [TestCase("{\"cross_attention_dim\": 1000000}", "cross_attention_dim")]
    [TestCase("{\"cross_attention_dim\": 0}", "cross_attention_dim")]
    [TestCase("{\"sample_size\": 2000000000}", "sample_size")]
    [TestCase("{\"time_embedding_dim\": 2000000000}", "time_embedding_dim")]
    [TestCase("{\"in_channels\": 100000}", "in_channels")]
    [TestCase("{\"layers_per_block\": 128, \"transformer_layers_per_block\": 128}", "transformer_layers_per_block")]
    [TestCase("{\"norm_eps\": \"NaN\"}", "norm_eps")]
    [TestCase("{\"norm_eps\": -1e-5}", "norm_eps")]
    [TestCase("{\"mid_block_scale_factor\": 0}", "mid_block_scale_factor")]
    public void UNetConfigValuesOutOfRangeAreRefused(string json, string key)
        => Assert.That(() => UNetConfig(json), Throws.TypeOf<InvalidDataException>().With.Message.Contain(key).And.Message.Contain("unet/config.json"));

    [TestCase("{\"norm_num_groups\": 0}", "norm_num_groups")]
    [TestCase("{\"block_out_channels\": [65536]}", "block_out_channels")]
    [TestCase("{\"layers_per_block\": 20000}", "layers_per_block")]
    [TestCase("{\"layers_per_block\": 128, \"block_out_channels\": [32, 32, 32, 32, 32, 32], \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\"], \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}", "layers_per_block")]
    [TestCase("{\"latent_channels\": 100000}", "latent_channels")]
    [TestCase("{\"sample_size\": 2000000000}", "sample_size")]
    [TestCase("{\"scaling_factor\": 1e-45}", "scaling_factor")]
    [TestCase("{\"scaling_factor\": 0}", "scaling_factor")]
    [TestCase("{\"scaling_factor\": \"NaN\"}", "scaling_factor")]
    [TestCase("{\"scaling_factor\": 1e300}", "scaling_factor")]
    public void VaeConfigValuesOutOfRangeAreRefused(string json, string key)
        => Assert.That(() => VaeConfig(json), Throws.TypeOf<InvalidDataException>().With.Message.Contain(key).And.Message.Contain("vae/config.json"));

    [TestCase("vocab_size", 2_000_000_000)]
    [TestCase("hidden_size", 65536)]
    [TestCase("intermediate_size", 2_000_000_000)]
    [TestCase("num_hidden_layers", 20000)]
    [TestCase("max_position_embeddings", 2_000_000_000)]
    public void TextConfigSizesOutOfRangeAreRefused(string key, int value)
        => Assert.That(() => TextConfig(key, value), Throws.TypeOf<InvalidDataException>().With.Message.Contain(key).And.Message.Contain(value.ToString()));

    [TestCase("NaN")]
    [TestCase("Infinity")]
    public void TextConfigLayerNormEpsMustBeFinite(string value)
        => Assert.That(() => TextConfig("layer_norm_eps", value), Throws.TypeOf<InvalidDataException>().With.Message.Contain("layer_norm_eps"));

    [Test]
    public void NumTrainTimestepsOutOfRangeIsRefused()
        => Assert.That(() => SchedulerRegistry.FromConfig(JsonConfig.Parse("{\"_class_name\": \"DDIMScheduler\", \"num_train_timesteps\": 2000000000}", "scheduler_config.json")),
            Throws.TypeOf<InvalidDataException>().With.Message.Contain("num_train_timesteps").And.Message.Contain("2000000000"));

    [Test]
    public void RealConfigsStayWithinTheLimits()
    {
        // SDXL's UNet, the largest released model of this family, at its published values.
        var sdxl = UNetConfig("""
            {"block_out_channels": [320, 640, 1280], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "transformer_layers_per_block": [1, 2, 10],
             "attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048, "sample_size": 128, "use_linear_projection": true}
            """);
        Assert.That(sdxl.TransformerLayersPerBlock, Is.EqualTo(new[] { 1, 2, 10 }));
        Assert.That(VaeConfig("{\"block_out_channels\": [128, 256, 512, 512], \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\"], \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"], \"layers_per_block\": 2, \"sample_size\": 1024, \"scaling_factor\": 0.13025}").ScalingFactor,
            Is.EqualTo(0.13025));
        Assert.That(TextConfig("num_hidden_layers", 32).NumHiddenLayers, Is.EqualTo(32), "OpenCLIP bigG");
    }

    // ---- config checked against the header before anything is built ----

    [Test]
    public void AnEmptyUNetConfigWithTinyWeightsFailsBeforeBuildingTheDefaultModel()
    {
        // {} means the full SD 1.5 UNet (3.4 GB in float32); the tiny weights cannot fill it, and it is never built.
        using var file = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd15", "unet", "diffusion_pytorch_model.safetensors"));
        int built = WeightLoader.ModulesBuilt;
        var e = Assert.Throws<InvalidDataException>(() => UNet2DConditionModel.Load(JsonConfig.Parse("{}", "unet/config.json"), AllTensors(file), CPU, ScalarType.Float32).Dispose())!;
        Assert.That(e.Message, Does.Contain(file.Path).And.Contain("missing").And.Contain("wrong shape").And.Contain("conv_in.weight"));
        Assert.That(WeightLoader.ModulesBuilt, Is.EqualTo(built), "refused before the model was built");
    }

    [Test]
    public void AFolderWithAnEmptyUNetConfigBuildsNoComponent()
    {
        string folder = Temp("model");
        HostileFile.CopyFolder(Fixtures.PathOf("tiny-sd15"), folder);
        File.WriteAllText(Path.Combine(folder, "unet", "config.json"), "{}");
        int built = WeightLoader.ModulesBuilt;
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(folder, new PipelineOptions(), CancellationToken.None).Dispose())!;
        Assert.That(e.Message, Does.Contain(Path.Combine(folder, "unet")).And.Contain("missing"));
        Assert.That(WeightLoader.ModulesBuilt, Is.EqualTo(built), "not even the text encoder, which is loaded first");
    }

    [Test]
    public void ATextWidthThatDoesNotMatchTheUNetIsRefusedBeforeBuilding()
    {
        // A text encoder whose weights fit its own config (hidden_size 64), in a folder whose UNet attends to width 32.
        string folder = Temp("model");
        HostileFile.CopyFolder(Fixtures.PathOf("tiny-sd15"), folder);
        var json = JsonNode.Parse(TextJson)!.AsObject();
        json["hidden_size"] = 64;
        File.WriteAllText(Path.Combine(folder, "text_encoder", "config.json"), json.ToJsonString());
        using (var skeleton = new ClipTextModel(ClipTextConfig.FromJson(JsonConfig.Parse(json.ToJsonString(), "text config")), new Device(TorchSharp.DeviceType.META), ScalarType.Float32))
            W.Write(Path.Combine(folder, "text_encoder", "model.safetensors"), skeleton.named_parameters().Select(p => W.Zeros("text_model." + p.name, "F32", p.parameter.shape)));
        int built = WeightLoader.ModulesBuilt;
        var e = Assert.Throws<InvalidDataException>(() => ModelLoader.Load(folder, new PipelineOptions(), CancellationToken.None).Dispose())!;
        Assert.That(e.Message, Does.Contain("hidden_size (64)").And.Contain("cross_attention_dim (32)"));
        Assert.That(WeightLoader.ModulesBuilt, Is.EqualTo(built));
    }

    [Test]
    public void ALargeLayerCountWithinTheLimitsFailsBeforeBuilding()
    {
        using var file = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd15", "unet", "diffusion_pytorch_model.safetensors"));
        var json = JsonNode.Parse(File.ReadAllText(Fixtures.PathOf("tiny-sd15", "unet", "config.json")))!.AsObject();
        json["layers_per_block"] = 40;
        int built = WeightLoader.ModulesBuilt;
        var e = Assert.Throws<InvalidDataException>(() => UNet2DConditionModel.Load(JsonConfig.Parse(json.ToJsonString(), "unet/config.json"), AllTensors(file), CPU, ScalarType.Float32).Dispose())!;
        Assert.That(e.Message, Does.Contain("tensor(s) missing").And.Contain("down_blocks.0.attentions.10."));
        Assert.That(WeightLoader.ModulesBuilt, Is.EqualTo(built));
    }

    [Test]
    public void TheLargestTextConfigWithinTheLimitsIsCheckedWithoutAllocatingItsTables()
    {
        // vocab_size 1,000,000 x hidden_size 8192 is a 32 GB token table in float32: checking it against tiny weights
        // must not build it, not even on the CPU on the way to the meta device.
        using var file = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd15", "text_encoder", "model.safetensors"));
        var json = JsonNode.Parse(TextJson)!.AsObject();
        json["vocab_size"] = ModelLimits.MaxVocabulary;
        json["hidden_size"] = ModelLimits.MaxChannels;
        json["max_position_embeddings"] = ModelLimits.MaxPositions;
        json["num_hidden_layers"] = 1;
        json["intermediate_size"] = 1;
        int built = WeightLoader.ModulesBuilt;
        var e = Assert.Throws<InvalidDataException>(() => ClipTextModel.Load(AllTensors(file), JsonConfig.Parse(json.ToJsonString(), "text_encoder/config.json"), CPU, ScalarType.Float32).Dispose())!;
        Assert.That(e.Message, Does.Contain("wrong shape").And.Contain("token_embedding.weight").And.Contain($"[{ModelLimits.MaxVocabulary}, {ModelLimits.MaxChannels}]"));
        Assert.That(WeightLoader.ModulesBuilt, Is.EqualTo(built));
    }

    [Test]
    public void AMatchingConfigStillBuildsAndLoads()
    {
        int built = WeightLoader.ModulesBuilt;
        using var unet = UNet2DConditionModel.Load(Fixtures.PathOf("tiny-sd15", "unet"), CPU, ScalarType.Float32);
        Assert.That(WeightLoader.ModulesBuilt, Is.EqualTo(built + 1));
    }

    // ---- weights: data types and values ----

    [Test]
    public void IntegerWeightsAreAnErrorNamingTheTensor()
    {
        string path = Temp("int-weight.safetensors");
        // The VAE is built last: the header check refuses the file before the text encoder or the UNet is built.
        const string name = "first_stage_model.decoder.conv_out.bias";
        HostileFile.Copy(SingleFile, path, (header, _) => header[name]!["dtype"] = "I16");
        int built = WeightLoader.ModulesBuilt;
        var e = Assert.Throws<InvalidDataException>(() => LoadPipeline(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(name).And.Contain("I16").And.Contain("integer"));
        Assert.That(WeightLoader.ModulesBuilt, Is.EqualTo(built), "no component was built");
    }

    [Test]
    public void BoolWeightsAreAnErrorNamingTheTensor()
    {
        using var source = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd15", "text_encoder", "model.safetensors"));
        string path = Temp("model.safetensors");
        string name = source.Entries.Keys.First(k => k.EndsWith("final_layer_norm.bias", StringComparison.Ordinal));
        var shape = source.Entries[name].Shape;
        W.Write(path, source.Entries.Values.Select(e => e.Name == name ? W.Zeros(e.Name, "BOOL", e.Shape) : W.Zeros(e.Name, e.DType, e.Shape)));
        using var file = SafetensorsFile.Open(path);
        var config = JsonConfig.Load(Fixtures.PathOf("tiny-sd15", "text_encoder", "config.json"));
        var e = Assert.Throws<InvalidDataException>(() => ClipTextModel.Load(AllTensors(file), config, CPU, ScalarType.Float32).Dispose())!;
        Assert.That(e.Message, Does.Contain(name).And.Contain("BOOL"));
        Assert.That(shape, Has.Length.EqualTo(1));
    }

    [Test]
    public void NonFiniteWeightsAreAnErrorNamingTheTensor()
    {
        string path = Temp("nan-weight.safetensors");
        const string name = "first_stage_model.decoder.conv_out.bias";
        HostileFile.Copy(SingleFile, path, (header, data) =>
        {
            var (begin, _) = HostileFile.Range(header, name);
            data[begin] = 0x00; data[begin + 1] = 0x7E; // float16 NaN
        });
        var e = Assert.Throws<InvalidDataException>(() => LoadPipeline(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(name).And.Contain("NaN"));
    }

    [Test]
    public void WeightsThatOverflowTheModelsDtypeAreAnError()
    {
        using var source = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd15", "vae", "diffusion_pytorch_model.safetensors"));
        string path = Temp("vae.safetensors");
        string name = "decoder.conv_out.bias";
        W.Write(path, source.Entries.Values.Select(e => e.Name == name
            ? W.F32(e.Name, e.Shape, Enumerable.Repeat(1e6f, (int)e.ElementCount).ToArray()) : W.Zeros(e.Name, e.DType, e.Shape)));
        using var file = SafetensorsFile.Open(path);
        var config = AutoencoderKLConfig.Load(Fixtures.PathOf("tiny-sd15", "vae", "config.json"));
        using (AutoencoderKL.Load(config, AutoencoderKL.WeightMap(file), CPU, ScalarType.Float32)) { }
        var e = Assert.Throws<InvalidDataException>(() => AutoencoderKL.Load(config, AutoencoderKL.WeightMap(file), CPU, ScalarType.Float16).Dispose())!;
        Assert.That(e.Message, Does.Contain(name).And.Contain("Float16"));
    }

    // ---- tensors no component uses ----

    [Test]
    public void AnUnknownUNetTensorInASingleFileIsAnError()
    {
        string path = Temp("label-emb.safetensors");
        HostileFile.Copy(SingleFile, path, extras: [F16("model.diffusion_model.label_emb.0.0.weight", 4, 4), F16("model.diffusion_model.input_blocks.1.0.in_layers.9.weight", 4)]);
        var e = Assert.Throws<InvalidDataException>(() => LoadPipeline(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("2 tensor(s)").And.Contain("model.diffusion_model.label_emb.0.0.weight"));
    }

    [Test]
    public void TensorsOutsideTheLoadedComponentsAreAWarningWithCountAndNames()
    {
        string path = Temp("lora-junk.safetensors");
        var junk = Enumerable.Range(0, 1000).Select(i => F16($"zz.junk.{i:D4}", 1)).ToArray();
        HostileFile.Copy(SingleFile, path, extras: [F16("lora_unet_down_blocks_0_attentions_0_proj_in.alpha"), F16("model_ema.decay"), F16("alphas_cumprod", 1000), .. junk]);
        var log = new ListLogger();
        using var factory = LoggerFactory.Create(b => b.AddProvider(log));
        using (LoadPipeline(path, factory)) { }
        var warnings = log.Entries.Where(m => m.Level == LogLevel.Warning).Select(m => m.Message).ToList();
        Assert.That(warnings, Has.Count.EqualTo(1));
        Assert.That(warnings[0], Does.Contain("1001 tensor(s)").And.Contain("zz.junk.0000").And.Contain("lora_unet_down_blocks_0_attentions_0_proj_in.alpha"));
        Assert.That(warnings[0], Does.Not.Contain("model_ema.decay").And.Not.Contain("alphas_cumprod"), "known extras of real single files are not worth a warning");
        Assert.That(warnings[0].Length, Is.LessThan(1000), "a few names, not all of them");
    }

    [Test]
    public void TheFixtureSingleFileLoadsWithoutWarnings()
    {
        var log = new ListLogger();
        using var factory = LoggerFactory.Create(b => b.AddProvider(log));
        using (LoadPipeline(SingleFile, factory)) { }
        Assert.That(log.Entries.Where(m => m.Level >= LogLevel.Warning), Is.Empty, "its position_ids (int64) is a known extra");
    }
}
