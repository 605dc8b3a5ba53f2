using System.Buffers.Binary;
using System.Text;

namespace LatentDiffusion.Runtime;

/// <summary>
/// Marks one symbol-version requirement of an ELF64 shared library as weak (<c>VER_FLG_WEAK</c>), so the
/// dynamic loader accepts a system library that lacks that version. TorchSharp 0.107's native glue asks
/// for <c>GLIBCXX_3.4.32</c> only through a marker symbol that nothing relocates against, so on systems with
/// GCC 12's libstdc++ (Debian 12) the weak requirement is harmless and the library loads.
/// </summary>
internal static class ElfVersionPatcher
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    /// <summary>Sets <c>VER_FLG_WEAK</c> on every requirement named <paramref name="version"/>; returns how many were changed.</summary>
    /// <exception cref="InvalidDataException">The bytes are not a little-endian ELF64 file or its version section is malformed.</exception>
    public static int MarkVersionWeak(byte[] elf, string version)
    {
        var span = elf.AsSpan();
        if (span.Length < 64 || span[0] != 0x7f || span[1] != (byte)'E' || span[2] != (byte)'L' || span[3] != (byte)'F')
            throw new InvalidDataException("Not an ELF file.");
        if (span[4] != 2 || span[5] != 1)
            throw new InvalidDataException("Only little-endian ELF64 files are supported.");

        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(span[0x28..]);
        ushort shentsize = BinaryPrimitives.ReadUInt16LittleEndian(span[0x3A..]);
        ushort shnum = BinaryPrimitives.ReadUInt16LittleEndian(span[0x3C..]);
        if (shentsize < 64 || shoff + (ulong)shentsize * shnum > (ulong)span.Length)
            throw new InvalidDataException("ELF section headers lie outside the file.");

        int changed = 0;
        byte[] wanted = Encoding.ASCII.GetBytes(version);
        for (int i = 0; i < shnum; i++)
        {
            var sh = span.Slice(checked((int)(shoff + (ulong)(i * shentsize))), shentsize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(sh[4..]) != ShtGnuVerneed) continue;
            ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x18..]);
            ulong size = BinaryPrimitives.ReadUInt64LittleEndian(sh[0x20..]);
            uint link = BinaryPrimitives.ReadUInt32LittleEndian(sh[0x28..]);
            if (offset + size > (ulong)span.Length || link >= shnum)
                throw new InvalidDataException("ELF .gnu.version_r section lies outside the file.");
            var strSh = span.Slice(checked((int)(shoff + (ulong)(link * shentsize))), shentsize);
            ulong strOff = BinaryPrimitives.ReadUInt64LittleEndian(strSh[0x18..]);
            ulong strSize = BinaryPrimitives.ReadUInt64LittleEndian(strSh[0x20..]);
            if (strOff + strSize > (ulong)span.Length)
                throw new InvalidDataException("ELF string table lies outside the file.");
            var strtab = span.Slice((int)strOff, (int)strSize);

            // Elf64_Verneed: vn_version(2) vn_cnt(2) vn_file(4) vn_aux(4) vn_next(4)
            // Elf64_Vernaux: vna_hash(4) vna_flags(2) vna_other(2) vna_name(4) vna_next(4)
            long need = (long)offset;
            for (int guard = 0; guard < 4096; guard++)
            {
                if (need + 16 > (long)(offset + size)) throw new InvalidDataException("Truncated ELF verneed entry.");
                ushort cnt = BinaryPrimitives.ReadUInt16LittleEndian(span[(int)(need + 2)..]);
                uint auxRel = BinaryPrimitives.ReadUInt32LittleEndian(span[(int)(need + 8)..]);
                uint nextRel = BinaryPrimitives.ReadUInt32LittleEndian(span[(int)(need + 12)..]);
                long aux = need + auxRel;
                for (int a = 0; a < cnt; a++)
                {
                    if (aux + 16 > (long)(offset + size)) throw new InvalidDataException("Truncated ELF vernaux entry.");
                    uint name = BinaryPrimitives.ReadUInt32LittleEndian(span[(int)(aux + 8)..]);
                    if (name < strSize && NameEquals(strtab[(int)name..], wanted))
                    {
                        var flags = span.Slice((int)(aux + 4), 2);
                        ushort f = BinaryPrimitives.ReadUInt16LittleEndian(flags);
                        if ((f & VerFlgWeak) == 0)
                        {
                            BinaryPrimitives.WriteUInt16LittleEndian(flags, (ushort)(f | VerFlgWeak));
                            changed++;
                        }
                    }
                    uint auxNext = BinaryPrimitives.ReadUInt32LittleEndian(span[(int)(aux + 12)..]);
                    if (auxNext == 0) break;
                    aux += auxNext;
                }
                if (nextRel == 0) break;
                need += nextRel;
            }
        }
        return changed;
    }

    private static bool NameEquals(ReadOnlySpan<byte> strtabAtName, byte[] wanted)
        => strtabAtName.Length > wanted.Length && strtabAtName[..wanted.Length].SequenceEqual(wanted) && strtabAtName[wanted.Length] == 0;
}
