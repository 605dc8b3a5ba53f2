using LatentDiffusion.Cli;
using LatentDiffusion.Schedulers;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// Repeated timesteps are legal: Karras sigmas on the built-in model's zero-terminal-SNR, "trailing" schedule map several
/// of the largest sigmas to t = 999. A text-to-image run starts at index 0 and walks its own list.
/// </summary>
[TestFixture]
public sealed class SchedulerRepeatedTimestepTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var name in SchedulerRegistry.Names)
            foreach (int steps in new[] { 10, 20, 25, 30, 50 })
                yield return new TestCaseData(name, steps).SetName($"BuiltInModelConfig({name},{steps})");
    }

    /// <summary>
    /// Every registered scheduler on the built-in model's scheduler config: no exception, a finite result, one model call
    /// per timestep and the class's number of timesteps, and the same result as a run told explicitly to begin at 0.
    /// </summary>
    [TestCaseSource(nameof(Cases))]
    public void EverySchedulerRunsTheBuiltInModelConfig(string name, int steps)
    {
        using var scope = NewDisposeScope();
        var scheduler = SchedulerRegistry.Create(name, SchedulerTestKit.BuiltInModelConfig());
        using var g1 = new torch.Generator(8, CPU);
        using var run = scheduler.Start(steps, g1);
        var start = SchedulerTestKit.Latents([2, 4, 8, 12], 8) * run.InitNoiseSigma;
        var (result, calls) = SchedulerTestKit.Denoise(run, start, run.Timesteps);
        Assert.That(SchedulerTestKit.AllFinite(result), Is.True, "finite result");
        Assert.That(calls, Is.EqualTo(run.Timesteps.Count));
        // The two-evaluation samplers (the reference's scheduler.order = 2) evaluate the model twice per sigma interval,
        // except on the last one, which ends at σ = 0 and is a single Euler step: 2n − 1 timesteps. Heun and KDPM2 (a)
        // as the reference; DPM++ SDE as the reference's DPMSolverSDEScheduler and k-diffusion's sample_dpmpp_sde;
        // DPM++ 2S a as k-diffusion's sample_dpmpp_2s_ancestral (σ_down = σ_next²/σ > 0 before the last step).
        bool twoEvaluations = name is "heun" or "kdpm2" or "kdpm2-a" or "dpm++sde" or "dpm++sde-karras" or "dpm++2s-a";
        Assert.That(run.Order, Is.EqualTo(twoEvaluations ? 2 : 1), "order");
        int expectedCount = name switch
        {
            _ when twoEvaluations => 2 * steps - 1,
            // PNDM without skip_prk_steps: 12 Runge-Kutta evaluations on the last three steps, then PLMS on the rest.
            "pndm" => steps + 9,
            _ => steps,
        };
        Assert.That(run.Timesteps.Count, Is.EqualTo(expectedCount), "timesteps");

        using var g2 = new torch.Generator(8, CPU);
        using var explicitRun = scheduler.Start(steps, g2);
        explicitRun.SetBeginIndex(0);
        var (expected, _) = SchedulerTestKit.Denoise(explicitRun, start, explicitRun.Timesteps);
        AssertTensor.MaxAbsClose(result, expected, 0, "same as begin index 0");
    }

    /// <summary>The case the issue reports: 25 Karras steps on this schedule give fewer distinct timesteps than steps.</summary>
    [TestCase("dpm++2m-karras", 25)]
    [TestCase("dpm++2m-karras", 30)]
    [TestCase("dpm++2m-sde-karras", 25)]
    public void KarrasSigmasOnAZeroSnrScheduleRepeatTheFirstTimestep(string name, int steps)
    {
        using var run = SchedulerRegistry.Create(name, SchedulerTestKit.BuiltInModelConfig()).Start(steps);
        Assert.That(run.Timesteps[1], Is.EqualTo(run.Timesteps[0]), "the first timestep repeats");
        Assert.That(run.Timesteps.Distinct().Count(), Is.LessThan(steps));
        Assert.That(run.Sigmas!.Distinct().Count(), Is.EqualTo(steps + 1), "but the sigmas are distinct");
    }

    /// <summary>The command: <c>ldm generate --scheduler dpm++2m-karras --steps 25</c> on the built-in model.</summary>
    [TestCase("dpm++2m-karras", 25)]
    [TestCase("dpm++2m-sde-karras", 30)]
    public async Task TheCommandLineRunsKarrasSigmasOnTheBuiltInModel(string scheduler, int steps)
    {
        string dir = Directory.CreateTempSubdirectory("ldm-karras-").FullName;
        try
        {
            string output = Path.Combine(dir, "out.png");
            var stderr = new StringWriter();
            int code = await LdmCommand.RunAsync(["generate", "--prompt", "a red circle on a blue background", "--seed", "3",
                "--scheduler", scheduler, "--steps", steps.ToString(), "--output", output], new StringWriter(), stderr);
            Assert.That(code, Is.EqualTo(0), stderr.ToString());
            Assert.That(File.Exists(output), Is.True);
        }
        finally { Directory.Delete(dir, true); }
    }
}
