using NUnit.Framework;

namespace LatentDiffusion.Tests;

/// <summary>The decision <see cref="Fixtures"/> makes: where the fixtures are, or why not and whether that fails the test.</summary>
/// <param name="Root">The fixtures folder, or null when there is none.</param>
/// <param name="MissingIsFailure">Without a folder: true fails the test (CI, or LATENTDIFFUSION_FIXTURES set), false skips it (Ignored).</param>
/// <param name="Problem">Why there is no folder and where the fixtures come from; null when there is one.</param>
public sealed record FixtureLocation(string? Root, bool MissingIsFailure, string? Problem)
{
    /// <summary>What the fixtures are, for every message about their absence.</summary>
    public const string WhatTheyAre =
        "The reference fixtures (tiny models in the public files' layouts and the reference diffusers pipeline's outputs, " +
        "made outside this repository; see README, 'Reference fixtures') are needed only by the parity tests.";

    /// <summary>
    /// Decides from the LATENTDIFFUSION_FIXTURES and CI variables and the folder found beside the repository
    /// (<paramref name="besideRepository"/>, null when none). A named folder must exist; under CI the fixtures must be there.
    /// </summary>
    public static FixtureLocation Decide(string? fixturesVariable, string? ciVariable, string? besideRepository)
    {
        if (!string.IsNullOrEmpty(fixturesVariable))
            return Directory.Exists(fixturesVariable)
                ? new FixtureLocation(fixturesVariable, true, null)
                : new FixtureLocation(null, true, $"{Fixtures.Variable}='{fixturesVariable}' does not exist. {WhatTheyAre}");
        if (besideRepository is not null) return new FixtureLocation(besideRepository, true, null);
        return IsCi(ciVariable)
            ? new FixtureLocation(null, true,
                $"The reference fixtures were not found: expected ../shared/fixtures beside the repository root, or {Fixtures.Variable}. " +
                $"CI={ciVariable} makes that a failure. {WhatTheyAre}")
            : new FixtureLocation(null, false,
                $"Reference fixtures not found (no ../shared/fixtures beside the repository root, no {Fixtures.Variable}), so the parity tests " +
                $"that compare against them are skipped. {WhatTheyAre} Set CI=true or {Fixtures.Variable} to make their absence a failure.");
    }

    /// <summary>
    /// The folder, or the end of the test: <see cref="IgnoreException"/> (reported as skipped, with the reason, and counted
    /// in the run's "Skipped"; an Inconclusive result is listed as skipped but left out of the totals) when the fixtures may be
    /// missing, <see cref="AssertionException"/> (a failure) when they must be there. Thrown, not recorded through Assert, so a
    /// test can check which.
    /// </summary>
    public string RootOrEndTheTest()
        => Root ?? throw (MissingIsFailure ? new AssertionException(Problem ?? "") : new IgnoreException(Problem ?? ""));

    /// <summary>
    /// Test cases read from the fixtures: <paramref name="read"/> when they are here or required (a missing folder then
    /// fails while the cases are read); otherwise one ignored case named "(reference fixtures missing)" with
    /// <see cref="Problem"/> as its reason, built from <paramref name="placeholderArguments"/>.
    /// </summary>
    public IEnumerable<TestCaseData> CasesOrSkip(Func<IEnumerable<TestCaseData>> read, params object?[] placeholderArguments)
        => Root is not null || MissingIsFailure
            ? read()
            : [new TestCaseData(placeholderArguments).SetName("{m}(reference fixtures missing)").Ignore(Problem ?? "")];

    /// <summary>CI systems set CI to true (or 1, yes); empty, 0 and false mean not CI.</summary>
    public static bool IsCi(string? value)
        => !string.IsNullOrWhiteSpace(value) && !value.Trim().Equals("false", StringComparison.OrdinalIgnoreCase) && value.Trim() != "0";
}
