using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using LatentDiffusion.Formats;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Builds a scheduler's effective config the way the reference's <c>from_config</c> does: the class's own defaults,
/// replaced by the keys of the model's <c>scheduler_config.json</c> that the class knows, replaced by explicit overrides
/// (which must name keys the class knows). Model keys the class does not know do not affect it; as in the reference
/// they stay in the config, unused.
/// </summary>
public static class SchedulerConfig
{
    /// <summary>
    /// Reads a <c>scheduler_config.json</c>: the same reader as every other config (<see cref="JsonConfig.Load"/>), which
    /// also accepts the bare <c>NaN</c>, <c>Infinity</c> and <c>-Infinity</c> that Python's json module writes (e.g.
    /// <c>"lambda_min_clipped": -Infinity</c>).
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a JSON object.</exception>
    public static JsonConfig Load(string path) => JsonConfig.Load(path);

    /// <summary>Parses config text, accepting Python's non-finite number literals (see <see cref="Load"/>).</summary>
    /// <exception cref="InvalidDataException">The text is not a JSON object.</exception>
    public static JsonConfig Parse(string json, string source) => JsonConfig.Parse(json, source);

    private static readonly JsonSerializerOptions WriteOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Merges defaults, the model config and overrides into the effective config of <paramref name="className"/>.</summary>
    internal static JsonConfig Build(string className, IReadOnlyList<(string Key, object? Default)> defaults, JsonConfig? model, IReadOnlyDictionary<string, string>? overrides, Action<JsonObject>? adjust = null)
    {
        var obj = new JsonObject { ["_class_name"] = className };
        var classKeys = new HashSet<string>();
        foreach (var (key, value) in defaults)
        {
            if (string.IsNullOrWhiteSpace(key) || key.StartsWith('_'))
                throw new ArgumentException($"{className}: config key '{key}' must be a non-empty name not starting with '_'.", nameof(defaults));
            if (!classKeys.Add(key))
                throw new ArgumentException($"{className} declares config key '{key}' twice.", nameof(defaults));
            if (value is not (null or bool or int or double or string or int[]))
                throw new ArgumentException($"{className}: the default of config key '{key}' is a {value.GetType().Name}; expected null, bool, int, double, string or int[].", nameof(defaults));
        }
        // Keys the previous class filled with its own defaults were never chosen by anyone: the reference drops them
        // (via "_use_default_values") so that this class uses its own defaults instead.
        var usedDefaults = new HashSet<string>();
        if (model is not null && model.Root.TryGetProperty("_use_default_values", out var ud) && ud.ValueKind == JsonValueKind.Array)
            foreach (var k in ud.EnumerateArray()) if (k.ValueKind == JsonValueKind.String) usedDefaults.Add(k.GetString()!);
        var filledByDefault = new List<string>();
        foreach (var (key, value) in defaults)
        {
            if (model is not null && !usedDefaults.Contains(key) && model.Root.TryGetProperty(key, out var v))
                obj[key] = JsonNode.Parse(v.GetRawText());
            else
            {
                obj[key] = ToNode(value);
                filledByDefault.Add(key);
            }
        }
        if (model is not null)
        {
            // Like the reference, keys this class does not use are carried along unused ("hidden"), so a config passed
            // from scheduler to scheduler keeps every setting of the model's original one.
            foreach (var p in model.Root.EnumerateObject())
                if (p.Name is not ("_class_name" or "_use_default_values") && !classKeys.Contains(p.Name) && !usedDefaults.Contains(p.Name))
                    obj[p.Name] = JsonNode.Parse(p.Value.GetRawText());
        }
        if (overrides is not null)
        {
            foreach (var (key, text) in overrides)
            {
                int at = -1;
                for (int i = 0; i < defaults.Count; i++) if (defaults[i].Key == key) at = i;
                if (at < 0)
                    throw new ArgumentException($"{className} has no config key '{key}' (keys: {string.Join(", ", defaults.Select(d => d.Key))}).", nameof(overrides));
                obj[key] = ParseOverride(className, key, text, defaults[at].Default);
                filledByDefault.Remove(key);
            }
        }
        if (filledByDefault.Count > 0) obj["_use_default_values"] = new JsonArray(filledByDefault.Select(k => (JsonNode?)JsonValue.Create(k)).ToArray());
        adjust?.Invoke(obj);
        string source = model is null ? $"{className} defaults" : $"{model.Source} as {className}";
        if (overrides is { Count: > 0 }) source += " with overrides " + string.Join(", ", overrides.Select(kv => $"{kv.Key}={kv.Value}"));
        using var doc = JsonDocument.Parse(obj.ToJsonString(WriteOptions));
        return new JsonConfig(doc.RootElement, source);
    }

    private static JsonNode? ToNode(object? value) => value switch
    {
        null => null,
        bool b => JsonValue.Create(b),
        int i => JsonValue.Create(i),
        double d when double.IsNegativeInfinity(d) => JsonValue.Create("-Infinity"),
        double d when double.IsPositiveInfinity(d) => JsonValue.Create("Infinity"),
        double d => JsonValue.Create(d),
        string s => JsonValue.Create(s),
        int[] a => new JsonArray(a.Select(x => (JsonNode?)JsonValue.Create(x)).ToArray()),
        _ => throw new InvalidOperationException($"Unsupported default {value.GetType()}"),
    };

    private static JsonNode? ParseOverride(string className, string key, string text, object? kind)
    {
        text = text.Trim();
        Exception Bad(string what) => new ArgumentException($"{className} override {key}={text}: expected {what}.", "overrides");
        if (text == "null" || text == "None") return null;
        switch (kind)
        {
            case bool:
                return bool.TryParse(text, out var b) ? JsonValue.Create(b) : throw Bad("true or false");
            case int:
                return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i) ? JsonValue.Create(i) : throw Bad("an integer");
            case double:
                if (text is "-inf" or "-Infinity") return JsonValue.Create("-Infinity");
                if (text is "inf" or "Infinity") return JsonValue.Create("Infinity");
                if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var d)) throw Bad("a number");
                // JSON has no NaN: kept as Python's json module writes it, for the scheduler to refuse by name.
                return double.IsFinite(d) ? JsonValue.Create(d) : JsonValue.Create(double.IsNaN(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
            case string:
                return JsonValue.Create(text);
            default:
                // Keys whose default is null or a list (sigma_min, trained_betas, disable_corrector): JSON, else a string.
                try { return JsonNode.Parse(JsonConfig.QuoteNonFinite(text)); }
                catch (JsonException) { return JsonValue.Create(text); }
        }
    }
}
