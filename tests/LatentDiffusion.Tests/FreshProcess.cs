using System.Diagnostics;
using NUnit.Framework;

namespace LatentDiffusion.Tests;

/// <summary>
/// Starts this test assembly again as a program whose startup hook (<see cref="global::StartupHook"/>) runs one probe and
/// exits: for what needs a process in which nothing has touched TorchSharp yet, or an environment that native libraries
/// read when they load.
/// </summary>
internal static class FreshProcess
{
    /// <summary>The probe's standard output, once it has exited with 0 within <paramref name="limit"/> (asserted).</summary>
    /// <param name="probeVariable">The environment variable the startup hook dispatches on.</param>
    /// <param name="probe">Its value: which probe.</param>
    /// <param name="environment">More variables for the probe process (a null value removes one the test process has).</param>
    /// <param name="limit">How long the probe may run before it counts as hung and is killed.</param>
    public static string Run(string probeVariable, string probe, IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? limit = null)
    {
        string assembly = typeof(FreshProcess).Assembly.Location;
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";
        var start = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(assembly)!,
        };
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add(assembly);
        start.Environment["DOTNET_STARTUP_HOOKS"] = assembly;
        start.Environment[probeVariable] = probe;
        foreach (var (name, value) in environment ?? new Dictionary<string, string?>())
        {
            if (value is null) start.Environment.Remove(name);
            else start.Environment[name] = value;
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        var wait = limit ?? TimeSpan.FromMinutes(3);
        if (!process.WaitForExit(wait))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Assert.Fail($"The probe '{probe}' did not finish within {wait.TotalSeconds} s (killed). stdout so far: {stdout.Result}");
        }
        Assert.That(process.ExitCode, Is.EqualTo(0), $"probe '{probe}' stdout: {stdout.Result}\nstderr: {stderr.Result}");
        return stdout.Result;
    }
}
