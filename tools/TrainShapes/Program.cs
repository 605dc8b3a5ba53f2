using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using LatentDiffusion.Formats;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Text;
using LatentDiffusion.Tools.TrainShapes;
using LatentDiffusion.Shapes;
using LatentDiffusion.Training;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using TorchSharp;
using static TorchSharp.torch;

// Trains the built-in "shapes" model from scratch on the synthetic captioned pictures (ShapesDataset):
//   dotnet run -c Release --project tools/TrainShapes -- [--output models/shapes] [--work .train-shapes] [--device cpu|cuda]
//       [--vae-steps 1500] [--vae-batch 32] [--unet-steps 8000] [--batch 128] [--bank 16384] [--lr 8e-4] [--groups 16]
//       [--time-limit SECONDS] [--init-from MODEL_DIR] [--high-noise 0] [--high-noise-from 800] [--styles Full,FullOn,NoSize,NoPosition,Short]
//       [--zero-snr] [--eval 200] [--seed 0] [--threads 2] [--probe]
// Phase 1 trains the autoencoder, phase 2 the text encoder and UNet on its latents; both checkpoint into --work and
// resume from there. The result is a diffusers folder (float16) that this library and the reference both load, and
// --work/training.json records what ran (steps reached, device, seconds). --time-limit stops phase 2 once the whole run
// has taken that many seconds (the learning rate is constant after warm-up, so a run cut at step N is the run with
// --unet-steps N).
// `--plot-losses OUT.png STAGE1.csv STAGE2.csv ...`: one loss curve of several training stages (runs chained by --init-from).
if (args.Length > 2 && args[0] == "--plot-losses")
{
    var all = new List<float>();
    var starts = new List<int>();
    foreach (var csv in args[2..])
    {
        if (all.Count > 0) starts.Add(all.Count);
        all.AddRange(ReadLosses(csv));
    }
    LossPlot.Save(args[1], all, starts);
    Console.WriteLine($"{args[1]}: {all.Count} steps in {args.Length - 2} stages");
    return 0;
}

var opts = Args.Parse(args);
TorchRuntime.EnsureInitialized();
set_num_threads(opts.Threads);
var device = new Device(opts.Device);
if (device.type == DeviceType.CUDA && !cuda.is_available()) throw new InvalidOperationException("--device cuda: CUDA is not available.");
Directory.CreateDirectory(opts.Work);
var clock = Stopwatch.StartNew();
void Log(string message) => Console.WriteLine($"[{clock.Elapsed:hh\\:mm\\:ss}] {message}");

// The closed vocabulary tokenizer.
string tokenizerDir = Path.Combine(opts.Work, "tokenizer");
ShapesVocabulary.Write(tokenizerDir);
var tokenizer = ClipTokenizer.FromDirectory(tokenizerDir);

AutoencoderKLConfig VaeConfig(double scaling) => AutoencoderKLConfig.FromJson(JsonConfig.Parse($$"""
{ "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "block_out_channels": [32, 64, 64], "layers_per_block": 1, "norm_num_groups": 16, "act_fn": "silu",
  "sample_size": 64, "scaling_factor": {{scaling.ToString("R", CultureInfo.InvariantCulture)}}, "mid_block_add_attention": false }
""", "shapes vae"));
var vaeConfig = VaeConfig(1.0);
var textConfigJson = JsonConfig.Parse($$"""
{ "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 128, "intermediate_size": 512,
  "num_attention_heads": 4, "num_hidden_layers": 3, "max_position_embeddings": {{ShapesVocabulary.MaxLength}},
  "vocab_size": {{tokenizer.VocabularySize}}, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
  "bos_token_id": {{tokenizer.BosTokenId}}, "eos_token_id": {{tokenizer.EosTokenId}}, "pad_token_id": {{tokenizer.PadTokenId}}, "projection_dim": 128 }
""", "shapes text encoder");
// Few channels per normalisation group: with one channel per group every block would remove each channel's mean, which
// is where the picture's colours live, and the model could not learn colour words (a first run with 32 groups on 32
// channels learned shapes but not colours). Three levels (16, 8, 4 latents) so that the deepest sees the whole picture.
var unetConfig = UNet2DConditionConfig.FromJson(JsonConfig.Parse($$"""
{ "_class_name": "UNet2DConditionModel", "sample_size": 16, "in_channels": 4, "out_channels": 4,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "mid_block_type": "UNetMidBlock2DCrossAttn", "block_out_channels": [64, 128, 128], "layers_per_block": 1,
  "cross_attention_dim": 128, "attention_head_dim": 8, "norm_num_groups": {{opts.Groups}} }
""", "shapes unet"));
// Training noise: the Stable Diffusion schedule. Sampling: DPM++ 2M on the same schedule. --zero-snr rescales the
// schedule to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed") and
// trains v-prediction, the only one of the targets that still says something at SNR 0; sampling then starts at t = 999
// ("trailing" steps). Without it the noisiest training latents still show where the shape is, and the model learns to
// read the place from the starting noise instead of from the caption.
string prediction = opts.ZeroSnr ? "v_prediction" : "epsilon";
string zeroSnr = opts.ZeroSnr ? "true" : "false";
var noiseConfig = JsonConfig.Parse($$"""
{ "_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
  "prediction_type": "{{prediction}}", "rescale_betas_zero_snr": {{zeroSnr}}, "clip_sample": false }
""", "shapes training noise");
var samplingConfig = JsonConfig.Parse($$"""
{ "_class_name": "DPMSolverMultistepScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
  "beta_schedule": "scaled_linear", "prediction_type": "{{prediction}}", "rescale_betas_zero_snr": {{zeroSnr}}, "solver_order": 2,
  "algorithm_type": "dpmsolver++", "timestep_spacing": "{{(opts.ZeroSnr ? "trailing" : "linspace")}}", "steps_offset": {{(opts.ZeroSnr ? 0 : 1)}},
  "use_karras_sigmas": false }
""", "shapes sampling");

// --init-from: continue from an exported folder of this model (its weights; the optimiser starts afresh). The autoencoder
// is then taken as it is and phase 1 is skipped.
using var init = opts.InitFrom is null ? null
    : await StableDiffusionPipeline.LoadAsync(opts.InitFrom, new PipelineOptions { Device = opts.Device, DType = ScalarType.Float32 });
if (init is not null) vaeConfig = VaeConfig(((AutoencoderKL)init.Vae).Config.ScalingFactor);

// ---- Phase 1: the autoencoder --------------------------------------------------------------------------------
var vae = new AutoencoderKL(vaeConfig, device, ScalarType.Float32);
ModelInitializer.Initialize(vae, opts.Seed);
var vaeLosses = new List<float>();
string vaeCheckpoint = Path.Combine(opts.Work, "vae-checkpoint");
using (var vaeTrainer = new AutoencoderTrainer(vae, new AutoencoderTrainingOptions { LearningRate = 1e-3, WarmupSteps = 100, KlWeight = 1e-6, Seed = opts.Seed }))
{
    if (Directory.Exists(vaeCheckpoint)) { vaeTrainer.LoadCheckpoint(vaeCheckpoint); Log($"vae: resumed at step {vaeTrainer.StepCount}"); }
    vaeLosses.AddRange(ReadLosses(Path.Combine(opts.Work, "vae-loss.csv")).Take(vaeTrainer.StepCount));
    var t = Stopwatch.StartNew();
    while (init is null && vaeTrainer.StepCount < opts.VaeSteps)
    {
        int n = Math.Min(opts.CheckpointEvery, opts.VaeSteps - vaeTrainer.StepCount);
        vaeTrainer.Train(vaeTrainer.StepCount + n, step => ShapesDataset.Batch(opts.Seed + 17, step, opts.VaeBatch).Images,
            new Progress(p => { vaeLosses.Add(p.Loss); if (p.Step % 50 == 0 || opts.Probe) Log($"vae {p.Step}/{p.TotalSteps} loss {p.Loss:F5} lr {p.LearningRate:E2} ({t.Elapsed.TotalMilliseconds / Math.Max(1, p.Step):F0} ms/step this session)"); }));
        vaeTrainer.SaveCheckpoint(vaeCheckpoint);
        WriteLosses(Path.Combine(opts.Work, "vae-loss.csv"), vaeLosses);
        if (opts.Probe) break;
    }
}
vae.eval();

// The latents' spread sets scaling_factor (the reference's way: 1 / std of the latents), so the UNet sees unit variance.
double scaling = vaeConfig.ScalingFactor;
if (init is not null) CopyWeights((AutoencoderKL)init.Vae, vae);
else using (no_grad())
using (var probe = ShapesDataset.Batch(opts.Seed + 99, 0, 64, device: device))
using (var posterior = vae.Encode(probe.Images))
    scaling = 1.0 / posterior.Mean.std().item<float>();
vaeConfig = VaeConfig(Math.Round(scaling, 5));
var scaledVae = new AutoencoderKL(vaeConfig, device, ScalarType.Float32);
CopyWeights(vae, scaledVae);
scaledVae.eval();
vae.Dispose();
vae = scaledVae;
Log($"vae done: scaling_factor {vaeConfig.ScalingFactor}");
// The ceiling the UNet can reach: the judge on the autoencoder's reconstructions of the evaluation pictures.
var ceiling = VaeCeiling(vae, device);
Log($"judge on vae reconstructions of the evaluation pictures:\n{ceiling.ToMarkdown()}");

// ---- Phase 2: text encoder and UNet -------------------------------------------------------------------------
var textEncoder = new ClipTextModel(ClipTextConfig.FromJson(textConfigJson), device, ScalarType.Float32);
var unet = new UNet2DConditionModel(unetConfig, device, ScalarType.Float32);
Log($"parameters: vae {Count(vae)}, text encoder {Count(textEncoder)}, unet {Count(unet)}");
ModelInitializer.Initialize(textEncoder, opts.Seed + 1);
ModelInitializer.Initialize(unet, opts.Seed + 2);
if (init is not null)
{
    CopyWeights((ClipTextModel)init.TextEncoder, textEncoder);
    CopyWeights((UNet2DConditionModel)init.UNet, unet);
    Log($"initialised from {opts.InitFrom}");
}
var unetLosses = new List<float>();
string unetCheckpoint = Path.Combine(opts.Work, "unet-checkpoint");
var noise = SchedulerRegistry.FromConfig(noiseConfig);
var trainingOptions = new DiffusionTrainingOptions
{
    LearningRate = opts.LearningRate, WarmupSteps = 200, EmaDecay = 0.999, CaptionDropout = 0.1, Seed = opts.Seed,
    HighNoiseFraction = opts.HighNoise, HighNoiseFrom = opts.HighNoiseFrom,
};
// The frozen autoencoder's posterior for a bank of training pictures, encoded once: each step then samples latents
// from it instead of running the encoder (most of a step's time on this CPU). Captions are re-drawn in every style.
var bankSamples = Enumerable.Range(0, opts.BankSize).Select(i => ShapesDataset.Sample(opts.Seed, i)).ToArray();
Tensor bankMean, bankStd;
using (no_grad())
{
    var means = new List<Tensor>();
    var stds = new List<Tensor>();
    for (int start = 0; start < opts.BankSize; start += 64)
    {
        var specs = bankSamples.Skip(start).Take(64).ToArray();
        using var pictures = stack(specs.Select(x => ShapesDataset.Render(x.Spec)).ToArray());
        using var onDevice = pictures.to(device);
        using var posterior = vae.Encode(onDevice);
        means.Add(posterior.Mean.to(CPU, copy: true));
        stds.Add(posterior.Std.to(CPU, copy: true));
    }
    bankMean = cat(means.ToArray(), 0);
    bankStd = cat(stds.ToArray(), 0);
    foreach (var t in means.Concat(stds)) t.Dispose();
}
Log($"latent bank: {opts.BankSize} pictures encoded");
var styles = opts.Styles;
int unetSteps = 0;
double unetSeconds = 0;
using (var trainer = new DiffusionTrainer(tokenizer, textEncoder, unet, vae, noise, trainingOptions))
{
    if (Directory.Exists(unetCheckpoint)) { trainer.LoadCheckpoint(unetCheckpoint); Log($"unet: resumed at step {trainer.StepCount}"); }
    unetLosses.AddRange(ReadLosses(Path.Combine(opts.Work, "unet-loss.csv")).Take(trainer.StepCount));
    if (opts.InitFrom is not null) Log($"fine-tune: lr {opts.LearningRate}, {prediction}{(opts.ZeroSnr ? ", zero terminal SNR" : "")}, high-noise fraction {opts.HighNoise} from t={opts.HighNoiseFrom}, styles {string.Join(",", opts.Styles)}");
    var t = Stopwatch.StartNew();
    int startStep = trainer.StepCount;
    while (trainer.StepCount < opts.UNetSteps)
    {
        if (opts.TimeLimitSeconds > 0 && clock.Elapsed.TotalSeconds > opts.TimeLimitSeconds)
        {
            Log($"unet: time limit reached at step {trainer.StepCount}");
            trainer.SaveCheckpoint(unetCheckpoint);
            WriteLosses(Path.Combine(opts.Work, "unet-loss.csv"), unetLosses);
            break;
        }
        int step = trainer.StepCount;
        var rng = new Random(HashCode.Combine(opts.Seed, step));
        var picks = Enumerable.Range(0, opts.Batch).Select(_ => rng.Next(opts.BankSize)).ToArray();
        var captions = picks.Select(i => bankSamples[i].Spec.Caption(styles[rng.Next(styles.Length)])).ToArray();
        float loss;
        using (var index = tensor(picks.Select(i => (long)i).ToArray()))
        using (var mean = bankMean.index_select(0, index))
        using (var std = bankStd.index_select(0, index))
            loss = trainer.Step(mean, std, captions);
        unetLosses.Add(loss);
        if (trainer.StepCount % 50 == 0)
            Log($"unet {trainer.StepCount}/{opts.UNetSteps} loss {loss:F4} (avg50 {unetLosses.TakeLast(50).Average():F4}) lr {trainer.LearningRateAt(trainer.StepCount):E2} ({t.Elapsed.TotalMilliseconds / (trainer.StepCount - startStep):F0} ms/step)");
        if (trainer.StepCount % opts.CheckpointEvery == 0 || trainer.StepCount == opts.UNetSteps || (opts.Probe && trainer.StepCount - startStep >= 30))
        {
            trainer.SaveCheckpoint(unetCheckpoint);
            WriteLosses(Path.Combine(opts.Work, "unet-loss.csv"), unetLosses);
            if (opts.Probe) break;
        }
    }
    unetSteps = trainer.StepCount;
    unetSeconds = t.Elapsed.TotalSeconds;
    trainer.ApplyEma();
}
bankMean.Dispose();
bankStd.Dispose();
textEncoder.eval();
unet.eval();

// ---- Save, plot, evaluate ----------------------------------------------------------------------------------
DiffusersPipelineWriter.Save(opts.Output, tokenizerDir, textEncoder, unet, vae, samplingConfig, ScalarType.Float16, overwrite: true);
LossPlot.Save(Path.Combine(opts.Output, "loss.png"), unetLosses);
LossPlot.Save(Path.Combine(opts.Output, "vae-loss.png"), vaeLosses);
Log($"saved {opts.Output}");
File.WriteAllText(Path.Combine(opts.Work, "training.json"), JsonSerializer.Serialize(new
{
    device = opts.Device, deviceName = device.type == DeviceType.CUDA ? "cuda" : "cpu", vaeSteps = opts.VaeSteps, vaeBatch = opts.VaeBatch,
    unetStepsReached = unetSteps, unetSecondsThisSession = Math.Round(unetSeconds, 1), batch = opts.Batch, bank = opts.BankSize,
    learningRate = opts.LearningRate, groups = opts.Groups, seed = opts.Seed, scalingFactor = vaeConfig.ScalingFactor,
    vaeCeiling = ceiling.ToMarkdown(), finalLossAvg200 = unetLosses.TakeLast(200).DefaultIfEmpty().Average(),
}, new JsonSerializerOptions { WriteIndented = true }));
if (opts.EvalCount > 0)
{
    using var pipeline = await StableDiffusionPipeline.LoadAsync(opts.Output, new PipelineOptions { Device = opts.Device });
    var (report, images) = ShapesEvaluation.Run(pipeline, new GenerationOptions { Steps = 25 }, opts.EvalCount);
    string evaluation = report.ToMarkdown() + "\n" + report.PositionConfusionMarkdown();
    Console.WriteLine(evaluation);
    File.WriteAllText(Path.Combine(opts.Work, "eval.md"), evaluation);
    ContactSheet.Save(Path.Combine(opts.Work, "contact-sheet.png"), images, 4);
    foreach (var (_, image) in images) image.Dispose();
}
Log("done");
return 0;

static void CopyWeights(TorchSharp.torch.nn.Module from, TorchSharp.torch.nn.Module to)
{
    using var noGrad = no_grad();
    var source = from.named_parameters().ToDictionary(x => x.name, x => x.parameter);
    foreach (var (name, p) in to.named_parameters())
        p.copy_(source.TryGetValue(name, out var value) ? value : throw new InvalidDataException($"--init-from: no weight '{name}' in the folder's {from.GetType().Name}."));
}

static long Count(TorchSharp.torch.nn.Module module) => module.parameters().Sum(p => p.numel());

// Encodes and decodes the evaluation pictures and judges the reconstructions.
static JudgeReport VaeCeiling(AutoencoderKL vae, Device device)
{
    var judged = new List<(ShapeSpec, JudgeVerdict)>();
    using var noGrad = no_grad();
    foreach (var chunk in ShapesDataset.EvaluationCases.Chunk(50))
    {
        using var scope = NewDisposeScope();
        var pictures = stack(chunk.Select(c => ShapesDataset.Render(c.Spec)).ToArray()).to(device);
        var posterior = vae.Encode(pictures);
        // The pipeline's own conversion to 8-bit pictures, so the ceiling is judged like generated pictures are.
        var pixels = ImageConversion.ToPixels(vae.Decode(posterior.Mean));
        for (int i = 0; i < chunk.Length; i++)
        {
            using var image = ImageConversion.ToImage(pixels, i);
            judged.Add((chunk[i].Spec, ShapeJudge.Judge(image)));
        }
    }
    return JudgeReport.Compute(judged);
}

static IEnumerable<float> ReadLosses(string path) => File.Exists(path)
    ? File.ReadAllLines(path).Select(l => float.Parse(l, CultureInfo.InvariantCulture)) : [];

static void WriteLosses(string path, IEnumerable<float> losses)
    => File.WriteAllLines(path, losses.Select(l => l.ToString("R", CultureInfo.InvariantCulture)));

internal sealed class Progress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => report(value);
}

internal sealed record Args(string Output, string Work, string Device, int VaeSteps, int UNetSteps, int Batch, int VaeBatch, int BankSize, int Seed,
    int Threads, bool Probe, int CheckpointEvery, double LearningRate, int EvalCount, int Groups, double TimeLimitSeconds, string? InitFrom,
    double HighNoise, int HighNoiseFrom, CaptionStyle[] Styles, bool ZeroSnr)
{
    public static Args Parse(string[] a)
    {
        string Get(string name, string fallback) { int i = Array.IndexOf(a, name); return i >= 0 && i + 1 < a.Length ? a[i + 1] : fallback; }
        int Int(string name, int fallback) => int.Parse(Get(name, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
        double Real(string name, double fallback) => double.Parse(Get(name, fallback.ToString("R", CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
        return new Args(Get("--output", "models/shapes"), Get("--work", ".train-shapes"), Get("--device", "cpu"), Int("--vae-steps", 1500),
            Int("--unet-steps", 8000), Int("--batch", 128), Int("--vae-batch", 32), Int("--bank", 16384), Int("--seed", 0),
            Int("--threads", 2), a.Contains("--probe"), Int("--checkpoint-every", 1000), Real("--lr", 8e-4), Int("--eval", 200),
            Int("--groups", 16), Real("--time-limit", 0), a.Contains("--init-from") ? Get("--init-from", "") : null,
            Real("--high-noise", 0), Int("--high-noise-from", 800),
            Get("--styles", string.Join(",", Enum.GetNames<CaptionStyle>())).Split(',').Select(Enum.Parse<CaptionStyle>).ToArray(),
            a.Contains("--zero-snr"));
    }
}
