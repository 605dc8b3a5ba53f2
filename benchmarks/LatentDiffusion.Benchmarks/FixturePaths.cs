namespace LatentDiffusion.Benchmarks;

/// <summary>Finds ../shared/fixtures beside the repository (or LATENTDIFFUSION_FIXTURES), also from BenchmarkDotNet's child processes.</summary>
internal static class FixturePaths
{
    public static string Root
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("LATENTDIFFUSION_FIXTURES");
            if (!string.IsNullOrEmpty(env)) return env;
            foreach (var start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
                for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                    if (File.Exists(Path.Combine(dir.FullName, "LatentDiffusion.sln")) && Directory.Exists(Path.Combine(dir.FullName, "..", "shared", "fixtures")))
                        return Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", "fixtures"));
            throw new DirectoryNotFoundException("../shared/fixtures not found; set LATENTDIFFUSION_FIXTURES.");
        }
    }

    public static string Model(string name) => Path.Combine(Root, name);
}
