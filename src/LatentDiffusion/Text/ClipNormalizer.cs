using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace LatentDiffusion.Text;

/// <summary>
/// CLIP's text normalisation as the reference tokenizer applies it: Unicode NFC, every run of white space replaced by one
/// space, then lower case. Leading and trailing spaces are kept; the pre-tokenizer drops them.
/// </summary>
internal sealed class ClipNormalizer : Normalizer
{
    public static ClipNormalizer Instance { get; } = new();

    public override string Normalize(string original) => Normalize(original.AsSpan());

    public override string Normalize(ReadOnlySpan<char> original)
    {
        string nfc = ToNfc(original);
        var sb = new StringBuilder(nfc.Length);
        bool inSpace = false;
        foreach (var rune in nfc.EnumerateRunes())
        {
            if (IsWhiteSpace(rune))
            {
                if (!inSpace) sb.Append(' ');
                inSpace = true;
                continue;
            }
            inSpace = false;
            AppendLower(sb, rune);
        }
        return sb.ToString();
    }

    /// <summary>The white space of the reference's <c>\s</c>: tab to carriage return, next line, and the Unicode separators.</summary>
    public static bool IsWhiteSpace(Rune r)
    {
        int v = r.Value;
        if (v is >= 0x09 and <= 0x0D or 0x85) return true;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.SpaceSeparator or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator;
    }

    private static void AppendLower(StringBuilder sb, Rune rune)
    {
        // The reference lowercases code point by code point with the full Unicode mapping; the only code point whose
        // lowercase is longer than one character is the dotted capital I.
        if (rune.Value == 0x130) { sb.Append("i\u0307"); return; }
        var lower = Rune.ToLowerInvariant(rune);
        Span<char> buf = stackalloc char[2];
        int n = lower.EncodeToUtf16(buf);
        sb.Append(buf[..n]);
    }

    private static string ToNfc(ReadOnlySpan<char> text)
    {
        // Lone surrogates cannot come from a valid string in the reference (Python str -> UTF-8); replace them rather than throw.
        var sb = new StringBuilder(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { sb.Append(c).Append(text[++i]); continue; }
            sb.Append(char.IsSurrogate(c) ? '\uFFFD' : c);
        }
        return sb.ToString().Normalize(NormalizationForm.FormC);
    }
}
