using BenchmarkDotNet.Attributes;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Benchmarks;

/// <summary>
/// Scheduler overhead per name at Stable Diffusion's latent size (1×4×64×64 float32, CPU): the set-up cost of a
/// 30-step run (<see cref="Start"/>) and the cost of one denoising step without the model (<see cref="Step"/>:
/// ScaleModelInput + Step). Run: <c>dotnet run -c Release --project benchmarks/LatentDiffusion.Benchmarks -- --filter '*Scheduler*'</c>.
/// </summary>
[MemoryDiagnoser]
public class SchedulerBenchmarks
{
    private IScheduler _scheduler = null!;
    private torch.Generator _generator = null!;
    private ISchedulerRun? _run;
    private int _index;
    private Tensor _sample = null!;
    private Tensor _modelOutput = null!;

    /// <summary>The scheduler names of <see cref="SchedulerRegistry"/>.</summary>
    public static IEnumerable<string> Names => SchedulerRegistry.Names;

    /// <summary>The scheduler under test.</summary>
    [ParamsSource(nameof(Names))]
    public string Name { get; set; } = "euler";

    /// <summary>Builds the scheduler from an SD 1.5-style config and fixed tensors.</summary>
    [GlobalSetup]
    public void Setup()
    {
        // BenchmarkDotNet runs each job in its own process, whose entry point is not Program.Main.
        LatentDiffusion.Runtime.TorchRuntime.EnsureInitialized();
        var config = SchedulerConfig.Parse("""
            {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1}
            """, "benchmark");
        _scheduler = SchedulerRegistry.Create(Name, config);
        _generator = new torch.Generator(0, CPU);
        _sample = torch.randn([1, 4, 64, 64], generator: _generator);
        _modelOutput = torch.randn([1, 4, 64, 64], generator: _generator);
    }

    /// <summary>Releases the tensors.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _run?.Dispose();
        _sample.Dispose();
        _modelOutput.Dispose();
        _generator.Dispose();
    }

    /// <summary>Set-up of one 30-step generation (the reference's set_timesteps).</summary>
    [Benchmark]
    public int Start()
    {
        using var run = _scheduler.Start(30, _generator);
        return run.Timesteps.Count;
    }

    /// <summary>
    /// One step of a long run (500 steps, 50 for LCM), restarted when it ends; the sample is
    /// not fed back so every step sees the same data.
    /// </summary>
    [Benchmark]
    public void Step()
    {
        if (_run is null || _index >= _run.Timesteps.Count)
        {
            _run?.Dispose();
            _run = _scheduler.Start(Name == "lcm" ? 50 : 500, _generator);
            _index = 0;
        }
        double t = _run.Timesteps[_index++];
        using var scope = torch.NewDisposeScope();
        var input = _run.ScaleModelInput(_sample, t);
        _ = input;
        _run.Step(_modelOutput, t, _sample);
    }
}
