using System.Diagnostics;
using System.Text.Json.Nodes;
using LatentDiffusion.Runtime;
using LatentDiffusion.Vae;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Training;

/// <summary>Settings of an <see cref="AutoencoderTrainer"/>.</summary>
public sealed record AutoencoderTrainingOptions : TrainingOptions
{
    /// <summary>Weight of KL(posterior ‖ N(0, 1)) (mean over latent elements); small, so the latents stay informative.</summary>
    public double KlWeight { get; init; } = 1e-6;

    /// <summary>Weight of an extra L1 reconstruction term (mean absolute error), which keeps edges sharper; 0: none.</summary>
    public double L1Weight { get; init; }

}

/// <summary>
/// Trains an <see cref="AutoencoderKL"/> by reconstruction: loss = MSE(decode(z), x) + L1Weight·|decode(z) − x| +
/// KlWeight·KL(q(z|x) ‖ N(0, 1)), z a sample (or the mean) of the posterior, AdamW with a linear warm-up and gradient
/// clipping. (No perceptual or adversarial loss: enough for simple synthetic images.) Reproducible as
/// <see cref="DiffusionTrainer"/>.
/// </summary>
public sealed class AutoencoderTrainer : IDisposable
{
    private const string Kind = "AutoencoderTrainer";

    private readonly AutoencoderKL _vae;
    private readonly AutoencoderTrainingOptions _options;
    private readonly ILogger _logger;
    private readonly TrainerCore _core;

    /// <summary>Prepares training of every parameter of <paramref name="vae"/>.</summary>
    public AutoencoderTrainer(AutoencoderKL vae, AutoencoderTrainingOptions? options = null, ILogger? logger = null)
    {
        _vae = vae ?? throw new ArgumentNullException(nameof(vae));
        _options = options ?? new AutoencoderTrainingOptions();
        _logger = logger ?? NullLogger.Instance;
        _core = new TrainerCore(Kind, vae.named_parameters().Select(p => (p.name, p.parameter)), _options.LearningRate, _options.WarmupSteps,
            _options.WeightDecay, _options.MaxGradNorm, emaDecay: null);
    }

    /// <summary>Optimisation steps taken (including those of a loaded checkpoint).</summary>
    public int StepCount => _core.StepCount;

    /// <summary>The learning rate step <paramref name="step"/> (0-based) uses.</summary>
    public double LearningRateAt(int step) => _core.LearningRateAt(step);

    /// <summary>One optimisation step on images <c>[batch, 3, H, W]</c> in [-1, 1]; returns the loss.</summary>
    /// <exception cref="InvalidOperationException">The loss or a gradient is NaN or infinite: the step is not applied
    /// (weights, EMA, optimizer state and <see cref="StepCount"/> unchanged), and the message names the parameters.</exception>
    public float Step(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        // A smaller OpenMP team than libtorch's convolutions plan for leaves weight gradients uninitialised or hangs.
        TorchRuntime.EnsureFullOpenMpTeams(_logger);
        _vae.train();
        try
        {
            using var scope = NewDisposeScope();
            var x = images.to(_vae.DType, _vae.Device);
            var loss = Loss();
            double lr = _core.Apply(loss, recompute: Loss);
            float value = loss.item<float>();
            _logger.LogDebug("Autoencoder step {Step}: loss {Loss:F5}, lr {LearningRate:G4}", StepCount, value, lr);
            return value;

            // The step's loss; every call draws the same values (a refused step is recomputed to diagnose it).
            Tensor Loss()
            {
                using var generator = new Generator(TrainerCore.StepSeed(_options.Seed, StepCount));
                using var posterior = _vae.EncodeForTraining(x);
                Tensor z = posterior.Mean;
                if (_options.SampleLatents)
                {
                    var eps = randn(posterior.Mean.shape, ScalarType.Float32, CPU, generator: generator).to(posterior.Mean.dtype, posterior.Mean.device);
                    z = posterior.Mean + posterior.Std * eps;
                }
                var recon = _vae.DecodeForTraining(z).to(ScalarType.Float32);
                var target = x.to(ScalarType.Float32);
                var loss = nn.functional.mse_loss(recon, target);
                if (_options.L1Weight > 0) loss = loss + _options.L1Weight * nn.functional.l1_loss(recon, target);
                if (_options.KlWeight > 0)
                {
                    var mean = posterior.Mean.to(ScalarType.Float32);
                    var variance = posterior.Std.to(ScalarType.Float32).square();
                    var kl = 0.5 * (mean.square() + variance - 1 - variance.log()).mean();
                    loss = loss + _options.KlWeight * kl;
                }
                return loss;
            }
        }
        finally
        {
            _vae.eval();
        }
    }

    /// <summary>Trains until <see cref="StepCount"/> reaches <paramref name="steps"/>; tensors <paramref name="batches"/> creates are released after each step.</summary>
    public void Train(int steps, Func<int, Tensor> batches, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(batches);
        var clock = Stopwatch.StartNew();
        while (StepCount < steps)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int step = StepCount;
            float loss;
            using (NewDisposeScope()) loss = Step(batches(step));
            progress?.Report(new TrainingProgress(StepCount, steps, loss, _core.LearningRateAt(step), clock.Elapsed));
        }
        _logger.LogInformation("Autoencoder trained to step {Step} in {Elapsed}", StepCount, clock.Elapsed);
    }

    /// <summary>Saves weights, optimizer state and step (see <see cref="DiffusionTrainer.SaveCheckpoint"/>).</summary>
    public void SaveCheckpoint(string dir) => _core.SaveCheckpoint(dir, new JsonObject { ["seed"] = _options.Seed });

    /// <summary>Restores a checkpoint written by <see cref="SaveCheckpoint"/> for the same model.</summary>
    public void LoadCheckpoint(string dir)
    {
        ArgumentException.ThrowIfNullOrEmpty(dir);
        _core.LoadCheckpoint(dir);
    }

    /// <summary>Releases the optimizer state (not the model).</summary>
    public void Dispose() => _core.Dispose();
}
