namespace LatentDiffusion.Cli;

/// <summary>
/// The small text-to-image model trained in this repository on captioned pictures of coloured shapes (models/shapes,
/// see its model card), shipped with the tool and used when no --model is given.
/// </summary>
internal static class BuiltInModel
{
    public static string Directory => Pipelines.BuiltInModel.Directory;

    /// <summary>The model path to use: the one given, or the built-in model.</summary>
    public static string Resolve(string? given)
    {
        if (!string.IsNullOrEmpty(given)) return given;
        if (!System.IO.Directory.Exists(Directory))
            throw new DirectoryNotFoundException($"No --model given and the built-in model is missing from '{Directory}'.");
        return Directory;
    }
}
