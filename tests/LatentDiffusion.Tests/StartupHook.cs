using LatentDiffusion.Formats;
using LatentDiffusion.Runtime;
using LatentDiffusion.Schedulers;

/// <summary>
/// A .NET startup hook for the fresh-process tests (<c>FreshProcess</c>): when this assembly is started as a program with
/// <c>DOTNET_STARTUP_HOOKS</c> naming it and <see cref="ProbeVariable"/> set, it uses one scheduler entry point before
/// anything else has touched TorchSharp (<c>SchedulerRuntimeInitTests</c>); with <see cref="OpenMpProbeVariable"/> set,
/// it runs <c>OpenMpTeamProbe</c>. It prints what it saw and exits. Without either variable it does nothing.
/// </summary>
internal static class StartupHook
{
    /// <summary>The environment variable that names the entry point to probe.</summary>
    public const string ProbeVariable = "LATENTDIFFUSION_TEST_SCHEDULER_PROBE";

    /// <summary>The environment variable that asks for the OpenMP team probe (<c>OpenMpTeamTests</c>).</summary>
    public const string OpenMpProbeVariable = "LATENTDIFFUSION_TEST_OPENMP_PROBE";

    /// <summary>Called by the runtime before Main.</summary>
    public static void Initialize()
    {
        if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable(OpenMpProbeVariable)))
            Environment.Exit(LatentDiffusion.Tests.Training.OpenMpTeamProbe.Run());
        string? probe = Environment.GetEnvironmentVariable(ProbeVariable);
        if (string.IsNullOrEmpty(probe)) return;
        try
        {
            bool before = TorchRuntime.IsInitialized;
            var scheduler = probe switch
            {
                "create" => SchedulerRegistry.Create("dpm++2m", null),
                "fromconfig" => SchedulerRegistry.FromConfig(JsonConfig.Parse("""{"_class_name": "DDIMScheduler"}""", "probe")),
                "constructor" => new EulerDiscreteScheduler(),
                _ => throw new ArgumentException($"unknown probe '{probe}'"),
            };
            using var run = scheduler.Start(4);
            using var x = TorchSharp.torch.ones(1, 4, 2, 3);
            bool finite = true;
            var sample = x.clone();
            foreach (var t in run.Timesteps)
            {
                var next = run.Step(x * 0.1f, t, sample);
                sample.Dispose();
                sample = next;
            }
            finite = sample.isfinite().all().item<bool>();
            Console.WriteLine($"before={before} initialised={TorchRuntime.IsInitialized} finite={finite}");
            Console.Out.Flush();
            Environment.Exit(0);
        }
        catch (Exception e)
        {
            Console.Error.WriteLine(e.ToString());
            Console.Error.Flush();
            Environment.Exit(3);
        }
    }
}
