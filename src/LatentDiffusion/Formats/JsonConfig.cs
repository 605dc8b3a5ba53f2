using System.Text.Json;

namespace LatentDiffusion.Formats;

/// <summary>
/// A component's <c>config.json</c> with typed, defaulted reads and explicit refusal of values the library does not
/// implement, so an unsupported setting fails loudly instead of being silently ignored.
/// </summary>
public sealed class JsonConfig
{
    private readonly JsonElement _root;

    /// <summary>Where the config came from (a path, or a description).</summary>
    public string Source { get; }

    /// <summary>Wraps an already-parsed JSON object.</summary>
    public JsonConfig(JsonElement root, string source)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"Config '{source}' is not a JSON object.");
        _root = root.Clone();
        Source = source;
    }

    /// <summary>Reads and parses a config file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a JSON object.</exception>
    public static JsonConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Config file not found: {path}", path);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            return new JsonConfig(doc.RootElement, path);
        }
        catch (JsonException e) { throw new InvalidDataException($"Config file '{path}' is not valid JSON: {e.Message}", e); }
    }

    /// <summary>Parses config text.</summary>
    public static JsonConfig Parse(string json, string source)
    {
        using var doc = JsonDocument.Parse(json);
        return new JsonConfig(doc.RootElement, source);
    }

    /// <summary>The raw JSON object.</summary>
    public JsonElement Root => _root;

    /// <summary>True when the key is present and not null.</summary>
    public bool Has(string key) => _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    private bool TryGet(string key, out JsonElement value) => _root.TryGetProperty(key, out value) && value.ValueKind != JsonValueKind.Null;

    /// <summary>An integer, or <paramref name="fallback"/> when absent or null.</summary>
    public int Int(string key, int fallback) => TryGet(key, out var v) ? Convert(key, v, e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _), e => e.GetInt32(), "an integer") : fallback;

    /// <summary>A number, or <paramref name="fallback"/> when absent or null.</summary>
    public double Double(string key, double fallback) => TryGet(key, out var v) ? Convert(key, v, e => e.ValueKind == JsonValueKind.Number || (e.ValueKind == JsonValueKind.String && e.GetString() is "-Infinity" or "Infinity" or "NaN"),
        e => e.ValueKind == JsonValueKind.Number ? e.GetDouble() : double.Parse(e.GetString()!, System.Globalization.CultureInfo.InvariantCulture), "a number") : fallback;

    /// <summary>A boolean, or <paramref name="fallback"/> when absent or null.</summary>
    public bool Bool(string key, bool fallback) => TryGet(key, out var v) ? Convert(key, v, e => e.ValueKind is JsonValueKind.True or JsonValueKind.False, e => e.GetBoolean(), "true or false") : fallback;

    /// <summary>A string, or <paramref name="fallback"/> when absent or null.</summary>
    public string? String(string key, string? fallback) => TryGet(key, out var v) ? Convert(key, v, e => e.ValueKind == JsonValueKind.String, e => e.GetString()!, "a string") : fallback;

    /// <summary>An array of integers; a single integer is repeated <paramref name="count"/> times when given.</summary>
    public int[]? IntArray(string key, int? count = null) => Array(key, count, e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _), e => e.GetInt32(), "integers");

    /// <summary>An array of numbers.</summary>
    public double[]? DoubleArray(string key) => Array(key, null, e => e.ValueKind == JsonValueKind.Number, e => e.GetDouble(), "numbers");

    /// <summary>An array of strings; a single string is repeated <paramref name="count"/> times when given.</summary>
    public string[]? StringArray(string key, int? count = null) => Array(key, count, e => e.ValueKind == JsonValueKind.String, e => e.GetString()!, "strings");

    /// <summary>An array of booleans; a single boolean is repeated <paramref name="count"/> times when given.</summary>
    public bool[]? BoolArray(string key, int? count = null) => Array(key, count, e => e.ValueKind is JsonValueKind.True or JsonValueKind.False, e => e.GetBoolean(), "booleans");

    private T[]? Array<T>(string key, int? count, Func<JsonElement, bool> ok, Func<JsonElement, T> read, string what)
    {
        if (!TryGet(key, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Array)
        {
            if (count is int n && ok(v)) return Enumerable.Repeat(read(v), n).ToArray();
            throw Invalid(key, v, $"an array of {what}");
        }
        var items = v.EnumerateArray().ToList();
        if (!items.All(ok)) throw Invalid(key, v, $"an array of {what}");
        if (count is int c && items.Count != c) throw Invalid(key, v, $"an array of {c} {what}");
        return items.Select(read).ToArray();
    }

    private T Convert<T>(string key, JsonElement v, Func<JsonElement, bool> ok, Func<JsonElement, T> read, string what)
        => ok(v) ? read(v) : throw Invalid(key, v, what);

    private InvalidDataException Invalid(string key, JsonElement v, string what)
        => new($"Config '{Source}': '{key}' is {v.GetRawText()}, expected {what}.");

    /// <summary>
    /// Refuses a present value the library does not implement. The key passes when absent, or when its value (null
    /// included, written as <c>null</c>) is one of <paramref name="supported"/>, compared as JSON text.
    /// </summary>
    /// <exception cref="NotSupportedException">The value is not supported; the message names the file, key, value and what is supported.</exception>
    public void RequireOneOf(string key, params string[] supported)
    {
        if (!_root.TryGetProperty(key, out var v)) return;
        string text = v.ValueKind == JsonValueKind.String ? v.GetString()! : v.GetRawText();
        if (!supported.Contains(text))
            throw new NotSupportedException($"Config '{Source}': '{key}' = {v.GetRawText()} is not supported (supported: {string.Join(", ", supported)}).");
    }
}
