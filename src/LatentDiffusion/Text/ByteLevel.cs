namespace LatentDiffusion.Text;

/// <summary>
/// GPT-2's reversible byte-to-character table that byte-level BPE vocabularies are written in: printable Latin-1 bytes
/// stand for themselves, the other 68 bytes (controls, space, soft hyphen...) are moved to U+0100 onwards so that no
/// token contains white space or control characters.
/// </summary>
internal static class ByteLevel
{
    private static readonly char[] ByteToChar = BuildTable();
    private static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, b)).ToDictionary(x => x.c, x => (byte)x.b);

    private static char[] BuildTable()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    public static char ToChar(byte b) => ByteToChar[b];

    public static bool TryGetByte(char c, out byte b) => CharToByte.TryGetValue(c, out b);
}
