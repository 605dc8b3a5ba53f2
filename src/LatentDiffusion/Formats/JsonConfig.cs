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

    /// <summary>
    /// Reads and parses a config file. Besides strict JSON it accepts what the reference's writer (Python's
    /// <c>json.dumps</c>) emits for non-finite numbers, the bare <c>NaN</c>, <c>Infinity</c> and <c>-Infinity</c> (e.g.
    /// <c>"lambda_min_clipped": -Infinity</c> in a DPM-Solver <c>scheduler_config.json</c>), and trailing commas and comments.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a JSON object.</exception>
    public static JsonConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Config file not found: {path}", path);
        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>Parses config text, accepting the same as <see cref="Load"/>.</summary>
    /// <exception cref="InvalidDataException">The text is not a JSON object; the message names <paramref name="source"/>.</exception>
    public static JsonConfig Parse(string json, string source)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            using var doc = JsonDocument.Parse(QuoteNonFinite(json), ReadOptions);
            return new JsonConfig(doc.RootElement, source);
        }
        catch (JsonException e) { throw new InvalidDataException($"Config '{source}' is not valid JSON: {e.Message}", e); }
    }

    private static readonly JsonDocumentOptions ReadOptions = new() { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip };

    private static readonly string[] NonFinite = ["-Infinity", "Infinity", "NaN"];

    /// <summary>
    /// Wraps the NaN / Infinity / -Infinity tokens that stand outside strings in quotes, the form <see cref="Double"/>
    /// reads (System.Text.Json reads named floating-point literals only when quoted).
    /// </summary>
    internal static string QuoteNonFinite(string json)
    {
        System.Text.StringBuilder? sb = null;
        bool inString = false;
        for (int i = 0; i < json.Length; i++)
        {
            char c = json[i];
            if (inString)
            {
                sb?.Append(c);
                if (c == '\\' && i + 1 < json.Length) sb?.Append(json[++i]);
                else if (c == '"') inString = false;
                continue;
            }
            if (c == '"') { inString = true; sb?.Append(c); continue; }
            string? token = null;
            foreach (var t in NonFinite)
                if (string.CompareOrdinal(json, i, t, 0, t.Length) == 0) { token = t; break; }
            if (token is null) { sb?.Append(c); continue; }
            sb ??= new System.Text.StringBuilder(json.Length + 16).Append(json, 0, i);
            sb.Append('"').Append(token).Append('"');
            i += token.Length - 1;
        }
        return sb?.ToString() ?? json;
    }

    private static bool IsNonFiniteText(JsonElement e) => e.ValueKind == JsonValueKind.String && e.GetString() is "-Infinity" or "Infinity" or "NaN";

    private static double ReadDouble(JsonElement e) => e.ValueKind == JsonValueKind.Number ? e.GetDouble() : double.Parse(e.GetString()!, System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The raw JSON object.</summary>
    public JsonElement Root => _root;

    /// <summary>True when the key is present and not null.</summary>
    public bool Has(string key) => _root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    private bool TryGet(string key, out JsonElement value) => _root.TryGetProperty(key, out value) && value.ValueKind != JsonValueKind.Null;

    /// <summary>An integer, or <paramref name="fallback"/> when absent or null.</summary>
    public int Int(string key, int fallback) => TryGet(key, out var v) ? Convert(key, v, e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _), e => e.GetInt32(), "an integer") : fallback;

    /// <summary>A number, or <paramref name="fallback"/> when absent or null.</summary>
    public double Double(string key, double fallback) => TryGet(key, out var v) ? Convert(key, v, e => e.ValueKind == JsonValueKind.Number || IsNonFiniteText(e), ReadDouble, "a number") : fallback;

    /// <summary>A boolean, or <paramref name="fallback"/> when absent or null.</summary>
    public bool Bool(string key, bool fallback) => TryGet(key, out var v) ? Convert(key, v, e => e.ValueKind is JsonValueKind.True or JsonValueKind.False, e => e.GetBoolean(), "true or false") : fallback;

    /// <summary>A string, or <paramref name="fallback"/> when absent or null.</summary>
    public string? String(string key, string? fallback) => TryGet(key, out var v) ? Convert(key, v, e => e.ValueKind == JsonValueKind.String, e => e.GetString()!, "a string") : fallback;

    /// <summary>An array of integers; a single integer is repeated <paramref name="count"/> times when given.</summary>
    public int[]? IntArray(string key, int? count = null) => Array(key, count, e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _), e => e.GetInt32(), "integers");

    /// <summary>An array of numbers.</summary>
    public double[]? DoubleArray(string key) => Array(key, null, e => e.ValueKind == JsonValueKind.Number || IsNonFiniteText(e), ReadDouble, "numbers");

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
