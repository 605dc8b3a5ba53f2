using NUnit.Framework;

namespace LatentDiffusion.Tests;

/// <summary>What a missing fixtures folder does to a parity test: skipped on a plain clone, failed under CI or when named.</summary>
public class FixtureLocationTests
{
    private static readonly string Existing = Path.GetTempPath();
    private static readonly string Absent = Path.Combine(Path.GetTempPath(), "ld-no-fixtures-" + Guid.NewGuid().ToString("N"));

    [TestCase(null)]
    [TestCase("")]
    [TestCase("false")]
    [TestCase("0")]
    public void APlainCloneWithoutFixturesSkipsTheTestWithTheReason(string? ci)
    {
        var location = FixtureLocation.Decide(null, ci, null);
        Assert.That(location.Root, Is.Null);
        Assert.That(location.MissingIsFailure, Is.False);
        var e = Assert.Throws<IgnoreException>(() => location.RootOrEndTheTest());
        Assert.That(e!.Message, Does.Contain("../shared/fixtures").And.Contain(Fixtures.Variable).And.Contain("README").And.Contain("CI=true"));
    }

    [TestCase("true")]
    [TestCase("True")]
    [TestCase("1")]
    public void UnderCiMissingFixturesFail(string ci)
    {
        var location = FixtureLocation.Decide(null, ci, null);
        Assert.That(location.MissingIsFailure, Is.True);
        var e = Assert.Throws<AssertionException>(() => location.RootOrEndTheTest());
        Assert.That(e!.Message, Does.Contain("not found").And.Contain("CI=" + ci));
    }

    [TestCase(null)]
    [TestCase("true")]
    public void ANamedFolderThatDoesNotExistFailsEvenOutsideCi(string? ci)
    {
        var location = FixtureLocation.Decide(Absent, ci, Existing);
        Assert.That(location.Root, Is.Null, "the named folder wins over the one beside the repository");
        var e = Assert.Throws<AssertionException>(() => location.RootOrEndTheTest());
        Assert.That(e!.Message, Does.Contain(Absent).And.Contain(Fixtures.Variable));
    }

    [Test]
    public void ANamedFolderThatExistsIsUsed()
        => Assert.That(FixtureLocation.Decide(Existing, null, null).RootOrEndTheTest(), Is.EqualTo(Existing));

    [TestCase(null)]
    [TestCase("true")]
    public void TheFolderBesideTheRepositoryIsUsed(string? ci)
        => Assert.That(FixtureLocation.Decide(null, ci, Existing).RootOrEndTheTest(), Is.EqualTo(Existing));

    [Test]
    public void ACaseSourceWithoutFixturesIsOneIgnoredCaseWithTheReason()
    {
        var location = FixtureLocation.Decide(null, null, null);
        var cases = location.CasesOrSkip(() => throw new InvalidOperationException("must not read the fixtures"), "").ToList();
        Assert.That(cases, Has.Count.EqualTo(1));
        Assert.That(cases[0].RunState, Is.EqualTo(NUnit.Framework.Interfaces.RunState.Ignored));
        Assert.That(cases[0].Properties.Get(NUnit.Framework.Internal.PropertyNames.SkipReason), Is.EqualTo(location.Problem));
        Assert.That(cases[0].Arguments, Is.EqualTo(new object[] { "" }));
    }

    [TestCase("true", null)]
    [TestCase(null, "beside")]
    public void ACaseSourceReadsTheFixturesWhenTheyAreHereOrRequired(string? ci, string? beside)
    {
        var read = new[] { new TestCaseData("sd15/x") };
        var location = FixtureLocation.Decide(null, ci, beside is null ? null : Existing);
        Assert.That(location.CasesOrSkip(() => read, ""), Is.SameAs(read));
    }
}
