using LatentDiffusion.Text;

namespace LatentDiffusion.Pipelines;

public sealed partial class StableDiffusionPipeline
{
    /// <summary>
    /// Loads a textual-inversion embedding and teaches the pipeline its token, as the reference's
    /// <c>load_textual_inversion</c> does: the tokenizer learns the token (and <c>token_1</c>, <c>token_2</c>, ... for an
    /// embedding of several vectors, which <c>token</c> in a prompt stands for all together), the text encoder's
    /// embedding table grows by the vectors. The token then works in the prompt and the negative prompt (a "negative
    /// embedding" is one used there). Reads the diffusers form (<c>learned_embeds.safetensors</c>, or its folder) and
    /// AUTOMATIC1111's <c>.safetensors</c> forms (see <see cref="TextualInversionEmbedding"/>). Call it between
    /// generations, not while one runs on this pipeline.
    /// <para>On SDXL the file must be an SDXL embedding (<c>clip_l</c> and <c>clip_g</c>): the token is added to both
    /// tokenizers, <c>clip_l</c>'s rows to the first text encoder and <c>clip_g</c>'s to the second (the reference's two
    /// <c>load_textual_inversion</c> calls, one per encoder), so it works in <see cref="GenerationOptions.Prompt2"/> and
    /// the negative prompts too. A refiner, which has only the second encoder, takes <c>clip_g</c> alone.</para>
    /// </summary>
    /// <param name="path">The <c>.safetensors</c> file, or a folder holding <c>learned_embeds.safetensors</c>.</param>
    /// <param name="token">The word to write in prompts; null for the file's own token (diffusers) or its file name
    /// (AUTOMATIC1111's convention).</param>
    /// <returns>The token to write in prompts.</returns>
    /// <exception cref="FileNotFoundException">Nothing at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file's layout is unknown, or its vectors do not fit the text encoders' hidden
    /// sizes (SDXL: <c>clip_l</c> and <c>clip_g</c> hold different numbers of vectors).</exception>
    /// <exception cref="NotSupportedException">A pickled (<c>.pt</c>, <c>.bin</c>) embedding, an SDXL embedding on an SD 1.x/2.x
    /// pipeline or an SD 1.x/2.x one on SDXL, or a tokenizer or text encoder other than this library's CLIP ones.</exception>
    /// <exception cref="ArgumentException">The token is already in the vocabulary (or was loaded before), or is not one word.</exception>
    /// <exception cref="InvalidOperationException">A generation is running on this pipeline, or a <see cref="PipelineOptions.FreeWeightsAfterUse"/> pipeline has generated (its text encoders are freed).</exception>
    public string LoadTextualInversion(string path, string? token = null)
    {
        ObjectDisposedException.ThrowIf(_runs.IsClosed, this);
        ThrowIfWeightsFreed("Cannot load a textual inversion");
        if (_xl is not null) return LoadXlTextualInversion(path, token);
        if (Tokenizer is not ClipTokenizer clipTokenizer || TextEncoder is not ClipTextModel clipEncoder)
            throw new NotSupportedException($"Textual inversion needs this library's CLIP tokenizer and text encoder; this pipeline has {Tokenizer.GetType().Name} and {TextEncoder.GetType().Name}.");
        using var embedding = TextualInversionEmbedding.Load(path);
        if (embedding.Layout == TextualInversionLayout.Sdxl)
            throw new NotSupportedException($"'{embedding.Path}' is an SDXL embedding (clip_l and clip_g, one set per text encoder); an SD 1.x/2.x pipeline takes one set of vectors.");
        token ??= embedding.Name;
        if (_runs.IsRunning)
            throw new InvalidOperationException("A textual inversion cannot be loaded while a generation runs on this pipeline: it grows the text encoder's embedding table.");
        var taught = TextualInversionLoader.Add(clipTokenizer, clipEncoder, embedding.Vectors, token, embedding.Path);
        Tokenizer = taught;
        _promptEncoder = new PromptEncoder(taught, TextEncoder, _logger);
        return token;
    }
}
