using System.Text.Json;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Runtime;
using static TorchSharp.torch;

namespace LatentDiffusion.Benchmarks;

/// <summary>
/// <c>reference-compare MODEL_DIR REFERENCE_DIR [--tolerance 1e-4]</c>: generates the cases that
/// <c>tools/TrainShapes/gpu/reference_check.py</c> ran in the reference Python pipeline on the same folder and compares
/// the token ids and the float32 images (<c>reference-i.npy</c>, HWC in [0, 1]). Exit 1 when an image differs by more than
/// the tolerance or the tokens differ.
/// </summary>
internal static class ReferenceCompareMode
{
    public static int Run(string[] args)
    {
        if (args.Length < 2) { Console.Error.WriteLine("usage: reference-compare MODEL_DIR REFERENCE_DIR [--tolerance 1e-4]"); return 2; }
        int t = Array.IndexOf(args, "--tolerance");
        double tolerance = t >= 0 && t + 1 < args.Length ? double.Parse(args[t + 1], System.Globalization.CultureInfo.InvariantCulture) : 1e-4;
        TorchRuntime.EnsureInitialized();
        using var pipeline = StableDiffusionPipeline.LoadAsync(args[0]).GetAwaiter().GetResult();
        using var cases = JsonDocument.Parse(File.ReadAllText(Path.Combine(args[1], "reference-cases.json")));
        bool ok = true;
        int i = 0;
        foreach (var c in cases.RootElement.EnumerateArray())
        {
            string prompt = c.GetProperty("prompt").GetString()!;
            int[] theirs = c.GetProperty("tokens").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            int[] ours = pipeline.Tokenizer.Encode(prompt);
            int size = c.GetProperty("size").GetInt32();
            using var result = pipeline.Generate(prompt, new GenerationOptions
            {
                Steps = c.GetProperty("steps").GetInt32(), GuidanceScale = c.GetProperty("guidance").GetDouble(),
                Seed = c.GetProperty("seed").GetInt64(), Width = size, Height = size,
            });
            using var expected = ReadNpy(Path.Combine(args[1], $"reference-{i}.npy"));
            using var actual = result.Pixels.reshape(expected.shape);
            double max = (actual - expected).abs().max().item<float>();
            bool pass = max <= tolerance && ours.SequenceEqual(theirs);
            ok &= pass;
            Console.WriteLine($"{(pass ? "same" : "DIFFERENT")}: '{prompt}' seed {c.GetProperty("seed").GetInt64()}: tokens {(ours.SequenceEqual(theirs) ? "equal" : "differ")}, image max abs {max:E2}");
            i++;
        }
        return ok ? 0 : 1;
    }

    /// <summary>A little-endian float32 .npy array (what numpy.save writes for a float32 C-order array).</summary>
    private static Tensor ReadNpy(string path)
    {
        var bytes = File.ReadAllBytes(path);
        int headerLength = BitConverter.ToUInt16(bytes, 8);
        string header = System.Text.Encoding.ASCII.GetString(bytes, 10, headerLength);
        if (!header.Contains("'<f4'") || header.Contains("'fortran_order': True"))
            throw new InvalidDataException($"{path}: expected a C-order float32 array, header {header.Trim()}");
        string shapeText = header[(header.IndexOf("'shape': (", StringComparison.Ordinal) + 10)..];
        long[] shape = shapeText[..shapeText.IndexOf(')')].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
        var data = new float[(bytes.Length - 10 - headerLength) / 4];
        Buffer.BlockCopy(bytes, 10 + headerLength, data, 0, data.Length * 4);
        return tensor(data, shape);
    }
}
