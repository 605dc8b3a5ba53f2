using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace LatentDiffusion.Formats;

/// <summary>Writing component configs the way diffusers and transformers write them.</summary>
public static class ConfigJson
{
    /// <summary>The <c>_diffusers_version</c> written into the configs this library saves (the format they follow).</summary>
    public const string DiffusersVersion = "0.31.0";

    /// <summary>
    /// Writes <paramref name="config"/> to <paramref name="path"/> as indented UTF-8 JSON (keys in the object's order).
    /// Numbers set from a <see cref="double"/> or <see cref="float"/> keep a decimal point (<c>1.0</c>, not <c>1</c>), as
    /// Python writes them: transformers validates config field types and refuses an integer where it declares a float.
    /// </summary>
    public static void Write(string path, JsonNode config)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(config);
        File.WriteAllText(path, ToText(config) + "\n", new System.Text.UTF8Encoding(false));
    }

    /// <summary><paramref name="config"/> as indented JSON text, floating-point numbers written with a decimal point.</summary>
    public static string ToText(JsonNode config)
    {
        ArgumentNullException.ThrowIfNull(config);
        using var buffer = new MemoryStream();
        // Relaxed escaping: "dpmsolver++" and "</w>" stay as written (the default encoder escapes them as for HTML).
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            WriteNode(writer, config);
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static void WriteNode(Utf8JsonWriter writer, JsonNode? node)
    {
        switch (node)
        {
            case null:
                writer.WriteNullValue();
                break;
            case JsonObject obj:
                writer.WriteStartObject();
                foreach (var (key, value) in obj)
                {
                    writer.WritePropertyName(key);
                    WriteNode(writer, value);
                }
                writer.WriteEndObject();
                break;
            case JsonArray array:
                writer.WriteStartArray();
                foreach (var item in array) WriteNode(writer, item);
                writer.WriteEndArray();
                break;
            case JsonValue value when !value.TryGetValue<JsonElement>(out _) && FloatingPoint(value) is { } d && double.IsFinite(d):
                string text = d.ToString("R", CultureInfo.InvariantCulture);
                writer.WriteRawValue(text.IndexOfAny(['.', 'E', 'e']) >= 0 ? text : text + ".0");
                break;
            default:
                node.WriteTo(writer);
                break;
        }
    }

    private static double? FloatingPoint(JsonValue value)
        => value.TryGetValue<double>(out var d) ? d : value.TryGetValue<float>(out var f) ? f : null;

    /// <summary>Parses <paramref name="config"/> into a <see cref="JsonConfig"/> (to build a model from a config made in code).</summary>
    public static JsonConfig ToJsonConfig(JsonNode config, string source = "(in code)") => JsonConfig.Parse(config.ToJsonString(), source);
}
