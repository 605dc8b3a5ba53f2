using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Abstractions;

/// <summary>
/// A noise scheduler (sampler): the immutable, thread-safe description built from a <c>scheduler_config.json</c>.
/// All per-generation state lives in the <see cref="ISchedulerRun"/> that <see cref="Start"/> returns, so one scheduler
/// can drive any number of concurrent generations.
/// </summary>
public interface IScheduler
{
    /// <summary>The reference class this reproduces, e.g. <c>"DPMSolverMultistepScheduler"</c>.</summary>
    string ClassName { get; }

    /// <summary>The effective config: every key of the class, defaults filled in, plus <c>_class_name</c>.</summary>
    JsonConfig Config { get; }

    /// <summary>The number of diffusion steps the model was trained with (<c>num_train_timesteps</c>).</summary>
    int NumTrainTimesteps { get; }

    /// <summary>
    /// Begins one generation of <paramref name="inferenceSteps"/> steps (the reference's <c>set_timesteps</c>).
    /// Stochastic schedulers draw their noise from <paramref name="generator"/> (CPU, float32), in the reference's order.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="inferenceSteps"/> is below 1 or above <see cref="NumTrainTimesteps"/>.</exception>
    ISchedulerRun Start(int inferenceSteps, torch.Generator? generator = null);

    /// <summary>
    /// The velocity target <c>sqrt(ᾱ_t)·noise − sqrt(1−ᾱ_t)·sample</c> at integer training timesteps (one per batch item),
    /// as the reference's <c>get_velocity</c>; used to train v-prediction models.
    /// </summary>
    Tensor GetVelocity(Tensor sample, Tensor noise, Tensor timesteps);
}

/// <summary>
/// One generation's scheduler state (step index, multistep history, the generator). Not thread-safe: one run per
/// generation. Disposing releases the history tensors it holds.
/// </summary>
public interface ISchedulerRun : IDisposable
{
    /// <summary>Exactly the reference's <c>scheduler.timesteps</c>, in order (the model is called once per entry).</summary>
    IReadOnlyList<double> Timesteps { get; }

    /// <summary>The reference's <c>scheduler.sigmas</c> (float32 values) for schedulers that have them; otherwise null.</summary>
    IReadOnlyList<double>? Sigmas { get; }

    /// <summary>The standard deviation of the initial noise: multiply unit Gaussian noise by this.</summary>
    double InitNoiseSigma { get; }

    /// <summary>The reference's <c>scheduler.order</c> (2 for Heun and KDPM2, whose timesteps come in pairs; 1 otherwise).</summary>
    int Order { get; }

    /// <summary>Starts the run at <see cref="Timesteps"/>[<paramref name="beginIndex"/>], as the reference's <c>set_begin_index</c> (img2img).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The index is outside the timesteps.</exception>
    void SetBeginIndex(int beginIndex);

    /// <summary>Scales the denoiser input at <paramref name="timestep"/> (a new tensor, or <paramref name="sample"/> itself for schedulers that do not scale).</summary>
    Tensor ScaleModelInput(Tensor sample, double timestep);

    /// <summary>Advances the sample by one entry of <see cref="Timesteps"/>; returns the new sample (a new tensor the caller owns).</summary>
    Tensor Step(Tensor modelOutput, double timestep, Tensor sample);

    /// <summary>Forward diffusion: noises <paramref name="original"/> to the level of <paramref name="timestep"/>, as the reference's <c>add_noise</c>.</summary>
    Tensor AddNoise(Tensor original, Tensor noise, double timestep);
}
