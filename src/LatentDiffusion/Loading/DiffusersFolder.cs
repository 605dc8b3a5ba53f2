using LatentDiffusion.Formats;
using Microsoft.Extensions.Logging;

namespace LatentDiffusion.Loading;

/// <summary>A diffusers pipeline folder: <c>model_index.json</c> and one sub-folder per component.</summary>
public sealed class DiffusersFolder
{
    private static readonly Dictionary<string, string[]> Expected = new()
    {
        ["text_encoder"] = ["CLIPTextModel"],
        ["tokenizer"] = ["CLIPTokenizer", "CLIPTokenizerFast"],
        ["unet"] = ["UNet2DConditionModel"],
        ["vae"] = ["AutoencoderKL"],
    };

    private static readonly Dictionary<string, string[]> ExpectedXl = new()
    {
        ["text_encoder"] = ["CLIPTextModel"],
        ["tokenizer"] = ["CLIPTokenizer", "CLIPTokenizerFast"],
        ["text_encoder_2"] = ["CLIPTextModelWithProjection"],
        ["tokenizer_2"] = ["CLIPTokenizer", "CLIPTokenizerFast"],
        ["unet"] = ["UNet2DConditionModel"],
        ["vae"] = ["AutoencoderKL"],
    };

    // A refiner has no first text encoder: model_index.json names it [null, null].
    private static readonly string[] OptionalXl = ["text_encoder", "tokenizer"];

    private static readonly string[] XlPipelines = ["StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"];

    private static readonly string[] SupportedPipelines = ["StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline", .. XlPipelines];

    private DiffusersFolder(string root, JsonConfig index) { Root = root; Index = index; }

    /// <summary>The folder.</summary>
    public string Root { get; }

    /// <summary><c>model_index.json</c>.</summary>
    public JsonConfig Index { get; }

    /// <summary>The pipeline class named in <c>model_index.json</c>.</summary>
    public string ClassName => Index.String("_class_name", "StableDiffusionPipeline")!;

    /// <summary>Opens and checks a folder: a supported pipeline class and the component classes this library implements.</summary>
    /// <exception cref="FileNotFoundException">No <c>model_index.json</c>.</exception>
    /// <exception cref="NotSupportedException">Another pipeline or component class.</exception>
    public static DiffusersFolder Open(string root)
    {
        var indexPath = Path.Combine(root, "model_index.json");
        if (!File.Exists(indexPath))
            throw new FileNotFoundException($"'{root}' is not a diffusers pipeline folder: it has no model_index.json.", indexPath);
        var folder = new DiffusersFolder(root, JsonConfig.Load(indexPath));
        if (!SupportedPipelines.Contains(folder.ClassName))
            throw new NotSupportedException($"'{indexPath}': pipeline class '{folder.ClassName}' is not supported (supported: {string.Join(", ", SupportedPipelines)}).");
        foreach (var (component, classes) in folder.IsStableDiffusionXL ? ExpectedXl : Expected)
        {
            if (folder.IsStableDiffusionXL && OptionalXl.Contains(component) && !folder.HasComponent(component)) continue;
            var entry = folder.Index.StringArray(component);
            if (entry is null || entry.Length != 2)
                throw new InvalidDataException($"'{indexPath}': component '{component}' is missing (expected [library, class]).");
            if (!classes.Contains(entry[1]))
                throw new NotSupportedException($"'{indexPath}': component '{component}' is a {entry[1]}; supported: {string.Join(", ", classes)}.");
        }
        if (folder.IsStableDiffusionXL && folder.HasComponent("text_encoder") != folder.HasComponent("tokenizer"))
            throw new InvalidDataException($"'{indexPath}': 'text_encoder' and 'tokenizer' must both be given or both be null (a refiner has neither).");
        return folder;
    }

    /// <summary>True for an SDXL pipeline (<c>StableDiffusionXLPipeline</c>, <c>StableDiffusionXLImg2ImgPipeline</c> or <c>StableDiffusionXLInpaintPipeline</c>).</summary>
    public bool IsStableDiffusionXL => XlPipelines.Contains(ClassName);

    /// <summary>
    /// True when <c>model_index.json</c> names the component with a class (an SDXL refiner names <c>text_encoder</c> and
    /// <c>tokenizer</c> <c>[null, null]</c>).
    /// </summary>
    public bool HasComponent(string component)
        => Index.Root.TryGetProperty(component, out var entry) && entry.ValueKind == System.Text.Json.JsonValueKind.Array
           && entry.EnumerateArray().Any(e => e.ValueKind != System.Text.Json.JsonValueKind.Null);

    /// <summary>A component's folder.</summary>
    /// <exception cref="DirectoryNotFoundException">It does not exist.</exception>
    public string ComponentDirectory(string component)
    {
        var dir = Path.Combine(Root, component);
        return Directory.Exists(dir) ? dir : throw new DirectoryNotFoundException($"Component folder missing: '{dir}' (named in {Path.Combine(Root, "model_index.json")}).");
    }

    /// <summary>A file in a component's folder.</summary>
    /// <exception cref="FileNotFoundException">It does not exist.</exception>
    public string ComponentFile(string component, string file)
    {
        var path = Path.Combine(ComponentDirectory(component), file);
        return File.Exists(path) ? path : throw new FileNotFoundException($"Component file missing: '{path}'.", path);
    }

    /// <summary>
    /// The weights file of a component: <c>{stem}.{variant}.safetensors</c> when a variant is asked for; otherwise
    /// <c>{stem}.safetensors</c>, or the only variant file present (logged).
    /// </summary>
    /// <exception cref="FileNotFoundException">No matching file; the message lists what is there.</exception>
    public string WeightsFile(string component, string stem, string? variant, ILogger logger)
    {
        var dir = ComponentDirectory(component);
        if (variant is not null)
        {
            var wanted = Path.Combine(dir, $"{stem}.{variant}.safetensors");
            if (File.Exists(wanted)) return wanted;
            throw new FileNotFoundException($"Variant '{variant}' of {component} not found: no '{wanted}'. Present: {Present(dir)}.", wanted);
        }
        var plain = Path.Combine(dir, stem + ".safetensors");
        if (File.Exists(plain)) return plain;
        var variants = Directory.GetFiles(dir, stem + ".*.safetensors");
        if (variants.Length == 1)
        {
            logger.LogInformation("Using {File}: the only weights file of {Component}", variants[0], component);
            return variants[0];
        }
        if (File.Exists(Path.Combine(dir, stem + ".bin")))
            throw new NotSupportedException($"{component} has only pickled weights ('{stem}.bin'); only .safetensors files are loaded. Convert them first.");
        throw new FileNotFoundException($"No weights for {component}: expected '{plain}'{(variants.Length > 1 ? " or a Variant (one of: " + string.Join(", ", variants.Select(Path.GetFileName)) + ")" : "")}. Present: {Present(dir)}.", plain);
    }

    private static string Present(string dir) => string.Join(", ", Directory.GetFiles(dir).Select(Path.GetFileName));
}
