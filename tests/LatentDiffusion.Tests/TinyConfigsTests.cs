using System.Text.Json.Nodes;
using NUnit.Framework;

namespace LatentDiffusion.Tests;

/// <summary>The config copies that let tests run without the fixtures are still the fixtures' files (parity: needs them).</summary>
public class TinyConfigsTests
{
    public static IEnumerable<string> Paths => TinyConfigs.ByFixturePath.Keys;

    [TestCaseSource(nameof(Paths))]
    public void TheCopyEqualsTheFixtureFile(string path)
    {
        var file = JsonNode.Parse(File.ReadAllText(Fixtures.PathOf(path.Split('/'))))!.AsObject();
        file.Remove("_diffusers_version");
        Assert.That(JsonNode.DeepEquals(JsonNode.Parse(TinyConfigs.ByFixturePath[path]), file), Is.True, path);
    }
}
