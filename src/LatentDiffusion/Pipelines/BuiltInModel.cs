namespace LatentDiffusion.Pipelines;

/// <summary>
/// The small text-to-image model trained in this project on captioned pictures of coloured shapes (circles, squares,
/// triangles and diamonds in eight colours, two sizes, five positions, on a coloured background; 128×128). It ships
/// inside the package (15 MB, copied next to your app as <c>models/shapes</c>), so an app can draw a picture offline
/// with no download. Its model card (<c>models/shapes/README.md</c>) lists its vocabulary and measured accuracy.
/// </summary>
public static class BuiltInModel
{
    /// <summary>Where the model's diffusers folder is: <c>models/shapes</c> beside the app's assemblies.</summary>
    public static string Directory => Path.Combine(AppContext.BaseDirectory, "models", "shapes");

    /// <summary>Loads the built-in model as a pipeline (CPU, float32 unless <paramref name="options"/> says otherwise).</summary>
    /// <exception cref="DirectoryNotFoundException">The model folder is not beside the app (for example a publish step left it out).</exception>
    public static Task<StableDiffusionPipeline> LoadAsync(PipelineOptions? options = null, CancellationToken cancellationToken = default)
    {
        if (!System.IO.Directory.Exists(Directory))
            throw new DirectoryNotFoundException($"The built-in model is missing from '{Directory}': it is copied there by the LatentDiffusion package; check that your build or publish step keeps content files.");
        return StableDiffusionPipeline.LoadAsync(Directory, options, cancellationToken);
    }
}
