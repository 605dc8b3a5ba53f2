using LatentDiffusion.Runtime;
using LatentDiffusion.Training;
using Microsoft.Extensions.Logging;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Training;

/// <summary>
/// When OpenMP starts fewer threads than libtorch's convolution kernels (oneDNN) plan for, the backward pass leaves parts
/// of the weight and bias gradients uninitialised (garbage or NaN that changes from run to run) or waits forever at a
/// barrier. Three OpenMP settings do that: dynamic team sizes, a thread limit below the thread count, and no active
/// parallel levels. Each case runs <see cref="OpenMpTeamProbe"/> in a <see cref="FreshProcess"/> with the setting in its
/// environment (OpenMP reads it when it loads): a training step on a fresh thread twice, then convolution gradients
/// against float64. Without <see cref="TorchRuntime.EnsureFullOpenMpTeams(Microsoft.Extensions.Logging.ILogger)"/> the
/// probe hangs or its gradients are garbage (relative errors of 1e34 and infinite ones, measured).
/// </summary>
public class OpenMpTeamTests
{
    private static readonly string[] Settings = ["OMP_DYNAMIC", "OMP_THREAD_LIMIT", "OMP_MAX_ACTIVE_LEVELS", "OMP_NUM_THREADS"];

    [TestCase("OMP_DYNAMIC", "true", null)]
    [TestCase("OMP_THREAD_LIMIT", "1", null)]
    [TestCase("OMP_MAX_ACTIVE_LEVELS", "0", null)]
    [TestCase(null, null, null)]
    // oneDNN's kernels for CPUs with AVX but not AVX2: there a smaller team gives NaN gradients instead of a hang, the
    // failure issue 11 reported ("unet.conv_in.weight (NaN)" onward, the loss NaN from the second step).
    [TestCase("OMP_DYNAMIC", "true", "AVX")]
    [TestCase(null, null, "AVX")]
    public void GradientsAreRightAndTrainingFinishesWhateverOpenMpIsTold(string? setting, string? value, string? isa)
    {
        // Two threads at least, so that a team can come out smaller than planned; none of the other settings.
        var environment = Settings.ToDictionary(s => s, _ => (string?)null);
        environment["OMP_NUM_THREADS"] = "2";
        environment["ONEDNN_MAX_CPU_ISA"] = isa;
        if (setting is not null) environment[setting] = value;

        string stdout = FreshProcess.Run(global::StartupHook.OpenMpProbeVariable, "1", environment, TimeSpan.FromMinutes(3));

        Assert.That(stdout, Does.Contain("convolutions: right").And.Contain("training: right"), stdout);
        // The trainer warns, on its first step, exactly when the setting would shrink a team.
        Assert.That(stdout, Does.Contain(setting is null ? "trainer warned: nothing" : "trainer warned: OpenMP would start fewer threads"), stdout);
    }
}

/// <summary>What <see cref="OpenMpTeamTests"/> runs in its fresh process (see <see cref="global::StartupHook"/>).</summary>
internal static class OpenMpTeamProbe
{
    /// <summary>Prints what it found; returns the process exit code (0: all right).</summary>
    public static int Run()
    {
        try
        {
            // Loads the native runtime the library's way (the test models below touch TorchSharp first); sets nothing.
            TorchRuntime.EnsureInitialized();

            // 1. One training step, twice, each on a fresh thread (OpenMP's settings are per thread, from the environment),
            // before anything else here has touched the settings: what protects it is the trainer's own call.
            var log = new ListLogger();
            var first = StepGradients(log);
            var second = StepGradients(log);
            Console.WriteLine("trainer warned: " + (log.Entries.FirstOrDefault(e => e.Level == LogLevel.Warning).Message ?? "nothing"));
            var wrong = first.Keys.Where(k => !float.IsFinite(first[k].Max(Math.Abs)) || !Close(first[k], second[k])).ToList();
            Console.WriteLine($"training: {(wrong.Count == 0 ? "right" : "WRONG: " + string.Join(", ", wrong.Take(5)))}");

            // 2. On this thread, the guard itself; then the tiny training UNet's convolutions (3x3, 3x3 stride 2, 1x1, the
            // 4-channel input), with their gradients, against the same in float64 (libtorch's own kernels, not oneDNN's).
            string? changed = TorchRuntime.EnsureFullOpenMpTeams();
            Console.WriteLine("changed: " + (changed ?? "nothing"));
            double worst = 0;
            using var g = new Generator(3);
            foreach (var (ic, oc, size, k, stride) in new[] { (4, 32, 16, 3, 1), (32, 32, 16, 3, 1), (32, 32, 16, 3, 2), (64, 64, 8, 3, 1), (96, 32, 16, 1, 1) })
                worst = Math.Max(worst, ConvolutionError(g, ic, oc, size, k, stride));
            Console.WriteLine($"convolutions: {(worst < 1e-4 ? "right" : "WRONG")} (largest relative error {worst:E2})");
            return worst < 1e-4 && wrong.Count == 0 ? 0 : 4;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine(e);
            return 3;
        }
    }

    private static double ConvolutionError(Generator g, int ic, int oc, int size, int k, long stride)
    {
        using var scope = NewDisposeScope();
        var x = randn([4, ic, size, size], generator: g);
        var w = randn([oc, ic, k, k], generator: g) * 0.1;
        var b = randn([oc], generator: g) * 0.1;
        var upstream = randn([4, oc, (size + 2 * (k / 2) - k) / stride + 1, (size + 2 * (k / 2) - k) / stride + 1], generator: g);
        var (y32, gx32, gw32, gb32) = Gradients(x, w, b, upstream, k, stride);
        var (y64, gx64, gw64, gb64) = Gradients(x.to(ScalarType.Float64), w.to(ScalarType.Float64), b.to(ScalarType.Float64), upstream.to(ScalarType.Float64), k, stride);
        double worst = 0;
        foreach (var (a, r) in new[] { (y32, y64), (gx32, gx64), (gw32, gw64), (gb32, gb64) })
        {
            double error = (a.to(ScalarType.Float64) - r).abs().max().item<double>() / r.abs().max().item<double>();
            worst = Math.Max(worst, double.IsNaN(error) ? double.PositiveInfinity : error);
        }
        return worst;
    }

    private static (Tensor Y, Tensor Gx, Tensor Gw, Tensor Gb) Gradients(Tensor x, Tensor w, Tensor b, Tensor upstream, int k, long stride)
    {
        var xs = x.detach().requires_grad_(true);
        var ws = w.detach().requires_grad_(true);
        var bs = b.detach().requires_grad_(true);
        var y = nn.functional.conv2d(xs, ws, bs, strides: [stride, stride], padding: [k / 2, k / 2]);
        (y * upstream).sum().backward();
        return (y.detach(), xs.grad!, ws.grad!, bs.grad!);
    }

    private static Dictionary<string, float[]> StepGradients(ListLogger log)
    {
        Dictionary<string, float[]>? result = null;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var m = new TinyTrainingModels();
                using var trainer = new DiffusionTrainer(m.Tokenizer, m.TextEncoder, m.UNet, m.Vae, m.Scheduler,
                    new DiffusionTrainingOptions { MaxGradNorm = 0, CaptionDropout = 0 }, log);
                var (images, captions) = TinyTrainingModels.FixedBatch(4);
                using var _ = images;
                trainer.Step(images, captions);
                result = m.UNet.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.data<float>().ToArray());
            }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        if (failure is not null) throw new InvalidOperationException("The training step failed: " + failure.Message, failure);
        return result!;
    }

    private static bool Close(float[] a, float[] b)
    {
        float scale = Math.Max(1e-6f, a.Max(Math.Abs));
        for (int i = 0; i < a.Length; i++)
            if (!(Math.Abs(a[i] - b[i]) <= 1e-4f * scale)) return false;
        return true;
    }
}
