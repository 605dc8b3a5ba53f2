using NUnit.Framework;

namespace LatentDiffusion.Tests;

/// <summary>Says once, at the start of the run, when the parity tests are skipped for want of the reference fixtures.</summary>
[SetUpFixture]
public sealed class FixturesNotice
{
    [OneTimeSetUp]
    public void SayWhetherTheParityTestsRun()
    {
        if (!Fixtures.Available && !Fixtures.Location.MissingIsFailure)
            TestContext.Progress.WriteLine("Note: " + Fixtures.MissingReason);
    }
}
