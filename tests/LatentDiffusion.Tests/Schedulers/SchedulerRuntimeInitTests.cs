using System.Diagnostics;
using System.Reflection;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// A scheduler used on its own, first thing in a process, loads the native runtime the library's way
/// (<see cref="Runtime.TorchRuntime.EnsureInitialized"/>). This needs a process in which nothing has touched TorchSharp
/// yet, which this test process is not (its setup initialises the runtime): each case starts this test assembly again
/// as a program whose startup hook (<see cref="global::StartupHook"/>) runs only the probed entry point and exits.
/// </summary>
[TestFixture]
public sealed class SchedulerRuntimeInitTests
{
    [TestCase("create")]
    [TestCase("fromconfig")]
    [TestCase("constructor")]
    public void AnEntryPointUsedFirstInAFreshProcessInitialisesTheRuntime(string probe)
    {
        string assembly = typeof(SchedulerRuntimeInitTests).Assembly.Location;
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
        start.Environment[global::StartupHook.ProbeVariable] = probe;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.That(process.WaitForExit(TimeSpan.FromMinutes(3)), Is.True, "the probe process did not finish");
        Assert.That(process.ExitCode, Is.EqualTo(0), $"stdout: {stdout.Result}\nstderr: {stderr.Result}");
        Assert.That(stdout.Result, Does.Contain("initialised=True").And.Contain("finite=True"));
    }

    /// <summary>
    /// Why three entry points stand for all: every scheduler class the library exposes derives from
    /// <see cref="DiffusionScheduler"/>, whose single constructor (through which every public constructor and the
    /// registry pass) initialises the runtime.
    /// </summary>
    [Test]
    public void EverySchedulerClassPassesThroughTheOneBaseConstructor()
    {
        var library = typeof(DiffusionScheduler).Assembly;
        var schedulers = library.GetTypes().Where(t => typeof(IScheduler).IsAssignableFrom(t) && !t.IsInterface && !t.IsAbstract).ToList();
        Assert.That(schedulers, Is.Not.Empty);
        foreach (var t in schedulers) Assert.That(t.IsSubclassOf(typeof(DiffusionScheduler)), Is.True, t.Name);
        Assert.That(typeof(DiffusionScheduler).GetConstructors(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic), Has.Length.EqualTo(1));
    }
}
