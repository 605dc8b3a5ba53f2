using LatentDiffusion.Adapters;
using LatentDiffusion.Formats;
using LatentDiffusion.Loading.SingleFile;
using LatentDiffusion.Text;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Adapters;

/// <summary>
/// The SGM names kohya gives UNet modules (SDXL LoRAs) against two independent authorities: the single-file key map
/// this library loads SD 1.x checkpoints with, and the SDXL single file diffusers' own converter wrote for tiny-sdxl.
/// </summary>
public class SgmUNetNamesTests
{
    private const string UNetPrefix = "model.diffusion_model.";

    private static string ModuleOf(string key) => key[..key.LastIndexOf('.')];

    [Test]
    public void Sd15NamesAreThoseOfTheSingleFileKeyMap()
    {
        using var file = SafetensorsFile.Open(Fixtures.PathOf("tiny-sd15.safetensors"));
        var map = UNetKeyMap.Map(file, new HashSet<string>());
        var sgm = SgmUNetNames.ToSgm(map.Keys.Select(ModuleOf).Distinct().ToList());
        Assert.That(map, Has.Count.GreaterThan(100));
        foreach (var (diffusers, source) in map)
        {
            string expected = ModuleOf(source.Key[UNetPrefix.Length..]);
            Assert.That(sgm.GetValueOrDefault(ModuleOf(diffusers)), Is.EqualTo(expected), diffusers);
        }
    }

    [Test]
    public void SdxlNamesAreThoseOfTheReferenceConverter()
    {
        // tiny-sdxl: three levels, transformer_layers_per_block [1, 1, 2], a plain first level, the added-conditioning MLP.
        using var folder = SafetensorsFile.Open(Fixtures.PathOf("tiny-sdxl", "unet", "diffusion_pytorch_model.safetensors"));
        using var single = SafetensorsFile.Open(Fixtures.PathOf("tiny-sdxl.safetensors"));
        var sgm = SgmUNetNames.ToSgm(folder.Entries.Keys.Select(ModuleOf).Distinct().ToList());
        foreach (var key in folder.Entries.Keys)
        {
            string module = ModuleOf(key);
            Assert.That(sgm, Does.ContainKey(module), key);
            string original = UNetPrefix + sgm[module] + key[module.Length..];
            Assert.That(single.Entries, Does.ContainKey(original), $"{key} -> {original}");
            using var a = folder.Load(key, ScalarType.Float32);
            using var b = single.Load(original, ScalarType.Float32);
            Assert.That(a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>(), Is.True, $"{key} and {original} hold the same tensor");
        }
    }

    [Test]
    public void EveryModuleOfTheSdxlKohyaLoraHasAPlace()
    {
        using var lora = LoraFile.Read(Fixtures.PathOf("lora", "tiny-sdxl-lora-kohya.safetensors"));
        Assert.That((lora.Format, lora.ModuleCount), Is.EqualTo((LoraFormat.Kohya, 311)));

        // The UNet, by the flattened SGM names of tiny-sdxl's modules, with the widths of their weights.
        using var folder = SafetensorsFile.Open(Fixtures.PathOf("tiny-sdxl", "unet", "diffusion_pytorch_model.safetensors"));
        var sgm = SgmUNetNames.ToSgm(folder.Entries.Keys.Select(ModuleOf).Distinct().ToList());
        var byFlatName = sgm.ToDictionary(kv => kv.Value.Replace('.', '_'), kv => kv.Key);
        var unetModules = lora.Modules.Where(m => m.Component == "unet").ToList();
        Assert.That(unetModules, Is.Not.Empty);
        foreach (var m in unetModules)
        {
            Assert.That(byFlatName.TryGetValue(m.Name, out var path), Is.True, m.Key);
            var weight = folder.Entries[path + ".weight"].Shape;
            Assert.That((m.OutFeatures, m.InFeatures), Is.EqualTo((weight[0], weight[1])), $"{m.Key} -> {path}");
        }

        // Both text encoders (lora_te1_, lora_te2_) through the index a pipeline builds, on modules of their configs.
        foreach (var (component, dir) in new[] { ("text_encoder", "text_encoder"), ("text_encoder_2", "text_encoder_2") })
        {
            using var model = new ClipTextModel(ClipTextConfig.FromJson(JsonConfig.Load(Fixtures.PathOf("tiny-sdxl", dir, "config.json"))), CPU, ScalarType.Float32);
            var index = new LoraModuleIndex(new LoraTarget(component, model, "text_model."));
            var modules = lora.Modules.Where(m => m.Component == component).ToList();
            Assert.That(modules, Is.Not.Empty, component);
            foreach (var m in modules)
            {
                string? path = index.Resolve(m);
                Assert.That(path, Is.Not.Null, m.Key);
                Assert.That(LoraLayer.Mismatch(index.Modules[path!], m), Is.Null, m.Key);
            }
        }
        Assert.That(lora.Modules.Select(m => m.Component).Distinct(), Is.EquivalentTo(new[] { "unet", "text_encoder", "text_encoder_2" }));
    }

    [Test]
    public void AnSd15LoraNamedInTheSgmLayoutEqualsTheSameLoraInDiffusersNames()
    {
        using var pipeline = LoraParityTests.LoadTinySd15();
        using var unetFile = SafetensorsFile.Open(Fixtures.PathOf(LoraParityTests.Kohya));
        var paths = TestLoras.Modules(pipeline).Where(m => m.Peft.StartsWith("unet.", StringComparison.Ordinal)).Select(m => m.Peft["unet.".Length..]).ToList();
        var sgm = SgmUNetNames.ToSgm(paths);
        var renamed = new Dictionary<string, Tensor>();
        foreach (var key in unetFile.Entries.Keys)
        {
            int dot = key.IndexOf('.');
            string stem = key[..dot];
            if (stem.StartsWith("lora_unet_", StringComparison.Ordinal))
            {
                string path = paths.Single(p => p.Replace('.', '_') == stem["lora_unet_".Length..]);
                stem = "lora_unet_" + sgm[path].Replace('.', '_');
            }
            renamed[stem + key[dot..]] = unetFile.Load(key);
        }
        string file = Path.Combine(Path.GetTempPath(), $"ld-sgm-lora-{Guid.NewGuid():N}.safetensors");
        try
        {
            TestLoras.Save(file, renamed);
            pipeline.Loras.Load(file, "sgm");
            pipeline.Loras.Load(Fixtures.PathOf(LoraParityTests.Kohya), "diffusers");
            using var sample = Fixtures.ExpectedPhase2("lora/sd15/unet/sample");
            using var context = Fixtures.ExpectedPhase2("lora/sd15/unet/encoder_hidden_states");
            using var timestep = tensor(new long[] { 500, 500 });
            Tensor Run(string name)
            {
                using var scope = pipeline.Loras.Use([new LoraWeight(name)]);
                return pipeline.UNet.Forward(sample, timestep, context);
            }
            using var viaSgm = Run("sgm");
            using var viaDiffusers = Run("diffusers");
            using var expected = Fixtures.ExpectedPhase2("lora/sd15/unet/noise_pred_t500");
            Assert.That(LoraBehaviourTests.Same(viaSgm, viaDiffusers), Is.True);
            AssertTensor.RelativeClose(viaSgm, expected, 1e-4, "SGM-named LoRA");
        }
        finally
        {
            File.Delete(file);
        }
    }
}
