using System.Reflection;
using LatentDiffusion.Abstractions;
using LatentDiffusion.Schedulers;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Schedulers;

/// <summary>
/// A scheduler used on its own, first thing in a process, loads the native runtime the library's way
/// (<see cref="Runtime.TorchRuntime.EnsureInitialized"/>). This needs a process in which nothing has touched TorchSharp
/// yet, which this test process is not (its setup initialises the runtime): each case runs the probed entry point in a
/// <see cref="FreshProcess"/>.
/// </summary>
[TestFixture]
public sealed class SchedulerRuntimeInitTests
{
    [TestCase("create")]
    [TestCase("fromconfig")]
    [TestCase("constructor")]
    public void AnEntryPointUsedFirstInAFreshProcessInitialisesTheRuntime(string probe)
    {
        string stdout = FreshProcess.Run(global::StartupHook.ProbeVariable, probe);
        Assert.That(stdout, Does.Contain("initialised=True").And.Contain("finite=True"));
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
