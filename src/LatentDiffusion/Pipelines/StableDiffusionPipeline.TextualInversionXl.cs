using LatentDiffusion.Text;

namespace LatentDiffusion.Pipelines;

public sealed partial class StableDiffusionPipeline
{
    /// <summary>
    /// <see cref="LoadTextualInversion"/> on SDXL: <c>clip_l</c> into the first (tokenizer, text encoder) pair and
    /// <c>clip_g</c> into the second, as the reference's two <c>load_textual_inversion</c> calls do; a refiner takes
    /// <c>clip_g</c> alone. Everything is checked before either table grows.
    /// </summary>
    private string LoadXlTextualInversion(string path, string? token)
    {
        var xl = _xl!;
        bool refiner = !xl.HasFirstEncoder;
        if (Tokenizer2 is not ClipTokenizer tokenizer2 || TextEncoder2 is not ClipTextModel encoder2
            || (!refiner && (Tokenizer is not ClipTokenizer || TextEncoder is not ClipTextModel)))
            throw new NotSupportedException($"Textual inversion needs this library's CLIP tokenizers and text encoders; this pipeline has {Tokenizer.GetType().Name} and {TextEncoder.GetType().Name}, {Tokenizer2!.GetType().Name} and {TextEncoder2!.GetType().Name}.");
        int width1 = refiner ? 0 : TextEncoder.HiddenSize, width2 = encoder2.HiddenSize;
        string needed = refiner
            ? $"a 'clip_g' tensor [n, {width2}] for its text_encoder_2 (a refiner has no first encoder)"
            : $"'clip_l' [n, {width1}] for text_encoder and 'clip_g' [n, {width2}] for text_encoder_2";

        using var embedding = TextualInversionEmbedding.Load(path);
        if (embedding.Layout != TextualInversionLayout.Sdxl)
            throw new NotSupportedException($"'{embedding.Path}' is an SD 1.x/2.x embedding (one set of {embedding.Vectors.shape[1]}-wide vectors, {embedding.Layout} layout); an SDXL pipeline needs an SDXL embedding: {needed}, in one .safetensors file.");
        var (clipL, clipG) = (embedding.Vectors, embedding.Vectors2!);
        if ((!refiner && clipL.shape[1] != width1) || clipG.shape[1] != width2)
            throw new InvalidDataException(refiner
                ? $"SDXL textual-inversion embedding '{embedding.Path}' has clip_g vectors of size {clipG.shape[1]}; this refiner's text_encoder_2 hidden size is {width2} (the embedding was trained for another model)."
                : $"SDXL textual-inversion embedding '{embedding.Path}' has clip_l vectors of size {clipL.shape[1]} and clip_g vectors of size {clipG.shape[1]}; this model's text encoders' hidden sizes are {width1} (text_encoder) and {width2} (text_encoder_2) (the embedding was trained for another model).");
        if (!refiner && clipL.shape[0] != clipG.shape[0])
            throw new InvalidDataException($"SDXL textual-inversion embedding '{embedding.Path}' has {clipL.shape[0]} clip_l vectors but {clipG.shape[0]} clip_g vectors; a token stands for as many vectors in both text encoders.");
        token ??= embedding.Name;
        if (_runs.IsRunning)
            throw new InvalidOperationException("A textual inversion cannot be loaded while a generation runs on this pipeline: it grows the text encoders' embedding tables.");

        if (refiner)
        {
            var taught = TextualInversionLoader.Add([new TextualInversionLoader.Target(tokenizer2, encoder2, clipG, "text_encoder_2")], token)[0];
            Tokenizer = Tokenizer2 = taught;
            _xl = xl.WithTokenizers(null, taught);
        }
        else
        {
            var taught = TextualInversionLoader.Add(
            [
                new TextualInversionLoader.Target((ClipTokenizer)Tokenizer, (ClipTextModel)TextEncoder, clipL, "text_encoder"),
                new TextualInversionLoader.Target(tokenizer2, encoder2, clipG, "text_encoder_2"),
            ], token);
            (Tokenizer, Tokenizer2) = (taught[0], taught[1]);
            _xl = xl.WithTokenizers(taught[0], taught[1]);
        }
        _promptEncoder = new PromptEncoder(Tokenizer, TextEncoder, _logger);
        return token;
    }
}
