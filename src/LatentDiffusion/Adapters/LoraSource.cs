using System.Globalization;

namespace LatentDiffusion.Adapters;

/// <summary>A LoRA file to load with a pipeline (<c>PipelineOptions.Loras</c>) and the scale it starts with.</summary>
/// <param name="Path">The <c>.safetensors</c> file (kohya/A1111 or diffusers/PEFT names).</param>
/// <param name="Scale">Its scale when a generation names no LoRAs (<see cref="LoraAdapter.Scale"/>).</param>
public sealed record LoraSource(string Path, double Scale = 1.0)
{
    /// <summary>The name to load it under; null takes the file name without extension.</summary>
    public string? Name { get; init; }

    /// <summary>Fuse it into the weights once loaded (faster generations; its scale is then fixed until unfused).</summary>
    public bool Fuse { get; init; }

    /// <summary>
    /// Reads <c>FILE[:scale]</c> as the command line takes it: a final <c>:number</c> is the scale (so a Windows drive
    /// letter or a colon inside the name stays part of the path); without one the scale is 1.
    /// </summary>
    /// <exception cref="FormatException">The text is empty, or the scale is not a finite number.</exception>
    public static LoraSource Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int colon = text.LastIndexOf(':');
        if (colon > 0 && colon < text.Length - 1)
        {
            string tail = text[(colon + 1)..];
            bool numeric = tail.All(c => char.IsAsciiDigit(c) || c is '.' or '-' or '+' or 'e' or 'E');
            if (numeric)
            {
                if (!double.TryParse(tail, NumberStyles.Float, CultureInfo.InvariantCulture, out var scale) || !double.IsFinite(scale))
                    throw new FormatException($"LoRA '{text}': the scale '{tail}' is not a number (expected FILE[:scale], e.g. style.safetensors:0.8).");
                return new LoraSource(text[..colon], scale);
            }
        }
        if (text.Length == 0 || text.EndsWith(':'))
            throw new FormatException($"LoRA '{text}': expected FILE[:scale], e.g. style.safetensors:0.8.");
        return new LoraSource(text);
    }
}
