using System.CommandLine;
using System.Diagnostics;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using Microsoft.Extensions.Logging;
using SixLabors.ImageSharp;

namespace LatentDiffusion.Cli;

/// <summary><c>ldm generate</c>: text-to-image, image-to-image with --init-image, inpainting with --init-image and --mask.</summary>
internal static class GenerateCommand
{
    public static Command Create(Option<bool> verbose, TextWriter stdout, TextWriter stderr)
    {
        // Aliases follow stable-diffusion.cpp (-s seed, -i, --cfg-scale, --sampling-method, -b) and keep this tool's own
        // long names; docs/cli.md lists every flag with its stable-diffusion.cpp and AUTOMATIC1111 counterparts.
        var model = new Option<string?>("--model", "-m") { Description = "A diffusers folder or a single-file .safetensors checkpoint; default: the built-in shapes model." };
        var config = new Option<string?>("--config") { Description = "For single files of unusual models: a diffusers folder whose configs and tokenizer to use instead of those inferred and found in the hub cache." };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "For single files: a tokenizer folder (vocab.json and merges.txt, or tokenizer.json); default: the CLIP tokenizer from the Hugging Face cache, downloaded once." };
        var prompt = new Option<string>("--prompt", "-p") { Description = "What to draw.", Required = true };
        var negative = new Option<string?>("--negative-prompt", "-n") { Description = "What not to draw." };
        var steps = new Option<int>("--steps") { Description = "Denoising steps.", DefaultValueFactory = _ => 50 };
        var guidance = new Option<double>("--guidance", "-g", "--cfg-scale") { Description = "Classifier-free guidance scale (off at 1).", DefaultValueFactory = _ => 7.5 };
        var scheduler = new Option<string?>("--scheduler", "-S", "--sampling-method", "--sampler") { Description = "Scheduler name (ddim, euler, euler-a, dpm++2m-karras, ...; stable-diffusion.cpp and AUTOMATIC1111 names too); default: the model's own." };
        var schedulerOption = new Option<string[]>("--scheduler-option") { Description = "A scheduler config field, KEY=VALUE (repeatable), e.g. use_karras_sigmas=true or timestep_spacing=trailing.", AllowMultipleArgumentsPerToken = false };
        var seed = new Option<long?>("--seed", "-s") { Description = "Random seed; image i of a batch uses seed + i; default: random (printed)." };
        var width = new Option<int?>("--width", "-W") { Description = "Width in pixels, a multiple of 8; default: the model's size." };
        var height = new Option<int?>("--height", "-H") { Description = "Height in pixels, a multiple of 8; default: the model's size." };
        var initImage = new Option<string?>("--init-image", "-i", "--init-img") { Description = "Start image for image-to-image." };
        var mask = new Option<string?>("--mask") { Description = "Inpainting: a mask for --init-image, white = repaint, black = keep (resized to the image, binarised at half intensity)." };
        var strength = new Option<double?>("--strength") { Description = "Image-to-image and inpainting: how much to change the start image, in [0, 1]; default: the reference's for the mode, 0.8 for image-to-image (SDXL: 0.3), 1.0 for inpainting (SDXL: 0.9999)." };
        var count = new Option<int>("--count", "-b", "--batch-count") { Description = "Images to make (1 to 64), image i with seed + i; with N > 1 the files are FILE-0.png ... FILE-(N-1).png.", DefaultValueFactory = _ => 1 };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };
        var dtype = new Option<string>("--dtype") { Description = "float32, float16 or bfloat16 (float16 is for GPUs: on the CPU it is several times slower).", DefaultValueFactory = _ => "float32" };
        var weightDtype = new Option<string?>("--weight-dtype") { Description = "Hold the weights in float16 (or bfloat16) and compute in --dtype: half the memory, float32's results on the CPU." };
        var clipSkip = new Option<int>("--clip-skip") { Description = "Text encoder layers to skip at the end (0 = none)." };
        var output = new Option<string>("--output", "-o") { Description = "The PNG to write; missing folders are created. An existing file is kept unless --overwrite is given.", DefaultValueFactory = _ => "out.png" };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace existing output files." };
        var lora = new Option<string[]>("--lora") { Description = "A LoRA file (kohya/A1111 or diffusers/PEFT .safetensors, or a diffusers LoRA folder) with an optional scale, FILE[:scale] (default 1); repeatable.", AllowMultipleArgumentsPerToken = false };
        var threads = new Option<int?>("--threads", "-t") { Description = "CPU threads for libtorch's kernels; default: libtorch's choice (the cores, or OMP_NUM_THREADS)." };
        var vae = new Option<string?>("--vae") { Description = "A standalone VAE .safetensors file to use instead of the model's (diffusers names or the original layout, e.g. sdxl_vae.safetensors)." };
        var prompt2 = new Option<string?>("--prompt-2") { Description = "SDXL: the prompt for the second text encoder; default: --prompt." };
        var negative2 = new Option<string?>("--negative-prompt-2") { Description = "SDXL: the negative prompt for the second text encoder; default: --negative-prompt." };

        var command = new Command("generate", "Generate images from a prompt.")
        {
            model, config, tokenizer, vae, prompt, negative, prompt2, negative2, steps, guidance, scheduler, schedulerOption, seed, width, height, initImage, strength, count, device, dtype, weightDtype, clipSkip, output, overwrite, threads,
        };
        var promptArguments = new PromptArguments();
        promptArguments.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            // Everything that can be wrong with the arguments or the output location is found here, before the model
            // is loaded and the images are made.
            int n = parse.GetValue(count);
            int stepCount = parse.GetValue(steps);
            double? givenStrength = parse.GetValue(initImage) is null ? null : parse.GetValue(strength);
            if (parse.GetValue(mask) is not null && parse.GetValue(initImage) is null)
                throw new ArgumentException("--mask needs --init-image: the mask marks which part of that image to repaint.");
            CheckArguments(stepCount, n, parse.GetValue(width), parse.GetValue(height), parse.GetValue(guidance), givenStrength, parse.GetValue(clipSkip));
            if (parse.GetValue(threads) is { } t && t is < 1 or > TorchThreads.Max)
                throw new ArgumentException($"--threads must be between 1 and {TorchThreads.Max}, got {t}.");
            var overrides = ParseOverrides(parse.GetValue(schedulerOption));
            var embeddings = promptArguments.Embeddings(parse);
            string? schedulerName = null;
            if (parse.GetValue(scheduler) is { } givenScheduler)
            {
                (schedulerName, string? spacing) = SamplerNames.Resolve(givenScheduler);
                if (spacing is not null && !(overrides?.ContainsKey("timestep_spacing") ?? false))
                    (overrides ??= new Dictionary<string, string>())["timestep_spacing"] = spacing;
            }
            var loras = LoraArguments.Parse(parse.GetValue(lora));
            bool replace = parse.GetValue(overwrite);
            var targets = OutputFiles.Prepare(parse.GetValue(output)!, n, replace);
            string promptText = parse.GetValue(prompt)!;
            string? modelPath = parse.GetValue(model);
            bool builtIn = string.IsNullOrEmpty(modelPath);

            using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(new StderrLoggerProvider(stderr))
                .SetMinimumLevel(parse.GetValue(verbose) ? LogLevel.Information : LogLevel.Warning));
            var pipelineOptions = new PipelineOptions
            {
                Device = parse.GetValue(device)!,
                DType = DeviceSpec.ParseDType(parse.GetValue(dtype)!),
                WeightDType = parse.GetValue(weightDtype) is { } weights ? ParseWeightDType(weights) : null,
                ConfigDirectory = parse.GetValue(config),
                TokenizerDirectory = parse.GetValue(tokenizer),
                LoggerFactory = loggerFactory,
                Threads = parse.GetValue(threads),
                VaeFile = parse.GetValue(vae),
                Loras = loras,
                // One generation per run: the text encoders and the UNet are freed as soon as it no longer needs them.
                FreeWeightsAfterUse = true,
            };
            using var init = parse.GetValue(initImage) is { } initPath ? ImageLoading.Load(initPath) : null;
            using var maskImage = parse.GetValue(mask) is { } maskPath ? ImageLoading.Load(maskPath) : null;
            var options = new GenerationOptions
            {
                NegativePrompt = parse.GetValue(negative),
                Prompt2 = parse.GetValue(prompt2),
                NegativePrompt2 = parse.GetValue(negative2),
                Steps = stepCount,
                GuidanceScale = parse.GetValue(guidance),
                Scheduler = schedulerName,
                SchedulerOverrides = overrides,
                Seed = parse.GetValue(seed),
                Width = parse.GetValue(width),
                Height = parse.GetValue(height),
                InitImage = init,
                Mask = maskImage,
                Strength = parse.GetValue(strength),
                ImagesPerPrompt = n,
                ClipSkip = parse.GetValue(clipSkip),
            };
            options = promptArguments.Apply(parse, options);
            var clock = Stopwatch.StartNew();
            // libtorch tries NNPACK for large CPU batches and prints "Could not initialize NNPACK!" on CPUs it does not
            // support; this tool does not use it (see TorchRuntime.SetNnpackEnabled).
            TorchRuntime.EnsureInitialized(pipelineOptions.Runtime, loggerFactory.CreateLogger("LatentDiffusion.Loading"));
            TorchRuntime.SetNnpackEnabled(false);
            string resolvedModel = BuiltInModel.Resolve(modelPath);
            await using var pipeline = await StableDiffusionPipeline.LoadAsync(resolvedModel, pipelineOptions, ct);
            foreach (var (embeddingPath, token) in embeddings) pipeline.LoadTextualInversion(embeddingPath, token);
            var load = clock.Elapsed;
            int outWidth = options.Width ?? (init is null ? pipeline.DefaultImageSize : init.Width / 8 * 8);
            int outHeight = options.Height ?? (init is null ? pipeline.DefaultImageSize : init.Height / 8 * 8);
            if (builtIn)
                foreach (var hint in BuiltInModelHints.For(promptText, outWidth, outHeight, pipeline.DefaultImageSize, resolvedModel))
                    stderr.WriteLine($"warning: {hint}");

            // Progress counts the steps asked for (image-to-image: the int(steps x strength) that run), not denoiser calls.
            double? img2imgStrength = init is null ? null : pipeline.StrengthFor(options);
            int userSteps = img2imgStrength is { } st ? Math.Max(1, (int)(stepCount * st)) : stepCount;
            var progress = StepProgress.For(stderr, userSteps);
            using var result = await pipeline.GenerateAsync(promptText, options, progress, ct);
            progress.Done();

            string sampler = SamplerNames.A1111Label(schedulerName, pipeline.Scheduler);
            string modelName = builtIn ? "shapes" : ModelName(resolvedModel);
            for (int i = 0; i < targets.Length; i++)
            {
                var image = result.Images[i];
                string parameters = PngParameters.Format(promptText, options.NegativePrompt, stepCount, sampler, options.GuidanceScale, result.Seeds[i],
                    image.Width, image.Height, modelName, img2imgStrength, options.ClipSkip);
                await OutputFiles.SaveAsync(image, targets[i], replace, ct, parameters);
                stdout.WriteLine(targets[i]);
            }
            stderr.WriteLine(result.Seeds.Count == 1 ? $"seed {result.Seeds[0]}" : $"seeds {string.Join(", ", result.Seeds)} (image i: seed {result.Seeds[0]} + i)");
            stderr.WriteLine(Timings(load, result.Timings, userSteps, clock.Elapsed));
            return 0;
        });
        command.Options.Add(lora);
        // Inpainting's mask goes with the init image (before --strength in the help).
        command.Options.Insert(command.Options.IndexOf(strength), mask);
        return command;
    }

    /// <summary>The line of per-phase times (and the process's peak resident memory) printed at the end.</summary>
    internal static string Timings(TimeSpan load, GenerationTimings? timings, int steps, TimeSpan total)
    {
        var line = new System.Text.StringBuilder(FormattableString.Invariant($"time: load {load.TotalSeconds:F1} s"));
        if (timings is { } t)
        {
            double perSecond = t.Denoising.TotalSeconds > 0 ? steps / t.Denoising.TotalSeconds : 0;
            line.Append(FormattableString.Invariant($", text encoding {t.TextEncoding.TotalSeconds:F1} s, denoising {t.Denoising.TotalSeconds:F1} s ({perSecond:0.00} it/s), decoding {t.Decoding.TotalSeconds:F1} s"));
        }
        line.Append(FormattableString.Invariant($", total {total.TotalSeconds:F1} s, peak RSS {PeakMemory.PeakResidentBytes / 1e9:F2} GB"));
        return line.ToString();
    }

    /// <summary>The model's name for the PNG parameters: the folder's or the file's name.</summary>
    private static string ModelName(string path)
    {
        string trimmed = Path.TrimEndingDirectorySeparator(path);
        return Directory.Exists(trimmed) ? Path.GetFileName(trimmed) : Path.GetFileNameWithoutExtension(trimmed);
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

    private static TorchSharp.torch.ScalarType ParseWeightDType(string name)
    {
        try { return DeviceSpec.ParseDType(name); }
        catch (ArgumentException) { throw new ArgumentException($"--weight-dtype '{name}' is not supported: expected float16, bfloat16 or float32."); }
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
