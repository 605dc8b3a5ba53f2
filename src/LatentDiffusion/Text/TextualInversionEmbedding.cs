using LatentDiffusion.Formats;
using static TorchSharp.torch;

namespace LatentDiffusion.Text;

/// <summary>How a textual-inversion file stores its vectors.</summary>
public enum TextualInversionLayout
{
    /// <summary>diffusers' <c>learned_embeds.safetensors</c>: one tensor named after its token, <c>[hidden]</c> or <c>[n, hidden]</c>.</summary>
    Diffusers,

    /// <summary>AUTOMATIC1111's <c>.safetensors</c> form: one tensor <c>emb_params</c> <c>[n, hidden]</c>; the token is the file's name.</summary>
    A1111,

    /// <summary>AUTOMATIC1111's <c>.pt</c> dictionary saved as safetensors: <c>string_to_param.*</c> <c>[n, hidden]</c>, the name in the metadata when present.</summary>
    A1111StringToParam,

    /// <summary>An SDXL embedding: <c>clip_l</c> for the first text encoder and <c>clip_g</c> for the second.</summary>
    Sdxl,
}

/// <summary>
/// A textual-inversion embedding read from a <c>.safetensors</c> file: the learned vectors a new token stands for
/// (<see cref="Vectors"/>, <c>[n, hidden]</c>, float32 on the CPU), in any of the layouts of <see cref="TextualInversionLayout"/>.
/// Owns its tensors.
/// </summary>
public sealed class TextualInversionEmbedding : IDisposable
{
    /// <summary>The name diffusers writes for its single tensor.</summary>
    public const string DiffusersFileName = "learned_embeds.safetensors";

    private bool _disposed;

    /// <summary>The file the vectors came from.</summary>
    public string Path { get; }

    /// <summary>The layout the file was recognised as.</summary>
    public TextualInversionLayout Layout { get; }

    /// <summary>
    /// The token the file names: the tensor's name (diffusers), the metadata's <c>name</c> (string_to_param form), or the
    /// file's name without extension (AUTOMATIC1111's convention for <c>emb_params</c> and SDXL files).
    /// </summary>
    public string Name { get; }

    /// <summary>The vectors <c>[n, hidden]</c> (for SDXL, those of the first text encoder, <c>clip_l</c>), float32 on the CPU.</summary>
    public Tensor Vectors
    {
        get { ObjectDisposedException.ThrowIf(_disposed, this); return _vectors; }
    }

    /// <summary>For an SDXL embedding, the vectors of the second text encoder (<c>clip_g</c>); otherwise null.</summary>
    public Tensor? Vectors2
    {
        get { ObjectDisposedException.ThrowIf(_disposed, this); return _vectors2; }
    }

    /// <summary>Number of vectors (tokens the embedding takes in a prompt).</summary>
    public int VectorCount => (int)_vectors.shape[0];

    private readonly Tensor _vectors;
    private readonly Tensor? _vectors2;

    private TextualInversionEmbedding(string path, TextualInversionLayout layout, string name, Tensor vectors, Tensor? vectors2)
    {
        Path = path; Layout = layout; Name = name; _vectors = vectors; _vectors2 = vectors2;
    }

    /// <summary>
    /// Reads an embedding from a <c>.safetensors</c> file, or from a folder holding <see cref="DiffusersFileName"/> (as
    /// diffusers saves one).
    /// </summary>
    /// <exception cref="FileNotFoundException">Nothing at <paramref name="path"/>, or a folder without <see cref="DiffusersFileName"/>.</exception>
    /// <exception cref="NotSupportedException">A pickled <c>.pt</c> / <c>.bin</c> file (only safetensors are read).</exception>
    /// <exception cref="InvalidDataException">The file is not valid safetensors, its tensors fit no known layout, or a
    /// vector tensor is not a finite floating-point <c>[hidden]</c> / <c>[n, hidden]</c> tensor.</exception>
    public static TextualInversionEmbedding Load(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        string file = path;
        if (Directory.Exists(path))
        {
            file = System.IO.Path.Combine(path, DiffusersFileName);
            if (!File.Exists(file))
            {
                string hint = File.Exists(System.IO.Path.Combine(path, "learned_embeds.bin")) ? " (it has learned_embeds.bin, a pickled file; only .safetensors are read)" : "";
                throw new FileNotFoundException($"Textual-inversion folder '{path}' has no {DiffusersFileName}{hint}.", file);
            }
        }
        else if (!File.Exists(path))
            throw new FileNotFoundException($"Textual-inversion embedding not found: '{path}'.", path);
        string extension = System.IO.Path.GetExtension(file).ToLowerInvariant();
        if (extension is ".pt" or ".bin" or ".ckpt" or ".pth")
            throw new NotSupportedException($"Textual-inversion file '{file}' is a pickled PyTorch file ({extension}); only .safetensors embeddings are read (convert it, or download the .safetensors version).");

        using var st = SafetensorsFile.Open(file);
        var names = st.Entries.Keys.Order(StringComparer.Ordinal).ToList();
        string fileName = System.IO.Path.GetFileNameWithoutExtension(file);
        if (fileName == System.IO.Path.GetFileNameWithoutExtension(DiffusersFileName) && Directory.Exists(path))
            fileName = System.IO.Path.GetFileName(System.IO.Path.TrimEndingDirectorySeparator(path));

        if (st.Contains("clip_l") && st.Contains("clip_g"))
        {
            var l = ReadVectors(st, "clip_l");
            try { return new TextualInversionEmbedding(file, TextualInversionLayout.Sdxl, fileName, l, ReadVectors(st, "clip_g")); }
            catch { l.Dispose(); throw; }
        }
        if (st.Contains("emb_params"))
            return new TextualInversionEmbedding(file, TextualInversionLayout.A1111, fileName, ReadVectors(st, "emb_params"), null);
        var stringToParam = names.Where(n => n.StartsWith("string_to_param.", StringComparison.Ordinal)).ToList();
        if (stringToParam.Count == 1)
        {
            string name = st.Metadata.TryGetValue("name", out var n) && !string.IsNullOrWhiteSpace(n) ? n : fileName;
            return new TextualInversionEmbedding(file, TextualInversionLayout.A1111StringToParam, name, ReadVectors(st, stringToParam[0]), null);
        }
        if (names.Count == 1)
            return new TextualInversionEmbedding(file, TextualInversionLayout.Diffusers, names[0], ReadVectors(st, names[0]), null);
        string listed = names.Count == 0 ? "no tensors" : "tensors " + string.Join(", ", names.Take(8).Select(n => $"'{n}'")) + (names.Count > 8 ? $", ... ({names.Count} in all)" : "");
        throw new InvalidDataException($"Textual-inversion file '{file}' has an unknown layout ({listed}): expected one tensor named after its token (diffusers), 'emb_params' (AUTOMATIC1111), one 'string_to_param.*', or 'clip_l' and 'clip_g' (SDXL).");
    }

    private static Tensor ReadVectors(SafetensorsFile st, string name)
    {
        var entry = st.Entries[name];
        if (entry.Shape.Length is not (1 or 2) || entry.Shape[^1] == 0 || (entry.Shape.Length == 2 && entry.Shape[0] == 0))
            throw new InvalidDataException($"Textual-inversion file '{st.Path}': tensor '{name}' has shape [{string.Join(", ", entry.Shape)}]; expected [hidden] or [vectors, hidden].");
        if (entry.Shape.Length == 2 && entry.Shape[0] > 1024)
            throw new InvalidDataException($"Textual-inversion file '{st.Path}': tensor '{name}' has {entry.Shape[0]} vectors; a prompt holds at most a few dozen.");
        using var scope = NewDisposeScope();
        var raw = st.Load(name);
        if (!raw.is_floating_point())
            throw new InvalidDataException($"Textual-inversion file '{st.Path}': tensor '{name}' is {entry.DType}; expected floating-point vectors.");
        var vectors = raw.to(ScalarType.Float32);
        if (entry.Shape.Length == 1) vectors = vectors.unsqueeze(0);
        if (!vectors.isfinite().all().item<bool>())
            throw new InvalidDataException($"Textual-inversion file '{st.Path}': tensor '{name}' holds NaN or infinite values.");
        return vectors.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Frees the vectors (idempotent).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _vectors.Dispose();
        _vectors2?.Dispose();
    }
}
