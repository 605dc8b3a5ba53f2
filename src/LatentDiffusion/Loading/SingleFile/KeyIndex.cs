using System.Globalization;
using LatentDiffusion.Formats;

namespace LatentDiffusion.Loading.SingleFile;

/// <summary>Reads the block and layer numbers in single-file tensor names, refusing numbers no real model has.</summary>
internal static class KeyIndex
{
    /// <summary>The number <paramref name="digits"/> taken from tensor <paramref name="key"/> of <paramref name="path"/>.</summary>
    /// <exception cref="InvalidDataException">It is not an ASCII number from 0 to <see cref="ModelLimits.MaxKeyIndex"/>.</exception>
    public static int Parse(string digits, string key, string path)
        => int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int value) && value <= ModelLimits.MaxKeyIndex ? value
            : throw new InvalidDataException($"Invalid checkpoint '{path}': tensor '{key}' has the block/layer number {digits}, expected 0 to {ModelLimits.MaxKeyIndex}.");
}
