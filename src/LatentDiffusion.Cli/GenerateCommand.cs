using System.CommandLine;
using System.Diagnostics;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using Microsoft.Extensions.Logging;
using SixLabors.ImageSharp;

namespace LatentDiffusion.Cli;

/// <summary><c>ldm generate</c>: text-to-image, or image-to-image with --init-image.</summary>
internal static class GenerateCommand
{
    public static Command Create(Option<bool> verbose, TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string?>("--model", "-m") { Description = "A diffusers folder or a single-file .safetensors checkpoint; default: the built-in shapes model." };
        var config = new Option<string?>("--config") { Description = "For single files: a diffusers folder whose configs and tokenizer to use." };
        var prompt = new Option<string>("--prompt", "-p") { Description = "What to draw.", Required = true };
        var negative = new Option<string?>("--negative-prompt", "-n") { Description = "What not to draw." };
        var steps = new Option<int>("--steps") { Description = "Denoising steps.", DefaultValueFactory = _ => 50 };
        var guidance = new Option<double>("--guidance", "-g") { Description = "Classifier-free guidance scale (off at 1).", DefaultValueFactory = _ => 7.5 };
        var scheduler = new Option<string?>("--scheduler", "-s") { Description = "Scheduler name (ddim, euler, euler-a, dpm++2m-karras, ...); default: the model's own." };
        var schedulerOption = new Option<string[]>("--scheduler-option") { Description = "A scheduler config field, KEY=VALUE (repeatable), e.g. use_karras_sigmas=true or timestep_spacing=trailing.", AllowMultipleArgumentsPerToken = false };
        var seed = new Option<long?>("--seed") { Description = "Random seed; default: random (printed)." };
        var width = new Option<int?>("--width", "-W") { Description = "Width in pixels, a multiple of 8; default: the model's size." };
        var height = new Option<int?>("--height", "-H") { Description = "Height in pixels, a multiple of 8; default: the model's size." };
        var initImage = new Option<string?>("--init-image") { Description = "Start image for image-to-image." };
        var strength = new Option<double>("--strength") { Description = "Image-to-image: how much to change the start image, in [0, 1].", DefaultValueFactory = _ => 0.8 };
        var count = new Option<int>("--count") { Description = "Images to make (1 to 64); with N > 1 the files are FILE-0.png ... FILE-(N-1).png.", DefaultValueFactory = _ => 1 };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };
        var dtype = new Option<string>("--dtype") { Description = "float32, float16 or bfloat16.", DefaultValueFactory = _ => "float32" };
        var clipSkip = new Option<int>("--clip-skip") { Description = "Text encoder layers to skip at the end (0 = none)." };
        var output = new Option<string>("--output", "-o") { Description = "The PNG to write; missing folders are created. An existing file is kept unless --overwrite is given.", DefaultValueFactory = _ => "out.png" };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace existing output files." };

        var command = new Command("generate", "Generate images from a prompt.")
        {
            model, config, prompt, negative, steps, guidance, scheduler, schedulerOption, seed, width, height, initImage, strength, count, device, dtype, clipSkip, output, overwrite,
        };
        command.SetAction(async (parse, ct) =>
        {
            // Everything that can be wrong with the arguments or the output location is found here, before the model
            // is loaded and the images are made.
            int n = parse.GetValue(count);
            CheckArguments(parse.GetValue(steps), n, parse.GetValue(width), parse.GetValue(height), parse.GetValue(guidance),
                parse.GetValue(initImage) is null ? null : parse.GetValue(strength), parse.GetValue(clipSkip));
            bool replace = parse.GetValue(overwrite);
            var targets = OutputFiles.Prepare(parse.GetValue(output)!, n, replace);

            using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(new StderrLoggerProvider(stderr))
                .SetMinimumLevel(parse.GetValue(verbose) ? LogLevel.Information : LogLevel.Warning));
            var pipelineOptions = new PipelineOptions
            {
                Device = parse.GetValue(device)!,
                DType = DeviceSpec.ParseDType(parse.GetValue(dtype)!),
                ConfigDirectory = parse.GetValue(config),
                LoggerFactory = loggerFactory,
            };
            using var init = parse.GetValue(initImage) is { } initPath ? ImageLoading.Load(initPath) : null;
            var options = new GenerationOptions
            {
                NegativePrompt = parse.GetValue(negative),
                Steps = parse.GetValue(steps),
                GuidanceScale = parse.GetValue(guidance),
                Scheduler = parse.GetValue(scheduler),
                SchedulerOverrides = ParseOverrides(parse.GetValue(schedulerOption)),
                Seed = parse.GetValue(seed),
                Width = parse.GetValue(width),
                Height = parse.GetValue(height),
                InitImage = init,
                Strength = parse.GetValue(strength),
                ImagesPerPrompt = n,
                ClipSkip = parse.GetValue(clipSkip),
            };
            var clock = Stopwatch.StartNew();
            await using var pipeline = await StableDiffusionPipeline.LoadAsync(BuiltInModel.Resolve(parse.GetValue(model)), pipelineOptions, ct);
            var bar = Console.IsErrorRedirected ? null : new ProgressBar(stderr);
            using var result = await pipeline.GenerateAsync(parse.GetValue(prompt)!, options, bar, ct);
            bar?.Done();
            for (int i = 0; i < targets.Length; i++)
            {
                await OutputFiles.SaveAsync(result.Images[i], targets[i], replace, ct);
                stdout.WriteLine(targets[i]);
            }
            stderr.WriteLine($"seed {result.Seed}, {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }

    // The pipeline checks these too, in its own (API) words; here they are checked first, in the tool's.
    private static void CheckArguments(int steps, int count, int? width, int? height, double guidance, double? strength, int clipSkip)
    {
        if (steps < 1) throw new ArgumentException($"--steps must be at least 1, got {steps}.");
        if (count is < 1 or > MaxCount) throw new ArgumentException($"--count must be between 1 and {MaxCount}, got {count}.");
        foreach (var (name, value) in new[] { ("--width", width), ("--height", height) })
        {
            if (value is not { } v) continue;
            if (v <= 0 || v % 8 != 0) throw new ArgumentException($"{name} must be a positive multiple of 8, got {v}.");
            if (v > StableDiffusionPipeline.MaxImageSide) throw new ArgumentException($"{name} must be at most {StableDiffusionPipeline.MaxImageSide}, got {v}.");
        }
        if (!double.IsFinite(guidance)) throw new ArgumentException($"--guidance must be a finite number, got {guidance}.");
        if (strength is { } s && !(s >= 0 && s <= 1)) throw new ArgumentException($"--strength must be between 0 and 1, got {s}.");
        if (clipSkip < 0) throw new ArgumentException($"--clip-skip cannot be negative, got {clipSkip}.");
    }

    // The pipeline's limit on images per prompt.
    private const int MaxCount = 64;

    private static Dictionary<string, string>? ParseOverrides(string[]? items)
    {
        if (items is null || items.Length == 0) return null;
        var result = new Dictionary<string, string>();
        foreach (var item in items)
        {
            int eq = item.IndexOf('=');
            if (eq <= 0) throw new ArgumentException($"--scheduler-option '{item}' is not KEY=VALUE.");
            result[item[..eq].Trim()] = item[(eq + 1)..].Trim();
        }
        return result;
    }
}

/// <summary>A one-line progress bar on a terminal.</summary>
internal sealed class ProgressBar(TextWriter writer) : IProgress<DiffusionProgress>
{
    public void Report(DiffusionProgress p)
    {
        const int width = 30;
        int filled = p.TotalSteps == 0 ? width : p.Step * width / p.TotalSteps;
        writer.Write($"\r[{new string('#', filled)}{new string('.', width - filled)}] {p.Step}/{p.TotalSteps} {p.Elapsed.TotalSeconds:F1}s");
    }

    public void Done() => writer.WriteLine();
}
