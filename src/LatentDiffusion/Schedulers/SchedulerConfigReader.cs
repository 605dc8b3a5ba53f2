using LatentDiffusion.Formats;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Reads a scheduler's effective config once, at construction, into typed values. The effective config holds every key
/// the class declares (its default filled in), so a read names no default: the class's key table is the one place the
/// defaults live. Reading a key the class does not declare is a bug in the class and throws; <see cref="Declares"/> lets
/// shared code tell a key the class lacks (which then does not affect it, as in the reference) from one it has.
/// Values of the wrong type, outside their range or not among the supported ones are refused with the key, the value
/// and what is allowed.
/// </summary>
internal sealed class SchedulerConfigReader
{
    private readonly HashSet<string> _keys;

    public SchedulerConfigReader(JsonConfig config, IEnumerable<string> classKeys)
    {
        Config = config;
        _keys = [.. classKeys];
    }

    /// <summary>The effective config (with keys carried over from another class, which reads here never see).</summary>
    public JsonConfig Config { get; }

    /// <summary>Where the config came from, for messages.</summary>
    public string Source => Config.Source;

    /// <summary>
    /// Checks every declared key's value against the type of its default, whether or not the class reads it: an int
    /// default needs an integer, a bool true or false, a string a string, a double a number that is not NaN (and finite
    /// unless the default is infinite). Null values and keys with a null or list default are left to their readers.
    /// </summary>
    /// <exception cref="InvalidDataException">A value of the wrong type, or NaN, or an infinity where the default is finite.</exception>
    public void CheckTypes(IEnumerable<(string Key, object? Default)> keys)
    {
        foreach (var (key, value) in keys)
        {
            if (!Config.Has(key)) continue;
            switch (value)
            {
                case int: Config.Int(key, 0); break;
                case bool: Config.Bool(key, false); break;
                case string: Config.String(key, null); break;
                case double d:
                    double v = Config.Double(key, 0);
                    if (double.IsNaN(v) || (double.IsInfinity(v) && double.IsFinite(d)))
                        throw new InvalidDataException($"Config '{Source}': '{key}' = {Text(v)}, expected a finite number.");
                    break;
            }
        }
    }

    /// <summary>Whether the class declares <paramref name="key"/>.</summary>
    public bool Declares(string key) => _keys.Contains(key);

    private void Require(string key)
    {
        if (!_keys.Contains(key)) throw new InvalidOperationException($"Config '{Source}': the class reads '{key}', which it does not declare.");
    }

    /// <summary>Refuses a JSON null where a value is needed (the reference would fail on None there too).</summary>
    private void RequireValue(string key, string what)
    {
        Require(key);
        if (Config.Root.TryGetProperty(key, out var v) && v.ValueKind == System.Text.Json.JsonValueKind.Null)
            throw new InvalidDataException($"Config '{Source}': '{key}' is null, expected {what}.");
    }

    /// <summary>An integer in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public int Int(string key, int min = int.MinValue, int max = int.MaxValue)
    {
        RequireValue(key, "an integer");
        int value = Config.Int(key, 0);
        if (value < min || value > max)
            throw new InvalidDataException($"Config '{Source}': '{key}' = {value}, expected {Range(min, max)}.");
        return value;
    }

    /// <summary>An integer, or null when the value is null.</summary>
    public int? NullableInt(string key)
    {
        Require(key);
        return Config.Has(key) ? Config.Int(key, 0) : null;
    }

    /// <summary>A finite number in [<paramref name="min"/>, <paramref name="max"/>] (NaN refused; infinities only when <paramref name="allowInfinite"/>).</summary>
    public double Double(string key, double min = double.NegativeInfinity, double max = double.PositiveInfinity, bool allowInfinite = false)
    {
        RequireValue(key, "a number");
        double value = Config.Double(key, 0);
        if (double.IsNaN(value) || (!allowInfinite && double.IsInfinity(value)) || value < min || value > max)
            throw new InvalidDataException($"Config '{Source}': '{key}' = {Text(value)}, expected {(allowInfinite ? "a number" : "a finite number")}{(double.IsNegativeInfinity(min) && double.IsPositiveInfinity(max) ? "" : " in " + $"[{Text(min)}, {Text(max)}]")}.");
        return value;
    }

    /// <summary>A finite number of at least <paramref name="min"/>, or null when the value is null.</summary>
    public double? NullableDouble(string key, double min = double.NegativeInfinity)
    {
        Require(key);
        if (!Config.Has(key)) return null;
        double value = Config.Double(key, 0);
        if (!(value >= min && double.IsFinite(value)))
            throw new InvalidDataException($"Config '{Source}': '{key}' = {Text(value)}, expected null or a finite number{(double.IsNegativeInfinity(min) ? "" : $" of at least {Text(min)}")}.");
        return value;
    }

    /// <summary>true or false (null reads as false, as Python's truthiness of None).</summary>
    public bool Bool(string key)
    {
        Require(key);
        return Config.Bool(key, false);
    }

    /// <summary>One of <paramref name="supported"/> (null written as <c>"null"</c> among them, read as null).</summary>
    /// <exception cref="NotSupportedException">Another value; the message names the key, the value and what is supported.</exception>
    public string? Choice(string key, params string[] supported)
    {
        Require(key);
        Config.RequireOneOf(key, supported);
        return Config.Has(key) ? Config.String(key, null) : null;
    }

    /// <summary>Refuses a value other than <paramref name="supported"/> (compared as JSON text, strings unquoted) without reading it.</summary>
    /// <exception cref="NotSupportedException">Another value; the message names the key, the value and what is supported.</exception>
    public void RequireOneOf(string key, params string[] supported)
    {
        Require(key);
        Config.RequireOneOf(key, supported);
    }

    /// <summary>An array of integers, or null.</summary>
    public int[]? IntArray(string key)
    {
        Require(key);
        return Config.IntArray(key);
    }

    /// <summary>An array of numbers, or null.</summary>
    public double[]? DoubleArray(string key)
    {
        Require(key);
        return Config.DoubleArray(key);
    }

    private static string Range(int min, int max)
        => max == int.MaxValue ? $"{min} or more" : min == int.MinValue ? $"{max} or less" : $"{min} to {max}";

    private static string Text(double v) => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
}
