using System.Text.Json;
using System.Text.Json.Nodes;

namespace LatentDiffusion.Loading;

/// <summary>Writing component configs the way diffusers and transformers write them.</summary>
public static class ConfigJson
{
    /// <summary>The <c>_diffusers_version</c> written into the configs this library saves (the format they follow).</summary>
    public const string DiffusersVersion = "0.31.0";

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Writes <paramref name="config"/> to <paramref name="path"/> as indented UTF-8 JSON (keys in the object's order).</summary>
    public static void Write(string path, JsonNode config)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(config);
        File.WriteAllText(path, config.ToJsonString(Indented) + "\n", new System.Text.UTF8Encoding(false));
    }

    /// <summary>Parses <paramref name="config"/> into a <see cref="JsonConfig"/> (to build a model from a config made in code).</summary>
    public static JsonConfig ToJsonConfig(JsonNode config, string source = "(in code)") => JsonConfig.Parse(config.ToJsonString(), source);
}
