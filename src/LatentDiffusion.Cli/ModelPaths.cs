namespace LatentDiffusion.Cli;

/// <summary>Where the tokenizer of a model lives.</summary>
internal static class ModelPaths
{
    public static string TokenizerDirectory(string model, string? config)
    {
        if (Directory.Exists(model)) return Path.Combine(model, "tokenizer");
        if (config is not null) return Path.Combine(config, "tokenizer");
        if (File.Exists(model))
            throw new ArgumentException($"'{model}' is a single-file checkpoint, which carries no tokenizer: pass --config with a diffusers folder of the same family.");
        throw new FileNotFoundException($"Model not found: '{model}'.", model);
    }
}
