using System.Diagnostics;
using System.Text.Json.Nodes;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Runtime;
using LatentDiffusion.Schedulers;
using LatentDiffusion.Text;
using LatentDiffusion.UNet;
using LatentDiffusion.Vae;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Training;

/// <summary>Settings of a <see cref="DiffusionTrainer"/>.</summary>
public sealed record DiffusionTrainingOptions : TrainingOptions
{
    /// <summary>The EMA's decay (reached after a warm-up, see <see cref="ExponentialMovingAverage.DecayAt"/>).</summary>
    public double EmaDecay { get; init; } = 0.999;

    /// <summary>Probability that a caption is replaced by the empty prompt, so the model also learns the unconditional prediction classifier-free guidance needs.</summary>
    public double CaptionDropout { get; init; } = 0.1;

    /// <summary>Train the text encoder together with the UNet; otherwise it is frozen.</summary>
    public bool TrainTextEncoder { get; init; } = true;

    /// <summary>The training target: <c>epsilon</c>, <c>v_prediction</c> or <c>sample</c>; null: the noise scheduler's <c>prediction_type</c>.</summary>
    public string? PredictionType { get; init; }

    /// <summary>
    /// Fraction of each batch whose timesteps are drawn from [<see cref="HighNoiseFrom"/>, train steps) instead of the
    /// whole range. At high noise the caption is the only clue to the picture's layout, so a fine-tune that must teach
    /// layout words ("on the left") learns faster with more of its batch there. 0 (the default): uniform timesteps.
    /// </summary>
    public double HighNoiseFraction { get; init; }

    /// <summary>The first timestep of the high-noise range <see cref="HighNoiseFraction"/> draws from.</summary>
    public int HighNoiseFrom { get; init; } = 800;
}

/// <summary>
/// Text-to-image training of a latent diffusion model by noise prediction (DDPM's simple loss): per step, captions are
/// dropped to the empty prompt with <see cref="DiffusionTrainingOptions.CaptionDropout"/>, encoded by the text encoder
/// (trained too, when asked); images are encoded to latents by the frozen VAE (times <c>scaling_factor</c>); a uniform
/// timestep and Gaussian noise give the noisy latents; the loss is the MSE between the UNet's prediction and the target
/// (noise, velocity or clean latents). AdamW with a linear warm-up, gradient clipping and an EMA of the weights.
/// Every random draw of step <c>n</c> comes from a CPU generator seeded from (<see cref="TrainingOptions.Seed"/>, n),
/// so a run is reproducible and a resumed run continues exactly as a straight one.
/// </summary>
public sealed class DiffusionTrainer : IDisposable
{
    private const string Kind = "DiffusionTrainer";

    private readonly ClipTokenizer _tokenizer;
    private readonly ClipTextModel _textEncoder;
    private readonly UNet2DConditionModel _unet;
    private readonly AutoencoderKL _vae;
    private readonly DiffusionScheduler _scheduler;
    private readonly DiffusionTrainingOptions _options;
    private readonly ILogger _logger;
    private readonly TrainerCore _core;
    private readonly string _predictionType;

    /// <summary>Prepares training of <paramref name="unet"/> (and <paramref name="textEncoder"/> when asked); the VAE stays frozen.</summary>
    /// <param name="tokenizer">Tokenizes the captions (padded to the text encoder's positions, as the pipeline does).</param>
    /// <param name="textEncoder">The text encoder.</param>
    /// <param name="unet">The UNet.</param>
    /// <param name="vae">The (trained) autoencoder.</param>
    /// <param name="noiseScheduler">Gives the noise schedule (ᾱ) of forward diffusion; one of this library's schedulers.</param>
    /// <param name="options">Settings.</param>
    /// <param name="logger">Optional logger.</param>
    /// <exception cref="ArgumentException">The models do not fit together, or the scheduler is not one of this library's.</exception>
    public DiffusionTrainer(ClipTokenizer tokenizer, ClipTextModel textEncoder, UNet2DConditionModel unet, AutoencoderKL vae, IScheduler noiseScheduler,
        DiffusionTrainingOptions? options = null, ILogger? logger = null)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _textEncoder = textEncoder ?? throw new ArgumentNullException(nameof(textEncoder));
        _unet = unet ?? throw new ArgumentNullException(nameof(unet));
        _vae = vae ?? throw new ArgumentNullException(nameof(vae));
        _scheduler = noiseScheduler as DiffusionScheduler
            ?? throw new ArgumentException($"The noise scheduler must be one of this library's schedulers (got {noiseScheduler?.GetType().Name ?? "null"}).", nameof(noiseScheduler));
        _options = options ?? new DiffusionTrainingOptions();
        _logger = logger ?? NullLogger.Instance;
        if (textEncoder.HiddenSize != unet.CrossAttentionDim)
            throw new ArgumentException($"The text encoder's hidden size ({textEncoder.HiddenSize}) does not match the UNet's cross_attention_dim ({unet.CrossAttentionDim}).");
        if (vae.LatentChannels != unet.InChannels)
            throw new ArgumentException($"The VAE's latent channels ({vae.LatentChannels}) do not match the UNet's in_channels ({unet.InChannels}).");
        if (_options.CaptionDropout is < 0 or > 1)
            throw new ArgumentOutOfRangeException(nameof(options), _options.CaptionDropout, "CaptionDropout must be in [0, 1].");
        if (_options.HighNoiseFraction is < 0 or > 1)
            throw new ArgumentOutOfRangeException(nameof(options), _options.HighNoiseFraction, "HighNoiseFraction must be in [0, 1].");
        if (_options.HighNoiseFraction > 0 && (_options.HighNoiseFrom < 0 || _options.HighNoiseFrom >= _scheduler.NumTrainTimesteps))
            throw new ArgumentOutOfRangeException(nameof(options), _options.HighNoiseFrom, $"HighNoiseFrom must be in [0, {_scheduler.NumTrainTimesteps}).");
        _predictionType = _options.PredictionType ?? _scheduler.PredictionType;
        if (_predictionType is not ("epsilon" or "v_prediction" or "sample"))
            throw new ArgumentException($"PredictionType '{_predictionType}' is not supported (supported: epsilon, v_prediction, sample).", nameof(options));

        foreach (var p in vae.parameters()) p.requires_grad = false;
        if (!_options.TrainTextEncoder)
            foreach (var p in textEncoder.parameters()) p.requires_grad = false;
        var trained = unet.named_parameters().Select(p => ("unet." + p.name, p.parameter));
        if (_options.TrainTextEncoder) trained = trained.Concat(textEncoder.named_parameters().Select(p => ("text_encoder." + p.name, p.parameter)));
        _core = new TrainerCore(Kind, trained, _options.LearningRate, _options.WarmupSteps, _options.WeightDecay, _options.MaxGradNorm, _options.EmaDecay);
    }

    /// <summary>Optimisation steps taken (including those of a loaded checkpoint).</summary>
    public int StepCount => _core.StepCount;

    /// <summary>What the UNet is trained to predict (<c>epsilon</c>, <c>v_prediction</c> or <c>sample</c>).</summary>
    public string PredictionType => _predictionType;

    /// <summary>The EMA of the trained weights (names <c>unet.*</c> and <c>text_encoder.*</c>).</summary>
    public ExponentialMovingAverage Ema => _core.Ema!;

    /// <summary>The learning rate step <paramref name="step"/> (0-based) uses.</summary>
    public double LearningRateAt(int step) => _core.LearningRateAt(step);

    /// <summary>
    /// One optimisation step on a batch; returns its loss.
    /// </summary>
    /// <param name="images">Images <c>[batch, 3, H, W]</c> in [-1, 1], H and W multiples of the VAE's scale factor.</param>
    /// <param name="captions">One caption per image.</param>
    /// <exception cref="ArgumentException">The images and captions do not match.</exception>
    /// <exception cref="InvalidOperationException">The loss or a gradient is NaN or infinite: the step is not applied
    /// (weights, EMA, optimizer state and <see cref="StepCount"/> unchanged), and the message names the parameters.</exception>
    public float Step(Tensor images, IReadOnlyList<string> captions)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(captions);
        if (images.dim() != 4 || images.shape[0] != captions.Count)
            throw new ArgumentException($"Expected images [batch, 3, H, W] with one caption each; got [{string.Join(", ", images.shape)}] and {captions.Count} captions.");
        return StepCore(captions, generator =>
        {
            using var posterior = _vae.Encode(images);
            var z = _options.SampleLatents ? posterior.Sample(generator) : posterior.Mean.alias();
            return (z * _vae.ScalingFactor).to(ScalarType.Float32, CPU);
        });
    }

    /// <summary>
    /// One optimisation step on images already encoded by the frozen VAE: their posterior means and standard deviations
    /// (unscaled, <c>[batch, C, h, w]</c>), for example from a bank encoded once before training. Draws and results are
    /// those of <see cref="Step(Tensor, IReadOnlyList{string})"/> on the images themselves.
    /// </summary>
    public float Step(Tensor posteriorMean, Tensor posteriorStd, IReadOnlyList<string> captions)
    {
        ArgumentNullException.ThrowIfNull(posteriorMean);
        ArgumentNullException.ThrowIfNull(posteriorStd);
        ArgumentNullException.ThrowIfNull(captions);
        if (posteriorMean.dim() != 4 || posteriorMean.shape[0] != captions.Count || !posteriorMean.shape.SequenceEqual(posteriorStd.shape))
            throw new ArgumentException($"Expected posterior mean and std [batch, C, h, w] with one caption each; got [{string.Join(", ", posteriorMean.shape)}], [{string.Join(", ", posteriorStd.shape)}] and {captions.Count} captions.");
        return StepCore(captions, generator =>
        {
            var z = _options.SampleLatents
                ? posteriorMean + posteriorStd * randn(posteriorMean.shape, ScalarType.Float32, CPU, generator: generator).to(posteriorMean.dtype, posteriorMean.device)
                : posteriorMean.alias();
            return (z * _vae.ScalingFactor).to(ScalarType.Float32, CPU);
        });
    }

    private float StepCore(IReadOnlyList<string> captions, Func<Generator, Tensor> latentsFor)
    {
        int batch = captions.Count;
        var device = _unet.Device;
        // A smaller OpenMP team than libtorch's convolutions plan for leaves weight gradients uninitialised or hangs.
        TorchRuntime.EnsureFullOpenMpTeams(_logger);

        _unet.train();
        _textEncoder.train();
        try
        {
            using var scope = NewDisposeScope();
            var loss = Loss();
            double lr = _core.Apply(loss, recompute: Loss);
            float value = loss.item<float>();
            _logger.LogDebug("Step {Step}: loss {Loss:F5}, lr {LearningRate:G4}", StepCount, value, lr);
            return value;
        }
        finally
        {
            _unet.eval();
            _textEncoder.eval();
        }

        // The step's loss; every call draws the same values (a refused step is recomputed to diagnose it).
        Tensor Loss()
        {
            using var generator = new Generator(TrainerCore.StepSeed(_options.Seed, StepCount));

            // The draws come in a fixed order from one CPU generator: dropout, latent sample, timesteps (then the high-noise
            // timesteps and picks, when asked), noise.
            var drop = CaptionDropMask(generator, batch, _options.CaptionDropout);
            var ids = new long[batch * _textEncoder.MaxPositions];
            for (int i = 0; i < batch; i++)
            {
                string caption = drop[i] ? "" : captions[i];
                var tokens = _tokenizer.EncodePadded(caption, _textEncoder.MaxPositions).Ids;
                for (int k = 0; k < tokens.Length; k++) ids[i * tokens.Length + k] = tokens[k];
            }
            var idTensor = tensor(ids, [batch, _textEncoder.MaxPositions], ScalarType.Int64).to(_textEncoder.Device);

            Tensor context;
            if (_options.TrainTextEncoder) context = _textEncoder.forward(idTensor);
            else using (no_grad()) context = _textEncoder.forward(idTensor);

            Tensor latents;
            using (no_grad()) latents = latentsFor(generator);

            var timesteps = SampleTimesteps(generator, batch, _scheduler.NumTrainTimesteps, _options.HighNoiseFraction, _options.HighNoiseFrom);
            var noise = randn(latents.shape, ScalarType.Float32, CPU, generator: generator);
            var noisy = _scheduler.AddNoise(latents, noise, timesteps);
            var target = _predictionType switch
            {
                "epsilon" => noise,
                "v_prediction" => _scheduler.GetVelocity(latents, noise, timesteps),
                _ => latents,
            };

            var prediction = _unet.forward(noisy.to(_unet.DType, device), timesteps.to(ScalarType.Float32, device), context.to(_unet.DType, device));
            return nn.functional.mse_loss(prediction.to(ScalarType.Float32), target.to(ScalarType.Float32, device));
        }
    }

    /// <summary>
    /// The timesteps of a batch: uniform over [0, <paramref name="trainSteps"/>), then, when <paramref name="highNoiseFraction"/>
    /// is above 0, each replaced with that probability by one uniform over [<paramref name="highNoiseFrom"/>, <paramref name="trainSteps"/>).
    /// </summary>
    internal static Tensor SampleTimesteps(Generator generator, int batch, int trainSteps, double highNoiseFraction, int highNoiseFrom)
    {
        var timesteps = randint(0, trainSteps, [batch], ScalarType.Int64, CPU, generator: generator);
        if (highNoiseFraction <= 0) return timesteps;
        using var high = randint(highNoiseFrom, trainSteps, [batch], ScalarType.Int64, CPU, generator: generator);
        using var u = rand([batch], ScalarType.Float32, CPU, generator: generator);
        using var pick = u < highNoiseFraction;
        using (timesteps) return where(pick, high, timesteps);
    }

    /// <summary>Which captions of a batch are dropped: one uniform draw per caption from <paramref name="generator"/>.</summary>
    internal static bool[] CaptionDropMask(Generator generator, int batch, double probability)
    {
        using var u = rand([batch], ScalarType.Float32, CPU, generator: generator);
        return u.data<float>().Select(v => v < probability).ToArray();
    }

    /// <summary>
    /// Trains until <see cref="StepCount"/> reaches <paramref name="steps"/>. <paramref name="batches"/> gets the step
    /// number and returns its batch; tensors it creates are released after the step (a tensor made before the call, for
    /// example a fixed batch, is not).
    /// </summary>
    /// <param name="steps">The step count to reach (a resumed trainer continues from its <see cref="StepCount"/>).</param>
    /// <param name="batches">The batch of a step: images <c>[batch, 3, H, W]</c> in [-1, 1] and their captions.</param>
    /// <param name="progress">Told after every step.</param>
    /// <param name="cancellationToken">Checked before every step.</param>
    public void Train(int steps, Func<int, (Tensor Images, IReadOnlyList<string> Captions)> batches, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(batches);
        var clock = Stopwatch.StartNew();
        while (StepCount < steps)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int step = StepCount;
            float loss;
            using (NewDisposeScope())
            {
                var (images, captions) = batches(step);
                loss = Step(images, captions);
            }
            progress?.Report(new TrainingProgress(StepCount, steps, loss, _core.LearningRateAt(step), clock.Elapsed));
        }
        _logger.LogInformation("Trained to step {Step} in {Elapsed}", StepCount, clock.Elapsed);
    }

    /// <summary>
    /// Saves everything needed to continue: raw and EMA weights (float32), the optimizer state and the step (the random
    /// draws depend only on the seed and the step). Written to a temporary folder and moved into place; an existing
    /// checkpoint in <paramref name="dir"/> is replaced.
    /// </summary>
    public void SaveCheckpoint(string dir)
        => _core.SaveCheckpoint(dir, new JsonObject
        {
            ["seed"] = _options.Seed,
            ["prediction_type"] = _predictionType,
            ["train_text_encoder"] = _options.TrainTextEncoder,
        });

    /// <summary>Restores a checkpoint written by <see cref="SaveCheckpoint"/> from the same models and options.</summary>
    /// <exception cref="FileNotFoundException">No checkpoint in <paramref name="dir"/>.</exception>
    /// <exception cref="InvalidDataException">The checkpoint was written by another kind of trainer, another model, or other options.</exception>
    public void LoadCheckpoint(string dir)
    {
        ArgumentException.ThrowIfNullOrEmpty(dir);
        var state = _core.LoadCheckpoint(dir);
        long seed = state["seed"]?.GetValue<long>() ?? 0;
        if (seed != _options.Seed) _logger.LogWarning("The checkpoint was trained with seed {Saved}; continuing with seed {Seed}", seed, _options.Seed);
        if (state["prediction_type"]?.GetValue<string>() is string saved && saved != _predictionType)
            throw new InvalidDataException($"Checkpoint '{dir}' trained prediction type '{saved}', this trainer '{_predictionType}'.");
    }

    /// <summary>Builds a trainer and restores the checkpoint in <paramref name="dir"/> into it (see <see cref="LoadCheckpoint"/>).</summary>
    public static DiffusionTrainer Resume(string dir, ClipTokenizer tokenizer, ClipTextModel textEncoder, UNet2DConditionModel unet, AutoencoderKL vae,
        IScheduler noiseScheduler, DiffusionTrainingOptions? options = null, ILogger? logger = null)
    {
        var trainer = new DiffusionTrainer(tokenizer, textEncoder, unet, vae, noiseScheduler, options, logger);
        try { trainer.LoadCheckpoint(dir); }
        catch { trainer.Dispose(); throw; }
        return trainer;
    }

    /// <summary>
    /// Copies the EMA weights into the UNet (and the text encoder, when it is trained), for saving or evaluating the
    /// final model. Training on afterwards continues from the EMA weights.
    /// </summary>
    public void ApplyEma() => _core.Ema!.CopyToParameters();

    /// <summary>Releases the optimizer state and the EMA (not the models).</summary>
    public void Dispose() => _core.Dispose();
}
