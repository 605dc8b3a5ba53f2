using LatentDiffusion.Abstractions;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace LatentDiffusion.Pipelines;

/// <summary>
/// SDXL's prompt encoding and micro-conditioning, as the reference's <c>StableDiffusionXLPipeline.encode_prompt</c> and
/// <c>_get_add_time_ids</c> do it: the prompt through both text encoders (the second may have its own prompt), their
/// penultimate hidden states concatenated as the context, the second encoder's projected pooled output and the time ids
/// as the UNet's added conditions. A refiner has only the second encoder.
/// </summary>
internal sealed class SdxlConditioner(ITokenizer? tokenizer1, ITextEncoder? textEncoder1, ITokenizer tokenizer2, ITextEncoder textEncoder2,
    StableDiffusionXLOptions settings, ILogger logger)
{
    // One chunker per encoder for the conditioner's life (it caches the empty chunk that pads shorter prompts).
    private readonly PromptChunker? _chunker1 = tokenizer1 is null || textEncoder1 is null ? null : new PromptChunker(tokenizer1, textEncoder1.MaxPositions);
    private readonly PromptChunker _chunker2 = new(tokenizer2, textEncoder2.MaxPositions);

    /// <summary>The width of the context: the two encoders' hidden sizes together.</summary>
    public int ContextWidth => (textEncoder1?.HiddenSize ?? 0) + textEncoder2.HiddenSize;

    /// <summary>The width of the pooled text embedding (the second encoder's projection).</summary>
    public int PooledWidth => textEncoder2.PooledSize;

    /// <summary>The number of time ids: 5 with an aesthetic score (refiner), 6 otherwise.</summary>
    public int TimeIdCount => settings.RequiresAestheticsScore ? 5 : 6;

    /// <summary>False for a refiner, which has only the second text encoder.</summary>
    public bool HasFirstEncoder => textEncoder1 is not null;

    /// <summary>The same conditioning with other tokenizers (ones that learned a textual-inversion token); the encoders are shared.</summary>
    public SdxlConditioner WithTokenizers(ITokenizer? first, ITokenizer second) => new(first, textEncoder1, second, textEncoder2, settings, logger);

    /// <summary>
    /// The context <c>[negative; positive]</c> (or only positive without guidance), each repeated per image, and the
    /// added conditions in the same order.
    /// </summary>
    /// <param name="prompt">The prompt (ignored when the options carry prompt embeddings).</param>
    /// <param name="options">Negative prompt, second prompts, clip skip, ready embeddings, micro-conditioning.</param>
    /// <param name="perPrompt">Images per prompt.</param>
    /// <param name="guidance">Whether classifier-free guidance runs (the negative half is made).</param>
    /// <param name="width">The image width in pixels (the default original and target width).</param>
    /// <param name="height">The image height in pixels.</param>
    /// <param name="imageToImage">The reference's image-to-image rules for the negative time ids (see <see cref="TimeIds"/>).</param>
    /// <param name="dtype">The UNet's dtype.</param>
    /// <param name="device">The UNet's device.</param>
    public (Tensor Context, AddedConditions Added) Encode(string prompt, GenerationOptions options, int perPrompt, bool guidance, int width, int height,
        bool imageToImage, ScalarType dtype, Device device)
    {
        // The negative prompt is tokenized once, up front: its chunk count decides the positive half's padding too.
        bool zeroNegative = options.NegativePrompt is null && settings.ForceZerosForEmptyPrompt;
        XlChunks? negativeChunks = null;
        if (guidance && options.NegativePromptEmbeddings is null && !zeroNegative)
        {
            var (negative, negative2) = NegativePrompts(options);
            negativeChunks = Tokenize(negative, negative2, options, "negative prompt");
        }
        Tensor context, pooled;
        if (options.PromptEmbeddings is { } given)
        {
            if (options.PooledPromptEmbeddings is not { } givenPooled)
                throw new ArgumentException("An SDXL model needs PooledPromptEmbeddings together with PromptEmbeddings (the reference's pooled_prompt_embeds).", nameof(options));
            (context, pooled) = (given.to(dtype, device), givenPooled.to(dtype, device));
        }
        else
        {
            string prompt2 = string.IsNullOrEmpty(options.Prompt2) ? prompt : options.Prompt2;
            var chunks = Tokenize(prompt, prompt2, options, "prompt");
            // Long prompts: every encoder's prompt and negative prompt get the same number of chunks, so the two hidden
            // states can be concatenated and the halves of guidance stacked.
            int count = Math.Max(chunks.Count, guidance ? NegativeChunkCount(options, negativeChunks) : 1);
            // SDXL always reads the penultimate layer; clip skip counts from there.
            (context, pooled) = EncodeBoth(chunks, count, options.ClipSkip + 2, dtype, device);
        }
        CheckWidths(context, pooled, "prompt");
        var (positiveIds, negativeIds) = TimeIds(options, width, height, imageToImage);
        var (textEmbeds, timeIds) = (Repeat(pooled, perPrompt), Repeat(Ids(positiveIds, dtype, device), pooled.shape[0] * perPrompt));
        context = StableDiffusionPipeline.RepeatPerPrompt(context, perPrompt);
        if (!guidance) return (context, new AddedConditions(textEmbeds, timeIds));

        Tensor negContext, negPooled;
        if (options.NegativePromptEmbeddings is { } ne)
        {
            if (options.NegativePooledPromptEmbeddings is not { } np)
                throw new ArgumentException("An SDXL model needs NegativePooledPromptEmbeddings together with NegativePromptEmbeddings (the reference's negative_pooled_prompt_embeds).", nameof(options));
            (negContext, negPooled) = (ne.to(dtype, device), np.to(dtype, device));
        }
        else if (negativeChunks is null)
        {
            (negContext, negPooled) = (zeros_like(context), zeros_like(textEmbeds));
        }
        else
        {
            var chunks = negativeChunks;
            int count = Math.Max(chunks.Count, (int)(context.shape[1] / textEncoder2.MaxPositions));
            // The reference encodes the negative prompts without clip skip.
            (negContext, negPooled) = EncodeBoth(chunks, count, 2, dtype, device);
        }
        CheckWidths(negContext, negPooled, "negative prompt");
        if (negContext.shape[0] != context.shape[0]) negContext = StableDiffusionPipeline.RepeatPerPrompt(negContext, perPrompt);
        if (negPooled.shape[0] != textEmbeds.shape[0]) negPooled = Repeat(negPooled, perPrompt);
        if (!negContext.shape.SequenceEqual(context.shape))
            throw new ArgumentException($"Negative prompt embeddings [{string.Join(", ", negContext.shape)}] do not match the prompt embeddings [{string.Join(", ", context.shape)}].");
        if (!negPooled.shape.SequenceEqual(textEmbeds.shape))
            throw new ArgumentException($"Negative pooled prompt embeddings [{string.Join(", ", negPooled.shape)}] do not match the pooled prompt embeddings [{string.Join(", ", textEmbeds.shape)}].");
        var negTimeIds = Repeat(Ids(negativeIds, dtype, device), textEmbeds.shape[0]);
        return (cat([negContext, context], 0), new AddedConditions(cat([negPooled, textEmbeds], 0), cat([negTimeIds, timeIds], 0)));
    }

    /// <summary>
    /// The time ids of the positive and negative halves. Base: <c>original + crop + target</c>; text to image takes the
    /// negative values only when both negative sizes are given, image to image fills a missing negative size from the
    /// positive one and keeps the positive crop. Refiner: <c>original + crop + aesthetic score</c>, with the negative
    /// size, crop and score.
    /// </summary>
    internal (double[] Positive, double[] Negative) TimeIds(GenerationOptions o, int width, int height, bool imageToImage)
    {
        var original = o.OriginalSize ?? (height, width);
        var crop = o.CropsCoordsTopLeft ?? (0, 0);
        var target = o.TargetSize ?? (height, width);
        var negCrop = o.NegativeCropsCoordsTopLeft ?? (0, 0);
        if (settings.RequiresAestheticsScore)
        {
            var negOriginal = o.NegativeOriginalSize ?? original;
            return ([original.Height, original.Width, crop.Top, crop.Left, o.AestheticScore],
                [negOriginal.Height, negOriginal.Width, negCrop.Top, negCrop.Left, o.NegativeAestheticScore]);
        }
        double[] positive = [original.Height, original.Width, crop.Top, crop.Left, target.Height, target.Width];
        if (imageToImage)
        {
            var negOriginal = o.NegativeOriginalSize ?? original;
            var negTarget = o.NegativeTargetSize ?? target;
            return (positive, [negOriginal.Height, negOriginal.Width, crop.Top, crop.Left, negTarget.Height, negTarget.Width]);
        }
        if (o.NegativeOriginalSize is { } no && o.NegativeTargetSize is { } nt)
            return (positive, [no.Height, no.Width, negCrop.Top, negCrop.Left, nt.Height, nt.Width]);
        return (positive, positive);
    }

    private static (string First, string Second) NegativePrompts(GenerationOptions options)
    {
        string negative = options.NegativePrompt ?? "";
        return (negative, string.IsNullOrEmpty(options.NegativePrompt2) ? negative : options.NegativePrompt2);
    }

    /// <summary>
    /// How many chunks the negative half will have: 1 when it is zeros; for ready embeddings, their whole chunks (1 when
    /// their length is not a multiple), as <see cref="PromptEncoder"/> counts them for SD 1.x/2.x.
    /// </summary>
    private int NegativeChunkCount(GenerationOptions options, XlChunks? negativeChunks)
        => options.NegativePromptEmbeddings is { } ready ? _chunker2.ChunksIn(ready) : negativeChunks?.Count ?? 1;

    /// <summary>Both encoders' chunks of their prompts (the first absent on a refiner), as <see cref="PromptEncoder"/> cuts them.</summary>
    private XlChunks Tokenize(string prompt1, string prompt2, GenerationOptions options, string what)
    {
        var first = _chunker1?.Tokenize(prompt1, options, logger, what, "text_encoder");
        var second = _chunker2.Tokenize(prompt2, options, logger, what, "text_encoder_2");
        return new XlChunks(first, second);
    }

    private sealed record XlChunks(PromptChunks? First, PromptChunks Second)
    {
        public int Count => Math.Max(First?.Count ?? 0, Second.Count);
    }

    private (Tensor Context, Tensor Pooled) EncodeBoth(XlChunks chunks, int count, int fromEnd, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var hidden = new List<Tensor>();
        if (chunks.First is { } first)
        {
            var padded = _chunker1!.Pad(first, count);
            hidden.Add(padded.Encode(ids => textEncoder1!.EncodeHiddenStates(ids, fromEnd, pooled: false).HiddenStates, textEncoder1!.Device).to(dtype, device));
        }
        var second = _chunker2.Pad(chunks.Second, count);
        // The pooled embedding is the first chunk's (A1111 and stable-diffusion.cpp take it from there too).
        Tensor? pooled = null;
        var states = second.Encode(ids =>
        {
            var output = textEncoder2.EncodeHiddenStates(ids, fromEnd, pooled: pooled is null);
            if (pooled is null) pooled = output.Pooled!.MoveToOuterDisposeScope();
            return output.HiddenStates;
        }, textEncoder2.Device);
        hidden.Add(states.to(dtype, device));
        var context = hidden.Count == 1 ? hidden[0] : cat(hidden, -1);
        return (context.MoveToOuterDisposeScope(), pooled!.to(dtype, device).MoveToOuterDisposeScope());
    }

    private void CheckWidths(Tensor context, Tensor pooled, string what)
    {
        if (context.dim() != 3 || context.shape[^1] != ContextWidth)
            throw new ArgumentException($"The {what} embeddings must be [batch, tokens, {ContextWidth}] for this SDXL model; got [{string.Join(", ", context.shape)}].");
        if (pooled.dim() != 2 || pooled.shape[^1] != PooledWidth || pooled.shape[0] != context.shape[0])
            throw new ArgumentException($"The pooled {what} embeddings must be [{context.shape[0]}, {PooledWidth}] for this SDXL model; got [{string.Join(", ", pooled.shape)}].");
    }

    private static Tensor Ids(double[] ids, ScalarType dtype, Device device)
        => tensor(ids.Select(v => (float)v).ToArray(), new long[] { 1, ids.Length }, ScalarType.Float32).to(dtype, device);

    private static Tensor Repeat(Tensor rows, long times)
        => times == 1 ? rows : rows.repeat(1, times).view(rows.shape[0] * times, -1);
}
