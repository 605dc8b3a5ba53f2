using System.Text.Json;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Pipelines;

/// <summary>Every txt2img and img2img case of reference.json, through the public API, within 2e-3 max absolute.</summary>
public class PipelineParityTests
{
    internal static readonly Dictionary<string, string?> SchedulerNames = new()
    {
        ["default"] = null, ["ddim"] = "ddim", ["euler_a"] = "euler-a", ["dpmpp_2m_karras"] = "dpm++2m-karras",
    };

    public static IEnumerable<TestCaseData> TextToImageCases() => Fixtures.CaseSource(() => Fixtures.Cases
        .Where(c => c.GetProperty("kind").GetString() == "txt2img")
        .Select(c => new TestCaseData(c.GetProperty("key").GetString()).SetName("txt2img " + c.GetProperty("key").GetString())), "");

    public static IEnumerable<TestCaseData> ImageToImageCases() => Fixtures.CaseSource(() => Fixtures.Cases
        .Where(c => c.GetProperty("kind").GetString() == "img2img")
        .Select(c => new TestCaseData(c.GetProperty("key").GetString()).SetName("img2img " + c.GetProperty("key").GetString())), "");

    internal static JsonElement Case(string key) => Fixtures.Cases.Single(c => c.TryGetProperty("key", out var k) && k.GetString() == key);

    /// <summary>The public-API options that reproduce a txt2img case.</summary>
    internal static GenerationOptions TextToImageOptions(JsonElement c)
    {
        string schedulerKey = c.GetProperty("key").GetString()!.Split('/')[2];
        return new GenerationOptions
        {
            NegativePrompt = c.GetProperty("negative_prompt").ValueKind == JsonValueKind.Null ? null : c.GetProperty("negative_prompt").GetString(),
            GuidanceScale = c.GetProperty("guidance_scale").GetDouble(),
            Seed = c.GetProperty("seed").GetInt64(),
            Steps = c.GetProperty("steps").GetInt32(),
            Width = c.GetProperty("width").GetInt32(),
            Height = c.GetProperty("height").GetInt32(),
            Scheduler = SchedulerNames[schedulerKey],
        };
    }

    /// <summary>
    /// The one case that float32 cannot pin to 2e-3: DDIM with <c>clip_sample</c> on the tiny random model at guidance 7.5.
    /// Traced step by step against the reference (benchmarks/gpu/ddim_trace.py, torch 2.11, whose re-run equals the stored
    /// fixture bit for bit): our DDIM step on the reference's inputs equals its output to 3e-7, our UNet on its inputs to
    /// 2.5e-6 (float32 rounding of a different kernel build), yet the latents part by 2e-5 after step 1 and ×3 per step
    /// after that. <see cref="DdimClipSampleCaseAmplifiesRoundingNoise"/> shows why: nudging the UNet output by one float32
    /// epsilon moves this image by 2e-3, a thousand times more than any other case. Its mean error stays at 5e-4.
    /// </summary>
    internal static readonly Dictionary<string, double> KnownDeviations = new() { ["sd15/txt2img/ddim/42"] = 1e-2 };

    [TestCaseSource(nameof(TextToImageCases))]
    public async Task TextToImageMatchesReference(string key)
    {
        var c = Case(key);
        var pipeline = TinyModels.Get(c.GetProperty("model").GetString()!);
        // The scheduler exactly as the reference ran it (its saved config); the named route is tested beside this.
        var options = TextToImageOptions(c) with { Scheduler = null, CustomScheduler = SchedulerAsRun(c) };
        using var result = await pipeline.GenerateAsync(c.GetProperty("prompt").GetString()!, options);
        using var expected = Fixtures.Expected(key + "/image");
        AssertTensor.MaxAbsClose(result.Pixels, expected, KnownDeviations.GetValueOrDefault(key, 2e-3), key);
        if (KnownDeviations.ContainsKey(key))
            Assert.That((result.Pixels - expected.reshape(result.Pixels.shape)).abs().mean().item<float>(), Is.LessThan(1e-3), key + ": mean abs error");
    }

    /// <summary>
    /// Why <see cref="KnownDeviations"/> exists: the same generation with every UNet output multiplied by (1 + 1e-7·N(0, 1)),
    /// rounding-sized noise, moves the DDIM clip_sample case by more than 1e-3 but a well-conditioned case by under 1e-4.
    /// No float32 implementation that is not bit-identical to the reference can promise 2e-3 on the former.
    /// </summary>
    [TestCase("sd15/txt2img/ddim/42", true)]
    [TestCase("sd15/txt2img/default/42", false)]
    [TestCase("sd15/txt2img/ddim/3", false)]
    public async Task DdimClipSampleCaseAmplifiesRoundingNoise(string key, bool illConditioned)
    {
        var c = Case(key);
        var pipeline = TinyModels.Get(c.GetProperty("model").GetString()!);
        var options = TextToImageOptions(c) with { Scheduler = null, CustomScheduler = SchedulerAsRun(c) };
        string prompt = c.GetProperty("prompt").GetString()!;
        using var plain = await pipeline.GenerateAsync(prompt, options);
        using var generator = new Generator(1);
        using var nudged = new StableDiffusionPipeline(pipeline.Tokenizer, pipeline.TextEncoder, new NudgedUNet(pipeline.UNet, 1e-7, generator), pipeline.Vae, options.CustomScheduler!, leaveComponentsOpen: true);
        using var moved = await nudged.GenerateAsync(prompt, options);
        double change = (moved.Pixels - plain.Pixels).abs().max().item<float>();
        if (illConditioned) Assert.That(change, Is.GreaterThan(1e-3), $"{key}: a rounding-sized nudge moves the image by {change:E2}");
        else Assert.That(change, Is.LessThan(1e-4), $"{key}: a rounding-sized nudge moves the image by {change:E2}");
    }

    /// <summary>A UNet whose outputs are multiplied by (1 + scale·N(0, 1)); it does not own the wrapped UNet.</summary>
    private sealed class NudgedUNet(IUNet inner, double scale, Generator generator) : IUNet
    {
        public int InChannels => inner.InChannels;
        public int OutChannels => inner.OutChannels;
        public int SampleSize => inner.SampleSize;
        public int CrossAttentionDim => inner.CrossAttentionDim;
        public Device Device => inner.Device;
        public ScalarType DType => inner.DType;
        public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates)
        {
            using var y = inner.Forward(sample, timestep, encoderHiddenStates);
            using var noise = randn(y.shape, generator: generator);
            return y * (noise * scale + 1);
        }
        public void Dispose() { }
    }

    /// <summary>
    /// A scheduler picked by name plus the config fields a user would set (<see cref="SchedulerOverridesFor"/>) is the
    /// scheduler the reference ran: same class, same effective values for every key that class reads.
    /// </summary>
    [TestCaseSource(nameof(TextToImageCases))]
    public void NamedSchedulerWithOverridesIsTheReferenceScheduler(string key)
    {
        var c = Case(key);
        var pipeline = TinyModels.Get(c.GetProperty("model").GetString()!);
        var options = TextToImageOptions(c);
        var named = options.Scheduler is null ? pipeline.Scheduler : SchedulerRegistry.Create(options.Scheduler, pipeline.Scheduler.Config);
        var overrides = SchedulerOverridesFor(c, named);
        var built = options.Scheduler is null ? SchedulerRegistry.FromConfig(pipeline.Scheduler.Config, overrides) : SchedulerRegistry.Create(options.Scheduler, pipeline.Scheduler.Config, overrides);
        var reference = SchedulerAsRun(c);
        Assert.That(built.ClassName, Is.EqualTo(reference.ClassName));
        using var a = built.Start(options.Steps);
        using var b = reference.Start(options.Steps);
        Assert.That(a.Timesteps, Is.EqualTo(b.Timesteps));
        Assert.That(a.InitNoiseSigma, Is.EqualTo(b.InitNoiseSigma));
        if (b.Sigmas is not null) Assert.That(a.Sigmas, Is.EqualTo(b.Sigmas));
    }

    /// <summary>The config fields where the reference's scheduler differs from <paramref name="named"/>, as overrides (what --scheduler-option sets).</summary>
    internal static Dictionary<string, string> SchedulerOverridesFor(JsonElement c, IScheduler named)
    {
        var result = new Dictionary<string, string>();
        foreach (var p in c.GetProperty("scheduler_config").EnumerateObject())
        {
            if (p.Name.StartsWith('_') || p.Value.ValueKind is JsonValueKind.Null or JsonValueKind.Array or JsonValueKind.Object) continue;
            string value = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText();
            bool known = named.Config.Root.TryGetProperty(p.Name, out var mine);
            string? current = !known ? null : mine.ValueKind == JsonValueKind.String ? mine.GetString() : mine.GetRawText();
            if (current == value || (double.TryParse(current, out var x) && double.TryParse(value, out var y) && x == y)) continue;
            try { SchedulerRegistry.Create(named.ClassName == "DDIMScheduler" ? "ddim" : NameOf(named.ClassName), null, new Dictionary<string, string> { [p.Name] = value }); }
            catch (ArgumentException) { continue; }   // a key this class does not read
            result[p.Name] = value;
        }
        return result;
    }

    private static string NameOf(string className) => SchedulerRegistry.Names.First(n => SchedulerRegistry.ClassNameOf(n) == className);

    [TestCaseSource(nameof(ImageToImageCases))]
    public async Task ImageToImageMatchesReference(string key)
    {
        var c = Case(key);
        var pipeline = TinyModels.Get(c.GetProperty("model").GetString()!);
        using var initPixels = Fixtures.Expected(key + "/init_image");
        using var init = ToImage(initPixels);
        var options = new GenerationOptions
        {
            InitImage = init,
            Strength = c.GetProperty("strength").GetDouble(),
            GuidanceScale = c.GetProperty("guidance_scale").GetDouble(),
            Steps = c.GetProperty("steps").GetInt32(),
            Seed = c.GetProperty("seed").GetInt64(),
            CustomScheduler = SchedulerAsRun(c),
        };
        using var result = await pipeline.GenerateAsync(c.GetProperty("prompt").GetString()!, options);
        using var expected = Fixtures.Expected(key + "/image");
        AssertTensor.MaxAbsClose(result.Pixels, expected, 2e-3, key);
    }

    /// <summary>
    /// The scheduler exactly as the reference had it for a case: its config as <c>save_pretrained</c> would write it, which
    /// drops the in-memory <c>_use_default_values</c> bookkeeping (the stored values are what the scheduler read).
    /// </summary>
    internal static IScheduler SchedulerAsRun(JsonElement c)
    {
        var saved = System.Text.Json.Nodes.JsonNode.Parse(c.GetProperty("scheduler_config").GetRawText())!.AsObject();
        saved.Remove("_use_default_values");
        return SchedulerRegistry.FromConfig(JsonConfig.Parse(saved.ToJsonString(), c.GetProperty("key").GetString() + " scheduler_config"));
    }

    /// <summary>HWC float in [0, 1] (exactly k/255) to an 8-bit image.</summary>
    internal static Image<Rgb24> ToImage(Tensor hwc)
    {
        using var batch = hwc.unsqueeze(0);
        return ImageConversion.ToImage(batch, 0);
    }
}
